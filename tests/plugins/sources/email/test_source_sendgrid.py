"""Tests of the SendGrid Event Webhook connector (``carecrm.plugins.sources.sendgrid``).

Payloads come from the vendor corpus (``$CARECRM_TEST_CORPUS``, else ``../shared/corpus``
beside the clone; folder ``sendgrid``): the documentation's all-types batch and the vendor SDK's signed
test vector (``event_webhook.meta.json``).  The per-event examples of the Event Webhook
reference (bounce and blocked sharing one ``sg_event_id``, ``sg_machine_open``, category
arrays, custom arguments) are rebuilt here from the documentation.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from carecrm.core import CareCRM
from carecrm.core.config import Settings
from carecrm.core.errors import ConfigError, ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import Actor, LeadEvent, RawPayload
from carecrm.core.plugins.manager import DEFAULT_PLUGINS
from carecrm.core.testing import resources
from carecrm.plugins.sources.sendgrid import SIGNATURE_HEADER, TIMESTAMP_HEADER, SendGridConnector

ACTOR = Actor.parse("tester:admin")

REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
SENDGRID = CORPUS / "sendgrid"
ALL_TYPES = SENDGRID / "event_webhook_all_types.json"
SIGNED_RAW = SENDGRID / "signed_event_dropped.raw"
META = SENDGRID / "event_webhook.meta.json"

needs_corpus = resources.needs_corpus(CORPUS, ALL_TYPES, SIGNED_RAW, META)

EMAIL = "patient.one@example.com"
DOC_TIME = datetime(2017, 12, 15, 0, 59, 29, tzinfo=UTC)  # 1513299569
MAKE = Callable[..., CareCRM]


def connector(**options: Any) -> SendGridConnector:
    return SendGridConnector(name="sendgrid", options=options, settings=Settings())


def parse(body: bytes | list[Any], **options: Any) -> list[LeadEvent | Rejected]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return list(connector(**options).parse(RawPayload(body=raw)))


def events(body: bytes | list[Any], **options: Any) -> list[LeadEvent]:
    out = parse(body, **options)
    assert all(isinstance(e, LeadEvent) for e in out), out
    return [e for e in out if isinstance(e, LeadEvent)]


def vector() -> dict[str, str]:
    return dict(json.loads(META.read_text())["signature_test_vector"])


def signed_payload(body: bytes | None = None, **headers: str) -> RawPayload:
    v = vector()
    hdrs = {
        SIGNATURE_HEADER: v["X-Twilio-Email-Event-Webhook-Signature"],
        TIMESTAMP_HEADER: v["X-Twilio-Email-Event-Webhook-Timestamp"],
    }
    hdrs.update(headers)
    # received a few seconds after SendGrid signed it (the vector is from 2020; the
    # default window is 5 minutes)
    signed_at = datetime.fromtimestamp(int(v["X-Twilio-Email-Event-Webhook-Timestamp"]), UTC)
    return RawPayload(
        body=SIGNED_RAW.read_bytes() if body is None else body,
        headers=hdrs,
        received_at=signed_at + timedelta(seconds=5),
    )


#: The per-event examples of the Event Webhook reference, placed in one batch (the hidden
#: per-event corpus file is built the same way), plus a category array, an Apple MPP open,
#: a click with UTM parameters and custom arguments.
def per_event_batch() -> list[dict[str, Any]]:
    base = {"email": EMAIL, "timestamp": 1513299569, "smtp-id": "<14c5d75ce93.dfd.64b469@ismtpd-555>"}
    mid = "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.0"
    return [
        {
            **base,
            "event": "processed",
            "category": "cat facts",
            "sg_event_id": "rbtnWrG1DVDGGGFHFyun0A==",
            "sg_message_id": "14c5d75ce93.dfd.64b469.filter0001.16648.5515E0B88.000000000000000000000",
            "pool": {"name": "new_MY_test", "id": 210},
        },
        {
            **base,
            "event": "dropped",
            "category": "cat facts",
            "sg_event_id": "zmzJhfJgAfUSOW80yEbPyw==",
            "sg_message_id": mid,
            "reason": "Bounced Address",
            "status": "5.0.0",
        },
        {
            **base,
            "event": "delivered",
            "category": "cat facts",
            "sg_event_id": "rWVYmVk90MjZJ9iohOBa3w==",
            "sg_message_id": mid,
            "response": "250 OK",
        },
        {
            **base,
            "event": "deferred",
            "category": "cat facts",
            "sg_event_id": "t7LEShmowp86DTdUW8M-GQ==",
            "sg_message_id": mid,
            "response": "400 try again later",
            "attempt": "5",
        },
        {
            **base,
            "event": "bounce",
            "category": "cat facts",
            "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
            "sg_message_id": mid,
            "reason": "500 unknown recipient",
            "status": "5.0.0",
            "type": "bounce",
        },
        {
            **base,
            "event": "bounce",
            "category": "cat facts",
            "sg_event_id": "6g4ZI7SA-xmRDv57GoPIPw==",
            "sg_message_id": mid,
            "reason": "500 unknown recipient",
            "status": "5.0.0",
            "type": "blocked",
        },
        {
            **base,
            "event": "open",
            "category": ["cat facts", "newsletter"],
            "sg_event_id": "FOTFFO0ecsBE-zxFXfs6WA==",
            "sg_message_id": mid,
            "useragent": "Mozilla/5.0",
            "ip": "255.255.255.255",
            "sg_machine_open": True,
        },
        {
            **base,
            "event": "click",
            "category": "cat facts",
            "sg_event_id": "kCAi1KttyQdEKHhdC-nuEA==",
            "sg_message_id": mid,
            "useragent": "Mozilla/5.0",
            "ip": "255.255.255.255",
            "url": "https://clinic.example.com/botox?utm_source=newsletter&utm_medium=email&utm_campaign=spring"
            "&token=abc123#top",
            "url_offset": {"index": 0, "type": "html"},
            "userid": "1123",
            "campaign_id": "c-77",
            "patient_email": "someone@example.com",
            "first_name": "Ann",
            "note": "call me at x@example.org",
        },
        {
            **base,
            "event": "spamreport",
            "category": "cat facts",
            "sg_event_id": "37nvH5QBz858KGVYCM4uOA==",
            "sg_message_id": mid,
        },
        {
            **base,
            "event": "unsubscribe",
            "category": "cat facts",
            "sg_event_id": "zz_BjPgU_5pS-J8vlfB1sg==",
            "sg_message_id": mid,
        },
        {
            **base,
            "event": "group_unsubscribe",
            "category": "cat facts",
            "sg_event_id": "ahSCB7xYcXFb-hEaawsPRw==",
            "sg_message_id": mid,
            "useragent": "Mozilla/5.0",
            "ip": "255.255.255.255",
            "url": "http://www.sendgrid.com/",
            "asm_group_id": 10,
        },
        {
            **base,
            "event": "group_resubscribe",
            "category": "cat facts",
            "sg_event_id": "w_u0vJhLT-OFfprar5N93g==",
            "sg_message_id": mid,
            "useragent": "Mozilla/5.0",
            "ip": "255.255.255.255",
            "url": "http://www.sendgrid.com/",
            "asm_group_id": 10,
        },
    ]


def interaction_keys(evs: list[LeadEvent]) -> list[str]:
    return [d.idempotency_key for e in evs for d in e.interactions]


def all_keys(evs: list[LeadEvent]) -> list[str]:
    return interaction_keys(evs) + [c.idempotency_key for e in evs for c in e.consents]


# --------------------------------------------------------------------------- the doc sample


@needs_corpus
def test_all_types_sample_maps_every_event() -> None:
    evs = events(ALL_TYPES.read_bytes())
    assert len(evs) == 11  # one lead event per array element
    kinds = [e.interactions[0].kind if e.interactions else None for e in evs]
    assert kinds == [
        "email.sent",
        "email.deferred",
        "email.delivered",
        "email.opened",
        "email.clicked",
        "email.bounced",
        "email.dropped",
        "email.complained",
        "email.unsubscribed",
        "email.unsubscribed",
        None,  # group_resubscribe: a consent event only
    ]
    for e in evs:
        assert e.emails == (EMAIL,)
        assert e.phones == ()
        assert (e.first_name, e.last_name, e.full_name) == (None, None, None)  # never invent a name
        assert e.touchpoint.campaign == "cat facts"
        assert e.touchpoint.medium == "email"
        for d in e.interactions:
            assert d.occurred_at == DOC_TIME
            assert d.channel == "email"
            assert d.direction == "outbound"
            assert d.attributes["categories"] == ["cat facts"]
            assert d.attributes["message_id"] == "sg_message_id"
        for c in e.consents:
            assert c.occurred_at == DOC_TIME
    by_event = {e.interactions[0].attributes["event"]: e.interactions[0] for e in evs if e.interactions}
    assert by_event["deferred"].attributes["attempt"] == 5  # "5" is a string in the payload
    assert by_event["open"].attributes["machine_open"] is False
    assert by_event["click"].attributes["url"] == "http://www.sendgrid.com/"
    assert by_event["bounce"].attributes["bounce_type"] == "bounce"
    assert by_event["bounce"].attributes["permanent"] is True
    assert by_event["dropped"].attributes["reason"] == "Bounced Address"


@needs_corpus
def test_all_types_sample_consents() -> None:
    evs = events(ALL_TYPES.read_bytes())
    consents = [(c.channel, c.purpose, c.status, c.contact_point_kind) for e in evs for c in e.consents]
    assert consents == [
        ("email", "marketing", "revoked", "email"),  # spamreport
        ("email", "marketing", "revoked", "email"),  # unsubscribe (global)
        ("email", "marketing:group:10", "revoked", "email"),  # group_unsubscribe
        ("email", "marketing:group:10", "granted", "email"),  # group_resubscribe
    ]
    resubscribe = evs[-1]
    assert resubscribe.interactions == ()
    assert resubscribe.consents[0].evidence["asm_group_id"] == 10


@needs_corpus
def test_placeholder_event_ids_still_give_eleven_distinct_keys() -> None:
    """Every event of the doc sample has sg_event_id "sg_event_id": keying on it alone would
    keep 1 of 11 events."""
    evs = events(ALL_TYPES.read_bytes())
    keys = [e.interactions[0].idempotency_key if e.interactions else e.consents[0].idempotency_key for e in evs]
    assert len(set(keys)) == 11
    assert len(set(all_keys(evs))) == len(all_keys(evs))
    # a re-delivery gives the very same keys (so storage collapses it)
    assert all_keys(events(ALL_TYPES.read_bytes())) == all_keys(evs)


@needs_corpus
def test_no_personal_data_in_keys_attributes_or_errors() -> None:
    text = ALL_TYPES.read_text()
    evs = events(text.encode())
    for e in evs:
        for d in e.interactions:
            blob = json.dumps(d.attributes) + d.idempotency_key
            for secret in ("patient.one", "example.com", "255.255.255.255", "000.000.000.000", "Mozilla"):
                assert secret not in blob
        for c in e.consents:
            assert "patient.one" not in c.idempotency_key
        assert "patient.one" not in repr(e)
    dropped_ip = {e.interactions[0].attributes["event"] for e in evs if e.interactions and "ip" in e.dropped_fields}
    assert dropped_ip == {"open", "click", "group_unsubscribe"}
    assert "useragent" in evs[3].dropped_fields


@needs_corpus
def test_invalid_ip_placeholder_does_not_crash() -> None:
    body = json.loads(ALL_TYPES.read_text())
    resubscribe = [e for e in body if e["event"] == "group_resubscribe"]
    assert resubscribe[0]["ip"] == "000.000.000.000"
    evs = events(resubscribe)
    assert evs[0].consents[0].status == "granted"


# --------------------------------------------------------------------------- per-event examples


def test_bounce_and_blocked_sharing_an_event_id_are_two_events() -> None:
    evs = events(per_event_batch())
    bounces = [e.interactions[0] for e in evs if e.interactions and e.interactions[0].kind == "email.bounced"]
    assert [b.attributes["bounce_type"] for b in bounces] == ["bounce", "blocked"]
    assert [b.attributes["permanent"] for b in bounces] == [True, False]  # blocked is temporary
    assert bounces[0].attributes["sg_event_id"] == bounces[1].attributes["sg_event_id"]
    assert bounces[0].idempotency_key != bounces[1].idempotency_key
    assert len(set(all_keys(evs))) == len(all_keys(evs))


def test_machine_open_and_category_array() -> None:
    evs = events(per_event_batch())
    opened = next(e for e in evs if e.interactions and e.interactions[0].kind == "email.opened")
    assert opened.interactions[0].attributes["machine_open"] is True
    assert opened.interactions[0].attributes["categories"] == ["cat facts", "newsletter"]
    assert opened.touchpoint.campaign == "cat facts"  # the first category
    assert set(opened.dropped_fields) == {"ip", "useragent"}


def test_click_url_without_query_and_utm_in_the_touchpoint() -> None:
    evs = events(per_event_batch())
    click = next(e for e in evs if e.interactions and e.interactions[0].kind == "email.clicked")
    attrs_ = click.interactions[0].attributes
    assert attrs_["url"] == "https://clinic.example.com/botox"
    tp = click.touchpoint
    assert (tp.source, tp.medium, tp.campaign) == ("newsletter", "email", "spring")
    assert tp.landing_page == "https://clinic.example.com/botox"
    assert "token" not in json.dumps(attrs_)


def test_custom_args_kept_unless_they_look_personal() -> None:
    evs = events(per_event_batch())
    click = next(e for e in evs if e.interactions and e.interactions[0].kind == "email.clicked")
    attrs_ = click.interactions[0].attributes
    assert attrs_["userid"] == "1123"
    assert attrs_["campaign_id"] == "c-77"
    for name in ("patient_email", "first_name", "note", "url_offset", "ip", "useragent", "email"):
        assert name not in attrs_
    assert {"patient_email", "first_name", "note"} <= set(click.dropped_fields)


def test_processed_message_id_links_to_later_events() -> None:
    evs = events(per_event_batch())
    ids = {e.interactions[0].attributes["message_id"] for e in evs if e.interactions}
    assert ids == {"14c5d75ce93.dfd.64b469"}


def test_smtp_texts_never_keep_an_address() -> None:
    batch = [
        {
            "email": EMAIL,
            "timestamp": 1513299569,
            "event": "bounce",
            "type": "bounce",
            "sg_event_id": "b1",
            "reason": "550 5.1.1 <patient.one@example.com>: Recipient address rejected",
            "status": "5.1.1",
        },
        {
            "email": EMAIL,
            "timestamp": 1513299569,
            "event": "deferred",
            "sg_event_id": "d1",
            "response": "451 4.7.1 patient.one@example.com greylisted",
            "attempt": "2",
        },
    ]
    evs = events(batch)
    assert evs[0].interactions[0].attributes["reason"] == "550 5.1.1 <[email]>: Recipient address rejected"
    assert evs[1].interactions[0].attributes["response"] == "451 4.7.1 [email] greylisted"
    assert evs[1].interactions[0].attributes["attempt"] == 2


def test_keys_use_the_core_digest_and_differ_by_recipient_and_time() -> None:
    c = connector()
    c.bind_digest(lambda data: "f" * 64)
    body = json.dumps([{"email": EMAIL, "timestamp": 1600000000, "event": "delivered", "sg_event_id": "x1"}])
    key = next(iter(c.parse(RawPayload(body=body.encode())))).interactions[0].idempotency_key  # type: ignore[union-attr]
    assert key == "delivered::x1:1600000000:" + "f" * 32

    def key_of(**changes: Any) -> str:
        event = {"email": EMAIL, "timestamp": 1600000000, "event": "delivered", "sg_event_id": "x1", **changes}
        return events([event])[0].interactions[0].idempotency_key

    assert key_of() == key_of(email="  Patient.One@Example.com ")  # the same recipient
    assert key_of() != key_of(email="other@example.com")
    assert key_of() != key_of(timestamp=1600000001)
    assert key_of() != key_of(event="processed")


def test_event_without_id_gets_a_content_key() -> None:
    event = {"email": EMAIL, "timestamp": 1600000000, "event": "open"}
    first = events([event])[0].interactions[0].idempotency_key
    assert first == events([dict(event)])[0].interactions[0].idempotency_key
    assert first != events([{**event, "sg_machine_open": True}])[0].interactions[0].idempotency_key


# --------------------------------------------------------------------------- bad input


def test_bad_elements_fail_alone() -> None:
    batch: list[Any] = [
        {"timestamp": 1600000000, "event": "delivered", "sg_event_id": "no-email"},
        {"email": EMAIL, "timestamp": "yesterday", "event": "delivered", "sg_event_id": "bad-time"},
        {"email": EMAIL, "timestamp": True, "event": "delivered", "sg_event_id": "bool-time"},
        {"email": EMAIL, "timestamp": -5, "event": "delivered"},
        "not an object",
        {"email": EMAIL, "timestamp": 1600000000, "event": "group_unsubscribe", "sg_event_id": "no-group"},
        {"email": EMAIL, "timestamp": "1600000000", "event": "Delivered", "sg_event_id": "ok"},
    ]
    out = parse(batch)
    failures = [(f.ref, f.field) for f in out if isinstance(f, Rejected)]
    assert failures == [
        ("no-email", "email"),
        ("bad-time", "timestamp"),
        ("bool-time", "timestamp"),
        ("#3", "timestamp"),
        ("#4", "event"),
        ("no-group", "asm_group_id"),
    ]
    good = [e for e in out if isinstance(e, LeadEvent)]
    assert [e.record_ref for e in good] == ["ok"]
    assert good[0].interactions[0].occurred_at == datetime(2020, 9, 13, 12, 26, 40, tzinfo=UTC)
    for f in out:
        if isinstance(f, Rejected):
            assert "patient.one" not in str(f)


def test_unreadable_bodies_quarantine_the_payload() -> None:
    for body, reason in ((b"{not json", "not JSON"), (b'"text"', "not a JSON array of events"), (b"\xff\xfe", "UTF-8")):
        with pytest.raises(ValidationFailed) as err:
            parse(body)
        assert err.value.field == "body"
        assert reason in err.value.reason


def test_a_lone_object_and_unknown_event_types() -> None:
    assert len(events(json.dumps({"email": EMAIL, "timestamp": 1, "event": "open"}).encode())) == 1
    account = {"event": "account_status_change", "timestamp": 1, "type": "compliance_suspend"}
    assert parse([account]) == []


def test_ignore_events_option() -> None:
    evs = events(per_event_batch(), ignore_events=["processed", "deferred", "open"])
    kinds = {e.interactions[0].kind for e in evs if e.interactions}
    assert not kinds & {"email.sent", "email.deferred", "email.opened"}
    assert "email.delivered" in kinds


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown option 'kind'"):
        connector(kind="email.sent")
    with pytest.raises(ConfigError, match="max_age_seconds"):
        connector(max_age_seconds=-1)
    with pytest.raises(ConfigError, match="max_age_seconds"):
        connector(max_age_seconds="600")
    with pytest.raises(ConfigError, match="unknown event 'opened_twice'"):
        connector(ignore_events=["opened_twice"])
    with pytest.raises(ConfigError, match="keep_custom_args"):
        connector(keep_custom_args="yes")
    assert "userid" not in json.dumps(
        [e.interactions[0].attributes for e in events(per_event_batch(), keep_custom_args=False) if e.interactions]
    )


# --------------------------------------------------------------------------- signature


@needs_corpus
def test_signed_vector_verifies_and_parses() -> None:
    v = vector()
    c = connector()
    payload = signed_payload()
    c.verify(payload, v["public_key"])
    (event,) = list(c.parse(payload))
    assert isinstance(event, LeadEvent)
    assert event.emails == ("hello@world.com",)
    assert event.interactions[0].kind == "email.dropped"
    assert event.interactions[0].attributes["reason"] == "Bounced Address"
    assert event.interactions[0].occurred_at == datetime(2020, 9, 14, 19, 41, 32, tzinfo=UTC)


@needs_corpus
@pytest.mark.parametrize(
    "case",
    [
        "wrong key",
        "wrong signature",
        "crlf stripped",
        "tampered body",
        "missing signature",
        "missing timestamp",
        "other timestamp",
        "not base64",
        "not a key",
    ],
)
def test_signature_failures(case: str) -> None:
    v = vector()
    raw = SIGNED_RAW.read_bytes()
    assert raw.endswith(b"\r\n")
    secret = v["public_key"]
    payload = signed_payload()
    if case == "wrong key":
        secret = v["wrong_public_key_for_negative_test"]
    elif case == "wrong signature":
        payload = signed_payload(**{SIGNATURE_HEADER: v["wrong_signature_for_negative_test"]})
    elif case == "crlf stripped":
        payload = signed_payload(raw.rstrip(b"\r\n"))
    elif case == "tampered body":
        payload = signed_payload(raw.replace(b"Bounced Address", b"Bounced Adress!"))
    elif case == "missing signature":
        payload = RawPayload(body=raw, headers={TIMESTAMP_HEADER: v["X-Twilio-Email-Event-Webhook-Timestamp"]})
    elif case == "missing timestamp":
        payload = RawPayload(body=raw, headers={SIGNATURE_HEADER: v["X-Twilio-Email-Event-Webhook-Signature"]})
    elif case == "other timestamp":
        payload = signed_payload(**{TIMESTAMP_HEADER: "1600112503"})
    elif case == "not base64":
        payload = signed_payload(**{SIGNATURE_HEADER: "%%%"})
    elif case == "not a key":
        secret = "c2VjcmV0"
    with pytest.raises(ValidationFailed) as err:
        connector().verify(payload, secret)
    assert err.value.field == SIGNATURE_HEADER
    assert err.value.record == "payload"
    assert secret not in str(err.value)


@needs_corpus
def test_max_age_seconds() -> None:
    v = vector()
    signed_at = datetime.fromtimestamp(int(v["X-Twilio-Email-Event-Webhook-Timestamp"]), UTC)
    fresh = attrs.evolve(signed_payload(), received_at=signed_at + timedelta(seconds=30))
    stale = attrs.evolve(signed_payload(), received_at=signed_at + timedelta(hours=2))
    strict = connector(max_age_seconds=300)
    strict.verify(fresh, v["public_key"])
    with pytest.raises(ValidationFailed, match="replay"):
        strict.verify(stale, v["public_key"])
    with pytest.raises(ValidationFailed, match="replay"):
        connector().verify(stale, v["public_key"])  # 5 minutes by default (issue 8, item 3)
    connector(max_age_seconds=3 * 3600).verify(stale, v["public_key"])  # a wider window, configured
    today = attrs.evolve(signed_payload(), received_at=datetime(2026, 12, 3, tzinfo=UTC))
    with pytest.raises(ValidationFailed, match="replay"):
        connector().verify(today, v["public_key"])  # the 2020 vector is no longer accepted today


def test_pem_key_and_a_fresh_key_pair() -> None:
    private = ec.generate_private_key(ec.SECP256R1())
    public = private.public_key()
    der = base64.b64encode(
        public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()
    body = json.dumps([{"email": EMAIL, "timestamp": 1700000000, "event": "open", "sg_event_id": "e1"}]).encode()
    body += b"\r\n"
    ts = "1700000005"
    signature = base64.b64encode(private.sign(ts.encode() + body, ec.ECDSA(hashes.SHA256()))).decode()
    payload = RawPayload(
        body=body,
        headers={SIGNATURE_HEADER: signature, TIMESTAMP_HEADER: ts},
        received_at=datetime.fromtimestamp(int(ts) + 2, UTC),
    )
    connector().verify(payload, der)
    connector().verify(payload, pem)
    other = ec.generate_private_key(ec.SECP384R1()).public_key()
    der384 = base64.b64encode(
        other.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ).decode()
    with pytest.raises(ValidationFailed, match="P-256"):
        connector().verify(payload, der384)


# --------------------------------------------------------------------------- registration and the app


def test_registered_as_a_built_in() -> None:
    assert "carecrm.plugins.sources.sendgrid" in DEFAULT_PLUGINS
    assert SendGridConnector.signed is True


def test_configured_with_no_options_or_only_a_secret(make_app: MAKE) -> None:
    app = make_app(sources={"sendgrid": {}, "sg2": {"connector": "sendgrid", "secret": "abc"}})
    assert isinstance(app.connector("sendgrid"), SendGridConnector)
    assert isinstance(app.connector("sg2"), SendGridConnector)
    # a signed connector with no secret refuses to ingest unverified payloads
    with pytest.raises(ConfigError, match="no secret"):
        app.ingest_payloads("sendgrid", [RawPayload(body=b"[]")], actor=ACTOR)


def _contact_consents(app: CareCRM, contact_id: Any) -> list[tuple[str, str, str]]:
    with app.storage.unit_of_work() as uow:
        return [(r.channel, r.purpose, r.status) for r in uow.consents.for_contact(contact_id)]


@needs_corpus
def test_all_types_through_the_app(make_app: MAKE) -> None:
    app = make_app(sources={"sendgrid": {}})
    body = ALL_TYPES.read_bytes()
    report = app.ingest_payloads("sendgrid", [RawPayload(body=body)], verify=False, actor=ACTOR)
    assert report.quarantined == []
    assert report.contacts_created == 1  # one email-only contact, no invented name
    assert report.interactions_added == 10  # group_resubscribe is a consent event only
    timeline = app.timeline(EMAIL, actor=ACTOR)
    contact = timeline.contact
    assert (contact.first_name, contact.last_name) == (None, None)
    assert contact.emails() == [EMAIL]
    assert contact.phones() == []
    assert sorted(i.kind for i in timeline.interactions) == sorted(
        [
            "email.sent",
            "email.deferred",
            "email.delivered",
            "email.opened",
            "email.clicked",
            "email.bounced",
            "email.dropped",
            "email.complained",
            "email.unsubscribed",
            "email.unsubscribed",
        ]
    )
    for inter in timeline.interactions:
        assert inter.touchpoint.campaign == "cat facts"
        assert inter.touchpoint.channel_group == "email"
        assert inter.source == "sendgrid"
    consents = _contact_consents(app, contact.id)
    assert sorted(consents) == sorted(
        [
            ("email", "marketing", "revoked"),
            ("email", "marketing", "revoked"),
            ("email", "marketing:group:10", "revoked"),
            ("email", "marketing:group:10", "granted"),
        ]
    )
    # a re-delivery (byte-identical, or re-serialised by a proxy) adds nothing
    again = app.ingest_payloads("sendgrid", [RawPayload(body=body)], verify=False, actor=ACTOR)
    assert again.duplicate_payloads == 1
    reserialised = json.dumps(json.loads(body)).encode()
    third = app.ingest_payloads("sendgrid", [RawPayload(body=reserialised)], verify=False, actor=ACTOR)
    assert third.interactions_added == 0 and third.contacts_created == 0 and third.quarantined == []
    assert len(app.timeline(EMAIL, actor=ACTOR).interactions) == 10
    assert len(_contact_consents(app, contact.id)) == 4
    assert app.counts()["contacts"] == 1


def test_per_event_batch_through_the_app(make_app: MAKE) -> None:
    app = make_app(sources={"sendgrid": {}})
    body = json.dumps(per_event_batch()).encode()
    report = app.ingest_payloads("sendgrid", [RawPayload(body=body)], verify=False, actor=ACTOR)
    assert report.quarantined == []
    assert report.interactions_added == 11  # 12 events, group_resubscribe has no interaction
    kinds = [i.kind for i in app.timeline(EMAIL, actor=ACTOR).interactions]
    assert kinds.count("email.bounced") == 2  # bounce and blocked, same sg_event_id


@needs_corpus
def test_signed_vector_through_the_app(make_app: MAKE) -> None:
    v = vector()
    app = make_app(sources={"sendgrid": {"secret": v["public_key"]}})
    report = app.ingest_payloads("sendgrid", [signed_payload()], actor=ACTOR)
    assert report.quarantined == [] and report.interactions_added == 1
    assert [i.kind for i in app.timeline("hello@world.com", actor=ACTOR).interactions] == ["email.dropped"]
    tampered = signed_payload(SIGNED_RAW.read_bytes().replace(b"hello@world.com", b"hallo@world.com"))
    bad = app.ingest_payloads("sendgrid", [tampered], actor=ACTOR)
    assert bad.interactions_added == 0
    (q,) = bad.quarantined
    assert q.field == SIGNATURE_HEADER
    assert "does not match" in q.reason
    assert "hallo" not in q.message()
    items = app.inbox_list(status="quarantined", source="sendgrid")
    assert len(items) == 1


def test_a_bad_element_quarantines_only_itself(make_app: MAKE) -> None:
    app = make_app(sources={"sendgrid": {}})
    batch = [
        {"email": EMAIL, "timestamp": 1600000000, "event": "delivered", "sg_event_id": "a"},
        {"timestamp": 1600000000, "event": "delivered", "sg_event_id": "b"},
    ]
    report = app.ingest_payloads("sendgrid", [RawPayload(body=json.dumps(batch).encode())], verify=False, actor=ACTOR)
    assert report.interactions_added == 1
    assert [(q.record, q.field) for q in report.quarantined] == [("b", "email")]
