"""Translation of SQLAlchemy / driver exceptions into :mod:`carecrm.core.errors`.

Messages name the table, the constraint or the column, never a value: a driver's own text
(``Duplicate entry 'x' for key ...``, ``DETAIL: Key (...)=(...)``) may carry data and is
never passed on, and the driver exception is not chained (``from None``) so it does not
reach logs through a traceback either.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import exc as sa_exc

from carecrm.core.errors import (
    BackendUnavailable,
    ConflictError,
    DuplicateError,
    SchemaVersionError,
    StorageError,
)
from carecrm.storage_backends.sql import schema
from carecrm.storage_backends.sql.migrate import missing_message


def _constraint_columns() -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for table in schema.ALL_TABLES:
        out[f"pk_{table.name}"] = tuple(c.name for c in table.primary_key.columns)
        for cons in table.constraints:
            if cons.name and hasattr(cons, "columns"):
                out[str(cons.name)] = tuple(c.name for c in cons.columns)
        for index in table.indexes:
            if index.name:
                out[str(index.name)] = tuple(c.name for c in index.columns)
    return out


_CONSTRAINTS = _constraint_columns()
_MYSQL_KEY = re.compile(r"for key '(?:[^'.]*\.)?([^']+)'")
_MYSQL_COLUMN = re.compile(r"Column '([^']+)'")
_SQLITE_COLUMNS = re.compile(r"constraint failed: (.+)$")


def _describe(columns: tuple[str, ...]) -> str:
    if not columns:
        return "key"
    if len(columns) == 1:
        return columns[0]
    return "(" + ", ".join(columns) + ")"


def _code(orig: BaseException | None) -> str:
    """A short, data-free code of a driver error (SQLSTATE, errno or SQLite error name)."""
    if orig is None:
        return "unknown"
    args = getattr(orig, "args", ())
    if args and isinstance(args[0], int):
        return f"error {args[0]}"
    sqlstate = getattr(orig, "sqlstate", None)
    if sqlstate:
        return f"SQLSTATE {sqlstate}"
    name = getattr(orig, "sqlite_errorname", None)
    if name:
        return str(name)
    return type(orig).__name__


def _integrity(table: str, exc: sa_exc.IntegrityError) -> StorageError:
    orig = exc.orig
    text = str(orig) if orig is not None else ""
    sqlstate = getattr(orig, "sqlstate", None)
    errno = orig.args[0] if orig is not None and orig.args and isinstance(orig.args[0], int) else None
    columns: tuple[str, ...] = ()
    unique = False
    column: str | None = None
    if errno is not None:  # MariaDB / MySQL (PyMySQL: args = (errno, message))
        if errno in (1062, 1586):
            unique = True
            m = _MYSQL_KEY.search(text)
            if m:
                key = m.group(1)
                columns = _CONSTRAINTS.get(f"pk_{table}", ()) if key == "PRIMARY" else _CONSTRAINTS.get(key, ())
        elif errno in (1048, 1364):
            m = _MYSQL_COLUMN.search(text)
            column = m.group(1) if m else None
    elif sqlstate is not None:  # PostgreSQL (psycopg)
        diag = getattr(orig, "diag", None)
        if sqlstate == "23505":
            unique = True
            columns = _CONSTRAINTS.get(getattr(diag, "constraint_name", None) or "", ())
        elif sqlstate == "23502":
            column = getattr(diag, "column_name", None)
    else:  # SQLite: "UNIQUE constraint failed: t.a, t.b" names columns only
        m = _SQLITE_COLUMNS.search(text)
        cols = tuple(part.strip().split(".")[-1] for part in m.group(1).split(",")) if m else ()
        if text.startswith("UNIQUE") or text.startswith("PRIMARY"):
            unique = True
            columns = cols
        elif text.startswith("NOT NULL") and cols:
            column = cols[0]
    if unique:
        err: StorageError = DuplicateError(f"{table}: a row with the same {_describe(columns)} already exists")
    elif column:
        err = StorageError(f"{table}: column {column!r} must not be empty")
    else:
        err = StorageError(f"{table}: the row breaks a constraint of the table ({_code(orig)})")
    err.table = table  # type: ignore[attr-defined]
    err.columns = columns  # type: ignore[attr-defined]
    return err


def _is_missing_table(exc: sa_exc.DBAPIError) -> bool:
    orig = exc.orig
    if getattr(orig, "sqlstate", None) == "42P01":
        return True
    args = getattr(orig, "args", ())
    if args and args[0] == 1146:
        return True
    return "no such table" in str(orig)


def _is_busy(exc: sa_exc.DBAPIError) -> bool:
    name = str(getattr(exc.orig, "sqlite_errorname", ""))
    return name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "database is locked" in str(exc.orig)


def _is_race(exc: sa_exc.DBAPIError) -> bool:
    if getattr(exc.orig, "sqlstate", None) in ("40001", "40P01"):
        return True
    args: tuple[object, ...] = getattr(exc.orig, "args", ())
    return bool(args) and args[0] in (1205, 1213)


def translate(exc: sa_exc.SQLAlchemyError, table: str, where: str) -> Exception:
    """The carecrm exception for ``exc``, raised while working on ``table``.

    :param where: the masked URL of the database, for messages.
    :returns: a :class:`StorageError` subclass, or the ``ValueError`` / ``TypeError`` a
        column type raised while binding a value (a naive datetime).
    """
    if isinstance(exc, sa_exc.IntegrityError):
        return _integrity(table, exc)
    if isinstance(exc, sa_exc.DataError):
        return StorageError(f"{table}: a value does not fit its column (too long or out of range; {_code(exc.orig)})")
    if isinstance(exc, sa_exc.DBAPIError):
        if _is_missing_table(exc):
            return SchemaVersionError(missing_message(where) + f" (table {table!r} is missing)")
        if _is_busy(exc):
            return BackendUnavailable(
                f"the database at {where} is busy (locked by another writer longer than the busy "
                "timeout); retry, or raise busy_timeout_ms"
            )
        if _is_race(exc):
            return ConflictError.lost_race(table, _code(exc.orig))
        if exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError)):
            return BackendUnavailable(
                f"lost the connection to the database at {where} ({_code(exc.orig)}); check that the "
                "server is running and reachable"
            )
        return StorageError(f"{table}: the database refused the statement ({_code(exc.orig)})")
    if isinstance(exc, sa_exc.StatementError) and isinstance(exc.orig, (ValueError, TypeError)):
        return exc.orig
    return StorageError(f"{table}: {type(exc).__name__}")


@contextmanager
def translated(table: str, where: str) -> Iterator[None]:
    """Run the block, turning SQLAlchemy exceptions into carecrm ones (see :func:`translate`)."""
    try:
        yield
    except sa_exc.SQLAlchemyError as exc:
        raise translate(exc, table, where) from None
