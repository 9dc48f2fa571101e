"""Schema versions and Alembic migrations of the SQL backend.

Two numbers describe a carecrm SQL database:

* ``meta.schema_version`` — the :data:`carecrm.core.storage.contract.SCHEMA_VERSION` the data was
  written for; every backend keeps it, and it is what the version check compares;
* Alembic's ``alembic_version`` — the last migration step applied.

:func:`run_upgrade` applies every pending step and then writes ``meta.schema_version``;
:data:`HEAD_FOR_VERSION` maps each schema version to the step that completes it (used to
adopt a database that has carecrm tables but no Alembic bookkeeping).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa
from sqlalchemy.engine import Connection

from carecrm.core.errors import SchemaVersionError
from carecrm.core.storage.contract import SCHEMA_VERSION
from carecrm.storage_backends.sql import schema

if TYPE_CHECKING:
    # Alembic is imported only to migrate (init, storage upgrade): a look-up that reads
    # the schema version never loads it
    from alembic.config import Config

#: The migration step that completes each schema version.
HEAD_FOR_VERSION: dict[int, str] = {
    1: "0001_initial",
    2: "0002_inbox_unique_digest",
    3: "0003_outbox",
    4: "0004_inbox_verified",
}

#: Folder of ``env.py`` and ``versions/``.
MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"

UPGRADE_HINT = "run `carecrm storage upgrade` (back up the database first)"
NEWER_HINT = "upgrade carecrm to a release that knows this schema version"
INIT_HINT = "run `carecrm init` to create the carecrm schema"


def alembic_config(connection: Connection) -> Config:
    """An in-memory Alembic configuration that migrates over ``connection``."""
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    cfg.attributes["connection"] = connection
    cfg.attributes["applied"] = []
    return cfg


def current_revision(connection: Connection) -> str | None:
    """The last Alembic step applied to this database, or None."""
    from alembic.runtime.migration import MigrationContext

    return MigrationContext.configure(connection).get_current_revision()


def read_schema_version(connection: Connection) -> int | None:
    """The stored schema version.

    :returns: None if the database holds no carecrm table; 0 if it holds carecrm tables
        but no recorded version (a half-created schema, to be upgraded).
    :raises SchemaVersionError: if the stored value is not an integer.
    """
    names = set(sa.inspect(connection).get_table_names())
    if schema.meta.name not in names:
        return 0 if names & {t.name for t in schema.ALL_TABLES} else None
    value = connection.execute(
        sa.select(schema.meta.c.value).where(schema.meta.c.key == schema.SCHEMA_VERSION_KEY)
    ).scalar_one_or_none()
    if value is None:
        return 0
    try:
        return int(value)
    except ValueError:
        raise SchemaVersionError(
            f"the stored schema version {value!r} is not a number; the meta table was edited "
            "by hand: restore it from a backup"
        ) from None


def write_schema_version(connection: Connection, version: int) -> None:
    """Store ``version`` as ``meta.schema_version`` (insert or replace)."""
    t = schema.meta
    done = connection.execute(sa.update(t).where(t.c.key == schema.SCHEMA_VERSION_KEY).values(value=str(version)))
    if done.rowcount == 0:
        connection.execute(sa.insert(t).values(key=schema.SCHEMA_VERSION_KEY, value=str(version)))


def newer_message(where: str, version: int) -> str:
    """The message for a database written by a newer carecrm."""
    return (
        f"the database at {where} has schema version {version}, newer than this carecrm "
        f"release reads ({SCHEMA_VERSION}): {NEWER_HINT}"
    )


def older_message(where: str, version: int) -> str:
    """The message for a database written by an older carecrm."""
    return (
        f"the database at {where} has schema version {version}, older than this carecrm "
        f"release needs ({SCHEMA_VERSION}): {UPGRADE_HINT}"
    )


def missing_message(where: str) -> str:
    """The message for a database with no carecrm schema."""
    return f"the database at {where} holds no carecrm schema: {INIT_HINT}"


def run_upgrade(connection: Connection, where: str) -> list[str]:
    """Apply every pending migration step over ``connection`` and record the schema version.

    Works on an empty database (creates the schema) and on any older one.  The caller owns
    the transaction (DDL is transactional on SQLite and PostgreSQL, not on MariaDB).

    :param where: the masked URL, for messages.
    :returns: the ids of the steps applied, oldest first (``["0001_initial"]``).
    :raises SchemaVersionError: if the database is newer than this release.
    """
    from alembic import command
    from alembic.util import CommandError

    version = read_schema_version(connection)
    if version is not None and version > SCHEMA_VERSION:
        raise SchemaVersionError(newer_message(where, version))
    cfg = alembic_config(connection)
    try:
        if version and version in HEAD_FOR_VERSION and current_revision(connection) is None:
            command.stamp(cfg, HEAD_FOR_VERSION[version])
        command.upgrade(cfg, "head")
    except CommandError as exc:
        # An unknown revision in alembic_version: a newer carecrm migrated this database.
        raise SchemaVersionError(
            f"the database at {where} was migrated by a newer carecrm ({exc}): {NEWER_HINT}"
        ) from None
    write_schema_version(connection, SCHEMA_VERSION)
    applied: list[str] = list(cfg.attributes["applied"])
    return applied
