"""Tests of the Mailchimp audience webhook connector (``carecrm.plugins.sources.mailchimp``).

The corpus (folder ``mailchimp``) holds a real unsubscribe webhook; the other types
(subscribe, profile, upemail, cleaned, campaign) are built here in the same envelope from
"Sync audience data with webhooks"
(https://mailchimp.com/developer/marketing/guides/sync-audience-data-webhooks/).
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carecrm.core import CareCRM
from carecrm.core.config import Settings
from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import Actor, LeadEvent, RawPayload
from carecrm.core.plugins.manager import DEFAULT_PLUGINS
from carecrm.core.testing import resources
from carecrm.plugins.sources.mailchimp import MailchimpConnector

ACTOR = Actor.parse("tester:admin")
REPO = Path(__file__).resolve().parents[4]
CORPUS = resources.corpus_dir(REPO)
UNSUB = CORPUS / "mailchimp" / "webhook_unsubscribe.form.txt"
needs_corpus = resources.needs_corpus(CORPUS, UNSUB)
FORM = "application/x-www-form-urlencoded"
EMAIL = "patient.two@example.com"
MAKE = Callable[..., CareCRM]


def connector() -> MailchimpConnector:
    return MailchimpConnector(name="mailchimp", options={}, settings=Settings())


def form(kind: str, **data: str) -> bytes:
    fields = {"type": kind, "fired_at": "2024-05-01 09:30:00"}
    fields.update({f"data[{k}]" if not k.startswith("data[") else k: v for k, v in data.items()})
    return urllib.parse.urlencode(fields).encode()


def events(body: bytes) -> list[LeadEvent]:
    out = list(connector().parse(RawPayload(body=body, content_type=FORM)))
    assert all(isinstance(e, LeadEvent) for e in out), out
    return [e for e in out if isinstance(e, LeadEvent)]


@needs_corpus
def test_unsubscribe_corpus_file() -> None:
    (ev,) = events(UNSUB.read_bytes())
    assert ev.emails == (EMAIL,)
    assert (ev.first_name, ev.last_name) == ("Jane", "Placeholder")  # data[merges][…] kept
    assert ev.external_ids == (("mailchimp", "94826aa750"),)
    (inter,) = ev.interactions
    assert inter.kind == "email.unsubscribed" and inter.channel == "email"
    assert inter.occurred_at == datetime(2014, 10, 22, 13, 10, 40, tzinfo=UTC)  # fired_at is UTC
    assert inter.attributes["list_id"] == "f1243a3b12" and inter.attributes["web_id"] == "203740265"
    assert inter.attributes["reason"] == "manual" and inter.attributes["action"] == "unsub"
    (consent,) = ev.consents
    assert (consent.contact_point_kind, consent.channel, consent.purpose, consent.status) == (
        "email",
        "email",
        "marketing",
        "revoked",
    )
    assert consent.contact_point == EMAIL
    assert consent.evidence["list_id"] == "f1243a3b12" and consent.evidence["method"] == "unsubscribe_link"
    assert consent.idempotency_key != inter.idempotency_key
    assert "data[ip_opt]" in ev.dropped_fields
    assert "203.0.113.20" not in repr(ev) + str(inter.attributes) + str(consent.evidence)
    assert "patient" not in inter.idempotency_key and ev.touchpoint.medium == "email"


def test_abuse_unsubscribe_is_a_complaint_and_delete_is_recorded() -> None:
    (ev,) = events(form("unsubscribe", email=EMAIL, id="m1", reason="abuse", action="delete", campaign_id="c42"))
    assert ev.interactions[0].kind == "email.complained"
    assert ev.interactions[0].attributes["member_deleted"] is True
    assert ev.touchpoint.campaign == "c42"
    (consent,) = ev.consents
    assert consent.status == "revoked" and consent.evidence["method"] == "spam_complaint"
    assert consent.evidence["campaign_id"] == "c42"


def test_subscribe_grants_and_profile_updates() -> None:
    (sub,) = events(
        form("subscribe", email=EMAIL, id="m1", ip_signup="198.51.100.1", **{"data[merges][PHONE]": "(555) 010-0199"})
    )
    assert sub.interactions == ()
    (consent,) = sub.consents
    assert (consent.purpose, consent.status) == ("marketing", "granted")
    assert sub.phones == ("(555) 010-0199",) and "data[ip_signup]" in sub.dropped_fields
    (prof,) = events(
        form("profile", email=EMAIL, id="m1", **{"data[merges][FNAME]": "Janet", "data[merges][BIRTHDAY]": "01/02"})
    )
    assert prof.first_name == "Janet" and prof.interactions == () and prof.consents == ()
    assert "data[merges][BIRTHDAY]" in prof.dropped_fields


def test_upemail_carries_both_addresses_to_one_contact() -> None:
    (ev,) = events(form("upemail", new_id="m2", new_email="new@example.com", old_email=EMAIL, list_id="l1"))
    assert ev.emails == ("new@example.com", EMAIL)
    assert ev.external_ids == (("mailchimp", "m2"),)


def test_cleaned_hard_is_undeliverable_not_opted_out() -> None:
    (ev,) = events(form("cleaned", email=EMAIL, reason="hard", campaign_id="c1"))
    (inter,) = ev.interactions
    assert inter.kind == "email.bounced" and inter.attributes["undeliverable"] is True
    assert ev.consents == ()
    (abuse,) = events(form("cleaned", email=EMAIL, reason="abuse"))
    assert abuse.interactions[0].kind == "email.complained" and abuse.consents[0].status == "revoked"


def test_campaign_and_unknown_types_are_skipped() -> None:
    assert events(form("campaign", id="c1", subject="x", status="sent")) == []
    assert events(form("something_new", email=EMAIL)) == []


def test_bad_input() -> None:
    c = connector()
    for body, field in (
        (b"fired_at=2024-01-01", "type"),
        (b"type=unsubscribe&data%5Bemail%5D=a%ZZb", "body"),
        (b"\xff\xfe", "body"),
    ):
        with pytest.raises(ValidationFailed) as err:
            list(c.parse(RawPayload(body=body, content_type=FORM)))
        assert err.value.field == field
    assert list(c.parse(RawPayload(body=form("unsubscribe", id="m1")))) == [Rejected("m1", "data[email]", "missing")]
    bad_time = form("unsubscribe", id="m1", email=EMAIL).replace(b"2024-05-01", b"01%2F05%2F2024")
    (rej,) = list(c.parse(RawPayload(body=bad_time)))
    assert isinstance(rej, Rejected) and rej.field == "fired_at"


@needs_corpus
def test_a_byte_order_mark_does_not_lose_the_first_field() -> None:
    (ev,) = events(b"\xef\xbb\xbf" + UNSUB.read_bytes())
    assert ev.interactions[0].kind == "email.unsubscribed"


def test_secret_in_the_url() -> None:
    c = connector()
    body = form("unsubscribe", email=EMAIL, id="m1")
    c.verify(RawPayload(body=body, url="https://crm.example/hooks/mailchimp?key=s3cret"), "s3cret")
    for url, reason in (
        (None, "no request URL"),
        ("https://crm.example/hooks/mailchimp", "no key"),
        ("https://crm.example/hooks/mailchimp?key=guess", "does not match"),
    ):
        with pytest.raises(ValidationFailed, match=reason) as err:
            c.verify(RawPayload(body=body, url=url), "s3cret")
        assert err.value.field == "key" and "s3cret" not in err.value.reason and "guess" not in err.value.reason


def test_registered_as_a_built_in() -> None:
    assert "carecrm.plugins.sources.mailchimp" in DEFAULT_PLUGINS


@needs_corpus
def test_through_the_app_by_name(make_app: MAKE) -> None:
    app = make_app()
    payload = RawPayload(body=UNSUB.read_bytes(), content_type=FORM, origin=UNSUB.name)
    report = app.ingest_payloads("mailchimp", [payload], actor=ACTOR)  # not signed: no secret needed
    assert report.quarantined == [] and report.interactions_added == 1 and report.contacts_created == 1
    timeline = app.timeline(EMAIL, actor=ACTOR)
    assert [i.kind for i in timeline.interactions] == ["email.unsubscribed"]
    assert timeline.contact.first_name == "Jane"
    with app.storage.unit_of_work() as uow:
        consents = [(r.channel, r.purpose, r.status) for r in uow.consents.for_contact(timeline.contact.id)]
    assert consents == [("email", "marketing", "revoked")]
    # a duplicate delivery, even re-encoded, adds nothing
    again = app.ingest_payloads("mailchimp", [payload], actor=ACTOR)
    assert again.duplicate_payloads == 1
    reencoded = RawPayload(body=UNSUB.read_bytes().replace(b"%40", b"@"), content_type=FORM)
    third = app.ingest_payloads("mailchimp", [reencoded], actor=ACTOR)
    assert third.interactions_added == 0 and third.quarantined == [] and app.counts()["contacts"] == 1


@needs_corpus
def test_a_wrong_url_key_is_quarantined(make_app: MAKE) -> None:
    app = make_app(sources={"mailchimp": {"secret": "s3cret"}})
    payload = RawPayload(body=UNSUB.read_bytes(), content_type=FORM, url="https://crm.example/h?key=nope")
    report = app.ingest_payloads("mailchimp", [payload], actor=ACTOR)
    assert report.interactions_added == 0 and report.quarantined[0].field == "key"
