"""Mongo repositories of the smaller ledgers: appointments, consents, notes, tasks,
scores, reviews, segments and the inbox."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from carecrm.core.errors import NotFound
from carecrm.core.model.records import (
    ACTIVE,
    ConsentRecord,
    InboxRecord,
    NoteRecord,
    ReviewRecord,
    ScoreRecord,
    SegmentRecord,
    TaskRecord,
)
from carecrm.storage_backends.mongo.documents import (
    and_,
    bid,
    score_key,
    sort_docs,
    utc,
)

if TYPE_CHECKING:
    pass
from carecrm.storage_backends.mongo.shared import (
    _ids,
    _limit,
    _Repository,
)


class MongoAppointments(_Repository):
    """:class:`carecrm.core.storage.contract.AppointmentRepository` on collection ``appointments``."""

    collection = "appointments"


# --------------------------------------------------------------------------- consents, notes, tasks


class MongoConsents(_Repository):
    """:class:`carecrm.core.storage.contract.ConsentRepository` on collection ``consents``."""

    collection = "consents"
    _order = [("occurred_at", 1), ("_id", 1)]

    def add(self, record: ConsentRecord) -> None:
        """Append a consent event.  :raises DuplicateError: on a repeated (source, key)."""
        self._insert([record])

    def for_contact_point(
        self, contact_point_bidx: str, *, channel: str | None = None, purpose: str | None = None
    ) -> list[ConsentRecord]:
        """Events for one contact point (and channel, purpose), by (occurred_at, id)."""
        query: dict[str, Any] = {"contact_point_bidx": contact_point_bidx}
        if channel is not None:
            query["channel"] = channel
        if purpose is not None:
            query["purpose"] = purpose
        return self._records(self.view.find(query, self._order))

    def for_contact(self, contact_id: uuid.UUID) -> list[ConsentRecord]:
        """Events recorded for one contact, by (occurred_at, id)."""
        return self._records(self.view.find({"contact_id": bid(contact_id)}, self._order))


class MongoNotes(_Repository):
    """:class:`carecrm.core.storage.contract.NoteRepository` on collection ``notes``."""

    collection = "notes"

    def add(self, record: NoteRecord) -> None:
        """Store a note."""
        self._insert([record])

    def for_contact(self, contact_id: uuid.UUID) -> list[NoteRecord]:
        """One contact's notes, oldest first."""
        return self._records(self.view.find({"contact_id": bid(contact_id)}, [("created_at", 1), ("_id", 1)]))


class MongoTasks(_Repository):
    """:class:`carecrm.core.storage.contract.TaskRepository` on collection ``tasks``."""

    collection = "tasks"

    def add(self, record: TaskRecord) -> None:
        """Store a task."""
        self._insert([record])

    def get(self, task_id: uuid.UUID) -> TaskRecord:
        """One task.  :raises NotFound: if there is none."""
        record: TaskRecord = self._record(self.view.get(bid(task_id)), f"no task {task_id}")
        return record

    def update(self, record: TaskRecord) -> None:
        """Replace a stored task.  :raises NotFound: if there is none."""
        assert self.codec is not None
        doc = self.codec.doc(record)
        if self.view.get(doc["_id"]) is None:
            raise NotFound(f"no task {record.id}")
        self.view.replace(doc)

    def list(
        self,
        *,
        assignee: str | None = None,
        contact_id: uuid.UUID | None = None,
        status: str | None = None,
        due_before: datetime | None = None,
    ) -> list[TaskRecord]:
        """Tasks matching every given filter, by (due_at with unknown last, id).

        :raises ValueError: if ``due_before`` is naive.
        """
        query: dict[str, Any] = {}
        if assignee is not None:
            query["assignee"] = assignee
        if contact_id is not None:
            query["contact_id"] = bid(contact_id)
        if status is not None:
            query["status"] = status
        if due_before is not None:
            query["due_at"] = {"$lt": utc(due_before, "due_before")}
        return self._records(self.view.find(query, [("due_unknown", 1), ("due_at", 1), ("_id", 1)]))


# --------------------------------------------------------------------------- scores, reviews


class MongoScores(_Repository):
    """:class:`carecrm.core.storage.contract.ScoreRepository` on collection ``scores``
    (``_id`` = ``"<contact hex>:<model>"``; index (model, score desc, contact_id))."""

    collection = "scores"
    _order = [("score", -1), ("contact_id", 1)]

    def put(self, record: ScoreRecord) -> None:
        """Insert or replace the score of (contact_id, model)."""
        assert self.codec is not None
        self.view.replace(self.codec.doc(record))

    def put_many(self, records: Sequence[ScoreRecord]) -> None:
        """Insert or replace several scores; a (contact_id, model) given twice keeps the last."""
        for record in records:
            self.put(record)

    def get(self, contact_id: uuid.UUID, model: str) -> ScoreRecord:
        """:raises NotFound: if the contact has no score under ``model``."""
        record: ScoreRecord = self._record(
            self.view.get(score_key(contact_id, model)), f"no score of contact {contact_id} under model {model!r}"
        )
        return record

    def top_active(self, model: str, *, limit: int = 20, stages: Sequence[str] | None = None) -> list[ScoreRecord]:
        """Highest scores of ``model`` of active contacts (optionally of ``stages``): one
        pipeline ``$match`` → ``$sort`` (the score index) → ``$lookup`` of the contact →
        ``$match`` on its status and stage → ``$limit``.  Scores or contacts written in
        this unit are joined against the unit's own view of the contacts.

        :raises ValueError: if ``limit`` is negative.
        """
        _limit(limit)
        if limit == 0 or (stages is not None and not stages):
            return []
        contacts = self._uow.contacts.view
        joined: dict[str, Any] = {"c.status": ACTIVE}
        if stages is not None:
            joined["c.stage"] = {"$in": list(dict.fromkeys(stages))}
        touched_contacts = contacts.pending.touched()
        stored_filter = {"model": model}
        if touched_contacts:
            stored_filter = and_(stored_filter, {"contact_id": {"$nin": touched_contacts}})
        pipeline: list[dict[str, Any]] = [
            {"$sort": dict(self._order)},
            {"$lookup": {"from": "contacts", "localField": "contact_id", "foreignField": "_id", "as": "c"}},
            {"$match": joined},
            {"$limit": limit},
            {"$project": {"c": 0}},
        ]
        docs = self.view.aggregate(stored_filter, pipeline)
        # the unit's own writes: its pending scores, and stored scores of contacts it changed
        extra = self.view.pending_matches({"model": model})
        if touched_contacts:
            extra += self.view.find(and_({"model": model}, {"contact_id": {"$in": touched_contacts}}))
        if extra:
            keys = {d["_id"] for d in docs}
            wanted = set(stages) if stages is not None else None
            people = {d["_id"]: d for d in contacts.find_in("_id", {d["contact_id"] for d in extra})}
            for doc in extra:
                person = people.get(doc["contact_id"])
                if doc["_id"] in keys or person is None or person.get("status") != ACTIVE:
                    continue
                if wanted is not None and person.get("stage") not in wanted:
                    continue
                docs.append(doc)
            docs = sort_docs(docs, self._order)[:limit]
        return self._records(docs)


class MongoReviews(_Repository):
    """:class:`carecrm.core.storage.contract.ReviewRepository` on collection ``reviews``
    (unique on (contact_a, contact_b) with ``contact_a`` the smaller id)."""

    collection = "reviews"
    _order = [("created_at", 1), ("_id", 1)]

    def add(self, record: ReviewRecord) -> bool:
        """Store a pair unless the same pair is stored; True if stored (the record keeps
        its pair ordered, :class:`ReviewRecord`)."""
        if self.view.find({"contact_a": bid(record.contact_a), "contact_b": bid(record.contact_b)}, limit=1):
            return False
        self._insert([record])
        return True

    def list(self, *, status: str | None = "open") -> builtins.list[ReviewRecord]:
        """Pairs with this status (all if None), oldest first."""
        query = {} if status is None else {"status": status}
        return self._records(self.view.find(query, self._order))

    def for_contact(self, contact_id: uuid.UUID) -> builtins.list[ReviewRecord]:
        """Pairs that involve one contact, oldest first."""
        key = bid(contact_id)
        return self._records(self.view.find({"$or": [{"contact_a": key}, {"contact_b": key}]}, self._order))


# --------------------------------------------------------------------------- segments, inbox


class MongoSegments(_Repository):
    """:class:`carecrm.core.storage.contract.SegmentRepository` on collection ``segments`` (``_id`` = name)."""

    collection = "segments"

    def put(self, record: SegmentRecord) -> None:
        """Insert or replace the segment of this name."""
        assert self.codec is not None
        self.view.replace(self.codec.doc(record))

    def get(self, name: str) -> SegmentRecord:
        """:raises NotFound: if no segment has this name."""
        record: SegmentRecord = self._record(self.view.get(name), f"no segment named {name!r}")
        return record

    def list(self) -> list[SegmentRecord]:
        """All saved segments by name."""
        return self._records(self.view.find({}, [("_id", 1)]))

    def delete(self, name: str) -> None:
        """:raises NotFound: if no segment has this name."""
        if self.view.get(name) is None:
            raise NotFound(f"no segment named {name!r}")
        self.view.delete(name)


class MongoInbox(_Repository):
    """:class:`carecrm.core.storage.contract.InboxRepository` on collection ``inbox``."""

    collection = "inbox"
    _order = [("received_at", 1), ("_id", 1)]

    def add(self, record: InboxRecord) -> None:
        """Store a received payload."""
        self._insert([record])

    def add_many(self, records: Sequence[InboxRecord]) -> None:
        """Store several payloads, all or none."""
        self._insert(records)

    def add_new(self, records: Sequence[InboxRecord]) -> int | None:
        """Buffer the payloads whose (source, digest) this unit does not see stored; at
        commit each is an upsert that only inserts (``$setOnInsert`` on the unique
        ``ux_inbox_source_digest`` index), so a concurrent receiver's row wins quietly.
        Returns None: which rows won is known only after the commit."""
        assert self.codec is not None
        by_source: dict[str, list[InboxRecord]] = {}
        for rec in records:
            by_source.setdefault(rec.source, []).append(rec)
        for source, recs in by_source.items():
            seen = {r.digest for r in self.find_digests(source, [r.digest for r in recs])}
            for rec in recs:
                if rec.digest in seen:
                    continue
                seen.add(rec.digest)
                self.view.pending.insert_new(self.codec.doc(rec), {"source": rec.source, "digest": rec.digest})
        return None

    def find_digests(self, source: str, digests: Iterable[str]) -> builtins.list[InboxRecord]:
        """Payloads of ``source`` with any of these digests, by (received_at, id)."""
        docs = self.view.find_in("digest", digests, {"source": source}, sort=self._order)
        return sort_docs_records(self._records(docs))

    def set_status_many(
        self,
        inbox_ids: Iterable[uuid.UUID],
        status: str,
        *,
        reason: str | None = None,
        processed_at: datetime | None = None,
    ) -> int:
        """Set status and reason of several payloads and add one attempt to each.

        :raises ValueError: if ``processed_at`` is naive.
        """
        changes: dict[str, Any] = {"status": status, "reason": reason}
        if processed_at is not None:
            changes["processed_at"] = utc(processed_at, "processed_at")
        docs = self.view.find_in("_id", _ids(inbox_ids))
        for doc in docs:
            self.view.replace(dict(doc, **changes, attempts=int(doc.get("attempts") or 0) + 1))
        return len(docs)

    def set_verified(self, inbox_ids: Iterable[uuid.UUID], verified: bool | None) -> int:
        """Set ``verified`` of several payloads; attempts unchanged."""
        docs = self.view.find_in("_id", _ids(inbox_ids))
        for doc in docs:
            self.view.replace(dict(doc, verified=verified))
        return len(docs)

    def get(self, inbox_id: uuid.UUID) -> InboxRecord:
        """:raises NotFound: if there is none."""
        record: InboxRecord = self._record(self.view.get(bid(inbox_id)), f"no inbox payload {inbox_id}")
        return record

    def set_status(
        self,
        inbox_id: uuid.UUID,
        status: str,
        *,
        reason: str | None = None,
        processed_at: datetime | None = None,
        attempts: int | None = None,
    ) -> None:
        """Set the status and reason (None clears it); ``processed_at`` and ``attempts``
        change only when given.

        :raises NotFound: if there is no such payload.
        :raises ValueError: if ``processed_at`` is naive.
        """
        doc = self.view.get(bid(inbox_id))
        if doc is None:
            raise NotFound(f"no inbox payload {inbox_id}")
        changes: dict[str, Any] = {"status": status, "reason": reason}
        if processed_at is not None:
            changes["processed_at"] = utc(processed_at, "processed_at")
        if attempts is not None:
            changes["attempts"] = attempts
        self.view.replace(dict(doc, **changes))

    def list(
        self, *, status: str | None = None, source: str | None = None, limit: int = 100
    ) -> builtins.list[InboxRecord]:
        """Payloads, newest first, filtered by status and source."""
        query: dict[str, Any] = {}
        if status is not None:
            query["status"] = status
        if source is not None:
            query["source"] = source
        return self._records(self.view.find(query, [("received_at", -1), ("_id", -1)], max(limit, 0)))

    def purge(self, *, status: str, before: datetime) -> int:
        """Delete payloads of ``status`` received before ``before``; returns the count.

        :raises ValueError: if ``before`` is naive.
        """
        query = {"status": status, "received_at": {"$lt": utc(before, "before")}}
        docs = self.view.find(query, projection={"_id": 1})
        for doc in docs:
            self.view.delete(doc["_id"])
        return len(docs)


def sort_docs_records(records: list[InboxRecord]) -> list[InboxRecord]:
    """Inbox records by (received_at, id) (chunks of a long digest list come back per chunk)."""
    return sorted(records, key=lambda r: (r.received_at, r.id))
