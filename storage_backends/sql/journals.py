"""SQL repositories of the append-only journals and settings: the audit log, the outbox
and ``meta`` (with its row lock for counters and chain heads)."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from sqlalchemy.engine import CursorResult

from carecrm.core.model.records import (
    AuditRecord,
    OutboxRecord,
)
from carecrm.core.model.timeutil import stored_utc as utc
from carecrm.storage_backends.sql import schema
from carecrm.storage_backends.sql.errors import translated

if TYPE_CHECKING:
    from carecrm.storage_backends.sql.backend import SqlUnitOfWork
from carecrm.storage_backends.sql.rows import (
    _STATEMENTS,
    PAGE,
    _Repository,
    upsert_statement,
)

# --------------------------------------------------------------------------- journals


class SqlAudit(_Repository):
    """:class:`carecrm.core.storage.contract.AuditRepository` on table ``audit_log`` (append-only:
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
    """:class:`carecrm.core.storage.contract.OutboxRepository` on table ``outbox`` (seq primary key,
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
    """:class:`carecrm.core.storage.contract.MetaRepository` on table ``meta`` (key → text)."""

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
