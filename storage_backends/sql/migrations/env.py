"""Alembic environment for carecrm, driven programmatically.

:func:`carecrm.storage_backends.sql.migrate.run_upgrade` puts an open SQLAlchemy
``Connection`` in ``config.attributes["connection"]`` and a list in
``config.attributes["applied"]``; each applied revision's id is appended to that list.
Offline (SQL script) mode is not supported: carecrm always migrates a live database.
"""

from __future__ import annotations

from typing import Any

from alembic import context

from carecrm.storage_backends.sql.schema import metadata


def _record_step(*, ctx: Any, step: Any, heads: Any, run_args: Any) -> None:
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
