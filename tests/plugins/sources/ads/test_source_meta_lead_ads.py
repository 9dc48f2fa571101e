"""Tests of the Meta Lead Ads connector (``carecrm.plugins.sources.meta_lead_ads``) and the
pending-pointer flow of the inbox it drives (``carecrm.core.ingest.pointers``).

Payloads come from the vendor corpus (``$CARECRM_TEST_CORPUS``, else ``../shared/corpus``
beside the clone; folder ``meta_lead_ads``).  Meta publishes no signature vector; the
vectors here follow the documented scheme (``X-Hub-Signature-256: sha256=`` + hex
HMAC-SHA256 of the raw body with the app secret) with a test secret.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from carecrm.core import CareCRM
from carecrm.core.config import Settings
from carecrm.core.errors import CareCRMError, ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.ingest.pointers import Fetcher, Pointer
from carecrm.core.model.domain import Actor, LeadEvent, RawPayload
from carecrm.core.plugins.manager import DEFAULT_PLUGINS
from carecrm.core.testing import resources
from carecrm.plugins.sources.meta_lead_ads import MetaLeadAdsConnector
from carecrm.storage_backends.mongo.backend import forget_mock

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO) / "meta_lead_ads"
WEBHOOK = CORPUS / "leadgen_webhook_notification.json"
LEAD = CORPUS / "lead_graph_api_object.json"
DISCLAIMERS = CORPUS / "lead_custom_disclaimer_responses.json"
needs_corpus = resources.needs_corpus(CORPUS, WEBHOOK)
MAKE = Callable[..., CareCRM]
SECRET = "test-app-secret"
SMS_TEXT = "I agree to receive marketing text messages from Test Dermatology at the number provided."
OPTIONS: dict[str, Any] = {
    "disclaimers": {"optional_1": {"channel": "email", "purpose": "marketing", "text": SMS_TEXT, "version": "2025-01"}}
}


def connector(**options: Any) -> MetaLeadAdsConnector:
    return MetaLeadAdsConnector(name="meta_lead_ads", options=options, settings=Settings())


def signed(body: bytes, secret: str = SECRET) -> RawPayload:
    sig = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
    return RawPayload(body=body, headers={"X-Hub-Signature-256": sig})


def lead_object(lead_id: str, *, disclaimers: bool = False, **fields: str) -> bytes:
    """The corpus lead object with the webhook's lead id (the published sample keeps the
    placeholder ``<LEAD_ID>``), optionally merged with the corpus consent responses."""
    obj = json.loads(LEAD.read_text())
    obj["id"] = lead_id
    for name, value in fields.items():
        obj["field_data"].append({"name": name, "values": [value]})
    if disclaimers:
        obj["custom_disclaimer_responses"] = json.loads(DISCLAIMERS.read_text())["custom_disclaimer_responses"]
    return json.dumps(obj).encode()


def disclaimers_of(lead_id: str) -> bytes:
    obj = json.loads(DISCLAIMERS.read_text())
    obj["id"] = lead_id
    return json.dumps(obj).encode()


# --------------------------------------------------------------------------- the webhook


@needs_corpus
def test_webhook_is_two_pointers_and_no_personal_data() -> None:
    items = list(connector().parse(RawPayload(body=WEBHOOK.read_bytes())))
    assert all(isinstance(i, Pointer) for i in items)
    assert [i.ref for i in items] == ["123123123123", "123123123124"]  # both changes, not changes[0]
    assert [i.key for i in items] == ["ad_lead.submitted:123123123123", "ad_lead.submitted:123123123124"]
    assert all("GET /v24.0/1231231231" in i.fetch for i in items)


def test_webhook_string_and_number_ids_are_one_key_and_other_fields_ignored() -> None:
    body = {
        "object": "page",
        "entry": [
            {
                "id": "1",
                "time": 1,
                "changes": [
                    {"field": "leadgen", "value": {"leadgen_id": "123123123123", "created_time": 1440120384}},
                    {"field": "feed", "value": {"item": "status"}},
                    {"field": "leadgen", "value": {"page_id": 1}},
                ],
            }
        ],
    }
    items = list(connector().parse(RawPayload(body=json.dumps(body).encode())))
    assert isinstance(items[0], Pointer) and items[0].key == "ad_lead.submitted:123123123123"
    assert items[1] == Rejected("#1", "leadgen_id", "missing or not an id")
    assert len(items) == 2


@pytest.mark.parametrize(
    ("body", "field"),
    [(b'{"object": "page", "entry": [', "body"), (b'{"object": "user", "entry": []}', "object"), (b"[1]", "body")],
)
def test_unreadable_payload_is_refused_whole(body: bytes, field: str) -> None:
    with pytest.raises(ValidationFailed) as err:
        list(connector().parse(RawPayload(body=body)))
    assert err.value.field == field


# --------------------------------------------------------------------------- signature


@needs_corpus
def test_signature_vector_and_tampered_body() -> None:
    c = connector()
    good = signed(WEBHOOK.read_bytes())
    c.verify(good, SECRET)
    tampered = RawPayload(body=good.body.replace(b"123123123124", b"123123123125"), headers=good.headers)
    with pytest.raises(ValidationFailed, match="does not match") as err:
        c.verify(tampered, SECRET)
    assert err.value.field == "X-Hub-Signature-256"
    with pytest.raises(ValidationFailed, match="missing"):
        c.verify(RawPayload(body=good.body), SECRET)
    with pytest.raises(ValidationFailed, match="prefix"):
        c.verify(RawPayload(body=good.body, headers={"X-Hub-Signature-256": "sha1=00"}), SECRET)


# --------------------------------------------------------------------------- the lead object


@needs_corpus
def test_lead_object_fields() -> None:
    (event,) = list(connector().parse(RawPayload(body=LEAD.read_bytes())))
    assert isinstance(event, LeadEvent)
    assert event.emails == ("joe.placeholder@example.com",)
    assert event.full_name == "Joe Placeholder"
    assert event.phones == ()
    assert event.external_ids == (("meta_lead_ads", "<LEAD_ID>"),)
    (inter,) = event.interactions
    assert inter.kind == "ad_lead.submitted" and inter.channel == "ad_platform"
    assert inter.occurred_at == datetime(2015, 2, 28, 8, 49, 14, tzinfo=UTC)  # +0000, no colon
    assert inter.idempotency_key == "ad_lead.submitted:<LEAD_ID>"
    # custom questions keep their names; the store-locator answer is text, not a phone
    assert inter.attributes["questions"] == ["car_make", "selected_dealer"]
    assert inter.body == "car_make: Honda\nselected_dealer: 99213450"
    assert inter.attributes["ad_id"] == "<AD_ID>" and inter.attributes["form_id"] == "<FORM_ID>"
    assert event.touchpoint.channel_group == "paid_social" and event.touchpoint.source == "facebook"
    assert event.consents == ()


@needs_corpus
def test_consent_checkboxes_map_to_consent_with_the_disclaimer_text() -> None:
    (event,) = list(connector(**OPTIONS).parse(RawPayload(body=lead_object("42", disclaimers=True))))
    assert isinstance(event, LeadEvent)
    (consent,) = event.consents  # optional_1 checked ("1"); optional_2 "" records nothing
    assert (consent.channel, consent.purpose, consent.status) == ("email", "marketing", "granted")
    assert consent.contact_point == "joe.placeholder@example.com"
    assert consent.occurred_at == datetime(2015, 2, 28, 8, 49, 14, tzinfo=UTC)
    assert consent.evidence["text"] == SMS_TEXT and consent.evidence["checkbox_key"] == "optional_1"
    assert consent.evidence["text_version"] == "2025-01" and consent.evidence["form_id"] == "<FORM_ID>"
    assert consent.idempotency_key == "consent:42:optional_1:email:marketing"
    assert event.interactions[0].attributes["consent_checkboxes"] == {"optional_1": True, "optional_2": False}


@needs_corpus
def test_consent_responses_alone_are_refused() -> None:
    assert list(connector(**OPTIONS).parse(RawPayload(body=DISCLAIMERS.read_bytes()))) == [
        Rejected("1231231231", "field_data", "missing: consent responses alone name no contact point")
    ]


def test_is_checked_zero_is_not_consent_and_sms_needs_a_phone() -> None:
    obj = {
        "id": "7",
        "created_time": "2024-05-01T10:00:00+0200",
        "platform": "ig",
        "field_data": [{"name": "email", "values": ["a@example.org"]}],
        "custom_disclaimer_responses": [
            {"checkbox_key": "optional_1", "is_checked": "0"},
            {"checkbox_key": "optional_2", "is_checked": "1"},
        ],
    }
    opts = {"disclaimers": {k: {"channel": "sms", "text": "t"} for k in ("optional_1", "optional_2")}}
    (event,) = list(connector(**opts).parse(RawPayload(body=json.dumps(obj).encode())))
    assert isinstance(event, LeadEvent)
    assert event.consents == ()  # "0" is not checked; the checked SMS box has no phone to belong to
    assert event.dropped_fields == ("custom_disclaimer_responses.optional_2",)
    assert event.touchpoint.source == "instagram"
    assert event.interactions[0].occurred_at == datetime(2024, 5, 1, 8, 0, tzinfo=UTC)


def test_test_form_ids_mark_the_lead_test() -> None:
    obj = {"id": "9", "created_time": "2024-05-01T10:00:00+0000", "form_id": "555", "field_data": []}
    (event,) = list(connector(test_form_ids=("555",)).parse(RawPayload(body=json.dumps(obj).encode())))
    assert isinstance(event, LeadEvent) and event.interactions[0].attributes["test"] is True


def test_complete_merges_responses_and_refuses_strangers() -> None:
    webhook = {
        "object": "page",
        "entry": [{"changes": [{"field": "leadgen", "value": {"leadgen_id": 42, "created_time": 1440120384}}]}],
    }
    fetched = [
        RawPayload(
            body=json.dumps({"id": "42", "field_data": [{"name": "email", "values": ["b@example.org"]}]}).encode()
        ),
        RawPayload(
            body=json.dumps(
                {"id": "42", "custom_disclaimer_responses": [{"checkbox_key": "k", "is_checked": "1"}]}
            ).encode()
        ),
        RawPayload(body=json.dumps({"id": "43", "field_data": []}).encode()),
    ]
    c = connector(disclaimers={"k": {"channel": "email", "text": "t"}})
    event, stranger = list(c.complete(RawPayload(body=json.dumps(webhook).encode()), fetched))
    assert isinstance(event, LeadEvent) and len(event.consents) == 1
    # the lead object has no created_time: the webhook's (Unix seconds) is used
    assert event.interactions[0].occurred_at == datetime(2015, 8, 21, 1, 26, 24, tzinfo=UTC)
    assert stranger == Rejected("43", "id", "not a lead this webhook points to")


# --------------------------------------------------------------------------- through the app


class FileFetcher:
    """A :class:`Fetcher` reading the Graph API responses from files (lead id → body)."""

    def __init__(self, bodies: dict[str, bytes]) -> None:
        self.bodies = bodies
        self.asked: list[str] = []

    def fetch(self, source: str, pointer: Pointer) -> RawPayload:
        self.asked.append(pointer.ref)
        return RawPayload(body=self.bodies[pointer.ref], origin=f"graph:{pointer.ref}")


def test_registered_by_name(make_app: MAKE) -> None:
    assert "carecrm.plugins.sources.meta_lead_ads" in DEFAULT_PLUGINS
    assert isinstance(make_app().connector("meta_lead_ads"), MetaLeadAdsConnector)
    assert isinstance(FileFetcher({}), Fetcher)


@needs_corpus
@pytest.mark.parametrize("backend", ["sqlite", "mongomock"])
def test_pending_then_completed_through_the_app(
    make_app: MAKE, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest, backend: str
) -> None:
    # the pending status, listed by status and set with set_status_many, on both kinds of backend
    monkeypatch.setenv("CARECRM_TEST_META_SECRET", SECRET)
    url = None
    if backend == "mongomock":
        name = f"meta-{uuid.uuid4().hex}"
        url = f"mongomock://{name}"
        request.addfinalizer(lambda: forget_mock(name))
    app = make_app(url=url, sources={"meta_lead_ads": {"secret": "$env:CARECRM_TEST_META_SECRET", **OPTIONS}})
    report = app.ingest_payloads("meta_lead_ads", [signed(WEBHOOK.read_bytes())], actor=ACTOR)
    assert (report.pending, report.accepted, report.quarantined) == (1, 0, [])
    (entry,) = app.inbox_list(status="pending")
    assert entry.reason is not None and "2 of 2" in entry.reason and "123123123124" in entry.reason
    with app.storage.unit_of_work() as uow:
        assert uow.contacts.count() == 0  # never an empty contact from the pointer alone

    # the first lead from a file, with its consent responses read separately
    first = app.inbox_complete(
        entry.id,
        [RawPayload(body=lead_object("123123123123")), RawPayload(body=disclaimers_of("123123123123"))],
        actor=ACTOR,
    )
    assert (first.accepted, first.pending, first.quarantined) == (1, 1, [])
    (still,) = app.inbox_list(status="pending")
    assert still.reason is not None and "1 of 2" in still.reason and "123123123123" not in still.reason
    timeline = app.timeline("joe.placeholder@example.com", actor=ACTOR)
    (inter,) = timeline.interactions
    assert inter.kind == "ad_lead.submitted" and inter.inbox_id == entry.id
    with app.storage.unit_of_work() as uow:
        (consent,) = uow.consents.for_contact(timeline.contact.id)
    assert (consent.channel, consent.purpose, consent.status) == ("email", "marketing", "granted")

    # a lead the webhook does not point to is refused; the entry stays pending
    wrong = app.inbox_complete(entry.id, [RawPayload(body=LEAD.read_bytes(), origin="lead.json")], actor=ACTOR)
    assert [q.field for q in wrong.quarantined] == ["id"] and wrong.accepted == 0
    (still,) = app.inbox_list(status="pending")
    assert still.reason is not None and "refused" in still.reason

    # the second through a fetcher (the HTTP client's place): only what is left is asked for
    fetcher = FileFetcher({"123123123124": lead_object("123123123124", email="second@example.org")})
    done = app.inbox_fetch(entry.id, fetcher, actor=ACTOR)
    assert fetcher.asked == ["123123123124"]
    assert (done.accepted, done.pending) == (1, 0)
    assert app.inbox_list(status="pending") == []
    (processed,) = app.inbox_list(status="processed")
    assert processed.id == entry.id
    with pytest.raises(CareCRMError, match="not pending"):
        app.inbox_complete(entry.id, [RawPayload(body=lead_object("123123123124"))], actor=ACTOR)

    # Meta retries: the same webhook again changes nothing; another delivery naming the
    # same completed leads is processed at once
    again = app.ingest_payloads("meta_lead_ads", [signed(WEBHOOK.read_bytes())], actor=ACTOR)
    assert again.duplicate_payloads == 1
    retry = json.loads(WEBHOOK.read_text())
    retry["entry"][0]["time"] += 60
    body = json.dumps(retry).encode()
    other = app.ingest_payloads("meta_lead_ads", [signed(body)], actor=ACTOR)
    assert (other.pending, other.accepted) == (0, 0)
    assert app.inbox_list(status="pending") == []
    completions = [r for r in app.audit_log(limit=500) if r.action == "inbox.complete"]
    assert len(completions) == 3


@needs_corpus
def test_forged_webhook_is_quarantined(make_app: MAKE, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECRM_TEST_META_SECRET", SECRET)
    app = make_app(sources={"meta_lead_ads": {"secret": "$env:CARECRM_TEST_META_SECRET"}})
    report = app.ingest_payloads("meta_lead_ads", [signed(WEBHOOK.read_bytes(), "another")], actor=ACTOR)
    assert [q.field for q in report.quarantined] == ["X-Hub-Signature-256"] and report.pending == 0
    assert app.inbox_list(status="pending") == []
