"""Record builders, fixed data and comparison helpers of the storage conformance suite
(public: a backend's own extra tests use them too).
"""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import attrs

from carecrm.core.analytics.criteria import (
    And,
    Criteria,
    Eq,
    HadInteraction,
    In,
    Not,
    Or,
    Prefix,
    Range,
    all_of,
    any_of,
)
from carecrm.core.model.ids import new_id
from carecrm.core.model.records import (
    ERASED,
    MERGED,
    AppointmentRecord,
    AuditRecord,
    ConsentRecord,
    ContactRecord,
    IdentityRecord,
    InboxRecord,
    InteractionRecord,
    MergeRecord,
    NoteRecord,
    OutboxRecord,
    ReviewRecord,
    ScoreRecord,
    SegmentRecord,
    StageChangeRecord,
    TaskRecord,
)

#: A base time with milliseconds, so every round trip proves millisecond precision.
T0 = datetime(2024, 3, 1, 12, 0, 0, 123000, tzinfo=UTC)

#: Nested, unicode JSON that every backend must round-trip unchanged.
RICH_JSON: dict[str, Any] = {
    "utm": {"source": "google", "medium": "cpc", "terms": ["botox", "lip filler"]},
    "gclid": "Cj0KCQjw-abc_123",
    "unicode": "Zoë Müller — 東京 ✓ 😀",
    "numbers": {"int": 42, "negative": -7, "float": 1.5, "big": 9007199254740993},
    "flags": [True, False, None],
    "empty": {},
    "list_of_objects": [{"a": 1}, {"b": [1, 2, {"c": "d"}]}],
}


def at(seconds: float = 0) -> datetime:
    """``T0`` plus ``seconds`` (timezone-aware UTC, whole milliseconds)."""
    return T0 + timedelta(milliseconds=round(seconds * 1000))


def bidx(text: str) -> str:
    """A blind-index-shaped value (64 lowercase hex characters) derived from ``text``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def ciphertext(text: str = "secret", size: int | None = None) -> bytes:
    """Ciphertext-shaped bytes (any byte value, including NUL); ``size`` pads to a length."""
    raw = b"\x00\xff\x10" + hashlib.sha512(text.encode("utf-8")).digest()
    if size is None:
        return raw
    return (raw * (size // len(raw) + 1))[:size]


def contact_record(**overrides: Any) -> ContactRecord:
    """A contact with every field set (override any of them)."""
    values: dict[str, Any] = {
        "id": new_id(),
        "created_at": at(0),
        "updated_at": at(1),
        "version": 1,
        "status": "active",
        "merged_into": None,
        "key_version": "mk1",
        "wrapped_key": ciphertext("key"),
        "pii_enc": ciphertext("pii"),
        "name_bidx": bidx("name:jane doe"),
        "family_name_bidx": bidx("family:doe"),
        "name_confidence": "high",
        "pipeline": "default",
        "stage": "new_lead",
        "stage_changed_at": at(2),
        "service_interest": "botox",
        "location": "miami",
        "city": "Miami",
        "postal_prefix": "331",
        "owner": "alice",
        "score": 12.5,
        "first_source": "typeform",
    }
    values.update(overrides)
    return ContactRecord(**values)


def identity_record(contact_id: uuid.UUID, **overrides: Any) -> IdentityRecord:
    """An email identity of ``contact_id`` (override ``kind``, ``bidx`` ...)."""
    values: dict[str, Any] = {
        "id": new_id(),
        "contact_id": contact_id,
        "kind": "email",
        "bidx": bidx("jane@example.com"),
        "value_enc": ciphertext("jane@example.com"),
        "source": "typeform",
        "verified": False,
        "valid": None,
        "created_at": at(0),
    }
    values.update(overrides)
    return IdentityRecord(**values)


def interaction_record(contact_id: uuid.UUID, **overrides: Any) -> InteractionRecord:
    """An interaction of ``contact_id`` with a unique idempotency key."""
    values: dict[str, Any] = {
        "id": new_id(),
        "contact_id": contact_id,
        "kind": "form.submitted",
        "occurred_at": at(0),
        "recorded_at": at(5),
        "source": "typeform",
        "idempotency_key": f"evt-{uuid.uuid4().hex}",
        "channel": "web",
        "direction": "inbound",
        "location": "miami",
        "campaign": "spring-botox",
        "channel_group": "paid_search",
        "touchpoint": RICH_JSON,
        "attributes": {"form": "consult", "answers": 3},
        "body_enc": ciphertext("I would like a consult"),
        "actor": None,
        "inbox_id": new_id(),
    }
    values.update(overrides)
    return InteractionRecord(**values)


def stage_change_record(contact_id: uuid.UUID, **overrides: Any) -> StageChangeRecord:
    """A stage change of ``contact_id`` (new_lead → contacted)."""
    values: dict[str, Any] = {
        "id": new_id(),
        "contact_id": contact_id,
        "pipeline": "default",
        "from_stage": "new_lead",
        "to_stage": "contacted",
        "changed_at": at(0),
        "actor": "alice:coordinator",
        "reason": "called back",
        "implied_by": new_id(),
    }
    values.update(overrides)
    return StageChangeRecord(**values)


def appointment_record(contact_id: uuid.UUID, **overrides: Any) -> AppointmentRecord:
    """A booked consult of ``contact_id`` from a booking tool."""
    values: dict[str, Any] = {
        "id": new_id(),
        "contact_id": contact_id,
        "source": "calendly",
        "external_id": f"inv-{uuid.uuid4().hex[:12]}",
        "type": "consult",
        "status": "booked",
        "location": "miami",
        "provider": "dr-lee",
        "starts_at": at(3600),
        "ends_at": at(5400),
        "created_at": at(0),
        "updated_at": at(0),
    }
    values.update(overrides)
    return AppointmentRecord(**values)


def consent_record(**overrides: Any) -> ConsentRecord:
    """A granted SMS marketing consent for a phone contact point."""
    values: dict[str, Any] = {
        "id": new_id(),
        "contact_id": new_id(),
        "contact_point_bidx": bidx("+13055550123"),
        "channel": "sms",
        "purpose": "marketing",
        "status": "granted",
        "occurred_at": at(0),
        "recorded_at": at(1),
        "source": "typeform",
        "idempotency_key": f"consent-{uuid.uuid4().hex}",
        "evidence_enc": ciphertext("I agree to receive texts"),
        "regime": {"tcpa": {"pewc": True, "form_version": "v3"}, "note": "ünïcode"},
        "expires_at": at(86400 * 365),
    }
    values.update(overrides)
    return ConsentRecord(**values)


def note_record(contact_id: uuid.UUID, **overrides: Any) -> NoteRecord:
    """A coordinator's note on ``contact_id``."""
    values: dict[str, Any] = {
        "id": new_id(),
        "contact_id": contact_id,
        "created_at": at(0),
        "author": "alice",
        "body_enc": ciphertext("prefers mornings"),
    }
    values.update(overrides)
    return NoteRecord(**values)


def task_record(contact_id: uuid.UUID, **overrides: Any) -> TaskRecord:
    """An open call-back task on ``contact_id``."""
    values: dict[str, Any] = {
        "id": new_id(),
        "contact_id": contact_id,
        "created_at": at(0),
        "created_by": "alice",
        "assignee": "bob",
        "due_at": at(3600),
        "status": "open",
        "completed_at": None,
        "completed_by": None,
        "body_enc": ciphertext("call back"),
    }
    values.update(overrides)
    return TaskRecord(**values)


def score_record(contact_id: uuid.UUID, **overrides: Any) -> ScoreRecord:
    """A score of ``contact_id`` under model ``rules`` with reasons."""
    values: dict[str, Any] = {
        "contact_id": contact_id,
        "model": "rules",
        "score": 0.1 + 0.2,
        "reasons": [{"rule": "opened_email", "points": 5, "interaction_id": str(new_id())}, {"rule": "é"}],
        "computed_at": at(0),
    }
    values.update(overrides)
    return ScoreRecord(**values)


def review_record(a: uuid.UUID, b: uuid.UUID, **overrides: Any) -> ReviewRecord:
    """An open review of the pair (a, b) with ``contact_a`` the smaller id."""
    low, high = sorted((a, b))
    values: dict[str, Any] = {
        "id": new_id(),
        "contact_a": low,
        "contact_b": high,
        "reason": "same_phone_names_differ",
        "created_at": at(0),
        "status": "open",
        "resolved_at": None,
        "resolved_by": None,
    }
    values.update(overrides)
    return ReviewRecord(**values)


def segment_record(name: str = "botox-leads", **overrides: Any) -> SegmentRecord:
    """A saved segment with a nested filter tree."""
    values: dict[str, Any] = {
        "name": name,
        "definition": {
            "all": [
                {"field": "stage", "op": "eq", "value": "new_lead"},
                {"any": [{"field": "city", "op": "in", "value": ["Miami", "Tampa"]}]},
            ]
        },
        "created_at": at(0),
        "updated_at": at(0),
        "created_by": "alice",
    }
    values.update(overrides)
    return SegmentRecord(**values)


def inbox_record(**overrides: Any) -> InboxRecord:
    """A received payload."""
    values: dict[str, Any] = {
        "id": new_id(),
        "source": "typeform",
        "received_at": at(0),
        "status": "received",
        "reason": None,
        "key_version": "mk1",
        "wrapped_key": ciphertext("payload key"),
        "payload_enc": ciphertext("payload body"),
        "digest": None,
        "processed_at": None,
        "attempts": 0,
    }
    values.update(overrides)
    if values["digest"] is None:  # one row per (source, digest): each record its own bytes
        values["digest"] = bidx(f"payload body {values['id']}")
    return InboxRecord(**values)


def merge_record(survivor: uuid.UUID, merged: uuid.UUID, **overrides: Any) -> MergeRecord:
    """A merge-journal entry: ``merged`` folded into ``survivor``."""
    values: dict[str, Any] = {
        "id": new_id(),
        "survivor_id": survivor,
        "merged_id": merged,
        "merged_at": at(0),
        "actor": "alice:admin",
        "reason": "duplicate",
        "details": {"moved": {"identities": 2, "interactions": 7}, "kept": ["email"]},
    }
    values.update(overrides)
    return MergeRecord(**values)


def audit_record(seq: int, **overrides: Any) -> AuditRecord:
    """Audit entry number ``seq``."""
    values: dict[str, Any] = {
        "seq": seq,
        "id": new_id(),
        "at": at(seq),
        "actor": "alice",
        "role": "coordinator",
        "action": "contact.read",
        "contact_id": new_id(),
        "purpose": "treatment",
        "fields": ["name", "email"],
        "details": {"via": "cli", "n": seq},
        "prev_hash": bidx(f"entry {seq - 1}") if seq > 1 else None,
        "hash": bidx(f"entry {seq}"),
    }
    values.update(overrides)
    return AuditRecord(**values)


def outbox_record(seq: int, **overrides: Any) -> OutboxRecord:
    """Outbox event number ``seq`` (an ``InteractionRecorded`` with ids and a time)."""
    values: dict[str, Any] = {
        "seq": seq,
        "at": at(seq),
        "kind": "InteractionRecorded",
        "data": {"contact_id": str(new_id()), "kind": "form.submitted", "occurred_at": at(seq).isoformat()},
    }
    values.update(overrides)
    return OutboxRecord(**values)


def assert_same_record(got: Any, expected: Any) -> None:
    """Assert ``got`` equals ``expected`` field by field, with the stored types.

    Datetimes must be timezone-aware UTC and equal to the millisecond; bytes must come
    back as ``bytes``; dicts and lists as equal JSON.
    """
    assert type(got) is type(expected), f"{type(got).__name__} returned for {type(expected).__name__}"
    for field in attrs.fields(type(expected)):
        value, want = getattr(got, field.name), getattr(expected, field.name)
        if isinstance(want, datetime):
            assert isinstance(value, datetime), f"{field.name}: {type(value).__name__}, not datetime"
            assert value.tzinfo is not None and value.utcoffset() == timedelta(0), (
                f"{field.name}: not timezone-aware UTC"
            )
            assert value == want, f"{field.name}: {value.isoformat()} != {want.isoformat()}"
        elif isinstance(want, bytes):
            assert type(value) is bytes, f"{field.name}: {type(value).__name__}, not bytes"
            assert value == want, f"{field.name}: bytes differ"
        elif isinstance(want, uuid.UUID):
            assert isinstance(value, uuid.UUID), f"{field.name}: {type(value).__name__}, not UUID"
            assert value == want, f"{field.name}: {value} != {want}"
        else:
            assert value == want, f"{field.name}: {value!r} != {want!r}"
            assert type(value) is type(want), f"{field.name}: {type(value).__name__} != {type(want).__name__}"


#: The contacts of the segment tests, by label, in id order (see
#: :meth:`StorageBackendContract.segment_world`); ``m`` (merged) and ``x`` (erased) match
#: many criteria but are never selected.
SEGMENT_CONTACTS: dict[str, dict[str, Any]] = {
    "a": {"stage": "new_lead", "service_interest": "acne", "city": "Chicago", "postal_prefix": "606",
          "score": 10.0, "owner": "alice", "location": "downtown", "pipeline": "default"},
    "b": {"stage": "new_lead", "service_interest": "botox", "city": "Evanston", "postal_prefix": "602",
          "score": 25.5, "owner": None, "location": "downtown", "pipeline": "default"},
    "c": {"stage": "contacted", "service_interest": "acne", "city": "Chicago", "postal_prefix": "606",
          "score": None, "owner": "bob", "location": "downtown", "pipeline": "default"},
    "d": {"stage": "booked_patient", "service_interest": "acne", "city": None, "postal_prefix": None,
          "score": 50.0, "owner": "alice", "location": "uptown", "pipeline": "default"},
    "e": {"stage": "new_lead", "service_interest": "acne", "city": "chicago", "postal_prefix": "60%",
          "score": 0.0, "owner": None, "location": "downtown", "pipeline": "mohs"},
    "m": {"stage": "new_lead", "service_interest": "acne", "city": "Chicago", "postal_prefix": "606",
          "score": 10.0, "owner": "alice", "location": "downtown", "pipeline": "default", "status": MERGED},
    "x": {"stage": "new_lead", "service_interest": "acne", "city": "Chicago", "postal_prefix": "606",
          "score": 10.0, "owner": "alice", "location": "downtown", "pipeline": "default", "status": ERASED,
          "wrapped_key": None, "pii_enc": None},
}  # fmt: skip

#: (label, kind, seconds after T0) of the segment tests' interactions.
SEGMENT_INTERACTIONS: tuple[tuple[str, str, float], ...] = (
    ("a", "form.submitted", 0),
    ("a", "email.opened", 100),
    ("a", "email.opened", 150),
    ("b", "email.opened", 50),
    ("c", "call.completed", 200),
    ("d", "email.clicked", 100),
    ("m", "email.opened", 100),
    ("x", "email.opened", 100),
)

_ALL = "abcde"
_OPENED = ("email.opened",)

#: Segment criteria and the labels they select, grouped by node type.
SEGMENT_CASES: dict[str, list[tuple[Criteria, str]]] = {
    "eq": [
        (Eq("stage", "new_lead"), "abe"),
        (Eq("owner", None), "be"),
        (Eq("city", None), "d"),
        (Eq("score", 10), "a"),
        (Eq("score", 25.5), "b"),
        (Eq("city", "Chicago"), "ac"),
        (Eq("city", "CHICAGO"), ""),
        (Eq("pipeline", "mohs"), "e"),
        (Eq("location", "uptown"), "d"),
        (Eq("stage", "no_such_stage"), ""),
    ],
    "in": [
        (In("city", ["Chicago", "Evanston"]), "abc"),
        (In("stage", ["contacted", "booked_patient"]), "cd"),
        (In("score", [0, 50.0]), "de"),
        (In("service_interest", ["botox"]), "b"),
        (In("city", []), ""),
    ],
    "range": [
        (Range("score", 10, 25.5), "ab"),
        (Range("score", None, 0), "e"),
        (Range("score", 25.5, None), "bd"),
        (Range("score", 10.5, 25.4), ""),
        (Range("score", -1e9, 1e9), "abde"),
    ],
    "prefix": [
        (Prefix("postal_prefix", "60"), "abce"),
        (Prefix("postal_prefix", "606"), "ac"),
        (Prefix("postal_prefix", "60%"), "e"),
        (Prefix("postal_prefix", "6_6"), ""),
        (Prefix("postal_prefix", "6%"), ""),
        (Prefix("city", "Chi"), "ac"),
        (Prefix("city", "chi"), "e"),
        (Prefix("city", "Chicago!"), ""),
        (Prefix("owner", "al"), "ad"),
    ],
    "had_interaction": [
        (HadInteraction(_OPENED, since=at(0)), "ab"),
        (HadInteraction(_OPENED, since=at(50)), "ab"),
        (HadInteraction(_OPENED, since=at(50.001)), "a"),
        (HadInteraction(_OPENED, since=at(151)), ""),
        (HadInteraction(_OPENED, since=at(0), until=at(100)), "b"),
        (HadInteraction(_OPENED, since=at(0), until=at(100.001)), "ab"),
        (HadInteraction(_OPENED, since=at(120), until=at(160)), "a"),
        (HadInteraction(("email.opened", "email.clicked"), since=at(60)), "ad"),
        (HadInteraction(("call.completed", "form.submitted"), since=at(-3600)), "ac"),
        (HadInteraction(("page.viewed",), since=at(-3600)), ""),
    ],
    "not": [
        (Not(Eq("city", "Chicago")), "bde"),
        (Not(Eq("owner", None)), "acd"),
        (Not(In("city", ["Chicago", "Evanston"])), "de"),
        (Not(In("city", [])), _ALL),
        (Not(Range("score", 10, None)), "ce"),
        (Not(Prefix("postal_prefix", "606")), "bde"),
        (Not(HadInteraction(_OPENED, since=at(0))), "cde"),
        (Not(Not(Eq("owner", "alice"))), "ad"),
        (~Eq("stage", "new_lead"), "cd"),
    ],
    "and_or": [
        (And(), _ALL),
        (Or(), ""),
        (Not(And()), ""),
        (Not(Or()), _ALL),
        (And((Eq("stage", "new_lead"),)), "abe"),
        (Or((Eq("stage", "contacted"), Eq("stage", "booked_patient"))), "cd"),
        (all_of(Eq("service_interest", "acne"), Eq("owner", "alice")), "ad"),
        (any_of(Eq("owner", "bob"), Range("score", 40, None)), "cd"),
        (Eq("stage", "new_lead") & Eq("city", "Chicago"), "a"),
        (Eq("stage", "contacted") | Eq("city", "Evanston"), "bc"),
    ],
    "combined": [
        (
            all_of(
                Eq("stage", "new_lead"),
                Eq("service_interest", "acne"),
                In("city", ["Chicago", "Evanston"]),
                HadInteraction(_OPENED, since=at(0)),
            ),
            "a",
        ),
        (any_of(Eq("stage", "contacted"), all_of(Eq("stage", "booked_patient"), Range("score", 40, None))), "cd"),
        (Not(any_of(Eq("stage", "new_lead"), Eq("owner", None))), "cd"),
        (all_of(any_of(Eq("city", "Chicago"), Eq("city", None)), Not(HadInteraction(_OPENED, since=at(0)))), "cd"),
        (
            any_of(
                HadInteraction(_OPENED, since=at(0), until=at(60)),
                all_of(Prefix("postal_prefix", "60"), Range("score", None, 5)),
            ),
            "be",
        ),
        (Not(all_of(Eq("service_interest", "acne"), Not(Eq("owner", "alice")))), "abd"),
        (all_of(HadInteraction(_OPENED, since=at(0)), HadInteraction(("form.submitted",), since=at(0))), "a"),
    ],
}
