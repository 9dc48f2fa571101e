"""Tests of the Twilio Messaging and Voice webhook connector (``carecrm.plugins.sources.twilio``).

The payloads are the vendor corpus's (``$CARECRM_TEST_CORPUS``, else ``../shared/corpus``
beside the clone; folder ``twilio``), whose ``twilio.expected.md`` says what each yields;
the signature vectors are ``twilio.meta.json``'s (twilio-python's own test vectors).
Variants (keywords, progress callbacks, a recording action) are built from Twilio's
documented parameters with fictional 555-01xx numbers.
"""

from __future__ import annotations

import base64
import json
import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from carecrm.cli.main import cli
from carecrm.core import CareCRM
from carecrm.core.config import Settings
from carecrm.core.errors import ConfigError, ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import Actor, LeadEvent, Location, Practice, RawPayload
from carecrm.core.plugins.manager import DEFAULT_PLUGINS
from carecrm.core.testing import resources
from carecrm.plugins.sources.twilio import SIGNATURE_HEADER, TwilioConnector, twilio_signature

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
FOLDER = CORPUS / "twilio"
SMS = FOLDER / "sms_inbound.form.txt"
MMS = FOLDER / "sms_inbound_media_no_body.form.txt"
WHATSAPP = FOLDER / "whatsapp_inbound.form.txt"
STATUS_21610 = FOLDER / "sms_status_failed_21610.form.txt"
VOICE = FOLDER / "voice_status_callback_completed_intl.form.txt"
META = FOLDER / "twilio.meta.json"
FILES = (SMS, MMS, WHATSAPP, STATUS_21610, VOICE)

needs_corpus = resources.needs_corpus(CORPUS, *FILES, META)

FORM = "application/x-www-form-urlencoded"
RECEIVED = datetime(2026, 3, 2, 15, 4, 5, 123000, tzinfo=UTC)
MAKE = Callable[..., CareCRM]
URL = "https://clinic.example.com/hooks/twilio"

PRACTICE = Practice(
    name="Test Dermatology",
    locations=(
        Location(name="downtown", timezone="America/Chicago", phones=("+13125550100",)),
        Location(name="north", timezone="America/Chicago", tracking_numbers={"+13125550177": "billboard"}),
    ),
)


def connector(practice: Practice = PRACTICE, **options: Any) -> TwilioConnector:
    return TwilioConnector(name="twilio", options=options, settings=Settings(practice=practice))


def payload(body: bytes | str, url: str | None = None, **headers: str) -> RawPayload:
    data = body.encode() if isinstance(body, str) else body
    return RawPayload(body=data, content_type=FORM, url=url, headers=headers, received_at=RECEIVED)


def one(c: TwilioConnector, p: RawPayload) -> LeadEvent:
    (event,) = list(c.parse(p))
    assert isinstance(event, LeadEvent), event
    return event


def inbound(**params: str) -> str:
    """An inbound SMS webhook body (Twilio's documented parameters)."""
    base = {
        "MessageSid": "SM11111111111111111111111111111111",
        "SmsSid": "SM11111111111111111111111111111111",
        "AccountSid": "AC0123456789abcdef0123456789abcdef",
        "From": "+13125550142",
        "To": "+13125550177",
        "Body": "Hello",
        "NumMedia": "0",
        "NumSegments": "1",
        "SmsStatus": "received",
        "ApiVersion": "2010-04-01",
    }
    base.update(params)
    return urllib.parse.urlencode(base)


def b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


# --------------------------------------------------------------------------- corpus files


@needs_corpus
def test_sms_inbound() -> None:
    event = one(connector(), payload(SMS.read_bytes()))
    assert event.phones == ("+17065550123",)  # From, the person; To is the practice's line
    assert event.record_ref == "SM5ab7891328b440f04b7c83b459fc85fd"
    assert (event.full_name, event.city, event.postal_code) == (None, None, None)
    (draft,) = event.interactions
    assert (draft.kind, draft.channel, draft.direction) == ("sms.received", "sms", "inbound")
    assert draft.body == "Blah blah"  # '+' decoded as a space
    assert draft.occurred_at == RECEIVED  # no time in the payload: the receive time
    assert "SM5ab7891328b440f04b7c83b459fc85fd" in draft.idempotency_key
    assert draft.attributes["practice_number"] == "+14155550100"
    assert draft.attributes["media_count"] == 0
    assert event.consents == ()  # "Blah blah" changes no consent
    # the number's registration area is not the person's address
    assert set(event.dropped_fields) == {"FromCity", "FromState", "FromZip"}


@needs_corpus
def test_mms_without_a_body() -> None:
    event = one(connector(), payload(MMS.read_bytes()))
    assert event.phones == ("+14135550111",)
    (draft,) = event.interactions
    assert draft.kind == "sms.received" and draft.channel == "sms"
    assert draft.attributes["media_count"] == 2
    assert draft.attributes["has_text"] is False
    # no text, and the links only in the encrypted body (photos may hold PHI)
    assert draft.body == "media: cat.jpg\nmedia: dog.jpg"
    assert not any("jpg" in str(v) for v in draft.attributes.values())
    assert event.consents == ()


@needs_corpus
def test_whatsapp_inbound() -> None:
    event = one(connector(), payload(WHATSAPP.read_bytes()))
    assert event.phones == ("+14135550111",)  # "whatsapp:" stripped: the same person as by SMS
    (draft,) = event.interactions
    assert (draft.kind, draft.channel, draft.body) == ("sms.received", "whatsapp", "Msg")
    assert draft.attributes["practice_number"] == "+12025550100"
    # the corpus reuses one MessageSid for the MMS and the WhatsApp message: the channel
    # keeps their keys apart
    mms = one(connector(), payload(MMS.read_bytes()))
    assert mms.interactions[0].idempotency_key != draft.idempotency_key


@needs_corpus
def test_status_callback_21610_revokes_sms_marketing() -> None:
    event = one(connector(), payload(STATUS_21610.read_bytes()))
    assert event.phones == ("+14135550111",)  # To: the person the practice texted
    (draft,) = event.interactions
    assert (draft.kind, draft.direction, draft.channel) == ("sms.failed", "outbound", "sms")
    assert draft.attributes["error_code"] == "21610"
    assert draft.attributes["message_status"] == "failed"
    (consent,) = event.consents
    assert (consent.contact_point_kind, consent.channel, consent.purpose, consent.status) == (
        "phone",
        "sms",
        "marketing",
        "revoked",
    )
    assert consent.contact_point is None  # the event's phone: the To number
    assert consent.evidence["method"] == "carrier_opt_out"
    assert consent.evidence["error_code"] == "21610"
    assert consent.idempotency_key != draft.idempotency_key


@needs_corpus
def test_voice_status_callback_completed_international() -> None:
    event = one(connector(), payload(VOICE.read_bytes()))
    assert event.phones == ("+551155550123",)  # outbound-api: the person is To, not forced to +1
    assert event.region == "BR"
    (draft,) = event.interactions
    assert (draft.kind, draft.channel, draft.direction) == ("call.completed", "phone", "outbound")
    assert draft.occurred_at == datetime(2018, 3, 25, 9, 53, 19, tzinfo=UTC)
    assert draft.attributes["duration_seconds"] == 49  # CallDuration, not the billed Duration=1
    assert draft.attributes["answered_by"] == "human"
    assert draft.attributes["sequence_number"] == 3
    assert draft.attributes["practice_number"] == "+16465550100"
    assert "CAbe982f58915a2def4cf7aaa1f1766236" in draft.idempotency_key and draft.idempotency_key.endswith(":3")
    # São Paulo is the number's area, decoded but never kept
    assert {"ToCity", "CalledCity"} <= set(event.dropped_fields)
    assert "CallerCity" not in event.dropped_fields  # the practice's own number's area


@needs_corpus
def test_percent_20_and_plus_decode_the_same() -> None:
    plus = VOICE.read_text().replace("%20", "+")
    a = one(connector(), payload(VOICE.read_bytes()))
    b = one(connector(), payload(plus))
    assert a.interactions[0] == b.interactions[0]


# --------------------------------------------------------------------------- consent keywords


@pytest.mark.parametrize(
    ("body", "status"),
    [
        ("STOP", "revoked"),
        ("  stop \n", "revoked"),
        ("Stop.", "revoked"),
        ("StopAll", "revoked"),
        ("unsubscribe", "revoked"),
        ("CANCEL", "revoked"),
        ("end", "revoked"),
        ("Quit", "revoked"),
        ("START", "granted"),
        ("unstop", "granted"),
        ("stop texting me", "revoked in words"),
        ("Please don\u2019t text me anymore", "revoked in words"),
        ("please don't text", "revoked in words"),
        ("STOP please, wrong number", "revoked in words"),
        ("no more messages thanks", "revoked in words"),
    ],
)
def test_keywords_and_free_text(body: str, status: str) -> None:
    event = one(connector(), payload(inbound(Body=body)))
    (consent,) = event.consents
    in_words = status == "revoked in words"
    expected = "revoked" if in_words else status
    assert (consent.channel, consent.purpose, consent.status) == ("sms", "marketing", expected)
    assert consent.contact_point_kind == "phone"
    draft = event.interactions[0]
    if in_words:
        # a revocation in words: recorded, and shown for a coordinator to confirm
        assert draft.attributes["consent_review"] == "revocation_requested"
        assert consent.evidence["method"] == "free_text_reply"
        assert consent.evidence["requested"] == "revoked"
    else:
        assert "consent_review" not in draft.attributes
        assert consent.evidence["method"] == "keyword_reply"
        assert consent.evidence["keyword"] == body.strip().strip(".").upper()
    if in_words:
        assert body not in json.dumps(consent.evidence)  # the text stays in the encrypted body


@pytest.mark.parametrize("body", ["HELP", "Blah blah", "YES", "Start?", "Cancel my appointment tomorrow", ""])
def test_texts_that_change_no_consent(body: str) -> None:
    event = one(connector(), payload(inbound(Body=body)))
    assert event.consents == ()
    assert "consent_review" not in event.interactions[0].attributes


def test_advanced_opt_out_type_wins_and_whatsapp_is_its_own_channel() -> None:
    event = one(connector(), payload(inbound(Body="Arr\u00eat", OptOutType="STOP")))
    assert [(c.channel, c.status) for c in event.consents] == [("sms", "revoked")]
    help_ = one(connector(), payload(inbound(Body="STOP", OptOutType="HELP")))
    assert help_.consents == ()
    wa = one(connector(), payload(inbound(Body="STOP", From="whatsapp:+13125550142", To="whatsapp:+13125550177")))
    assert [(c.channel, c.status) for c in wa.consents] == [("whatsapp", "revoked")]
    assert wa.phones == ("+13125550142",)


# --------------------------------------------------------------------------- other webhooks


def test_tracking_number_gives_location_and_campaign() -> None:
    event = one(connector(), payload(inbound()))
    assert event.location == "north" and event.touchpoint.campaign == "billboard"
    event2 = one(connector(), payload(inbound(To="+13125550100")))
    assert event2.location == "downtown" and event2.touchpoint.campaign is None


def test_message_statuses() -> None:
    def status(value: str, **extra: str) -> list[LeadEvent | Rejected]:
        body = urllib.parse.urlencode(
            {"MessageSid": "SM22222222222222222222222222222222", "MessageStatus": value, "To": "+13125550142", **extra}
        )
        return list(connector().parse(payload(body)))

    assert status("queued") == [] and status("sending") == []  # not yet out of Twilio
    (sent,) = status("sent")
    (delivered,) = status("delivered")
    assert isinstance(sent, LeadEvent) and isinstance(delivered, LeadEvent)
    assert [d.kind for d in sent.interactions] == ["sms.sent"]
    assert [d.kind for d in delivered.interactions] == ["sms.delivered"]
    # out-of-order callbacks are separate events: a late "sent" never replaces "delivered"
    assert sent.interactions[0].idempotency_key != delivered.interactions[0].idempotency_key
    (undelivered,) = status("undelivered", ErrorCode="30003")
    assert isinstance(undelivered, LeadEvent)
    assert [d.kind for d in undelivered.interactions] == ["sms.failed"] and undelivered.consents == ()
    (bad,) = status("exploded")
    assert bad == Rejected("SM22222222222222222222222222222222", "MessageStatus", "not a Twilio message status")


def test_call_statuses_and_recording_action() -> None:
    def call(**params: str) -> list[LeadEvent | Rejected]:
        base = {"CallSid": "CA33333333333333333333333333333333", "From": "+13125550142", "To": "+13125550100"}
        base.update(params)
        body = urllib.parse.urlencode({**base, "Direction": params.get("Direction", "inbound")})
        return list(connector().parse(payload(body)))

    assert call(CallStatus="ringing") == [] and call(CallStatus="in-progress") == []
    (missed,) = call(CallStatus="no-answer")
    assert isinstance(missed, LeadEvent)
    assert missed.phones == ("+13125550142",) and missed.location == "downtown"
    assert [(d.kind, d.direction) for d in missed.interactions] == [("call.missed", "inbound")]
    (machine,) = call(CallStatus="completed", AnsweredBy="machine_end_beep", Direction="outbound-api")
    assert isinstance(machine, LeadEvent)
    assert machine.phones == ("+13125550100",)  # outbound: To
    assert machine.interactions[0].kind == "call.voicemail"
    (bad,) = call(CallStatus="completed", Timestamp="yesterday")
    assert bad == Rejected("CA33333333333333333333333333333333", "Timestamp", "not an RFC 2822 date and time")
    # a <Record> action with method GET: the parameters are the URL's query, the body empty
    query = urllib.parse.urlencode(
        {
            "CallSid": "CA44444444444444444444444444444444",
            "From": "+13215550123",
            "To": "+19725550100",
            "Direction": "inbound",
            "CallStatus": "in-progress",
            "RecordingSid": "RE61f2aaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "RecordingUrl": "https://api.twilio.com/2010-04-01/Accounts/AC0/Recordings/RE61f2",
            "RecordingDuration": "4",
            "Digits": "*",
        }
    )
    event = one(connector(), payload(b"", url=f"{URL}?{query}"))
    assert event.phones == ("+13215550123",)
    (draft,) = event.interactions
    assert draft.kind == "call.voicemail" and draft.attributes["recording_duration_seconds"] == 4
    assert draft.body is not None and draft.body.startswith("recording: https://api.twilio.com/")
    assert "RecordingUrl" not in json.dumps(draft.attributes) and "api.twilio.com" not in json.dumps(draft.attributes)


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ('{"MessageSid": "SM1"}', "body", "JSON"),
        ("MessageSid=SM1&Body=%ZZ", "body", "percent-escape"),
        ("MessageSid=SM1&Body=%C3%28", "body", "not form parameters"),
        ("just some text", "body", "not form parameters"),
        ("", "body", "empty"),
        ("AccountSid=AC1&From=%2B13125550142", "MessageSid", "neither a Messaging nor a Voice webhook"),
        (b"\xff\xfeM", "body", "not UTF-8"),
    ],
)
def test_unreadable_payloads_are_refused(body: str | bytes, field: str, reason: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        list(connector().parse(payload(body)))
    assert (err.value.record, err.value.field) == ("payload", field)
    assert reason in err.value.reason


def test_bad_records_are_rejected_without_values() -> None:
    (alpha,) = connector().parse(payload(inbound(From="CLINICINFO")))
    assert alpha == Rejected(
        "SM11111111111111111111111111111111", "From", "not a phone number (an alphanumeric sender)"
    )
    (short,) = connector().parse(payload(inbound(From="12")))
    assert isinstance(short, Rejected) and short.field == "From" and "12" not in short.reason
    (missing,) = connector().parse(payload(inbound(From="")))
    assert missing == Rejected("SM11111111111111111111111111111111", "From", "missing")
    (other,) = connector().parse(payload(inbound(From="messenger:12345")))
    assert isinstance(other, Rejected) and "another channel" in other.reason


def test_a_byte_order_mark_does_not_lose_the_first_field() -> None:
    body = "\ufeff" + inbound()  # MessageSid is the first parameter
    assert body.startswith("\ufeffMessageSid=")
    event = one(connector(), payload(body.encode("utf-8")))
    assert event.record_ref == "SM11111111111111111111111111111111"


# --------------------------------------------------------------------------- signatures


@needs_corpus
def test_meta_json_signature_vectors() -> None:
    v = json.loads(META.read_text())["signing"]["test_vector"]
    token, url = v["auth_token"], v["url"]
    c = connector()
    form = urllib.parse.urlencode(v["params"])
    assert b64(twilio_signature(token, url, v["params"])) == v["expected_signature"]
    c.verify(payload(form, url=url, **{SIGNATURE_HEADER: v["expected_signature"]}), token)
    # signed with :443 in the URL while the request URL has none, and the other way round
    with_port = url.replace(".com/", ".com:443/")
    assert b64(twilio_signature(token, with_port, v["params"])) == v["expected_signature_with_port_443_in_url"]
    c.verify(payload(form, url=url, **{SIGNATURE_HEADER: v["expected_signature_with_port_443_in_url"]}), token)
    c.verify(payload(form, url=with_port, **{SIGNATURE_HEADER: v["expected_signature"]}), token)
    # a JSON body: signed through the URL's bodySHA256
    j = v["json_body_case"]
    c.verify(
        RawPayload(body=j["body"].encode(), url=j["url"], headers={SIGNATURE_HEADER: j["expected_signature"]}), token
    )
    with pytest.raises(ValidationFailed) as err:
        c.verify(
            RawPayload(
                body=j["body"].encode() + b" ", url=j["url"], headers={SIGNATURE_HEADER: j["expected_signature"]}
            ),
            token,
        )
    assert err.value.field == "bodySHA256"
    # repeated parameter names: every value, sorted
    d = v["duplicate_params_case"]
    c.verify(payload(d["body"], url=d["url"], **{SIGNATURE_HEADER: d["expected_signature"]}), token)


@needs_corpus
def test_tampered_or_unsigned_payloads_fail() -> None:
    v = json.loads(META.read_text())["signing"]["test_vector"]
    token, url, good = v["auth_token"], v["url"], v["expected_signature"]
    form = urllib.parse.urlencode(v["params"])
    c = connector()
    cases: list[tuple[RawPayload, str, str]] = [
        (
            payload(form.replace("1234", "1235"), url=url, **{SIGNATURE_HEADER: good}),
            SIGNATURE_HEADER,
            "does not match",
        ),
        (payload(form, url=url + "&baz=3", **{SIGNATURE_HEADER: good}), SIGNATURE_HEADER, "does not match"),
        (payload(form, url=url), SIGNATURE_HEADER, "missing"),
        (payload(form, url=url, **{SIGNATURE_HEADER: "not base64!"}), SIGNATURE_HEADER, "not base64"),
        (payload(form, **{SIGNATURE_HEADER: good}), "url", "request URL is unknown"),
    ]
    for p, field, reason in cases:
        with pytest.raises(ValidationFailed) as err:
            c.verify(p, token)
        assert (err.value.record, err.value.field) == ("payload", field)
        assert reason in err.value.reason
    with pytest.raises(ValidationFailed):
        c.verify(payload(form, url=url, **{SIGNATURE_HEADER: good}), "another-token")
    # the webhook_url option stands in for a file's missing URL
    connector(webhook_url=url).verify(payload(form, **{SIGNATURE_HEADER: good}), token)


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown option 'webhookurl'"):
        connector(webhookurl=URL)


# --------------------------------------------------------------------------- the app and the CLI


def test_registered_as_a_built_in(make_app: MAKE) -> None:
    assert "carecrm.plugins.sources.twilio" in DEFAULT_PLUGINS
    app = make_app()  # no [sources.twilio] table at all
    assert isinstance(app.connector("twilio"), TwilioConnector)
    assert TwilioConnector.formats and TwilioConnector.signed is True
    with pytest.raises(ConfigError, match="no secret"):  # never accepted unverified silently
        app.ingest_payloads("twilio", [payload(inbound())], actor=ACTOR)


def _consents(app: CareCRM, contact_id: Any) -> list[tuple[str, str, str]]:
    with app.storage.unit_of_work() as uow:
        return sorted((r.channel, r.purpose, r.status) for r in uow.consents.for_contact(contact_id))


@needs_corpus
def test_corpus_through_the_app(make_app: MAKE) -> None:
    app = make_app()
    payloads = [payload(f.read_bytes()) for f in FILES]
    report = app.ingest_payloads("twilio", payloads, actor=ACTOR, verify=False)
    assert report.quarantined == []
    assert report.interactions_added == 5
    assert report.contacts_created == 3  # +17065550123, +14135550111 (MMS, WhatsApp, 21610), +551155550123
    tl = app.timeline("+14135550111", actor=ACTOR)
    assert sorted((i.kind, i.channel) for i in tl.interactions) == [
        ("sms.failed", "sms"),
        ("sms.received", "sms"),
        ("sms.received", "whatsapp"),
    ]
    assert tl.contact.phones() == ["+14135550111"]
    assert (tl.contact.city, tl.contact.postal_code) == (None, None)
    mms = next(i for i in tl.interactions if i.channel == "sms" and i.kind == "sms.received")
    assert mms.body == "media: cat.jpg\nmedia: dog.jpg"  # decrypted for the timeline
    assert _consents(app, tl.contact.id) == [("sms", "marketing", "revoked")]
    voice = app.timeline("+551155550123", actor=ACTOR)
    (call,) = voice.interactions
    assert call.kind == "call.completed" and call.occurred_at == datetime(2018, 3, 25, 9, 53, 19, tzinfo=UTC)
    # the whole corpus again, byte-identical and re-encoded: nothing new
    again = app.ingest_payloads("twilio", payloads, actor=ACTOR, verify=False)
    assert again.quarantined == [] and again.interactions_added == 0 and again.contacts_created == 0
    reencoded = [payload(f.read_text().replace("%2B", "%2b") + "&Extra=1") for f in FILES]
    third = app.ingest_payloads("twilio", reencoded, actor=ACTOR, verify=False)
    assert third.quarantined == [] and third.interactions_added == 0 and third.contacts_created == 0
    assert _consents(app, tl.contact.id) == [("sms", "marketing", "revoked")]


def test_stop_start_and_free_text_through_the_app(make_app: MAKE) -> None:
    app = make_app()
    sids = iter(f"SM{i:032d}" for i in range(1, 10))

    def send(body: str) -> None:
        sid = next(sids)
        r = app.ingest_payloads("twilio", [payload(inbound(Body=body, MessageSid=sid))], actor=ACTOR, verify=False)
        assert r.quarantined == [] and r.interactions_added == 1

    send("please stop texting me")
    send("STOP")
    send("START")
    contact = app.timeline("+13125550142", actor=ACTOR).contact
    assert _consents(app, contact.id) == [
        ("sms", "marketing", "granted"),
        ("sms", "marketing", "revoked"),
        ("sms", "marketing", "revoked"),
    ]
    flagged = [i for i in app.timeline(contact.id, actor=ACTOR).interactions if i.attributes.get("consent_review")]
    assert len(flagged) == 1 and flagged[0].attributes["consent_review"] == "revocation_requested"


def test_signed_payload_through_the_app(make_app: MAKE, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECRM_TEST_TWILIO_TOKEN", "auth-token")
    app = make_app(sources={"twilio": {"secret": "$env:CARECRM_TEST_TWILIO_TOKEN"}})
    body = inbound()
    params = urllib.parse.parse_qsl(body, keep_blank_values=True)
    signature = b64(twilio_signature("auth-token", URL, params))
    report = app.ingest_payloads("twilio", [payload(body, url=URL, **{SIGNATURE_HEADER: signature})], actor=ACTOR)
    assert report.quarantined == [] and report.interactions_added == 1
    forged = inbound(Body="Hello!", MessageSid="SM99999999999999999999999999999999")
    bad = app.ingest_payloads("twilio", [payload(forged, url=URL, **{SIGNATURE_HEADER: signature})], actor=ACTOR)
    assert bad.interactions_added == 0
    (q,) = bad.quarantined
    assert (q.source, q.field) == ("twilio", SIGNATURE_HEADER)
    assert "+1312" not in q.message()
    assert app.inbox_list(status="quarantined", source="twilio")


@needs_corpus
def test_cli_after_a_bare_init(tmp_path: Path) -> None:
    root = tmp_path / "practice"
    runner = CliRunner()
    init = runner.invoke(cli, ["init", "--dir", str(root)], env={"CARECRM_LOAD_PLUGINS": ""})
    assert init.exit_code == 0, init.output
    env = {"CARECRM_CONFIG": str(root / "carecrm.toml"), "CARECRM_LOAD_PLUGINS": "", "NO_COLOR": "1"}
    files = [str(f) for f in FILES]
    refused = runner.invoke(cli, ["ingest", "twilio", *files], env=env)
    assert refused.exit_code != 0 and "no secret" in refused.output
    result = runner.invoke(cli, ["ingest", "twilio", *files, "--no-verify", "--json"], env=env)
    assert result.exit_code == 0, (result.output, result.exception)
    summary = json.loads(result.stdout)
    assert summary["interactions_added"] == 5 and summary["quarantined"] == []
    again = runner.invoke(cli, ["ingest", "twilio", *files, "--no-verify", "--json"], env=env)
    assert again.exit_code == 0 and json.loads(again.stdout)["interactions_added"] == 0
