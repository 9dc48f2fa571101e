"""Whole-database copies on the SQL unit of work: export, import and count every kind of
record (``carecrm storage migrate-to``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from carecrm.core.model.records import (
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
from carecrm.core.storage.contract import check_record_kind
from carecrm.storage_backends.sql import schema
from carecrm.storage_backends.sql.errors import translated

if TYPE_CHECKING:
    from carecrm.storage_backends.sql.backend import SqlUnitOfWork
from carecrm.storage_backends.sql.rows import (
    PAGE,
    _chunks,
    _codec,
)

# --------------------------------------------------------------------------- whole-database copies

#: The table and record class of each kind of :data:`carecrm.core.storage.contract.RECORD_KINDS`
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
    """:meth:`carecrm.core.storage.contract.UnitOfWork.export_records` on the SQL unit of work:
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
    """:meth:`carecrm.core.storage.contract.UnitOfWork.import_records` on the SQL unit of work:
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
    """:meth:`carecrm.core.storage.contract.UnitOfWork.count_records` on the SQL unit of work (one
    ``count(*)``).  :raises UnknownComponentError: for an unknown kind."""
    table = _transfer_table(kind)
    with translated(table.name, uow.where):
        return int(uow.connection.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())
