"""The repositories of the MongoDB unit of work.

Each class implements one repository Protocol of :mod:`carecrm.core.storage` over one
collection, seen through the unit's :class:`~carecrm.storage_backends.mongo.documents.View`
(stored documents overlaid with the unit's pending writes).  Writes are buffered and
applied at commit; reads are queries and aggregation pipelines run by the server
(``find`` with an index-backed sort, ``count_documents``, ``$group``); only the unit's own
pending documents are matched in Python.

Rules shared by every repository:

* a datetime field or argument must be timezone-aware (``ValueError`` otherwise); it is
  stored as a BSON date (UTC, milliseconds);
* a unique key (``_id``, (source, idempotency_key) ...) is checked when a record is added,
  so :class:`~carecrm.core.errors.DuplicateError` comes at once and the unit stays usable;
  ``add_many`` buffers all records or none; the unique indexes refuse a duplicate written
  concurrently by another unit at commit;
* long lists of keys are sent in chunks of :data:`~carecrm.storage_backends.mongo.documents.CHUNK`.
"""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from carecrm.core.criteria import And, Criteria, Eq, HadInteraction, In, Not, Or, Prefix, Range
from carecrm.core.errors import ConflictError, NotFound
from carecrm.core.records import (
    ACTIVE,
    AppointmentRecord,
    AuditRecord,
    ConsentRecord,
    ContactRecord,
    FirstResponseRecord,
    IdentityRecord,
    InboxRecord,
    InteractionFacts,
    InteractionRecord,
    MergeRecord,
    NoteRecord,
    OutboxRecord,
    ReviewRecord,
    ScoreRecord,
    SegmentRecord,
    StageChangeRecord,
    StageReachedRecord,
    TaskRecord,
    TouchRecord,
)
from carecrm.core.storage import TimelineCursor, check_record_kind
from carecrm.storage_backends.mongo.documents import (
    CHUNK,
    Codec,
    View,
    and_,
    bid,
    chunks,
    from_bson,
    score_key,
    sort_docs,
    utc,
)

if TYPE_CHECKING:
    from carecrm.storage_backends.mongo.backend import MongoUnitOfWork

#: Matches no document (``Or()``, ``In(field, [])``).
NOTHING: dict[str, Any] = {"_id": {"$in": []}}

#: Documents per round trip of a streamed iterator.
PAGE = 1000


def _due_extra(doc: dict[str, Any]) -> dict[str, Any]:
    return {"due_unknown": doc["due_at"] is None}


def _starts_extra(doc: dict[str, Any]) -> dict[str, Any]:
    return {"starts_unknown": doc["starts_at"] is None}


CODECS: dict[str, Codec] = {
    "contacts": Codec(ContactRecord),
    "identities": Codec(IdentityRecord),
    "interactions": Codec(InteractionRecord),
    "stage_changes": Codec(StageChangeRecord),
    "appointments": Codec(AppointmentRecord, extra=_starts_extra),
    "consents": Codec(ConsentRecord),
    "notes": Codec(NoteRecord),
    "tasks": Codec(TaskRecord, extra=_due_extra),
    "scores": Codec(ScoreRecord, id_field=None, key=lambda r: score_key(r.contact_id, r.model)),
    "reviews": Codec(ReviewRecord),
    "segments": Codec(SegmentRecord, id_field="name"),
    "inbox": Codec(InboxRecord),
    "merges": Codec(MergeRecord),
    "audit_log": Codec(AuditRecord, id_field="seq"),
    "outbox": Codec(OutboxRecord, id_field="seq"),
}

#: Unique keys checked on insert (and enforced by unique indexes), per collection.
UNIQUE: dict[str, tuple[tuple[str, ...], ...]] = {
    "contacts": (("_id",),),
    "identities": (("_id",), ("contact_id", "kind", "bidx")),
    "interactions": (("_id",), ("source", "idempotency_key")),
    "stage_changes": (("_id",),),
    "appointments": (("_id",), ("source", "external_id")),
    "consents": (("_id",), ("source", "idempotency_key")),
    "notes": (("_id",),),
    "tasks": (("_id",),),
    "scores": (("_id",),),
    "reviews": (("_id",), ("contact_a", "contact_b")),
    "segments": (("_id",),),
    "inbox": (("_id",), ("source", "digest")),
    "merges": (("_id",),),
    "audit_log": (("_id",),),
    "outbox": (("_id",),),
    "meta": (("_id",),),
}


def _ids(values: Iterable[uuid.UUID]) -> list[Any]:
    return [bid(v) for v in dict.fromkeys(values)]


def _limit(limit: int) -> int:
    if limit < 0:
        raise ValueError("limit: must be 0 or more")
    return limit


class _Repository:
    """Base: the unit's view of one collection and its codec."""

    collection: str

    def __init__(self, uow: MongoUnitOfWork) -> None:
        self._uow = uow
        self.view: View = uow.view(self.collection)
        self.codec = CODECS.get(self.collection)

    def _records(self, docs: Iterable[Mapping[str, Any]]) -> list[Any]:
        assert self.codec is not None
        return [self.codec.record(d) for d in docs]

    def _record(self, doc: Mapping[str, Any] | None, missing: str) -> Any:
        if doc is None:
            raise NotFound(missing)
        assert self.codec is not None
        return self.codec.record(doc)

    def _insert(self, records: Sequence[Any]) -> None:
        assert self.codec is not None
        self.view.insert([self.codec.doc(r) for r in records])

    def count(self) -> int:
        """Number of stored documents (as this unit sees them)."""
        return self.view.count({})


# --------------------------------------------------------------------------- contacts


class MongoContacts(_Repository):
    """:class:`carecrm.core.storage.ContactRepository` on collection ``contacts``."""

    collection = "contacts"

    def add(self, record: ContactRecord) -> None:
        """Insert a new contact.  :raises DuplicateError: if the id exists."""
        self._insert([record])

    def add_many(self, records: Sequence[ContactRecord]) -> None:
        """Insert several contacts, all or none.  :raises DuplicateError:"""
        self._insert(records)

    def get(self, contact_id: uuid.UUID) -> ContactRecord:
        """The contact with this id.  :raises NotFound: if there is none."""
        record: ContactRecord = self._record(self.view.get(bid(contact_id)), f"no contact {contact_id}")
        return record

    def get_many(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ContactRecord]:
        """The contacts among ``contact_ids`` that exist, by id (``_id $in``, chunked)."""
        return {r.id: r for r in self._records(self.view.find_in("_id", _ids(contact_ids)))}

    def update(self, record: ContactRecord) -> ContactRecord:
        """Replace the contact if its version equals ``record.version`` (checked now and
        again at commit, where the replace is conditional on the stored version).

        :returns: the stored record, ``version`` increased by one.
        :raises NotFound: if the contact does not exist.
        :raises ConflictError: if the stored version differs.
        """
        key = bid(record.id)
        current = self.view.get(key)
        if current is None:
            raise NotFound(f"no contact {record.id}")
        if current["version"] != record.version:
            raise ConflictError.stale_version("contact", record.id, stored=current["version"], expected=record.version)
        stored = attrs.evolve(record, version=record.version + 1)
        assert self.codec is not None
        self.view.replace(self.codec.doc(stored), expect={"version": record.version})
        return self.codec.record(self.codec.doc(stored))  # type: ignore[no-any-return]

    def active_scores(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, float | None]:
        """``find({status: active, _id: {$in}}, {score})`` per chunk of ids."""
        docs = self.view.find_in("_id", _ids(contact_ids), {"status": ACTIVE}, projection={"score": 1, "status": 1})
        return {from_bson(d["_id"]): d.get("score") for d in docs}

    def set_scores(self, scores: Mapping[uuid.UUID, float | None]) -> None:
        """Set the clear score of each contact and move its version on (each replace is
        conditional on the version read here); unknown ids change nothing."""
        if not scores:
            return
        by_key = {bid(cid): score for cid, score in scores.items()}
        for doc in self.view.find_in("_id", list(by_key)):
            version = doc["version"]
            new = dict(doc, score=by_key[doc["_id"]], version=version + 1)
            self.view.replace(new, expect={"version": version})

    def _active(self, query: Mapping[str, Any]) -> dict[str, Any]:
        return and_({"status": ACTIVE}, query)

    def find_by_name(self, name_bidx: str) -> builtins.list[ContactRecord]:
        """Active contacts whose full-name blind index equals ``name_bidx``, oldest first."""
        docs = self.view.find(self._active({"name_bidx": name_bidx}), [("created_at", 1), ("_id", 1)])
        return self._records(docs)

    def find_by_family_name(self, family_name_bidx: str) -> builtins.list[ContactRecord]:
        """Active contacts whose family-name blind index matches, oldest first."""
        docs = self.view.find(self._active({"family_name_bidx": family_name_bidx}), [("created_at", 1), ("_id", 1)])
        return self._records(docs)

    def list(
        self, *, stage: str | None = None, after: uuid.UUID | None = None, limit: int = 100
    ) -> builtins.list[ContactRecord]:
        """Active contacts in id order, optionally of one stage, after id ``after``."""
        query: dict[str, Any] = {}
        if stage is not None:
            query["stage"] = stage
        if after is not None:
            query["_id"] = {"$gt": bid(after)}
        return self._records(self.view.find(self._active(query), [("_id", 1)], max(limit, 0)))

    # -- segments

    def _segment_query(self, criteria: Criteria, after: uuid.UUID | None) -> dict[str, Any]:
        compiled = compile_criteria(criteria, self._uow.interactions)
        query = and_({"status": ACTIVE}, compiled)
        if after is not None:
            query = and_(query, {"_id": {"$gt": bid(after)}})
        return query

    def select(
        self, criteria: Criteria, *, limit: int = 100, after: uuid.UUID | None = None
    ) -> builtins.list[ContactRecord]:
        """Active contacts matching a filter tree, in id order (one ``find`` after the
        interactions' contact ids of any ``HadInteraction`` node: see :func:`compile_criteria`).

        :raises ValueError: if ``limit`` is negative.
        """
        _limit(limit)
        if limit == 0:
            return []
        return self._records(self.view.find(self._segment_query(criteria, after), [("_id", 1)], limit))

    def select_ids(
        self, criteria: Criteria, *, limit: int = 1000, after: uuid.UUID | None = None
    ) -> builtins.list[uuid.UUID]:
        """The ids :meth:`select` would return (projection on ``_id`` only).

        :raises ValueError: if ``limit`` is negative.
        """
        _limit(limit)
        if limit == 0:
            return []
        docs = self.view.find(self._segment_query(criteria, after), [("_id", 1)], limit, projection={"_id": 1})
        return [from_bson(d["_id"]) for d in docs]

    def count_matching(self, criteria: Criteria) -> int:
        """How many active contacts match a filter tree (one ``count_documents``)."""
        return self.view.count(self._segment_query(criteria, None))


def compile_criteria(criteria: Criteria, interactions: MongoInteractions) -> dict[str, Any]:
    """A filter tree as a MongoDB query on ``contacts`` (two-valued logic).

    ``Eq(f, None)`` is ``{f: null}`` (null or missing); ``Not`` is ``$nor``, which matches a
    document whose field is null or missing, as the two-valued ``Not`` must; a ``Prefix``
    is an anchored, escaped, case-sensitive ``$regex`` (an index range scan); ``Range``
    is ``$gte``/``$lte`` (never matching null).  A ``HadInteraction`` node becomes
    ``{_id: {$in: ids}}`` where ``ids`` are the distinct contact ids of the interactions
    of those kinds in ``[since, until)``, found first by one ``$group`` on the interactions
    (index ``(kind, occurred_at)``): a correlated ``$lookup`` pipeline is not run by the
    in-process test double, and this form runs on both.
    """
    if isinstance(criteria, Eq):
        return {criteria.field: criteria.value}
    if isinstance(criteria, In):
        if not criteria.values:
            return dict(NOTHING)
        return {criteria.field: {"$in": list(criteria.values)}}
    if isinstance(criteria, Range):
        cond: dict[str, Any] = {}
        if criteria.min is not None:
            cond["$gte"] = criteria.min
        if criteria.max is not None:
            cond["$lte"] = criteria.max
        return {criteria.field: cond}
    if isinstance(criteria, Prefix):
        return {criteria.field: {"$regex": "^" + re.escape(criteria.prefix)}}
    if isinstance(criteria, HadInteraction):
        return {"_id": {"$in": interactions.contacts_with(criteria.kinds, criteria.since, criteria.until)}}
    if isinstance(criteria, And):
        return and_(*(compile_criteria(c, interactions) for c in criteria.children))
    if isinstance(criteria, Or):
        if not criteria.children:
            return dict(NOTHING)
        return {"$or": [compile_criteria(c, interactions) or {"_id": {"$exists": True}} for c in criteria.children]}
    if isinstance(criteria, Not):
        inner = compile_criteria(criteria.child, interactions)
        if not inner:
            return dict(NOTHING)
        return {"$nor": [inner]}
    raise TypeError(f"not a segment criterion: {type(criteria).__name__}")


# --------------------------------------------------------------------------- identities


class MongoIdentities(_Repository):
    """:class:`carecrm.core.storage.IdentityRepository` on collection ``identities``
    (unique on (contact_id, kind, bidx); ``bidx`` alone is not unique: households share)."""

    collection = "identities"
    _order = [("created_at", 1), ("_id", 1)]

    def add(self, record: IdentityRecord) -> None:
        """Insert an identity.  :raises DuplicateError: on the same (contact, kind, bidx)."""
        self._insert([record])

    def add_many(self, records: Sequence[IdentityRecord]) -> None:
        """Insert several identities, all or none."""
        self._insert(records)

    def find(self, kind: str, bidx: str) -> list[IdentityRecord]:
        """Identities of ``kind`` with this blind index, oldest first."""
        return self._records(self.view.find({"kind": kind, "bidx": bidx}, self._order))

    def find_many(self, keys: Iterable[tuple[str, str]]) -> list[IdentityRecord]:
        """Identities matching any (kind, bidx) pair: ``{kind, bidx: {$in}}`` per kind and chunk."""
        by_kind: dict[str, list[str]] = {}
        for kind, value in dict.fromkeys(keys):
            by_kind.setdefault(kind, []).append(value)
        out: list[IdentityRecord] = []
        for kind, values in by_kind.items():
            out.extend(self._records(self.view.find_in("bidx", values, {"kind": kind})))
        return out

    def for_contact(self, contact_id: uuid.UUID) -> list[IdentityRecord]:
        """All identities of one contact, oldest first."""
        return self._records(self.view.find({"contact_id": bid(contact_id)}, self._order))


# --------------------------------------------------------------------------- interactions

_TIMELINE = [("occurred_at", 1), ("_id", 1)]
_BY_CONTACT = [("contact_id", 1), ("occurred_at", 1), ("_id", 1)]
_TOUCH_FIELDS = ("contact_id", "kind", "occurred_at", "channel", "direction", "campaign", "channel_group", "touchpoint")


class MongoInteractions(_Repository):
    """:class:`carecrm.core.storage.InteractionRepository` on collection ``interactions``:
    unique on (source, idempotency_key), timeline index (contact_id, occurred_at, _id)."""

    collection = "interactions"

    def add(self, record: InteractionRecord) -> None:
        """Append an interaction.  :raises DuplicateError: on a repeated (source, key) or id."""
        self._insert([record])

    def add_many(self, records: Sequence[InteractionRecord]) -> None:
        """Append several interactions, all or none.  :raises DuplicateError:"""
        self._insert(records)

    def existing_keys(self, source: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` are stored for ``source`` (``{source, idempotency_key: {$in}}``)."""
        docs = self.view.find_in("idempotency_key", keys, {"source": source}, projection={"idempotency_key": 1})
        return {d["idempotency_key"] for d in docs}

    def get(self, interaction_id: uuid.UUID) -> InteractionRecord:
        """One interaction.  :raises NotFound: if there is none."""
        record: InteractionRecord = self._record(self.view.get(bid(interaction_id)), f"no interaction {interaction_id}")
        return record

    def timeline(
        self,
        contact_id: uuid.UUID,
        *,
        after: TimelineCursor | None = None,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
    ) -> list[InteractionRecord]:
        """A contact's interactions by (occurred_at, id): keyset pages on the timeline index.

        :raises ValueError: if the cursor's time is naive.
        """
        query: dict[str, Any] = {"contact_id": bid(contact_id)}
        if kinds is not None:
            query["kind"] = {"$in": list(kinds)}
        if after is not None:
            when, last = utc(after[0], "after"), bid(after[1])
            query = and_(query, {"$or": [{"occurred_at": {"$gt": when}}, {"occurred_at": when, "_id": {"$gt": last}}]})
        return self._records(self.view.find(query, _TIMELINE, max(limit, 0)))

    def clear_timelines(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[InteractionFacts]]:
        """The clear facts of each contact's interactions by (occurred_at, id): one ``find``
        per chunk of ids sorted on the timeline index, projecting the seven fields needed."""
        projection = {f: 1 for f in ("contact_id", "kind", "occurred_at", "channel", "direction", "attributes")}
        found: dict[uuid.UUID, list[InteractionFacts]] = {}
        for doc in self.view.find_in("contact_id", _ids(contact_ids), sort=_BY_CONTACT, projection=projection):
            cid = from_bson(doc["contact_id"])
            found.setdefault(cid, []).append(
                InteractionFacts(
                    id=from_bson(doc["_id"]),
                    contact_id=cid,
                    kind=doc["kind"],
                    occurred_at=from_bson(doc["occurred_at"]),
                    channel=doc.get("channel"),
                    direction=doc.get("direction"),
                    attributes=from_bson(doc.get("attributes") or {}),
                )
            )
        return found

    def latest_times(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """``$max`` of occurred_at per contact: one ``$group`` per chunk of ids."""
        found: dict[Any, datetime] = {}
        for chunk in chunks(_ids(contact_ids)):
            query = {"contact_id": {"$in": list(chunk)}}
            rows = self.view.aggregate(query, [{"$group": {"_id": "$contact_id", "latest": {"$max": "$occurred_at"}}}])
            for row in rows:
                found[row["_id"]] = from_bson(row["latest"])
            for doc in self.view.pending_matches(query):
                when = from_bson(doc["occurred_at"])
                if doc["contact_id"] not in found or found[doc["contact_id"]] < when:
                    found[doc["contact_id"]] = when
        return {from_bson(k): v for k, v in found.items()}

    def contacts_with(self, kinds: Sequence[str], since: datetime, until: datetime | None) -> list[Any]:
        """The distinct contact ids (as stored) of interactions of ``kinds`` with
        ``since <= occurred_at < until``: one ``$group`` on the (kind, occurred_at) index."""
        window: dict[str, Any] = {"$gte": utc(since, "since")}
        if until is not None:
            window["$lt"] = utc(until, "until")
        query = {"kind": {"$in": list(kinds)}, "occurred_at": window}
        ids = [row["_id"] for row in self.view.aggregate(query, [{"$group": {"_id": "$contact_id"}}])]
        ids.extend(d["contact_id"] for d in self.view.pending_matches(query))
        return list(dict.fromkeys(ids))

    def first_responses(
        self,
        *,
        inbound_kinds: Sequence[str],
        outbound_kinds: Sequence[str],
        contact_ids: Sequence[uuid.UUID] | None = None,
    ) -> list[FirstResponseRecord]:
        """Speed to lead, computed by the server in two grouped queries per chunk: the
        first inbound per contact (``$group`` ``$min``), then the first outbound at or after
        each contact's first inbound (``$match`` with one ``{contact_id, occurred_at: {$gte}}``
        branch per contact, ``$group`` ``$min``)."""
        if not inbound_kinds or (contact_ids is not None and not contact_ids):
            return []
        inbound = {"kind": {"$in": list(inbound_kinds)}, "direction": "inbound"}
        outbound = {"kind": {"$in": list(outbound_kinds)}, "direction": "outbound"}
        scopes: list[dict[str, Any]]
        if contact_ids is None:
            scopes = [{}]
        else:
            scopes = [{"contact_id": {"$in": list(c)}} for c in chunks(_ids(contact_ids))]
        firsts: dict[Any, datetime] = {}
        for scope in scopes:
            query = and_(scope, inbound)
            group = [{"$group": {"_id": "$contact_id", "first": {"$min": "$occurred_at"}}}]
            for row in self.view.aggregate(query, group):
                firsts[row["_id"]] = from_bson(row["first"])
            for doc in self.view.pending_matches(query):
                when = from_bson(doc["occurred_at"])
                if doc["contact_id"] not in firsts or when < firsts[doc["contact_id"]]:
                    firsts[doc["contact_id"]] = when
        answers: dict[Any, datetime] = {}
        if outbound_kinds:
            keys = list(firsts)
            for chunk in chunks(keys):
                query = and_(
                    outbound, {"$or": [{"contact_id": k, "occurred_at": {"$gte": utc(firsts[k])}} for k in chunk]}
                )
                group = [{"$group": {"_id": "$contact_id", "first": {"$min": "$occurred_at"}}}]
                for row in self.view.aggregate(query, group):
                    answers[row["_id"]] = from_bson(row["first"])
                for doc in self.view.pending_matches(query):
                    when = from_bson(doc["occurred_at"])
                    if doc["contact_id"] not in answers or when < answers[doc["contact_id"]]:
                        answers[doc["contact_id"]] = when
        out = [
            FirstResponseRecord(contact_id=from_bson(k), first_inbound_at=v, first_outbound_at=answers.get(k))
            for k, v in firsts.items()
        ]
        out.sort(key=lambda r: r.contact_id)
        return out

    def iter_touches(
        self,
        kinds: Sequence[str],
        *,
        skip_outbound: Sequence[str] = (),
        occurred_after: datetime | None = None,
        occurred_before: datetime | None = None,
    ) -> Iterator[TouchRecord]:
        """Interactions of ``kinds`` by (contact_id, occurred_at, id), streamed from one
        sorted cursor (:data:`PAGE` documents per round trip), projecting the touch fields.

        :raises ValueError: if a bound is naive.
        """
        window: dict[str, Any] = {}
        if occurred_after is not None:
            window["$gte"] = utc(occurred_after, "occurred_after")
        if occurred_before is not None:
            window["$lt"] = utc(occurred_before, "occurred_before")
        if not kinds:
            return iter(())
        query: dict[str, Any] = {"kind": {"$in": list(dict.fromkeys(kinds))}}
        if window:
            query["occurred_at"] = window
        if skip_outbound:
            query = and_(query, {"$nor": [{"kind": {"$in": list(skip_outbound)}, "direction": "outbound"}]})
        docs = self.view.stream(query, _BY_CONTACT, {f: 1 for f in _TOUCH_FIELDS}, batch=PAGE)
        return (
            TouchRecord(
                id=from_bson(d["_id"]),
                contact_id=from_bson(d["contact_id"]),
                kind=d["kind"],
                occurred_at=from_bson(d["occurred_at"]),
                channel=d.get("channel"),
                direction=d.get("direction"),
                campaign=d.get("campaign"),
                channel_group=d.get("channel_group"),
                touchpoint=from_bson(d.get("touchpoint") or {}),
            )
            for d in docs
        )


# --------------------------------------------------------------------------- stages, appointments


class MongoStages(_Repository):
    """:class:`carecrm.core.storage.StageRepository` on collection ``stage_changes``."""

    collection = "stage_changes"

    def add(self, record: StageChangeRecord) -> None:
        """Append a stage change."""
        self._insert([record])

    def add_many(self, records: Sequence[StageChangeRecord]) -> None:
        """Append several stage changes, all or none."""
        self._insert(records)

    def history(self, contact_id: uuid.UUID) -> list[StageChangeRecord]:
        """One contact's stage changes, oldest first."""
        return self._records(self.view.find({"contact_id": bid(contact_id)}, [("changed_at", 1), ("_id", 1)]))

    def first_reached(
        self,
        stages: Sequence[str],
        *,
        pipeline: str | None = None,
        reached_from: datetime | None = None,
        reached_before: datetime | None = None,
    ) -> Iterator[StageReachedRecord]:
        """``$min`` of changed_at per contact over its changes into ``stages``: one ``$group``
        (with the window as a ``$match`` after it), combined with the unit's pending changes
        and sorted by contact id.  The answer holds one small pair per contact.

        :raises ValueError: if a bound is naive.
        """
        window: dict[str, Any] = {}
        if reached_from is not None:
            window["$gte"] = utc(reached_from, "reached_from")
        if reached_before is not None:
            window["$lt"] = utc(reached_before, "reached_before")
        if not stages:
            return iter(())
        query: dict[str, Any] = {"to_stage": {"$in": list(dict.fromkeys(stages))}}
        if pipeline is not None:
            query["pipeline"] = pipeline
        pending = self.view.pending_matches(query)
        group: list[Mapping[str, Any]] = [{"$group": {"_id": "$contact_id", "first": {"$min": "$changed_at"}}}]
        if window and not pending:
            group.append({"$match": {"first": window}})
        found = {row["_id"]: from_bson(row["first"]) for row in self.view.aggregate(query, group)}
        for doc in pending:
            when = from_bson(doc["changed_at"])
            if doc["contact_id"] not in found or when < found[doc["contact_id"]]:
                found[doc["contact_id"]] = when
        low, high = window.get("$gte"), window.get("$lt")
        out = sorted(
            (from_bson(k), v) for k, v in found.items() if (low is None or v >= low) and (high is None or v < high)
        )
        return (StageReachedRecord(contact_id=cid, reached_at=at) for cid, at in out)


class MongoAppointments(_Repository):
    """:class:`carecrm.core.storage.AppointmentRepository` on collection ``appointments``."""

    collection = "appointments"


# --------------------------------------------------------------------------- consents, notes, tasks


class MongoConsents(_Repository):
    """:class:`carecrm.core.storage.ConsentRepository` on collection ``consents``."""

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
    """:class:`carecrm.core.storage.NoteRepository` on collection ``notes``."""

    collection = "notes"

    def add(self, record: NoteRecord) -> None:
        """Store a note."""
        self._insert([record])

    def for_contact(self, contact_id: uuid.UUID) -> list[NoteRecord]:
        """One contact's notes, oldest first."""
        return self._records(self.view.find({"contact_id": bid(contact_id)}, [("created_at", 1), ("_id", 1)]))


class MongoTasks(_Repository):
    """:class:`carecrm.core.storage.TaskRepository` on collection ``tasks``."""

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
    """:class:`carecrm.core.storage.ScoreRepository` on collection ``scores``
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
    """:class:`carecrm.core.storage.ReviewRepository` on collection ``reviews``
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
    """:class:`carecrm.core.storage.SegmentRepository` on collection ``segments`` (``_id`` = name)."""

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
    """:class:`carecrm.core.storage.InboxRepository` on collection ``inbox``."""

    collection = "inbox"
    _order = [("received_at", 1), ("_id", 1)]

    def add(self, record: InboxRecord) -> None:
        """Store a received payload."""
        self._insert([record])

    def add_many(self, records: Sequence[InboxRecord]) -> None:
        """Store several payloads, all or none."""
        self._insert(records)

    def add_new(self, records: Sequence[InboxRecord]) -> None:
        """Buffer the payloads whose (source, digest) this unit does not see stored; at
        commit each is an upsert that only inserts (``$setOnInsert`` on the unique
        ``ux_inbox_source_digest`` index), so a concurrent receiver's row wins quietly."""
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


# --------------------------------------------------------------------------- journals


class MongoAudit(_Repository):
    """:class:`carecrm.core.storage.AuditRepository` on collection ``audit_log``
    (``_id`` = seq, so a taken seq is refused by the database; append-only)."""

    collection = "audit_log"

    def append(self, record: AuditRecord) -> None:
        """Append an entry.  :raises DuplicateError: if ``seq`` is taken."""
        self._insert([record])

    def last(self) -> AuditRecord | None:
        """The entry with the highest ``seq``, or None for an empty log."""
        docs = self.view.find({}, [("_id", -1)], 1)
        return self._records(docs)[0] if docs else None

    def iter(self, *, since_seq: int = 0) -> Iterator[AuditRecord]:
        """Entries with ``seq > since_seq`` in seq order, streamed."""
        assert self.codec is not None
        codec = self.codec
        return (codec.record(d) for d in self.view.stream({"_id": {"$gt": since_seq}}, [("_id", 1)], batch=PAGE))


class MongoOutbox(_Repository):
    """:class:`carecrm.core.storage.OutboxRepository` on collection ``outbox`` (``_id`` =
    seq, so a taken seq is refused by the database)."""

    collection = "outbox"

    def append_many(self, records: Sequence[OutboxRecord]) -> None:
        """Append events.  :raises DuplicateError: if a ``seq`` is taken."""
        self._insert(records)

    def after(self, seq: int, *, limit: int = 100) -> list[OutboxRecord]:
        """At most ``limit`` events with a greater ``seq``, in seq order.

        :raises ValueError: if ``limit`` is negative."""
        if _limit(limit) == 0:
            return []
        return self._records(self.view.find({"_id": {"$gt": seq}}, [("_id", 1)], limit))

    def last_seq(self) -> int:
        """The highest stored ``seq``, 0 for an empty outbox."""
        docs = self.view.find({}, [("_id", -1)], 1)
        return int(docs[0]["_id"]) if docs else 0

    def prune(self, *, upto_seq: int, before: datetime) -> int:
        """Delete events with ``seq <= upto_seq`` written before ``before``; returns the count.

        :raises ValueError: if ``before`` is naive."""
        query = {"_id": {"$lte": upto_seq}, "at": {"$lt": utc(before, "before")}}
        docs = self.view.find(query, projection={"_id": 1})
        for doc in docs:
            self.view.delete(doc["_id"])
        return len(docs)


class MongoMeta(_Repository):
    """:class:`carecrm.core.storage.MetaRepository` on collection ``meta`` (``{_id: key, value}``)."""

    collection = "meta"

    def get(self, key: str) -> str | None:
        """The value, or None."""
        doc = self.view.get(key)
        return None if doc is None else str(doc["value"])

    def set(self, key: str, value: str) -> None:
        """Insert or replace."""
        self.view.replace({"_id": key, "value": value})

    def get_for_update(self, key: str) -> str | None:
        """The latest stored value, ``key`` locked until the unit ends: a lock document
        (:meth:`MongoUnitOfWork.lock` of ``meta:<key>``), then a fresh read."""
        self._uow.lock([f"meta:{key}"])
        return self.get(key)


# --------------------------------------------------------------------------- whole-database copies


def export_records(uow: MongoUnitOfWork, kind: str) -> Iterator[Any]:
    """:meth:`carecrm.core.storage.UnitOfWork.export_records` on the Mongo unit of work:
    the documents of ``kind``'s collection in ``_id`` order, streamed from one cursor
    (:data:`PAGE` documents per round trip), as stored records (``meta``: ``(key, value)``).

    :raises UnknownComponentError: for an unknown kind.
    """
    check_record_kind(kind)
    docs = uow.view(kind).stream({}, [("_id", 1)], batch=PAGE)
    if kind == "meta":
        return ((str(d["_id"]), str(d["value"])) for d in docs)
    codec = CODECS[kind]
    return (codec.record(d) for d in docs)


def import_records(uow: MongoUnitOfWork, kind: str, records: Sequence[Any]) -> int:
    """:meth:`carecrm.core.storage.UnitOfWork.import_records` on the Mongo unit of work:
    the documents are buffered (unique keys checked, one query per key and chunk) and
    written by ``insert_many`` at commit (``meta``: one upsert per pair).

    :raises UnknownComponentError: for an unknown kind.
    :raises DuplicateError: if a key is already stored.
    :raises ValueError: on a naive datetime.
    """
    check_record_kind(kind)
    view = uow.view(kind)
    if kind == "meta":
        for key, value in records:
            view.replace({"_id": str(key), "value": str(value)})
        return len(records)
    codec = CODECS[kind]
    view.insert([codec.doc(r) for r in records])
    return len(records)


def count_records(uow: MongoUnitOfWork, kind: str) -> int:
    """:meth:`carecrm.core.storage.UnitOfWork.count_records` on the Mongo unit of work (one
    ``count_documents``).  :raises UnknownComponentError: for an unknown kind."""
    check_record_kind(kind)
    return uow.view(kind).count({})


__all__ = [
    "CHUNK",
    "CODECS",
    "UNIQUE",
    "MongoAppointments",
    "MongoAudit",
    "MongoConsents",
    "MongoContacts",
    "MongoIdentities",
    "MongoInbox",
    "MongoInteractions",
    "MongoMeta",
    "MongoNotes",
    "MongoReviews",
    "MongoScores",
    "MongoSegments",
    "MongoStages",
    "MongoTasks",
    "compile_criteria",
    "count_records",
    "export_records",
    "import_records",
]
