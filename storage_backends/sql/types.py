"""Column types shared by the SQL schema and its migrations.

Every type here stores the same Python value the same way on SQLite, PostgreSQL and
MariaDB/MySQL, so one schema serves the three (``docs/storage.md``):

* :class:`UtcDateTime` — timezone-aware UTC ``datetime`` in, naive UTC with millisecond
  precision in the column (``DATETIME(3)`` on MariaDB, ``TIMESTAMP(3)`` on PostgreSQL, ISO
  text on SQLite), timezone-aware UTC out.  A naive ``datetime`` is refused.
* :class:`UuidType` — :class:`uuid.UUID`; native ``UUID`` on PostgreSQL, 32 hex digits
  elsewhere (``CHAR(32)`` in the ASCII binary collation on MariaDB, so the order of ids is
  the order of their bytes on every database, never MariaDB's own UUID order).
* :data:`BIDX` — a blind index: 64 lowercase hex characters (ASCII on MariaDB).
* :data:`BINARY` — ciphertext bytes (``LONGBLOB`` on MariaDB, ``BYTEA``, ``BLOB``).
* :data:`JSON_DOC` — a JSON object or list (``JSONB`` on PostgreSQL).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, TypedDict

import sqlalchemy as sa
from sqlalchemy.dialects import mysql, postgresql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeDecorator, TypeEngine

from carecrm.core.model.timeutil import from_naive_utc, to_utc_ms

#: Dialect names served by the MySQL family of SQLAlchemy dialects.
MYSQL_FAMILY = frozenset({"mysql", "mariadb"})


class MysqlTableOptions(TypedDict):
    """The MariaDB/MySQL table options every carecrm table gets (``**``-passed to
    ``sa.Table`` and ``op.create_table``, which take dialect options as keywords)."""

    mysql_engine: str
    mysql_charset: str
    mysql_collate: str


def _naive_utc(value: datetime) -> datetime:
    """``value`` in UTC, truncated to milliseconds, without tzinfo.

    :raises ValueError: if ``value`` is naive (carries no time zone).
    """
    if value.tzinfo is UTC and not value.microsecond % 1000:
        return value.replace(tzinfo=None)  # the usual case, already normalized by the core
    return to_utc_ms(value).replace(tzinfo=None)


class UtcDateTime(TypeDecorator[datetime]):
    """A timezone-aware UTC datetime stored as naive UTC at millisecond precision.

    Binding a naive datetime raises ``ValueError``: a time without a zone is never guessed
    to be UTC.  Values read back are timezone-aware UTC.
    """

    impl = sa.DateTime
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """``DATETIME(3)`` on MariaDB/MySQL, ``TIMESTAMP(3)`` on PostgreSQL, else ``DATETIME``."""
        if dialect.name in MYSQL_FAMILY:
            return dialect.type_descriptor(mysql.DATETIME(fsp=3))
        if dialect.name == "postgresql":
            # Not through type_descriptor(): psycopg's adaptation drops the precision.
            return postgresql.TIMESTAMP(precision=3, timezone=False)
        return dialect.type_descriptor(sa.DateTime(timezone=False))

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Aware datetime → naive UTC truncated to ms.  :raises ValueError: if naive."""
        if value is None:
            return None
        return _naive_utc(value)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        """Naive UTC from the database → timezone-aware UTC."""
        if value is None:
            return None
        return from_naive_utc(value)


class UuidType(TypeDecorator[uuid.UUID]):
    """A :class:`uuid.UUID`: native on PostgreSQL, 32 ASCII hex digits on MariaDB/MySQL and
    SQLite (so ordering by id is byte order everywhere)."""

    impl = sa.Uuid
    cache_ok = True

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        """``CHAR(32) CHARACTER SET ascii COLLATE ascii_bin`` on MariaDB/MySQL, else ``Uuid``."""
        if dialect.name in MYSQL_FAMILY:
            return dialect.type_descriptor(mysql.CHAR(32, charset="ascii", collation="ascii_bin"))
        return dialect.type_descriptor(sa.Uuid(as_uuid=True))

    def process_bind_param(self, value: uuid.UUID | None, dialect: Dialect) -> Any:
        """A UUID → the value the column holds (hex text on MariaDB/MySQL)."""
        if value is None:
            return None
        if dialect.name in MYSQL_FAMILY:
            return value.hex
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> uuid.UUID | None:
        """The column's value → :class:`uuid.UUID`."""
        if value is None:
            return None
        if isinstance(value, uuid.UUID):
            return value
        return uuid.UUID(str(value))


def _sqlite_uuid(value: uuid.UUID | None) -> str | None:
    return None if value is None else value.hex


def _sqlite_datetime(value: datetime | None) -> str | None:
    if value is None:
        return None
    # SQLAlchemy's SQLite DATETIME text: "YYYY-MM-DD HH:MM:SS.ffffff", which isoformat
    # writes the same (four-digit year, six-digit fraction)
    return _naive_utc(value).isoformat(" ", "microseconds")


def sqlite_bind_processor(type_: TypeEngine[Any], dialect: Dialect) -> Callable[[Any], Any] | None:
    """The bind processor of a column type for SQLite's own driver: for :class:`UuidType`
    and :class:`UtcDateTime` one plain function that gives exactly what SQLAlchemy's
    processor chain gives (32 hex digits; naive UTC text at microsecond precision,
    truncated to milliseconds; a naive datetime raises ``ValueError``), at a third of
    its cost per value; for every other type SQLAlchemy's own processor.  A test checks
    that the two agree (``tests/storage_backends/test_sqlite_driver_insert.py``).
    """
    if dialect.name == "sqlite":
        if isinstance(type_, UuidType):
            return _sqlite_uuid
        if isinstance(type_, UtcDateTime):
            return _sqlite_datetime
    processor: Callable[[Any], Any] | None = type_.dialect_impl(dialect).bind_processor(dialect)
    return processor


#: A blind index: lowercase hex HMAC-SHA256, 64 characters (ASCII binary on MariaDB/MySQL).
BIDX: TypeEngine[str] = sa.String(64).with_variant(
    mysql.VARCHAR(64, charset="ascii", collation="ascii_bin"), "mysql", "mariadb"
)

#: Ciphertext and wrapped keys (LONGBLOB on MariaDB/MySQL: BLOB stops at 64 KiB there).
BINARY: TypeEngine[bytes] = sa.LargeBinary().with_variant(mysql.LONGBLOB(), "mysql", "mariadb")

#: A JSON object or list (JSONB on PostgreSQL).
JSON_DOC: TypeEngine[Any] = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

#: A floating-point number in 8 bytes on every database (MariaDB's FLOAT has 4).
DOUBLE: TypeEngine[float] = sa.Double()
