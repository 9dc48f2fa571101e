"""The repositories of the SQL unit of work (SQLAlchemy Core, 2.0 style).

Each class implements one repository Protocol of :mod:`carecrm.core.storage` over the
connection of its :class:`~carecrm.storage_backends.sql.backend.SqlUnitOfWork`.  Records go
in and come out as :mod:`carecrm.core.records` instances; column names are field names.

Rules shared by every repository:

* a datetime field or argument must be timezone-aware (``ValueError`` otherwise); it is
  stored as UTC truncated to milliseconds;
* an INSERT that breaks a unique key raises :class:`~carecrm.core.errors.DuplicateError`
  and leaves the unit of work usable (a SAVEPOINT guards multi-row inserts everywhere and
  single-row inserts on PostgreSQL, where a failed statement aborts the transaction);
  ``add_many`` stores all rows or none;
* long lists of keys are sent in chunks of :data:`CHUNK` (one statement per chunk);
* "streamed" iterators page through the table by key (:data:`PAGE` rows per query), so they
  hold no server cursor open and other statements may run between two rows;
* the statements of the hot paths (ingest, timeline reads, the audit chain) are built once
  with bind parameters and reused (:meth:`_Repository._statement`): building a Core
  statement and its cache key costs about 3x more than executing it on SQLite
  (docs/performance.md).
"""

from __future__ import annotations

import functools
import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult

from carecrm.core.criteria import NUMERIC_FIELDS, And, Criteria, Eq, HadInteraction, In, Not, Or, Prefix, Range
from carecrm.core.errors import ConflictError, DuplicateError, NotFound
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
from carecrm.core.timeutil import stored_utc as utc
from carecrm.storage_backends.sql import schema
from carecrm.storage_backends.sql.errors import translated

if TYPE_CHECKING:
    from carecrm.storage_backends.sql.backend import SqlUnitOfWork

#: Keys per IN (...) list.
CHUNK = 500
#: Rows per query of a streamed iterator.
PAGE = 1000
#: Rows per query of :meth:`SqlInteractions.iter_touches` and :meth:`SqlStages.first_reached`
#: (attribution reads every journey: larger pages halve the queries; a page of touches is
#: about 2 MiB).
TOUCH_PAGE = 5000
#: The columns of a :class:`TouchRecord`, in the order it is built from.
_TOUCH_COLUMNS = (
    "id",
    "contact_id",
    "kind",
    "occurred_at",
    "channel",
    "direction",
    "campaign",
    "channel_group",
    "touchpoint",
)

R = TypeVar("R")


def _chunks(items: Sequence[R], size: int = CHUNK) -> Iterator[Sequence[R]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def upsert_statement(dialect: str, table: sa.Table, row: dict[str, Any], keys: Sequence[str]) -> sa.Executable:
    """One atomic "insert or replace by ``keys``" statement in the dialect's own syntax
    (``ON CONFLICT DO UPDATE`` on PostgreSQL and SQLite, ``ON DUPLICATE KEY UPDATE`` on
    MariaDB/MySQL)."""
    changes = [name for name in row if name not in keys]
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        pg = pg_insert(table).values(row)
        return pg.on_conflict_do_update(index_elements=list(keys), set_={n: pg.excluded[n] for n in changes})
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        lite = sqlite_insert(table).values(row)
        return lite.on_conflict_do_update(index_elements=list(keys), set_={n: lite.excluded[n] for n in changes})
    from sqlalchemy.dialects.mysql import insert as mysql_insert

    my = mysql_insert(table).values(row)
    return my.on_duplicate_key_update({n: my.inserted[n] for n in changes})


class _Codec:
    """Record ⇄ row dict for one record class (field names are column names)."""

    def __init__(self, cls: type[Any], table: sa.Table) -> None:
        self.cls = cls
        self.table = table
        self.fields = tuple(f.name for f in attrs.fields(cls))
        # Field types are strings under ``from __future__ import annotations``.
        self.datetimes = tuple(
            f.name for f in attrs.fields(cls) if f.type is datetime or str(f.type).startswith("datetime")
        )
        columns = {c.name for c in table.columns}
        if set(self.fields) != columns:
            raise RuntimeError(f"schema of {table.name} does not match {cls.__name__}")

    def row(self, record: Any) -> dict[str, Any]:
        """The row for ``record``.  :raises ValueError: on a naive datetime."""
        row = {name: getattr(record, name) for name in self.fields}
        for name in self.datetimes:
            value = row[name]
            if value is not None:
                row[name] = utc(value, f"{self.table.name}.{name}")
        return row

    def record(self, row: sa.Row[Any]) -> Any:
        """The record for a result row."""
        return self.cls(**row._mapping)


_CODECS: dict[type[Any], _Codec] = {}

#: Statements built once per (table, name) and reused with bind parameters.
_STATEMENTS: dict[tuple[str, Any], Any] = {}


def _codec(cls: type[Any], table: sa.Table) -> _Codec:
    codec = _CODECS.get(cls)
    if codec is None:
        codec = _CODECS[cls] = _Codec(cls, table)
    return codec


class _Repository:
    """Base: the unit of work's connection, error translation, inserts and upserts."""

    table: sa.Table
    record_class: type[Any]

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow
        self._codec = _codec(self.record_class, self.table)

    # -- execution

    def _execute(self, statement: sa.Executable, params: Any = None) -> CursorResult[Any]:
        conn = self._uow.connection
        with translated(self.table.name, self._uow.where):
            return conn.execute(statement, params) if params is not None else conn.execute(statement)

    def _statement(self, name: Any, build: Callable[[], Any]) -> Any:
        """The statement ``name`` of this table, built by ``build()`` on first use.

        Statements are immutable and engine-independent, so one object serves every
        unit of work; SQLAlchemy then reuses its cache key and compiled form.
        """
        key = (self.table.name, name)
        statement = _STATEMENTS.get(key)
        if statement is None:
            statement = _STATEMENTS[key] = build()
        return statement

    def _records(self, statement: sa.Executable, params: Any = None) -> list[Any]:
        codec = self._codec
        return [codec.record(row) for row in self._execute(statement, params)]

    def _one(self, statement: sa.Executable, missing: str, params: Any = None) -> Any:
        row = self._execute(statement, params).first()
        if row is None:
            raise NotFound(missing)
        return self._codec.record(row)

    def _count(self) -> int:
        return int(self._execute(sa.select(sa.func.count()).select_from(self.table)).scalar_one())

    # -- writes

    def _insert_rows(self, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        conn = self._uow.connection
        statement = self._statement("insert", lambda: sa.insert(self.table))
        with translated(self.table.name, self._uow.where):
            if len(rows) == 1 and not self._uow.savepoint_single_inserts:
                conn.execute(statement, rows[0])
            else:
                with conn.begin_nested():
                    conn.execute(statement, rows if len(rows) > 1 else rows[0])

    def _insert(self, record: Any) -> None:
        self._insert_rows([self._codec.row(record)])

    def _insert_many(self, records: Sequence[Any]) -> None:
        row = self._codec.row
        self._insert_rows([row(r) for r in records])

    def _upsert(self, row: dict[str, Any], keys: Sequence[str]) -> None:
        """Insert ``row`` or replace the row with the same ``keys`` (one statement)."""
        self._execute(upsert_statement(self._uow.dialect_name, self.table, row, keys))


# --------------------------------------------------------------------------- contacts


class SqlContacts(_Repository):
    """:class:`carecrm.core.storage.ContactRepository` on table ``contacts``."""

    table = schema.contacts
    record_class = ContactRecord

    def add(self, record: ContactRecord) -> None:
        """Insert a new contact.  :raises DuplicateError: if the id exists."""
        self._insert(record)

    def add_many(self, records: Sequence[ContactRecord]) -> None:
        """Insert several contacts in one statement; all or none.  :raises DuplicateError:"""
        self._insert_many(records)

    def get(self, contact_id: uuid.UUID) -> ContactRecord:
        """The contact with this id.  :raises NotFound: if there is none."""
        t = self.table
        statement = self._statement("get", lambda: sa.select(t).where(t.c.id == sa.bindparam("p_id")))
        record: ContactRecord = self._one(statement, f"no contact {contact_id}", {"p_id": contact_id})
        return record

    def get_many(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ContactRecord]:
        """The contacts among ``contact_ids`` that exist, by id."""
        t = self.table
        ids = list(dict.fromkeys(contact_ids))
        found: dict[uuid.UUID, ContactRecord] = {}
        statement = self._statement(
            "get_many", lambda: sa.select(t).where(t.c.id.in_(sa.bindparam("p_ids", expanding=True)))
        )
        for chunk in _chunks(ids):
            for record in self._records(statement, {"p_ids": list(chunk)}):
                found[record.id] = record
        return found

    def update(self, record: ContactRecord) -> ContactRecord:
        """Replace the contact if its stored version equals ``record.version``.

        :returns: the stored record, ``version`` increased by one.
        :raises NotFound: if the contact does not exist.
        :raises ConflictError: if the stored version differs.
        """
        t = self.table
        row = self._codec.row(record)
        row["version"] = record.version + 1
        values = {name: value for name, value in row.items() if name != "id"}
        result = self._execute(sa.update(t).where(t.c.id == record.id, t.c.version == record.version).values(**values))
        if result.rowcount == 1:
            return ContactRecord(**row)
        stored = self._execute(sa.select(t.c.version).where(t.c.id == record.id)).scalar_one_or_none()
        if stored is None:
            raise NotFound(f"no contact {record.id}")
        raise ConflictError.stale_version("contact", record.id, stored=stored, expected=record.version)

    def active_scores(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, float | None]:
        """``SELECT id, score FROM contacts WHERE status = 'active' AND id IN (...)``, one
        query per :data:`CHUNK` ids."""
        t = self.table
        ids = list(dict.fromkeys(contact_ids))
        statement = self._statement(
            "active_scores",
            lambda: sa.select(t.c.id, t.c.score).where(
                t.c.status == ACTIVE, t.c.id.in_(sa.bindparam("p_ids", expanding=True))
            ),
        )
        found: dict[uuid.UUID, float | None] = {}
        for chunk in _chunks(ids):
            for row in self._execute(statement, {"p_ids": list(chunk)}):
                found[row.id] = row.score
        return found

    def set_scores(self, scores: Mapping[uuid.UUID, float | None]) -> None:
        """``UPDATE contacts SET score = :score, version = version + 1 WHERE id = :id``, one
        executemany statement built once; unknown ids change nothing."""
        if not scores:
            return
        t = self.table
        statement = self._statement(
            "set_scores",
            lambda: (
                sa.update(t)
                .where(t.c.id == sa.bindparam("p_id", type_=t.c.id.type))
                .values(score=sa.bindparam("p_score", type_=t.c.score.type), version=t.c.version + 1)
            ),
        )
        self._execute(statement, [{"p_id": cid, "p_score": score} for cid, score in scores.items()])

    def _active(self) -> sa.Select[Any]:
        t = self.table
        return sa.select(t).where(t.c.status == ACTIVE)

    def find_by_name(self, name_bidx: str) -> list[ContactRecord]:
        """Active contacts whose full-name blind index equals ``name_bidx``, oldest first."""
        t = self.table
        return self._records(self._active().where(t.c.name_bidx == name_bidx).order_by(t.c.created_at, t.c.id))

    def find_by_family_name(self, family_name_bidx: str) -> list[ContactRecord]:
        """Active contacts whose family-name blind index matches, oldest first."""
        t = self.table
        return self._records(
            self._active().where(t.c.family_name_bidx == family_name_bidx).order_by(t.c.created_at, t.c.id)
        )

    def list(
        self, *, stage: str | None = None, after: uuid.UUID | None = None, limit: int = 100
    ) -> list[ContactRecord]:
        """Active contacts in id order, optionally of one stage, after id ``after``."""
        t = self.table
        statement = self._active()
        if stage is not None:
            statement = statement.where(t.c.stage == stage)
        if after is not None:
            statement = statement.where(t.c.id > after)
        return self._records(statement.order_by(t.c.id).limit(max(limit, 0)))

    def count(self) -> int:
        """Number of stored contacts, whatever their status."""
        return self._count()

    # -- segments

    def _segment(self, what: str, criteria: Criteria, after: uuid.UUID | None, limit: int | None) -> Any:
        """Run the segment statement ``what`` (``rows``, ``ids`` or ``count``) of ``criteria``."""
        shape, params = criteria_shape(criteria)
        if after is not None:
            params["p_after"] = after
        if limit is not None:
            if limit < 0:
                raise ValueError("limit: must be 0 or more")
            params["p_limit"] = limit
        return self._execute(_segment_statement(what, shape, after is not None), params)

    def select(self, criteria: Criteria, *, limit: int = 100, after: uuid.UUID | None = None) -> list[ContactRecord]:
        """Active contacts matching ``criteria`` in id order after ``after``, at most ``limit``:
        one statement (:func:`criteria_shape`).  :raises ValueError: if ``limit`` < 0."""
        codec = self._codec
        return [codec.record(row) for row in self._segment("rows", criteria, after, limit)]

    def select_ids(self, criteria: Criteria, *, limit: int = 1000, after: uuid.UUID | None = None) -> list[uuid.UUID]:
        """The ids :meth:`select` would return (one statement reading the id only).
        :raises ValueError: if ``limit`` < 0."""
        return list(self._segment("ids", criteria, after, limit).scalars())

    def count_matching(self, criteria: Criteria) -> int:
        """How many active contacts match ``criteria`` (one ``SELECT count(*)`` statement)."""
        return int(self._segment("count", criteria, None, None).scalar_one())


#: A filter tree's shape: what its SQL condition looks like, without the values.
Shape = tuple[Any, ...]


def criteria_shape(criteria: Criteria) -> tuple[Shape, dict[str, Any]]:
    """A segment filter tree as its shape and its bind parameters.

    Trees of the same shape (the same nodes, fields and negations; any values, any number
    of values in an ``IN`` list) share one statement: :func:`_segment_statement` builds it
    once per shape with bind parameters ``s0``, ``s1``, ... and SQLAlchemy reuses its cache
    key and compiled form, since building a Core statement costs more than running a small
    query on SQLite (docs/performance.md).  ``Not`` is pushed down to the leaves here (De
    Morgan), so the shape holds only ``all``/``any`` and possibly negated leaves.

    :returns: ``(shape, {"s0": value, ...})``; numbers are bound as floats, so 3 and 3.0
        share a statement on every database.
    """
    params: dict[str, Any] = {}
    return _shape(criteria, False, params), params


def _shape(node: Criteria, negate: bool, params: dict[str, Any]) -> Shape:
    def bind(value: Any) -> None:
        params[f"s{len(params)}"] = value

    if isinstance(node, (And, Or)):
        children = tuple(_shape(child, negate, params) for child in node.children)
        # NOT (a AND b) = NOT a OR NOT b; an empty AND is true, an empty OR false
        return ("all" if isinstance(node, And) != negate else "any", children)
    if isinstance(node, Not):
        return _shape(node.child, not negate, params)
    if isinstance(node, HadInteraction):
        bind(list(node.kinds))
        bind(node.since)
        if node.until is not None:
            bind(node.until)
        return ("had", negate, node.until is not None)
    value: Callable[[Any], Any] = float if node.field in NUMERIC_FIELDS else str
    if isinstance(node, Eq):
        if node.value is None:
            return ("null", node.field, negate)
        bind(value(node.value))
        return ("eq", node.field, negate)
    if isinstance(node, In):
        if not node.values:
            return ("all" if negate else "any", ())
        bind([value(v) for v in node.values])
        return ("in", node.field, negate)
    if isinstance(node, Range):
        for bound in (node.min, node.max):
            if bound is not None:
                bind(value(bound))
        return ("range", node.field, negate, node.min is not None, node.max is not None)
    if isinstance(node, Prefix):
        bind(node.prefix)
        bind(len(node.prefix))
        return ("prefix", node.field, negate)
    raise TypeError(f"not a segment criterion: {type(node).__name__}")


def _condition(shape: Shape, names: Iterator[str]) -> sa.ColumnElement[bool]:
    """The SQL condition of a shape, its bind parameters named by ``names`` in order.

    Leaves compare clear columns of ``contacts``; ``had`` becomes a correlated ``EXISTS
    (SELECT 1 FROM interactions WHERE interactions.contact_id = contacts.id AND kind IN (...)
    AND occurred_at >= :since [AND occurred_at < :until])``, answered per candidate by the
    (contact_id, occurred_at, id) index.  A negated leaf also matches NULL (``city IS NULL
    OR city <> :v``), so logic is two-valued as :mod:`carecrm.core.criteria` defines it.  A
    prefix is ``substr(col, 1, :n) = :p``: case-sensitive on every database (SQLite's LIKE
    folds ASCII case) with no wildcard to escape.
    """
    kind = shape[0]
    if kind in ("all", "any"):
        parts = [_condition(child, names) for child in shape[1]]
        return sa.and_(sa.true(), *parts) if kind == "all" else sa.or_(sa.false(), *parts)
    contacts = schema.contacts
    if kind == "had":
        i = schema.interactions
        clauses = [
            i.c.contact_id == contacts.c.id,
            i.c.kind.in_(sa.bindparam(next(names), expanding=True)),
            i.c.occurred_at >= sa.bindparam(next(names), type_=i.c.occurred_at.type),
        ]
        if shape[2]:
            clauses.append(i.c.occurred_at < sa.bindparam(next(names), type_=i.c.occurred_at.type))
        exists = sa.exists(sa.select(sa.literal_column("1")).where(*clauses))
        return ~exists if shape[1] else exists
    column = contacts.c[shape[1]]
    negate = shape[2]
    positive: sa.ColumnElement[bool]
    if kind == "null":
        return column.is_not(None) if negate else column.is_(None)
    if kind == "eq":
        positive = column == sa.bindparam(next(names), type_=column.type)
    elif kind == "in":
        positive = column.in_(sa.bindparam(next(names), expanding=True, type_=column.type))
    elif kind == "range":
        bounds = []
        if shape[3]:
            bounds.append(column >= sa.bindparam(next(names), type_=column.type))
        if shape[4]:
            bounds.append(column <= sa.bindparam(next(names), type_=column.type))
        positive = sa.and_(*bounds)
    elif kind == "prefix":
        prefix = sa.bindparam(next(names), type_=column.type)
        length = sa.bindparam(next(names), type_=sa.Integer())
        positive = sa.func.substr(column, 1, length) == prefix
    else:
        raise TypeError(f"unknown segment shape {kind!r}")
    if not negate:
        return positive
    return sa.or_(column.is_(None), sa.not_(positive))


@functools.lru_cache(maxsize=512)
def _segment_statement(what: str, shape: Shape, after: bool) -> Any:
    """The statement of one shape: ``rows`` (every column), ``ids`` or ``count``, over
    active contacts, ordered by id with ``LIMIT :p_limit`` and ``id > :p_after`` for rows
    and ids.  Built once per (what, shape, after) and kept (the most recent 512)."""
    t = schema.contacts
    names = (f"s{n}" for n in itertools.count())
    where = [t.c.status == ACTIVE, _condition(shape, names)]
    if what == "count":
        return sa.select(sa.func.count()).select_from(t).where(*where)
    if after:
        where.append(t.c.id > sa.bindparam("p_after", type_=t.c.id.type))
    statement = sa.select(t) if what == "rows" else sa.select(t.c.id)
    return statement.where(*where).order_by(t.c.id).limit(sa.bindparam("p_limit", type_=sa.Integer()))


# --------------------------------------------------------------------------- identities


class SqlIdentities(_Repository):
    """:class:`carecrm.core.storage.IdentityRepository` on table ``identities``."""

    table = schema.identities
    record_class = IdentityRecord

    def add(self, record: IdentityRecord) -> None:
        """Insert an identity.  :raises DuplicateError: same id, or same (contact, kind, bidx)."""
        self._insert(record)

    def add_many(self, records: Sequence[IdentityRecord]) -> None:
        """Insert several identities in one statement; all or none.  :raises DuplicateError:"""
        self._insert_many(records)

    def find(self, kind: str, bidx: str) -> list[IdentityRecord]:
        """Identities of ``kind`` with this blind index (several contacts may share one), oldest first."""
        t = self.table
        return self._records(sa.select(t).where(t.c.kind == kind, t.c.bidx == bidx).order_by(t.c.created_at, t.c.id))

    def find_many(self, keys: Iterable[tuple[str, str]]) -> list[IdentityRecord]:
        """Identities matching any (kind, bidx) pair, oldest first.

        One query per :data:`CHUNK` pairs: ``kind IN (...) AND bidx IN (...)`` (a range scan
        of the (kind, bidx) index on every database), filtered to the exact pairs here.
        """
        t = self.table
        wanted = list(dict.fromkeys((kind, bidx) for kind, bidx in keys))
        wanted_set = set(wanted)
        found: dict[uuid.UUID, IdentityRecord] = {}
        statement = self._statement(
            "find_many",
            lambda: sa.select(t).where(
                t.c.kind.in_(sa.bindparam("p_kinds", expanding=True)),
                t.c.bidx.in_(sa.bindparam("p_bidxs", expanding=True)),
            ),
        )
        for chunk in _chunks(wanted):
            kinds = sorted({kind for kind, _ in chunk})
            bidxs = sorted({bidx for _, bidx in chunk})
            for record in self._records(statement, {"p_kinds": kinds, "p_bidxs": bidxs}):
                if (record.kind, record.bidx) in wanted_set:
                    found[record.id] = record
        return sorted(found.values(), key=lambda r: (r.created_at, r.id))

    def for_contact(self, contact_id: uuid.UUID) -> list[IdentityRecord]:
        """All identities of one contact, oldest first."""
        t = self.table
        statement = self._statement(
            "for_contact",
            lambda: sa.select(t).where(t.c.contact_id == sa.bindparam("p_contact")).order_by(t.c.created_at, t.c.id),
        )
        return self._records(statement, {"p_contact": contact_id})

    def count(self) -> int:
        """Number of stored identities."""
        return self._count()


# --------------------------------------------------------------------------- interactions


class SqlInteractions(_Repository):
    """:class:`carecrm.core.storage.InteractionRepository` on table ``interactions``."""

    table = schema.interactions
    record_class = InteractionRecord

    def add(self, record: InteractionRecord) -> None:
        """Append an interaction.  :raises DuplicateError: on a repeated (source, idempotency_key)."""
        self._insert(record)

    def add_many(self, records: Sequence[InteractionRecord]) -> None:
        """Append several interactions in one executemany INSERT; all or none.

        :raises DuplicateError: if any (source, idempotency_key) or id exists.
        """
        self._insert_many(records)

    def existing_keys(self, source: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` are already stored for ``source`` (one query per chunk)."""
        t = self.table
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        statement = self._statement(
            "existing_keys",
            lambda: sa.select(t.c.idempotency_key).where(
                t.c.source == sa.bindparam("p_source"), t.c.idempotency_key.in_(sa.bindparam("p_keys", expanding=True))
            ),
        )
        for chunk in _chunks(wanted):
            found.update(self._execute(statement, {"p_source": source, "p_keys": list(chunk)}).scalars())
        return found

    def get(self, interaction_id: uuid.UUID) -> InteractionRecord:
        """One interaction.  :raises NotFound: if there is none."""
        t = self.table
        record: InteractionRecord = self._one(
            sa.select(t).where(t.c.id == interaction_id), f"no interaction {interaction_id}"
        )
        return record

    def timeline(
        self,
        contact_id: uuid.UUID,
        *,
        after: TimelineCursor | None = None,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
    ) -> list[InteractionRecord]:
        """A contact's interactions by (occurred_at, id), oldest first, after the cursor.

        ``kinds=[]`` matches nothing.  :raises ValueError: if the cursor's time is naive.
        """
        t = self.table
        if kinds is not None and not kinds:
            return []
        params: dict[str, Any] = {"p_contact": contact_id, "p_limit": max(limit, 0)}
        if kinds is not None:
            params["p_kinds"] = list(kinds)
        if after is not None:
            at, after_id = after
            params["p_at"], params["p_after_id"] = utc(at, "timeline cursor"), after_id

        def build() -> sa.Select[Any]:
            statement = sa.select(t).where(t.c.contact_id == sa.bindparam("p_contact"))
            if kinds is not None:
                statement = statement.where(t.c.kind.in_(sa.bindparam("p_kinds", expanding=True)))
            if after is not None:
                at, after_id = sa.bindparam("p_at", type_=t.c.occurred_at.type), sa.bindparam("p_after_id")
                statement = statement.where(
                    sa.or_(t.c.occurred_at > at, sa.and_(t.c.occurred_at == at, t.c.id > after_id))
                )
            limit_ = sa.bindparam("p_limit", type_=sa.Integer())
            return statement.order_by(t.c.occurred_at, t.c.id).limit(limit_)

        statement = self._statement(("timeline", kinds is not None, after is not None), build)
        return self._records(statement, params)

    def first_responses(
        self,
        *,
        inbound_kinds: Sequence[str],
        outbound_kinds: Sequence[str],
        contact_ids: Sequence[uuid.UUID] | None = None,
    ) -> list[FirstResponseRecord]:
        """First inbound and first outbound-after-it per contact, in one statement (per chunk
        of ids)::

            SELECT fi.contact_id, fi.first_in, MIN(o.occurred_at)
            FROM (SELECT contact_id, MIN(occurred_at) AS first_in FROM interactions
                  WHERE direction = 'inbound' AND kind IN (...) GROUP BY contact_id) fi
            LEFT JOIN interactions o ON o.contact_id = fi.contact_id AND o.occurred_at >= fi.first_in
                 AND o.direction = 'outbound' AND o.kind IN (...)
            GROUP BY fi.contact_id, fi.first_in ORDER BY fi.contact_id

        Both sides use the (contact_id, occurred_at, id) index.
        """
        t = self.table
        inbound, outbound = list(dict.fromkeys(inbound_kinds)), list(dict.fromkeys(outbound_kinds))
        if not inbound or (contact_ids is not None and not contact_ids):
            return []

        def statement(ids: Sequence[uuid.UUID] | None) -> sa.Select[Any]:
            first_in = sa.select(t.c.contact_id, sa.func.min(t.c.occurred_at).label("first_in")).where(
                t.c.direction == "inbound", t.c.kind.in_(inbound)
            )
            if ids is not None:
                first_in = first_in.where(t.c.contact_id.in_(list(ids)))
            fi = first_in.group_by(t.c.contact_id).subquery("fi")
            o = t.alias("o")
            on = sa.and_(o.c.contact_id == fi.c.contact_id, o.c.occurred_at >= fi.c.first_in)
            answers = sa.and_(o.c.direction == "outbound", o.c.kind.in_(outbound)) if outbound else sa.false()
            on = sa.and_(on, answers)
            return (
                sa.select(fi.c.contact_id, fi.c.first_in, sa.func.min(o.c.occurred_at).label("first_out"))
                .select_from(fi.outerjoin(o, on))
                .group_by(fi.c.contact_id, fi.c.first_in)
                .order_by(fi.c.contact_id)
            )

        chunks: list[Sequence[uuid.UUID] | None] = (
            [None] if contact_ids is None else list(_chunks(list(dict.fromkeys(contact_ids))))
        )
        out: list[FirstResponseRecord] = []
        for chunk in chunks:
            for row in self._execute(statement(chunk)):
                out.append(FirstResponseRecord(contact_id=row[0], first_inbound_at=row[1], first_outbound_at=row[2]))
        out.sort(key=lambda r: r.contact_id)
        return out

    def clear_timelines(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[InteractionFacts]]:
        """The clear facts of each contact's interactions, per contact by (occurred_at, id):
        one query per :data:`CHUNK` ids (``contact_id IN (...)``, a range scan of the
        (contact_id, occurred_at, id) index per id, ordered by the database), reading the
        seven columns scoring needs only."""
        t = self.table
        ids = list(dict.fromkeys(contact_ids))
        found: dict[uuid.UUID, list[InteractionFacts]] = {}
        statement = self._statement(
            "clear_timelines",
            lambda: (
                sa.select(t.c.id, t.c.contact_id, t.c.kind, t.c.occurred_at, t.c.channel, t.c.direction, t.c.attributes)
                .where(t.c.contact_id.in_(sa.bindparam("p_ids", expanding=True)))
                .order_by(t.c.contact_id, t.c.occurred_at, t.c.id)
            ),
        )
        for chunk in _chunks(ids):
            for row in self._execute(statement, {"p_ids": list(chunk)}):
                found.setdefault(row.contact_id, []).append(
                    InteractionFacts(
                        id=row.id,
                        contact_id=row.contact_id,
                        kind=row.kind,
                        occurred_at=row.occurred_at,
                        channel=row.channel,
                        direction=row.direction,
                        attributes=row.attributes,
                    )
                )
        return found

    def latest_times(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """``max(occurred_at)`` per contact: one grouped query per :data:`CHUNK` ids."""
        t = self.table
        ids = list(dict.fromkeys(contact_ids))
        statement = self._statement(
            "latest_times",
            lambda: (
                sa.select(t.c.contact_id, sa.func.max(t.c.occurred_at).label("latest"))
                .where(t.c.contact_id.in_(sa.bindparam("p_ids", expanding=True)))
                .group_by(t.c.contact_id)
            ),
        )
        found: dict[uuid.UUID, datetime] = {}
        for chunk in _chunks(ids):
            for row in self._execute(statement, {"p_ids": list(chunk)}):
                found[row.contact_id] = row.latest
        return found

    def iter_touches(
        self,
        kinds: Sequence[str],
        *,
        skip_outbound: Sequence[str] = (),
        occurred_after: datetime | None = None,
        occurred_before: datetime | None = None,
    ) -> Iterator[TouchRecord]:
        """Interactions of ``kinds`` by (contact_id, occurred_at, id) as :class:`TouchRecord`,
        :data:`TOUCH_PAGE` rows per query.

        Keyset pages, like every streamed iterator here (no server cursor stays open, so
        the stage-history stream can be read between two pages, on MariaDB too): each
        page's condition starts with ``contact_id >= :last_contact`` so that every database
        answers it with a range scan of the (contact_id, occurred_at, id) index, already in
        order.  Only the nine columns of a touch are read, each page with one
        ``fetchall()``, and records are built by position (the codec's by-name path costs
        more than the query at a million rows).  ``kinds=[]`` yields nothing.

        :raises ValueError: on a naive bound.
        """
        t = self.table
        if not kinds:
            return
        params: dict[str, Any] = {"p_kinds": list(kinds), "p_limit": TOUCH_PAGE}
        if skip_outbound:
            params["p_skip"] = list(skip_outbound)
        if occurred_after is not None:
            params["p_from"] = utc(occurred_after, "occurred_after")
        if occurred_before is not None:
            params["p_to"] = utc(occurred_before, "occurred_before")

        def build(paged: bool) -> sa.Select[Any]:
            statement = sa.select(*(t.c[name] for name in _TOUCH_COLUMNS)).where(
                t.c.kind.in_(sa.bindparam("p_kinds", expanding=True))
            )
            if skip_outbound:
                outbound = sa.func.coalesce(t.c.direction, "") == "outbound"
                statement = statement.where(
                    sa.not_(sa.and_(t.c.kind.in_(sa.bindparam("p_skip", expanding=True)), outbound))
                )
            if occurred_after is not None:
                statement = statement.where(t.c.occurred_at >= sa.bindparam("p_from", type_=t.c.occurred_at.type))
            if occurred_before is not None:
                statement = statement.where(t.c.occurred_at < sa.bindparam("p_to", type_=t.c.occurred_at.type))
            if paged:
                cid = sa.bindparam("p_cid", type_=t.c.contact_id.type)
                at = sa.bindparam("p_at", type_=t.c.occurred_at.type)
                last_id = sa.bindparam("p_id", type_=t.c.id.type)
                statement = statement.where(
                    t.c.contact_id >= cid,
                    sa.or_(
                        t.c.contact_id > cid,
                        t.c.occurred_at > at,
                        sa.and_(t.c.occurred_at == at, t.c.id > last_id),
                    ),
                )
            limit = sa.bindparam("p_limit", type_=sa.Integer())
            return statement.order_by(t.c.contact_id, t.c.occurred_at, t.c.id).limit(limit)

        shape = (bool(skip_outbound), occurred_after is not None, occurred_before is not None)
        statement = self._statement(("touches", *shape, False), lambda: build(False))
        paged = self._statement(("touches", *shape, True), lambda: build(True))
        while True:
            rows = self._execute(statement, params).fetchall()
            yield from [
                TouchRecord(
                    id=r[0],
                    contact_id=r[1],
                    kind=r[2],
                    occurred_at=r[3],
                    channel=r[4],
                    direction=r[5],
                    campaign=r[6],
                    channel_group=r[7],
                    touchpoint=r[8],
                )
                for r in rows
            ]
            if len(rows) < TOUCH_PAGE:
                return
            last = rows[-1]
            params.update(p_cid=last[1], p_at=last[3], p_id=last[0])
            statement = paged

    def count(self) -> int:
        """Number of stored interactions."""
        return self._count()


# --------------------------------------------------------------------------- stage history


class SqlStages(_Repository):
    """:class:`carecrm.core.storage.StageRepository` on table ``stage_changes``."""

    table = schema.stage_changes
    record_class = StageChangeRecord

    def add(self, record: StageChangeRecord) -> None:
        """Append a stage change.  :raises DuplicateError: if the id exists."""
        self._insert(record)

    def add_many(self, records: Sequence[StageChangeRecord]) -> None:
        """Append several stage changes in one executemany INSERT; all or none."""
        self._insert_many(records)

    def history(self, contact_id: uuid.UUID) -> list[StageChangeRecord]:
        """One contact's stage changes, oldest first."""
        t = self.table
        return self._records(sa.select(t).where(t.c.contact_id == contact_id).order_by(t.c.changed_at, t.c.id))

    def first_reached(
        self,
        stages: Sequence[str],
        *,
        pipeline: str | None = None,
        reached_from: datetime | None = None,
        reached_before: datetime | None = None,
    ) -> Iterator[StageReachedRecord]:
        """``SELECT contact_id, min(changed_at) ... WHERE to_stage IN (...) GROUP BY contact_id
        HAVING <window> ORDER BY contact_id``, :data:`TOUCH_PAGE` contacts per query (keyset
        on contact_id, read along the (contact_id, changed_at, id) index).

        :raises ValueError: on a naive bound.
        """
        t = self.table
        if not stages:
            return
        params: dict[str, Any] = {"p_stages": list(stages), "p_limit": TOUCH_PAGE}
        if pipeline is not None:
            params["p_pipeline"] = pipeline
        if reached_from is not None:
            params["p_from"] = utc(reached_from, "reached_from")
        if reached_before is not None:
            params["p_to"] = utc(reached_before, "reached_before")

        def build(paged: bool) -> sa.Select[Any]:
            first = sa.func.min(t.c.changed_at)
            statement = sa.select(t.c.contact_id, first).where(
                t.c.to_stage.in_(sa.bindparam("p_stages", expanding=True))
            )
            if pipeline is not None:
                statement = statement.where(t.c.pipeline == sa.bindparam("p_pipeline"))
            if paged:
                statement = statement.where(t.c.contact_id > sa.bindparam("p_cid", type_=t.c.contact_id.type))
            statement = statement.group_by(t.c.contact_id)
            if reached_from is not None:
                statement = statement.having(first >= sa.bindparam("p_from", type_=t.c.changed_at.type))
            if reached_before is not None:
                statement = statement.having(first < sa.bindparam("p_to", type_=t.c.changed_at.type))
            limit = sa.bindparam("p_limit", type_=sa.Integer())
            return statement.order_by(t.c.contact_id).limit(limit)

        shape = (pipeline is not None, reached_from is not None, reached_before is not None)
        statement = self._statement(("first_reached", *shape, False), lambda: build(False))
        paged = self._statement(("first_reached", *shape, True), lambda: build(True))
        while True:
            rows = self._execute(statement, params).fetchall()
            yield from [StageReachedRecord(contact_id=r[0], reached_at=r[1]) for r in rows]
            if len(rows) < TOUCH_PAGE:
                return
            params["p_cid"] = rows[-1][0]
            statement = paged

    def count(self) -> int:
        """Number of stored stage changes."""
        return self._count()


# --------------------------------------------------------------------------- appointments


class SqlAppointments(_Repository):
    """:class:`carecrm.core.storage.AppointmentRepository` on table ``appointments``."""

    table = schema.appointments
    record_class = AppointmentRecord

    def count(self) -> int:
        """Number of stored appointments."""
        return self._count()


# --------------------------------------------------------------------------- consent ledger


class SqlConsents(_Repository):
    """:class:`carecrm.core.storage.ConsentRepository` on table ``consents``."""

    table = schema.consents
    record_class = ConsentRecord

    def add(self, record: ConsentRecord) -> None:
        """Append a consent event.  :raises DuplicateError: on a repeated (source, key) or id."""
        self._insert(record)

    def for_contact_point(
        self, contact_point_bidx: str, *, channel: str | None = None, purpose: str | None = None
    ) -> list[ConsentRecord]:
        """Events for one contact point (optionally one channel / purpose), by (occurred_at, id)."""
        t = self.table
        statement = sa.select(t).where(t.c.contact_point_bidx == contact_point_bidx)
        if channel is not None:
            statement = statement.where(t.c.channel == channel)
        if purpose is not None:
            statement = statement.where(t.c.purpose == purpose)
        return self._records(statement.order_by(t.c.occurred_at, t.c.id))

    def for_contact(self, contact_id: uuid.UUID) -> list[ConsentRecord]:
        """Events recorded for one contact, by (occurred_at, id)."""
        t = self.table
        return self._records(sa.select(t).where(t.c.contact_id == contact_id).order_by(t.c.occurred_at, t.c.id))

    def count(self) -> int:
        """Number of stored consent events."""
        return self._count()


# --------------------------------------------------------------------------- notes, tasks


class SqlNotes(_Repository):
    """:class:`carecrm.core.storage.NoteRepository` on table ``notes``."""

    table = schema.notes
    record_class = NoteRecord

    def add(self, record: NoteRecord) -> None:
        """Store a note.  :raises DuplicateError: if the id exists."""
        self._insert(record)

    def for_contact(self, contact_id: uuid.UUID) -> list[NoteRecord]:
        """One contact's notes, oldest first."""
        t = self.table
        return self._records(sa.select(t).where(t.c.contact_id == contact_id).order_by(t.c.created_at, t.c.id))


class SqlTasks(_Repository):
    """:class:`carecrm.core.storage.TaskRepository` on table ``tasks``."""

    table = schema.tasks
    record_class = TaskRecord

    def add(self, record: TaskRecord) -> None:
        """Store a task.  :raises DuplicateError: if the id exists."""
        self._insert(record)

    def get(self, task_id: uuid.UUID) -> TaskRecord:
        """One task.  :raises NotFound: if there is none."""
        t = self.table
        record: TaskRecord = self._one(sa.select(t).where(t.c.id == task_id), f"no task {task_id}")
        return record

    def update(self, record: TaskRecord) -> None:
        """Replace a stored task.  :raises NotFound: if there is none."""
        t = self.table
        row = self._codec.row(record)
        values = {name: value for name, value in row.items() if name != "id"}
        result = self._execute(sa.update(t).where(t.c.id == record.id).values(**values))
        if result.rowcount == 0:
            raise NotFound(f"no task {record.id}")

    def list(
        self,
        *,
        assignee: str | None = None,
        contact_id: uuid.UUID | None = None,
        status: str | None = None,
        due_before: datetime | None = None,
    ) -> list[TaskRecord]:
        """Tasks matching every given filter, by (due_at with unknown last, id).

        ``due_before`` keeps tasks due strictly before it (tasks with no due time never
        match).  :raises ValueError: if ``due_before`` is naive.
        """
        t = self.table
        statement = sa.select(t)
        if assignee is not None:
            statement = statement.where(t.c.assignee == assignee)
        if contact_id is not None:
            statement = statement.where(t.c.contact_id == contact_id)
        if status is not None:
            statement = statement.where(t.c.status == status)
        if due_before is not None:
            statement = statement.where(t.c.due_at < utc(due_before, "due_before"))
        return self._records(statement.order_by(t.c.due_at.is_(None), t.c.due_at, t.c.id))


# --------------------------------------------------------------------------- scores, reviews


class SqlScores(_Repository):
    """:class:`carecrm.core.storage.ScoreRepository` on table ``scores``."""

    table = schema.scores
    record_class = ScoreRecord

    def put(self, record: ScoreRecord) -> None:
        """Insert or replace the score of (contact_id, model)."""
        self._upsert(self._codec.row(record), ("contact_id", "model"))

    def put_many(self, records: Sequence[ScoreRecord]) -> None:
        """Insert or replace several scores: one executemany upsert, built once per dialect
        (a (contact_id, model) given twice keeps the last)."""
        if not records:
            return
        t = self.table
        dialect = self._uow.dialect_name
        keys = ("contact_id", "model")

        def build() -> sa.Executable:
            row = {c.name: sa.bindparam(f"p_{c.name}", type_=c.type) for c in t.columns}
            return upsert_statement(dialect, t, row, keys)

        statement = self._statement(("put_many", dialect), build)
        last = {(r.contact_id, r.model): r for r in records}
        rows = [{f"p_{name}": value for name, value in self._codec.row(r).items()} for r in last.values()]
        self._execute(statement, rows)

    def get(self, contact_id: uuid.UUID, model: str) -> ScoreRecord:
        """:raises NotFound: if the contact has no score under ``model``."""
        t = self.table
        record: ScoreRecord = self._one(
            sa.select(t).where(t.c.contact_id == contact_id, t.c.model == model),
            f"no score of contact {contact_id} under model {model!r}",
        )
        return record

    def top_active(self, model: str, *, limit: int = 20, stages: Sequence[str] | None = None) -> list[ScoreRecord]:
        """Highest scores of ``model`` of active contacts (optionally of ``stages``), ties by
        contact id: one statement joining ``contacts``; the (model, score) index gives the order.

        :raises ValueError: if ``limit`` < 0.
        """
        if limit < 0:
            raise ValueError("limit: must be 0 or more")
        if stages is not None and not stages:
            return []
        t, c = self.table, schema.contacts
        statement = sa.select(t).join(c, c.c.id == t.c.contact_id).where(t.c.model == model, c.c.status == ACTIVE)
        if stages is not None:
            statement = statement.where(c.c.stage.in_(list(dict.fromkeys(stages))))
        return self._records(statement.order_by(t.c.score.desc(), t.c.contact_id).limit(limit))


class SqlReviews(_Repository):
    """:class:`carecrm.core.storage.ReviewRepository` on table ``reviews``."""

    table = schema.reviews
    record_class = ReviewRecord

    def add(self, record: ReviewRecord) -> bool:
        """Store a pair unless the same pair is stored; True if stored (the record keeps
        its pair ordered, :class:`ReviewRecord`)."""
        t = self.table
        exists = self._execute(
            sa.select(t.c.id).where(t.c.contact_a == record.contact_a, t.c.contact_b == record.contact_b)
        ).first()
        if exists is not None:
            return False
        row = self._codec.row(record)
        conn = self._uow.connection
        try:
            with translated(self.table.name, self._uow.where), conn.begin_nested():
                conn.execute(sa.insert(t), row)
        except DuplicateError as exc:
            if getattr(exc, "columns", ()) == ("id",):
                raise
            return False  # a concurrent writer stored the same pair first
        return True

    def list(self, *, status: str | None = "open") -> list[ReviewRecord]:
        """Pairs with this status (all if None), oldest first."""
        t = self.table
        statement = sa.select(t)
        if status is not None:
            statement = statement.where(t.c.status == status)
        return self._records(statement.order_by(t.c.created_at, t.c.id))

    def for_contact(self, contact_id: uuid.UUID) -> list[ReviewRecord]:
        """Pairs that involve one contact, oldest first."""
        t = self.table
        return self._records(
            sa.select(t)
            .where(sa.or_(t.c.contact_a == contact_id, t.c.contact_b == contact_id))
            .order_by(t.c.created_at, t.c.id)
        )


# --------------------------------------------------------------------------- segments, inbox


class SqlSegments(_Repository):
    """:class:`carecrm.core.storage.SegmentRepository` on table ``segments``."""

    table = schema.segments
    record_class = SegmentRecord

    def put(self, record: SegmentRecord) -> None:
        """Insert or replace the segment of this name (every field is replaced)."""
        self._upsert(self._codec.row(record), ("name",))

    def get(self, name: str) -> SegmentRecord:
        """:raises NotFound: if no segment has this name."""
        t = self.table
        record: SegmentRecord = self._one(sa.select(t).where(t.c.name == name), f"no segment named {name!r}")
        return record

    def list(self) -> list[SegmentRecord]:
        """All saved segments by name (binary order)."""
        t = self.table
        records: list[SegmentRecord] = self._records(sa.select(t))
        return sorted(records, key=lambda r: r.name)

    def delete(self, name: str) -> None:
        """:raises NotFound: if no segment has this name."""
        t = self.table
        if self._execute(sa.delete(t).where(t.c.name == name)).rowcount == 0:
            raise NotFound(f"no segment named {name!r}")


class SqlInbox(_Repository):
    """:class:`carecrm.core.storage.InboxRepository` on table ``inbox``."""

    table = schema.inbox
    record_class = InboxRecord

    def add(self, record: InboxRecord) -> None:
        """Store a received payload.  :raises DuplicateError: if the id exists."""
        self._insert(record)

    def add_many(self, records: Sequence[InboxRecord]) -> None:
        """Store several payloads in one executemany INSERT; all or none."""
        self._insert_many(records)

    def add_new(self, records: Sequence[InboxRecord]) -> None:
        """Store each payload whose (source, digest) is not stored yet and skip the rest
        (``ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite; on MariaDB an
        ``ON DUPLICATE KEY UPDATE`` that changes nothing, never ``INSERT IGNORE``, which
        would also turn a too-long value into a silent truncation)."""
        if not records:
            return
        dialect = self._uow.dialect_name
        t = self.table

        def build() -> Any:
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                return pg_insert(t).on_conflict_do_nothing(index_elements=["source", "digest"])
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as sqlite_insert

                return sqlite_insert(t).on_conflict_do_nothing(index_elements=["source", "digest"])
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            return mysql_insert(t).on_duplicate_key_update(digest=t.c.digest)

        statement = self._statement(("add_new", dialect), build)
        rows = [self._codec.row(r) for r in records]
        conn = self._uow.connection
        with translated(t.name, self._uow.where):
            conn.execute(statement, rows if len(rows) > 1 else rows[0])

    def find_digests(self, source: str, digests: Iterable[str]) -> list[InboxRecord]:
        """Payloads of ``source`` with any of these digests, oldest first (chunked IN lists)."""
        t = self.table
        wanted = list(dict.fromkeys(digests))
        out: list[InboxRecord] = []
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            statement = sa.select(t).where(t.c.source == source, t.c.digest.in_(chunk))
            out.extend(self._records(statement))
        out.sort(key=lambda r: (r.received_at, r.id))
        return out

    def set_status_many(
        self,
        inbox_ids: Iterable[uuid.UUID],
        status: str,
        *,
        reason: str | None = None,
        processed_at: datetime | None = None,
    ) -> int:
        """Set status and reason of several payloads, ``attempts = attempts + 1``, in one
        UPDATE per 500 ids.  :raises ValueError: if ``processed_at`` is naive."""
        t = self.table
        ids = list(dict.fromkeys(inbox_ids))
        values: dict[str, Any] = {"status": status, "reason": reason, "attempts": t.c.attempts + 1}
        if processed_at is not None:
            values["processed_at"] = utc(processed_at, "processed_at")
        changed = 0
        for start in range(0, len(ids), 500):
            statement = sa.update(t).where(t.c.id.in_(ids[start : start + 500])).values(values)
            changed += int(self._execute(statement).rowcount)
        return changed

    def get(self, inbox_id: uuid.UUID) -> InboxRecord:
        """:raises NotFound: if there is none."""
        t = self.table
        statement = self._statement("get", lambda: sa.select(t).where(t.c.id == sa.bindparam("p_id")))
        record: InboxRecord = self._one(statement, f"no inbox payload {inbox_id}", {"p_id": inbox_id})
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
        """Set the status and the reason (None clears it); ``processed_at`` and ``attempts``
        change only when given.

        :raises NotFound: if there is no such payload.
        :raises ValueError: if ``processed_at`` is naive.
        """
        t = self.table
        values: dict[str, Any] = {"status": status, "reason": reason}
        if processed_at is not None:
            values["processed_at"] = utc(processed_at, "processed_at")
        if attempts is not None:
            values["attempts"] = attempts
        names = tuple(values)
        statement = self._statement(
            ("set_status", names),
            lambda: (
                sa.update(t)
                .where(t.c.id == sa.bindparam("p_id"))
                .values({name: sa.bindparam(f"v_{name}", type_=t.c[name].type) for name in names})
            ),
        )
        params = {f"v_{name}": value for name, value in values.items()}
        params["p_id"] = inbox_id
        if self._execute(statement, params).rowcount == 0:
            raise NotFound(f"no inbox payload {inbox_id}")

    def list(self, *, status: str | None = None, source: str | None = None, limit: int = 100) -> list[InboxRecord]:
        """Payloads, newest first (received_at, then id), filtered by status and source."""
        t = self.table
        statement = sa.select(t)
        if status is not None:
            statement = statement.where(t.c.status == status)
        if source is not None:
            statement = statement.where(t.c.source == source)
        statement = statement.order_by(t.c.received_at.desc(), t.c.id.desc()).limit(max(limit, 0))
        return self._records(statement)

    def purge(self, *, status: str, before: datetime) -> int:
        """Delete payloads of ``status`` received before ``before``; returns the count.

        :raises ValueError: if ``before`` is naive.
        """
        t = self.table
        statement = sa.delete(t).where(t.c.status == status, t.c.received_at < utc(before, "before"))
        return int(self._execute(statement).rowcount)

    def count(self) -> int:
        """Number of stored payloads."""
        return self._count()


# --------------------------------------------------------------------------- journals


class SqlAudit(_Repository):
    """:class:`carecrm.core.storage.AuditRepository` on table ``audit_log`` (append-only:
    there is no update or delete)."""

    table = schema.audit_log
    record_class = AuditRecord

    def append(self, record: AuditRecord) -> None:
        """Append an entry.  :raises DuplicateError: if ``seq`` is taken."""
        self._insert(record)

    def last(self) -> AuditRecord | None:
        """The entry with the highest ``seq``, or None for an empty log."""
        t = self.table
        rows = self._records(self._statement("last", lambda: sa.select(t).order_by(t.c.seq.desc()).limit(1)))
        return rows[0] if rows else None

    def iter(self, *, since_seq: int = 0) -> Iterator[AuditRecord]:
        """Entries with ``seq > since_seq`` in seq order, fetched :data:`PAGE` at a time."""
        t = self.table
        last = since_seq
        while True:
            page: list[AuditRecord] = self._records(sa.select(t).where(t.c.seq > last).order_by(t.c.seq).limit(PAGE))
            yield from page
            if len(page) < PAGE:
                return
            last = page[-1].seq


class SqlOutbox(_Repository):
    """:class:`carecrm.core.storage.OutboxRepository` on table ``outbox`` (seq primary key,
    so a taken seq is refused by the database)."""

    table = schema.outbox
    record_class = OutboxRecord

    def append_many(self, records: Sequence[OutboxRecord]) -> None:
        """Append events.  :raises DuplicateError: if a ``seq`` is taken."""
        self._insert_many(records)

    def after(self, seq: int, *, limit: int = 100) -> list[OutboxRecord]:
        """At most ``limit`` events with a greater ``seq``, in seq order (one query).

        :raises ValueError: if ``limit`` is negative."""
        if limit < 0:
            raise ValueError("limit: must be 0 or more")
        t = self.table
        statement = self._statement(
            "after",
            lambda: (
                sa.select(t)
                .where(t.c.seq > sa.bindparam("p_seq"))
                .order_by(t.c.seq)
                .limit(sa.bindparam("p_limit", type_=sa.Integer()))
            ),
        )
        return self._records(statement, {"p_seq": seq, "p_limit": limit})

    def last_seq(self) -> int:
        """The highest stored ``seq``, 0 for an empty outbox."""
        t = self.table
        value = self._execute(self._statement("last_seq", lambda: sa.select(sa.func.max(t.c.seq)))).scalar_one()
        return int(value or 0)

    def prune(self, *, upto_seq: int, before: datetime) -> int:
        """Delete events with ``seq <= upto_seq`` written before ``before``; returns the count.

        :raises ValueError: if ``before`` is naive."""
        t = self.table
        statement = sa.delete(t).where(t.c.seq <= upto_seq, t.c.at < utc(before, "before"))
        return int(self._execute(statement).rowcount)


class SqlMeta:
    """:class:`carecrm.core.storage.MetaRepository` on table ``meta`` (key → text)."""

    def __init__(self, uow: SqlUnitOfWork) -> None:
        self._uow = uow
        self.table = schema.meta

    def _execute(self, statement: sa.Executable) -> CursorResult[Any]:
        with translated(self.table.name, self._uow.where):
            return self._uow.connection.execute(statement)

    def get(self, key: str) -> str | None:
        """The value, or None."""
        t = self.table
        value = self._execute(sa.select(t.c.value).where(t.c.key == key)).scalar_one_or_none()
        return None if value is None else str(value)

    def set(self, key: str, value: str) -> None:
        """Insert or replace (one atomic statement, built once per dialect: every audit
        entry moves the audit head anchor through here)."""
        t = self.table
        dialect = self._uow.dialect_name
        cache_key = (t.name, ("set", dialect))
        statement = _STATEMENTS.get(cache_key)
        if statement is None:
            row = {
                "key": sa.bindparam("p_key", type_=t.c.key.type),
                "value": sa.bindparam("p_value", type_=t.c.value.type),
            }
            statement = _STATEMENTS[cache_key] = upsert_statement(dialect, t, row, ("key",))
        with translated(t.name, self._uow.where):
            self._uow.connection.execute(statement, {"p_key": key, "p_value": value})

    def get_for_update(self, key: str) -> str | None:
        """The latest committed value, the row locked until the unit ends
        (``SELECT ... FOR UPDATE``; on SQLite the unit's ``BEGIN IMMEDIATE`` already holds
        the database's write lock).  A missing key is first inserted as an empty
        placeholder (``ON CONFLICT DO NOTHING``), so there is a row to lock: a second unit
        inserting the same key at once waits for the first to commit, then locks its row.
        The placeholder reads as None; the caller is expected to :meth:`set` the key in
        the same unit (if it rolls back, the placeholder goes too).

        :raises ConflictError: lock wait timeout or deadlock (retry the unit).
        """
        t = self.table
        dialect = self._uow.dialect_name
        if dialect == "sqlite":
            return self.get(key)
        select = self._cached(
            ("get_for_update", dialect),
            lambda: sa.select(t.c.value).where(t.c.key == sa.bindparam("p_key")).with_for_update(),
        )
        conn = self._uow.connection
        with translated(t.name, self._uow.where):
            value = conn.execute(select, {"p_key": key}).scalar_one_or_none()
            if value is None:
                conn.execute(
                    self._cached(("placeholder", dialect), lambda: _insert_missing(dialect, t)),
                    {
                        "p_key": key,
                        "p_value": "",
                    },
                )
                value = conn.execute(select, {"p_key": key}).scalar_one_or_none()
        return str(value) if value else None

    def _cached(self, name: Any, build: Callable[[], Any]) -> Any:
        cache_key = (self.table.name, name)
        statement = _STATEMENTS.get(cache_key)
        if statement is None:
            statement = _STATEMENTS[cache_key] = build()
        return statement


def _insert_missing(dialect: str, table: sa.Table) -> sa.Executable:
    """``INSERT (key, value) ... ON CONFLICT DO NOTHING`` of the meta table in the dialect's
    own syntax (a no-op ``ON DUPLICATE KEY UPDATE`` on MariaDB/MySQL)."""
    row = {
        "key": sa.bindparam("p_key", type_=table.c.key.type),
        "value": sa.bindparam("p_value", type_=table.c.value.type),
    }
    if dialect == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table).values(row).on_conflict_do_nothing(index_elements=["key"])
    from sqlalchemy.dialects.mysql import insert as mysql_insert

    return mysql_insert(table).values(row).on_duplicate_key_update(key=table.c.key)


# --------------------------------------------------------------------------- whole-database copies

#: The table and record class of each kind of :data:`carecrm.core.storage.RECORD_KINDS`
#: but ``meta`` (whose rows are ``(key, value)`` pairs).
TRANSFER_TABLES: dict[str, tuple[sa.Table, type[Any]]] = {
    "contacts": (schema.contacts, ContactRecord),
    "identities": (schema.identities, IdentityRecord),
    "interactions": (schema.interactions, InteractionRecord),
    "stage_changes": (schema.stage_changes, StageChangeRecord),
    "appointments": (schema.appointments, AppointmentRecord),
    "consents": (schema.consents, ConsentRecord),
    "notes": (schema.notes, NoteRecord),
    "tasks": (schema.tasks, TaskRecord),
    "scores": (schema.scores, ScoreRecord),
    "reviews": (schema.reviews, ReviewRecord),
    "segments": (schema.segments, SegmentRecord),
    "inbox": (schema.inbox, InboxRecord),
    "merges": (schema.merges, MergeRecord),
    "audit_log": (schema.audit_log, AuditRecord),
    "outbox": (schema.outbox, OutboxRecord),
}


def _transfer_table(kind: str) -> sa.Table:
    check_record_kind(kind)
    return schema.meta if kind == "meta" else TRANSFER_TABLES[kind][0]


def _after_key(keys: Sequence[sa.Column[Any]], last: Sequence[Any]) -> sa.ColumnElement[bool]:
    """Rows whose primary key sorts after ``last`` (keyset pagination over a possibly
    composite key, spelled out column by column so each value binds with its column's type)."""
    clauses = []
    for i, column in enumerate(keys):
        equal = [keys[j] == last[j] for j in range(i)]
        clauses.append(sa.and_(*equal, column > last[i]))
    return sa.or_(*clauses)


def export_records(uow: SqlUnitOfWork, kind: str) -> Iterator[Any]:
    """:meth:`carecrm.core.storage.UnitOfWork.export_records` on the SQL unit of work:
    the rows of ``kind``'s table in primary-key order, :data:`PAGE` rows per query (keyset
    pagination, no server cursor held), as stored records (``meta``: ``(key, value)``).

    :raises UnknownComponentError: for an unknown kind.
    """
    table = _transfer_table(kind)
    keys = list(table.primary_key.columns)
    base = sa.select(table).order_by(*keys).limit(PAGE)
    codec = None if kind == "meta" else _codec(TRANSFER_TABLES[kind][1], table)
    last: tuple[Any, ...] | None = None
    while True:
        statement = base if last is None else base.where(_after_key(keys, last))
        with translated(table.name, uow.where):
            rows = uow.connection.execute(statement).all()
        for row in rows:
            yield (str(row.key), str(row.value)) if codec is None else codec.record(row)
        if len(rows) < PAGE:
            return
        last = tuple(getattr(rows[-1], column.name) for column in keys)


def import_records(uow: SqlUnitOfWork, kind: str, records: Sequence[Any]) -> int:
    """:meth:`carecrm.core.storage.UnitOfWork.import_records` on the SQL unit of work:
    one multi-row INSERT per :data:`CHUNK` records (``meta``: one upsert per pair).

    :raises UnknownComponentError: for an unknown kind.
    :raises DuplicateError: if a key is already stored.
    :raises ValueError: on a naive datetime.
    """
    table = _transfer_table(kind)
    if kind == "meta":
        for key, value in records:
            uow.meta.set(str(key), str(value))
        return len(records)
    codec = _codec(TRANSFER_TABLES[kind][1], table)
    for chunk in _chunks(records):
        rows = [codec.row(r) for r in chunk]
        if rows:
            with translated(table.name, uow.where):
                uow.connection.execute(sa.insert(table), rows)
    return len(records)


def count_records(uow: SqlUnitOfWork, kind: str) -> int:
    """:meth:`carecrm.core.storage.UnitOfWork.count_records` on the SQL unit of work (one
    ``count(*)``).  :raises UnknownComponentError: for an unknown kind."""
    table = _transfer_table(kind)
    with translated(table.name, uow.where):
        return int(uow.connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
