"""Tests of the Google Ads lead form webhook connector
(``carecrm.plugins.sources.google_ads_lead_form``).

The test lead comes from the vendor corpus (``$CARECRM_TEST_CORPUS``, else
``../shared/corpus``; folder ``google_ads_lead_form``); its ``google_key`` is the corpus's
``example-shared-key``.  Google signs nothing: the key in the body is compared.
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
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import Actor, LeadEvent, RawPayload
from carecrm.core.plugins.manager import DEFAULT_PLUGINS
from carecrm.core.testing import resources
from carecrm.plugins.sources.google_ads_lead_form import GoogleAdsLeadFormConnector

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CONSUMER = resources.corpus_dir(REPO) / "google_ads_lead_form" / "test_lead_consumer_form.json"
needs_corpus = resources.needs_corpus(resources.corpus_dir(REPO), CONSUMER)
MAKE = Callable[..., CareCRM]
KEY = "example-shared-key"
RECEIVED = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NOW = datetime.now(UTC)


def connector() -> GoogleAdsLeadFormConnector:
    return GoogleAdsLeadFormConnector(name="google_ads_lead_form", options={}, settings=Settings())


def payload(body: dict[str, Any] | bytes, received_at: datetime = RECEIVED) -> RawPayload:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return RawPayload(body=raw, received_at=received_at)


def one(p: RawPayload) -> LeadEvent:
    (event,) = list(connector().parse(p))
    assert isinstance(event, LeadEvent), event
    return event


@needs_corpus
def test_consumer_test_lead() -> None:
    event = one(payload(CONSUMER.read_bytes()))
    assert event.full_name == "FirstName LastName"
    assert event.phones == ("+16505550123",) and event.emails == ("test@example.com",)
    assert event.postal_code == "94043"
    (inter,) = event.interactions
    assert inter.kind == "ad_lead.submitted" and inter.channel == "ad_platform"
    assert inter.occurred_at == RECEIVED  # no submit time: the receipt
    assert inter.attributes["test"] is True
    assert inter.attributes["questions"] == ["SERVICE"] and inter.body == "SERVICE: Roofing"  # no column_name
    assert inter.attributes["campaign_id"] == "991214827" and inter.attributes["creative_id"] == "30000000000"
    assert inter.idempotency_key.startswith("ad_lead.submitted:TeSter-123-")
    assert event.touchpoint.gclid is not None and event.touchpoint.gclid.startswith("TeSter-123-")
    assert event.touchpoint.channel_group == "paid_search" and event.touchpoint.form_id == "18698608977"
    assert event.consents == ()
    assert KEY not in repr(event) and all(KEY not in str(v) for v in inter.attributes.values())


def test_b2b_work_email_and_submit_time_with_offset() -> None:
    body = {
        "lead_id": "L-1",
        "lead_submit_time": "2026-02-28T23:30:00-05:00",
        "user_column_data": [
            {"column_name": "Work Email", "string_value": "work-test@example.com", "column_id": "WORK_EMAIL"},
            {"string_value": "Acme", "column_id": "COMPANY_NAME"},
        ],
        "google_key": KEY,
    }
    event = one(payload(body))
    assert event.emails == ("work-test@example.com",) and event.phones == ()
    assert event.interactions[0].occurred_at == datetime(2026, 3, 1, 4, 30, tzinfo=UTC)
    assert "test" not in event.interactions[0].attributes


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"user_column_data": []}, Rejected("#0", "lead_id", "missing or not an id")),
        (
            {"lead_id": "x", "lead_submit_time": "yesterday"},
            Rejected("x", "lead_submit_time", "not an ISO 8601 date and time"),
        ),
        (
            {"lead_id": "x", "user_column_data": [{"string_value": "a"}]},
            Rejected("x", "user_column_data[0].column_id", "missing"),
        ),
    ],
)
def test_bad_leads_are_rejected(body: dict[str, Any], expected: Rejected) -> None:
    assert list(connector().parse(payload(body))) == [expected]


@pytest.mark.parametrize("body", [b"{", b"[]", b'{"lead_id": "x", "user_column_data": {}}'])
def test_unreadable_payload_is_refused_whole(body: bytes) -> None:
    with pytest.raises(ValidationFailed):
        list(connector().parse(payload(body)))


@needs_corpus
def test_key_checked_in_constant_time_and_redacted_for_storage() -> None:
    c = connector()
    raw = payload(CONSUMER.read_bytes())
    c.verify(raw, KEY)
    with pytest.raises(ValidationFailed, match="does not match") as err:
        c.verify(raw, "another-key")
    assert err.value.field == "google_key"
    with pytest.raises(ValidationFailed, match="missing"):
        c.verify(payload({"lead_id": "x"}), KEY)
    stored = c.redact(raw)
    assert KEY.encode() not in stored.body
    assert stored.body.replace(b'"google_key"', b"").count(b"TeSter-123-") == raw.body.count(b"TeSter-123-")
    c.verify(stored, KEY)  # a stored payload still verifies
    with pytest.raises(ValidationFailed):
        c.verify(stored, "another-key")
    # a value already shaped like a redaction is digested again: no forging
    forged = c.redact(payload(stored.body))
    with pytest.raises(ValidationFailed):
        c.verify(forged, KEY)


def test_registered_by_name(make_app: MAKE) -> None:
    assert "carecrm.plugins.sources.google_ads_lead_form" in DEFAULT_PLUGINS
    assert isinstance(make_app().connector("google_ads_lead_form"), GoogleAdsLeadFormConnector)


@needs_corpus
def test_through_the_app_key_never_stored(make_app: MAKE, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECRM_TEST_GOOGLE_KEY", KEY)  # received now: kept past the inbox retention
    app = make_app(sources={"google_ads_lead_form": {"secret": "$env:CARECRM_TEST_GOOGLE_KEY"}})
    report = app.ingest_payloads("google_ads_lead_form", [payload(CONSUMER.read_bytes(), NOW)], actor=ACTOR)
    assert (report.accepted, report.interactions_added, report.quarantined) == (1, 1, [])
    (inter,) = app.timeline("test@example.com", actor=ACTOR).interactions
    assert inter.attributes["test"] is True
    (entry,) = app.inbox_list()
    _item, stored = app.inbox_show(entry.id, actor=ACTOR)
    assert KEY.encode() not in stored.body
    assert app.inbox_retry(entry.id, actor=ACTOR).quarantined == []  # the stored form verifies
    again = app.ingest_payloads("google_ads_lead_form", [payload(CONSUMER.read_bytes(), NOW)], actor=ACTOR)
    assert again.duplicate_payloads == 1 and again.interactions_added == 0
    wrong = json.loads(CONSUMER.read_text())
    wrong["google_key"] = "guess"
    bad = app.ingest_payloads("google_ads_lead_form", [payload(wrong, NOW)], actor=ACTOR)
    assert [q.field for q in bad.quarantined] == ["google_key"]
