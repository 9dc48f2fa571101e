"""The storage interface every backend implements (no SQL or Mongo in here).

A backend is a :class:`StorageBackend`: it opens a :class:`UnitOfWork`, which exposes one
repository per kind of record (see :mod:`carecrm.core.model.records`).  Use-case code does::

    with backend.unit_of_work() as uow:
        uow.contacts.add(record)
        uow.commit()

Leaving the block without :meth:`UnitOfWork.commit` rolls everything back.  Repositories
take and return stored records only; they raise :mod:`carecrm.core.errors` exceptions
(``NotFound``, ``DuplicateError``, ``ConflictError``, ``BackendUnavailable``), never a
driver's.  Datetimes come back timezone-aware UTC at millisecond precision; a naive
datetime given to any repository method raises ``ValueError`` (never guessed to be UTC).

This module is the **required core** of the contract: CRUD, keyset paging, idempotent
appends, select and count over :class:`~carecrm.core.analytics.criteria.Criteria`.  Aggregate reads
that a backend may answer natively (speed to lead, scoring's batch timelines,
attribution's journeys, segment ids and counts, the score leaderboard) are **optional
query capabilities** in :mod:`carecrm.core.storage.capabilities`, each with a reference
implementation on this core; a backend lists those it implements in
:attr:`UnitOfWork.native_queries`.

The conformance suite in :mod:`carecrm.core.testing.storage` checks every rule here, and
that each declared native query agrees with its reference; a third-party backend passes
it to be a backend.
"""

from __future__ import annotations

import builtins
import random
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol, TypeVar, runtime_checkable

from carecrm.core.analytics.criteria import Criteria
from carecrm.core.errors import ConflictError, UnknownComponentError
from carecrm.core.model.records import (
    AuditRecord,
    ConsentRecord,
    ContactRecord,
    IdentityRecord,
    InboxRecord,
    InteractionRecord,
    NoteRecord,
    OutboxRecord,
    ReviewRecord,
    ScoreRecord,
    SegmentRecord,
    StageChangeRecord,
    TaskRecord,
)

_T = TypeVar("_T")

#: Cursor for timeline keyset pagination: (occurred_at, id) of the last row seen.
TimelineCursor = tuple[datetime, uuid.UUID]

#: Every kind of stored record, in the order a whole-database copy moves them
#: (:meth:`UnitOfWork.export_records`, :meth:`UnitOfWork.import_records`; ``carecrm storage
#: migrate-to``).  ``meta`` rows are ``(key, value)`` string pairs; every other kind is
#: the record class of :mod:`carecrm.core.model.records` its repository stores (``stage_changes``:
#: :class:`StageChangeRecord`, ``audit_log``: :class:`AuditRecord` ...).
RECORD_KINDS: tuple[str, ...] = (
    "contacts",
    "identities",
    "interactions",
    "stage_changes",
    "appointments",
    "consents",
    "notes",
    "tasks",
    "scores",
    "reviews",
    "segments",
    "inbox",
    "merges",
    "audit_log",
    "outbox",
    "meta",
)


def check_record_kind(kind: str) -> str:
    """``kind`` if it is one of :data:`RECORD_KINDS` (backends call this first in
    ``export_records``, ``import_records`` and ``count_records``).

    :raises UnknownComponentError: otherwise, listing the known kinds.
    """
    if kind not in RECORD_KINDS:
        raise UnknownComponentError("record kind", kind, RECORD_KINDS)
    return kind


#: The schema version this release of carecrm reads and writes.  A database with a
#: higher number is refused (SchemaVersionError); a lower one must be upgraded first.
SCHEMA_VERSION = 4


class ContactRepository(Protocol):
    """Contacts by id, by name blind index and by segment criteria."""

    def add(self, record: ContactRecord) -> None:
        """Insert a new contact.  :raises DuplicateError: if the id exists."""

    def add_many(self, records: Sequence[ContactRecord]) -> None:
        """Insert several new contacts in one statement where the database allows."""

    def get(self, contact_id: uuid.UUID) -> ContactRecord:
        """The contact with this id.  :raises NotFound: if there is none."""

    def get_many(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ContactRecord]:
        """The contacts among ``contact_ids`` that exist, by id (missing ids are left out)."""

    def update(self, record: ContactRecord) -> ContactRecord:
        """Replace the stored contact whose ``version`` equals ``record.version``.

        :returns: the stored record, with ``version`` increased by one.
        :raises NotFound: if the contact does not exist.
        :raises ConflictError: if the stored version differs (someone updated it first).
        """

    def set_scores(self, scores: Mapping[uuid.UUID, float | None]) -> None:
        """Set the clear ``score`` field of several contacts (lead scoring), one statement
        for all of them where the database allows, increasing each one's ``version`` by one.

        Only the score is written, so no other field can be overwritten and no version
        check is needed; the version still moves on, so a writer holding an older copy of
        the record gets :class:`ConflictError` instead of writing an old score back.  Ids
        that do not exist are ignored.
        """

    def find_by_name(self, name_bidx: str) -> builtins.list[ContactRecord]:
        """Active contacts whose full-name blind index equals ``name_bidx``, oldest first."""

    def find_by_family_name(self, family_name_bidx: str) -> builtins.list[ContactRecord]:
        """Active contacts whose family-name blind index equals ``family_name_bidx``, oldest first."""

    def list(
        self, *, stage: str | None = None, after: uuid.UUID | None = None, limit: int = 100
    ) -> builtins.list[ContactRecord]:
        """Active contacts in id order (creation order), optionally of one stage, after ``after``."""

    def count(self) -> int:
        """Number of stored contacts, whatever their status."""

    def select(
        self, criteria: Criteria, *, limit: int = 100, after: uuid.UUID | None = None
    ) -> builtins.list[ContactRecord]:
        """Active contacts matching a segment filter tree, in id order, at most ``limit``,
        those with an id greater than ``after`` (keyset pagination: pass the last id of
        the previous page).

        The backend compiles the whole tree into one query of its own language (one SQL
        statement: ``HadInteraction`` becomes ``EXISTS (SELECT 1 FROM interactions i WHERE
        i.contact_id = c.id AND i.kind IN (...) AND i.occurred_at >= :since)``), never
        filtering rows in Python; logic is two-valued (see :mod:`carecrm.core.analytics.criteria`).
        Merged and erased contacts are never selected.

        :raises ValueError: if ``limit`` is negative.
        """


class IdentityRepository(Protocol):
    """Identities (email, phone, external ids) and their blind indexes."""

    def add(self, record: IdentityRecord) -> None:
        """Insert an identity.  The same (contact, kind, bidx) twice is a DuplicateError."""

    def add_many(self, records: Sequence[IdentityRecord]) -> None:
        """Insert several identities in one statement where the database allows."""

    def find(self, kind: str, bidx: str) -> list[IdentityRecord]:
        """Identities of ``kind`` with this blind index (several contacts may share one)."""

    def find_many(self, keys: Iterable[tuple[str, str]]) -> list[IdentityRecord]:
        """Identities matching any of the (kind, bidx) pairs, in one round trip where possible."""

    def for_contact(self, contact_id: uuid.UUID) -> list[IdentityRecord]:
        """All identities of one contact, oldest first."""

    def count(self) -> int:
        """Number of stored identities."""


class InteractionRepository(Protocol):
    """The timeline: interactions, idempotent on (source, idempotency key)."""

    def add(self, record: InteractionRecord) -> None:
        """Append an interaction.

        :raises DuplicateError: if one with the same (source, idempotency_key) exists.
        """

    def add_many(self, records: Sequence[InteractionRecord]) -> None:
        """Append several interactions in one statement where the database allows.

        :raises DuplicateError: if any (source, idempotency_key) exists; then none of
            them is stored by this call (callers check :meth:`existing_keys` first).
        """

    def existing_keys(self, source: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` are already stored for ``source`` (batched duplicate check)."""

    def delete_for_inbox(self, inbox_id: uuid.UUID) -> builtins.list[InteractionRecord]:
        """Delete the interactions stored from one inbox payload (``inbox_id``), to store
        them again as the payload is re-derived (``carecrm inbox reprocess``); returns the
        deleted records (index ``inbox_id`` from schema version 4)."""

    def get(self, interaction_id: uuid.UUID) -> InteractionRecord:
        """One interaction.  :raises NotFound: if there is none."""

    def timeline(
        self,
        contact_id: uuid.UUID,
        *,
        after: TimelineCursor | None = None,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
    ) -> list[InteractionRecord]:
        """A contact's interactions ordered by (occurred_at, id), oldest first.

        Keyset pagination: pass the (occurred_at, id) of the last row of the previous page
        as ``after``.  ``kinds`` restricts to those interaction kinds.
        """

    def count(self) -> int:
        """Number of stored interactions."""


class StageRepository(Protocol):
    """Stage history (append-only)."""

    def add(self, record: StageChangeRecord) -> None:
        """Append a stage change."""

    def add_many(self, records: Sequence[StageChangeRecord]) -> None:
        """Append several stage changes in one statement where the database allows."""

    def history(self, contact_id: uuid.UUID) -> list[StageChangeRecord]:
        """One contact's stage changes, oldest first."""

    def count(self) -> int:
        """Number of stored stage changes."""


class AppointmentRepository(Protocol):
    """Appointments, unique on (source, external_id)."""

    def count(self) -> int:
        """Number of stored appointments."""


class ConsentRepository(Protocol):
    """The consent ledger (append-only), unique on (source, idempotency_key)."""

    def add(self, record: ConsentRecord) -> None:
        """Append a consent event.  :raises DuplicateError: on a repeated (source, key)."""

    def for_contact_point(
        self, contact_point_bidx: str, *, channel: str | None = None, purpose: str | None = None
    ) -> list[ConsentRecord]:
        """Events for one contact point, ordered by (occurred_at, id)."""

    def for_contact(self, contact_id: uuid.UUID) -> list[ConsentRecord]:
        """Events recorded for one contact, ordered by (occurred_at, id)."""

    def count(self) -> int:
        """Number of stored consent events."""


class NoteRepository(Protocol):
    """Coordinators' notes."""

    def add(self, record: NoteRecord) -> None:
        """Store a note."""

    def for_contact(self, contact_id: uuid.UUID) -> list[NoteRecord]:
        """One contact's notes, oldest first."""


class TaskRepository(Protocol):
    """Tasks about contacts."""

    def add(self, record: TaskRecord) -> None:
        """Store a task."""

    def get(self, task_id: uuid.UUID) -> TaskRecord:
        """One task.  :raises NotFound: if there is none."""

    def update(self, record: TaskRecord) -> None:
        """Replace a stored task.  :raises NotFound: if there is none."""

    def list(
        self,
        *,
        assignee: str | None = None,
        contact_id: uuid.UUID | None = None,
        status: str | None = None,
        due_before: datetime | None = None,
    ) -> builtins.list[TaskRecord]:
        """Tasks matching every given filter, ordered by (due_at with unknown last, id)."""


class ScoreRepository(Protocol):
    """Current lead scores, one per (contact, model)."""

    def put(self, record: ScoreRecord) -> None:
        """Insert or replace the score of (contact_id, model)."""

    def put_many(self, records: Sequence[ScoreRecord]) -> None:
        """Insert or replace several scores, each by (contact_id, model), in one statement
        where the database allows.  A (contact_id, model) given twice keeps the last."""

    def get(self, contact_id: uuid.UUID, model: str) -> ScoreRecord:
        """:raises NotFound: if the contact has no score under ``model``."""


class ReviewRepository(Protocol):
    """Pairs of contacts waiting for a person's review."""

    def add(self, record: ReviewRecord) -> bool:
        """Store a pair unless the same pair is already stored.  The record orders its
        pair itself (``contact_a`` the smaller id, :class:`ReviewRecord`): a backend stores
        what it gets and looks a repeat up by (contact_a, contact_b).

        :returns: True if stored, False if it was there already.
        """

    def list(self, *, status: str | None = "open") -> builtins.list[ReviewRecord]:
        """Pairs with this status (all if None), oldest first."""

    def for_contact(self, contact_id: uuid.UUID) -> builtins.list[ReviewRecord]:
        """Pairs that involve one contact, oldest first."""


class SegmentRepository(Protocol):
    """Saved segments, by name."""

    def put(self, record: SegmentRecord) -> None:
        """Insert or replace the segment of this name."""

    def get(self, name: str) -> SegmentRecord:
        """:raises NotFound: if no segment has this name."""

    def list(self) -> builtins.list[SegmentRecord]:
        """All saved segments by name."""

    def delete(self, name: str) -> None:
        """:raises NotFound: if no segment has this name."""


class InboxRepository(Protocol):
    """Raw payloads as received."""

    def add(self, record: InboxRecord) -> None:
        """Store a received payload."""

    def add_many(self, records: Sequence[InboxRecord]) -> None:
        """Store several received payloads in one statement where the database allows.

        :raises DuplicateError: if an id, or a (source, digest) pair, is stored already.
        """

    def add_new(self, records: Sequence[InboxRecord]) -> int | None:
        """Store each payload whose (source, digest) is not stored yet and skip the others,
        without an error: two receivers of the same bytes at once (two ``carecrm ingest``
        processes, two server workers) keep one inbox row, whichever committed first.
        (source, digest) is unique in the inbox from schema version 2 on.

        :returns: how many of ``records`` were stored, when the backend knows it at once
            and exactly (then, when it is ``len(records)``, every record given is a stored
            row); None when it does not (a backend that writes at commit): read the rows
            back with :meth:`find_digests` to learn which ids were kept.
        """

    def find_digests(self, source: str, digests: Iterable[str]) -> builtins.list[InboxRecord]:
        """Payloads of ``source`` whose digest is any of ``digests`` (batched re-delivery check),
        ordered by (received_at, id)."""

    def set_status_many(
        self,
        inbox_ids: Iterable[uuid.UUID],
        status: str,
        *,
        reason: str | None = None,
        processed_at: datetime | None = None,
    ) -> int:
        """Set the status (and reason, None clears it; and ``processed_at`` when given) of
        several payloads in one statement, adding one to each one's ``attempts``.

        :returns: how many payloads were changed.
        """

    def get(self, inbox_id: uuid.UUID) -> InboxRecord:
        """:raises NotFound: if there is none."""

    def set_verified(self, inbox_ids: Iterable[uuid.UUID], verified: bool | None) -> int:
        """Record whether the payloads' signatures were checked (see
        :attr:`InboxRecord.verified`): a re-delivery of the same bytes may come with or
        without a check.  Attempts are unchanged.  :returns: how many were changed."""

    def set_status(
        self,
        inbox_id: uuid.UUID,
        status: str,
        *,
        reason: str | None = None,
        processed_at: datetime | None = None,
        attempts: int | None = None,
    ) -> None:
        """Change a payload's status and reason (``None`` clears the reason); the processed
        time and attempt count change only when given.

        :raises NotFound: if there is no such payload.
        """

    def list(
        self, *, status: str | None = None, source: str | None = None, limit: int = 100
    ) -> builtins.list[InboxRecord]:
        """Payloads, newest first, filtered by status and source."""

    def purge(self, *, status: str, before: datetime) -> int:
        """Delete payloads of ``status`` received before ``before``; returns the count."""

    def count(self) -> int:
        """Number of stored payloads."""


class AuditRepository(Protocol):
    """The audit log (append-only; no update or delete exists)."""

    def append(self, record: AuditRecord) -> None:
        """Append an entry.  :raises DuplicateError: if ``seq`` is taken (a concurrent writer)."""

    def last(self) -> AuditRecord | None:
        """The entry with the highest ``seq``, or None for an empty log."""

    def iter(self, *, since_seq: int = 0) -> Iterator[AuditRecord]:
        """Entries with ``seq > since_seq`` in seq order, streamed."""


class OutboxRepository(Protocol):
    """The durable outbox of committed domain events (see :class:`OutboxRecord`):
    append-only, read in seq order by each subscriber from its cursor."""

    def append_many(self, records: Sequence[OutboxRecord]) -> None:
        """Append events (their ``seq`` already assigned by the core).

        :raises DuplicateError: if a ``seq`` is taken (a concurrent writer without the lock).
        """

    def after(self, seq: int, *, limit: int = 100) -> list[OutboxRecord]:
        """At most ``limit`` events with ``seq`` greater than ``seq``, in seq order.

        :raises ValueError: if ``limit`` is negative.
        """

    def last_seq(self) -> int:
        """The highest stored ``seq``, 0 for an empty outbox."""

    def prune(self, *, upto_seq: int, before: datetime) -> int:
        """Delete the events with ``seq <= upto_seq`` written before ``before`` (delivered to
        every subscriber and past retention); returns how many.

        :raises ValueError: if ``before`` is naive.
        """


class MetaRepository(Protocol):
    """Small key/value settings of the database (schema version, key check value)."""

    def get(self, key: str) -> str | None:
        """The value, or None."""

    def set(self, key: str, value: str) -> None:
        """Insert or replace."""

    def get_for_update(self, key: str) -> str | None:
        """The latest committed value of ``key`` (or None), with ``key`` locked against every
        other unit of work's ``get_for_update`` until this unit commits or rolls back: the
        way to read-modify-write a counter or a chain head (the audit log's) without two
        writers taking the same next value.  A row lock (``SELECT ... FOR UPDATE``) on
        PostgreSQL and MariaDB, the write lock that ``BEGIN IMMEDIATE`` already holds on
        SQLite, a lock document on MongoDB.

        :raises ConflictError: if the lock could not be had in time, or the database broke
            a deadlock by failing this unit (retry the unit).
        """


class UnitOfWork(Protocol):
    """One transaction over every repository.

    Leaving the ``with`` block without :meth:`commit` rolls back; an exception inside
    the block rolls back and propagates.
    """

    # Read-only properties, not plain attributes: a protocol attribute is settable, so it
    # would have to be exactly the protocol type; a property lets a backend expose its own
    # repository classes (``SqlContacts`` for ``contacts`` ...).
    @property
    def contacts(self) -> ContactRepository: ...

    @property
    def identities(self) -> IdentityRepository: ...

    @property
    def interactions(self) -> InteractionRepository: ...

    @property
    def stages(self) -> StageRepository: ...

    @property
    def appointments(self) -> AppointmentRepository: ...

    @property
    def consents(self) -> ConsentRepository: ...

    @property
    def notes(self) -> NoteRepository: ...

    @property
    def tasks(self) -> TaskRepository: ...

    @property
    def scores(self) -> ScoreRepository: ...

    @property
    def reviews(self) -> ReviewRepository: ...

    @property
    def segments(self) -> SegmentRepository: ...

    @property
    def inbox(self) -> InboxRepository: ...

    @property
    def audit(self) -> AuditRepository: ...

    @property
    def outbox(self) -> OutboxRepository: ...

    @property
    def meta(self) -> MetaRepository: ...

    @property
    def native_queries(self) -> frozenset[str]:
        """The optional query capabilities this backend answers natively: names of
        :data:`carecrm.core.storage.capabilities.QUERY_CAPABILITIES`
        (``"interactions.first_responses"`` ...), each one a method of that name on the
        repository with the signature of its Protocol there.  ``frozenset()`` is a
        complete backend: the core answers every query with its reference implementation
        on the required methods."""
        ...

    def __enter__(self) -> UnitOfWork: ...

    def lock(self, names: Iterable[str]) -> None:
        """Take exclusive named locks, held until this unit commits or rolls back; a second
        unit asking for any of the same names waits.  Ingest locks the blind indexes it is
        about to match (``identity:email:<bidx>``) so that two processes receiving the same
        person at once make one contact, never two.  Take a unit's locks in one call, before
        its first write: the names are locked in one fixed order, so two units never wait on
        each other in a cycle.  Names are opaque strings of any length (a backend may hash
        them).  A transaction-scoped advisory lock on PostgreSQL, ``GET_LOCK`` on MariaDB
        (released at commit and rollback), nothing on SQLite (``BEGIN IMMEDIATE`` already
        serializes writers), lock documents on MongoDB.

        :raises ConflictError: if a lock could not be had in time, or the database broke a
            deadlock by failing this unit (retry the unit).
        """

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    def export_records(self, kind: str) -> Iterator[Any]:
        """Every stored record of ``kind`` (one of :data:`RECORD_KINDS`) exactly as stored
        (ciphertext, blind indexes and clear fields; nothing is decrypted), in a stable
        order (by primary key: ``id``, ``seq`` for ``audit_log``, ``name`` for
        ``segments``, ``(contact_id, model)`` for ``scores``, ``key`` for ``meta``),
        streamed a page at a time so any number of records can be read.  ``meta`` rows
        come as ``(key, value)`` pairs of strings.

        :raises UnknownComponentError: if ``kind`` is not one of :data:`RECORD_KINDS`
            (the message lists them).
        """

    def import_records(self, kind: str, records: Sequence[Any]) -> int:
        """Store ``records`` of ``kind`` (as :meth:`export_records` yields them) unchanged,
        in as few statements as the database allows: whole-database copies into an
        empty database (``carecrm storage migrate-to``).  ``meta`` pairs replace a key's
        value; every other record is inserted.

        :returns: how many records were given.
        :raises UnknownComponentError: if ``kind`` is unknown (the known ones listed).
        :raises ValueError: if a datetime is naive.
        :raises DuplicateError: if a record's key is already stored (the target was not empty).
        """

    def count_records(self, kind: str) -> int:
        """How many records of ``kind`` are stored (one counting query).

        :raises UnknownComponentError: if ``kind`` is not one of :data:`RECORD_KINDS`.
        """

    def commit(self) -> None:
        """Make everything done in this unit durable."""

    def rollback(self) -> None:
        """Undo everything done in this unit since it began or last committed."""


@runtime_checkable
class StorageBackend(Protocol):
    """A storage backend, opened from a URL by the factory its plugin registers.

    ``capabilities`` names optional abilities: ``"transactions"`` (a unit of work is
    atomic across records), ``"savepoints"``.
    """

    name: str
    url_display: str
    capabilities: frozenset[str]

    def unit_of_work(self) -> UnitOfWork:
        """A new unit of work (one transaction)."""

    def create_schema(self) -> None:
        """Create the schema of a new, empty database (idempotent) at SCHEMA_VERSION."""

    def upgrade(self) -> list[str]:
        """Bring an older database up to SCHEMA_VERSION; returns the steps applied."""

    def schema_version(self) -> int | None:
        """The stored schema version, or None if the database holds no carecrm schema."""

    def verify_schema(self) -> int:
        """Read the stored schema version (always, never cached) and check it is SCHEMA_VERSION.

        A backend also makes this check when it is opened (at the latest, on entering its
        first unit of work), so an older or newer database is never silently misread.

        :returns: SCHEMA_VERSION.
        :raises SchemaVersionError: if the database holds no carecrm schema (run ``carecrm
            init``), an older one (run ``carecrm storage upgrade``) or a newer one (upgrade
            carecrm).
        """

    def check(self) -> dict[str, Any]:
        """Ping and describe: ``{"ok", "backend", "server_version", "schema_version",
        "capabilities", ...}``.  :raises BackendUnavailable: if unreachable."""

    def close(self) -> None:
        """Release connections and files."""


#: How many times :func:`run_retrying` tries a unit of work that lost a lock race.
RETRY_ATTEMPTS = 6


def run_retrying(storage: StorageBackend, work: Callable[[UnitOfWork], _T], *, attempts: int = RETRY_ATTEMPTS) -> _T:
    """Run ``work(uow)`` in a new unit of work, again in a fresh one when it lost a race with
    a concurrent writer (:class:`~carecrm.core.errors.ConflictError`: a deadlock such as
    MariaDB 1213 or PostgreSQL 40P01, or a lock wait timeout), up to ``attempts`` times,
    sleeping a short random time (10-50 ms times the attempt) in between.  ``work`` must
    commit and be safe to repeat.

    :raises ConflictError: the last one, when every attempt lost.
    """
    for attempt in range(1, attempts + 1):
        try:
            with storage.unit_of_work() as uow:
                return work(uow)
        except ConflictError:
            if attempt == attempts:
                raise
            time.sleep(random.uniform(0.01, 0.05) * attempt)
    raise AssertionError("unreachable")


class StorageFactory(Protocol):
    """What a storage plugin registers: called with the URL and backend options."""

    def __call__(self, url: str, options: dict[str, Any]) -> StorageBackend: ...
