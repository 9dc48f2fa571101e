"""Schema version 4: the inbox records whether a payload's signature was checked, and
interactions are found by the inbox payload they came from.

Revision ID: 0004_inbox_verified
Revises: 0003_outbox
Create Date: 2026-12-03

``carecrm ingest --no-verify`` takes a signed source's payload without checking its
signature (a file an operator imports by hand); from this version the inbox row says so
(``inbox.verified``: true checked, false not checked, null no secret configured) and
``carecrm inbox list/show`` shows it (issue 8, item 3).  ``carecrm inbox reprocess``
replaces what a payload produced, so ``interactions.inbox_id`` is indexed
(``ix_interactions_inbox``).  Rows stored before this version read ``verified`` as null
(unknown).
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_inbox_verified"
down_revision = "0003_outbox"
branch_labels = None
depends_on = None


def upgrade() -> None:
    """Add the nullable ``inbox.verified`` column and the ``ix_interactions_inbox`` index."""
    op.add_column("inbox", sa.Column("verified", sa.Boolean(), nullable=True))
    op.create_index("ix_interactions_inbox", "interactions", ["inbox_id"])


def downgrade() -> None:
    """Drop the index and the column."""
    op.drop_index("ix_interactions_inbox", table_name="interactions")
    with op.batch_alter_table("inbox") as batch:
        batch.drop_column("verified")
