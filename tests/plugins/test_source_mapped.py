"""Tests of the generic mapped source connector (``carecrm.plugins.sources.mapped``).

Payloads come from the vendor corpus (``$CARECRM_TEST_CORPUS``, else ``../shared/corpus``
beside the clone); the Typeform and Webflow mappings are the documented ones in
``plugins/sources/examples/*.toml``, loaded here so the docs cannot drift from the code.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re
import tomllib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import attrs
import pluggy
import pytest

from carecrm.core.config import Settings
from carecrm.core.errors import ConfigError, ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import Actor, LeadEvent, Location, Practice, RawPayload
from carecrm.core.plugins import hookspecs
from carecrm.core.plugins.manager import DEFAULT_PLUGINS
from carecrm.core.testing import resources
from carecrm.plugins.sources import mapped
from carecrm.plugins.sources.mapped import MappedConnector

ACTOR = Actor.parse("tester:admin")

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "plugins" / "sources" / "examples"
CORPUS = resources.corpus_dir(REPO)

TYPEFORM_FILE = CORPUS / "typeform" / "form_response_example.json"
WEBFLOW_FILE = CORPUS / "webflow" / "form_submission_doc_example.json"
UNBOUNCE_XML_FILE = CORPUS / "unbounce" / "form_submission_with_xml.form.txt"
UNBOUNCE_EMAIL_FILE = CORPUS / "unbounce" / "form_submission_email.form.txt"
JOTFORM_FILE = CORPUS / "jotform" / "submission_multipart.txt"
JOTFORM_CONTENT_TYPE = "multipart/form-data; boundary=------------------------J1JNT4vbVO4FCC1qLG4HSv"
FORM = "application/x-www-form-urlencoded"

needs_corpus = resources.needs_corpus(
    CORPUS, TYPEFORM_FILE, WEBFLOW_FILE, UNBOUNCE_XML_FILE, UNBOUNCE_EMAIL_FILE, JOTFORM_FILE
)

PRACTICE = Practice(
    name="Test Dermatology",
    locations=(
        Location(name="downtown", timezone="America/Chicago"),
        Location(name="london", timezone="Europe/London", region="GB"),
    ),
)
SETTINGS = Settings(practice=PRACTICE)


# --------------------------------------------------------------------------- helpers


def example_options(vendor: str) -> dict[str, Any]:
    """The ``[sources.<vendor>]`` table of ``plugins/sources/examples/<vendor>.toml`` minus
    ``connector`` and ``secret``, as the core passes it to the connector."""
    with (EXAMPLES / f"{vendor}.toml").open("rb") as fh:
        table = tomllib.load(fh)["sources"][vendor]
    assert table["connector"] == "mapped"
    return {k: v for k, v in table.items() if k not in ("connector", "secret")}


def signed_example_options(name: str) -> dict[str, Any]:
    """The example's options with its commented-out signature table switched on, exactly as
    a practice does by uncommenting it (the examples ship without a secret so that the
    quickstart runs on the corpus files)."""
    text = (EXAMPLES / f"{name}.toml").read_text()
    lines, on = [], False
    for line in text.splitlines():
        if line.strip() == f"# [sources.{name}.signature]":
            on = True
        elif on and not line.startswith("# "):
            on = False
        if on:
            lines.append(line[2:])
    assert lines, f"no commented signature table in {name}.toml"
    table = tomllib.loads("\n".join(lines))["sources"][name]["signature"]
    return {**example_options(name), "signature": table}


def attrs_dump(event: LeadEvent) -> dict[str, Any]:
    """Every field of a lead event, personal ones included (repr hides those)."""
    return attrs.asdict(event)


def connector(options: dict[str, Any], name: str = "test") -> MappedConnector:
    return MappedConnector(name=name, options=options, settings=SETTINGS)


def parse_all(conn: MappedConnector, body: bytes, content_type: str = "application/json", **kw: Any) -> list:
    return list(conn.parse(RawPayload(body=body, content_type=content_type, **kw)))


def parse_one(conn: MappedConnector, body: bytes, content_type: str = "application/json", **kw: Any) -> LeadEvent:
    events = parse_all(conn, body, content_type, **kw)
    assert len(events) == 1
    event = events[0]
    assert isinstance(event, LeadEvent), event
    return event


def typeform_body(**changes: Any) -> bytes:
    doc = json.loads(TYPEFORM_FILE.read_bytes())
    doc["form_response"].update(changes)
    return json.dumps(doc).encode()


def webflow_doc(data: dict[str, Any], **payload: Any) -> dict[str, Any]:
    body = {
        "triggerType": "form_submission",
        "payload": {
            "name": "Contact Us",
            "siteId": "65427cf400e02b306eaa049c",
            "data": data,
            "submittedAt": "2024-07-30T20:07:15.220Z",
            "id": "66a947f35b9d7ba400e22733",
            "formId": "65429eadebe8a9f3a30f62d0",
        },
    }
    body["payload"].update(payload)
    return body


SIMPLE = {
    "record_id": "id",
    "occurred_at": "at",
    "fields": {"email": "email", "phone": "phone"},
}


# --------------------------------------------------------------------------- registration


def test_registers_through_the_sources_hook() -> None:
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    pm.register(mapped)
    registered: list[type] = []
    pm.hook.carecrm_register_sources(register=registered.append)
    assert registered[0] is MappedConnector
    # then the shipped presets, each under its own name (carecrm.plugins.sources.mapped.presets)
    assert sorted(cls.connector_id for cls in registered[1:]) == ["jotform", "typeform", "unbounce", "webflow"]
    assert all(issubclass(cls, MappedConnector) and cls.formats for cls in registered)
    assert MappedConnector.connector_id == "mapped"
    assert MappedConnector.description
    assert "carecrm.plugins.sources.mapped" in DEFAULT_PLUGINS


# --------------------------------------------------------------------------- Typeform


@needs_corpus
def test_typeform_example_mapping() -> None:
    conn = connector(example_options("typeform"), "typeform")
    event = parse_one(conn, TYPEFORM_FILE.read_bytes())

    assert event.source == "typeform"
    assert event.record_ref == "a3a12ec67a1365927098a606107fac15"
    assert event.emails == ("jane.placeholder@example.com",)
    assert event.first_name == "Jane"
    assert event.last_name is None and event.phones == ()
    # a form submission id does not identify a person
    assert event.external_ids == ()

    (interaction,) = event.interactions
    assert interaction.kind == "form.submitted"
    assert interaction.channel == "web"
    assert interaction.direction == "inbound"
    assert interaction.occurred_at == datetime(2018, 1, 18, 18, 17, 2, tzinfo=UTC)
    assert interaction.occurred_at.tzinfo is UTC
    assert interaction.idempotency_key == "form.submitted:a3a12ec67a1365927098a606107fac15"
    assert interaction.attributes == {
        "form_title": "Webhooks example",
        "landed_at": "2018-01-18T18:07:02Z",
        "score": 9,
        "legal_acknowledged": True,
        "external_record_id": "a3a12ec67a1365927098a606107fac15",
    }
    assert interaction.body is None

    assert event.touchpoint.form_id == "lT4Z3j"
    assert event.touchpoint.campaign is None and event.touchpoint.source is None
    assert interaction.touchpoint == event.touchpoint
    # the legal answer (true) is an acknowledgement, never marketing consent
    assert event.consents == ()
    # unmapped answers: their field ids only, in answer order
    assert event.dropped_fields == (
        "DlXFaesGBpoF",
        "KoJxDM3c6x8h",
        "PNe8ZKBK8C2Q",
        "Q7M2XAwY04dW",
        "k6TP9oLGgHjl",
        "RUqkXSeXBXSd",
        "NRsxU591jIW9",
        "WOTdC00F8A3h",
        "pn48RmPazVdM",
    )
    # nothing of the unmapped answers (the plain date 2005-10-15 among them) is kept
    assert "2005-10-15" not in repr(attrs_dump(event))


@needs_corpus
def test_typeform_redelivery_gives_the_same_keys() -> None:
    conn = connector(example_options("typeform"), "typeform")
    first = parse_one(conn, TYPEFORM_FILE.read_bytes())
    again = parse_one(conn, json.dumps(json.loads(TYPEFORM_FILE.read_bytes()), indent=1).encode())
    assert first.interactions[0].idempotency_key == again.interactions[0].idempotency_key


@needs_corpus
def test_typeform_other_event_types_are_skipped() -> None:
    conn = connector(example_options("typeform"), "typeform")
    doc = json.loads(TYPEFORM_FILE.read_bytes())
    doc["event_type"] = "form_partial_response"
    assert parse_all(conn, json.dumps(doc).encode()) == []


@needs_corpus
def test_typeform_utm_from_the_landing_page_url() -> None:
    conn = connector(example_options("typeform"), "typeform")
    url = (
        "https://derm.example.com/acne/?utm_source=google&utm_medium=cpc&utm_campaign=acne-2025"
        "&utm_term=&utm_content=ad%201&gclid=Cj0KCQ&fbclid=&email=jane.placeholder%40example.com#top"
    )
    event = parse_one(conn, typeform_body(hidden={"landing_page": url, "utm_source": "newsletter"}))
    tp = event.touchpoint
    assert tp.source == "newsletter"  # mapped explicitly: wins over the URL
    assert tp.medium == "cpc"
    assert tp.campaign == "acne-2025"
    assert tp.term is None  # empty string -> None
    assert tp.content == "ad 1"
    assert tp.gclid == "Cj0KCQ"
    assert tp.fbclid is None and tp.msclkid is None
    # the stored landing page drops the query string (it can carry personal data)
    assert tp.landing_page == "https://derm.example.com/acne/"
    assert "example.com%40" not in repr(tp) and "jane" not in repr(tp)


@needs_corpus
def test_typeform_hidden_utm_empty_string_becomes_none() -> None:
    conn = connector(example_options("typeform"), "typeform")
    event = parse_one(conn, typeform_body(hidden={"utm_source": "", "utm_campaign": "  "}))
    assert event.touchpoint.source is None
    assert event.touchpoint.campaign is None


@needs_corpus
def test_typeform_keep_other_answers_puts_them_in_the_body() -> None:
    options = example_options("typeform") | {"keep_other_answers": True}
    event = parse_one(connector(options, "typeform"), TYPEFORM_FILE.read_bytes())
    body = json.loads(event.interactions[0].body)
    assert body["inquiry"] is None
    others = body["other_answers"]
    assert list(others) == list(event.dropped_fields)
    assert others["KoJxDM3c6x8h"]["date"] == "2005-10-15"
    assert "SMEUb7VJz92Q" not in others  # the email answer is mapped, not repeated


@needs_corpus
def test_typeform_person_id_option_gives_an_external_identity() -> None:
    options = example_options("typeform") | {"person_id": "form_response.hidden.patient_id"}
    event = parse_one(connector(options, "typeform"), typeform_body(hidden={"patient_id": 12345678901234567890}))
    assert event.external_ids == (("typeform", "12345678901234567890"),)


@needs_corpus
def test_typeform_date_answer_is_not_a_timestamp() -> None:
    options = example_options("typeform") | {"occurred_at": "form_response.answers[?field.type=='date'] | [0].date"}
    (failure,) = parse_all(connector(options, "typeform"), TYPEFORM_FILE.read_bytes())
    assert isinstance(failure, Rejected)
    assert (failure.ref, failure.field) == (
        "a3a12ec67a1365927098a606107fac15",
        "occurred_at",
    )
    assert "2005" not in str(failure)


# --------------------------------------------------------------------------- Webflow


@needs_corpus
def test_webflow_example_mapping() -> None:
    conn = connector(example_options("webflow"), "webflow")
    event = parse_one(conn, WEBFLOW_FILE.read_bytes())
    assert event.first_name == "Zaphod"
    assert event.last_name == "Placeholder"
    assert event.emails == ("zaphod.placeholder@example.com",)
    # the JSON number 15550000000 becomes its exact digits, as a string
    assert event.phones == ("15550000000",)
    assert all(isinstance(p, str) for p in event.phones)
    (interaction,) = event.interactions
    assert interaction.occurred_at == datetime(2022, 9, 14, 12, 35, 16, 117000, tzinfo=UTC)
    assert interaction.idempotency_key == "form.submitted:6321ca84df3949bfc6752327"
    assert event.record_ref == "6321ca84df3949bfc6752327"
    assert interaction.attributes["form_name"] == "Contact Us"
    assert interaction.attributes["site_id"] == "65427cf400e02b306eaa049c"
    assert event.touchpoint.form_id == "65429eadebe8a9f3a30f62d0"
    assert event.dropped_fields == ()
    assert event.consents == ()


def test_webflow_email_only_delivery_without_schema() -> None:
    """The docs' one-field delivery (webflow.expected.md): "Email 2", no schema[]."""
    body = {
        "triggerType": "form_submission",
        "payload": {
            "name": "Email Form",
            "siteId": "65427cf400e02b306eaa049c",
            "data": {"Email 2": "hello.placeholder@example.com"},
            "submittedAt": "2024-07-30T20:07:15.220Z",
            "id": "66a947f35b9d7ba400e22733",
            "formId": "66a947b9c1f5d5b0a1f5e0a2",
        },
    }
    conn = connector(example_options("webflow"), "webflow")
    event = parse_one(conn, json.dumps(body).encode())
    assert event.emails == ("hello.placeholder@example.com",)
    assert event.phones == () and event.first_name is None
    assert event.interactions[0].occurred_at == datetime(2024, 7, 30, 20, 7, 15, 220000, tzinfo=UTC)
    assert event.interactions[0].idempotency_key == "form.submitted:66a947f35b9d7ba400e22733"
    assert event.dropped_fields == ()


def test_webflow_other_trigger_types_are_skipped() -> None:
    conn = connector(example_options("webflow"), "webflow")
    assert parse_all(conn, json.dumps({"triggerType": "site_publish", "payload": {}}).encode()) == []


def test_webflow_unmapped_labels_are_counted_by_name_only() -> None:
    doc = webflow_doc({"email": "a.placeholder@example.com", "Date of Birth": "1990-01-02", "Insurance": "X"})
    event = parse_one(connector(example_options("webflow"), "webflow"), json.dumps(doc).encode())
    assert event.dropped_fields == ("Date of Birth", "Insurance")
    assert "1990" not in repr(attrs_dump(event))


def test_phone_values_kept_exactly() -> None:
    conn = connector(SIMPLE)
    cases = {
        "+44 (0)20 7946 0018": "+44 (0)20 7946 0018",  # strings exactly as sent
        "0412 555 012": "0412 555 012",
        447700900123: "447700900123",
        15550000000.0: "15550000000",
    }
    for sent, kept in cases.items():
        doc = {"id": "r1", "at": "2024-01-01T00:00:00Z", "phone": sent}
        assert parse_one(conn, json.dumps(doc).encode()).phones == (kept,)
    # a big integer is exact (never through float)
    big = b'{"id": "r1", "at": "2024-01-01T00:00:00Z", "phone": 123456789012345678901}'
    assert parse_one(conn, big).phones == ("123456789012345678901",)


def test_phone_number_with_a_fraction_is_refused() -> None:
    conn = connector(SIMPLE)
    (failure,) = parse_all(conn, b'{"id": "r1", "at": "2024-01-01T00:00:00Z", "phone": 1555000.25}')
    assert isinstance(failure, Rejected)
    assert (failure.ref, failure.field) == ("r1", "phone")
    assert "1555000" not in str(failure)


# --------------------------------------------------------------------------- consent


CONSENT = {
    "field": 'payload.data."Marketing Opt In"',
    "contact_point": "email",
    "channel": "email",
    "purpose": "marketing",
    "text": "I agree to receive news and offers by email from Test Dermatology.",
    "version": "2025-01",
    "ip": "payload.data.ip",
}


def test_explicit_consent_field_gives_a_consent_signal() -> None:
    options = example_options("webflow") | {"consent": [CONSENT]}
    doc = webflow_doc({"email": "a.placeholder@example.com", "Marketing Opt In": "true", "ip": "203.0.113.9"})
    event = parse_one(connector(options, "webflow"), json.dumps(doc).encode())
    (signal,) = event.consents
    assert signal.contact_point_kind == "email"
    assert signal.channel == "email"
    assert signal.purpose == "marketing"
    assert signal.status == "granted"
    assert signal.occurred_at == event.interactions[0].occurred_at
    assert signal.evidence["text"] == CONSENT["text"]
    assert signal.evidence["version"] == "2025-01"
    assert signal.evidence["ip"] == "203.0.113.9"
    assert signal.evidence["form_id"] == "65429eadebe8a9f3a30f62d0"
    assert signal.idempotency_key == "form.submitted:66a947f35b9d7ba400e22733:consent:email:email:marketing"
    assert signal.idempotency_key != event.interactions[0].idempotency_key
    assert "Marketing Opt In" not in event.dropped_fields and "ip" not in event.dropped_fields


@pytest.mark.parametrize("value", [True, "on", "Yes", ["yes"], 1, "I agree"])
def test_consent_checked_values(value: Any) -> None:
    rule = CONSENT | {"checked_values": ["I agree"]} if value == "I agree" else CONSENT
    options = example_options("webflow") | {"consent": [rule]}
    doc = webflow_doc({"email": "a.placeholder@example.com", "Marketing Opt In": value})
    assert len(parse_one(connector(options, "webflow"), json.dumps(doc).encode()).consents) == 1


@pytest.mark.parametrize("value", [False, "false", "", "off", None, []])
def test_unchecked_consent_gives_no_signal(value: Any) -> None:
    options = example_options("webflow") | {"consent": [CONSENT]}
    doc = webflow_doc({"email": "a.placeholder@example.com", "Marketing Opt In": value})
    assert parse_one(connector(options, "webflow"), json.dumps(doc).encode()).consents == ()


def test_unreadable_consent_value_is_a_validation_failure() -> None:
    options = example_options("webflow") | {"consent": [CONSENT]}
    doc = webflow_doc({"email": "a.placeholder@example.com", "Marketing Opt In": "maybe later"})
    (failure,) = parse_all(connector(options, "webflow"), json.dumps(doc).encode())
    assert isinstance(failure, Rejected)
    assert failure.field == "consent[0]"
    assert "maybe" not in str(failure)


# --------------------------------------------------------------------------- form encodings


UNBOUNCE = {
    "format": "form",
    "json_strings": ["data.json"],
    "answers": '"data.json"',
    "occurred_at": (
        '"data.json".date_submitted[0] && join(\' \', ["data.json".date_submitted[0], "data.json".time_submitted[0]])'
    ),
    "occurred_at_fallback": "received",
    "time_format": "%Y-%m-%d %I:%M %p UTC",
    "time_zone": "UTC",
    "fields": {"email": '"data.json".email', "phone": '"data.json".phone_number'},
    "touchpoint": {"landing_page": "page_url", "form_id": "page_id", "campaign": "page_name"},
    "attributes": {"page_name": "page_name", "variant": "variant"},
}


@needs_corpus
def test_unbounce_form_encoded_with_date_and_time() -> None:
    conn = connector(UNBOUNCE, "unbounce")
    event = parse_one(conn, UNBOUNCE_XML_FILE.read_bytes(), FORM)
    (interaction,) = event.interactions
    assert interaction.occurred_at == datetime(2017, 11, 15, 11, 45, tzinfo=UTC)
    assert "occurred_at_source" not in interaction.attributes
    assert interaction.attributes == {"page_name": "Wayfaring", "variant": "a"}
    assert event.emails == () and event.phones == ()  # no identity: the core quarantines it
    assert event.touchpoint.form_id == "7648177d-7323-4330-b4f9-9951a52138b6"
    assert event.touchpoint.landing_page == "http://unbouncepages.com/wayfaring-147/"
    assert event.touchpoint.campaign == "Wayfaring"
    assert {"userfield1", "ip_address"} <= set(event.dropped_fields)
    # no vendor id: the key is a hash of the record and the kind, stable on redelivery
    assert interaction.idempotency_key.startswith("form.submitted:digest:")
    again = parse_one(conn, UNBOUNCE_XML_FILE.read_bytes(), FORM)
    assert again.interactions[0].idempotency_key == interaction.idempotency_key


@needs_corpus
def test_unbounce_without_a_date_uses_the_receive_time() -> None:
    received = datetime(2024, 3, 5, 16, 17, 30, 123000, tzinfo=UTC)
    conn = connector(UNBOUNCE, "unbounce")
    event = parse_one(conn, UNBOUNCE_EMAIL_FILE.read_bytes(), FORM, received_at=received)
    assert event.emails == ("test@example.com",)  # the JSON inside used %20: decoded once
    (interaction,) = event.interactions
    assert interaction.occurred_at == received
    assert interaction.attributes["occurred_at_source"] == "received"
    assert event.touchpoint.landing_page == "http://unbouncepages.com/test-webhook-1"


def test_form_encoded_repeated_keys_become_lists() -> None:
    options = {
        "occurred_at_fallback": "received",
        "fields": {"first_name": '"First Name"', "service_interest": "interest[0]"},
        "attributes": {"interests": "interest"},
    }
    body = b"First+Name=Ana%C3%AFs&interest=acne&&interest=botox&empty=&\r\n"
    event = parse_one(connector(options), body, FORM + "; charset=utf-8")
    assert event.first_name == "Anaïs"
    assert event.service_interest == "acne"
    assert event.interactions[0].attributes["interests"] == ["acne", "botox"]
    assert event.dropped_fields == ("empty",)


JOTFORM = {
    "json_strings": ["rawRequest"],
    "record_id": "submissionID",
    "occurred_at_fallback": "received",
    "answers": "rawRequest",
    "fields": {
        "first_name": "rawRequest.q3_studentsName.first",
        "last_name": "rawRequest.q3_studentsName.last",
        "email": "rawRequest.q4_email",
        "service_interest": "rawRequest.q34_subjectFor",
    },
    "touchpoint": {"form_id": "formID"},
    "attributes": {"form_title": "formTitle"},
}


@needs_corpus
@pytest.mark.parametrize("newline", [b"\n", b"\r\n"])
def test_jotform_multipart(newline: bytes) -> None:
    body = JOTFORM_FILE.read_bytes().replace(b"\r\n", b"\n").replace(b"\n", newline)
    received = datetime(2024, 11, 26, 10, 11, 38, tzinfo=UTC)
    event = parse_one(connector(JOTFORM, "jotform"), body, JOTFORM_CONTENT_TYPE, received_at=received)
    assert event.record_ref == "6084250982513018472"  # a string: it exceeds 2**53
    assert (event.first_name, event.last_name) == ("Jane", "Placeholder")
    assert event.emails == () and event.phones == ()
    assert event.service_interest == "Math"
    (interaction,) = event.interactions
    assert interaction.idempotency_key == "form.submitted:6084250982513018472"
    assert interaction.occurred_at == received
    assert interaction.attributes == {
        "form_title": "Tutor Appointment Form",
        "external_record_id": "6084250982513018472",
        "occurred_at_source": "received",
    }
    assert event.touchpoint.form_id == "243231271343446"
    assert "q33_typeOf" in event.dropped_fields and "identityProof" in event.dropped_fields
    assert "q3_studentsName" not in event.dropped_fields and "q34_subjectFor" not in event.dropped_fields


def test_multipart_file_parts_are_never_read() -> None:
    body = (
        b'--XyZ\r\nContent-Disposition: form-data; name="email"\r\n\r\nb.placeholder@example.com\r\n'
        b'--XyZ\r\nContent-Disposition: form-data; name="id_scan"; filename="id.png"\r\n'
        b"Content-Type: image/png\r\n\r\n\x89PNG...\r\n--XyZ--\r\n"
    )
    options = {"occurred_at_fallback": "received", "fields": {"email": "email"}, "keep_other_answers": True}
    event = parse_one(connector(options), body, "multipart/form-data; boundary=XyZ")
    assert event.emails == ("b.placeholder@example.com",)
    assert event.dropped_fields == ("id_scan",)
    assert json.loads(event.interactions[0].body)["other_answers"] == {"id_scan": None}


# --------------------------------------------------------------------------- bad payloads


@pytest.mark.parametrize(
    ("body", "content_type"),
    [
        (b'{"email": "c.placeholder@example.com",', "application/json"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"NaN", "application/json"),
        (b'{"email": "c.placeholder@example.com"}', FORM),
        (b"email=c.placeholder%40example.com", "multipart/form-data"),
        (b"email=c.placeholder%40example.com", "multipart/form-data; boundary=nothere"),
    ],
)
def test_unreadable_payload_is_refused_whole(body: bytes, content_type: str) -> None:
    conn = connector(SIMPLE)
    with pytest.raises(ValidationFailed) as info:
        parse_all(conn, body, content_type)
    assert (info.value.source, info.value.record, info.value.field) == ("test", "payload", "body")
    assert "placeholder" not in str(info.value)


def test_bad_json_string_value_names_its_key() -> None:
    options = {"format": "form", "json_strings": ["data.json"], "occurred_at_fallback": "received"}
    with pytest.raises(ValidationFailed) as info:
        parse_all(connector(options), b"data.json=%7Bnot+json", FORM)
    assert (info.value.record, info.value.field) == ("payload", "data.json")


def test_records_must_be_a_list() -> None:
    conn = connector(SIMPLE | {"records": "items"})
    with pytest.raises(ValidationFailed) as info:
        parse_all(conn, b'{"items": {"id": "r1"}}')
    assert (info.value.record, info.value.field) == ("payload", "body")


def test_one_bad_record_does_not_stop_the_others() -> None:
    conn = connector(SIMPLE | {"records": "items"})
    doc = {
        "items": [
            {"id": "r1", "at": "2024-05-01T10:00:00Z", "email": "d.placeholder@example.com"},
            {"id": "r2", "at": "last tuesday", "email": "e.placeholder@example.com"},
            {"id": "r3", "email": "f.placeholder@example.com"},
            "not an object",
            {"id": "r5", "at": "2024-05-01T10:05:00+02:00", "phone": "+15555550123"},
        ]
    }
    results = parse_all(conn, json.dumps(doc).encode())
    assert [type(r).__name__ for r in results] == [
        "LeadEvent",
        "Rejected",
        "Rejected",
        "Rejected",
        "LeadEvent",
    ]
    assert (results[1].ref, results[1].field) == ("r2", "occurred_at")
    assert "tuesday" not in str(results[1]) and "placeholder" not in str(results[1])
    assert (results[2].ref, results[2].field, results[2].reason) == ("r3", "occurred_at", "time is missing")
    assert (results[3].ref, results[3].field) == ("#3", "record")
    assert results[4].interactions[0].occurred_at == datetime(2024, 5, 1, 8, 5, tzinfo=UTC)
    assert results[4].phones == ("+15555550123",)


def test_selector_type_error_is_a_record_failure() -> None:
    conn = connector(SIMPLE | {"fields": {"full_name": "join(' ', [first, last])"}})
    (failure,) = parse_all(conn, b'{"id": "r1", "at": "2024-01-01T00:00:00Z", "first": "Jo"}')
    assert isinstance(failure, Rejected)
    assert (failure.ref, failure.field) == ("r1", "full_name")
    assert "Jo" not in failure.reason


def test_derived_values_count_their_answers_as_mapped() -> None:
    options = {
        "occurred_at_fallback": "received",
        "fields": {"full_name": "join(' ', [first, last])"},
    }
    event = parse_one(connector(options), b'{"first": "Jo", "last": "Placeholder", "dob": "2001-02-03"}')
    assert event.full_name == "Jo Placeholder"
    assert event.dropped_fields == ("dob",)


# --------------------------------------------------------------------------- time


@pytest.mark.parametrize(
    ("sent", "utc"),
    [
        ("2024-07-04 09:30:00", datetime(2024, 7, 4, 14, 30, tzinfo=UTC)),  # CDT, UTC-5
        ("2024-01-15T09:30:00", datetime(2024, 1, 15, 15, 30, tzinfo=UTC)),  # CST, UTC-6
        ("2024-01-15T25:30:00", None),  # no such hour: refused
        ("2024-01-15T09:30:00-08:00", datetime(2024, 1, 15, 17, 30, tzinfo=UTC)),
        ("2024-01-15T09:30:00.987654Z", datetime(2024, 1, 15, 9, 30, 0, 987000, tzinfo=UTC)),
    ],
)
def test_naive_times_are_read_in_the_time_zone(sent: str, utc: datetime | None) -> None:
    conn = connector(SIMPLE | {"time_zone": "America/Chicago"})
    results = parse_all(conn, json.dumps({"id": "r1", "at": sent}).encode())
    if utc is None:
        assert isinstance(results[0], Rejected)
    else:
        assert results[0].interactions[0].occurred_at == utc


def test_time_zone_defaults_to_the_location() -> None:
    doc = json.dumps({"id": "r1", "at": "2024-07-04 09:30:00"}).encode()
    chicago = parse_one(connector(SIMPLE | {"location": "downtown"}), doc)
    london = parse_one(connector(SIMPLE | {"location": "london"}), doc)
    assert chicago.interactions[0].occurred_at == datetime(2024, 7, 4, 14, 30, tzinfo=UTC)
    assert london.interactions[0].occurred_at == datetime(2024, 7, 4, 8, 30, tzinfo=UTC)
    assert london.location == "london" and london.interactions[0].location == "london"
    # no location: the practice's first location
    default = parse_one(connector(SIMPLE), doc)
    assert default.interactions[0].occurred_at == datetime(2024, 7, 4, 14, 30, tzinfo=UTC)


@pytest.mark.parametrize(
    ("fmt", "sent", "utc"),
    [
        ("epoch_ms", 1722370035277, datetime(2024, 7, 30, 20, 7, 15, 277000, tzinfo=UTC)),
        ("epoch_ms", "1722370035277", datetime(2024, 7, 30, 20, 7, 15, 277000, tzinfo=UTC)),
        ("epoch_s", 1513299569, datetime(2017, 12, 15, 0, 59, 29, tzinfo=UTC)),
        ("epoch_s", 1513299569.5, datetime(2017, 12, 15, 0, 59, 29, 500000, tzinfo=UTC)),
        ("%d/%m/%Y %H:%M", "15/01/2024 09:30", datetime(2024, 1, 15, 15, 30, tzinfo=UTC)),
        ("%Y-%m-%d %H:%M%z", "2024-01-15 09:30+0100", datetime(2024, 1, 15, 8, 30, tzinfo=UTC)),
    ],
)
def test_time_formats(fmt: str, sent: Any, utc: datetime) -> None:
    conn = connector(SIMPLE | {"time_format": fmt, "time_zone": "America/Chicago"})
    assert parse_one(conn, json.dumps({"id": "r1", "at": sent}).encode()).interactions[0].occurred_at == utc


@pytest.mark.parametrize("sent", ["2005-10-15", "20051015", True, {"t": 1}, "", "2024-13-01T00:00:00Z"])
def test_unusable_times_are_refused(sent: Any) -> None:
    (failure,) = parse_all(connector(SIMPLE), json.dumps({"id": "r1", "at": sent}).encode())
    assert isinstance(failure, Rejected) and failure.field == "occurred_at"


# --------------------------------------------------------------------------- signatures


SECRET = "whsec_test_secret"


@needs_corpus
def test_typeform_signature_base64() -> None:
    conn = connector(signed_example_options("typeform"), "typeform")
    assert conn.signed is True and MappedConnector.signed is False
    body = TYPEFORM_FILE.read_bytes()
    good = "sha256=" + base64.b64encode(hmac.new(SECRET.encode(), body, hashlib.sha256).digest()).decode()
    conn.verify(RawPayload(body=body, headers={"typeform-signature": good}), SECRET)

    bad_cases = {
        "wrong secret": {"Typeform-Signature": good.replace(good[10:14], "AAAA")},
        "missing": {},
        "no prefix": {"Typeform-Signature": good.removeprefix("sha256=")},
        "not base64": {"Typeform-Signature": "sha256=***"},
    }
    for headers in bad_cases.values():
        with pytest.raises(ValidationFailed) as info:
            conn.verify(RawPayload(body=body, headers=headers), SECRET)
        assert (info.value.record, info.value.field) == ("payload", "Typeform-Signature")
    with pytest.raises(ValidationFailed):
        conn.verify(RawPayload(body=body + b" ", headers={"Typeform-Signature": good}), SECRET)


@needs_corpus
def test_webflow_signature_hex_with_millisecond_timestamp() -> None:
    conn = connector(signed_example_options("webflow"), "webflow")
    body = WEBFLOW_FILE.read_bytes()
    stamp = "1722370035277"  # ms: 2024-07-30T20:07:15.277Z
    signed_at = datetime(2024, 7, 30, 20, 7, 15, 277000, tzinfo=UTC)
    signature = hmac.new(SECRET.encode(), f"{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    headers = {"x-webflow-timestamp": stamp, "x-webflow-signature": signature}

    conn.verify(RawPayload(body=body, headers=headers, received_at=signed_at + timedelta(seconds=2)), SECRET)
    # uppercase hex is the same digest
    upper = headers | {"x-webflow-signature": signature.upper()}
    conn.verify(RawPayload(body=body, headers=upper, received_at=signed_at), SECRET)

    def refused(hdrs: dict[str, str], received: datetime = signed_at) -> str:
        with pytest.raises(ValidationFailed) as info:
            conn.verify(RawPayload(body=body, headers=hdrs, received_at=received), SECRET)
        return info.value.field

    assert refused(headers | {"x-webflow-timestamp": "1722370035278"}) == "x-webflow-signature"
    assert refused({"x-webflow-signature": signature}) == "x-webflow-timestamp"
    assert refused({"x-webflow-timestamp": stamp}) == "x-webflow-signature"
    assert refused(headers | {"x-webflow-timestamp": "17223700352.77"}) == "x-webflow-timestamp"
    # older than max_age_seconds (300 s), or from the future
    assert refused(headers, signed_at + timedelta(seconds=301)) == "x-webflow-timestamp"
    assert refused(headers, signed_at - timedelta(seconds=301)) == "x-webflow-timestamp"
    # a seconds-based reading of the same header would be wildly off: ms is required
    seconds_conn = connector(
        example_options("webflow")
        | {"signature": signed_example_options("webflow")["signature"] | {"timestamp_unit": "s"}}
    )
    with pytest.raises(ValidationFailed):
        seconds_conn.verify(RawPayload(body=body, headers=headers, received_at=signed_at), SECRET)


def test_hmac_sha1_hex_over_the_body() -> None:
    options = SIMPLE | {"signature": {"scheme": "hmac-sha1", "header": "X-Hub-Signature", "prefix": "sha1="}}
    conn = connector(options)
    body = b'{"id": "r1"}'
    good = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha1).hexdigest()
    conn.verify(RawPayload(body=body, headers={"X-Hub-Signature": good}), SECRET)
    with pytest.raises(ValidationFailed):
        conn.verify(RawPayload(body=body, headers={"X-Hub-Signature": good}), "other secret")
    sha256 = "sha1=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
    with pytest.raises(ValidationFailed):
        conn.verify(RawPayload(body=body, headers={"X-Hub-Signature": sha256}), SECRET)


def test_signed_payload_template_with_literal_text_and_url() -> None:
    options = SIMPLE | {"signature": {"scheme": "hmac-sha256", "header": "X-Sig", "signed_payload": "v1|{url}|{body}"}}
    conn = connector(options)
    body, url = b"{}", "https://crm.example.com/hooks/test"
    good = hmac.new(SECRET.encode(), b"v1|" + url.encode() + b"|" + body, hashlib.sha256).hexdigest()
    conn.verify(RawPayload(body=body, url=url, headers={"X-Sig": good}), SECRET)
    with pytest.raises(ValidationFailed):
        conn.verify(RawPayload(body=body, url=url + "?x=1", headers={"X-Sig": good}), SECRET)


def test_secret_without_signature_table_is_a_config_error() -> None:
    conn = connector(SIMPLE)
    assert conn.signed is False
    with pytest.raises(ConfigError, match="signature"):
        conn.verify(RawPayload(body=b"{}"), SECRET)


# --------------------------------------------------------------------------- config errors


@pytest.mark.parametrize(
    ("change", "option"),
    [
        ({"fields": {"email": "answers[?field.type=='email'"}}, "fields.email"),
        ({"fields": {"email": "lower(email)"}}, "fields.email"),
        ({"fields": {"email": "join(email)"}}, "fields.email"),
        ({"fields": {"mail": "email"}}, "fields.mail"),
        ({"touchpoint": {"utm_source": "x"}}, "touchpoint.utm_source"),
        ({"attributes": {"title": ""}}, "attributes.title"),
        ({"record_id": 5}, "record_id"),
        ({"feilds": {}}, "feilds"),
        ({"channel": "web_form"}, "channel"),
        ({"kind": "FormSubmitted"}, "kind"),
        ({"format": "xml"}, "format"),
        ({"time_format": "dd/mm/yyyy"}, "time_format"),
        ({"time_zone": "Mars/Olympus"}, "time_zone"),
        ({"location": "uptown"}, "location"),
        ({"answers": "items[0]"}, "answers"),
        ({"keep_other_answers": "yes"}, "keep_other_answers"),
        ({"literals": {"email": "x@example.com"}}, "literals.email"),
        ({"literals": {"phone": "1"}, "fields": {}}, "literals.phone"),
        (
            {"consent": [{"field": "x", "contact_point": "fax", "channel": "email", "purpose": "m", "text": "t"}]},
            "consent[0].contact_point",
        ),
        (
            {"consent": [{"field": "x", "contact_point": "email", "channel": "email", "purpose": "m"}]},
            "consent[0].text",
        ),
        ({"signature": {"scheme": "hmac-md5", "header": "X"}}, "signature.scheme"),
        ({"signature": {"scheme": "hmac-sha256"}}, "signature.header"),
        (
            {"signature": {"scheme": "hmac-sha256", "header": "X", "signed_payload": "{ts}.{body}"}},
            "signature.signed_payload",
        ),
        (
            {"signature": {"scheme": "hmac-sha256", "header": "X", "signed_payload": "{timestamp}.{body}"}},
            "signature.timestamp_header",
        ),
        ({"signature": {"scheme": "hmac-sha256", "header": "X", "encoding": "b64"}}, "signature.encoding"),
    ],
)
def test_config_errors_name_source_and_option(change: dict[str, Any], option: str) -> None:
    with pytest.raises(ConfigError) as info:
        MappedConnector(name="myforms", options=SIMPLE | change, settings=SETTINGS)
    assert "'myforms'" in str(info.value)
    assert f"'{option}'" in str(info.value)


def test_occurred_at_or_fallback_is_required() -> None:
    with pytest.raises(ConfigError, match="occurred_at"):
        MappedConnector(name="myforms", options={"fields": {"email": "email"}}, settings=SETTINGS)


def test_literals_fill_fields_and_touchpoint() -> None:
    options = SIMPLE | {"literals": {"service_interest": "acne", "medium": "landing_page", "region": "US"}}
    event = parse_one(connector(options), b'{"id": "r1", "at": "2024-01-01T00:00:00Z"}')
    assert event.service_interest == "acne"
    assert event.region == "US"
    assert event.touchpoint.medium == "landing_page"


def test_extra_fields_and_body() -> None:
    options = SIMPLE | {
        "fields": {"body": "message", "date_of_birth": "dob", "street_address": "street"},
        "literals": {"service_interest": "botox"},
    }
    doc = {
        "id": "r1",
        "at": "2024-01-01T00:00:00Z",
        "message": "Is it painful?",
        "dob": "1990-02-03",
        "street": "1 Placeholder Way",
    }
    event = parse_one(connector(options), json.dumps(doc).encode())
    assert event.interactions[0].body == "Is it painful?"
    assert event.extra["date_of_birth"].isoformat() == "1990-02-03"
    assert event.extra["street_address"] == "1 Placeholder Way"
    assert "sex" not in event.extra


def test_documentation_lists_every_option() -> None:
    text = (REPO / "docs" / "sources" / "mapped.md").read_text(encoding="utf-8")
    for option in mapped._OPTIONS | mapped._CONSENT_OPTIONS | mapped._SIGNATURE_OPTIONS:
        # plain options in a table row, tables as a section heading
        assert (
            f"`{option}`" in text
            or f"### `[sources.<name>.{option}]`" in text
            or (f"### `[[sources.<name>.{option}]]`" in text)
        ), option
    for name in mapped.PERSON_FIELDS + mapped.TOUCHPOINT_FIELDS:
        assert f"`{name}`" in text, name
    # the page reproduces the example files verbatim
    for vendor in ("typeform", "webflow"):
        assert (EXAMPLES / f"{vendor}.toml").read_text(encoding="utf-8").rstrip("\n") in text


def test_every_documented_mapping_is_a_valid_config() -> None:
    text = (REPO / "docs" / "sources" / "mapped.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```toml\n(.*?)```", text, re.S)
    assert len(blocks) >= 4
    for block in blocks:
        for name, table in tomllib.loads(block)["sources"].items():
            options = {k: v for k, v in table.items() if k not in ("connector", "secret")}
            assert isinstance(MappedConnector(name=name, options=options, settings=SETTINGS), MappedConnector)


def test_list_answers_named_by_answer_key() -> None:
    """A list of answers is named by ``answer_key``; the record is restored after the
    leave-one-out checks, so the next selector sees every answer."""
    conn = connector(
        SIMPLE
        | {"records": "items", "answers": "answers", "answer_key": "k", "fields": {"email": "answers[?k=='e'] | [0].v"}}
    )
    doc = {
        "items": [
            {
                "id": "r1",
                "at": "2024-01-01T00:00:00Z",
                "answers": [{"k": "e", "v": "g.placeholder@example.com"}, {"k": "z", "v": 1}, {"v": 2}],
            }
        ]
    }
    (event,) = parse_all(conn, json.dumps(doc).encode())
    assert event.emails == ("g.placeholder@example.com",)
    assert event.dropped_fields == ("z", "#2")


# --------------------------------------------------------------------------- through the app


@needs_corpus
def test_typeform_through_the_app(make_app: Any) -> None:
    """The documented mapping, run by the core's ingest: one contact, a re-delivery
    changes nothing, the dropped answers are counted by name."""
    table = example_options("typeform")
    app = make_app(sources={"typeform": {"connector": "mapped", **table}})
    body = TYPEFORM_FILE.read_bytes()
    report = app.ingest_payloads("typeform", [RawPayload(body=body)], actor=ACTOR)
    assert (report.records, report.contacts_created, report.interactions_added) == (1, 1, 1)
    assert report.quarantined == []
    assert report.dropped_fields["KoJxDM3c6x8h"] == 1
    again = app.ingest_payloads("typeform", [RawPayload(body=body + b"\n")], actor=ACTOR)
    assert (again.duplicates, again.interactions_added) == (1, 0)


@needs_corpus
def test_webflow_signed_through_the_app(make_app: Any) -> None:
    table = signed_example_options("webflow")
    app = make_app(sources={"webflow": {"connector": "mapped", "secret": SECRET, **table}})
    body = WEBFLOW_FILE.read_bytes()
    stamp = "1663158916500"
    received = datetime(2022, 9, 14, 12, 35, 17, tzinfo=UTC)
    signature = hmac.new(SECRET.encode(), f"{stamp}:".encode() + body, hashlib.sha256).hexdigest()
    good = RawPayload(
        body=body,
        headers={"x-webflow-timestamp": stamp, "x-webflow-signature": signature},
        received_at=received,
    )
    report = app.ingest_payloads("webflow", [good], actor=ACTOR)
    assert (report.contacts_created, report.quarantined) == (1, [])
    forged = RawPayload(
        body=body.replace(b"Zaphod", b"Arthur"),
        headers={"x-webflow-timestamp": stamp, "x-webflow-signature": signature},
        received_at=received,
    )
    refused = app.ingest_payloads("webflow", [forged], actor=ACTOR)
    assert refused.contacts_created == 0
    (quarantined,) = refused.quarantined
    assert (quarantined.record, quarantined.field) == ("payload", "x-webflow-signature")


@pytest.mark.parametrize("vendor", ["typeform", "webflow"])
def test_the_examples_spell_out_their_presets(vendor: str) -> None:
    """``init --source-example NAME`` copies a mapping that reads like the shipped preset:
    every key of the example has the preset's value (Typeform's first name, mapped there by
    the corpus form's field id, is per-form configuration the preset cannot know)."""
    from carecrm.plugins.sources.mapped.presets import PRESETS

    preset = PRESETS[vendor].options
    assert signed_example_options(vendor)["signature"] == preset["signature"]
    for key, value in example_options(vendor).items():
        if isinstance(value, dict):
            for sub, text in value.items():
                if (vendor, key, sub) != ("typeform", "fields", "first_name"):
                    assert preset[key][sub] == text, f"{key}.{sub}"
        else:
            assert preset[key] == value, key
