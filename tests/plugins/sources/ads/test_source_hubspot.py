"""Tests of the HubSpot webhook connector (``carecrm.plugins.sources.hubspot``).

The notification comes from the vendor corpus (``$CARECRM_TEST_CORPUS``, else
``../shared/corpus``; folder ``hubspot``); the contact object is built here from HubSpot's
documented CRM contact shape with fictional values.  HubSpot publishes no v3 vector: the
vectors follow its validation guide (base64 HMAC-SHA256 of method + URI + body +
timestamp) with a test secret.
"""

from __future__ import annotations

import base64
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
from carecrm.core.ingest.pointers import Pointer
from carecrm.core.model.domain import Actor, LeadEvent, RawPayload
from carecrm.core.plugins.manager import DEFAULT_PLUGINS
from carecrm.core.testing import resources
from carecrm.plugins.sources.hubspot import HubSpotConnector

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CREATION = resources.corpus_dir(REPO) / "hubspot" / "webhook_contact_creation.json"
needs_corpus = resources.needs_corpus(resources.corpus_dir(REPO), CREATION)
MAKE = Callable[..., CareCRM]
SECRET = "test-client-secret"
URL = "https://crm.example.org/hooks/hubspot?practice=derm%3Amain"


def connector(**options: Any) -> HubSpotConnector:
    return HubSpotConnector(name="hubspot", options=options, settings=Settings())


def signed(body: bytes, *, at: datetime | None = None, secret: str = SECRET, url: str = URL) -> RawPayload:
    when = at or datetime.now(UTC)
    stamp = str(int(when.timestamp() * 1000))
    signed_uri = url.replace("%3A", ":")  # HubSpot decodes this escape before signing
    digest = hmac.new(secret.encode(), b"POST" + signed_uri.encode() + body + stamp.encode(), hashlib.sha256).digest()
    return RawPayload(
        body=body,
        url=url,
        headers={"X-HubSpot-Signature-v3": base64.b64encode(digest).decode(), "X-HubSpot-Request-Timestamp": stamp},
        received_at=when,
    )


def contact(contact_id: str = "123", **props: str) -> bytes:
    properties = {
        "email": "bea@example.org",
        "firstname": "Bea",
        "lastname": "Example",
        "phone": "+1 312 555 0142",
        "hs_analytics_source": "PAID_SEARCH",
        "hs_analytics_source_data_1": "google",
        "hs_analytics_first_url": "https://derm.example.org/laser?utm_source=google&utm_medium=cpc&utm_campaign=laser-q4",
        **props,
    }
    return json.dumps({"id": contact_id, "properties": properties, "createdAt": "2018-10-10T04:23:20.000Z"}).encode()


@needs_corpus
def test_notification_is_a_pointer_never_a_contact() -> None:
    (pointer,) = list(connector().parse(RawPayload(body=CREATION.read_bytes())))
    assert isinstance(pointer, Pointer)
    assert pointer.ref == "4737818/123" and pointer.key == "crm.contact_created:4737818:123"
    assert "/crm/v3/objects/contacts/123" in pointer.fetch


def test_every_item_of_the_batch_and_other_types_skipped() -> None:
    body = [
        {"subscriptionType": "contact.creation", "portalId": 1, "objectId": 10, "occurredAt": 1},
        {"subscriptionType": "contact.propertyChange", "portalId": 1, "objectId": 10, "propertyName": "email"},
        {"subscriptionType": "contact.creation", "portalId": 1, "objectId": 11, "occurredAt": 1},
        {"subscriptionType": "contact.creation", "portalId": 1},
    ]
    items = list(connector().parse(RawPayload(body=json.dumps(body).encode())))
    assert [i.ref for i in items if isinstance(i, Pointer)] == ["1/10", "1/11"]
    assert items[-1] == Rejected("#3", "objectId", "missing or not an id (with portalId)")
    with pytest.raises(ValidationFailed):
        list(connector().parse(RawPayload(body=b"[1, 2]")))


@needs_corpus
def test_complete_from_the_contact_object() -> None:
    notice = RawPayload(body=CREATION.read_bytes())
    event, stranger = list(connector().complete(notice, [RawPayload(body=contact()), RawPayload(body=contact("999"))]))
    assert isinstance(event, LeadEvent)
    assert (event.first_name, event.last_name, event.emails) == ("Bea", "Example", ("bea@example.org",))
    assert event.phones == ("+1 312 555 0142",)
    (inter,) = event.interactions
    assert inter.kind == "crm.contact_created"
    assert inter.occurred_at == datetime(2018, 10, 10, 4, 23, 19, 845000, tzinfo=UTC)  # ms, not seconds
    assert inter.idempotency_key == "crm.contact_created:4737818:123"
    assert inter.attributes["changeSource"] == "CRM" and inter.attributes["original_source"] == "PAID_SEARCH"
    assert event.touchpoint.channel_group == "paid_search" and event.touchpoint.campaign == "laser-q4"
    assert event.touchpoint.landing_page == "https://derm.example.org/laser"
    assert event.external_ids == (("hubspot", "4737818/123"),)
    assert stranger == Rejected("999", "id", "not a contact these notifications point to")


@needs_corpus
def test_signature_v3_vector_tampered_and_stale() -> None:
    c = connector()
    good = signed(CREATION.read_bytes())
    c.verify(good, SECRET)
    with pytest.raises(ValidationFailed, match="does not match") as err:
        c.verify(RawPayload(body=good.body.replace(b"123", b"124"), url=URL, headers=good.headers), SECRET)
    assert err.value.field == "X-HubSpot-Signature-v3"
    with pytest.raises(ValidationFailed) as err:
        c.verify(RawPayload(body=good.body, headers=good.headers), SECRET)
    assert err.value.field == "url"
    old = signed(CREATION.read_bytes(), at=datetime.now(UTC) - timedelta(minutes=6))
    stale = RawPayload(body=old.body, url=URL, headers=old.headers)  # received now, signed 6 minutes ago
    with pytest.raises(ValidationFailed, match="from receipt") as err:
        c.verify(stale, SECRET)
    assert err.value.field == "X-HubSpot-Request-Timestamp"
    connector(max_age_seconds=None).verify(stale, SECRET)  # the window can be turned off


def test_registered_by_name(make_app: MAKE) -> None:
    assert "carecrm.plugins.sources.hubspot" in DEFAULT_PLUGINS
    assert isinstance(make_app().connector("hubspot"), HubSpotConnector)


@needs_corpus
def test_pending_then_completed_through_the_app(make_app: MAKE, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CARECRM_TEST_HUBSPOT_SECRET", SECRET)
    app = make_app(sources={"hubspot": {"secret": "$env:CARECRM_TEST_HUBSPOT_SECRET"}})
    report = app.ingest_payloads("hubspot", [signed(CREATION.read_bytes())], actor=ACTOR)
    assert (report.pending, report.accepted, report.quarantined) == (1, 0, [])
    with app.storage.unit_of_work() as uow:
        assert uow.contacts.count() == 0
    (entry,) = app.inbox_list(status="pending")
    done = app.inbox_complete(entry.id, [RawPayload(body=contact())], actor=ACTOR)
    assert (done.accepted, done.pending, done.interactions_added) == (1, 0, 1)
    assert [i.kind for i in app.timeline("bea@example.org", actor=ACTOR).interactions] == ["crm.contact_created"]
    # a retry (attemptNumber 1, the same eventId) is done at once and adds nothing
    retry = json.loads(CREATION.read_text())
    retry[0]["attemptNumber"] = 1
    again = app.ingest_payloads("hubspot", [signed(json.dumps(retry).encode())], actor=ACTOR)
    assert (again.pending, again.interactions_added) == (0, 0)
    assert app.inbox_list(status="pending") == []
