"""Typeform ``form_response`` webhooks through the ``typeform`` preset of the mapped
connector (``carecrm.plugins.sources.mapped.presets``): by name with no table, reused with
overrides, the ``Typeform-Signature`` check, and through the app.

Corpus: ``typeform/form_response_example.json`` and its ``.expected.md``.
"""

from __future__ import annotations

import base64
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
from carecrm.core.model.domain import Actor, LeadEvent, Location, Practice, RawPayload
from carecrm.core.testing import resources
from carecrm.plugins.sources.mapped import MappedConnector
from carecrm.plugins.sources.mapped.connector import PRESET_CONNECTORS

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
FILE = CORPUS / "typeform" / "form_response_example.json"
needs_corpus = resources.needs_corpus(CORPUS, FILE)
SETTINGS = Settings(practice=Practice(name="T", locations=(Location(name="main", timezone="America/Chicago"),)))
SECRET = "typeform-test-secret"
MAKE = Callable[..., CareCRM]
FIRST_NAME_BY_ID = "form_response.answers[?field.id=='JwWggjAKtOkA'] | [0].text"


def typeform(**options: Any) -> MappedConnector:
    return PRESET_CONNECTORS["typeform"](name="typeform", options=options, settings=SETTINGS)


def parse_one(conn: MappedConnector, body: bytes, **kw: Any) -> LeadEvent:
    (event,) = list(conn.parse(RawPayload(body=body, content_type="application/json", **kw)))
    assert isinstance(event, LeadEvent), event
    return event


def signed(body: bytes, secret: str = SECRET) -> dict[str, str]:
    """The ``Typeform-Signature`` header Typeform sends: ``sha256=`` + base64 of the
    HMAC-SHA256 of the raw body (https://www.typeform.com/developers/webhooks/secure-your-webhooks/)."""
    digest = hmac.new(secret.encode(), body, hashlib.sha256).digest()
    return {"Typeform-Signature": "sha256=" + base64.b64encode(digest).decode()}


@needs_corpus
def test_the_corpus_file_by_the_preset() -> None:
    event = parse_one(typeform(), FILE.read_bytes())
    assert event.source == "typeform"
    assert event.emails == ("jane.placeholder@example.com",)
    # the first name needs per-form configuration (by ref or field id): never guessed
    assert (event.first_name, event.last_name, event.phones) == (None, None, ())
    (inter,) = event.interactions
    assert inter.kind == "form.submitted" and inter.channel == "web"
    assert inter.occurred_at == datetime(2018, 1, 18, 18, 17, 2, tzinfo=UTC)
    assert inter.idempotency_key == "form.submitted:a3a12ec67a1365927098a606107fac15"
    assert inter.attributes == {
        "form_title": "Webhooks example",
        "landed_at": "2018-01-18T18:07:02Z",  # kept apart from occurred_at
        "score": 9,
        "legal_acknowledged": True,
        "external_record_id": "a3a12ec67a1365927098a606107fac15",
    }
    assert event.touchpoint.form_id == "lT4Z3j"
    assert (event.touchpoint.source, event.touchpoint.campaign) == (None, None)  # no hidden fields: unknown
    # the legal answer is a data-sharing acknowledgement, not marketing consent
    assert event.consents == ()
    # the date answer is a plain date, never a timestamp: unmapped, its field id counted
    assert "KoJxDM3c6x8h" in event.dropped_fields and "SMEUb7VJz92Q" not in event.dropped_fields


@needs_corpus
def test_other_event_types_are_skipped() -> None:
    doc = json.loads(FILE.read_bytes())
    doc["event_type"] = "form_partial_response"
    assert list(typeform().parse(RawPayload(body=json.dumps(doc).encode()))) == []


@needs_corpus
def test_a_preset_reused_with_overrides() -> None:
    own = MappedConnector(
        name="typeform_consult",
        options={"preset": "typeform", "fields": {"first_name": FIRST_NAME_BY_ID, "phone": ""}},
        settings=SETTINGS,
    )
    event = parse_one(own, FILE.read_bytes())
    assert event.source == "typeform_consult"
    assert event.first_name == "Jane"
    assert event.emails == ("jane.placeholder@example.com",)  # the preset's other keys stay
    assert "phone" not in own.fields  # "" removed the preset's key
    assert own.touchpoint["form_id"].text == "form_response.form_id"
    # connector = "typeform" is the same preset
    same = typeform(fields={"first_name": FIRST_NAME_BY_ID})
    assert parse_one(same, FILE.read_bytes()).first_name == "Jane"


def test_unknown_or_conflicting_preset_is_a_config_error() -> None:
    with pytest.raises(ConfigError) as info:
        MappedConnector(name="tf2", options={"preset": "typefrom"}, settings=SETTINGS)
    message = str(info.value)
    assert "'tf2'" in message and "'preset'" in message
    assert "known: jotform, typeform, unbounce, webflow" in message
    with pytest.raises(ConfigError, match='connector = "mapped"'):
        typeform(preset="webflow")
    with pytest.raises(ConfigError, match="fields.emial"):
        typeform(fields={"emial": "x"})


# --------------------------------------------------------------------------- signature


@needs_corpus
def test_signature_vector_and_tampered_body() -> None:
    conn = typeform()
    body = FILE.read_bytes()
    assert conn.signed is False  # a secret is optional: Typeform signs only webhooks given one
    conn.verify(RawPayload(body=body, headers=signed(body)), SECRET)
    # the vector from the documented algorithm, written out
    known = b'{"event_id":"x"}'
    expected = base64.b64encode(hmac.new(b"k", known, hashlib.sha256).digest()).decode()
    conn.verify(RawPayload(body=known, headers={"typeform-signature": f"sha256={expected}"}), "k")
    with pytest.raises(ValidationFailed) as info:
        conn.verify(RawPayload(body=body.replace(b"Jane", b"Jena"), headers=signed(body)), SECRET)
    assert info.value.field == "Typeform-Signature" and "does not match" in info.value.reason
    with pytest.raises(ValidationFailed, match="Typeform-Signature"):
        conn.verify(RawPayload(body=body), SECRET)
    with pytest.raises(ValidationFailed, match="Typeform-Signature"):
        conn.verify(RawPayload(body=body, headers=signed(body, "another secret")), SECRET)


# --------------------------------------------------------------------------- traps and bad input


@needs_corpus
def test_a_byte_order_mark_before_the_json() -> None:
    event = parse_one(typeform(), b"\xef\xbb\xbf" + FILE.read_bytes())
    assert event.emails == ("jane.placeholder@example.com",)


@needs_corpus
def test_html_is_stripped_from_names() -> None:
    doc = json.loads(FILE.read_bytes())
    for answer in doc["form_response"]["answers"]:
        if answer["field"]["id"] == "JwWggjAKtOkA":
            answer["text"] = "<b>Jane</b> &amp; <i>co</i>"
    event = parse_one(typeform(fields={"first_name": FIRST_NAME_BY_ID}), json.dumps(doc).encode())
    assert event.first_name == "Jane & co"


@needs_corpus
def test_truncated_json_is_refused_whole() -> None:
    with pytest.raises(ValidationFailed) as info:
        list(typeform().parse(RawPayload(body=FILE.read_bytes()[:200])))
    assert info.value.field == "body" and "not valid JSON" in info.value.reason
    assert "Jane" not in str(info.value)


# --------------------------------------------------------------------------- the app


@needs_corpus
def test_by_name_through_the_app_and_reingest_adds_nothing(make_app: MAKE) -> None:
    app = make_app()  # no [sources.typeform] table at all
    payload = RawPayload(body=FILE.read_bytes(), content_type="application/json")
    report = app.ingest_payloads("typeform", [payload], actor=ACTOR)
    assert report.quarantined == [] and report.contacts_created == 1 and report.interactions_added == 1
    timeline = app.timeline("jane.placeholder@example.com", actor=ACTOR)
    (inter,) = timeline.interactions
    assert inter.kind == "form.submitted" and inter.source == "typeform"
    again = app.ingest_payloads("typeform", [RawPayload(body=FILE.read_bytes())], actor=ACTOR)
    assert again.interactions_added == 0 and again.contacts_created == 0 and again.quarantined == []


@needs_corpus
def test_with_a_secret_a_forged_payload_is_quarantined(make_app: MAKE) -> None:
    app = make_app(sources={"typeform": {"connector": "typeform", "secret": SECRET}})
    body = FILE.read_bytes()
    forged = RawPayload(body=body.replace(b"Jane", b"Jena"), headers=signed(body))
    report = app.ingest_payloads("typeform", [forged], actor=ACTOR)
    assert report.interactions_added == 0
    (q,) = report.quarantined
    assert q.field == "Typeform-Signature" and "Jena" not in q.reason
    good = app.ingest_payloads("typeform", [RawPayload(body=body, headers=signed(body))], actor=ACTOR)
    assert good.quarantined == [] and good.interactions_added == 1
