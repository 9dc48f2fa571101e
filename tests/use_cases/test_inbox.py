"""The inbox: payloads stored encrypted before processing, quarantine and retry, re-delivery,
retention."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import timedelta

from carecrm.core import CareCRM, RawPayload
from carecrm.core.model.domain import Actor
from carecrm.core.model.timeutil import utcnow

ACTOR = Actor.parse("tester:admin")

SOURCE = {
    "connector": "mapped",
    "record_id": "id",
    "kind": "form.submitted",
    "channel": "web",
    "occurred_at": "at",
    "fields": {"email": "email", "first_name": "name"},
}


def _payload(i: int, email: str = "") -> RawPayload:
    body = {
        "id": f"sub-{i}",
        "at": "2026-04-02T15:00:00Z",
        "email": email or f"p{i}.placeholder@example.com",
        "name": "Pat",
    }
    return RawPayload(body=json.dumps(body).encode())


def test_quarantine_retry_and_redelivery(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(sources={"webform": SOURCE})
    bad = RawPayload(body=b"{not json")
    report = app.ingest_payloads("webform", [_payload(1), bad, _payload(2)], actor=ACTOR)
    assert report.contacts_created == 2 and len(report.quarantined) == 1
    q = report.quarantined[0]
    assert (q.source, q.field) == ("webform", "body")
    quarantined = app.inbox_list(status="quarantined")
    assert len(quarantined) == 1 and "webform" in (quarantined[0].reason or "")
    # the same bad bytes again reuse the entry: no pile-up
    app.ingest_payloads("webform", [bad], actor=ACTOR)
    assert len(app.inbox_list(status="quarantined")) == 1
    assert app.inbox_list(status="quarantined")[0].attempts == 2
    # a processed payload delivered again changes nothing
    before = app.counts()
    again = app.ingest_payloads("webform", [_payload(1)], actor=ACTOR)
    assert again.duplicate_payloads == 1 and app.counts() == before
    # the raw payload reads back exactly, and the read is audited
    item, payload = app.inbox_show(quarantined[0].id, actor=ACTOR)
    assert payload.body == b"{not json" and item.status == "quarantined"
    assert any(e.action == "inbox.read" for e in app.audit_log(limit=5))
    app.inbox_discard(item.id, reason="test", actor=ACTOR)
    assert app.inbox_list(status="discarded")[0].id == item.id


def test_retry_after_fixing_the_mapping(make_app: Callable[..., CareCRM]) -> None:
    broken = {**SOURCE, "fields": {"email": "mail"}}  # wrong key: no identity
    app = make_app(sources={"webform": broken})
    report = app.ingest_payloads("webform", [_payload(7)], actor=ACTOR)
    assert report.quarantined and report.quarantined[0].field == "identity"
    entry = app.inbox_list(status="quarantined")[0]
    app.close()
    fixed = make_app(sources={"webform": SOURCE})
    retried = fixed.inbox_retry(entry.id, actor=ACTOR)
    assert retried.contacts_created == 1 and not retried.quarantined
    assert fixed.inbox_list(status="processed")[0].id == entry.id


def test_processed_payloads_are_purged_after_retention(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(sources={"webform": SOURCE}, ingest={"inbox_retention_days": 30})
    app.ingest_payloads("webform", [_payload(1)], actor=ACTOR)
    bad = app.ingest_payloads("webform", [RawPayload(body=b"[]")], actor=ACTOR)  # not a record: quarantined
    assert [q.field for q in bad.quarantined] == ["record"]
    assert app.inbox_purge(now=utcnow() + timedelta(days=29)) == 0
    assert {i.status for i in app.inbox_list()} == {"processed", "quarantined"}
    assert app.inbox_purge(now=utcnow() + timedelta(days=31)) == 1
    # quarantined payloads stay until a person retries or discards them
    assert {i.status for i in app.inbox_list()} == {"quarantined"}
    # the contact and its timeline stay: only the raw payload goes
    assert app.counts()["contacts"] == 1


def test_no_verify_needs_no_secret(make_app: Callable[..., CareCRM]) -> None:
    signed = {
        **SOURCE,
        "secret": "$env:CARECRM_TEST_UNSET_SECRET",
        "signature": {"scheme": "hmac-sha256", "header": "X-Sig", "encoding": "hex"},
    }
    app = make_app(sources={"webform": signed})
    report = app.ingest_payloads("webform", [_payload(3)], verify=False, actor=ACTOR)
    assert report.contacts_created == 1


def test_a_pathological_body_is_quarantined_and_the_rest_go_in(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(sources={"webform": SOURCE})
    deep = RawPayload(body=b"[" * 200_000 + b"]" * 200_000)
    empty = RawPayload(body=b"  \n")
    report = app.ingest_payloads("webform", [_payload(1), deep, empty, _payload(2)], actor=ACTOR)
    assert report.contacts_created == 2
    reasons = sorted(q.reason for q in report.quarantined)
    assert reasons == ["cannot be parsed (RecursionError)", "empty body"]
    assert len(report.quarantined) == 2


def test_records_count_includes_refused_records(make_app: Callable[..., CareCRM]) -> None:
    multi = {**SOURCE, "records": "leads"}
    app = make_app(sources={"webform": multi})
    body = {
        "leads": [
            {"id": "a", "at": "2026-04-02T15:00:00Z", "email": "a.placeholder@example.com"},
            {"id": "b", "at": "not a time", "email": "b.placeholder@example.com"},
            "not an object",
        ]
    }
    report = app.ingest_payloads("webform", [RawPayload(body=json.dumps(body).encode())], actor=ACTOR)
    assert report.records == 3 and report.accepted == 1 and len(report.quarantined) == 2


def test_a_payload_with_no_lead_record_is_ignored_not_lost(make_app: Callable[..., CareCRM]) -> None:
    typo = {**SOURCE, "only_if": "kind == 'form_submision'"}  # a mistyped filter matches nothing
    app = make_app(sources={"webform": typo})
    body = {"kind": "form_submission", "id": "s1", "at": "2026-04-02T15:00:00Z", "email": "z.placeholder@example.com"}
    payload = RawPayload(body=json.dumps(body).encode())
    report = app.ingest_payloads("webform", [payload], actor=ACTOR)
    assert report.empty_payloads == 1 and report.contacts_created == 0 and not report.quarantined
    (entry,) = app.inbox_list()
    assert entry.status == "ignored"
    app.close()
    fixed = make_app(sources={"webform": {**SOURCE, "only_if": "kind == 'form_submission'"}})
    again = fixed.ingest_payloads("webform", [payload], actor=ACTOR)  # the same bytes, delivered again
    assert again.contacts_created == 1 and again.duplicate_payloads == 0
    assert [i.status for i in fixed.inbox_list()] == ["processed"]


def test_the_default_size_limit_is_one_mebibyte(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(sources={"webform": SOURCE})
    assert app.settings.max_payload_bytes == 1_048_576
    padded = json.loads(_payload(2).body)
    padded["name"] = "Pat" + " " * 1_048_576
    report = app.ingest_payloads(
        "webform", [_payload(1), RawPayload(body=json.dumps(padded).encode(), origin="big.json")], actor=ACTOR
    )
    assert report.contacts_created == 1
    (q,) = report.quarantined
    assert (q.source, q.record, q.field, q.payload) == ("webform", "payload", "body", "big.json")
    assert "larger than [ingest] max_payload_bytes (1048576)" in q.reason


def test_reprocess_replaces_the_interactions_of_one_payload(make_app: Callable[..., CareCRM]) -> None:
    """After a config fix, reprocess derives a processed payload again: its interactions
    (found by their inbox id) are replaced, the other payloads' stay; audited."""
    wrong = {**SOURCE, "channel": "phone"}
    app = make_app(sources={"webform": wrong})
    app.ingest_payloads("webform", [_payload(1), _payload(2)], actor=ACTOR)
    entries = {json.loads(app.inbox_show(i.id, actor=ACTOR)[1].body)["id"]: i for i in app.inbox_list()}
    first, second = entries["sub-1"], entries["sub-2"]
    app.close()
    fixed = make_app(sources={"webform": SOURCE})
    report = fixed.inbox_reprocess(first.id, actor=ACTOR)
    assert (report.interactions_removed, report.interactions_added, report.contacts_created) == (1, 1, 0)
    channels = {}
    for email in ("p1.placeholder@example.com", "p2.placeholder@example.com"):
        (contact,) = fixed.find_contacts(actor=ACTOR, email=email)
        channels[email] = [i.channel for i in fixed.timeline(contact.id, actor=ACTOR).interactions]
    assert channels == {"p1.placeholder@example.com": ["web"], "p2.placeholder@example.com": ["phone"]}
    assert fixed.counts()["interactions"] == 2
    (entry,) = [e for e in fixed.audit_log(limit=20) if e.action == "inbox.reprocess"]
    assert entry.details == {"inbox_id": str(first.id), "source": "webform", "removed": 1}
    assert {i.status for i in fixed.inbox_list()} == {"processed"} and second.id != first.id


def test_a_pointer_only_source_is_not_reprocessed(make_app: Callable[..., CareCRM]) -> None:
    """Meta Lead Ads' records came from fetched Graph API objects the inbox does not keep:
    re-deriving the notification would delete them, so reprocess refuses, naming why."""
    import pytest

    from carecrm.core.errors import CareCRMError

    app = make_app()
    with pytest.raises(CareCRMError, match="pointer-only"):
        app.inbox_reprocess_source("meta_lead_ads", actor=ACTOR)
