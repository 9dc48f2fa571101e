"""Mapping mistakes caught at config load, and no personal data in keys (issue 8, items 8
and 7) for the mapped connector: a ``kind`` outside the vocabulary, a selector or
``only_if`` that does not compile, a key that selects the email or phone: each is a
configuration error naming the source, the option and the known values, raised when the
app starts; at run time an id or attribute that looks like an email or phone is hashed
with the blind-index key, never stored or shown in clear."""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import pytest

from carecrm.core.app import CareCRM
from carecrm.core.config import Settings
from carecrm.core.errors import ConfigError
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model import vocab
from carecrm.core.model.domain import Actor, LeadEvent, Location, Practice, RawPayload
from carecrm.core.plugins.components import SourceProblems
from carecrm.plugins.sources.mapped import MappedConnector
from carecrm.plugins.sources.mapped.connector import MappingProblems
from carecrm.plugins.sources.mapped.keys import HASHED_PREFIX, looks_like_email, looks_like_phone

ACTOR = Actor.parse("tester:admin")
SETTINGS = Settings(practice=Practice(name="Test", locations=(Location(name="downtown", timezone="America/Chicago"),)))
SIMPLE: dict[str, Any] = {"record_id": "id", "occurred_at": "at", "fields": {"email": "email", "phone": "phone"}}
KEY = b"test blind-index key"
EMAIL = "ana.placeholder@example.com"
PHONE = "+1 (312) 555-0142"


def build(**change: Any) -> MappedConnector:
    return MappedConnector(name="myforms", options=SIMPLE | change, settings=SETTINGS)


def problems_of(**change: Any) -> tuple[str, ...]:
    with pytest.raises(MappingProblems) as info:
        build(**change)
    assert isinstance(info.value, ConfigError)
    return info.value.problems


def digest(data: bytes) -> str:
    return hmac.new(KEY, data, hashlib.sha256).hexdigest()


def payload(record: dict[str, Any]) -> RawPayload:
    return RawPayload(
        body=json.dumps(record).encode(), content_type="application/json", received_at=datetime(2025, 3, 1, tzinfo=UTC)
    )


# --------------------------------------------------------------------------- item 8: config load


def test_a_misspelt_kind_names_the_source_the_option_and_the_known_kinds() -> None:
    (problem,) = problems_of(kind="form.submited")
    assert problem.startswith("source 'myforms': option 'kind': unknown interaction kind 'form.submited'")
    assert "known: " in problem and "form.submitted" in problem and "call.completed" in problem


def test_a_kind_a_plugin_registers_is_accepted(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vocab, "_extra_kinds", set())
    with pytest.raises(MappingProblems, match="survey.completed"):
        build(kind="survey.completed")
    vocab.register_kind("survey.completed")
    assert build(kind="survey.completed").kind == "survey.completed"


@pytest.mark.parametrize(
    ("option", "change", "says"),
    [
        ("only_if", {"only_if": "type == 'form_submission"}, "invalid JMESPath: unexpected character at column 9"),
        ("only_if", {"only_if": "startswith(type, 'form')"}, "unknown JMESPath function startswith(); known: abs"),
        ("occurred_at", {"occurred_at": "join(' ', [date, time]"}, "invalid JMESPath: incomplete expression"),
        ("fields.email", {"fields": {"email": "lower(email)"}}, "known: abs, avg"),
    ],
)
def test_a_selector_that_does_not_compile_is_one_line_naming_the_option(
    option: str, change: dict[str, Any], says: str
) -> None:
    (problem,) = problems_of(**change)
    assert problem.startswith(f"source 'myforms': option '{option}': ")
    assert says in problem
    assert "\n" not in problem


def test_every_problem_of_a_source_is_listed_together() -> None:
    found = problems_of(
        kind="form.submited",
        only_if="foo(type)",
        occurred_at="join(",
        channel="web",
        fields={"email": "email", "mail": "x"},
        attributes={"page": "page["},
    )
    options = [p.split("'")[3] for p in found]
    assert options == ["only_if", "kind", "occurred_at", "fields.mail", "attributes.page"]


def test_the_app_does_not_start_with_a_broken_source(make_app: Callable[..., CareCRM]) -> None:
    sources = {
        "good": {"connector": "mapped", **SIMPLE},
        "forms": {"connector": "mapped", **SIMPLE, "kind": "form.submited", "only_if": "type =="},
        "tf": {"connector": "typeform", "channel": "webb"},
    }
    with pytest.raises(SourceProblems) as info:
        make_app(sources=sources)
    assert [p.split("'")[1:4:2] for p in info.value.problems] == [
        ["forms", "only_if"],
        ["forms", "kind"],
        ["tf", "channel"],
    ]
    assert "must be one of ad_platform, chat" in info.value.problems[2]
    assert str(info.value).startswith("3 problems in the [sources.*] configuration")


def test_an_unknown_connector_is_a_start_up_problem_too(make_app: Callable[..., CareCRM]) -> None:
    with pytest.raises(SourceProblems) as info:
        make_app(sources={"forms": {"connector": "gravityforms"}})
    (problem,) = info.value.problems
    assert problem.startswith("source 'forms': ") and "known:" in problem


# --------------------------------------------------------------------------- item 7: config load


@pytest.mark.parametrize(
    ("change", "option", "field"),
    [
        ({"record_id": "email"}, "record_id", "fields.email"),
        ({"record_id": '"email"'}, "record_id", "fields.email"),  # the same path, quoted
        ({"person_id": "phone"}, "person_id", "fields.phone"),
        ({"attributes": {"contact": "email"}}, "attributes.contact", "fields.email"),
        ({"touchpoint": {"campaign": "phone"}}, "touchpoint.campaign", "fields.phone"),
        (
            {
                "record_id": "answers[?type=='email'] | [0].email",
                "fields": {"email": "answers[?type=='email'] | [0].email"},
            },
            "record_id",
            "fields.email",
        ),
    ],
)
def test_a_key_that_selects_the_email_or_phone_is_refused(change: dict[str, Any], option: str, field: str) -> None:
    (problem,) = problems_of(**change)
    assert problem.startswith(f"source 'myforms': option '{option}': selects the same value as {field}")


@pytest.mark.parametrize("path", ["contact.email", "q5_phoneNumber", 'data."e-mail"', "mobile"])
def test_a_record_id_named_like_an_email_or_phone_is_refused(path: str) -> None:
    (problem,) = problems_of(record_id=path, fields={"email": "x.y"})
    assert "option 'record_id': selects a key named like an email or phone" in problem


def test_ordinary_ids_pass() -> None:
    for path in ("id", "form_response.token", "payload.id", "submissionID", "entry.telemetry_id"):
        assert build(record_id=path).record_id is not None


# --------------------------------------------------------------------------- item 7: run time


@pytest.mark.parametrize("value", [EMAIL, PHONE, "312-555-0142", "+13125550142"])
def test_an_id_that_looks_like_an_email_or_phone_is_hashed(value: str) -> None:
    conn = build(record_id="ref", person_id="ref", attributes={"page": "ref"})
    conn.bind_digest(digest)
    (event,) = conn.parse(payload({"ref": value, "at": "2025-03-01T10:00:00Z", "email": EMAIL}))
    assert isinstance(event, LeadEvent)
    (interaction,) = event.interactions
    hashed = HASHED_PREFIX + digest(b"key-value\x1f" + value.encode())
    assert interaction.idempotency_key == f"form.submitted:{hashed}"
    assert interaction.attributes == {"page": hashed, "external_record_id": hashed}
    assert event.record_ref == hashed
    assert event.external_ids == (("myforms", hashed),)
    # nothing but the email field itself holds the value
    assert value not in repr(interaction) and value not in event.record_ref


def test_a_refused_record_whose_id_is_an_email_shows_the_hash() -> None:
    conn = build(record_id="ref")
    conn.bind_digest(digest)
    (rejected,) = conn.parse(payload({"ref": EMAIL, "email": EMAIL}))  # no time
    assert isinstance(rejected, Rejected)
    assert rejected.ref.startswith(HASHED_PREFIX) and EMAIL not in repr(rejected)
    assert rejected.field == "occurred_at"


def test_ordinary_ids_and_attributes_stay_as_sent() -> None:
    conn = build(attributes={"landed": "landed", "title": "title"})
    conn.bind_digest(digest)
    record = {"id": "5829164253118282911", "at": "2025-03-01T10:00:00Z", "email": EMAIL}
    (event,) = conn.parse(payload({**record, "landed": "2025-03-01", "title": "Consult request"}))
    assert isinstance(event, LeadEvent)
    assert event.interactions[0].idempotency_key == "form.submitted:5829164253118282911"
    assert event.interactions[0].attributes == {
        "landed": "2025-03-01",
        "title": "Consult request",
        "external_record_id": "5829164253118282911",
    }


@pytest.mark.parametrize(
    ("value", "email", "phone"),
    [
        (EMAIL, True, False),
        ("+44 20 7946 0958", False, True),
        ("(312) 555-0142", False, True),
        ("5829164253118282911", False, False),  # a bare digit string is an id
        ("2025-03-01", False, False),
        ("12/31/2025", False, False),
        ("abc-123-def", False, False),
        ("123-45", False, False),
    ],
)
def test_what_looks_like_an_email_or_phone(value: str, email: bool, phone: bool) -> None:
    assert (looks_like_email(value), looks_like_phone(value)) == (email, phone)


def test_end_to_end_no_email_in_the_store_or_the_report(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(sources={"forms": {"connector": "mapped", **SIMPLE, "record_id": "ref", "attributes": {"r": "ref"}}})
    record = {"ref": EMAIL, "at": "2025-03-01T10:00:00Z", "email": EMAIL}
    report = app.ingest_payloads("forms", [payload(record)], actor=ACTOR)
    assert report.accepted == 1
    (inter,) = app.timeline(EMAIL, actor=ACTOR).interactions
    assert inter.attributes["external_record_id"].startswith(HASHED_PREFIX)
    assert inter.attributes["r"] == inter.attributes["external_record_id"]
    assert EMAIL not in json.dumps(inter.attributes)
    # the same record again collapses on the hashed key
    again = app.ingest_payloads("forms", [payload({**record, "x": 1})], actor=ACTOR)
    assert again.interactions_added == 0 and again.duplicates == 1
    # a refused record's reason names the hash, not the email
    bad = app.ingest_payloads("forms", [payload({"ref": EMAIL, "email": EMAIL, "y": 2})], actor=ACTOR)
    (q,) = bad.quarantined
    assert EMAIL not in str(q) and HASHED_PREFIX in str(q)


def test_a_secret_without_a_signature_table_is_a_start_up_problem(make_app: Callable[..., CareCRM]) -> None:
    with pytest.raises(SourceProblems) as info:
        make_app(sources={"forms": {"connector": "mapped", "secret": "test-secret", **SIMPLE}})
    (problem,) = info.value.problems
    assert problem.startswith("source 'forms': option 'secret': is configured but there is no")
    # a preset carries its vendor's signature table: a secret is fine there
    app = make_app(sources={"tf": {"connector": "typeform", "secret": "test-secret"}})
    assert app.components.source_problems(["tf"]) == []


def test_a_campaign_that_looks_like_an_email_is_hashed() -> None:
    conn = build(touchpoint={"landing_page": "page", "medium": "medium"})
    conn.bind_digest(digest)
    record = {"id": "1", "at": "2025-03-01T10:00:00Z", "email": EMAIL, "medium": "email"}
    (event,) = conn.parse(payload({**record, "page": f"https://example-derm.test/?utm_campaign={EMAIL}&utm_source=nl"}))
    assert isinstance(event, LeadEvent)
    tp = event.touchpoint
    assert tp.campaign == HASHED_PREFIX + digest(b"key-value\x1f" + EMAIL.encode())
    assert (tp.source, tp.medium, tp.landing_page) == ("nl", "email", "https://example-derm.test/")
