"""The SQL storage backend: SQLite (embedded default), PostgreSQL and MariaDB/MySQL.

Open it from a URL::

    backend = SqlBackend("sqlite:///carecrm.db")
    backend.create_schema()            # carecrm init (idempotent)
    with backend.unit_of_work() as uow:
        uow.contacts.add(record)
        uow.commit()

Driver choice: a plain ``postgresql://`` URL means psycopg 3 and a plain ``mysql://`` or
``mariadb://`` URL means PyMySQL (``docs/storage.md``).

**Schema-version check.**  The first unit of work of a :class:`SqlBackend` instance reads
``meta.schema_version`` (:meth:`SqlBackend.verify_schema`) and refuses to go on with
:class:`~carecrm.core.errors.SchemaVersionError` when the database holds no carecrm schema
("run carecrm init"), an older one ("run carecrm storage upgrade") or a newer one
("upgrade carecrm"); once it has passed, later units of work skip the check.
:meth:`~SqlBackend.schema_version`, :meth:`~SqlBackend.create_schema`,
:meth:`~SqlBackend.upgrade` and :meth:`~SqlBackend.check` never need a matching version,
so ``carecrm init`` and ``carecrm storage upgrade`` work on any database.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from types import TracebackType
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import URL, Connection, Engine, make_url
from sqlalchemy.pool import StaticPool

from carecrm.core.errors import BackendUnavailable, ConfigError, ConflictError, SchemaVersionError, StorageError
from carecrm.core.storage.capabilities import ALL_QUERIES
from carecrm.core.storage.contract import SCHEMA_VERSION
from carecrm.storage_backends.sql import migrate, repositories
from carecrm.storage_backends.sql.errors import translated
from carecrm.storage_backends.sql.repositories import (
    SqlAppointments,
    SqlAudit,
    SqlConsents,
    SqlContacts,
    SqlIdentities,
    SqlInbox,
    SqlInteractions,
    SqlMeta,
    SqlNotes,
    SqlOutbox,
    SqlReviews,
    SqlScores,
    SqlSegments,
    SqlStages,
    SqlTasks,
)

#: URL schemes the SQL backend serves, and the SQLAlchemy driver each one means.
DRIVERS: dict[str, str] = {
    "sqlite": "sqlite",
    "sqlite+pysqlite": "sqlite+pysqlite",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mysql+pymysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
    "mariadb+pymysql": "mariadb+pymysql",
}

#: Backend options (``[storage]`` settings other than ``url``) and their defaults.
OPTION_DEFAULTS: dict[str, Any] = {
    "echo": False,
    "pool_size": None,
    "pool_pre_ping": False,
    "busy_timeout_ms": 5000,
    "connect_timeout": 10,
}

_MYSQL_SQL_MODE = "STRICT_ALL_TABLES,NO_ZERO_IN_DATE,NO_ZERO_DATE,ERROR_FOR_DIVISION_BY_ZERO,NO_ENGINE_SUBSTITUTION"
_DEFAULT_PORTS: dict[str, int] = {"postgresql": 5432, "mysql": 3306, "mariadb": 3306}


def normalize_url(url: str | URL) -> URL:
    """Parse ``url`` and pin the driver: psycopg 3 for PostgreSQL, PyMySQL for MariaDB/MySQL.

    Adds ``charset=utf8mb4`` to a MariaDB/MySQL URL that names no charset.

    :raises ConfigError: if the URL cannot be parsed or names a scheme this backend does
        not serve (the message lists the served schemes).
    """
    try:
        parsed = make_url(url)
    except (sa_exc.ArgumentError, ValueError):
        raise ConfigError(
            "the storage URL cannot be parsed; expected e.g. sqlite:///carecrm.db or postgresql://user@host/dbname"
        ) from None
    driver = DRIVERS.get(parsed.drivername)
    if driver is None:
        raise ConfigError(
            f"the sql storage backend does not serve {parsed.drivername!r} URLs; served: {', '.join(sorted(DRIVERS))}"
        )
    parsed = parsed.set(drivername=driver)
    if parsed.get_backend_name() in ("mysql", "mariadb") and "charset" not in parsed.query:
        parsed = parsed.update_query_dict({"charset": "utf8mb4"})
    return parsed


def _is_memory(url: URL) -> bool:
    return url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:")


class SqlBackend:
    """A carecrm storage backend on one SQL database (see the module docstring).

    :param url: a SQLAlchemy URL with one of the schemes in :data:`DRIVERS`.
    :param echo: log every SQL statement (``sqlalchemy.engine`` logger).
    :param pool_size: connections kept open (client/server databases); None = SQLAlchemy's default.
    :param pool_pre_ping: test each pooled connection before use (survives server restarts,
        costs one round trip per unit of work).
    :param busy_timeout_ms: SQLite: how long a writer waits for another's lock, in ms.
    :param connect_timeout: PostgreSQL/MariaDB: seconds to wait for a connection.
    :raises ConfigError: on an unusable URL.

    Attributes: ``name`` (``"sql"``), ``url_display`` (the URL with the password masked),
    ``capabilities`` (``transactions``, ``savepoints``), ``engine`` (the SQLAlchemy
    :class:`~sqlalchemy.engine.Engine`, for tools and tests).
    """

    name = "sql"
    capabilities: frozenset[str] = frozenset({"transactions", "savepoints"})

    def __init__(
        self,
        url: str | URL,
        *,
        echo: bool = False,
        pool_size: int | None = None,
        pool_pre_ping: bool = False,
        busy_timeout_ms: int = 5000,
        connect_timeout: int = 10,
    ) -> None:
        self.url = normalize_url(url)
        self.url_display = self.url.render_as_string(hide_password=True)
        self._password = self.url.password
        self._schema_verified = False
        self.engine = self._make_engine(
            echo=echo,
            pool_size=pool_size,
            pool_pre_ping=pool_pre_ping,
            busy_timeout_ms=busy_timeout_ms,
            connect_timeout=connect_timeout,
        )
        #: The SQLAlchemy dialect name: ``sqlite``, ``postgresql``, ``mysql`` or ``mariadb``.
        self.dialect_name: str = self.engine.dialect.name

    @classmethod
    def from_options(cls, url: str, options: dict[str, Any] | None = None) -> SqlBackend:
        """Open a backend from a URL and the ``[storage]`` options (see :data:`OPTION_DEFAULTS`).

        :raises ConfigError: on an unknown option (the message lists the known ones) or an
            unusable URL.
        """
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(OPTION_DEFAULTS))
        if unknown:
            raise ConfigError(
                f"unknown sql storage option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTION_DEFAULTS))}"
            )
        return cls(url, **opts)

    # ------------------------------------------------------------------ engine

    def _make_engine(
        self,
        *,
        echo: bool,
        pool_size: int | None,
        pool_pre_ping: bool,
        busy_timeout_ms: int,
        connect_timeout: int,
    ) -> Engine:
        backend = self.url.get_backend_name()
        kwargs: dict[str, Any] = {"echo": echo, "pool_pre_ping": pool_pre_ping}
        if backend == "sqlite":
            memory = _is_memory(self.url)
            if memory:
                kwargs["poolclass"] = StaticPool
                kwargs["connect_args"] = {"check_same_thread": False}
            else:
                kwargs["connect_args"] = {"timeout": busy_timeout_ms / 1000}
                if pool_size is not None:
                    kwargs["pool_size"] = pool_size
            engine = sa.create_engine(self.url, **kwargs)
            _configure_sqlite(engine, memory=memory, busy_timeout_ms=busy_timeout_ms)
            return engine
        kwargs["connect_args"] = {"connect_timeout": connect_timeout}
        if pool_size is not None:
            kwargs["pool_size"] = pool_size
        if backend in ("mysql", "mariadb"):
            kwargs["pool_recycle"] = 3600
        try:
            engine = sa.create_engine(self.url, **kwargs)
        except ImportError as exc:
            extra = "postgres" if backend == "postgresql" else "mysql"
            raise ConfigError(
                f'the database driver for {backend} URLs is not installed ({exc.name}): pip install "carecrm[{extra}]"'
            ) from None
        if backend in ("mysql", "mariadb"):
            _configure_mysql(engine)
        return engine

    def _where(self) -> str:
        return self.url_display

    def _unavailable(self, exc: BaseException) -> BackendUnavailable:
        """A BackendUnavailable naming the host (never the password) and what to check."""
        url = self.url
        orig = getattr(exc, "orig", None) or exc
        detail = (str(orig).strip().splitlines() or [type(orig).__name__])[0]
        if self._password:
            detail = detail.replace(self._password, "***")
        if url.get_backend_name() == "sqlite":
            return BackendUnavailable(
                f"cannot open the SQLite database {url.database!r}: {detail}; check that its folder "
                "exists and is writable and that the file is a carecrm database"
            )
        backend = url.get_backend_name()
        host = url.host or "localhost"
        port = url.port or str(_DEFAULT_PORTS.get(backend, ""))
        return BackendUnavailable(
            f"cannot connect to the {backend} server at {host}:{port} (database {url.database!r}, "
            f"user {url.username!r}): {detail}; check that the server is running and reachable, the "
            "host and port, the user name and password, and that the database exists"
        )

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        try:
            conn = self.engine.connect()
        except sa_exc.DBAPIError as exc:
            raise self._unavailable(exc) from None
        try:
            with translated("(schema)", self._where()):
                yield conn
        finally:
            conn.close()

    def connection(self) -> Connection:
        """A new SQLAlchemy connection (for :class:`SqlUnitOfWork`).

        :raises BackendUnavailable: if the database cannot be reached or opened.
        """
        try:
            return self.engine.connect()
        except sa_exc.DBAPIError as exc:
            raise self._unavailable(exc) from None

    # ------------------------------------------------------------------ StorageBackend

    def unit_of_work(self) -> SqlUnitOfWork:
        """A new unit of work (one transaction; opened by ``with``)."""
        return SqlUnitOfWork(self)

    def _check_version(self, version: int | None) -> int:
        where = self._where()
        if version is None:
            raise SchemaVersionError(migrate.missing_message(where))
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(migrate.newer_message(where, version))
        if version < SCHEMA_VERSION:
            raise SchemaVersionError(migrate.older_message(where, version))
        return version

    def verify_schema(self) -> int:
        """Check that the database holds this release's schema version (always reads it).

        :returns: the stored schema version (== SCHEMA_VERSION).
        :raises SchemaVersionError: no carecrm schema (run ``carecrm init``), an older one
            (run ``carecrm storage upgrade``) or a newer one (upgrade carecrm).
        :raises BackendUnavailable: if the database cannot be reached.
        """
        with self._connect() as conn:
            version = migrate.read_schema_version(conn)
        self._check_version(version)
        self._schema_verified = True
        return SCHEMA_VERSION

    def _verify_on(self, conn: Connection) -> None:
        """The once-per-instance check made by the first unit of work."""
        if self._schema_verified:
            return
        with translated("meta", self._where()):
            version = migrate.read_schema_version(conn)
        self._check_version(version)
        self._schema_verified = True

    def create_schema(self) -> None:
        """Create the carecrm schema in an empty database (idempotent at SCHEMA_VERSION).

        :raises SchemaVersionError: if the database holds an older schema (run ``carecrm
            storage upgrade``) or a newer one (upgrade carecrm).
        :raises BackendUnavailable: if the database cannot be reached.
        """
        with self._connect() as conn:
            with conn.begin():
                version = migrate.read_schema_version(conn)
                if version is None:
                    migrate.run_upgrade(conn, self._where())
                    version = SCHEMA_VERSION
        self._check_version(version)
        self._schema_verified = True

    def upgrade(self) -> list[str]:
        """Apply pending migrations (an empty database gets the whole schema).

        :returns: the migration steps applied, oldest first (``[]`` if none were pending).
        :raises SchemaVersionError: if the database is newer than this release.
        :raises BackendUnavailable: if the database cannot be reached.
        """
        with self._connect() as conn:
            with conn.begin():
                applied = migrate.run_upgrade(conn, self._where())
        self._schema_verified = True
        return applied

    def schema_version(self) -> int | None:
        """The stored schema version, or None if the database holds no carecrm table.

        :raises BackendUnavailable: if the database cannot be reached.
        """
        with self._connect() as conn:
            return migrate.read_schema_version(conn)

    def check(self) -> dict[str, Any]:
        """Ping the database and describe it.

        :returns: ``{"ok": True, "backend": "sql", "dialect", "driver", "server_version",
            "schema_version", "expected_schema_version", "schema_current", "capabilities",
            "url_display"}``; ``dialect`` is ``sqlite``, ``postgresql``, ``mysql`` or
            ``mariadb`` (a MariaDB server reached through a ``mysql://`` URL says ``mariadb``).
        :raises BackendUnavailable: if the database cannot be reached.
        """
        with self._connect() as conn:
            dialect = conn.dialect
            backend = self.url.get_backend_name()
            if backend == "sqlite":
                server_version = conn.exec_driver_sql("select sqlite_version()").scalar_one()
            elif backend == "postgresql":
                server_version = conn.exec_driver_sql("show server_version").scalar_one()
            else:
                server_version = conn.exec_driver_sql("select version()").scalar_one()
            version = migrate.read_schema_version(conn)
            conn.rollback()
        name = "mariadb" if getattr(dialect, "is_mariadb", False) else dialect.name
        return {
            "ok": True,
            "backend": self.name,
            "dialect": name,
            "driver": dialect.driver,
            "server_version": str(server_version),
            "schema_version": version,
            "expected_schema_version": SCHEMA_VERSION,
            "schema_current": version == SCHEMA_VERSION,
            "capabilities": sorted(self.capabilities),
            "url_display": self.url_display,
        }

    def close(self) -> None:
        """Close every pooled connection (and with them the SQLite file)."""
        self.engine.dispose()

    def __repr__(self) -> str:
        return f"SqlBackend({self.url_display!r})"


def _configure_sqlite(engine: Engine, *, memory: bool, busy_timeout_ms: int) -> None:
    """Pragmas on every new SQLite connection, and an explicit ``BEGIN IMMEDIATE``.

    pysqlite's own transaction handling is turned off (``isolation_level = None``) and
    SQLAlchemy's ``begin`` event emits the BEGIN, the recipe in SQLAlchemy's SQLite docs
    ("Serializable isolation / Savepoints / Transactional DDL"), so SAVEPOINTs work.
    IMMEDIATE takes the write lock when the unit of work starts: a unit that reads and
    then writes (ingest: check keys, then insert) otherwise fails at once with
    SQLITE_BUSY when another writer committed in between, whatever the busy timeout.
    Units of work on one file therefore run one at a time, each waiting up to
    ``busy_timeout_ms`` for its turn; WAL still lets other processes read meanwhile.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            if not memory:
                cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=NORMAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        finally:
            cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _configure_mysql(engine: Engine) -> None:
    """Strict SQL mode, UTC and READ COMMITTED on every new MariaDB/MySQL connection (a
    too-long value is an error, never silently cut)."""

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute(f"SET SESSION sql_mode = '{_MYSQL_SQL_MODE}'")
            cursor.execute("SET SESSION time_zone = '+00:00'")
            # PostgreSQL's default: a statement after a lock wait sees what the lock holder
            # committed (REPEATABLE READ would keep the unit's first snapshot, so a unit that
            # waited for a lock would still match against the old blind indexes)
            cursor.execute("SET SESSION TRANSACTION ISOLATION LEVEL READ COMMITTED")
        finally:
            cursor.close()


#: How long a MariaDB/MySQL unit of work waits for one named lock, in seconds.
LOCK_TIMEOUT_SECONDS = 60

_PG_LOCK = sa.text(
    "SELECT count(pg_advisory_xact_lock(k)) FROM (SELECT unnest(CAST(:keys AS bigint[])) AS k ORDER BY k) AS s"
)
_MYSQL_LOCK = sa.text("SELECT GET_LOCK(:name, :timeout)")


def _pg_lock_key(name: str) -> int:
    """A signed 64-bit advisory-lock key for ``name`` (BLAKE2b; collisions only make two
    unrelated units wait for each other)."""
    import hashlib

    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True)


def _mysql_lock_name(scope: str, name: str) -> str:
    """A ``GET_LOCK`` name for ``name`` in database ``scope``: 40 characters, under the
    64-character limit of MariaDB and MySQL, free of the name's own text."""
    import hashlib

    return "carecrm:" + hashlib.blake2b(f"{scope}\x1f{name}".encode(), digest_size=16).hexdigest()


class SqlUnitOfWork:
    """One transaction on one connection, with every repository of :mod:`carecrm.core.storage.contract`.

    Entering connects (and, the first time for this backend instance, checks the schema
    version); leaving without :meth:`commit` rolls back; an exception inside rolls back and
    propagates.  After :meth:`commit` or :meth:`rollback` the unit stays usable and the
    next statement starts a new transaction.

    :raises BackendUnavailable: on entering, if the database cannot be reached.
    :raises SchemaVersionError: on entering, if the schema version does not match.
    """

    #: Every optional query is answered natively (:mod:`carecrm.core.storage.capabilities`).
    native_queries: frozenset[str] = ALL_QUERIES

    def __init__(self, backend: SqlBackend) -> None:
        self.backend = backend
        self._conn: Connection | None = None
        #: True where a failed single-row INSERT aborts the whole transaction (PostgreSQL),
        #: so inserts run inside a SAVEPOINT to keep the unit usable after a DuplicateError.
        self.savepoint_single_inserts = backend.dialect_name == "postgresql"
        self.where = backend.url_display
        self.contacts = SqlContacts(self)
        self.identities = SqlIdentities(self)
        self.interactions = SqlInteractions(self)
        self.stages = SqlStages(self)
        self.appointments = SqlAppointments(self)
        self.consents = SqlConsents(self)
        self.notes = SqlNotes(self)
        self.tasks = SqlTasks(self)
        self.scores = SqlScores(self)
        self.reviews = SqlReviews(self)
        self.segments = SqlSegments(self)
        self.inbox = SqlInbox(self)
        self.audit = SqlAudit(self)
        self.outbox = SqlOutbox(self)
        self.meta = SqlMeta(self)
        #: Named locks held (MariaDB's GET_LOCK names, PostgreSQL's advisory keys).
        self._locks: set[Any] = set()

    @property
    def connection(self) -> Connection:
        """The open connection.  :raises StorageError: outside the ``with`` block."""
        if self._conn is None:
            raise StorageError("the unit of work is not open: use it inside `with backend.unit_of_work() as uow:`")
        return self._conn

    @property
    def dialect_name(self) -> str:
        """``sqlite``, ``postgresql``, ``mysql`` or ``mariadb``."""
        return self.backend.dialect_name

    def __enter__(self) -> SqlUnitOfWork:
        if self._conn is not None:
            raise StorageError("this unit of work is already open; open a new one per transaction")
        conn = self.backend.connection()
        try:
            self.backend._verify_on(conn)
        except BaseException:
            conn.rollback()
            conn.close()
            raise
        self._conn = conn
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn, self._conn = self._conn, None
        if conn is None:
            return
        try:
            with translated("(rollback)", self.where):
                conn.rollback()
                self._release_locks(conn)
        except StorageError:
            if exc is None:
                raise  # otherwise the block's own exception is the one to report
        finally:
            self._locks.clear()
            conn.close()

    def commit(self) -> None:
        """Make everything done in this unit durable, then release its named locks.

        :raises ConflictError: if the database refused the commit because of a concurrent
            writer (serialization failure); nothing was stored.
        :raises BackendUnavailable: if the connection was lost.
        """
        with translated("(commit)", self.where):
            self.connection.commit()
            self._release_locks(self.connection)

    def rollback(self) -> None:
        """Undo everything done in this unit since it began or last committed."""
        with translated("(rollback)", self.where):
            self.connection.rollback()
            self._release_locks(self.connection)

    def lock(self, names: Iterable[str]) -> None:
        """Exclusive named locks until the unit commits or rolls back (see
        :meth:`carecrm.core.storage.contract.UnitOfWork.lock`).

        PostgreSQL: ``pg_advisory_xact_lock`` on a 64-bit key hashed from each name
        (advisory locks are per database), taken in key order in one statement.
        MariaDB/MySQL: ``GET_LOCK`` on a name hashed with the database's name (user locks
        are server-wide), in name order, each waiting up to :data:`LOCK_TIMEOUT_SECONDS`,
        released by ``RELEASE_ALL_LOCKS()`` after commit or rollback.  SQLite: nothing to
        more than to begin the unit's transaction, whose ``BEGIN IMMEDIATE`` holds the
        database's write lock until it ends.

        :raises ConflictError: a lock wait timed out or a deadlock was broken (retry).
        """
        dialect = self.dialect_name
        conn = self.connection
        if dialect == "sqlite":
            if not conn.in_transaction():
                with translated("(lock)", self.where):
                    conn.exec_driver_sql("SELECT 1")  # begins: BEGIN IMMEDIATE takes the write lock
            return
        if dialect == "postgresql":
            keys = sorted({_pg_lock_key(n) for n in names} - self._locks)
            if not keys:
                return
            with translated("(lock)", self.where):
                conn.execute(_PG_LOCK, {"keys": keys})
            self._locks.update(keys)
            return
        scope = str(self.backend.url.database or "")
        wanted = sorted({_mysql_lock_name(scope, n) for n in names} - self._locks)
        for name in wanted:
            with translated("(lock)", self.where):
                got = conn.execute(_MYSQL_LOCK, {"name": name, "timeout": LOCK_TIMEOUT_SECONDS}).scalar()
            if got != 1:
                raise ConflictError.lock_timeout(LOCK_TIMEOUT_SECONDS)
            self._locks.add(name)

    def _release_locks(self, conn: Connection) -> None:
        if self._locks and self.dialect_name not in ("sqlite", "postgresql"):
            conn.exec_driver_sql("SELECT RELEASE_ALL_LOCKS()")
            conn.rollback()  # the SELECT began a transaction; end it
        self._locks.clear()

    def export_records(self, kind: str) -> Iterator[Any]:
        """Every stored record of ``kind`` as stored, in primary-key order, a page per
        query (:func:`carecrm.storage_backends.sql.repositories.export_records`).

        :raises UnknownComponentError: if ``kind`` is not one of
            :data:`carecrm.core.storage.contract.RECORD_KINDS`.
        """
        return repositories.export_records(self, kind)

    def import_records(self, kind: str, records: Sequence[Any]) -> int:
        """Store records of ``kind`` unchanged, one multi-row INSERT per chunk; returns
        how many were given (:func:`carecrm.storage_backends.sql.repositories.import_records`).

        :raises UnknownComponentError: for an unknown kind.
        :raises DuplicateError: if a key is already stored.
        """
        return repositories.import_records(self, kind, records)

    def count_records(self, kind: str) -> int:
        """How many records of ``kind`` are stored (one ``count(*)``).

        :raises UnknownComponentError: for an unknown kind.
        """
        return repositories.count_records(self, kind)
