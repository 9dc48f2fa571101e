"""Jotform form webhooks through the ``jotform`` preset of the mapped connector:
``multipart/form-data`` whose answers are the JSON text of the ``rawRequest`` part, keyed
``q<id>_<slug>``; the preset finds the name, phone and email widgets by shape, a form's
questions are mapped by key with overrides.  Jotform does not sign its webhooks.

Corpus: ``jotform/submission_multipart.txt`` and its ``.expected.md``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from carecrm.core import CareCRM
from carecrm.core.config import Settings
from carecrm.core.errors import ValidationFailed
from carecrm.core.model.domain import Actor, LeadEvent, Location, Practice, RawPayload
from carecrm.core.testing import resources
from carecrm.plugins.sources.mapped import MappedConnector
from carecrm.plugins.sources.mapped.connector import PRESET_CONNECTORS

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
FILE = CORPUS / "jotform" / "submission_multipart.txt"
needs_corpus = resources.needs_corpus(CORPUS, FILE)
CONTENT_TYPE = "multipart/form-data; boundary=------------------------J1JNT4vbVO4FCC1qLG4HSv"
SETTINGS = Settings(practice=Practice(name="T", locations=(Location(name="main", timezone="America/Chicago"),)))
MAKE = Callable[..., CareCRM]
RECEIVED = datetime(2024, 11, 26, 10, 11, 38, tzinfo=UTC)


def jotform(**options: Any) -> MappedConnector:
    return PRESET_CONNECTORS["jotform"](name="jotform", options=options, settings=SETTINGS)


def parse_one(body: bytes, conn: MappedConnector | None = None, content_type: str = CONTENT_TYPE) -> LeadEvent:
    items = list((conn or jotform()).parse(RawPayload(body=body, content_type=content_type, received_at=RECEIVED)))
    (event,) = items
    assert isinstance(event, LeadEvent), event
    return event


def multipart(raw: dict[str, Any], submission_id: str = "5999000000000000001", **parts: str) -> bytes:
    """A Jotform-shaped multipart body (CRLF) with ``rawRequest`` = ``raw`` as JSON text."""
    fields = {"formID": "243231271343446", "submissionID": submission_id, **parts, "rawRequest": json.dumps(raw)}
    out = b""
    for name, value in fields.items():
        out += f'--B\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
    return out + b"--B--\r\n"


@needs_corpus
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_the_corpus_file_by_the_preset(newline: bytes) -> None:
    body = FILE.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", newline)
    event = parse_one(body)
    assert event.source == "jotform"
    assert event.record_ref == "6084250982513018472"  # a string: it exceeds 2**53
    assert (event.first_name, event.last_name) == ("Jane", "Placeholder")
    # no email and no phone in this submission: none invented (the core quarantines it)
    assert event.emails == () and event.phones == ()
    (inter,) = event.interactions
    assert inter.kind == "form.submitted" and inter.channel == "web"
    assert inter.idempotency_key == "form.submitted:6084250982513018472"
    assert inter.occurred_at == RECEIVED  # no submission time in the payload
    assert inter.attributes == {
        "form_title": "Tutor Appointment Form",
        "submission_type": "WEB",
        "external_record_id": "6084250982513018472",
        "occurred_at_source": "received",
    }
    assert event.touchpoint.form_id == "243231271343446"
    # uploads (an ID document), the appointment widget and the rest: names only
    assert {"identityProof", "temp_upload", "q28_appointment", "q33_typeOf"} <= set(event.dropped_fields)
    assert "q3_studentsName" not in event.dropped_fields
    assert event.consents == ()


def test_widgets_found_by_shape() -> None:
    raw = {
        "q3_fullName": {"first": "<i>Ana</i>", "last": "Placeholder"},
        "q4_yourEmail": "ana.placeholder@example.com",
        "q5_phoneNumber": {"area": "555", "phone": "5550123"},
        "q6_message": "write to me at someone@example.com or call",
    }
    event = parse_one(multipart(raw), content_type="multipart/form-data; boundary=B")
    assert (event.first_name, event.last_name) == ("Ana", "Placeholder")
    assert event.emails == ("ana.placeholder@example.com",)  # free text with an address is not one
    assert event.phones == ("5555550123",)
    full = parse_one(
        multipart({"q7_phone": {"full": "(555) 555-0123"}}), content_type="multipart/form-data; boundary=B"
    )
    assert full.phones == ("(555) 555-0123",)


def test_a_form_mapped_by_question_key() -> None:
    conn = MappedConnector(
        name="jotform_intake",
        options={
            "preset": "jotform",
            "fields": {"email": "rawRequest.q9_email", "service_interest": "rawRequest.q34_subjectFor"},
        },
        settings=SETTINGS,
    )
    raw = {"q9_email": "b.placeholder@example.com", "q8_other": "c.placeholder@example.com", "q34_subjectFor": "Math"}
    event = parse_one(multipart(raw), conn, content_type="multipart/form-data; boundary=B")
    assert event.emails == ("b.placeholder@example.com",) and event.service_interest == "Math"
    assert event.source == "jotform_intake"


def test_a_byte_order_mark_in_the_raw_request_part() -> None:
    body = multipart({"q3_n": {"first": "Ana", "last": "P"}}).replace(b"\r\n\r\n{", b"\r\n\r\n\xef\xbb\xbf{")
    event = parse_one(body, content_type="multipart/form-data; boundary=B")
    assert event.first_name == "Ana"


def test_bad_input_is_refused_whole() -> None:
    with pytest.raises(ValidationFailed, match="boundary"):
        list(jotform().parse(RawPayload(body=multipart({}), content_type="multipart/form-data")))
    broken = multipart({}).replace(b"{}", b'{"q3_n": ')
    with pytest.raises(ValidationFailed) as info:
        list(jotform().parse(RawPayload(body=broken, content_type="multipart/form-data; boundary=B")))
    assert info.value.field == "rawRequest"


@needs_corpus
def test_by_name_through_the_app_and_reingest_adds_nothing(make_app: MAKE) -> None:
    app = make_app()
    named = multipart({"q3_n": {"first": "Ana", "last": "Placeholder"}, "q4_email": "ana.placeholder@example.com"})
    payloads = [
        RawPayload(body=FILE.read_bytes(), content_type=CONTENT_TYPE),
        RawPayload(body=named, content_type="multipart/form-data; boundary=B"),
    ]
    report = app.ingest_payloads("jotform", payloads, actor=ACTOR)
    (q,) = report.quarantined  # the corpus submission has a name only: never matched by name
    assert q.field == "identity" and q.record == "6084250982513018472" and "Jane" not in q.reason
    assert report.contacts_created == 1 and report.interactions_added == 1
    contact = app.timeline("ana.placeholder@example.com", actor=ACTOR).contact
    assert (contact.first_name, contact.last_name) == ("Ana", "Placeholder")
    again = app.ingest_payloads("jotform", [payloads[1]], actor=ACTOR)
    assert again.interactions_added == 0 and again.contacts_created == 0
