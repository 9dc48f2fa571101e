"""Unbounce landing-page form webhooks through the ``unbounce`` preset of the mapped
connector: form encoding with the answers as JSON text in ``data.json`` (``data.xml``
ignored), the 12-hour ``time_submitted``, no vendor id (a keyed digest instead), and the
form-encoding traps (a byte-order mark, duplicate fields, broken escapes).

Corpus: ``unbounce/form_submission_with_xml.form.txt``, ``form_submission_email.form.txt``
and ``unbounce.expected.md``.  Unbounce's classic webhook is not signed.
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
from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import Actor, LeadEvent, Location, Practice, RawPayload
from carecrm.core.testing import resources
from carecrm.plugins.sources.mapped import MappedConnector
from carecrm.plugins.sources.mapped.connector import PRESET_CONNECTORS

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
XML_FILE = CORPUS / "unbounce" / "form_submission_with_xml.form.txt"
EMAIL_FILE = CORPUS / "unbounce" / "form_submission_email.form.txt"
needs_corpus = resources.needs_corpus(CORPUS, XML_FILE, EMAIL_FILE)
SETTINGS = Settings(practice=Practice(name="T", locations=(Location(name="main", timezone="America/Chicago"),)))
FORM = "application/x-www-form-urlencoded"
MAKE = Callable[..., CareCRM]
RECEIVED = datetime(2024, 3, 5, 16, 17, 30, 123000, tzinfo=UTC)


def unbounce(**options: Any) -> MappedConnector:
    return PRESET_CONNECTORS["unbounce"](name="unbounce", options=options, settings=SETTINGS)


def parse_all(body: bytes, conn: MappedConnector | None = None) -> list[Any]:
    return list((conn or unbounce()).parse(RawPayload(body=body, content_type=FORM, received_at=RECEIVED)))


def parse_one(body: bytes, conn: MappedConnector | None = None) -> LeadEvent:
    (event,) = parse_all(body, conn)
    assert isinstance(event, LeadEvent), event
    return event


def body_of(answers: dict[str, list[str]], **outer: str) -> bytes:
    fields = {"page_id": "p-1", "page_name": "Spring", "variant": "b", "page_url": "http://example.com/lp", **outer}
    fields["data.json"] = json.dumps(answers)
    return urllib.parse.urlencode(fields).encode()


@needs_corpus
def test_with_xml_date_and_time_and_no_identity() -> None:
    event = parse_one(XML_FILE.read_bytes())
    (inter,) = event.interactions
    assert inter.occurred_at == datetime(2017, 11, 15, 11, 45, tzinfo=UTC)
    assert inter.kind == "form.submitted" and inter.channel == "web"
    assert inter.attributes == {"page_name": "Wayfaring", "variant": "a"}
    assert event.touchpoint.form_id == "7648177d-7323-4330-b4f9-9951a52138b6"
    assert event.touchpoint.landing_page == "http://unbouncepages.com/wayfaring-147/"
    assert event.touchpoint.campaign == "Wayfaring" and event.touchpoint.source is None
    # no email, no phone: the core quarantines it (field 'identity'), never a contact
    assert event.emails == () and event.phones == () and event.first_name is None
    assert {"userfield1", "ip_address"} <= set(event.dropped_fields)
    assert inter.idempotency_key.startswith("form.submitted:digest:")
    assert event.consents == ()


@needs_corpus
def test_email_only_uses_the_receive_time_flagged() -> None:
    event = parse_one(EMAIL_FILE.read_bytes())
    assert event.emails == ("test@example.com",)  # %20 inside the JSON: decoded once
    (inter,) = event.interactions
    assert inter.occurred_at == RECEIVED  # no date_submitted: approximate
    assert inter.attributes["occurred_at_source"] == "received"
    assert event.touchpoint.landing_page == "http://unbouncepages.com/test-webhook-1"
    assert event.touchpoint.campaign == "Test-Webhook"


@pytest.mark.parametrize(
    ("clock", "expected"),
    [("12:05 AM UTC", (0, 5)), ("12:05 PM UTC", (12, 5)), ("04:17 PM UTC", (16, 17))],
)
def test_the_twelve_hour_clock(clock: str, expected: tuple[int, int]) -> None:
    answers = {"email": ["a.placeholder@example.com"], "date_submitted": ["2024-02-29"], "time_submitted": [clock]}
    inter = parse_one(body_of(answers)).interactions[0]
    assert inter.occurred_at == datetime(2024, 2, 29, *expected, tzinfo=UTC)


def test_fields_utm_and_page_of_a_landing_page() -> None:
    answers = {
        "email": ["a.placeholder@example.com"],
        "first_name": ["<b>Ana</b>"],
        "phone_number": ["(555) 555-0123"],
        "utm_source": ["google"],
        "utm_campaign": ["spring-botox"],
        "ip_address": ["203.0.113.9"],
    }
    event = parse_one(body_of(answers))
    assert event.first_name == "Ana"  # HTML stripped from names
    assert event.phones == ("(555) 555-0123",)
    assert (event.touchpoint.source, event.touchpoint.campaign) == ("google", "spring-botox")
    assert event.interactions[0].attributes["variant"] == "b"
    assert "ip_address" in event.dropped_fields


@needs_corpus
def test_a_byte_order_mark_before_the_form_body_keeps_the_first_field() -> None:
    # the first field is page_url: with the BOM in its name it would be dropped
    event = parse_one(b"\xef\xbb\xbf" + XML_FILE.read_bytes())
    assert event.touchpoint.landing_page == "http://unbouncepages.com/wayfaring-147/"
    plain = parse_one(XML_FILE.read_bytes())
    assert event.interactions[0].idempotency_key == plain.interactions[0].idempotency_key


def test_a_byte_order_mark_before_a_generic_form_body() -> None:
    conn = MappedConnector(
        name="f",
        options={"record_id": "id", "occurred_at_fallback": "received", "fields": {"email": "email"}},
        settings=SETTINGS,
    )
    event = parse_one(b"\xef\xbb\xbfid=42&email=a.placeholder%40example.com", conn)
    assert event.record_ref == "42" and event.dropped_fields == ()


def test_duplicate_outer_fields() -> None:
    # the same field twice with the same value is read once; two values are refused
    same = body_of({"email": ["a.placeholder@example.com"]}) + b"&page_name=Spring"
    assert parse_one(same).interactions[0].attributes["page_name"] == ["Spring", "Spring"]
    twice = body_of({"email": ["a.placeholder@example.com"]}) + b"&page_name=Autumn"
    (item,) = parse_all(twice)
    assert isinstance(item, Rejected) and item.field == "touchpoint.campaign"
    assert "Autumn" not in item.reason


def test_duplicate_email_answers_are_one_address() -> None:
    event = parse_one(body_of({"email": ["a.placeholder@example.com", "a.placeholder@example.com"]}))
    assert event.emails == ("a.placeholder@example.com",)


def test_bad_input_is_refused_naming_the_field() -> None:
    with pytest.raises(ValidationFailed) as info:
        parse_all(b"page_id=1&data.json=%7B%22email%22%3A")
    assert info.value.field == "data.json"
    with pytest.raises(ValidationFailed) as bad:
        parse_all(b"page_id=1&data.json=%E9%ZZ")
    assert bad.value.field == "body"
    with pytest.raises(ValidationFailed, match="form encoding"):
        parse_all(b'{"email": ["a@b.c"]}')


@needs_corpus
def test_by_name_through_the_app_and_reingest_adds_nothing(make_app: MAKE) -> None:
    app = make_app()
    payloads = [RawPayload(body=f.read_bytes(), content_type=FORM) for f in (EMAIL_FILE, XML_FILE)]
    report = app.ingest_payloads("unbounce", payloads, actor=ACTOR)
    assert report.interactions_added == 1 and report.contacts_created == 1
    (q,) = report.quarantined  # the page with no email or phone
    assert q.field == "identity" and "asdfasdf" not in q.reason
    timeline = app.timeline("test@example.com", actor=ACTOR)
    assert timeline.interactions[0].source == "unbounce"
    again = app.ingest_payloads("unbounce", [RawPayload(body=EMAIL_FILE.read_bytes(), content_type=FORM)], actor=ACTOR)
    assert again.interactions_added == 0 and again.contacts_created == 0
