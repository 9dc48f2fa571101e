"""Tests of the Postmark webhook connector (``carecrm.plugins.sources.postmark``).

The corpus (folder ``postmark``) holds Postmark's documented bounce, open, click and
subscription-change examples; the other bounce types, spam complaints and re-subscribes
are built here from https://postmarkapp.com/developer/webhooks/webhooks-overview.
"""

from __future__ import annotations

import base64
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
from carecrm.plugins.sources.postmark import PostmarkConnector

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
PM = CORPUS / "postmark"
BOUNCE, OPEN, CLICK, SUB = (
    PM / n for n in ("bounce.json", "open.json", "click.json", "subscription_change_unsubscribe.json")
)
needs_corpus = resources.needs_corpus(CORPUS, BOUNCE, OPEN, CLICK, SUB)
MAKE = Callable[..., CareCRM]


def connector() -> PostmarkConnector:
    return PostmarkConnector(name="postmark", options={}, settings=Settings())


def events(body: bytes | dict[str, Any]) -> list[LeadEvent]:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    out = list(connector().parse(RawPayload(body=raw)))
    assert all(isinstance(e, LeadEvent) for e in out), out
    return [e for e in out if isinstance(e, LeadEvent)]


def bounce(kind: str, **extra: Any) -> dict[str, Any]:
    return {
        "RecordType": "Bounce",
        "ID": 42,
        "Type": kind,
        "MessageID": "m-1",
        "Email": "p@example.com",
        "BouncedAt": "2024-01-02T03:04:05Z",
        **extra,
    }


def sub_change(suppress: bool, reason: str, origin: str = "Recipient") -> dict[str, Any]:
    return {
        "RecordType": "SubscriptionChange",
        "MessageID": "m-2",
        "MessageStream": "broadcast",
        "ChangedAt": "2024-02-01T00:00:00Z",
        "Recipient": "p@example.com",
        "Origin": origin,
        "SuppressSending": suppress,
        "SuppressionReason": reason,
    }


@needs_corpus
def test_bounce_file() -> None:
    (ev,) = events(BOUNCE.read_bytes())
    assert ev.emails == ("bounce@example.com",)  # not From, the practice
    (inter,) = ev.interactions
    assert inter.kind == "email.bounced"
    assert inter.occurred_at == datetime(2016, 4, 27, 20, 28, 50, 396000, tzinfo=UTC)  # -04:00, to ms
    a = inter.attributes
    assert a["bounce_type"] == "HardBounce" and a["undeliverable"] is True and a["permanent"] is True
    assert a["suppressed"] is True and a["can_activate"] is True and a["postmark_id"] == "901542550"
    assert ev.consents == ()  # a hard bounce is not an opt-out
    text = json.dumps(a)
    assert "Postmark event test" not in text and '"..."' not in text  # no subject, no content
    assert "sender@" not in text


@needs_corpus
def test_open_file_with_an_empty_geo() -> None:
    (ev,) = events(OPEN.read_bytes())
    (inter,) = ev.interactions
    assert ev.emails == ("recipient@example.com",)
    assert inter.kind == "email.opened"
    assert inter.occurred_at == datetime(2016, 4, 27, 20, 21, 41, 249000, tzinfo=UTC)
    assert inter.attributes["first_open"] is True and inter.attributes["read_seconds"] == 0
    assert inter.attributes["message_id"] == "f4830d10-9c35-4f0c-bca3-3d9b459821f8"
    assert "country" not in inter.attributes and "UserAgent" in ev.dropped_fields


@needs_corpus
def test_click_file() -> None:
    (ev,) = events(CLICK.read_bytes())
    (inter,) = ev.interactions
    assert inter.kind == "email.clicked"
    assert inter.occurred_at == datetime(2017, 10, 25, 15, 21, 11, 906000, tzinfo=UTC)
    assert inter.attributes["url"] == "https://example.com/click/me"
    assert inter.attributes["tag"] == "welcome-email" and ev.touchpoint.campaign == "welcome-email"
    assert ev.touchpoint.landing_page == "https://example.com/click/me"
    assert inter.attributes["country"] == "RS"
    assert {"Geo.IP", "Geo.City", "Geo.Zip", "Geo.Coords"} <= set(ev.dropped_fields)
    assert "8.8.8.8" not in json.dumps(inter.attributes) and "Novi Sad" not in json.dumps(inter.attributes)
    (opened,) = events(OPEN.read_bytes())
    assert opened.interactions[0].idempotency_key != inter.idempotency_key  # same MessageID


@needs_corpus
def test_subscription_change_file_revokes_email_marketing() -> None:
    (ev,) = events(SUB.read_bytes())
    assert ev.emails == ("john.placeholder@example.com",)
    (inter,) = ev.interactions
    assert inter.kind == "email.unsubscribed"
    assert inter.occurred_at == datetime(2022, 6, 5, 17, 17, 32, tzinfo=UTC)
    assert inter.attributes["metadata"] == {"example": "value", "example_2": "value"}
    (consent,) = ev.consents
    assert (consent.contact_point_kind, consent.channel, consent.purpose, consent.status) == (
        "email",
        "email",
        "marketing",
        "revoked",
    )
    assert consent.evidence["message_stream"] == "outbound" and consent.evidence["method"] == "unsubscribe_link"
    assert consent.idempotency_key != inter.idempotency_key


def test_bounce_types() -> None:
    (soft,) = events(bounce("SoftBounce"))
    assert soft.interactions[0].attributes["undeliverable"] is False and soft.consents == ()
    (ooo,) = events(bounce("AutoResponder"))
    assert ooo.interactions[0].kind == "email.delivered" and ooo.interactions[0].attributes["auto_reply"] is True
    assert ooo.consents == ()  # an out-of-office reply is never an opt-out
    (unsub,) = events(bounce("Unsubscribe"))
    assert unsub.interactions[0].kind == "email.unsubscribed" and unsub.consents[0].status == "revoked"
    (spam,) = events({**bounce("SpamComplaint"), "RecordType": "SpamComplaint"})
    assert spam.interactions[0].kind == "email.complained" and spam.consents[0].evidence["method"] == "spam_complaint"
    (odd,) = events(bounce("SomethingNew"))
    assert odd.interactions[0].kind == "email.bounced" and odd.consents == ()


def test_subscription_changes() -> None:
    (hard,) = events(sub_change(True, "HardBounce"))
    assert hard.interactions[0].kind == "email.bounced" and hard.consents == ()
    (spam,) = events(sub_change(True, "SpamComplaint"))
    assert spam.interactions[0].kind == "email.complained" and spam.consents[0].status == "revoked"
    (by_practice,) = events(sub_change(True, "ManualSuppression", origin="Customer"))
    assert by_practice.consents[0].evidence["method"] == "suppressed_by_practice"
    (back,) = events(sub_change(False, "ManualSuppression"))
    assert back.interactions == () and back.consents[0].status == "granted"
    assert events(sub_change(False, "ManualSuppression", origin="Admin")) == []  # not the person's consent


def test_bad_input() -> None:
    c = connector()
    for body, field in ((b"{", "body"), (b"[]", "body"), (b'{"Email": "a@b.co"}', "RecordType")):
        with pytest.raises(ValidationFailed) as err:
            list(c.parse(RawPayload(body=body)))
        assert err.value.field == field
    assert events({"RecordType": "Inbound"}) == []
    no_email = bounce("HardBounce")
    del no_email["Email"]
    assert list(c.parse(RawPayload(body=json.dumps(no_email).encode()))) == [Rejected("42", "Email", "missing")]
    naive = bounce("HardBounce", BouncedAt="2024-01-02T03:04:05")
    (rej,) = list(c.parse(RawPayload(body=json.dumps(naive).encode())))
    assert isinstance(rej, Rejected) and rej.field == "BouncedAt"


def test_basic_auth() -> None:
    c = connector()
    body = json.dumps(bounce("HardBounce")).encode()
    good = "Basic " + base64.b64encode(b"hook:pa ss").decode()
    c.verify(RawPayload(body=body, headers={"Authorization": good}), "hook:pa ss")
    c.verify(RawPayload(body=body, url="https://hook:pa%20ss@crm.example/pm"), "hook:pa ss")
    for kwargs, reason in (
        ({}, "no Basic credentials"),
        ({"headers": {"Authorization": "Bearer x"}}, "not HTTP Basic"),
        ({"headers": {"Authorization": "Basic !!"}}, "not base64"),
        ({"headers": {"Authorization": "Basic " + base64.b64encode(b"hook:guess").decode()}}, "do not match"),
    ):
        with pytest.raises(ValidationFailed, match=reason) as err:
            c.verify(RawPayload(body=body, **kwargs), "hook:pa ss")
        assert err.value.field == "Authorization" and "guess" not in err.value.reason


def test_registered_as_a_built_in() -> None:
    assert "carecrm.plugins.sources.postmark" in DEFAULT_PLUGINS


@needs_corpus
def test_corpus_through_the_app_by_name(make_app: MAKE) -> None:
    app = make_app()
    payloads = [RawPayload(body=p.read_bytes(), origin=p.name) for p in (BOUNCE, OPEN, CLICK, SUB)]
    report = app.ingest_payloads("postmark", payloads, actor=ACTOR)
    assert report.quarantined == [] and report.interactions_added == 4
    kinds = [i.kind for i in app.timeline("recipient@example.com", actor=ACTOR).interactions]
    assert sorted(kinds) == ["email.clicked", "email.opened"]
    john = app.timeline("john.placeholder@example.com", actor=ACTOR).contact
    bounced = app.timeline("bounce@example.com", actor=ACTOR).contact
    with app.storage.unit_of_work() as uow:
        assert [(r.purpose, r.status) for r in uow.consents.for_contact(john.id)] == [("marketing", "revoked")]
        assert list(uow.consents.for_contact(bounced.id)) == []
    again = app.ingest_payloads(
        "postmark", [RawPayload(body=json.dumps(json.loads(p.body)).encode()) for p in payloads], actor=ACTOR
    )
    assert again.interactions_added == 0 and again.quarantined == []
    assert app.counts()["contacts"] == 3


@needs_corpus
def test_wrong_credentials_are_quarantined(make_app: MAKE) -> None:
    app = make_app(sources={"postmark": {"secret": "hook:right"}})
    wrong = "Basic " + base64.b64encode(b"hook:wrong").decode()
    report = app.ingest_payloads(
        "postmark", [RawPayload(body=BOUNCE.read_bytes(), headers={"Authorization": wrong})], actor=ACTOR
    )
    assert report.interactions_added == 0 and report.quarantined[0].field == "Authorization"
