"""Alembic environment for carecrm, driven programmatically.

:func:`carecrm.storage_backends.sql.migrate.run_upgrade` puts an open SQLAlchemy
``Connection`` in ``config.attributes["connection"]`` and a list in
``config.attributes["applied"]``; each applied revision's id is appended to that list.
Offline (SQL script) mode is not supported: carecrm always migrates a live database.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING, Any

from alembic import context

from carecrm.storage_backends.sql.schema import metadata

if TYPE_CHECKING:
    from alembic.runtime.migration import MigrationContext, MigrationInfo


def _record_step(
    ctx: MigrationContext, step: MigrationInfo, heads: Collection[Any], run_args: Mapping[str, Any]
) -> None:
    # Alembic calls this with keywords (ctx=, step=, heads=, run_args=) and types it positionally.
    applied = context.config.attributes.setdefault("applied", [])
    if step.is_upgrade and not step.is_stamp:
        applied.append(step.up_revision_id)


def run_migrations_online() -> None:
    """Run pending migrations on the connection handed in through ``config.attributes``."""
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("carecrm migrations need a connection in config.attributes['connection']")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        on_version_apply=_record_step,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("carecrm migrations run online only (carecrm storage upgrade)")
run_migrations_online()
