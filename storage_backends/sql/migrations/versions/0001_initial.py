"""The initial carecrm schema (schema version 1): every table and index.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-30

A frozen copy of :mod:`carecrm.storage_backends.sql.schema` as it was at version 1; a later
change to that module comes with a new revision, never an edit here.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from carecrm.storage_backends.sql.types import BIDX, BINARY, DOUBLE, JSON_DOC, MysqlTableOptions, UtcDateTime, UuidType

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

_OPTS: MysqlTableOptions = {"mysql_engine": "InnoDB", "mysql_charset": "utf8mb4", "mysql_collate": "utf8mb4_bin"}

_TABLES = (
    "contacts", "identities", "interactions", "stage_changes", "appointments", "consents", "notes",
    "tasks", "scores", "reviews", "segments", "inbox", "merges", "audit_log", "meta",
)


def upgrade() -> None:
    """Create every carecrm table and index."""
    op.create_table(
        "contacts",
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("merged_into", UuidType(), nullable=True),
        sa.Column("key_version", sa.String(64), nullable=True),
        sa.Column("wrapped_key", BINARY, nullable=True),
        sa.Column("pii_enc", BINARY, nullable=True),
        sa.Column("name_bidx", BIDX, nullable=True),
        sa.Column("family_name_bidx", BIDX, nullable=True),
        sa.Column("name_confidence", sa.String(32), nullable=True),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("stage", sa.String(64), nullable=False),
        sa.Column("stage_changed_at", UtcDateTime(), nullable=True),
        sa.Column("service_interest", sa.String(128), nullable=True),
        sa.Column("location", sa.String(128), nullable=True),
        sa.Column("city", sa.String(128), nullable=True),
        sa.Column("postal_prefix", sa.String(16), nullable=True),
        sa.Column("owner", sa.String(255), nullable=True),
        sa.Column("score", DOUBLE, nullable=True),
        sa.Column("first_source", sa.String(64), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_contacts"),
        **_OPTS,
    )
    op.create_index("ix_contacts_name_bidx", "contacts", ["name_bidx"])
    op.create_index("ix_contacts_family_name_bidx", "contacts", ["family_name_bidx"])
    op.create_index("ix_contacts_segment", "contacts", ["stage", "service_interest", "city"])

    op.create_table(
        "identities",
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("contact_id", UuidType(), nullable=False),
        sa.Column("kind", sa.String(255), nullable=False),
        sa.Column("bidx", BIDX, nullable=False),
        sa.Column("value_enc", BINARY, nullable=True),
        sa.Column("source", sa.String(64), nullable=True),
        sa.Column("verified", sa.Boolean(), nullable=False),
        sa.Column("valid", sa.Boolean(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_identities"),
        sa.UniqueConstraint("contact_id", "kind", "bidx", name="uq_identities_contact_kind_bidx"),
        **_OPTS,
    )
    op.create_index("ix_identities_kind_bidx", "identities", ["kind", "bidx"])

    op.create_table(
        "interactions",
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("contact_id", UuidType(), nullable=False),
        sa.Column("kind", sa.String(128), nullable=False),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("channel", sa.String(32), nullable=True),
        sa.Column("direction", sa.String(16), nullable=True),
        sa.Column("location", sa.String(128), nullable=True),
        sa.Column("campaign", sa.String(255), nullable=True),
        sa.Column("channel_group", sa.String(64), nullable=True),
        sa.Column("touchpoint", JSON_DOC, nullable=False),
        sa.Column("attributes", JSON_DOC, nullable=False),
        sa.Column("body_enc", BINARY, nullable=True),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("inbox_id", UuidType(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_interactions"),
        sa.UniqueConstraint("source", "idempotency_key", name="uq_interactions_source_key"),
        **_OPTS,
    )
    op.create_index("ix_interactions_contact_time", "interactions", ["contact_id", "occurred_at", "id"])

    op.create_table(
        "stage_changes",
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("contact_id", UuidType(), nullable=False),
        sa.Column("pipeline", sa.String(64), nullable=False),
        sa.Column("from_stage", sa.String(64), nullable=True),
        sa.Column("to_stage", sa.String(64), nullable=False),
        sa.Column("changed_at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("implied_by", UuidType(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_stage_changes"),
        **_OPTS,
    )
    op.create_index("ix_stage_changes_contact_time", "stage_changes", ["contact_id", "changed_at", "id"])

    op.create_table(
        "appointments",
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("contact_id", UuidType(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("external_id", sa.String(255), nullable=False),
        sa.Column("type", sa.String(64), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("location", sa.String(128), nullable=True),
        sa.Column("provider", sa.String(255), nullable=True),
        sa.Column("starts_at", UtcDateTime(), nullable=True),
        sa.Column("ends_at", UtcDateTime(), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_appointments"),
        sa.UniqueConstraint("source", "external_id", name="uq_appointments_source_external_id"),
        **_OPTS,
    )
    op.create_index("ix_appointments_contact_starts", "appointments", ["contact_id", "starts_at"])

    op.create_table(
        "consents",
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("contact_id", UuidType(), nullable=True),
        sa.Column("contact_point_bidx", BIDX, nullable=False),
        sa.Column("channel", sa.String(32), nullable=False),
        sa.Column("purpose", sa.String(64), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("occurred_at", UtcDateTime(), nullable=False),
        sa.Column("recorded_at", UtcDateTime(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("evidence_enc", BINARY, nullable=True),
        sa.Column("regime", JSON_DOC, nullable=False),
        sa.Column("expires_at", UtcDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_consents"),
        sa.UniqueConstraint("source", "idempotency_key", name="uq_consents_source_key"),
        **_OPTS,
    )
    op.create_index("ix_consents_point", "consents", ["contact_point_bidx", "channel", "purpose"])
    op.create_index("ix_consents_contact_time", "consents", ["contact_id", "occurred_at"])

    op.create_table(
        "notes",
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("contact_id", UuidType(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("author", sa.String(255), nullable=True),
        sa.Column("body_enc", BINARY, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_notes"),
        **_OPTS,
    )
    op.create_index("ix_notes_contact_time", "notes", ["contact_id", "created_at"])

    op.create_table(
        "tasks",
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("contact_id", UuidType(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.Column("assignee", sa.String(255), nullable=True),
        sa.Column("due_at", UtcDateTime(), nullable=True),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("completed_at", UtcDateTime(), nullable=True),
        sa.Column("completed_by", sa.String(255), nullable=True),
        sa.Column("body_enc", BINARY, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_tasks"),
        **_OPTS,
    )
    op.create_index("ix_tasks_assignee_status", "tasks", ["assignee", "status"])
    op.create_index("ix_tasks_status_due", "tasks", ["status", "due_at"])
    op.create_index("ix_tasks_contact", "tasks", ["contact_id"])

    op.create_table(
        "scores",
        sa.Column("contact_id", UuidType(), nullable=False),
        sa.Column("model", sa.String(64), nullable=False),
        sa.Column("score", DOUBLE, nullable=False),
        sa.Column("reasons", JSON_DOC, nullable=False),
        sa.Column("computed_at", UtcDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("contact_id", "model", name="pk_scores"),
        **_OPTS,
    )
    op.create_index("ix_scores_model_score", "scores", ["model", "score"])

    op.create_table(
        "reviews",
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("contact_a", UuidType(), nullable=False),
        sa.Column("contact_b", UuidType(), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("resolved_at", UtcDateTime(), nullable=True),
        sa.Column("resolved_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_reviews"),
        sa.UniqueConstraint("contact_a", "contact_b", name="uq_reviews_pair"),
        **_OPTS,
    )
    op.create_index("ix_reviews_contact_b", "reviews", ["contact_b"])
    op.create_index("ix_reviews_status_time", "reviews", ["status", "created_at"])

    op.create_table(
        "segments",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("definition", JSON_DOC, nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=True),
        sa.PrimaryKeyConstraint("name", name="pk_segments"),
        **_OPTS,
    )

    op.create_table(
        "inbox",
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("source", sa.String(64), nullable=False),
        sa.Column("received_at", UtcDateTime(), nullable=False),
        sa.Column("status", sa.String(32), nullable=False),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("key_version", sa.String(64), nullable=False),
        sa.Column("wrapped_key", BINARY, nullable=False),
        sa.Column("payload_enc", BINARY, nullable=False),
        sa.Column("digest", BIDX, nullable=False),
        sa.Column("processed_at", UtcDateTime(), nullable=True),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_inbox"),
        **_OPTS,
    )
    op.create_index("ix_inbox_status_received", "inbox", ["status", "received_at"])
    op.create_index("ix_inbox_source_digest", "inbox", ["source", "digest"])

    op.create_table(
        "merges",
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("survivor_id", UuidType(), nullable=False),
        sa.Column("merged_id", UuidType(), nullable=False),
        sa.Column("merged_at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.Column("details", JSON_DOC, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_merges"),
        **_OPTS,
    )
    op.create_index("ix_merges_survivor", "merges", ["survivor_id"])
    op.create_index("ix_merges_merged", "merges", ["merged_id"])

    op.create_table(
        "audit_log",
        sa.Column("seq", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("id", UuidType(), nullable=False),
        sa.Column("at", UtcDateTime(), nullable=False),
        sa.Column("actor", sa.String(255), nullable=True),
        sa.Column("role", sa.String(64), nullable=True),
        sa.Column("action", sa.String(128), nullable=False),
        sa.Column("contact_id", UuidType(), nullable=True),
        sa.Column("purpose", sa.String(255), nullable=True),
        sa.Column("fields", JSON_DOC, nullable=False),
        sa.Column("details", JSON_DOC, nullable=False),
        sa.Column("prev_hash", BIDX, nullable=True),
        sa.Column("hash", BIDX, nullable=False),
        sa.PrimaryKeyConstraint("seq", name="pk_audit_log"),
        **_OPTS,
    )
    op.create_index("ix_audit_log_contact", "audit_log", ["contact_id"])

    op.create_table(
        "meta",
        sa.Column("key", sa.String(64), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("key", name="pk_meta"),
        **_OPTS,
    )


def downgrade() -> None:
    """Drop every carecrm table (development only; carecrm itself never downgrades)."""
    for name in reversed(_TABLES):
        op.drop_table(name)
