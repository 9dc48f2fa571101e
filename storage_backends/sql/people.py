"""SQL repositories of people: contacts (with segment criteria compiled to one statement)
and their identities."""

from __future__ import annotations

import builtins
import functools
import itertools
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from carecrm.core.analytics.criteria import (
    NUMERIC_FIELDS,
    And,
    Criteria,
    Eq,
    HadInteraction,
    In,
    Not,
    Or,
    Prefix,
    Range,
)
from carecrm.core.errors import ConflictError, NotFound
from carecrm.core.model.records import (
    ACTIVE,
    ContactRecord,
    IdentityRecord,
)
from carecrm.storage_backends.sql import schema

if TYPE_CHECKING:
    pass
from carecrm.storage_backends.sql.rows import (
    _chunks,
    _Repository,
)

# --------------------------------------------------------------------------- contacts


class SqlContacts(_Repository):
    """:class:`carecrm.core.storage.contract.ContactRepository` on table ``contacts``."""

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

    def _active(self) -> sa.Select[*tuple[Any, ...]]:
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

    def select(
        self, criteria: Criteria, *, limit: int = 100, after: uuid.UUID | None = None
    ) -> builtins.list[ContactRecord]:
        """Active contacts matching ``criteria`` in id order after ``after``, at most ``limit``:
        one statement (:func:`criteria_shape`).  :raises ValueError: if ``limit`` < 0."""
        codec = self._codec
        return [codec.record(row) for row in self._segment("rows", criteria, after, limit)]

    def select_ids(
        self, criteria: Criteria, *, limit: int = 1000, after: uuid.UUID | None = None
    ) -> builtins.list[uuid.UUID]:
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
    OR city <> :v``), so logic is two-valued as :mod:`carecrm.core.analytics.criteria` defines it.  A
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
    """:class:`carecrm.core.storage.contract.IdentityRepository` on table ``identities``."""

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
