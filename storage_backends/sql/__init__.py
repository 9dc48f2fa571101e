"""The built-in SQL storage backend: SQLite (the embedded default), PostgreSQL, MariaDB/MySQL.

Registered as ``sql`` for the URL schemes in :data:`SCHEMES`; SQLAlchemy and the drivers
are imported only when a backend is opened.  See
:mod:`carecrm.storage_backends.sql.backend` for the backend itself.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from carecrm.core.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from carecrm.storage_backends.sql.backend import SqlBackend

#: The URL schemes served (the part of ``[storage] url`` before ``://``).
SCHEMES: tuple[str, ...] = (
    "sqlite",
    "sqlite+pysqlite",
    "postgresql",
    "postgresql+psycopg",
    "mysql",
    "mysql+pymysql",
    "mariadb",
    "mariadb+pymysql",
)


def open_backend(url: str, options: dict[str, Any]) -> SqlBackend:
    """The storage factory: open a :class:`~carecrm.storage_backends.sql.backend.SqlBackend`.

    Nothing is connected yet; the first unit of work connects and checks the schema version.

    :param url: the ``[storage] url`` (``sqlite:///carecrm.db``, ``postgresql://user@host/db``,
        ``mysql://user@host/db``); plain ``postgresql`` means psycopg 3, plain ``mysql`` /
        ``mariadb`` mean PyMySQL.
    :param options: the other ``[storage]`` settings: ``echo``, ``pool_size``,
        ``pool_pre_ping``, ``busy_timeout_ms`` (SQLite), ``connect_timeout`` (seconds).
    :raises ConfigError: on an unknown option or an unusable URL.
    """
    from carecrm.storage_backends.sql.backend import SqlBackend

    return SqlBackend.from_options(url, options)


@hookimpl
def carecrm_register_storage_backends(register: Callable[..., None]) -> None:
    """Register the ``sql`` backend for SQLite, PostgreSQL and MariaDB/MySQL URLs."""
    register("sql", SCHEMES, open_backend)
