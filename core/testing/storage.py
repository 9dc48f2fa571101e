"""The storage conformance suite: every rule of :mod:`carecrm.core.storage`, as pytest tests.

A backend passes this suite to be a carecrm backend (decisions.md, "Storage").  Subclass
:class:`StorageBackendContract` in a module named ``test_*.py`` and override the
``backend`` fixture::

    import pytest
    from carecrm.core.testing.storage import StorageBackendContract

    class TestMyBackend(StorageBackendContract):
        @pytest.fixture
        def backend(self, tmp_path):
            backend = MyBackend(f"mine://{tmp_path}")
            backend.create_schema()
            yield backend
            backend.close()

        @pytest.fixture
        def reopen_backend(self, backend):       # optional, see below
            opened = []
            def reopen():
                opened.append(MyBackend(backend_url))
                return opened[-1]
            yield reopen
            for b in opened:
                b.close()

Fixtures a subclass provides:

* ``backend`` (required): a fresh, empty backend whose schema is created
  (``create_schema()`` done), one per test; closed afterwards.
* ``reopen_backend`` (optional): a callable returning a *new* backend instance on the
  same database as ``backend``, the way the app opens it at start-up; tests of the
  open-time schema-version check skip without it.

The suite uses only the public interface (:mod:`carecrm.core.storage`,
:mod:`carecrm.core.records`, :mod:`carecrm.core.errors`), so it runs unchanged against
any backend.  The record builders (:func:`contact_record`, ...) are public too, for a
backend's own extra tests.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from carecrm.core.criteria import (
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
from carecrm.core.errors import ConflictError, DuplicateError, NotFound, SchemaVersionError, UnknownComponentError
from carecrm.core.ids import new_id
from carecrm.core.records import (
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
    TouchRecord,
)
from carecrm.core.storage import RECORD_KINDS, SCHEMA_VERSION, StorageBackend, UnitOfWork

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
        "id": new_id(),
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


class StorageBackendContract:
    """Conformance tests every storage backend passes (see the module docstring)."""

    #: False for a backend whose units of work cannot run in two threads at once (an
    #: in-memory SQLite database shares one connection): the concurrency tests skip.
    concurrent_units: bool = True

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def backend(self) -> Iterator[StorageBackend]:
        """A fresh, empty, schema-created backend per test.  Subclasses MUST override."""
        raise NotImplementedError("override the `backend` fixture in your StorageBackendContract subclass")
        yield  # pragma: no cover

    @pytest.fixture
    def reopen_backend(self, backend: StorageBackend) -> Callable[[], StorageBackend]:
        """A callable opening a new backend on ``backend``'s database.  Optional to override."""
        pytest.skip("no reopen_backend fixture: the open-time schema check is not tested")

    @pytest.fixture
    def second_backend(self) -> StorageBackend:
        """A second fresh, empty, schema-created backend of the same kind on another
        database, closed afterwards.  Optional to override."""
        pytest.skip("no second_backend fixture: whole-database copies into a second backend are not tested")

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def store(backend: StorageBackend, fill: Callable[[UnitOfWork], Any]) -> Any:
        """Run ``fill(uow)`` in a new unit of work and commit; returns what it returned."""
        with backend.unit_of_work() as uow:
            result = fill(uow)
            uow.commit()
        return result

    @staticmethod
    def read(backend: StorageBackend, query: Callable[[UnitOfWork], Any]) -> Any:
        """Run ``query(uow)`` in a new unit of work (rolled back) and return its result."""
        with backend.unit_of_work() as uow:
            return query(uow)

    def new_contact(self, backend: StorageBackend, **overrides: Any) -> ContactRecord:
        """Store and return a contact."""
        record = contact_record(**overrides)
        self.store(backend, lambda uow: uow.contacts.add(record))
        return record

    # ------------------------------------------------------------------ interface and schema

    def test_is_a_storage_backend(self, backend: StorageBackend) -> None:
        """The backend satisfies the StorageBackend protocol: name, url_display, capabilities."""
        assert isinstance(backend, StorageBackend)
        assert isinstance(backend.name, str) and backend.name
        assert isinstance(backend.url_display, str)
        assert isinstance(backend.capabilities, frozenset)

    def test_check_describes_a_reachable_backend(self, backend: StorageBackend) -> None:
        """check() pings and names ok, backend, server_version, schema_version, capabilities."""
        info = backend.check()
        for key in ("ok", "backend", "server_version", "schema_version", "capabilities"):
            assert key in info, f"check() lacks {key!r}"
        assert info["ok"] is True
        assert info["backend"] == backend.name
        assert info["schema_version"] == SCHEMA_VERSION

    def test_schema_version_is_current_after_create_schema(self, backend: StorageBackend) -> None:
        """After create_schema() the stored version is SCHEMA_VERSION and verify_schema() agrees."""
        assert backend.schema_version() == SCHEMA_VERSION
        assert backend.verify_schema() == SCHEMA_VERSION

    def test_create_schema_is_idempotent_and_keeps_data(self, backend: StorageBackend) -> None:
        """create_schema() on a current database changes nothing and loses nothing."""
        contact = self.new_contact(backend)
        backend.create_schema()
        assert backend.schema_version() == SCHEMA_VERSION
        assert_same_record(self.read(backend, lambda uow: uow.contacts.get(contact.id)), contact)

    def test_upgrade_of_a_current_database_applies_nothing(self, backend: StorageBackend) -> None:
        """upgrade() on a current database returns an empty list of steps."""
        assert backend.upgrade() == []
        assert backend.schema_version() == SCHEMA_VERSION

    def _set_stored_version(self, backend: StorageBackend, version: int) -> None:
        self.store(backend, lambda uow: uow.meta.set("schema_version", str(version)))

    def test_newer_schema_version_is_refused(self, backend: StorageBackend) -> None:
        """A database written by a newer carecrm is refused (verify, upgrade, create) and left untouched."""
        self._set_stored_version(backend, SCHEMA_VERSION + 1)
        assert backend.schema_version() == SCHEMA_VERSION + 1
        with pytest.raises(SchemaVersionError):
            backend.verify_schema()
        with pytest.raises(SchemaVersionError):
            backend.upgrade()
        with pytest.raises(SchemaVersionError):
            backend.create_schema()
        assert backend.schema_version() == SCHEMA_VERSION + 1, "a refused database must stay untouched"

    def test_newer_schema_version_is_refused_on_open(
        self, backend: StorageBackend, reopen_backend: Callable[[], StorageBackend]
    ) -> None:
        """Opening a newer database refuses the first unit of work with SchemaVersionError."""
        self._set_stored_version(backend, SCHEMA_VERSION + 1)
        reopened = reopen_backend()
        with pytest.raises(SchemaVersionError):
            with reopened.unit_of_work() as uow:
                uow.contacts.count()

    def test_older_schema_version_is_refused_until_upgraded(
        self, backend: StorageBackend, reopen_backend: Callable[[], StorageBackend]
    ) -> None:
        """An older database is refused until upgrade(), which keeps its data and works."""
        contact = self.new_contact(backend)
        self._set_stored_version(backend, SCHEMA_VERSION - 1)
        with pytest.raises(SchemaVersionError):
            backend.verify_schema()
        with pytest.raises(SchemaVersionError):
            with reopen_backend().unit_of_work() as uow:
                uow.contacts.count()
        with pytest.raises(SchemaVersionError):
            backend.create_schema()
        assert isinstance(backend.upgrade(), list)
        assert backend.schema_version() == SCHEMA_VERSION
        assert backend.verify_schema() == SCHEMA_VERSION
        assert_same_record(self.read(backend, lambda uow: uow.contacts.get(contact.id)), contact)
        with reopen_backend().unit_of_work() as uow:
            assert uow.contacts.count() == 1

    # ------------------------------------------------------------------ round trips

    def test_contact_round_trip(self, backend: StorageBackend) -> None:
        """Contacts round-trip field by field: every field set, every optional field None, merged."""
        full = self.new_contact(backend)
        minimal = contact_record(
            wrapped_key=None,
            pii_enc=None,
            name_bidx=None,
            family_name_bidx=None,
            key_version=None,
            name_confidence=None,
            stage_changed_at=None,
            service_interest=None,
            location=None,
            city=None,
            postal_prefix=None,
            owner=None,
            score=None,
            first_source=None,
        )
        merged = contact_record(status=MERGED, merged_into=full.id, score=-3.0)
        self.store(backend, lambda uow: uow.contacts.add_many([minimal, merged]))
        with backend.unit_of_work() as uow:
            for record in (full, minimal, merged):
                assert_same_record(uow.contacts.get(record.id), record)

    def test_identity_round_trip(self, backend: StorageBackend) -> None:
        """Identities (email, phone, external ids with a URL system) round-trip field by field."""
        contact = self.new_contact(backend)
        email = identity_record(contact.id, verified=True)
        phone = identity_record(
            contact.id, kind="phone", bidx=bidx("+13055550123"), valid=False, source=None, value_enc=None
        )
        external = identity_record(
            contact.id, kind="external:http://hl7.org/fhir/sid/us-mrn", bidx=bidx("mrn 1"), valid=True
        )

        def fill(uow: UnitOfWork) -> None:
            uow.identities.add(email)
            uow.identities.add_many([phone, external])

        self.store(backend, fill)
        got = self.read(backend, lambda uow: uow.identities.for_contact(contact.id))
        assert {r.id: r for r in got}.keys() == {email.id, phone.id, external.id}
        for record in (email, phone, external):
            assert_same_record(next(r for r in got if r.id == record.id), record)

    def test_interaction_round_trip(self, backend: StorageBackend) -> None:
        """Interactions round-trip, nested unicode JSON, bytes and optional Nones included."""
        contact = self.new_contact(backend)
        full = interaction_record(contact.id)
        bare = interaction_record(
            contact.id,
            channel=None,
            direction=None,
            location=None,
            campaign=None,
            channel_group=None,
            touchpoint={},
            attributes={},
            body_enc=None,
            actor="system",
            inbox_id=None,
        )

        def fill(uow: UnitOfWork) -> None:
            uow.interactions.add(full)
            uow.interactions.add(bare)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            for record in (full, bare):
                assert_same_record(uow.interactions.get(record.id), record)

    def test_stage_change_round_trip(self, backend: StorageBackend) -> None:
        """Stage changes round-trip and come back oldest first."""
        contact = self.new_contact(backend)
        first = stage_change_record(
            contact.id, from_stage=None, to_stage="new_lead", actor=None, reason=None, implied_by=None
        )
        second = stage_change_record(contact.id, changed_at=at(60))

        def fill(uow: UnitOfWork) -> None:
            uow.stages.add(second)
            uow.stages.add(first)

        self.store(backend, fill)
        got = self.read(backend, lambda uow: uow.stages.history(contact.id))
        assert len(got) == 2
        assert_same_record(got[0], first)
        assert_same_record(got[1], second)

    def test_appointment_round_trip(self, backend: StorageBackend) -> None:
        """An appointment stored through import_records() comes back unchanged and is counted."""
        contact = self.new_contact(backend)
        record = appointment_record(contact.id)
        self.store(backend, lambda uow: uow.import_records("appointments", [record]))
        assert_same_record(self.read(backend, lambda uow: list(uow.export_records("appointments")))[0], record)
        assert self.read(backend, lambda uow: uow.appointments.count()) == 1

    def test_consent_round_trip(self, backend: StorageBackend) -> None:
        """Consent events round-trip, one without a contact or evidence included."""
        record = consent_record()
        anonymous = consent_record(contact_id=None, evidence_enc=None, regime={}, expires_at=None)

        def fill(uow: UnitOfWork) -> None:
            uow.consents.add(record)
            uow.consents.add(anonymous)

        self.store(backend, fill)
        got = self.read(backend, lambda uow: uow.consents.for_contact_point(record.contact_point_bidx))
        by_id = {r.id: r for r in got}
        assert_same_record(by_id[record.id], record)
        assert_same_record(by_id[anonymous.id], anonymous)

    def test_note_round_trip(self, backend: StorageBackend) -> None:
        """Notes round-trip with their encrypted body."""
        contact = self.new_contact(backend)
        record = note_record(contact.id)
        self.store(backend, lambda uow: uow.notes.add(record))
        assert_same_record(self.read(backend, lambda uow: uow.notes.for_contact(contact.id))[0], record)

    def test_task_round_trip(self, backend: StorageBackend) -> None:
        """Tasks round-trip, with and without due time, assignee and body."""
        contact = self.new_contact(backend)
        record = task_record(contact.id)
        bare = task_record(contact.id, created_by=None, assignee=None, due_at=None, body_enc=None)

        def fill(uow: UnitOfWork) -> None:
            uow.tasks.add(record)
            uow.tasks.add(bare)

        self.store(backend, fill)
        assert_same_record(self.read(backend, lambda uow: uow.tasks.get(record.id)), record)
        assert_same_record(self.read(backend, lambda uow: uow.tasks.get(bare.id)), bare)

    def test_score_round_trip(self, backend: StorageBackend) -> None:
        """Scores round-trip with their JSON reasons and a full double-precision score."""
        contact = self.new_contact(backend)
        record = score_record(contact.id)
        self.store(backend, lambda uow: uow.scores.put(record))
        got = self.read(backend, lambda uow: uow.scores.get(contact.id, "rules"))
        assert_same_record(got, record)
        assert got.score == 0.1 + 0.2, "scores keep double precision"

    def test_review_round_trip(self, backend: StorageBackend) -> None:
        """A resolved review pair round-trips."""
        a, b = self.new_contact(backend), self.new_contact(backend)
        record = review_record(a.id, b.id, status="resolved", resolved_at=at(9), resolved_by="carol")
        assert self.store(backend, lambda uow: uow.reviews.add(record)) is True
        assert_same_record(self.read(backend, lambda uow: uow.reviews.list(status=None))[0], record)

    def test_segment_round_trip(self, backend: StorageBackend) -> None:
        """A saved segment round-trips with its nested definition."""
        record = segment_record()
        self.store(backend, lambda uow: uow.segments.put(record))
        assert_same_record(self.read(backend, lambda uow: uow.segments.get(record.name)), record)

    def test_inbox_round_trip(self, backend: StorageBackend) -> None:
        """Inbox payloads round-trip, one of 300 kB included (beyond a 64 KiB BLOB)."""
        record = inbox_record(reason="field 'email' missing", processed_at=at(3), attempts=2, status="quarantined")
        large = inbox_record(payload_enc=ciphertext("large", size=300_000))

        def fill(uow: UnitOfWork) -> None:
            uow.inbox.add(record)
            uow.inbox.add(large)

        self.store(backend, fill)
        assert_same_record(self.read(backend, lambda uow: uow.inbox.get(record.id)), record)
        assert_same_record(self.read(backend, lambda uow: uow.inbox.get(large.id)), large)

    def test_merge_round_trip(self, backend: StorageBackend) -> None:
        """A merge-journal entry stored through import_records() comes back unchanged."""
        record = merge_record(new_id(), new_id())
        self.store(backend, lambda uow: uow.import_records("merges", [record]))
        assert_same_record(self.read(backend, lambda uow: list(uow.export_records("merges")))[0], record)

    def test_audit_round_trip(self, backend: StorageBackend) -> None:
        """Audit entries round-trip, empty lists, dicts and Nones included."""
        first = audit_record(1, contact_id=None, purpose=None, fields=[], details={}, actor=None, role=None)
        second = audit_record(2)

        def fill(uow: UnitOfWork) -> None:
            uow.audit.append(first)
            uow.audit.append(second)

        self.store(backend, fill)
        got = self.read(backend, lambda uow: list(uow.audit.iter()))
        assert len(got) == 2
        assert_same_record(got[0], first)
        assert_same_record(got[1], second)

    def test_meta_get_and_set(self, backend: StorageBackend) -> None:
        """meta: None for a missing key, set() inserts then replaces, unicode kept."""
        assert self.read(backend, lambda uow: uow.meta.get("key_check")) is None
        self.store(backend, lambda uow: uow.meta.set("key_check", "abc"))
        self.store(backend, lambda uow: uow.meta.set("key_check", "déf ✓"))
        assert self.read(backend, lambda uow: uow.meta.get("key_check")) == "déf ✓"

    # ------------------------------------------------------------------ time

    def test_datetimes_come_back_utc_truncated_to_milliseconds(self, backend: StorageBackend) -> None:
        """Any aware datetime comes back as the same instant in UTC, cut (not rounded) to ms."""
        contact = self.new_contact(backend)
        plus_two = timezone(timedelta(hours=2))
        occurred = datetime(2024, 7, 1, 14, 30, 15, 987654, tzinfo=plus_two)
        record = interaction_record(contact.id, occurred_at=occurred, recorded_at=T0)
        self.store(backend, lambda uow: uow.interactions.add(record))
        got = self.read(backend, lambda uow: uow.interactions.get(record.id))
        assert got.occurred_at == datetime(2024, 7, 1, 12, 30, 15, 987000, tzinfo=UTC)
        assert got.occurred_at.utcoffset() == timedelta(0)
        assert got.recorded_at == T0 and got.recorded_at.microsecond == 123000

    def test_naive_datetime_is_refused(self, backend: StorageBackend) -> None:
        """A naive datetime, as a field or as a query argument, raises ValueError; nothing is stored."""
        naive = datetime(2024, 3, 1, 12, 0, 0)
        with backend.unit_of_work() as uow:
            with pytest.raises(ValueError):
                uow.contacts.add(contact_record(created_at=naive))
            with pytest.raises(ValueError):
                uow.tasks.list(due_before=naive)
            with pytest.raises(ValueError):
                uow.interactions.timeline(new_id(), after=(naive, new_id()))
        assert self.read(backend, lambda uow: uow.contacts.count()) == 0

    # ------------------------------------------------------------------ not found

    def test_missing_records_raise_not_found(self, backend: StorageBackend) -> None:
        """Every get / update / delete / set_status of a missing record raises NotFound."""
        missing = new_id()
        with backend.unit_of_work() as uow:
            lookups: list[Callable[[], Any]] = [
                lambda: uow.contacts.get(missing),
                lambda: uow.interactions.get(missing),
                lambda: uow.tasks.get(missing),
                lambda: uow.scores.get(missing, "rules"),
                lambda: uow.segments.get("nope"),
                lambda: uow.segments.delete("nope"),
                lambda: uow.inbox.get(missing),
                lambda: uow.inbox.set_status(missing, "processed"),
                lambda: uow.tasks.update(task_record(missing)),
                lambda: uow.contacts.update(contact_record(id=missing)),
            ]
            for lookup in lookups:
                with pytest.raises(NotFound):
                    lookup()

    # ------------------------------------------------------------------ duplicates

    def test_duplicate_interaction_key_is_refused(self, backend: StorageBackend) -> None:
        """A repeated (source, idempotency_key) is a DuplicateError naming no value; keys are case-sensitive."""
        contact = self.new_contact(backend)
        first = interaction_record(contact.id, idempotency_key="evt-1")
        self.store(backend, lambda uow: uow.interactions.add(first))
        with backend.unit_of_work() as uow:
            with pytest.raises(DuplicateError) as caught:
                uow.interactions.add(interaction_record(contact.id, idempotency_key="evt-1"))
            assert "evt-1" not in str(caught.value), "error messages never carry stored values"
            # Same key from another source, or another key from the same source: fine.
            uow.interactions.add(interaction_record(contact.id, idempotency_key="evt-1", source="calendly"))
            uow.interactions.add(interaction_record(contact.id, idempotency_key="EVT-1"))
            uow.commit()
        assert self.read(backend, lambda uow: uow.interactions.count()) == 3

    def test_duplicate_consent_key_is_refused(self, backend: StorageBackend) -> None:
        """A repeated consent (source, idempotency_key) raises DuplicateError."""
        self.store(backend, lambda uow: uow.consents.add(consent_record(idempotency_key="c-1")))
        with backend.unit_of_work() as uow:
            with pytest.raises(DuplicateError):
                uow.consents.add(consent_record(idempotency_key="c-1", status="revoked"))
        self.store(backend, lambda uow: uow.consents.add(consent_record(idempotency_key="c-1", source="twilio")))
        assert self.read(backend, lambda uow: uow.consents.count()) == 2

    def test_add_many_is_all_or_nothing(self, backend: StorageBackend) -> None:
        """add_many() with one duplicate stores none of the batch and leaves the unit of work usable."""
        contact = self.new_contact(backend)
        stored = interaction_record(contact.id, idempotency_key="k-stored")
        self.store(backend, lambda uow: uow.interactions.add(stored))
        batch = [interaction_record(contact.id, idempotency_key=f"k-{i}") for i in range(5)]
        batch.insert(3, interaction_record(contact.id, idempotency_key="k-stored"))
        with backend.unit_of_work() as uow:
            kept = interaction_record(contact.id, idempotency_key="k-before")
            uow.interactions.add(kept)
            with pytest.raises(DuplicateError):
                uow.interactions.add_many(batch)
            # The unit stays usable and keeps what it did before the failed batch.
            assert uow.interactions.existing_keys("typeform", [f"k-{i}" for i in range(5)]) == set()
            after = interaction_record(contact.id, idempotency_key="k-after")
            uow.interactions.add(after)
            uow.commit()
        keys = self.read(
            backend,
            lambda uow: uow.interactions.existing_keys(
                "typeform", ["k-stored", "k-before", "k-after"] + [f"k-{i}" for i in range(5)]
            ),
        )
        assert keys == {"k-stored", "k-before", "k-after"}

    def test_add_many_refuses_a_repeated_key_inside_the_batch(self, backend: StorageBackend) -> None:
        """A key repeated inside one add_many() batch is a DuplicateError too; nothing is stored."""
        contact = self.new_contact(backend)
        batch = [interaction_record(contact.id, idempotency_key=k) for k in ("a", "b", "a")]
        with backend.unit_of_work() as uow:
            with pytest.raises(DuplicateError):
                uow.interactions.add_many(batch)
            uow.commit()
        assert self.read(backend, lambda uow: uow.interactions.count()) == 0

    def test_duplicate_ids_and_keys_are_refused(self, backend: StorageBackend) -> None:
        """Duplicate contact ids, (contact, kind, bidx) identities and audit seqs raise DuplicateError."""
        contact = self.new_contact(backend)
        identity = identity_record(contact.id)

        def fill(uow: UnitOfWork) -> None:
            uow.identities.add(identity)
            uow.audit.append(audit_record(1))

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            with pytest.raises(DuplicateError):
                uow.contacts.add(contact_record(id=contact.id))
            with pytest.raises(DuplicateError):
                uow.identities.add(identity_record(contact.id))  # same (contact, kind, bidx)
            with pytest.raises(DuplicateError):
                uow.audit.append(audit_record(1))
            with pytest.raises(DuplicateError):
                uow.contacts.add_many([contact_record(), contact_record(id=contact.id)])
        assert self.read(backend, lambda uow: (uow.contacts.count(), uow.identities.count())) == (1, 1)

    def test_empty_add_many_is_a_no_op(self, backend: StorageBackend) -> None:
        """add_many([]) stores nothing and raises nothing."""

        def fill(uow: UnitOfWork) -> None:
            uow.contacts.add_many([])
            uow.interactions.add_many([])
            uow.identities.add_many([])

        self.store(backend, fill)
        assert self.read(backend, lambda uow: uow.contacts.count()) == 0

    # ------------------------------------------------------------------ concurrency

    def test_update_uses_optimistic_concurrency(self, backend: StorageBackend) -> None:
        """update() bumps the version; an update based on a stale version raises ConflictError."""
        contact = self.new_contact(backend, stage="new_lead")
        moved = attrs.evolve(contact, stage="contacted", updated_at=at(100))
        stored = self.store(backend, lambda uow: uow.contacts.update(moved))
        assert stored.version == contact.version + 1
        assert_same_record(stored, attrs.evolve(moved, version=2))
        stale = attrs.evolve(contact, stage="lost")  # still says version 1
        with backend.unit_of_work() as uow:
            with pytest.raises(ConflictError):
                uow.contacts.update(stale)
        got = self.read(backend, lambda uow: uow.contacts.get(contact.id))
        assert (got.version, got.stage) == (2, "contacted")
        again = self.store(backend, lambda uow: uow.contacts.update(attrs.evolve(got, status=ERASED, pii_enc=None)))
        assert again.version == 3
        assert_same_record(self.read(backend, lambda uow: uow.contacts.get(contact.id)), again)

    # ------------------------------------------------------------------ transactions

    def test_leaving_without_commit_rolls_back(self, backend: StorageBackend) -> None:
        """Leaving the with-block without commit() stores nothing."""
        with backend.unit_of_work() as uow:
            uow.contacts.add(contact_record())
            uow.meta.set("x", "1")
        assert self.read(backend, lambda uow: (uow.contacts.count(), uow.meta.get("x"))) == (0, None)

    def test_an_exception_rolls_back_and_propagates(self, backend: StorageBackend) -> None:
        """An exception rolls back what was not committed and propagates."""

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with backend.unit_of_work() as uow:
                uow.contacts.add(contact_record())
                uow.commit()
                uow.contacts.add(contact_record())
                raise Boom
        assert self.read(backend, lambda uow: uow.contacts.count()) == 1

    def test_explicit_rollback_then_commit(self, backend: StorageBackend) -> None:
        """rollback() undoes since the last commit; the unit stays usable after commit() and rollback()."""
        kept = contact_record()
        with backend.unit_of_work() as uow:
            uow.contacts.add(contact_record())
            uow.rollback()
            uow.contacts.add(kept)
            uow.commit()
            uow.contacts.add(contact_record())
        got = self.read(backend, lambda uow: uow.contacts.list())
        assert [c.id for c in got] == [kept.id]

    def test_committed_work_is_visible_to_a_new_unit(self, backend: StorageBackend) -> None:
        """What a unit commits, the next unit reads."""
        record = contact_record()
        self.store(backend, lambda uow: uow.contacts.add(record))
        assert self.read(backend, lambda uow: uow.contacts.get_many([record.id])) == {record.id: record}

    # ------------------------------------------------------------------ timeline

    def _timeline_fixture(self, backend: StorageBackend) -> tuple[ContactRecord, list[InteractionRecord]]:
        contact = self.new_contact(backend)
        other = self.new_contact(backend)
        kinds = ["form.submitted", "email.opened", "call.completed"]
        records = [
            interaction_record(contact.id, occurred_at=at(seconds), kind=kinds[i % 3])
            for i, seconds in enumerate([5, 1, 3, 3, 3, 3, 2, 9, 3.001])
        ]
        records += [interaction_record(other.id, occurred_at=at(s)) for s in (0, 3, 4)]
        shuffled = records[:]
        random.Random(7).shuffle(shuffled)
        self.store(backend, lambda uow: uow.interactions.add_many(shuffled))
        mine = sorted((r for r in records if r.contact_id == contact.id), key=lambda r: (r.occurred_at, r.id))
        return contact, mine

    def test_timeline_order_breaks_ties_by_id(self, backend: StorageBackend) -> None:
        """The timeline is ordered by (occurred_at, id): ties on time are broken by id."""
        contact, expected = self._timeline_fixture(backend)
        got = self.read(backend, lambda uow: uow.interactions.timeline(contact.id))
        assert [r.id for r in got] == [r.id for r in expected]
        assert_same_record(got[0], expected[0])

    def test_timeline_keyset_pagination(self, backend: StorageBackend) -> None:
        """Keyset pages (after=(occurred_at, id) of the last row) cover the timeline exactly once, across ties."""
        contact, expected = self._timeline_fixture(backend)
        pages: list[list[InteractionRecord]] = []
        cursor = None
        with backend.unit_of_work() as uow:
            while True:
                page = uow.interactions.timeline(contact.id, after=cursor, limit=2)
                if not page:
                    break
                pages.append(page)
                cursor = (page[-1].occurred_at, page[-1].id)
        assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
        assert [r.id for p in pages for r in p] == [r.id for r in expected]

    def test_timeline_kinds_filter(self, backend: StorageBackend) -> None:
        """kinds= restricts the timeline, also across pages."""
        contact, expected = self._timeline_fixture(backend)
        wanted = ["email.opened", "call.completed"]
        got = self.read(backend, lambda uow: uow.interactions.timeline(contact.id, kinds=wanted))
        assert [r.id for r in got] == [r.id for r in expected if r.kind in wanted]
        first = self.read(backend, lambda uow: uow.interactions.timeline(contact.id, kinds=wanted, limit=2))
        rest = self.read(
            backend,
            lambda uow: uow.interactions.timeline(
                contact.id, kinds=wanted, after=(first[-1].occurred_at, first[-1].id)
            ),
        )
        assert [r.id for r in first + rest] == [r.id for r in got]
        assert self.read(backend, lambda uow: uow.interactions.timeline(contact.id, kinds=["page.viewed"])) == []

    def test_existing_keys_in_large_batches(self, backend: StorageBackend) -> None:
        """existing_keys() answers for more keys than fit one IN list, per source."""
        contact = self.new_contact(backend)
        stored = [interaction_record(contact.id, idempotency_key=f"key-{i:05d}") for i in range(0, 1400, 2)]
        self.store(backend, lambda uow: uow.interactions.add_many(stored))
        asked = [f"key-{i:05d}" for i in range(1400)]
        got = self.read(backend, lambda uow: uow.interactions.existing_keys("typeform", asked))
        assert got == {r.idempotency_key for r in stored}
        assert self.read(backend, lambda uow: uow.interactions.existing_keys("calendly", asked)) == set()
        assert self.read(backend, lambda uow: uow.interactions.existing_keys("typeform", [])) == set()
        assert self.read(backend, lambda uow: uow.interactions.count()) == 700

    # speed to lead: first inbound, first outbound at or after it

    _IN = ("form.submitted", "call.missed", "call.completed")
    _OUT = ("call.completed", "sms.sent", "email.sent")

    def _first_response_fixture(self, backend: StorageBackend) -> dict[str, ContactRecord]:
        people = {label: self.new_contact(backend) for label in ("answered", "waiting", "outbound_only", "other")}
        rows = [
            # an email before the inquiry does not answer it; a call out after it does
            ("answered", "email.sent", "outbound", 5),
            ("answered", "form.submitted", "inbound", 10),
            ("answered", "form.submitted", "inbound", 12),
            ("answered", "email.opened", "outbound", 15),  # not an answer kind
            ("answered", "call.completed", None, 16),  # unknown direction never counts
            ("answered", "call.completed", "outbound", 40.5),
            ("answered", "sms.sent", "outbound", 90),
            # an inbound call that was missed starts the clock; only the inbound side so far
            ("waiting", "call.missed", "inbound", 20),
            ("waiting", "call.completed", "inbound", 30),
            ("waiting", "page.viewed", "inbound", 1),  # not an inbound kind asked for
            ("outbound_only", "email.sent", "outbound", 3),
            # an answer at the very same millisecond counts
            ("other", "form.submitted", "inbound", 7),
            ("other", "sms.sent", "outbound", 7),
        ]
        records = [
            interaction_record(people[label].id, kind=kind, direction=direction, occurred_at=at(seconds))
            for label, kind, direction, seconds in rows
        ]
        random.Random(3).shuffle(records)
        self.store(backend, lambda uow: uow.interactions.add_many(records))
        return people

    def test_first_responses_per_contact(self, backend: StorageBackend) -> None:
        """first_responses(): first inbound of the asked kinds, then the first outbound answer at or after it."""
        people = self._first_response_fixture(backend)
        got = self.read(
            backend, lambda uow: uow.interactions.first_responses(inbound_kinds=self._IN, outbound_kinds=self._OUT)
        )
        by_id = {r.contact_id: r for r in got}
        assert [r.contact_id for r in got] == sorted(by_id)
        assert set(by_id) == {people[k].id for k in ("answered", "waiting", "other")}
        answered = by_id[people["answered"].id]
        assert (answered.first_inbound_at, answered.first_outbound_at) == (at(10), at(40.5))
        assert answered.first_inbound_at.tzinfo is not None and answered.first_outbound_at is not None
        assert answered.first_outbound_at.utcoffset() == timedelta(0)
        waiting = by_id[people["waiting"].id]
        assert (waiting.first_inbound_at, waiting.first_outbound_at) == (at(20), None)
        other = by_id[people["other"].id]
        assert (other.first_inbound_at, other.first_outbound_at) == (at(7), at(7))

    def test_first_responses_filters(self, backend: StorageBackend) -> None:
        """first_responses(): contact_ids restricts ([] is nothing); the kinds decide what counts."""
        people = self._first_response_fixture(backend)
        ids = [people["answered"].id, people["outbound_only"].id, new_id()]
        got = self.read(
            backend,
            lambda uow: uow.interactions.first_responses(
                inbound_kinds=self._IN, outbound_kinds=self._OUT, contact_ids=ids
            ),
        )
        assert [(r.contact_id, r.first_inbound_at, r.first_outbound_at) for r in got] == [
            (people["answered"].id, at(10), at(40.5))
        ]
        none = self.read(
            backend,
            lambda uow: uow.interactions.first_responses(
                inbound_kinds=self._IN, outbound_kinds=self._OUT, contact_ids=[]
            ),
        )
        assert none == []
        # only SMS answers: the call out no longer counts
        sms = self.read(
            backend,
            lambda uow: uow.interactions.first_responses(
                inbound_kinds=["form.submitted"], outbound_kinds=["sms.sent"], contact_ids=[people["answered"].id]
            ),
        )
        assert [(r.first_inbound_at, r.first_outbound_at) for r in sms] == [(at(10), at(90))]
        nothing_out = self.read(
            backend,
            lambda uow: uow.interactions.first_responses(inbound_kinds=["call.missed"], outbound_kinds=[]),
        )
        assert [(r.contact_id, r.first_outbound_at) for r in nothing_out] == [(people["waiting"].id, None)]
        empty = self.read(
            backend, lambda uow: uow.interactions.first_responses(inbound_kinds=[], outbound_kinds=self._OUT)
        )
        assert empty == []

    def test_first_responses_in_chunks(self, backend: StorageBackend) -> None:
        """first_responses() answers for more contact ids than fit one IN list."""
        contacts = [contact_record(id=new_id()) for _ in range(1100)]
        self.store(backend, lambda uow: uow.contacts.add_many(contacts))
        records = [interaction_record(c.id, occurred_at=at(i)) for i, c in enumerate(contacts)]
        records += [
            interaction_record(c.id, kind="sms.sent", direction="outbound", occurred_at=at(i + 60))
            for i, c in enumerate(contacts)
            if i % 2 == 0
        ]
        self.store(backend, lambda uow: uow.interactions.add_many(records))
        got = self.read(
            backend,
            lambda uow: uow.interactions.first_responses(
                inbound_kinds=["form.submitted"], outbound_kinds=["sms.sent"], contact_ids=[c.id for c in contacts]
            ),
        )
        assert [r.contact_id for r in got] == sorted(c.id for c in contacts)
        index = {c.id: i for i, c in enumerate(contacts)}
        for r in got:
            i = index[r.contact_id]
            assert r.first_inbound_at == at(i)
            assert r.first_outbound_at == (at(i + 60) if i % 2 == 0 else None)

    # ------------------------------------------------------------------ attribution journeys

    def test_iter_touches_order_kinds_direction_and_bounds(self, backend: StorageBackend) -> None:
        """iter_touches() streams kinds by (contact_id, occurred_at, id) across contacts, skips
        outbound rows of skip_outbound kinds (unknown direction kept), bounds occurred_at
        [after, before), and returns the clear marketing fields as TouchRecords."""
        a, b, c = sorted([new_id(), new_id(), new_id()])
        for cid in (a, b, c):
            self.new_contact(backend, id=cid)
        calls = ["call.completed", "call.missed"]
        rows = [
            interaction_record(a, kind="form.submitted", occurred_at=at(5)),
            interaction_record(a, kind="page.viewed", occurred_at=at(1), direction=None),
            interaction_record(a, kind="email.opened", occurred_at=at(2)),
            interaction_record(a, kind="call.completed", occurred_at=at(3), direction="outbound"),
            interaction_record(a, kind="call.completed", occurred_at=at(4), direction="inbound"),
            interaction_record(a, kind="call.missed", occurred_at=at(4), direction=None),
            interaction_record(b, kind="form.submitted", occurred_at=at(0)),
            interaction_record(b, kind="form.submitted", occurred_at=at(10), direction="outbound"),
            interaction_record(c, kind="email.sent", occurred_at=at(1), direction="outbound"),
        ]
        shuffled = rows[:]
        random.Random(11).shuffle(shuffled)
        self.store(backend, lambda uow: uow.interactions.add_many(shuffled))
        kinds = ["form.submitted", "page.viewed", *calls]
        expected = sorted(
            (r for r in rows if r.kind in kinds and not (r.kind in calls and r.direction == "outbound")),
            key=lambda r: (r.contact_id, r.occurred_at, r.id),
        )
        got = self.read(backend, lambda uow: list(uow.interactions.iter_touches(kinds, skip_outbound=calls)))
        assert [r.id for r in got] == [r.id for r in expected]
        for record, want in zip(got, expected, strict=True):
            assert_same_record(
                record,
                TouchRecord(
                    id=want.id,
                    contact_id=want.contact_id,
                    kind=want.kind,
                    occurred_at=want.occurred_at,
                    channel=want.channel,
                    direction=want.direction,
                    campaign=want.campaign,
                    channel_group=want.channel_group,
                    touchpoint=want.touchpoint,
                ),
            )
        # an outbound row of a kind not in skip_outbound is kept
        assert rows[7].id in {r.id for r in got}
        # without skip_outbound, the outbound call comes back too
        plain = self.read(backend, lambda uow: list(uow.interactions.iter_touches(["call.completed"])))
        assert [r.id for r in plain] == [rows[3].id, rows[4].id]
        bounded = self.read(
            backend,
            lambda uow: list(
                uow.interactions.iter_touches(kinds, skip_outbound=calls, occurred_after=at(4), occurred_before=at(10))
            ),
        )
        assert [r.id for r in bounded] == [r.id for r in expected if at(4) <= r.occurred_at < at(10)]
        assert {r.id for r in bounded} >= {rows[4].id, rows[5].id, rows[0].id}, "the lower bound is included"
        assert rows[7].id not in {r.id for r in bounded}, "the upper bound is excluded"
        assert self.read(backend, lambda uow: list(uow.interactions.iter_touches([]))) == []
        assert self.read(backend, lambda uow: list(uow.interactions.iter_touches(["payment.received"]))) == []
        with backend.unit_of_work() as uow, pytest.raises(ValueError):
            list(uow.interactions.iter_touches(kinds, occurred_after=datetime(2024, 3, 1)))

    def test_iter_touches_streams_many_rows_beside_other_statements(self, backend: StorageBackend) -> None:
        """Thousands of rows with tied times come back exactly once, in order, while the
        stage-history stream and other statements run in the same unit of work between rows."""
        ids = sorted(new_id() for _ in range(3))
        for cid in ids:
            self.new_contact(backend, id=cid)
        rows = [
            interaction_record(
                ids[i % 3],
                kind="page.viewed" if i % 4 else "form.submitted",
                occurred_at=at(i // 7),
                touchpoint={},
                attributes={},
                body_enc=None,
                inbox_id=None,
            )
            for i in range(2500)
        ]
        self.store(backend, lambda uow: uow.interactions.add_many(rows))
        changes = [stage_change_record(cid, changed_at=at(s)) for cid in ids for s in (0, 1)]

        def fill(uow: UnitOfWork) -> None:
            for change in changes:
                uow.stages.add(change)

        self.store(backend, fill)
        expected = sorted(rows, key=lambda r: (r.contact_id, r.occurred_at, r.id))
        got: list[uuid.UUID] = []
        with backend.unit_of_work() as uow:
            stages = uow.stages.first_reached(["contacted"])
            seen_stages = 0
            for n, record in enumerate(uow.interactions.iter_touches(["page.viewed", "form.submitted"])):
                got.append(record.id)
                if n % 400 == 0:
                    uow.contacts.get(record.contact_id)
                    if next(stages, None) is not None:
                        seen_stages += 1
        assert got == [r.id for r in expected]
        assert seen_stages == len(ids)

    def test_first_reached_groups_filters_and_pages(self, backend: StorageBackend) -> None:
        """first_reached() gives each contact's earliest change into any of the stages, in
        contact-id order, by pipeline; the window applies to that first entry only."""
        a, b, c, d = sorted(new_id() for _ in range(4))
        booked = ["booked_patient", "returning_patient"]
        changes = [
            stage_change_record(a, to_stage="new_lead", changed_at=at(0)),
            stage_change_record(a, to_stage="returning_patient", changed_at=at(9)),
            stage_change_record(a, to_stage="booked_patient", changed_at=at(5)),
            stage_change_record(b, to_stage="booked_patient", changed_at=at(3)),
            stage_change_record(b, to_stage="booked_patient", changed_at=at(20)),  # re-entry
            stage_change_record(c, to_stage="contacted", changed_at=at(1)),
            stage_change_record(d, to_stage="booked_patient", changed_at=at(7), pipeline="implants"),
        ]
        self.store(backend, lambda uow: uow.stages.add_many(changes))

        def reached(**kwargs: Any) -> list[tuple[uuid.UUID, datetime]]:
            with backend.unit_of_work() as uow:
                return [(r.contact_id, r.reached_at) for r in uow.stages.first_reached(booked, **kwargs)]

        assert reached() == [(a, at(5)), (b, at(3)), (d, at(7))]
        assert reached(pipeline="default") == [(a, at(5)), (b, at(3))]
        assert reached(pipeline="implants") == [(d, at(7))]
        assert reached(reached_from=at(5)) == [(a, at(5)), (d, at(7))], "b's re-entry at 20 does not count"
        assert reached(reached_before=at(5)) == [(b, at(3))], "the upper bound is excluded"
        assert reached(reached_from=at(4), reached_before=at(7), pipeline="default") == [(a, at(5))]
        assert self.read(backend, lambda uow: list(uow.stages.first_reached([]))) == []
        with backend.unit_of_work() as uow, pytest.raises(ValueError):
            list(uow.stages.first_reached(booked, reached_from=datetime(2024, 3, 1)))

    def test_first_reached_streams_thousands_of_contacts(self, backend: StorageBackend) -> None:
        """Every contact comes back once, in id order, while other statements run between rows."""
        ids = sorted(new_id() for _ in range(6000))
        changes = [
            stage_change_record(cid, to_stage="booked_patient", changed_at=at(i % 50)) for i, cid in enumerate(ids)
        ]
        self.store(backend, lambda uow: uow.stages.add_many(changes))
        got = []
        with backend.unit_of_work() as uow:
            for n, record in enumerate(uow.stages.first_reached(["booked_patient"])):
                got.append(record.contact_id)
                if n % 2500 == 0:
                    uow.stages.history(record.contact_id)
        assert got == ids

    # ------------------------------------------------------------------ identities

    def test_blind_indexes_are_not_unique_across_contacts(self, backend: StorageBackend) -> None:
        """Two contacts may share a phone blind index; find() returns both, oldest first."""
        mother = self.new_contact(backend, created_at=at(0))
        son = self.new_contact(backend, created_at=at(10))
        shared = bidx("+13055550123")
        first = identity_record(mother.id, kind="phone", bidx=shared, created_at=at(0))
        second = identity_record(son.id, kind="phone", bidx=shared, created_at=at(10))
        self.store(backend, lambda uow: uow.identities.add_many([second, first]))
        got = self.read(backend, lambda uow: uow.identities.find("phone", shared))
        assert [r.contact_id for r in got] == [mother.id, son.id]
        assert self.read(backend, lambda uow: uow.identities.find("email", shared)) == []

    def test_find_many(self, backend: StorageBackend) -> None:
        """find_many() matches exact (kind, bidx) pairs only, for many pairs at once."""
        a, b = self.new_contact(backend), self.new_contact(backend)
        a_email = identity_record(a.id, kind="email", bidx=bidx("a@x.org"))
        a_phone = identity_record(a.id, kind="phone", bidx=bidx("+1305"))
        b_phone = identity_record(b.id, kind="phone", bidx=bidx("+1305"), created_at=at(5))
        b_ext = identity_record(b.id, kind="external:meta", bidx=bidx("lead 9"))
        self.store(backend, lambda uow: uow.identities.add_many([a_email, a_phone, b_phone, b_ext]))
        keys = [
            ("email", bidx("a@x.org")),
            ("phone", bidx("+1305")),
            ("phone", bidx("a@x.org")),
            ("email", bidx("nobody")),
            ("external:meta", bidx("lead 9")),
        ]
        keys += [("email", bidx(f"filler {i}")) for i in range(1100)]
        got = self.read(backend, lambda uow: uow.identities.find_many(keys))
        assert {r.id for r in got} == {a_email.id, a_phone.id, b_phone.id, b_ext.id}
        assert self.read(backend, lambda uow: uow.identities.find_many([])) == []

    # ------------------------------------------------------------------ contacts

    def test_find_contacts_by_name_blind_index(self, backend: StorageBackend) -> None:
        """find_by_name / find_by_family_name return active contacts only, oldest first."""
        name, family = bidx("name:ana lima"), bidx("family:lima")
        older = self.new_contact(backend, name_bidx=name, family_name_bidx=family, created_at=at(0))
        newer = self.new_contact(backend, name_bidx=name, family_name_bidx=family, created_at=at(50))
        self.new_contact(backend, name_bidx=name, family_name_bidx=family, status=MERGED, merged_into=older.id)
        cousin = self.new_contact(backend, name_bidx=bidx("name:rui lima"), family_name_bidx=family, created_at=at(20))
        got = self.read(backend, lambda uow: uow.contacts.find_by_name(name))
        assert [c.id for c in got] == [older.id, newer.id]
        got = self.read(backend, lambda uow: uow.contacts.find_by_family_name(family))
        assert [c.id for c in got] == [older.id, cousin.id, newer.id]
        assert self.read(backend, lambda uow: uow.contacts.find_by_name(bidx("nobody"))) == []

    def test_list_and_count_contacts(self, backend: StorageBackend) -> None:
        """list() pages active contacts in id order by stage; counts; get_many() skips missing ids."""
        ids = sorted(new_id() for _ in range(6))
        stages = ["new_lead", "contacted", "new_lead", "new_lead", "booked_patient", "new_lead"]
        records = [contact_record(id=i, stage=s) for i, s in zip(ids, stages, strict=True)]
        records[3] = attrs.evolve(records[3], status=ERASED, pii_enc=None, wrapped_key=None)
        self.store(backend, lambda uow: uow.contacts.add_many(list(reversed(records))))
        with backend.unit_of_work() as uow:
            assert [c.id for c in uow.contacts.list()] == [ids[0], ids[1], ids[2], ids[4], ids[5]]
            assert [c.id for c in uow.contacts.list(stage="new_lead")] == [ids[0], ids[2], ids[5]]
            assert [c.id for c in uow.contacts.list(stage="new_lead", after=ids[0], limit=1)] == [ids[2]]
            assert [c.id for c in uow.contacts.list(after=ids[4])] == [ids[5]]
            assert uow.contacts.count() == 6
            found = uow.contacts.get_many([ids[0], new_id(), ids[3], ids[0]])
            assert set(found) == {ids[0], ids[3]}
            assert_same_record(found[ids[3]], records[3])

    # ------------------------------------------------------------------ stages, appointments

    def test_stage_history(self, backend: StorageBackend) -> None:
        """history() is per contact oldest first, whatever the pipeline; count() counts every change."""
        a, b = sorted([new_id(), new_id()])
        changes = [
            stage_change_record(b, changed_at=at(1)),
            stage_change_record(a, changed_at=at(9), pipeline="implants"),
            stage_change_record(a, changed_at=at(2)),
            stage_change_record(b, changed_at=at(0), from_stage=None, to_stage="new_lead"),
        ]

        def fill(uow: UnitOfWork) -> None:
            for c in changes:
                uow.stages.add(c)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            assert [c.changed_at for c in uow.stages.history(b)] == [at(0), at(1)]
            assert [(c.changed_at, c.pipeline) for c in uow.stages.history(a)] == [
                (at(2), "default"),
                (at(9), "implants"),
            ]
            assert uow.stages.count() == 4

    # ------------------------------------------------------------------ consents, notes, tasks

    def test_consent_ledger_queries(self, backend: StorageBackend) -> None:
        """The ledger is queried by contact point (and channel, purpose) or by contact, by time."""
        phone, email = bidx("+13055550123"), bidx("a@x.org")
        contact = new_id()
        events = [
            consent_record(contact_point_bidx=phone, occurred_at=at(5), status="revoked", contact_id=contact),
            consent_record(contact_point_bidx=phone, occurred_at=at(1), contact_id=contact),
            consent_record(contact_point_bidx=phone, channel="phone", purpose="treatment", occurred_at=at(3)),
            consent_record(contact_point_bidx=email, channel="email", occurred_at=at(2), contact_id=contact),
        ]

        def fill(uow: UnitOfWork) -> None:
            for e in events:
                uow.consents.add(e)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            assert [e.occurred_at for e in uow.consents.for_contact_point(phone)] == [at(1), at(3), at(5)]
            sms = uow.consents.for_contact_point(phone, channel="sms", purpose="marketing")
            assert [e.status for e in sms] == ["granted", "revoked"]
            assert [e.id for e in uow.consents.for_contact_point(phone, purpose="treatment")] == [events[2].id]
            assert [e.id for e in uow.consents.for_contact(contact)] == [events[1].id, events[3].id, events[0].id]
            assert uow.consents.count() == 4

    def test_notes_oldest_first(self, backend: StorageBackend) -> None:
        """A contact's notes come back oldest first."""
        contact = self.new_contact(backend)
        notes = [note_record(contact.id, created_at=at(s)) for s in (3, 1, 2)]

        def fill(uow: UnitOfWork) -> None:
            for n in notes:
                uow.notes.add(n)

        self.store(backend, fill)
        got = self.read(backend, lambda uow: uow.notes.for_contact(contact.id))
        assert [n.created_at for n in got] == [at(1), at(2), at(3)]
        assert self.read(backend, lambda uow: uow.notes.for_contact(new_id())) == []

    def test_task_update_and_filters(self, backend: StorageBackend) -> None:
        """Task filters combine; order is due time (unknown last) then id; update() replaces."""
        a, b = new_id(), new_id()
        ids = sorted(new_id() for _ in range(5))
        tasks = [
            task_record(a, id=ids[4], assignee="bob", due_at=at(100)),
            task_record(a, id=ids[1], assignee="bob", due_at=None),
            task_record(b, id=ids[2], assignee="bob", due_at=at(50)),
            task_record(b, id=ids[3], assignee="eve", due_at=at(50)),
            task_record(a, id=ids[0], assignee="eve", due_at=None, status="done"),
        ]

        def fill(uow: UnitOfWork) -> None:
            for t in tasks:
                uow.tasks.add(t)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            assert [t.id for t in uow.tasks.list()] == [ids[2], ids[3], ids[4], ids[0], ids[1]]
            assert [t.id for t in uow.tasks.list(assignee="bob")] == [ids[2], ids[4], ids[1]]
            assert [t.id for t in uow.tasks.list(contact_id=a, status="open")] == [ids[4], ids[1]]
            assert [t.id for t in uow.tasks.list(due_before=at(100))] == [ids[2], ids[3]]
            assert [t.id for t in uow.tasks.list(assignee="eve", status="done")] == [ids[0]]
            done = attrs.evolve(tasks[0], status="done", completed_at=at(90), completed_by="bob")
            uow.tasks.update(done)
            uow.tasks.update(done)  # the same values again is not "not found"
            uow.commit()
        assert_same_record(self.read(backend, lambda uow: uow.tasks.get(ids[4])), done)

    # ------------------------------------------------------------------ scores, reviews, segments

    def test_scores_put_replaces_per_contact_and_model(self, backend: StorageBackend) -> None:
        """put() replaces per (contact, model); another model's score of the same contact stays."""
        ids = sorted(new_id() for _ in range(4))
        with backend.unit_of_work() as uow:
            uow.scores.put(score_record(ids[0], score=10.0))
            uow.scores.put(score_record(ids[1], score=30.0))
            uow.scores.put(score_record(ids[2], score=20.0))
            uow.scores.put(score_record(ids[3], score=30.0))
            uow.scores.put(score_record(ids[0], score=99.5, reasons=[], computed_at=at(9)))
            uow.scores.put(score_record(ids[0], score=99.5, reasons=[], computed_at=at(9)))
            uow.scores.put(score_record(ids[2], model="ml", score=1000.0))
            uow.commit()
        with backend.unit_of_work() as uow:
            assert [uow.scores.get(i, "rules").score for i in ids] == [99.5, 30.0, 20.0, 30.0]
            assert_same_record(
                uow.scores.get(ids[0], "rules"), score_record(ids[0], score=99.5, reasons=[], computed_at=at(9))
            )
            assert uow.scores.get(ids[2], "ml").score == 1000.0
            with pytest.raises(NotFound):
                uow.scores.get(ids[0], "ml")

    def test_scores_put_many_upserts_and_keeps_the_last_of_a_repeated_key(self, backend: StorageBackend) -> None:
        """put_many() inserts and replaces by (contact, model) in one call; a key given twice
        keeps the last; an empty list is a no-op; reasons round-trip."""
        ids = sorted(new_id() for _ in range(3))
        self.store(backend, lambda uow: uow.scores.put(score_record(ids[0], score=1.0)))
        batch = [
            score_record(ids[0], score=5.5, reasons=[{"rule": "é", "points": 5.5}], computed_at=at(7)),
            score_record(ids[1], score=2.0),
            score_record(ids[2], score=3.0),
            score_record(ids[2], score=4.0, computed_at=at(8)),
            score_record(ids[1], model="ml", score=9.0),
        ]
        self.store(backend, lambda uow: uow.scores.put_many(batch))
        self.store(backend, lambda uow: uow.scores.put_many([]))
        assert_same_record(self.read(backend, lambda uow: uow.scores.get(ids[0], "rules")), batch[0])
        assert_same_record(self.read(backend, lambda uow: uow.scores.get(ids[2], "rules")), batch[3])
        got = self.read(backend, lambda uow: [uow.scores.get(i, "rules") for i in ids[:3]])
        assert [(s.contact_id, s.score) for s in got] == [(ids[0], 5.5), (ids[1], 2.0), (ids[2], 4.0)]
        assert self.read(backend, lambda uow: uow.scores.get(ids[1], "ml")).score == 9.0

    def test_scores_top_active_joins_contacts(self, backend: StorageBackend) -> None:
        """top_active() keeps active contacts only (merged, erased and missing left out),
        optionally of some stages (``[]`` matches nothing), highest first, ties by contact id."""
        ids = sorted(new_id() for _ in range(6))
        self.new_contact(backend, id=ids[0], stage="new_lead")
        self.new_contact(backend, id=ids[1], stage="contacted")
        self.new_contact(backend, id=ids[2], stage="new_lead")
        self.new_contact(backend, id=ids[3], status=MERGED, merged_into=ids[0])
        self.new_contact(backend, id=ids[4], status=ERASED, wrapped_key=None, pii_enc=None)
        scores = [10.0, 30.0, 30.0, 99.0, 98.0, 97.0]  # ids[5] has no contact
        records = [score_record(i, score=v) for i, v in zip(ids, scores, strict=True)]
        self.store(backend, lambda uow: uow.scores.put_many(records))
        self.store(backend, lambda uow: uow.scores.put(score_record(ids[0], model="ml", score=1.0)))
        with backend.unit_of_work() as uow:
            top = uow.scores.top_active("rules")
            assert [(s.contact_id, s.score) for s in top] == [(ids[1], 30.0), (ids[2], 30.0), (ids[0], 10.0)]
            assert_same_record(top[0], records[1])
            assert [s.contact_id for s in uow.scores.top_active("rules", limit=1)] == [ids[1]]
            assert uow.scores.top_active("rules", limit=0) == []
            assert [s.contact_id for s in uow.scores.top_active("rules", stages=["new_lead"])] == [ids[2], ids[0]]
            assert [s.contact_id for s in uow.scores.top_active("rules", stages=["contacted", "x"])] == [ids[1]]
            assert uow.scores.top_active("rules", stages=[]) == []
            assert [s.contact_id for s in uow.scores.top_active("ml")] == [ids[0]]
            with pytest.raises(ValueError, match="limit"):
                uow.scores.top_active("rules", limit=-1)

    def test_contacts_active_scores_and_set_scores(self, backend: StorageBackend) -> None:
        """active_scores() reads the clear score of active contacts only; set_scores() writes
        only the score, moves each version on (an older copy then conflicts) and ignores
        unknown ids."""
        a = self.new_contact(backend, score=None)
        b = self.new_contact(backend, score=2.5)
        merged = self.new_contact(backend, status=MERGED, merged_into=a.id, score=7.0)
        missing = new_id()
        got = self.read(backend, lambda uow: uow.contacts.active_scores([a.id, b.id, merged.id, missing, a.id]))
        assert got == {a.id: None, b.id: 2.5}
        assert self.read(backend, lambda uow: uow.contacts.active_scores([])) == {}
        self.store(backend, lambda uow: uow.contacts.set_scores({a.id: 0.1 + 0.2, b.id: None, missing: 1.0}))
        self.store(backend, lambda uow: uow.contacts.set_scores({}))
        stored_a = self.read(backend, lambda uow: uow.contacts.get(a.id))
        assert_same_record(stored_a, attrs.evolve(a, score=0.1 + 0.2, version=a.version + 1))
        assert self.read(backend, lambda uow: uow.contacts.get(b.id)).score is None
        with backend.unit_of_work() as uow, pytest.raises(ConflictError):
            uow.contacts.update(attrs.evolve(a, stage="contacted"))  # a copy read before the score moved
        assert self.read(backend, lambda uow: uow.contacts.get_many([missing])) == {}  # nothing was created

    def test_clear_timelines_and_latest_times(self, backend: StorageBackend) -> None:
        """clear_timelines() returns each contact's interactions by (occurred_at, id) as
        clear facts; latest_times() the latest occurred_at per contact; contacts without
        interactions are left out of both; long id lists work (chunks)."""
        contact, expected = self._timeline_fixture(backend)
        others = [self.new_contact(backend) for _ in range(2)]
        rows = [
            interaction_record(others[0].id, kind="email.opened", occurred_at=at(3), direction="outbound",
                               attributes={"machine_open": True}),
            interaction_record(others[0].id, kind="call.completed", occurred_at=at(1), channel="phone"),
        ]  # fmt: skip
        self.store(backend, lambda uow: uow.interactions.add_many(rows))
        ids = [contact.id, others[0].id, others[1].id] + [new_id() for _ in range(1200)]
        got = self.read(backend, lambda uow: uow.interactions.clear_timelines(ids))
        assert set(got) == {contact.id, others[0].id}
        assert [f.id for f in got[contact.id]] == [r.id for r in expected]
        first, second = got[others[0].id]
        assert (first.id, first.kind, first.occurred_at) == (rows[1].id, "call.completed", at(1))
        assert (first.channel, first.contact_id) == ("phone", others[0].id)
        assert (second.direction, second.attributes) == ("outbound", {"machine_open": True})
        latest = self.read(backend, lambda uow: uow.interactions.latest_times(ids))
        assert latest == {contact.id: max(r.occurred_at for r in expected), others[0].id: at(3)}
        assert self.read(backend, lambda uow: uow.interactions.clear_timelines([])) == {}
        assert self.read(backend, lambda uow: uow.interactions.latest_times([])) == {}

    def test_review_pairs_are_unique(self, backend: StorageBackend) -> None:
        """A pair is stored once whatever its order; list() by status; for_contact() from either side."""
        a, b, c = sorted(new_id() for _ in range(3))
        first = review_record(a, b, created_at=at(0))
        with backend.unit_of_work() as uow:
            assert uow.reviews.add(first) is True
            assert uow.reviews.add(review_record(a, b, reason="again")) is False
            assert uow.reviews.add(review_record(a, b, contact_a=b, contact_b=a)) is False
            assert uow.reviews.add(review_record(b, c, created_at=at(5), status="dismissed")) is True
            assert uow.reviews.add(review_record(a, c, created_at=at(9))) is True
            uow.commit()
        with backend.unit_of_work() as uow:
            assert [(r.contact_a, r.contact_b) for r in uow.reviews.list()] == [(a, b), (a, c)]
            assert [r.status for r in uow.reviews.list(status=None)] == ["open", "dismissed", "open"]
            assert [r.status for r in uow.reviews.list(status="dismissed")] == ["dismissed"]
            assert [(r.contact_a, r.contact_b) for r in uow.reviews.for_contact(c)] == [(b, c), (a, c)]
            assert_same_record(uow.reviews.for_contact(a)[0], first)

    def test_segments_put_get_list_delete(self, backend: StorageBackend) -> None:
        """Segments: put() replaces by name, list() by name, delete() removes."""
        with backend.unit_of_work() as uow:
            uow.segments.put(segment_record("b-lapsed"))
            uow.segments.put(segment_record("a-new"))
            replaced = segment_record(
                "b-lapsed",
                definition={"field": "stage", "op": "eq", "value": "lost"},
                updated_at=at(60),
                created_by=None,
            )
            uow.segments.put(replaced)
            uow.commit()
        with backend.unit_of_work() as uow:
            assert [s.name for s in uow.segments.list()] == ["a-new", "b-lapsed"]
            assert_same_record(uow.segments.get("b-lapsed"), replaced)
            uow.segments.delete("a-new")
            uow.commit()
        assert [s.name for s in self.read(backend, lambda uow: uow.segments.list())] == ["b-lapsed"]

    # ------------------------------------------------------------------ segment queries

    def segment_world(self, backend: StorageBackend) -> dict[str, ContactRecord]:
        """Store :data:`SEGMENT_CONTACTS` (ids increasing in label order) and
        :data:`SEGMENT_INTERACTIONS`; returns the contacts by label."""
        records: dict[str, ContactRecord] = {}
        for label in sorted(SEGMENT_CONTACTS):
            records[label] = contact_record(**SEGMENT_CONTACTS[label])

        def fill(uow: UnitOfWork) -> None:
            uow.contacts.add_many(list(records.values()))
            uow.interactions.add_many(
                [
                    interaction_record(records[label].id, kind=kind, occurred_at=at(seconds))
                    for label, kind, seconds in SEGMENT_INTERACTIONS
                ]
            )

        self.store(backend, fill)
        return records

    @pytest.mark.parametrize("group", sorted(SEGMENT_CASES))
    def test_segment_criteria_select_and_count(self, backend: StorageBackend, group: str) -> None:
        """select(), select_ids() and count_matching() agree on every node type and
        combination: active contacts only, in id order, logic two-valued (a negated test
        matches an unknown value), a prefix case-sensitive with no wildcards, since
        inclusive and until exclusive, one row per contact however many interactions match."""
        records = self.segment_world(backend)
        label_of = {r.id: label for label, r in records.items()}
        with backend.unit_of_work() as uow:
            for criteria, expected in SEGMENT_CASES[group]:
                got = "".join(label_of[r.id] for r in uow.contacts.select(criteria))
                assert got == expected, f"select({criteria!r}) selected {got!r}, expected {expected!r}"
                ids = "".join(label_of[i] for i in uow.contacts.select_ids(criteria))
                assert ids == expected, f"select_ids({criteria!r}) selected {ids!r}, expected {expected!r}"
                count = uow.contacts.count_matching(criteria)
                assert count == len(expected), f"count_matching({criteria!r}) = {count}, expected {len(expected)}"

    def test_segment_select_returns_whole_records_and_pages_by_id(self, backend: StorageBackend) -> None:
        """select() returns stored records field by field; limit and after page by id
        (keyset); select_ids() pages the same way; limit 0 returns nothing, a negative limit
        is refused."""
        records = self.segment_world(backend)
        everyone = And()
        with backend.unit_of_work() as uow:
            first = uow.contacts.select(everyone, limit=2)
            assert [r.id for r in first] == [records["a"].id, records["b"].id]
            for got in first:
                assert_same_record(got, records["a"] if got.id == records["a"].id else records["b"])
            second = uow.contacts.select(everyone, limit=2, after=first[-1].id)
            assert [r.id for r in second] == [records["c"].id, records["d"].id]
            assert [r.id for r in uow.contacts.select(everyone, limit=2, after=second[-1].id)] == [records["e"].id]
            assert uow.contacts.select(everyone, after=records["e"].id) == []
            assert uow.contacts.select(everyone, limit=0) == []
            acne = Eq("service_interest", "acne")
            assert uow.contacts.select_ids(acne, limit=2) == [records["a"].id, records["c"].id]
            assert uow.contacts.select_ids(acne, limit=2, after=records["c"].id) == [records["d"].id, records["e"].id]
            assert uow.contacts.select_ids(acne, after=records["e"].id) == []
            # `after` need not be a selected contact: paging goes on from any id
            assert uow.contacts.select_ids(acne, after=records["b"].id) == [
                records["c"].id,
                records["d"].id,
                records["e"].id,
            ]
            with pytest.raises(ValueError):
                uow.contacts.select(everyone, limit=-1)
            with pytest.raises(ValueError):
                uow.contacts.select_ids(everyone, limit=-1)

    def test_segment_queries_see_uncommitted_changes_of_their_unit_of_work(self, backend: StorageBackend) -> None:
        """A segment query runs inside its unit of work: it sees contacts and interactions
        added there before commit, and nothing of them after a rollback."""
        records = self.segment_world(backend)
        opened = HadInteraction(_OPENED, since=at(0))
        with backend.unit_of_work() as uow:
            uow.interactions.add(interaction_record(records["c"].id, kind="email.opened", occurred_at=at(300)))
            uow.contacts.add(contact_record(stage="contacted", service_interest="acne"))
            assert uow.contacts.count_matching(opened) == 3
            assert uow.contacts.count_matching(Eq("stage", "contacted")) == 2
            uow.rollback()
        assert self.read(backend, lambda uow: uow.contacts.count_matching(opened)) == 2

    # ------------------------------------------------------------------ inbox

    def test_inbox_status_list_digest_and_purge(self, backend: StorageBackend) -> None:
        """Inbox: set_status(), list() newest first with filters, find_digests(), purge() by status and age."""
        old = inbox_record(received_at=at(0))
        mid = inbox_record(received_at=at(10), source="calendly", digest=bidx("same"))
        new = inbox_record(received_at=at(20), digest=bidx("same"))
        again = inbox_record(received_at=at(30), digest=bidx("again"))

        def fill(uow: UnitOfWork) -> None:
            for r in (old, mid, new, again):
                uow.inbox.add(r)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            uow.inbox.set_status(old.id, "quarantined", reason="record #1: field 'email': not an address", attempts=1)
            uow.inbox.set_status(old.id, "processed", processed_at=at(40))
            uow.inbox.set_status(mid.id, "processed", processed_at=at(41), attempts=1)
            uow.inbox.set_status(new.id, "quarantined", reason="bad signature")
            uow.commit()
        with backend.unit_of_work() as uow:
            got = uow.inbox.get(old.id)
            assert (got.status, got.reason, got.processed_at, got.attempts) == ("processed", None, at(40), 1)
            assert [r.id for r in uow.inbox.list()] == [again.id, new.id, mid.id, old.id]
            assert [r.id for r in uow.inbox.list(status="processed")] == [mid.id, old.id]
            assert [r.id for r in uow.inbox.list(source="typeform", limit=2)] == [again.id, new.id]
            assert [r.id for r in uow.inbox.list(status="quarantined", source="calendly")] == []
            assert [r.id for r in uow.inbox.find_digests("typeform", [bidx("same")])] == [new.id]
            assert uow.inbox.find_digests("other", [bidx("same")]) == []
            assert uow.inbox.purge(status="processed", before=at(10)) == 1
            assert uow.inbox.purge(status="processed", before=at(10)) == 0
            uow.commit()
        assert self.read(backend, lambda uow: uow.inbox.count()) == 3
        with backend.unit_of_work() as uow:
            with pytest.raises(NotFound):
                uow.inbox.get(old.id)

    def test_inbox_one_row_per_digest(self, backend: StorageBackend) -> None:
        """(source, digest) is unique: add_many() of a stored pair is a DuplicateError;
        add_new() stores only the payloads whose pair is new and skips the rest quietly,
        the first stored row wins; the same digest under another source is another payload."""
        first = inbox_record(received_at=at(0), digest=bidx("one"))
        self.store(backend, lambda uow: uow.inbox.add(first))
        again = inbox_record(received_at=at(1), digest=bidx("one"))
        with backend.unit_of_work() as uow:
            with pytest.raises(DuplicateError):
                uow.inbox.add_many([again])
        other = inbox_record(received_at=at(2), digest=bidx("two"))
        elsewhere = inbox_record(received_at=at(3), digest=bidx("one"), source="calendly")
        self.store(backend, lambda uow: uow.inbox.add_new([again, other, elsewhere]))
        self.store(backend, lambda uow: uow.inbox.add_new([]))
        with backend.unit_of_work() as uow:
            found = uow.inbox.find_digests("typeform", [bidx("one"), bidx("two")])
            assert [r.id for r in found] == [first.id, other.id]
            assert [r.id for r in uow.inbox.find_digests("calendly", [bidx("one")])] == [elsewhere.id]
            assert uow.inbox.count() == 3

    def test_meta_get_for_update_serializes_writers(self, backend: StorageBackend) -> None:
        """get_for_update(): None for a missing key (and a rolled-back unit leaves no key
        behind); read-modify-write from two threads at once loses no increment."""
        import threading

        with backend.unit_of_work() as uow:
            assert uow.meta.get_for_update("counter") is None
        assert self.read(backend, lambda uow: uow.meta.get("counter")) is None
        if not self.concurrent_units:
            pytest.skip("this backend's units of work cannot run in two threads at once")
        rounds, errors = 12, []

        def bump() -> None:
            try:
                for _ in range(rounds):
                    with backend.unit_of_work() as uow:
                        value = uow.meta.get_for_update("counter")
                        uow.meta.set("counter", str(int(value or 0) + 1))
                        uow.commit()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=bump) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert self.read(backend, lambda uow: uow.meta.get("counter")) == str(2 * rounds)

    def test_lock_waits_for_the_holder(self, backend: StorageBackend) -> None:
        """lock(): a second unit asking for a held name waits until the holder commits;
        other names and a re-lock of a held name do not wait; the lock is gone after
        commit, and after a rollback."""
        import threading
        import time

        with backend.unit_of_work() as uow:  # re-locking and empty calls are fine
            uow.lock(["identity:email:a", "identity:email:a"])
            uow.lock(["identity:email:a"])
            uow.lock([])
            uow.rollback()
            uow.lock(["identity:email:a"])  # released by the rollback: free again
        if not self.concurrent_units:
            pytest.skip("this backend's units of work cannot run in two threads at once")
        got: dict[str, float] = {}
        holding = threading.Event()

        def second() -> None:
            holding.wait(30)
            with backend.unit_of_work() as uow:
                uow.lock(["identity:email:b", "identity:email:a"])
                got["second"] = time.monotonic()
                uow.commit()

        thread = threading.Thread(target=second)
        thread.start()
        with backend.unit_of_work() as uow:
            uow.lock(["identity:email:a"])
            holding.set()
            time.sleep(0.4)
            got["released"] = time.monotonic()
            uow.commit()
        thread.join(60)
        assert got["second"] >= got["released"]
        with backend.unit_of_work() as uow:  # nobody holds it now
            uow.lock(["identity:email:a", "identity:email:b"])
            uow.commit()

    def test_inbox_batches(self, backend: StorageBackend) -> None:
        """Inbox batch methods: add_many(), find_digests() over several digests, and
        set_status_many() adding one attempt to each payload named."""
        a = inbox_record(received_at=at(0), digest=bidx("a"))
        b = inbox_record(received_at=at(1), digest=bidx("b"))
        c = inbox_record(received_at=at(2), digest=bidx("c"), source="calendly")
        self.store(backend, lambda uow: uow.inbox.add_many([a, b, c]))
        with backend.unit_of_work() as uow:
            found = uow.inbox.find_digests("typeform", [bidx("b"), bidx("a"), bidx("c"), bidx("zz")])
            assert [r.id for r in found] == [a.id, b.id]
            assert uow.inbox.find_digests("typeform", []) == []
            assert uow.inbox.set_status_many([a.id, b.id], "processed", processed_at=at(5)) == 2
            assert uow.inbox.set_status_many([b.id], "quarantined", reason="field 'body': not JSON") == 1
            uow.commit()
        with backend.unit_of_work() as uow:
            got_a, got_b, got_c = (uow.inbox.get(r.id) for r in (a, b, c))
        assert (got_a.status, got_a.attempts, got_a.processed_at) == ("processed", 1, at(5))
        assert (got_b.status, got_b.attempts, got_b.reason) == ("quarantined", 2, "field 'body': not JSON")
        assert (got_c.status, got_c.attempts) == (c.status, c.attempts)

    def test_stage_changes_add_many(self, backend: StorageBackend) -> None:
        """Stage changes appended in a batch read back in order."""
        cid = new_id()
        stages = ("new_lead", "contacted")
        changes = [stage_change_record(cid, changed_at=at(i), to_stage=s) for i, s in enumerate(stages)]
        self.store(backend, lambda uow: uow.stages.add_many(changes))
        history = self.read(backend, lambda uow: uow.stages.history(cid))
        assert [h.to_stage for h in history] == ["new_lead", "contacted"]

    # ------------------------------------------------------------------ journals

    def test_audit_log_append_last_iter(self, backend: StorageBackend) -> None:
        """Audit log: last(), iter(since_seq) streamed beside other reads, seq unique, no update/delete."""
        assert self.read(backend, lambda uow: uow.audit.last()) is None
        entries = [audit_record(seq) for seq in range(1, 8)]

        def fill(uow: UnitOfWork) -> None:
            for e in entries:
                uow.audit.append(e)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            assert_same_record(uow.audit.last(), entries[-1])
            assert [e.seq for e in uow.audit.iter()] == list(range(1, 8))
            assert [e.seq for e in uow.audit.iter(since_seq=5)] == [6, 7]
            assert list(uow.audit.iter(since_seq=7)) == []
            # Streaming must not block other statements of the same unit of work.
            seen = []
            for entry in uow.audit.iter():
                seen.append((entry.seq, uow.meta.get("schema_version")))
            assert len(seen) == 7
            with pytest.raises(DuplicateError):
                uow.audit.append(audit_record(7))
            for name in ("update", "delete", "put", "remove"):
                assert not hasattr(uow.audit, name), f"the audit log is append-only but has {name}()"

    def test_outbox_append_after_prune(self, backend: StorageBackend) -> None:
        """Outbox: append_many, after(seq, limit) in seq order, last_seq, a taken seq
        refused, prune by seq and time (naive time refused)."""
        assert self.read(backend, lambda uow: uow.outbox.last_seq()) == 0
        events = [outbox_record(seq) for seq in range(1, 8)]
        self.store(backend, lambda uow: uow.outbox.append_many(events[:3]))
        self.store(backend, lambda uow: uow.outbox.append_many(events[3:]))
        with backend.unit_of_work() as uow:
            assert uow.outbox.last_seq() == 7
            got = uow.outbox.after(0, limit=100)
            assert [e.seq for e in got] == list(range(1, 8))
            for stored, want in zip(got, events, strict=True):
                assert_same_record(stored, want)
            assert [e.seq for e in uow.outbox.after(2, limit=3)] == [3, 4, 5]
            assert uow.outbox.after(7) == [] and uow.outbox.after(0, limit=0) == []
            with pytest.raises(ValueError):
                uow.outbox.after(0, limit=-1)
            with pytest.raises(DuplicateError):
                uow.outbox.append_many([outbox_record(7)])
        with backend.unit_of_work() as uow:
            with pytest.raises(ValueError, match="naive"):
                uow.outbox.prune(upto_seq=7, before=datetime(2030, 1, 1))
            # events 1..5 are delivered; of those, 1..3 are older than at(4)
            assert uow.outbox.prune(upto_seq=5, before=at(4)) == 3
            uow.commit()
        with backend.unit_of_work() as uow:
            assert [e.seq for e in uow.outbox.after(0)] == [4, 5, 6, 7]
            assert uow.outbox.last_seq() == 7

    # ------------------------------------------------------------------ whole-database copies

    #: Contacts stored by :meth:`_fill_every_kind`; with two models each, the scores
    #: (composite key) span more than one page of 1000.
    COPY_CONTACTS = 501

    def _fill_every_kind(self, backend: StorageBackend) -> None:
        """Store records of every kind of RECORD_KINDS (contacts and scores past one page)."""
        contacts = [contact_record() for _ in range(self.COPY_CONTACTS)]
        a, b = contacts[0].id, contacts[1].id

        def fill(uow: UnitOfWork) -> None:
            uow.contacts.add_many(contacts)
            uow.identities.add(identity_record(a))
            uow.interactions.add_many([interaction_record(a), interaction_record(b)])
            uow.stages.add(stage_change_record(a))
            uow.import_records("appointments", [appointment_record(a)])
            uow.consents.add(consent_record(contact_id=a))
            uow.notes.add(note_record(a))
            uow.tasks.add(task_record(a))
            uow.scores.put_many([score_record(c.id, model=m) for c in contacts for m in ("rules", "live")])
            uow.reviews.add(review_record(a, b))
            uow.segments.put(segment_record())
            uow.inbox.add(inbox_record())
            uow.import_records("merges", [merge_record(a, b)])
            for seq in (1, 2, 3):
                uow.audit.append(audit_record(seq))
            uow.outbox.append_many([outbox_record(1), outbox_record(2)])
            uow.meta.set("key_check", "check-value")

        self.store(backend, fill)

    def test_export_records_streams_every_kind_in_key_order(self, backend: StorageBackend) -> None:
        """export_records(kind) yields every stored record of each kind as stored, by key,
        as many as count_records(kind); meta as (key, value) pairs; an unknown kind is
        refused listing the known ones."""
        self._fill_every_kind(backend)
        with backend.unit_of_work() as uow:
            exported = {kind: list(uow.export_records(kind)) for kind in RECORD_KINDS}
            counts = {kind: uow.count_records(kind) for kind in RECORD_KINDS}
            with pytest.raises(UnknownComponentError, match="contacts"):
                list(uow.export_records("patients"))
            with pytest.raises(UnknownComponentError):
                uow.count_records("patients")
            with pytest.raises(UnknownComponentError):
                uow.import_records("patients", [])
            stored_contact = uow.contacts.get(exported["contacts"][0].id)
        assert {kind: len(records) for kind, records in exported.items()} == counts
        assert counts["contacts"] == self.COPY_CONTACTS and counts["scores"] == 2 * self.COPY_CONTACTS
        assert all(counts[kind] >= 1 for kind in RECORD_KINDS)
        ids = [c.id for c in exported["contacts"]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        score_keys = [(s.contact_id, s.model) for s in exported["scores"]]
        assert score_keys == sorted(score_keys) and len(set(score_keys)) == len(score_keys)
        assert [e.seq for e in exported["audit_log"]] == [1, 2, 3]
        assert_same_record(exported["contacts"][0], stored_contact)
        meta = dict(exported["meta"])
        assert meta["key_check"] == "check-value" and meta["schema_version"] == str(SCHEMA_VERSION)

    def test_records_copy_into_a_second_backend_unchanged(
        self, backend: StorageBackend, second_backend: StorageBackend
    ) -> None:
        """export_records → import_records (in batches, a commit each) into a fresh backend
        of the same kind: every kind comes back equal, record for record, with equal
        counts; importing a stored key again is a DuplicateError."""
        self._fill_every_kind(backend)
        with backend.unit_of_work() as src:
            source = {kind: list(src.export_records(kind)) for kind in RECORD_KINDS}
        with second_backend.unit_of_work() as dst:
            for kind in RECORD_KINDS:
                records = source[kind]
                for start in range(0, max(len(records), 1), 400):
                    assert dst.import_records(kind, records[start : start + 400]) == len(records[start : start + 400])
                    dst.commit()
        with second_backend.unit_of_work() as dst:
            copied = {kind: list(dst.export_records(kind)) for kind in RECORD_KINDS}
            counts = {kind: dst.count_records(kind) for kind in RECORD_KINDS}
            with pytest.raises(DuplicateError):
                dst.import_records("contacts", source["contacts"][:1])
                dst.commit()
        assert counts == {kind: len(records) for kind, records in source.items()}
        for kind in RECORD_KINDS:
            assert len(copied[kind]) == len(source[kind]), kind
            if kind == "meta":
                assert dict(copied[kind]) == dict(source[kind])
                continue
            for got, want in zip(copied[kind], source[kind], strict=True):
                assert_same_record(got, want)
