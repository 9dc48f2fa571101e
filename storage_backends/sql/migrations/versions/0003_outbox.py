"""Schema version 3: the durable outbox of committed domain events.

Revision ID: 0003_outbox
Revises: 0002_inbox_unique_digest
Create Date: 2026-12-03

Live events were delivered in memory after each commit, so a crash between the commit and
the delivery lost them (issue 7).  From this version every unit of work writes its events
to ``outbox`` in the same transaction, and each subscriber reads them in ``seq`` order
from its cursor (kept in ``meta``).  A frozen copy of the table as
:mod:`carecrm.storage_backends.sql.schema` defines it at version 3.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from carecrm.storage_backends.sql.types import JSON_DOC, MysqlTableOptions, UtcDateTime

revision = "0003_outbox"
down_revision = "0002_inbox_unique_digest"
branch_labels = None
depends_on = None

_OPTS: MysqlTableOptions = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}


def upgrade() -> None:
    """Create the ``outbox`` table (empty: events committed before it existed were
    delivered in memory at the time)."""
    op.create_table(
        "outbox",
        sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("data", JSON_DOC, nullable=False),
        **_OPTS,
    )


def downgrade() -> None:
    """Drop the outbox."""
    op.drop_table("outbox")
