"""Tests of the Mailgun event webhook connector (``carecrm.plugins.sources.mailgun``).

Payloads come from the vendor corpus (folder ``mailgun``: Mailgun's own "Send test
webhook" events delivered, opened and clicked).  Their signing key is not published, so
the signature tests sign the corpus bodies again with a test key by the documented
algorithm (hex HMAC-SHA256 of ``timestamp + token``); the failed, complained and
unsubscribed events are built from the tracking-messages documentation.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from carecrm.core import CareCRM
from carecrm.core.config import Settings
from carecrm.core.errors import ConfigError, ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import Actor, LeadEvent, RawPayload
from carecrm.core.plugins.manager import DEFAULT_PLUGINS
from carecrm.core.testing import resources
from carecrm.plugins.sources.mailgun import MailgunConnector

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
MAILGUN = CORPUS / "mailgun"
DELIVERED = MAILGUN / "event_delivered.json"
OPENED = MAILGUN / "event_opened.json"
CLICKED = MAILGUN / "event_clicked.json"
needs_corpus = resources.needs_corpus(CORPUS, DELIVERED, OPENED, CLICKED)

KEY = "key-test-0123456789abcdef"
EMAIL = "alice@example.com"
MAKE = Callable[..., CareCRM]


def connector(**options: Any) -> MailgunConnector:
    return MailgunConnector(name="mailgun", options=options, settings=Settings())


def events(body: bytes | dict[str, Any], **options: Any) -> list[LeadEvent]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = list(connector(**options).parse(RawPayload(body=raw)))
    assert all(isinstance(e, LeadEvent) for e in out), out
    return [e for e in out if isinstance(e, LeadEvent)]


def sign(data: dict[str, Any], *, key: str = KEY, at: datetime, token: str = "t" * 50) -> bytes:
    """The body with a signature block made by Mailgun's documented algorithm."""
    ts = str(int(at.timestamp()))
    sig = hmac.new(key.encode(), (ts + token).encode(), hashlib.sha256).hexdigest()
    return json.dumps({**data, "signature": {"timestamp": ts, "token": token, "signature": sig}}).encode()


def doc_event(event: str, **extra: Any) -> dict[str, Any]:
    """An event-data object shaped like the tracking-messages documentation's examples."""
    return {
        "event-data": {
            "id": f"id-{event}-{extra.get('severity', '')}",
            "timestamp": 1600000000.25,
            "event": event,
            "recipient": EMAIL,
            "message": {"headers": {"message-id": "m1@mg.example.org"}},
            **extra,
        }
    }


# --------------------------------------------------------------------------- corpus files


@needs_corpus
def test_delivered() -> None:
    (ev,) = events(DELIVERED.read_bytes())
    assert ev.emails == (EMAIL,)
    assert (ev.first_name, ev.last_name, ev.full_name) == (None, None, None)  # not from headers.to
    (inter,) = ev.interactions
    assert inter.kind == "email.delivered"
    assert inter.occurred_at == datetime(2018, 3, 19, 15, 11, 2, 908000, tzinfo=UTC)  # ms; not signature.timestamp
    assert inter.channel == "email" and inter.direction == "outbound"
    attrs = inter.attributes
    assert attrs["message_id"] == "20130503182626.18666.16540@sandbox22aee81b13674403a5335202df94f7e7.mailgun.org"
    assert attrs["smtp_code"] == 250 and attrs["attempt"] == 1 and attrs["tls"] is True
    assert attrs["tags"] == ["my_tag_1", "my_tag_2"]
    assert attrs["user_variables"] == {"my_var_1": "Mailgun Variable #1", "my-var-2": "awesome"}
    assert "test" not in attrs  # flags.is-test-mode false
    assert ev.touchpoint.source == "mailgun" and ev.touchpoint.medium == "email"
    assert ev.touchpoint.campaign == "my_tag_1"
    assert ev.consents == ()
    # the sender (bob@…) is the practice: nowhere in the event
    assert "bob" not in repr(ev) and "bob" not in json.dumps(attrs)


@needs_corpus
def test_opened_keeps_device_not_ip_or_user_agent() -> None:
    (ev,) = events(OPENED.read_bytes())
    (inter,) = ev.interactions
    assert inter.kind == "email.opened"
    assert inter.occurred_at == datetime(2018, 3, 16, 23, 35, 39, 873000, tzinfo=UTC)  # truncated to ms
    assert inter.attributes["country"] == "US"
    assert inter.attributes["device_type"] == "desktop" and inter.attributes["client_name"] == "Chrome"
    assert set(ev.dropped_fields) >= {"ip", "client-info.user-agent", "geolocation.city", "geolocation.region"}
    text = json.dumps(inter.attributes)
    assert "50.56.129.169" not in text and "Mozilla" not in text and "San Francisco" not in text


@needs_corpus
def test_clicked_and_opened_sharing_an_id_are_two_events() -> None:
    (opened,) = events(OPENED.read_bytes())
    (clicked,) = events(CLICKED.read_bytes())
    assert clicked.interactions[0].kind == "email.clicked"
    assert opened.interactions[0].attributes["event_id"] == clicked.interactions[0].attributes["event_id"]
    assert opened.interactions[0].idempotency_key != clicked.interactions[0].idempotency_key
    # no address in any key
    for ev in (opened, clicked):
        assert "alice" not in ev.interactions[0].idempotency_key


# --------------------------------------------------------------------------- other events and consent


def test_click_url_gives_utm_and_no_query() -> None:
    (ev,) = events(doc_event("clicked", url="https://practice.example/offer?utm_source=nl&utm_campaign=spring&e=x"))
    assert ev.interactions[0].attributes["url"] == "https://practice.example/offer"
    assert ev.touchpoint.source == "nl" and ev.touchpoint.campaign == "spring"


def test_failed_permanent_marks_undeliverable_not_opted_out() -> None:
    status = {"code": 550, "message": "5.1.1 <alice@example.com> no such user", "description": ""}
    (ev,) = events(doc_event("failed", severity="permanent", reason="bounce", **{"delivery-status": status}))
    (inter,) = ev.interactions
    assert inter.kind == "email.bounced"
    assert inter.attributes["undeliverable"] is True and inter.attributes["permanent"] is True
    assert inter.attributes["response"] == "5.1.1 <[email]> no such user"
    assert ev.consents == ()  # a bounce is never an opt-out


def test_failed_temporary_and_suppressed() -> None:
    (temp,) = events(doc_event("failed", severity="temporary", reason="generic"))
    assert temp.interactions[0].kind == "email.deferred"
    assert "undeliverable" not in temp.interactions[0].attributes and temp.consents == ()
    (sup,) = events(doc_event("failed", severity="permanent", reason="suppress-unsubscribe"))
    assert sup.interactions[0].kind == "email.dropped" and sup.consents == ()


@pytest.mark.parametrize(
    ("event", "kind", "method"),
    [("unsubscribed", "email.unsubscribed", "unsubscribe_link"), ("complained", "email.complained", "spam_complaint")],
)
def test_unsubscribe_and_complaint_revoke_email_marketing_only(event: str, kind: str, method: str) -> None:
    (ev,) = events(doc_event(event))
    assert ev.interactions[0].kind == kind
    (consent,) = ev.consents
    assert (consent.contact_point_kind, consent.channel, consent.purpose, consent.status) == (
        "email",
        "email",
        "marketing",
        "revoked",
    )
    assert consent.evidence["method"] == method
    assert consent.idempotency_key != ev.interactions[0].idempotency_key


def test_test_mode_flag_and_stored_and_unknown_events() -> None:
    (ev,) = events(doc_event("delivered", flags={"is-test-mode": True}))
    assert ev.interactions[0].attributes["test"] is True
    assert events(doc_event("stored")) == []
    assert events(doc_event("list_member_uploaded")) == []
    assert events(doc_event("accepted"), ignore_events=["accepted"]) == []


def test_personal_user_variables_are_dropped() -> None:
    (ev,) = events(doc_event("delivered", **{"user-variables": {"patient_email": "x", "campaign": "c", "v": "a@b.co"}}))
    assert ev.interactions[0].attributes["user_variables"] == {"campaign": "c"}
    assert {"user-variables.patient_email", "user-variables.v"} <= set(ev.dropped_fields)


def test_bad_input() -> None:
    c = connector()
    for body, field in ((b'{"event-data": ', "body"), (b"[1]", "body"), (b"{}", "event-data"), (b"\xff", "body")):
        with pytest.raises(ValidationFailed) as err:
            list(c.parse(RawPayload(body=body)))
        assert err.value.field == field
    no_recipient = doc_event("delivered")
    del no_recipient["event-data"]["recipient"]
    out = list(c.parse(RawPayload(body=json.dumps(no_recipient).encode())))
    assert out == [Rejected("id-delivered-", "event-data.recipient", "missing")]
    bad_time = doc_event("delivered", timestamp="soon")
    (rej,) = list(c.parse(RawPayload(body=json.dumps(bad_time).encode())))
    assert isinstance(rej, Rejected) and rej.field == "event-data.timestamp"
    # a byte-order mark does not hide the body
    assert len(events(b"\xef\xbb\xbf" + json.dumps(doc_event("delivered")).encode())) == 1


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="max_age_seconds"):
        connector(max_age_seconds=0)
    with pytest.raises(ConfigError, match="unknown event"):
        connector(ignore_events=["bounced"])
    with pytest.raises(ConfigError):
        connector(nonsense=1)


# --------------------------------------------------------------------------- signatures


@needs_corpus
def test_signature_verifies_and_a_tampered_body_fails() -> None:
    now = datetime.now(UTC)
    data = json.loads(DELIVERED.read_bytes())
    body = sign(data, at=now)
    connector().verify(RawPayload(body=body), KEY)
    with pytest.raises(ValidationFailed, match="does not match") as err:
        connector().verify(RawPayload(body=body), "another-key")
    assert err.value.field == "signature"
    tampered = json.loads(body)
    tampered["signature"]["timestamp"] = str(int(now.timestamp()) + 1)
    with pytest.raises(ValidationFailed, match="does not match"):
        connector().verify(RawPayload(body=json.dumps(tampered).encode()), KEY)
    # the corpus's own block was signed in 2022 with an unpublished key: refused
    with pytest.raises(ValidationFailed):
        connector().verify(RawPayload(body=DELIVERED.read_bytes()), KEY)


def test_signature_block_problems() -> None:
    now = datetime.now(UTC)
    good = json.loads(sign(doc_event("delivered"), at=now))
    cases: list[tuple[dict[str, Any], str]] = []
    missing = dict(good)
    del missing["signature"]
    cases.append((missing, "signature"))
    for name, value, field in (
        ("timestamp", "abc", "signature.timestamp"),
        ("token", "", "signature.token"),
        ("signature", "zz", "signature"),
        ("signature", "", "signature"),
    ):
        case = json.loads(json.dumps(good))
        case["signature"][name] = value
        cases.append((case, field))
    for body, field in cases:
        with pytest.raises(ValidationFailed) as err:
            connector().verify(RawPayload(body=json.dumps(body).encode()), KEY)
        assert err.value.field == field


def test_freshness_window() -> None:
    now = datetime.now(UTC)
    old = sign(doc_event("delivered"), at=now - timedelta(minutes=6))
    with pytest.raises(ValidationFailed, match="300 s") as err:
        connector().verify(RawPayload(body=old), KEY)
    assert err.value.field == "signature.timestamp"
    connector(max_age_seconds=600).verify(RawPayload(body=old), KEY)
    connector(max_age_seconds=None).verify(RawPayload(body=sign(doc_event("x"), at=now - timedelta(days=900))), KEY)


def test_a_token_seen_twice_with_another_event_is_a_replay() -> None:
    c = connector()
    now = datetime.now(UTC)
    first = sign(doc_event("delivered"), at=now, token="a" * 50)
    c.verify(RawPayload(body=first), KEY)
    c.verify(RawPayload(body=first), KEY)  # the same request again (a retry) is no replay
    forged = sign(doc_event("unsubscribed"), at=now, token="a" * 50)
    with pytest.raises(ValidationFailed, match="replay") as err:
        c.verify(RawPayload(body=forged), KEY)
    assert err.value.field == "signature.token"
    c.verify(RawPayload(body=sign(doc_event("unsubscribed"), at=now, token="b" * 50)), KEY)


# --------------------------------------------------------------------------- the app


def test_registered_as_a_built_in() -> None:
    assert "carecrm.plugins.sources.mailgun" in DEFAULT_PLUGINS
    assert MailgunConnector.signed is True and MailgunConnector.formats


@needs_corpus
def test_corpus_through_the_app_by_name(make_app: MAKE) -> None:
    app = make_app()  # no [sources.mailgun] table: resolved by name
    payloads = [RawPayload(body=p.read_bytes(), origin=p.name) for p in (DELIVERED, OPENED, CLICKED)]
    report = app.ingest_payloads("mailgun", payloads, verify=False, actor=ACTOR)
    assert report.quarantined == [] and report.interactions_added == 3 and report.contacts_created == 1
    timeline = app.timeline(EMAIL, actor=ACTOR)
    assert sorted(i.kind for i in timeline.interactions) == ["email.clicked", "email.delivered", "email.opened"]
    assert all(i.touchpoint.channel_group == "email" for i in timeline.interactions)
    again = app.ingest_payloads("mailgun", payloads, verify=False, actor=ACTOR)
    assert again.interactions_added == 0 and again.duplicate_payloads == 3
    assert app.counts()["contacts"] == 1


def test_signed_replay_through_the_app(make_app: MAKE) -> None:
    app = make_app(sources={"mailgun": {"secret": KEY}})
    now = datetime.now(UTC)
    good = sign(doc_event("delivered"), at=now, token="c" * 50)
    report = app.ingest_payloads("mailgun", [RawPayload(body=good)], actor=ACTOR)
    assert report.quarantined == [] and report.interactions_added == 1
    forged = sign(doc_event("unsubscribed"), at=now, token="c" * 50)
    bad = app.ingest_payloads("mailgun", [RawPayload(body=forged)], actor=ACTOR)
    assert bad.interactions_added == 0
    (q,) = bad.quarantined
    assert q.field == "signature.token" and "replay" in q.reason
    tampered = json.loads(good)
    tampered["signature"]["signature"] = "0" * 64
    worse = app.ingest_payloads("mailgun", [RawPayload(body=json.dumps(tampered).encode())], actor=ACTOR)
    assert worse.interactions_added == 0 and worse.quarantined[0].field == "signature"
    contact = app.timeline(EMAIL, actor=ACTOR).contact
    with app.storage.unit_of_work() as uow:
        assert list(uow.consents.for_contact(contact.id)) == []  # the forged unsubscribe never landed
    assert len(app.inbox_list(status="quarantined", source="mailgun")) == 2
    with pytest.raises(ConfigError, match="no secret"):
        make_app().ingest_payloads("mailgun", [RawPayload(body=good)], actor=ACTOR)
