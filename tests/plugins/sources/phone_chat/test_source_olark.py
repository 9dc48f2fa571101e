"""Tests of the Olark transcript webhook connector (``carecrm.plugins.sources.olark``).

The payloads are the vendor corpus's (``$CARECRM_TEST_CORPUS``, else ``../shared/corpus``;
folder ``olark``): Olark's documented example transcript and an offline message,
checked against ``olark.expected.md``.  Olark does not sign its webhooks.
"""

from __future__ import annotations

import json
import urllib.parse
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
from carecrm.plugins.sources.olark import OlarkConnector

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
TRANSCRIPT = CORPUS / "olark" / "conversation_transcript.form.txt"
OFFLINE = CORPUS / "olark" / "offline_message.form.txt"
needs_corpus = resources.needs_corpus(CORPUS, TRANSCRIPT, OFFLINE)
FORM = "application/x-www-form-urlencoded"
MAKE = Callable[..., CareCRM]
VISITOR_ID = "9QRF9YWM5XW3ZSU7P9CGWRU89944341"


def connector(**options: Any) -> OlarkConnector:
    return OlarkConnector(name="olark", options=options, settings=Settings())


def raw(body: bytes | str) -> RawPayload:
    return RawPayload(body=body.encode() if isinstance(body, str) else body, content_type=FORM)


def one(body: bytes | str) -> LeadEvent:
    (event,) = list(connector().parse(raw(body)))
    assert isinstance(event, LeadEvent), event
    return event


def document(path: Path) -> dict[str, Any]:
    (value,) = [v for k, v in urllib.parse.parse_qsl(path.read_text()) if k == "data"]
    data: dict[str, Any] = json.loads(value)
    return data


def form(doc: dict[str, Any]) -> str:
    return urllib.parse.urlencode({"data": json.dumps(doc)})


# --------------------------------------------------------------------------- corpus files


@needs_corpus
def test_conversation_transcript() -> None:
    event = one(TRANSCRIPT.read_bytes())
    # the visitor, never the operator (john@example.com is staff)
    assert event.emails == ("bob.placeholder@example.com",)
    assert event.full_name == "Bob Placeholder"
    assert event.phones == ("(555) 555-0142",) and event.region == "US"  # countryCode, not "United State"
    assert event.external_ids == (("olark_visitor", VISITOR_ID),)
    assert event.record_ref == "EV695BI2930A6XMO32886MPT899443414"
    (draft,) = event.interactions
    assert (draft.kind, draft.channel, draft.direction) == ("chat.started", "chat", "inbound")
    assert draft.idempotency_key == "chat.started:EV695BI2930A6XMO32886MPT899443414"
    # "1307116657.1": epoch seconds as a string with a fraction, read exactly
    assert draft.occurred_at == datetime(2011, 6, 3, 15, 57, 37, 100000, tzinfo=UTC)
    assert draft.attributes["last_message_at"] == "2011-06-03T15:57:41.250000Z"
    assert draft.attributes["message_count"] == 2 and draft.attributes["visitor_message_count"] == 1
    assert draft.attributes["tags"] == ["olark", "customer"]
    assert draft.attributes["groups"] == ["My Sales Group"]
    assert draft.attributes["chat_feedback"] == {
        "overall_chat": 5,
        "responsiveness": 5,
        "friendliness": 5,
        "knowledge": 5,
    }
    assert draft.attributes["custom_fields"] == {"favoriteColor": "blue", "myInternalCustomerId": "12341234"}
    # MessageToVisitor is the practice, MessageToOperator the visitor; no operator named
    assert draft.body == (
        "practice: Hi there. Need any help?\nvisitor: Yes, please help me with billing.\nfeedback: Very helpful, thanks"
    )
    assert "John" not in draft.body and "john@example.com" not in json.dumps(draft.attributes)
    assert event.touchpoint.landing_page == "http://www.example.com/path"
    assert event.touchpoint.source is None
    assert event.consents == ()
    assert {"visitor.ip", "visitor.organization", "visitor.city"} <= set(event.dropped_fields)
    assert event.city is None


@needs_corpus
def test_offline_message() -> None:
    event = one(OFFLINE.read_bytes())
    assert event.emails == ("foo.placeholder@example.com",) and event.full_name == "John Placeholder"
    assert event.external_ids == (("olark_visitor", VISITOR_ID),)  # the same browser as the transcript
    (draft,) = event.interactions
    assert (draft.kind, draft.channel) == ("chat.offline_message", "chat")
    assert draft.occurred_at == datetime(2011, 6, 3, 15, 57, 47, 100000, tzinfo=UTC)
    assert draft.body == "visitor: Hi there."
    assert event.consents == ()


@needs_corpus
def test_begin_page_utm_and_a_json_body() -> None:
    doc = document(TRANSCRIPT)
    doc["visitor"]["conversationBeginPage"] = "https://clinic.example.com/botox?utm_source=google&utm_medium=cpc&e=x"
    event = one(form(doc))
    assert (event.touchpoint.source, event.touchpoint.medium) == ("google", "cpc")
    assert event.touchpoint.landing_page == "https://clinic.example.com/botox"
    assert one(json.dumps(doc)).interactions == event.interactions  # the bare JSON document
    assert one("\ufeff" + form(doc)).record_ref == event.record_ref  # a byte-order mark


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("body", "field", "reason"),
    [
        ("data=%7B%22kind%22", "data", "not JSON"),
        ("data=%7", "body", "percent-escape"),
        ("other=1", "data", "missing"),
        ("data=%5B1%5D", "data", "not a JSON conversation object"),
        ("no equals sign", "body", "not form parameters"),
        (b"\xff", "body", "not UTF-8"),
    ],
)
def test_unreadable_payloads_are_refused(body: str | bytes, field: str, reason: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        list(connector().parse(raw(body)))
    assert (err.value.record, err.value.field) == ("payload", field)
    assert reason in err.value.reason


@needs_corpus
def test_bad_records_are_rejected_without_values() -> None:
    doc = document(TRANSCRIPT)
    doc["items"][1]["timestamp"] = "yesterday"
    (r,) = connector().parse(raw(form(doc)))
    assert r == Rejected("EV695BI2930A6XMO32886MPT899443414", "items[1].timestamp", "not Unix seconds")
    doc = document(TRANSCRIPT)
    doc["items"] = []
    (r,) = connector().parse(raw(form(doc)))
    assert isinstance(r, Rejected) and r.field == "items"
    doc = document(TRANSCRIPT)
    del doc["id"]
    (r,) = connector().parse(raw(form(doc)))
    assert isinstance(r, Rejected) and (r.ref, r.field) == ("#0", "id")


def test_options_are_checked() -> None:
    with pytest.raises(ConfigError, match="unknown option"):
        connector(secret_url="x")


# --------------------------------------------------------------------------- the app


def test_registered_as_a_built_in(make_app: MAKE) -> None:
    assert "carecrm.plugins.sources.olark" in DEFAULT_PLUGINS
    app = make_app()
    assert isinstance(app.connector("olark"), OlarkConnector)
    assert OlarkConnector.formats and OlarkConnector.signed is False


@needs_corpus
def test_through_the_app(make_app: MAKE) -> None:
    app = make_app()  # unsigned: no secret needed, no --no-verify either
    payloads = [raw(TRANSCRIPT.read_bytes()), raw(OFFLINE.read_bytes())]
    report = app.ingest_payloads("olark", payloads, actor=ACTOR)
    assert report.quarantined == [] and report.interactions_added == 2
    bob = app.timeline("bob.placeholder@example.com", actor=ACTOR)
    assert [i.kind for i in bob.interactions] == ["chat.started"]
    assert bob.contact.phones() == ["+15555550142"]
    assert (bob.contact.first_name, bob.contact.last_name) == ("Bob", "Placeholder")
    # one browser, two people: never merged automatically
    john = app.timeline("foo.placeholder@example.com", actor=ACTOR)
    assert john.contact.id != bob.contact.id
    assert [i.kind for i in john.interactions] == ["chat.offline_message"]
    assert report.contacts_created == 2 and report.review_pairs >= 1
    again = app.ingest_payloads("olark", payloads, actor=ACTOR)
    assert again.interactions_added == 0 and again.contacts_created == 0 and again.quarantined == []
