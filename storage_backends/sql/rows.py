"""The SQL repositories' shared machinery: statement caching, record ⇄ row codecs, the
base repository (execution, inserts, upserts, error translation), chunking and paging sizes.

The rules every repository follows are in :mod:`carecrm.storage_backends.sql.repositories`.
"""

from __future__ import annotations

import operator
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import sqlalchemy as sa
from sqlalchemy.engine import CursorResult

from carecrm.core.errors import NotFound
from carecrm.core.model.timeutil import stored_utc as utc
from carecrm.storage_backends.sql.errors import translated
from carecrm.storage_backends.sql.types import sqlite_bind_processor

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

    def record(self, row: sa.Row[*tuple[Any, ...]]) -> Any:
        """The record for a result row."""
        return self.cls(**row._mapping)


_CODECS: dict[type[Any], _Codec] = {}


class _DriverInsert:
    """A table's ``INSERT`` as the SQLite driver's own statement: the text with ``?``
    placeholders, and each column's bind processor
    (:func:`~carecrm.storage_backends.sql.types.sqlite_bind_processor`: a value is
    converted exactly as ``conn.execute(insert, rows)`` would convert it).

    SQLAlchemy's executemany costs more in Python per row (compiled parameters, one
    processor call through its machinery each) than sqlite3's C loop does to insert the
    row; on the embedded default a batch of leads writes about ten rows per lead, so the
    SQL backend hands SQLite's ``executemany`` the converted tuples itself.  PostgreSQL and
    MariaDB keep SQLAlchemy's path, whose multi-row ``VALUES`` batching their drivers need.
    """

    def __init__(self, table: sa.Table, dialect: sa.Dialect, suffix: str = "") -> None:
        quote = dialect.identifier_preparer.quote
        self.columns = tuple(c.name for c in table.columns)
        self.sql = (
            f"INSERT INTO {quote(table.name)} ({', '.join(quote(n) for n in self.columns)}) "
            f"VALUES ({', '.join('?' for _ in self.columns)}){suffix}"
        )
        self.processors = tuple(sqlite_bind_processor(c.type, dialect) for c in table.columns)

    def params(self, rows: Sequence[dict[str, Any]]) -> list[tuple[Any, ...]]:
        """The driver's parameter rows for ``rows`` (column name -> value dicts)."""
        columns = self.columns
        values = operator.itemgetter(*columns) if len(columns) > 1 else (lambda row: (row[columns[0]],))
        converted = [(i, p) for i, p in enumerate(self.processors) if p is not None]
        out = []
        for row in rows:
            params = list(values(row))
            for i, process in converted:
                params[i] = process(params[i])
            out.append(tuple(params))  # SQLAlchemy takes tuples (or dicts) for executemany
        return out


_DRIVER_INSERTS: dict[tuple[str, str], _DriverInsert] = {}

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

    def _execute(self, statement: sa.Executable, params: Any = None) -> CursorResult[*tuple[Any, ...]]:
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
            if len(rows) > 1 and conn.dialect.name == "sqlite":
                with conn.begin_nested():
                    self._sqlite_executemany(rows)
            elif len(rows) == 1 and not self._uow.savepoint_single_inserts:
                conn.execute(statement, rows[0])
            else:
                with conn.begin_nested():
                    conn.execute(statement, rows if len(rows) > 1 else rows[0])

    def _sqlite_executemany(self, rows: Sequence[dict[str, Any]], suffix: str = "") -> int:
        """Insert ``rows`` through sqlite3's own ``executemany`` (:class:`_DriverInsert`),
        the statement ending in ``suffix`` (an ``ON CONFLICT`` clause); the caller
        translates errors.  Returns the rows inserted (sqlite3's summed row count)."""
        conn = self._uow.connection
        key = (self.table.name, suffix)
        insert = _DRIVER_INSERTS.get(key)
        if insert is None:
            insert = _DRIVER_INSERTS[key] = _DriverInsert(self.table, conn.dialect, suffix)
        return int(conn.exec_driver_sql(insert.sql, insert.params(rows)).rowcount)

    def _insert(self, record: Any) -> None:
        self._insert_rows([self._codec.row(record)])

    def _insert_many(self, records: Sequence[Any]) -> None:
        row = self._codec.row
        self._insert_rows([row(r) for r in records])

    def _upsert(self, row: dict[str, Any], keys: Sequence[str]) -> None:
        """Insert ``row`` or replace the row with the same ``keys`` (one statement)."""
        self._execute(upsert_statement(self._uow.dialect_name, self.table, row, keys))
