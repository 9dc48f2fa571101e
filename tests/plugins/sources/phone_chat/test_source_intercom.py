"""Tests of the Intercom webhook connector (``carecrm.plugins.sources.intercom``).

``contact_lead_created.json`` is the vendor corpus's (``$CARECRM_TEST_CORPUS``, else
``../shared/corpus``; folder ``intercom``), checked against ``intercom.expected.md``.  The
conversation payloads are built here from Intercom's documented webhook models
(https://developers.intercom.com/docs/references/webhooks/webhook-models): the 1.x
``conversation.user.created`` the corpus notes describe, and a 2.x reply.  Intercom
publishes no signature vector: the signatures are made here from the documented scheme
(``sha1=`` + hex HMAC-SHA1 of the body) with a test secret.
"""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
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
from carecrm.plugins.sources.intercom import SIGNATURE_HEADER, IntercomConnector, html_text, is_generated_name

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
LEAD = CORPUS / "intercom" / "contact_lead_created.json"
needs_corpus = resources.needs_corpus(CORPUS, LEAD)
MAKE = Callable[..., CareCRM]
SECRET = "client-secret"
EMAIL = "lead.placeholder@example.com"


def connector(**options: Any) -> IntercomConnector:
    return IntercomConnector(name="intercom", options=options, settings=Settings())


def raw(doc: Any, **headers: str) -> RawPayload:
    body = doc if isinstance(doc, bytes) else json.dumps(doc).encode()
    return RawPayload(body=body, headers=headers)


def one(doc: Any, c: IntercomConnector | None = None) -> LeadEvent:
    (event,) = list((c or connector()).parse(raw(doc)))
    assert isinstance(event, LeadEvent), event
    return event


def sign(body: bytes, secret: str = SECRET) -> str:
    return "sha1=" + hmac.new(secret.encode(), body, hashlib.sha1).hexdigest()


def lead() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(LEAD.read_text())
    return data


def conversation_1x() -> dict[str, Any]:
    """A 1.x ``conversation.user.created`` (the model the corpus notes describe)."""
    return {
        "type": "notification_event",
        "app_id": "i6wc9ipe",
        "data": {
            "type": "notification_event_data",
            "item": {
                "type": "conversation",
                "id": "21321941764",
                "created_at": 1553290198,
                "updated_at": 1553290198,
                "user": {
                    "type": "lead",
                    "id": "5c9553cb27e377f24eed49f7",
                    "user_id": "75067020-1204-495c-8edc-abb7d88bdd43",
                    "name": "Rose Poodle from St. John's",
                    "email": "",
                },
                "assignee": {"type": "nobody_admin", "id": None},
                "conversation_message": {
                    "type": "conversation_message",
                    "id": "331494375",
                    "body": "<p>Hello everyone!</p>",
                    "author": {"type": "user", "id": "5c9553cb27e377f24eed49f7"},
                },
                "conversation_parts": {"type": "conversation_part.list", "conversation_parts": [], "total_count": 0},
            },
        },
        "id": "notif_3ac27816-d27c-45fd-a65a-bbaf021cf780",
        "topic": "conversation.user.created",
        "delivery_attempts": 1,
        "created_at": 1553290198,
    }


def reply_2x() -> dict[str, Any]:
    """A 2.x ``conversation.user.replied``: ``contacts.contacts[]`` and the last part."""
    return {
        "type": "notification_event",
        "topic": "conversation.user.replied",
        "id": "notif_aaaaaaaa-0000-4000-8000-000000000001",
        "created_at": 1768020300,
        "data": {
            "item": {
                "type": "conversation",
                "id": "21321941764",
                "created_at": 1768020119,
                "source": {
                    "type": "conversation",
                    "id": "331494375",
                    "body": "<p>Hi</p>",
                    "author": {"type": "lead", "id": "6961d897719c606240178da8", "email": EMAIL, "name": ""},
                },
                "contacts": {
                    "type": "contact.list",
                    "contacts": [{"type": "contact", "id": "6961d897719c606240178da8"}],
                },
                "conversation_parts": {
                    "type": "conversation_part.list",
                    "conversation_parts": [
                        {
                            "type": "conversation_part",
                            "id": "9988776655",
                            "part_type": "comment",
                            "body": "<p>Do you take <b>Aetna</b>?<br>Thanks &amp; bye</p>",
                            "created_at": 1768020290,
                            "author": {"type": "lead", "id": "6961d897719c606240178da8"},
                        }
                    ],
                },
            }
        },
    }


# --------------------------------------------------------------------------- corpus and models


@needs_corpus
def test_contact_lead_created() -> None:
    event = one(lead())
    assert event.emails == (EMAIL,)
    assert event.full_name == "Lead Placeholder" and event.phones == ()
    assert event.record_ref == "6961d897719c606240178da8"
    assert event.external_ids == (
        ("intercom", "6961d897719c606240178da8"),
        ("intercom_external_id", "c3ca7689-a3c1-4a05-b81d-6cdf995cea85"),
    )
    (draft,) = event.interactions
    assert (draft.kind, draft.channel, draft.direction) == ("chat.started", "chat", "inbound")
    # the contact's ISO created_at (with milliseconds), not the envelope's epoch seconds
    assert draft.occurred_at == datetime(2026, 1, 10, 4, 41, 59, 251000, tzinfo=UTC)
    assert draft.attributes["role"] == "lead" and draft.attributes["topic"] == "contact.lead.created"
    # every UTM field and the referrer are null: no touchpoint
    tp = event.touchpoint
    assert (tp.source, tp.medium, tp.campaign, tp.term, tp.content, tp.referrer) == (None,) * 6
    # false flags are no consent event ("not unsubscribed" is not a grant)
    assert event.consents == ()
    assert "email_hard_bounced" not in draft.attributes


@needs_corpus
def test_envelope_time_when_the_contact_has_none() -> None:
    doc = lead()
    del doc["data"]["item"]["created_at"]
    assert one(doc).interactions[0].occurred_at == datetime(2026, 1, 10, 4, 41, 59, tzinfo=UTC)


def test_conversation_1x_anonymous_visitor() -> None:
    event = one(conversation_1x())
    assert event.emails == ()  # "" is no email
    # "Rose Poodle from St. John's" is Intercom's pseudonym: not stored as a name
    assert event.full_name is None and event.name_confidence == "low"
    assert event.dropped_fields == ("name",)
    assert event.external_ids == (
        ("intercom", "5c9553cb27e377f24eed49f7"),
        ("intercom_external_id", "75067020-1204-495c-8edc-abb7d88bdd43"),
    )
    (draft,) = event.interactions
    assert (draft.kind, draft.channel) == ("chat.started", "chat")
    assert draft.occurred_at == datetime(2019, 3, 22, 21, 29, 58, tzinfo=UTC)
    assert draft.body == "Hello everyone!"  # HTML stripped
    assert draft.attributes["conversation_id"] == "21321941764"
    assert draft.attributes["assigned"] is False  # nobody_admin
    kept = one(conversation_1x(), connector(keep_generated_names=True))
    assert kept.full_name == "Rose Poodle from St. John's" and kept.name_confidence == "low"


def test_conversation_2x_reply() -> None:
    event = one(reply_2x())
    assert event.emails == (EMAIL,)  # from source.author, the same id as the contact
    assert event.external_ids[0] == ("intercom", "6961d897719c606240178da8")
    (draft,) = event.interactions
    assert draft.kind == "chat.message_received"
    assert draft.body == "Do you take Aetna?\nThanks & bye"
    assert draft.occurred_at == datetime.fromtimestamp(1768020290, UTC)
    assert draft.attributes["part_id"] == "9988776655"
    # the thread key is the conversation: a reply is its own event on the same thread
    opening = one(conversation_1x())
    assert opening.interactions[0].attributes["conversation_id"] == draft.attributes["conversation_id"]
    assert opening.interactions[0].idempotency_key != draft.idempotency_key


def test_helpers() -> None:
    assert is_generated_name("Rose Poodle from St. John's")
    assert not is_generated_name("Rose Smith") and not is_generated_name("rose poodle from x")
    assert html_text("<p>a</p><p>b &lt;c&gt;</p>") == "a\nb <c>"


@needs_corpus
@pytest.mark.parametrize(
    ("flags", "expected"),
    [
        ({"unsubscribed_from_emails": True}, [("email", "email", "revoked")]),
        ({"marked_email_as_spam": True}, [("email", "email", "revoked")]),
        ({"phone": "+13125550142", "sms_consent": True}, [("phone", "sms", "granted")]),
        ({"phone": "+13125550142", "sms_consent": True, "unsubscribed_from_sms": True}, [("phone", "sms", "revoked")]),
        ({"sms_consent": True}, []),  # no phone to attach it to
        ({"has_hard_bounced": True}, []),  # undeliverable is not an opt-out
    ],
)
def test_consent_flags(flags: dict[str, Any], expected: list[tuple[str, str, str]]) -> None:
    doc = lead()
    doc["data"]["item"].update(flags)
    event = one(doc)
    assert [(c.contact_point_kind, c.channel, c.status) for c in event.consents] == expected
    assert all(c.purpose == "marketing" for c in event.consents)
    if flags.get("has_hard_bounced"):
        assert event.interactions[0].attributes["email_hard_bounced"] is True


@needs_corpus
def test_other_topics() -> None:
    updated = lead()
    updated["topic"] = "contact.lead.updated"
    updated["data"]["item"]["unsubscribed_from_emails"] = True
    event = one(updated)
    assert event.interactions == () and [c.status for c in event.consents] == ["revoked"]
    for topic in ("ping", "conversation.admin.replied", "company.created"):
        doc = lead()
        doc["topic"] = topic
        assert list(connector().parse(raw(doc))) == []


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        (b'{"topic": "contact.lead.created", "data": {', "body", "not JSON"),
        (b"[1, 2]", "body", "not a JSON notification object"),
        (b'{"data": {"item": {}}}', "topic", "missing"),
        (b'{"topic": "contact.lead.created", "data": {"item": "x"}}', "data.item", "not an object"),
        (b"\xff\xfe", "body", "not UTF-8"),
    ],
)
def test_unreadable_payloads_are_refused(body: bytes, field: str, reason: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        list(connector().parse(raw(body)))
    assert (err.value.record, err.value.field) == ("payload", field)
    assert reason in err.value.reason


def test_bad_records_are_rejected() -> None:
    doc = conversation_1x()
    del doc["data"]["item"]["user"]
    (r,) = connector().parse(raw(doc))
    assert r == Rejected("21321941764", "data.item.user", "no contact on the conversation")
    doc = conversation_1x()
    doc["data"]["item"]["id"] = None
    (r,) = connector().parse(raw(doc))
    assert isinstance(r, Rejected) and r.field == "data.item.id"


@needs_corpus
def test_a_byte_order_mark_is_read() -> None:
    event = one(b"\xef\xbb\xbf" + LEAD.read_bytes())
    assert event.emails == (EMAIL,)


# --------------------------------------------------------------------------- signatures


@needs_corpus
def test_signature() -> None:
    body = LEAD.read_bytes()
    c = connector()
    c.verify(raw(body, **{SIGNATURE_HEADER: sign(body)}), SECRET)
    c.verify(raw(body, **{"x-hub-signature": sign(body).upper().replace("SHA1=", "sha1=")}), SECRET)
    cases = [
        ({}, "missing"),
        ({SIGNATURE_HEADER: sign(body)[5:]}, "prefix"),
        ({SIGNATURE_HEADER: "sha1=zz"}, "not hex"),
        ({SIGNATURE_HEADER: sign(body, "other")}, "does not match"),
        ({SIGNATURE_HEADER: sign(body.replace(b"Lead Placeholder", b"Lead Placeholdr"))}, "does not match"),
    ]
    for headers, reason in cases:
        with pytest.raises(ValidationFailed) as err:
            c.verify(raw(body, **headers), SECRET)
        assert (err.value.record, err.value.field) == ("payload", SIGNATURE_HEADER)
        assert reason in err.value.reason


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        connector(keep_names=True)


# --------------------------------------------------------------------------- the app


def test_registered_as_a_built_in(make_app: MAKE) -> None:
    assert "carecrm.plugins.sources.intercom" in DEFAULT_PLUGINS
    app = make_app()
    assert isinstance(app.connector("intercom"), IntercomConnector)
    assert IntercomConnector.formats and IntercomConnector.signed is True


@needs_corpus
def test_through_the_app(make_app: MAKE, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECRM_TEST_INTERCOM_SECRET", SECRET)
    app = make_app(sources={"intercom": {"secret": "$env:CARECRM_TEST_INTERCOM_SECRET"}})
    bodies = [LEAD.read_bytes(), json.dumps(conversation_1x()).encode(), json.dumps(reply_2x()).encode()]
    payloads = [raw(b, **{SIGNATURE_HEADER: sign(b)}) for b in bodies]
    report = app.ingest_payloads("intercom", payloads, actor=ACTOR)
    assert report.quarantined == [] and report.interactions_added == 3
    # the lead and the 2.x reply share the Intercom contact id and the email: one person;
    # the anonymous 1.x visitor is another
    assert report.contacts_created == 2
    tl = app.timeline(EMAIL, actor=ACTOR)
    assert sorted(i.kind for i in tl.interactions) == ["chat.message_received", "chat.started"]
    assert (tl.contact.first_name, tl.contact.last_name) == ("Lead", "Placeholder")
    # re-delivered (a retry re-serialised, delivery_attempts 2): nothing new
    retried = copy.deepcopy(lead())
    retried["delivery_attempts"] = 2
    body = json.dumps(retried).encode()
    again = app.ingest_payloads("intercom", [raw(body, **{SIGNATURE_HEADER: sign(body)})], actor=ACTOR)
    assert again.quarantined == [] and again.interactions_added == 0 and again.contacts_created == 0
    # a tampered body is quarantined, never stored
    forged = body.replace(b"Lead Placeholder", b"Someone Else")
    bad = app.ingest_payloads("intercom", [raw(forged, **{SIGNATURE_HEADER: sign(body)})], actor=ACTOR)
    (q,) = bad.quarantined
    assert q.field == SIGNATURE_HEADER and "Someone" not in q.message()
    assert app.counts()["contacts"] == 2
