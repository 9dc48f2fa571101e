"""Tests of the LinkedIn Lead Sync connector (``carecrm.plugins.sources.linkedin_lead_gen``).

The created notice comes from the vendor corpus (``$CARECRM_TEST_CORPUS``, else
``../shared/corpus``; folder ``linkedin_lead_gen``); the deleted notice and the lead form
response are built here from LinkedIn's documented shapes (the Lead Sync schema page),
with fictional values.  LinkedIn publishes no signature vector: the vectors follow the
documented scheme (hex HMAC-SHA256 of ``"hmacsha256=" + body``) with a test secret.
"""

from __future__ import annotations

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
from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.ingest.pointers import Pointer
from carecrm.core.model.domain import Actor, LeadEvent, RawPayload
from carecrm.core.plugins.manager import DEFAULT_PLUGINS
from carecrm.core.testing import resources
from carecrm.plugins.sources.linkedin_lead_gen import LinkedInLeadGenConnector

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CREATED = resources.corpus_dir(REPO) / "linkedin_lead_gen" / "lead_notification_created.json"
needs_corpus = resources.needs_corpus(resources.corpus_dir(REPO), CREATED)
MAKE = Callable[..., CareCRM]
SECRET = "test-client-secret"
URN = "urn:li:leadGenFormResponse:1a2b3c-4"
OPTIONS: dict[str, Any] = {
    "questions": {"1": "first_name", "2": "last_name", "3": "email", "4": "treatment"},
    "consents": {"7": {"channel": "email", "text": "Send me news and offers by email."}},
}


def connector(**options: Any) -> LinkedInLeadGenConnector:
    return LinkedInLeadGenConnector(name="linkedin_lead_gen", options=options, settings=Settings())


def signed(body: bytes, secret: str = SECRET) -> RawPayload:
    sig = hmac.new(secret.encode(), b"hmacsha256=" + body, hashlib.sha256).hexdigest()
    return RawPayload(body=body, headers={"X-LI-Signature": sig})


def deleted_notice() -> bytes:
    return json.dumps(
        {
            "type": "LEAD_ACTION",
            "leadGenFormResponse": URN,
            "leadGenForm": "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:1, 1)",
            "owner": {"organization": "urn:li:organization:5"},
            "associatedEntity": {"event": "urn:li:event:6"},
            "leadType": "EVENT",
            "leadAction": "DELETED",
            "occurredAt": 1686268758881,
        }
    ).encode()


def response(**changes: Any) -> bytes:
    obj: dict[str, Any] = {
        "id": "1a2b3c-4",
        "owner": {"sponsoredAccount": "urn:li:sponsoredAccount:123"},
        "leadType": "SPONSORED",
        "versionedLeadGenFormUrn": "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:1,1)",
        "leadMetadata": {"sponsoredLeadMetadata": {"campaign": "urn:li:sponsoredCampaign:789"}},
        "submittedAt": 1686182358000,
        "testLead": False,
        "formResponse": {
            "answers": [
                {"questionId": 1, "answerDetails": {"textQuestionAnswer": {"answer": "Ada"}}},
                {"questionId": 2, "answerDetails": {"textQuestionAnswer": {"answer": "Example"}}},
                {"questionId": 3, "answerDetails": {"textQuestionAnswer": {"answer": "ada@example.org"}}},
                {"questionId": 4, "answerDetails": {"textQuestionAnswer": {"answer": "laser"}}},
            ],
            "consentResponses": [{"consentId": 7, "accepted": True}, {"consentId": 8, "accepted": False}],
        },
    }
    obj.update(changes)
    return json.dumps(obj).encode()


@needs_corpus
def test_created_notice_is_a_pointer() -> None:
    (pointer,) = list(connector().parse(RawPayload(body=CREATED.read_bytes())))
    assert isinstance(pointer, Pointer)
    assert pointer.ref == URN and pointer.key == f"ad_lead.submitted:{URN}"
    assert "urn%3Ali%3AleadGenFormResponse%3A1a2b3c-4" in pointer.fetch


def test_deleted_notice_is_recorded_not_silent() -> None:
    (event,) = list(connector().parse(RawPayload(body=deleted_notice())))
    assert isinstance(event, LeadEvent)
    assert event.external_ids == (("linkedin_lead_gen", URN),) and event.emails == ()
    (inter,) = event.interactions
    assert inter.kind == "ad_lead.deleted" and inter.idempotency_key == f"ad_lead.deleted:{URN}"
    assert inter.occurred_at == datetime(2023, 6, 8, 23, 59, 18, 881000, tzinfo=UTC)  # milliseconds
    assert inter.attributes["action_required"].startswith("delete or anonymise")
    # the owner and entity keys vary by lead type; the form URN has a space and parentheses
    assert inter.attributes["owner_type"] == "organization" and inter.attributes["associated_entity_type"] == "event"
    assert (inter.attributes["form_id"], inter.attributes["form_version"]) == ("1", "1")


def test_lead_form_response_fields_and_consent() -> None:
    (event,) = list(connector(**OPTIONS).parse(RawPayload(body=response())))
    assert isinstance(event, LeadEvent)
    assert (event.first_name, event.last_name, event.emails) == ("Ada", "Example", ("ada@example.org",))
    (inter,) = event.interactions
    assert inter.occurred_at == datetime(2023, 6, 7, 23, 59, 18, tzinfo=UTC)
    assert inter.attributes["campaign_urn"] == "urn:li:sponsoredCampaign:789" and "test" not in inter.attributes
    assert inter.body == "treatment: laser"
    assert event.touchpoint.channel_group == "paid_social" and event.touchpoint.source == "linkedin"
    (consent,) = event.consents  # consent 8 was not accepted: nothing recorded
    assert (consent.channel, consent.purpose, consent.status) == ("email", "marketing", "granted")
    assert consent.evidence["text"] == "Send me news and offers by email."
    (test_event,) = list(connector(**OPTIONS).parse(RawPayload(body=response(testLead=True))))
    assert isinstance(test_event, LeadEvent) and test_event.interactions[0].attributes["test"] is True


def test_form_definition_maps_predefined_fields() -> None:
    form = {
        "content": {"questions": [{"questionId": 3, "predefinedField": "EMAIL"}, {"questionId": 1, "name": "given"}]}
    }
    notice = RawPayload(
        body=json.dumps({"type": "LEAD_ACTION", "leadGenFormResponse": URN, "leadAction": "CREATED"}).encode()
    )
    event, stranger = list(
        connector().complete(
            notice,
            [
                RawPayload(body=json.dumps(form).encode()),
                RawPayload(body=response()),
                RawPayload(body=response(id="zz")),
            ],
        )
    )
    assert isinstance(event, LeadEvent) and event.emails == ("ada@example.org",)
    assert stranger == Rejected("urn:li:leadGenFormResponse:zz", "id", "not a lead response these notices point to")


def test_bad_notices() -> None:
    bad = {"type": "LEAD_ACTION", "leadGenFormResponse": "urn:li:other:1", "leadAction": "CREATED"}
    assert list(connector().parse(RawPayload(body=json.dumps(bad).encode()))) == [
        Rejected("urn:li:other:1", "leadGenFormResponse", "missing or not a leadGenFormResponse URN")
    ]
    with pytest.raises(ValidationFailed):
        list(connector().parse(RawPayload(body=b"[1]")))


@needs_corpus
def test_signature_vector_and_tampered_body() -> None:
    c = connector()
    good = signed(CREATED.read_bytes())
    c.verify(good, SECRET)
    c.verify(
        RawPayload(body=good.body, headers={"X-LI-Signature": "hmacsha256=" + good.headers["X-LI-Signature"]}), SECRET
    )
    with pytest.raises(ValidationFailed, match="does not match") as err:
        c.verify(RawPayload(body=good.body.replace(b"1a2b3c-4", b"1a2b3c-5"), headers=good.headers), SECRET)
    assert err.value.field == "X-LI-Signature"
    with pytest.raises(ValidationFailed, match="missing"):
        c.verify(RawPayload(body=good.body), SECRET)


def test_registered_by_name(make_app: MAKE) -> None:
    assert "carecrm.plugins.sources.linkedin_lead_gen" in DEFAULT_PLUGINS
    assert isinstance(make_app().connector("linkedin_lead_gen"), LinkedInLeadGenConnector)


@needs_corpus
def test_created_completed_then_deleted_through_the_app(make_app: MAKE, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECRM_TEST_LI_SECRET", SECRET)
    app = make_app(sources={"linkedin_lead_gen": {"secret": "$env:CARECRM_TEST_LI_SECRET", **OPTIONS}})
    report = app.ingest_payloads("linkedin_lead_gen", [signed(CREATED.read_bytes())], actor=ACTOR)
    assert report.pending == 1
    (entry,) = app.inbox_list(status="pending")
    done = app.inbox_complete(entry.id, [RawPayload(body=response())], actor=ACTOR)
    assert (done.accepted, done.pending, done.quarantined) == (1, 0, [])
    gone = app.ingest_payloads("linkedin_lead_gen", [signed(deleted_notice())], actor=ACTOR)
    assert (gone.accepted, gone.quarantined) == (1, [])
    timeline = app.timeline("ada@example.org", actor=ACTOR)
    assert [i.kind for i in timeline.interactions] == ["ad_lead.submitted", "ad_lead.deleted"]  # the same person
    again = app.ingest_payloads("linkedin_lead_gen", [signed(deleted_notice())], actor=ACTOR)
    assert again.duplicate_payloads == 1 and again.interactions_added == 0
