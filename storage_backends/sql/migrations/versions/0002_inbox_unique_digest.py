"""Schema version 2: one inbox row per payload ((source, digest) unique).

Revision ID: 0002_inbox_unique_digest
Revises: 0001_initial
Create Date: 2026-12-03

Two receivers of the same bytes at once (two ``carecrm ingest`` processes over one
folder, two server workers behind a vendor's retry) each stored their own inbox row, and
one of them could end ``quarantined`` although the records were stored (issue 7).  From
this version the database keeps one row per (source, digest) and the inbox inserts with
``ON CONFLICT DO NOTHING``.

A database written by version 1 may hold several rows of one payload: a re-delivery of a
discarded payload got a fresh row.  Before the unique index is built, each such group keeps
one row: the one whose status says most (processed, ignored, quarantined, received,
discarded; the oldest among equals), the others are deleted.  Interactions that name a
deleted row's id in ``inbox_id`` are pointed at the kept row.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002_inbox_unique_digest"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

_RANK = {"processed": 0, "ignored": 1, "quarantined": 2, "received": 3, "discarded": 4}


def upgrade() -> None:
    """Keep one inbox row per (source, digest), then replace the plain index by a unique one."""
    conn = op.get_bind()
    inbox = sa.table(
        "inbox",
        sa.column("id"),
        sa.column("source"),
        sa.column("digest"),
        sa.column("status"),
        sa.column("received_at"),
    )
    interactions = sa.table("interactions", sa.column("inbox_id"))
    groups = conn.execute(
        sa.select(inbox.c.source, inbox.c.digest)
        .group_by(inbox.c.source, inbox.c.digest)
        .having(sa.func.count() > 1)
    ).all()
    for source, digest in groups:
        rows = list(
            conn.execute(
                sa.select(inbox.c.id, inbox.c.status, inbox.c.received_at).where(
                    inbox.c.source == source, inbox.c.digest == digest
                )
            ).all()
        )  # .all() returns a list already; list() is for mypy, which sees a Sequence
        rows.sort(key=lambda r: (_RANK.get(r.status, 5), r.received_at, str(r.id)))
        keep, drop = rows[0].id, [r.id for r in rows[1:]]
        conn.execute(sa.update(interactions).where(interactions.c.inbox_id.in_(drop)).values(inbox_id=keep))
        conn.execute(sa.delete(inbox).where(inbox.c.id.in_(drop)))
    op.drop_index("ix_inbox_source_digest", table_name="inbox")
    op.create_index("ux_inbox_source_digest", "inbox", ["source", "digest"], unique=True)


def downgrade() -> None:
    """Back to the plain index of version 1."""
    op.drop_index("ux_inbox_source_digest", table_name="inbox")
    op.create_index("ix_inbox_source_digest", "inbox", ["source", "digest"])
