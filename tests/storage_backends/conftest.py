"""Fixtures for the SQL backend tests: a private database per session on the PostgreSQL and
MariaDB test servers, emptied before each test.

Servers: ``CARECRM_TEST_POSTGRES_URL`` (default ``postgresql://postgres@127.0.0.1:5432/test``)
and ``CARECRM_TEST_MARIADB_URL`` (default ``mysql://root@127.0.0.1:3306/test``); the user
needs CREATE DATABASE.  Each session creates ``carecrm_sqltest_<epoch>_<random>`` with the
schema, empties its tables before every test (DELETE, far faster than re-creating), and
drops it at the end; databases of that name left by a killed run over 6 hours ago are
dropped too.  An unreachable server skips the tests locally and fails them when
``CI=true``.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import NoReturn

import pytest
import sqlalchemy as sa

from carecrm.core.storage.contract import SCHEMA_VERSION
from carecrm.storage_backends.sql import schema
from carecrm.storage_backends.sql.backend import SqlBackend, normalize_url
from carecrm.storage_backends.sql.migrate import write_schema_version

DEFAULT_URLS = {
    "postgresql": "postgresql://postgres@127.0.0.1:5432/test",
    "mariadb": "mysql://root@127.0.0.1:3306/test",
}
ENV = {"postgresql": "CARECRM_TEST_POSTGRES_URL", "mariadb": "CARECRM_TEST_MARIADB_URL"}
PREFIX = "carecrm_sqltest_"
STALE_SECONDS = 6 * 3600


_UNREACHABLE: dict[str, str] = {}


def unreachable(kind: str, exc: BaseException | None = None) -> NoReturn:
    """Skip (locally) or fail (CI=true) because the ``kind`` test server is not reachable.

    The reason is remembered, so later tests of the session give up without reconnecting.
    """
    if exc is not None:
        _UNREACHABLE[kind] = (
            f"{kind} test server not reachable ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}); start it or set {ENV[kind]}"
        )
    message = _UNREACHABLE[kind]
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


class ServerDatabase:
    """A private database on a test server: its URL and a fast ``reset()`` to empty tables."""

    def __init__(self, kind: str, url: str, engine: sa.Engine) -> None:
        self.kind = kind
        self.url = url
        self.engine = engine

    def reset(self) -> None:
        """Delete every row of every carecrm table and restore ``meta.schema_version``."""
        with self.engine.begin() as conn:
            for table in reversed(schema.ALL_TABLES):
                conn.execute(table.delete())
            write_schema_version(conn, SCHEMA_VERSION)


def _drop_stale(kind: str, conn: sa.Connection) -> None:
    if kind == "postgresql":
        names = conn.execute(
            sa.text("select datname from pg_database where datname like :p"), {"p": PREFIX + "%"}
        ).scalars()
    else:
        names = conn.execute(sa.text("show databases like :p"), {"p": PREFIX + "%"}).scalars()
    now = time.time()
    for name in list(names):
        try:
            born = int(name[len(PREFIX) :].split("_")[0])
        except ValueError:
            continue
        if now - born > STALE_SECONDS:
            force = " with (force)" if kind == "postgresql" else ""
            conn.execute(sa.text(f"drop database if exists {name}{force}"))


def _server_database(kind: str) -> Iterator[ServerDatabase]:
    if kind in _UNREACHABLE:
        unreachable(kind)
    admin_url = normalize_url(os.environ.get(ENV[kind]) or DEFAULT_URLS[kind])
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 5})
    name = f"{PREFIX}{int(time.time())}_{secrets.token_hex(4)}"
    try:
        with admin.connect() as conn:
            _drop_stale(kind, conn)
            if kind == "postgresql":
                conn.execute(sa.text(f"create database {name}"))
            else:
                conn.execute(sa.text(f"create database {name} character set utf8mb4 collate utf8mb4_bin"))
    except sa.exc.OperationalError as exc:
        admin.dispose()
        unreachable(kind, exc.orig or exc)
    url = admin_url.set(database=name).render_as_string(hide_password=False)
    backend = SqlBackend(url)
    backend.create_schema()
    backend.close()
    engine = sa.create_engine(url)
    try:
        yield ServerDatabase(kind, url, engine)
    finally:
        engine.dispose()
        with admin.connect() as conn:
            force = " with (force)" if kind == "postgresql" else ""
            conn.execute(sa.text(f"drop database if exists {name}{force}"))
        admin.dispose()


@pytest.fixture(scope="session")
def postgres_database() -> Iterator[ServerDatabase]:
    """This session's private PostgreSQL database, schema created."""
    yield from _server_database("postgresql")


@pytest.fixture(scope="session")
def mariadb_database() -> Iterator[ServerDatabase]:
    """This session's private MariaDB database, schema created."""
    yield from _server_database("mariadb")


@pytest.fixture(scope="session")
def second_postgres_database() -> Iterator[ServerDatabase]:
    """A second private PostgreSQL database (the target of whole-database copies)."""
    yield from _server_database("postgresql")


@pytest.fixture(scope="session")
def second_mariadb_database() -> Iterator[ServerDatabase]:
    """A second private MariaDB database (the target of whole-database copies)."""
    yield from _server_database("mariadb")


@pytest.fixture
def open_sql_backends() -> Iterator[Callable[[str], SqlBackend]]:
    """``open(url)`` → a SqlBackend closed at the end of the test."""
    opened: list[SqlBackend] = []

    def open_(url: str) -> SqlBackend:
        opened.append(SqlBackend(url))
        return opened[-1]

    yield open_
    for backend in opened:
        backend.close()
