"""Webflow ``form_submission`` webhooks through the ``webflow`` preset of the mapped
connector: by name, the ``x-webflow-signature`` check over ``timestamp:body`` with the
timestamp in milliseconds and its 5-minute window, and through the app.

Corpus: ``webflow/form_submission_doc_example.json`` and ``webflow.expected.md``.
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
from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import Actor, LeadEvent, Location, Practice, RawPayload
from carecrm.core.testing import resources
from carecrm.plugins.sources.mapped import MappedConnector
from carecrm.plugins.sources.mapped.connector import PRESET_CONNECTORS

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
FILE = CORPUS / "webflow" / "form_submission_doc_example.json"
needs_corpus = resources.needs_corpus(CORPUS, FILE)
SETTINGS = Settings(practice=Practice(name="T", locations=(Location(name="main", timezone="America/Chicago"),)))
SECRET = "webflow-test-secret"
MAKE = Callable[..., CareCRM]
#: 1722370035277 ms = 2024-07-30T20:07:15.277Z (webflow.expected.md)
STAMP_MS = 1722370035277
SIGNED_AT = datetime(2024, 7, 30, 20, 7, 15, 277000, tzinfo=UTC)


def webflow(**options: Any) -> MappedConnector:
    return PRESET_CONNECTORS["webflow"](name="webflow", options=options, settings=SETTINGS)


def parse_one(conn: MappedConnector, body: bytes) -> LeadEvent:
    (event,) = list(conn.parse(RawPayload(body=body, content_type="application/json")))
    assert isinstance(event, LeadEvent), event
    return event


def signed(body: bytes, stamp: int = STAMP_MS, secret: str = SECRET) -> dict[str, str]:
    """Webflow's headers: ``x-webflow-signature`` = hex HMAC-SHA256 of
    ``"<x-webflow-timestamp>:<body>"`` (https://developers.webflow.com/data/docs/working-with-webhooks)."""
    digest = hmac.new(secret.encode(), f"{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    return {"x-webflow-timestamp": str(stamp), "x-webflow-signature": digest}


def doc(data: dict[str, Any], **payload: Any) -> bytes:
    body = {
        "triggerType": "form_submission",
        "payload": {
            "name": "Contact Us",
            "siteId": "65427cf400e02b306eaa049c",
            "data": data,
            "submittedAt": "2024-07-30T20:07:15.220Z",
            "id": "66a947f35b9d7ba400e22733",
            "formId": "65429eadebe8a9f3a30f62d0",
            **payload,
        },
    }
    return json.dumps(body).encode()


@needs_corpus
def test_the_corpus_file_by_the_preset() -> None:
    event = parse_one(webflow(), FILE.read_bytes())
    assert event.source == "webflow"
    assert event.emails == ("zaphod.placeholder@example.com",)
    assert (event.first_name, event.last_name) == ("Zaphod", "Placeholder")
    # a JSON number: its exact digits, never a float (the core makes it +15550000000)
    assert event.phones == ("15550000000",)
    (inter,) = event.interactions
    assert inter.kind == "form.submitted" and inter.channel == "web"
    assert inter.occurred_at == datetime(2022, 9, 14, 12, 35, 16, 117000, tzinfo=UTC)
    assert inter.idempotency_key == "form.submitted:6321ca84df3949bfc6752327"
    assert inter.attributes == {
        "form_name": "Contact Us",
        "site_id": "65427cf400e02b306eaa049c",
        "external_record_id": "6321ca84df3949bfc6752327",
    }
    assert event.touchpoint.form_id == "65429eadebe8a9f3a30f62d0"
    assert event.consents == () and event.dropped_fields == ()


def test_email_only_delivery_without_a_schema() -> None:
    # webflow.expected.md, form_submission_email_only: "Email 2", no schema[] at all
    event = parse_one(webflow(), doc({"Email 2": "hello.placeholder@example.com"}))
    assert event.emails == ("hello.placeholder@example.com",)
    assert event.interactions[0].occurred_at == datetime(2024, 7, 30, 20, 7, 15, 220000, tzinfo=UTC)
    assert event.record_ref == "66a947f35b9d7ba400e22733"


def test_a_phone_sent_as_text_keeps_its_plus_and_zero() -> None:
    event = parse_one(webflow(), doc({"email": "a.placeholder@example.com", "Phone Number": "+44 020 7946 0000"}))
    assert event.phones == ("+44 020 7946 0000",)


def test_a_field_sent_twice_with_different_values_is_refused_naming_it() -> None:
    body = doc({"email": "a.placeholder@example.com", "First Name": ["Ana", "Bea"]})
    (item,) = list(webflow().parse(RawPayload(body=body)))
    assert isinstance(item, Rejected) and item.field == "first_name"
    assert "Ana" not in item.reason and "Bea" not in item.reason
    same = parse_one(webflow(), doc({"email": "a.placeholder@example.com", "First Name": ["Ana", "Ana"]}))
    assert same.first_name == "Ana"


def test_other_trigger_types_are_skipped() -> None:
    body = json.dumps({"triggerType": "site_publish", "payload": {}}).encode()
    assert list(webflow().parse(RawPayload(body=body))) == []


# --------------------------------------------------------------------------- signature


@needs_corpus
def test_signature_over_timestamp_and_raw_body_in_milliseconds() -> None:
    conn = webflow()
    body = FILE.read_bytes()
    received = SIGNED_AT + timedelta(seconds=3)
    conn.verify(RawPayload(body=body, headers=signed(body), received_at=received), SECRET)
    # the raw bytes are signed, not a re-serialisation of the parsed JSON
    reserialised = json.dumps(json.loads(body)).encode()
    assert reserialised != body
    with pytest.raises(ValidationFailed) as info:
        conn.verify(RawPayload(body=reserialised, headers=signed(body), received_at=received), SECRET)
    assert info.value.field == "x-webflow-signature"
    # a tampered body
    with pytest.raises(ValidationFailed, match="does not match"):
        conn.verify(
            RawPayload(body=body.replace(b"Zaphod", b"Zafod"), headers=signed(body), received_at=received), SECRET
        )


@needs_corpus
def test_the_timestamp_window_is_five_minutes_in_milliseconds() -> None:
    conn = webflow()
    body = FILE.read_bytes()
    conn.verify(RawPayload(body=body, headers=signed(body), received_at=SIGNED_AT + timedelta(seconds=299)), SECRET)
    for late in (timedelta(seconds=301), timedelta(seconds=-301), timedelta(days=365)):
        with pytest.raises(ValidationFailed) as info:
            conn.verify(RawPayload(body=body, headers=signed(body), received_at=SIGNED_AT + late), SECRET)
        assert info.value.field == "x-webflow-timestamp"
    # a timestamp read as seconds would be year 56548: it is milliseconds
    headers = signed(body, stamp=STAMP_MS // 1000)
    with pytest.raises(ValidationFailed, match="x-webflow-timestamp"):
        conn.verify(RawPayload(body=body, headers=headers, received_at=SIGNED_AT), SECRET)
    # a practice may widen the window for its own source
    wide = webflow(signature={"max_age_seconds": 86400 * 400})
    wide.verify(RawPayload(body=body, headers=signed(body), received_at=SIGNED_AT + timedelta(days=365)), SECRET)


# --------------------------------------------------------------------------- the app


@needs_corpus
def test_by_name_through_the_app_and_reingest_adds_nothing(make_app: MAKE) -> None:
    app = make_app()
    report = app.ingest_payloads("webflow", [RawPayload(body=FILE.read_bytes())], actor=ACTOR)
    assert report.quarantined == [] and report.contacts_created == 1 and report.interactions_added == 1
    contact = app.timeline("zaphod.placeholder@example.com", actor=ACTOR).contact
    assert contact.phones() == ["+15550000000"]
    assert (contact.first_name, contact.last_name) == ("Zaphod", "Placeholder")
    again = app.ingest_payloads("webflow", [RawPayload(body=FILE.read_bytes())], actor=ACTOR)
    assert again.interactions_added == 0 and again.quarantined == []


@needs_corpus
def test_with_a_secret_an_old_signature_is_quarantined(make_app: MAKE) -> None:
    app = make_app(sources={"webflow": {"secret": SECRET}})
    body = FILE.read_bytes()
    old = RawPayload(body=body, headers=signed(body))  # signed in 2024, received now
    report = app.ingest_payloads("webflow", [old], actor=ACTOR)
    (q,) = report.quarantined
    assert q.field == "x-webflow-timestamp" and report.interactions_added == 0
    now_ms = int(datetime.now(UTC).timestamp() * 1000)
    fresh = RawPayload(body=body, headers=signed(body, stamp=now_ms))
    assert app.ingest_payloads("webflow", [fresh], actor=ACTOR).interactions_added == 1
