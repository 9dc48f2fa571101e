"""Records ⇄ BSON documents, and the per-unit buffer of pending writes with its overlay.

**Documents.**  A record's fields become the keys of its document, ``id`` becomes ``_id``
(collections without an ``id`` field get a natural ``_id``: the audit ``seq``, the
segment ``name``, the meta key, ``"<contact hex>:<model>"`` for scores).  UUIDs are BSON
binary subtype 4 (``uuidRepresentation="standard"``), ciphertext is BSON binary, JSON
fields are sub-documents, datetimes are BSON dates (milliseconds, UTC).  Every value read
back goes through :func:`from_bson` (one place): BSON's ``FixedOffset`` time zones become
:data:`datetime.timezone.utc`, binary subtype 4 becomes :class:`uuid.UUID`, binary becomes
``bytes``, so the core never sees a BSON type.

**Pending writes.**  A unit of work buffers its writes per collection in a
:class:`Pending` (document by ``_id``; ``None`` for a deleted one) and applies them at
commit (see :mod:`carecrm.storage_backends.mongo.backend`).  Reads made inside the unit
see those writes through :class:`View`: the database is asked for the stored documents
that match *and were not touched by the unit* (``_id $nin`` the touched ids), and the
unit's own pending documents that match are added by :func:`matches`, which evaluates
the small subset of the MongoDB query language this backend emits on those few
in-memory documents only (stored rows are always filtered by the database).
"""

from __future__ import annotations

import heapq
import re
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
from bson.binary import Binary, UuidRepresentation

from carecrm.core.errors import DuplicateError
from carecrm.core.model.timeutil import stored_utc as utc

#: Keys per ``$in`` list / per ``$or`` of a query.
CHUNK = 500

#: A MongoDB sort specification: ``[(field, 1 | -1), ...]``.
Sort = Sequence[tuple[str, int]]


# --------------------------------------------------------------------------- values


def bid(value: uuid.UUID) -> Binary:
    """A UUID as BSON binary subtype 4 (the standard representation)."""
    return Binary.from_uuid(value, UuidRepresentation.STANDARD)


def to_bson(value: Any, what: str = "value") -> Any:
    """A record value as stored: UUID → binary subtype 4, datetime → UTC milliseconds
    (naive refused with ``ValueError``), everything else unchanged."""
    if isinstance(value, uuid.UUID):
        return bid(value)
    if isinstance(value, datetime):
        return utc(value, what)
    return value


def from_bson(value: Any) -> Any:
    """A stored value as the core expects it: THE one place where BSON types are turned
    back into Python ones (dates → aware ``timezone.utc``; binary subtype 4 → UUID;
    other binary → ``bytes``); sub-documents and lists are converted recursively."""
    if isinstance(value, datetime):
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
    if isinstance(value, Binary):
        if value.subtype == 4:
            return value.as_uuid(UuidRepresentation.STANDARD)
        return bytes(value)
    if isinstance(value, uuid.UUID):
        return value
    if isinstance(value, bytes):
        return bytes(value)
    if isinstance(value, dict):
        return {k: from_bson(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_bson(v) for v in value]
    return value


def normalize(doc: dict[str, Any]) -> dict[str, Any]:
    """A document as read from the server with its top-level UUIDs as binary subtype 4,
    the form this backend writes and matches pending documents in (pymongo with
    ``uuidRepresentation="standard"`` decodes subtype 4 to :class:`uuid.UUID`; mongomock
    hands back what was stored)."""
    for key, value in doc.items():
        if isinstance(value, uuid.UUID):
            doc[key] = bid(value)
    return doc


def score_key(contact_id: uuid.UUID, model: str) -> str:
    """The ``_id`` of a score document: ``"<contact hex>:<model>"``."""
    return f"{contact_id.hex}:{model}"


class Codec:
    """Record ⇄ document for one record class.

    :param cls: the attrs record class.
    :param id_field: the field stored as ``_id`` (``id``, ``seq``, ``name``), or None.
    :param key: for ``id_field=None``, the ``_id`` of a record.
    :param extra: derived fields stored beside the record's (sort helpers such as
        ``due_unknown``); ignored when reading.
    """

    def __init__(
        self,
        cls: type[Any],
        *,
        id_field: str | None = "id",
        key: Callable[[Any], Any] | None = None,
        extra: Callable[[dict[str, Any]], dict[str, Any]] | None = None,
    ) -> None:
        self.cls = cls
        self.id_field = id_field
        self.key = key
        self.extra = extra
        self.fields = tuple(f.name for f in attrs.fields(cls))

    def doc(self, record: Any) -> dict[str, Any]:
        """The document of ``record``.  :raises ValueError: on a naive datetime."""
        name = self.cls.__name__
        doc = {f: to_bson(getattr(record, f), f"{name}.{f}") for f in self.fields}
        if self.id_field is not None:
            doc["_id"] = doc.pop(self.id_field)
        else:
            assert self.key is not None
            doc["_id"] = self.key(record)
        if self.extra is not None:
            doc.update(self.extra(doc))  # noqa: S610 (not Django)
        return doc

    def record(self, doc: Mapping[str, Any]) -> Any:
        """The record of a stored document (unknown keys ignored, missing ones default)."""
        values = {}
        for f in self.fields:
            key = "_id" if f == self.id_field else f
            if key in doc:
                values[f] = from_bson(doc[key])
        return self.cls(**values)


# --------------------------------------------------------------------------- matching and ordering


def _rank(value: Any) -> tuple[int, Any]:
    """MongoDB's cross-type comparison order (null < numbers < strings < objects < binary
    < booleans < dates) as a sortable key."""
    if value is None:
        return (0, 0)
    if isinstance(value, bool):
        return (8, value)
    if isinstance(value, (int, float)):
        return (1, value)
    if isinstance(value, str):
        return (2, value)
    if isinstance(value, dict):
        return (3, repr(value))
    if isinstance(value, uuid.UUID):
        return (5, (16, 4, value.bytes))
    if isinstance(value, Binary):
        return (5, (len(value), value.subtype, bytes(value)))
    if isinstance(value, bytes):
        return (5, (len(value), 0, value))
    if isinstance(value, datetime):
        return (9, value)
    return (10, repr(value))


def _get(doc: Mapping[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def _same_bracket(a: Any, b: Any) -> bool:
    ra, rb = _rank(a)[0], _rank(b)[0]
    return ra == rb and ra != 0


def _field_matches(value: Any, cond: Any) -> bool:
    if isinstance(cond, dict) and cond and all(k.startswith("$") for k in cond):
        for op, arg in cond.items():
            if op == "$eq":
                ok = _equal(value, arg)
            elif op == "$ne":
                ok = not _equal(value, arg)
            elif op == "$in":
                ok = any(_equal(value, a) for a in arg)
            elif op == "$nin":
                ok = not any(_equal(value, a) for a in arg)
            elif op in ("$gt", "$gte", "$lt", "$lte"):
                if not _same_bracket(value, arg):
                    ok = False
                else:
                    a, b = _rank(value), _rank(arg)
                    ok = {"$gt": a > b, "$gte": a >= b, "$lt": a < b, "$lte": a <= b}[op]
            elif op == "$regex":
                ok = isinstance(value, str) and re.search(arg, value) is not None
            elif op == "$exists":
                ok = (value is not None) == bool(arg)
            else:
                raise ValueError(f"the pending-write overlay does not evaluate query operator {op}")
            if not ok:
                return False
        return True
    return _equal(value, cond)


def _equal(value: Any, want: Any) -> bool:
    if want is None:
        return value is None
    if value is None:
        return False
    if isinstance(value, bool) or isinstance(want, bool):
        return type(value) is type(want) and value == want
    if _rank(value)[0] != _rank(want)[0]:
        return False
    return bool(_rank(value) == _rank(want))


def matches(query: Mapping[str, Any], doc: Mapping[str, Any]) -> bool:
    """Whether ``doc`` matches ``query`` — the subset of the MongoDB query language this
    backend emits (``$and``, ``$or``, ``$nor``, equality with ``None`` for "null or
    missing", ``$in``, ``$nin``, ``$ne``, ``$gt``/``$gte``/``$lt``/``$lte`` within one
    type bracket, ``$regex``, ``$exists``), evaluated on a unit's pending documents only.

    :raises NotImplementedError: for an operator outside that subset (a bug here, never data).
    """
    for key, cond in query.items():
        if key == "$and":
            if not all(matches(q, doc) for q in cond):
                return False
        elif key == "$or":
            if not any(matches(q, doc) for q in cond):
                return False
        elif key == "$nor":
            if any(matches(q, doc) for q in cond):
                return False
        elif not _field_matches(_get(doc, key), cond):
            return False
    return True


def sort_docs(docs: list[dict[str, Any]], sort: Sort) -> list[dict[str, Any]]:
    """``docs`` ordered as MongoDB orders them for ``sort`` (stable, cross-type order)."""
    out = list(docs)
    for field, direction in reversed(list(sort)):

        def key(doc: Mapping[str, Any], field: str = field) -> tuple[int, Any]:
            return _rank(_get(doc, field))

        out.sort(key=key, reverse=direction < 0)
    return out


def sort_key(sort: Sort) -> Callable[[Mapping[str, Any]], tuple[Any, ...]]:
    """A key function for ascending-only sorts (merging streams)."""
    if any(direction < 0 for _, direction in sort):
        raise ValueError("sort_key: ascending sorts only")
    fields = [f for f, _ in sort]
    return lambda d: tuple(_rank(_get(d, f)) for f in fields)


def and_(*queries: Mapping[str, Any]) -> dict[str, Any]:
    """The conjunction of ``queries`` (empty ones dropped; ``{}`` matches everything)."""
    parts = [dict(q) for q in queries if q]
    if not parts:
        return {}
    if len(parts) == 1:
        return parts[0]
    return {"$and": parts}


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    """``items`` in slices of ``size``."""
    for start in range(0, len(items), size):
        yield items[start : start + size]


# --------------------------------------------------------------------------- pending writes


@attrs.define
class Op:
    """One pending write of a document: ``insert`` (new), ``insert_new`` (new unless a
    document with the same ``expect`` key fields is stored by then: an upsert that only
    inserts), ``replace`` (of a stored one, optionally only if it still matches ``expect``,
    e.g. ``{"version": 3}``), ``delete``."""

    kind: str
    doc: dict[str, Any] | None
    expect: dict[str, Any] | None = None


class Pending:
    """The pending writes of one unit of work to one collection, by ``_id``, in order."""

    def __init__(self) -> None:
        self.ops: dict[Any, Op] = {}

    def __bool__(self) -> bool:
        return bool(self.ops)

    def touched(self) -> list[Any]:
        """The ``_id`` of every document this unit wrote or deleted."""
        return list(self.ops)

    def docs(self) -> Iterator[dict[str, Any]]:
        """The unit's version of every document it inserted or replaced."""
        for op in self.ops.values():
            if op.doc is not None:
                yield op.doc

    def known(self, key: Any) -> bool:
        """Whether the unit decides what ``key`` is (written or deleted here)."""
        return key in self.ops

    def get(self, key: Any) -> dict[str, Any] | None:
        """The unit's version of ``key`` (None if it deleted it)."""
        return self.ops[key].doc

    def insert(self, doc: dict[str, Any]) -> None:
        """A new document (a document deleted earlier in the unit is replaced instead)."""
        key = doc["_id"]
        old = self.ops.get(key)
        if old is not None and old.kind == "delete":
            self.ops[key] = Op("replace", doc)
        else:
            self.ops[key] = Op("insert", doc)

    def insert_new(self, doc: dict[str, Any], key: dict[str, Any]) -> None:
        """A new document, written at commit only if no stored document matches ``key``."""
        self.ops[doc["_id"]] = Op("insert_new", doc, key)

    def replace(self, doc: dict[str, Any], expect: dict[str, Any] | None = None) -> None:
        """A new version of a document; the first ``expect`` of a stored one is kept."""
        key = doc["_id"]
        old = self.ops.get(key)
        if old is None:
            self.ops[key] = Op("replace", doc, expect)
        else:
            old.doc = doc
            if old.kind == "delete":
                old.kind = "replace"

    def delete(self, key: Any) -> None:
        """Delete ``key`` (a document inserted by this unit is simply forgotten)."""
        old = self.ops.get(key)
        if old is not None and old.kind in ("insert", "insert_new"):
            del self.ops[key]
        else:
            self.ops[key] = Op("delete", None)

    def clear(self) -> None:
        """Forget every pending write (rollback, or after commit)."""
        self.ops.clear()


class View:
    """One collection as a unit of work sees it: stored documents overlaid with the unit's
    pending writes (see the module docstring).

    :param raw: a callable returning the pymongo (or mongomock) collection; it raises
        :class:`~carecrm.core.errors.StorageError` outside an open unit of work.
    :param name: the collection's name, for messages.
    :param unique: the unique keys (tuples of field names, ``("_id",)`` included) that
        :meth:`insert` checks before buffering, so a duplicate is refused at once.
    :param run: runs a database call, translating driver errors
        (:func:`carecrm.storage_backends.mongo.errors.translated`).
    """

    def __init__(
        self,
        raw: Callable[[], Any],
        name: str,
        unique: Sequence[tuple[str, ...]],
        run: Callable[[str, Callable[[], Any]], Any],
    ) -> None:
        self._raw = raw
        self.name = name
        self.unique = tuple(unique)
        self.pending = Pending()
        self._run = run

    @property
    def raw(self) -> Any:
        """The driver's collection."""
        return self._raw()

    def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` against the database with error translation."""
        return self._run(self.name, fn)

    def stored_query(self, query: Mapping[str, Any]) -> dict[str, Any]:
        """``query`` restricted to stored documents this unit did not touch."""
        touched = self.pending.touched()
        if not touched:
            return dict(query)
        return and_(query, {"_id": {"$nin": touched}})

    def pending_matches(self, query: Mapping[str, Any]) -> list[dict[str, Any]]:
        """The unit's pending documents matching ``query``."""
        if not self.pending:
            return []
        return [d for d in self.pending.docs() if matches(query, d)]

    # -- reads

    def get(self, key: Any) -> dict[str, Any] | None:
        """The document ``_id == key`` as this unit sees it, or None."""
        if self.pending.known(key):
            return self.pending.get(key)
        doc: dict[str, Any] | None = self.call(lambda: self.raw.find_one({"_id": key}))
        return None if doc is None else normalize(doc)

    def find(
        self,
        query: Mapping[str, Any],
        sort: Sort | None = None,
        limit: int | None = None,
        projection: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Matching documents, ordered by ``sort``, at most ``limit`` (one database query)."""
        if limit is not None and limit <= 0:
            return []

        def run() -> list[dict[str, Any]]:
            cursor = self.raw.find(self.stored_query(query), dict(projection) if projection else None)
            if sort:
                cursor = cursor.sort(list(sort))
            if limit is not None:
                cursor = cursor.limit(limit)
            return [normalize(d) for d in cursor]

        stored: list[dict[str, Any]] = self.call(run)
        extra = self.pending_matches(query)
        if not extra:
            return stored
        merged = stored + extra
        if sort:
            merged = sort_docs(merged, sort)
        return merged[:limit] if limit is not None else merged

    def find_in(
        self,
        field: str,
        values: Iterable[Any],
        query: Mapping[str, Any] | None = None,
        sort: Sort | None = None,
        projection: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Documents whose ``field`` is one of ``values`` (one query per :data:`CHUNK`)."""
        wanted = list(dict.fromkeys(values))
        out: list[dict[str, Any]] = []
        for chunk in chunks(wanted):
            out.extend(self.find(and_(query or {}, {field: {"$in": list(chunk)}}), sort, None, projection))
        if sort and len(wanted) > CHUNK:
            out = sort_docs(out, sort)
        return out

    def count(self, query: Mapping[str, Any] | None = None) -> int:
        """How many documents match (one ``count_documents``)."""
        q = query or {}
        stored = int(self.call(lambda: self.raw.count_documents(self.stored_query(q))))
        return stored + len(self.pending_matches(q))

    def stream(
        self, query: Mapping[str, Any], sort: Sort, projection: Mapping[str, Any] | None = None, batch: int = 1000
    ) -> Iterator[dict[str, Any]]:
        """Matching documents in ``sort`` order (ascending), streamed from a database cursor
        (``batch`` documents per round trip) merged with the unit's pending ones."""
        cursor = self.call(
            lambda: (
                self.raw.find(self.stored_query(query), dict(projection) if projection else None)
                .sort(list(sort))
                .batch_size(batch)
            )
        )
        extra = sort_docs(self.pending_matches(query), sort)
        stored = _translated_iter(cursor, lambda fn: self.call(fn))
        if not extra:
            yield from stored
            return
        yield from heapq.merge(stored, extra, key=sort_key(sort))

    def aggregate(self, query: Mapping[str, Any], stages: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """``[{"$match": query restricted to untouched stored documents}, *stages]`` run by
        the database; the caller combines the result with :meth:`pending_matches`."""
        pipeline = [{"$match": self.stored_query(query)}, *stages]
        return list(self.call(lambda: [normalize(d) for d in self.raw.aggregate(pipeline)]))

    # -- writes

    def check_unique(self, docs: Sequence[dict[str, Any]]) -> None:
        """Refuse ``docs`` if any unique key repeats inside them, among the unit's pending
        documents or among stored ones (one query per key and :data:`CHUNK`).

        :raises DuplicateError: naming the collection and key fields, never a value.
        """
        for fields in self.unique:
            seen: set[tuple[Any, ...]] = set()
            for doc in docs:
                values = tuple(_hashable(doc.get(f)) for f in fields)
                if values in seen:
                    raise self._duplicate(fields)
                seen.add(values)
            if self.pending:
                taken = {tuple(_hashable(d.get(f)) for f in fields) for d in self.pending.docs()}
                if seen & taken:
                    raise self._duplicate(fields)
            for chunk in chunks(docs):
                if len(fields) == 1:
                    query: dict[str, Any] = {fields[0]: {"$in": [d.get(fields[0]) for d in chunk]}}
                else:
                    query = {"$or": [{f: d.get(f) for f in fields} for d in chunk]}
                if self._find_one(self.stored_query(query)) is not None:
                    raise self._duplicate(fields)

    def _find_one(self, query: dict[str, Any]) -> Any:
        return self.call(lambda: self.raw.find_one(query, {"_id": 1}))

    def _duplicate(self, fields: tuple[str, ...]) -> DuplicateError:
        names = ["id" if f == "_id" else f for f in fields]
        described = names[0] if len(names) == 1 else "(" + ", ".join(names) + ")"
        err = DuplicateError(f"{self.name}: a document with the same {described} already exists")
        err.table = self.name  # type: ignore[attr-defined]
        err.columns = tuple(names)  # type: ignore[attr-defined]
        return err

    def insert(self, docs: Sequence[dict[str, Any]]) -> None:
        """Buffer new documents, all or none.  :raises DuplicateError: see :meth:`check_unique`."""
        if not docs:
            return
        self.check_unique(docs)
        for doc in docs:
            self.pending.insert(doc)

    def replace(self, doc: dict[str, Any], expect: dict[str, Any] | None = None) -> None:
        """Buffer a new version of a document (an upsert at commit, or a conditional
        replace when ``expect`` is given)."""
        self.pending.replace(doc, expect)

    def delete(self, key: Any) -> None:
        """Buffer the deletion of ``_id == key``."""
        self.pending.delete(key)


def _hashable(value: Any) -> Any:
    if isinstance(value, dict):
        return tuple(sorted((k, _hashable(v)) for k, v in value.items()))
    if isinstance(value, list):
        return tuple(_hashable(v) for v in value)
    return value


def _translated_iter(cursor: Any, call: Callable[[Callable[[], Any]], Any]) -> Iterator[dict[str, Any]]:
    """Iterate a driver cursor, translating errors raised while fetching a batch."""
    iterator = iter(cursor)
    sentinel = object()
    while True:
        doc = call(lambda: next(iterator, sentinel))
        if doc is sentinel:
            return
        yield normalize(doc)


def group_ids(values: Iterable[Any]) -> list[Any]:
    """Distinct values, first-seen order."""
    return list(dict.fromkeys(values))


__all__ = [
    "CHUNK",
    "Codec",
    "Op",
    "Pending",
    "View",
    "and_",
    "bid",
    "chunks",
    "from_bson",
    "group_ids",
    "matches",
    "normalize",
    "score_key",
    "sort_docs",
    "sort_key",
    "to_bson",
    "utc",
]
