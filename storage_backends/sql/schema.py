"""The carecrm SQL schema (SQLAlchemy Core), one per database for SQLite, PostgreSQL and
MariaDB/MySQL.

Table and column names are the field names of :mod:`carecrm.core.model.records`; one table per
record class (``contacts``, ``identities``, ``interactions``, ``stage_changes``,
``appointments``, ``consents``, ``notes``, ``tasks``, ``scores``, ``reviews``,
``segments``, ``inbox``, ``merges``, ``audit_log``, ``meta``).  There are no foreign keys:
the limits measurements loaded without them, merging and erasure move and delete rows
freely, and the unit of work keeps the rows consistent.

Length limits (checked by PostgreSQL and MariaDB, not by SQLite): codes and names 64 to
255 characters, ``kind`` of an identity 255 (``external:<system>`` may carry a URL),
``idempotency_key`` and ``external_id`` 255.  Longer values raise
:class:`~carecrm.core.errors.StorageError`.

This module is the *current* schema; the migrations in
:mod:`carecrm.storage_backends.sql.migrations` create it step by step, and a test checks
that they agree.
"""

from __future__ import annotations

import sqlalchemy as sa

from carecrm.storage_backends.sql.types import (
    BIDX,
    BINARY,
    DOUBLE,
    JSON_DOC,
    MysqlTableOptions,
    UtcDateTime,
    UuidType,
)

#: Options every table gets on MariaDB/MySQL: InnoDB, utf8mb4, binary (case- and
#: accent-sensitive) comparison, so keys differing only in case stay distinct everywhere.
TABLE_OPTIONS: MysqlTableOptions = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}

metadata = sa.MetaData(
    naming_convention={
        "pk": "pk_%(table_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)


def _code(length: int = 64) -> sa.String:
    return sa.String(length)


contacts = sa.Table(
    "contacts",
    metadata,
    sa.Column("id", UuidType(), primary_key=True),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False),
    sa.Column("status", _code(16), nullable=False),
    sa.Column("merged_into", UuidType()),
    sa.Column("key_version", _code()),
    sa.Column("wrapped_key", BINARY),
    sa.Column("pii_enc", BINARY),
    sa.Column("name_bidx", BIDX),
    sa.Column("family_name_bidx", BIDX),
    sa.Column("name_confidence", _code(32)),
    sa.Column("pipeline", _code(), nullable=False),
    sa.Column("stage", _code(), nullable=False),
    sa.Column("stage_changed_at", UtcDateTime()),
    sa.Column("service_interest", _code(128)),
    sa.Column("location", _code(128)),
    sa.Column("city", _code(128)),
    sa.Column("postal_prefix", _code(16)),
    sa.Column("owner", _code(255)),
    sa.Column("score", DOUBLE),
    sa.Column("first_source", _code()),
    sa.Index("ix_contacts_name_bidx", "name_bidx"),
    sa.Index("ix_contacts_family_name_bidx", "family_name_bidx"),
    sa.Index("ix_contacts_segment", "stage", "service_interest", "city"),
    **TABLE_OPTIONS,
)

identities = sa.Table(
    "identities",
    metadata,
    sa.Column("id", UuidType(), primary_key=True),
    sa.Column("contact_id", UuidType(), nullable=False),
    sa.Column("kind", _code(255), nullable=False),
    sa.Column("bidx", BIDX, nullable=False),
    sa.Column("value_enc", BINARY),
    sa.Column("source", _code()),
    sa.Column("verified", sa.Boolean(), nullable=False),
    sa.Column("valid", sa.Boolean()),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    # Not unique: family members share phones and emails (docs/vocabulary.md, "Identities and matching").
    sa.Index("ix_identities_kind_bidx", "kind", "bidx"),
    sa.UniqueConstraint("contact_id", "kind", "bidx", name="uq_identities_contact_kind_bidx"),
    **TABLE_OPTIONS,
)

interactions = sa.Table(
    "interactions",
    metadata,
    sa.Column("id", UuidType(), primary_key=True),
    sa.Column("contact_id", UuidType(), nullable=False),
    sa.Column("kind", _code(128), nullable=False),
    sa.Column("occurred_at", UtcDateTime(), nullable=False),
    sa.Column("recorded_at", UtcDateTime(), nullable=False),
    sa.Column("source", _code(), nullable=False),
    sa.Column("idempotency_key", _code(255), nullable=False),
    sa.Column("channel", _code(32)),
    sa.Column("direction", _code(16)),
    sa.Column("location", _code(128)),
    sa.Column("campaign", _code(255)),
    sa.Column("channel_group", _code()),
    sa.Column("touchpoint", JSON_DOC, nullable=False),
    sa.Column("attributes", JSON_DOC, nullable=False),
    sa.Column("body_enc", BINARY),
    sa.Column("actor", _code(255)),
    sa.Column("inbox_id", UuidType()),
    sa.UniqueConstraint("source", "idempotency_key", name="uq_interactions_source_key"),
    sa.Index("ix_interactions_contact_time", "contact_id", "occurred_at", "id"),
    # schema version 4: what one inbox payload produced (``carecrm inbox reprocess``)
    sa.Index("ix_interactions_inbox", "inbox_id"),
    **TABLE_OPTIONS,
)

stage_changes = sa.Table(
    "stage_changes",
    metadata,
    sa.Column("id", UuidType(), primary_key=True),
    sa.Column("contact_id", UuidType(), nullable=False),
    sa.Column("pipeline", _code(), nullable=False),
    sa.Column("from_stage", _code()),
    sa.Column("to_stage", _code(), nullable=False),
    sa.Column("changed_at", UtcDateTime(), nullable=False),
    sa.Column("actor", _code(255)),
    sa.Column("reason", sa.Text()),
    sa.Column("implied_by", UuidType()),
    sa.Index("ix_stage_changes_contact_time", "contact_id", "changed_at", "id"),
    **TABLE_OPTIONS,
)

appointments = sa.Table(
    "appointments",
    metadata,
    sa.Column("id", UuidType(), primary_key=True),
    sa.Column("contact_id", UuidType(), nullable=False),
    sa.Column("source", _code(), nullable=False),
    sa.Column("external_id", _code(255), nullable=False),
    sa.Column("type", _code()),
    sa.Column("status", _code(32), nullable=False),
    sa.Column("location", _code(128)),
    sa.Column("provider", _code(255)),
    sa.Column("starts_at", UtcDateTime()),
    sa.Column("ends_at", UtcDateTime()),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.UniqueConstraint("source", "external_id", name="uq_appointments_source_external_id"),
    sa.Index("ix_appointments_contact_starts", "contact_id", "starts_at"),
    **TABLE_OPTIONS,
)

consents = sa.Table(
    "consents",
    metadata,
    sa.Column("id", UuidType(), primary_key=True),
    sa.Column("contact_id", UuidType()),
    sa.Column("contact_point_bidx", BIDX, nullable=False),
    sa.Column("channel", _code(32), nullable=False),
    sa.Column("purpose", _code(), nullable=False),
    sa.Column("status", _code(32), nullable=False),
    sa.Column("occurred_at", UtcDateTime(), nullable=False),
    sa.Column("recorded_at", UtcDateTime(), nullable=False),
    sa.Column("source", _code(), nullable=False),
    sa.Column("idempotency_key", _code(255), nullable=False),
    sa.Column("evidence_enc", BINARY),
    sa.Column("regime", JSON_DOC, nullable=False),
    sa.Column("expires_at", UtcDateTime()),
    sa.UniqueConstraint("source", "idempotency_key", name="uq_consents_source_key"),
    sa.Index("ix_consents_point", "contact_point_bidx", "channel", "purpose"),
    sa.Index("ix_consents_contact_time", "contact_id", "occurred_at"),
    **TABLE_OPTIONS,
)

notes = sa.Table(
    "notes",
    metadata,
    sa.Column("id", UuidType(), primary_key=True),
    sa.Column("contact_id", UuidType(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("author", _code(255)),
    sa.Column("body_enc", BINARY, nullable=False),
    sa.Index("ix_notes_contact_time", "contact_id", "created_at"),
    **TABLE_OPTIONS,
)

tasks = sa.Table(
    "tasks",
    metadata,
    sa.Column("id", UuidType(), primary_key=True),
    sa.Column("contact_id", UuidType(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", _code(255)),
    sa.Column("assignee", _code(255)),
    sa.Column("due_at", UtcDateTime()),
    sa.Column("status", _code(32), nullable=False),
    sa.Column("completed_at", UtcDateTime()),
    sa.Column("completed_by", _code(255)),
    sa.Column("body_enc", BINARY),
    sa.Index("ix_tasks_assignee_status", "assignee", "status"),
    sa.Index("ix_tasks_status_due", "status", "due_at"),
    sa.Index("ix_tasks_contact", "contact_id"),
    **TABLE_OPTIONS,
)

scores = sa.Table(
    "scores",
    metadata,
    sa.Column("contact_id", UuidType(), primary_key=True),
    sa.Column("model", _code(), primary_key=True),
    sa.Column("score", DOUBLE, nullable=False),
    sa.Column("reasons", JSON_DOC, nullable=False),
    sa.Column("computed_at", UtcDateTime(), nullable=False),
    sa.Index("ix_scores_model_score", "model", "score"),
    **TABLE_OPTIONS,
)

reviews = sa.Table(
    "reviews",
    metadata,
    sa.Column("id", UuidType(), primary_key=True),
    sa.Column("contact_a", UuidType(), nullable=False),
    sa.Column("contact_b", UuidType(), nullable=False),
    sa.Column("reason", sa.Text(), nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("status", _code(32), nullable=False),
    sa.Column("resolved_at", UtcDateTime()),
    sa.Column("resolved_by", _code(255)),
    sa.UniqueConstraint("contact_a", "contact_b", name="uq_reviews_pair"),
    sa.Index("ix_reviews_contact_b", "contact_b"),
    sa.Index("ix_reviews_status_time", "status", "created_at"),
    **TABLE_OPTIONS,
)

segments = sa.Table(
    "segments",
    metadata,
    sa.Column("name", _code(255), primary_key=True),
    sa.Column("definition", JSON_DOC, nullable=False),
    sa.Column("created_at", UtcDateTime(), nullable=False),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("created_by", _code(255)),
    **TABLE_OPTIONS,
)

inbox = sa.Table(
    "inbox",
    metadata,
    sa.Column("id", UuidType(), primary_key=True),
    sa.Column("source", _code(), nullable=False),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("status", _code(32), nullable=False),
    sa.Column("reason", sa.Text()),
    sa.Column("key_version", _code(), nullable=False),
    sa.Column("wrapped_key", BINARY, nullable=False),
    sa.Column("payload_enc", BINARY, nullable=False),
    sa.Column("digest", BIDX, nullable=False),
    sa.Column("processed_at", UtcDateTime()),
    sa.Column("attempts", sa.Integer(), nullable=False),
    # schema version 4: was the signature checked (None: the source has no secret)
    sa.Column("verified", sa.Boolean()),
    sa.Index("ix_inbox_status_received", "status", "received_at"),
    # one row per payload (schema version 2): two receivers of the same bytes keep one
    sa.Index("ux_inbox_source_digest", "source", "digest", unique=True),
    **TABLE_OPTIONS,
)

merges = sa.Table(
    "merges",
    metadata,
    sa.Column("id", UuidType(), primary_key=True),
    sa.Column("survivor_id", UuidType(), nullable=False),
    sa.Column("merged_id", UuidType(), nullable=False),
    sa.Column("merged_at", UtcDateTime(), nullable=False),
    sa.Column("actor", _code(255)),
    sa.Column("reason", sa.Text()),
    sa.Column("details", JSON_DOC, nullable=False),
    sa.Index("ix_merges_survivor", "survivor_id"),
    sa.Index("ix_merges_merged", "merged_id"),
    **TABLE_OPTIONS,
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("id", UuidType(), nullable=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("actor", _code(255)),
    sa.Column("role", _code()),
    sa.Column("action", _code(128), nullable=False),
    sa.Column("contact_id", UuidType()),
    sa.Column("purpose", _code(255)),
    sa.Column("fields", JSON_DOC, nullable=False),
    sa.Column("details", JSON_DOC, nullable=False),
    sa.Column("prev_hash", BIDX),
    sa.Column("hash", BIDX, nullable=False),
    sa.Index("ix_audit_log_contact", "contact_id"),
    **TABLE_OPTIONS,
)

outbox = sa.Table(
    "outbox",
    metadata,
    # seq: assigned by the core under the outbox head's lock, so seq order is commit order
    sa.Column("seq", sa.BigInteger(), primary_key=True, autoincrement=False),
    sa.Column("at", UtcDateTime(), nullable=False),
    sa.Column("kind", _code(128), nullable=False),
    sa.Column("data", JSON_DOC, nullable=False),
    **TABLE_OPTIONS,
)

meta = sa.Table(
    "meta",
    metadata,
    sa.Column("key", _code(), primary_key=True),
    sa.Column("value", sa.Text(), nullable=False),
    **TABLE_OPTIONS,
)

#: Every carecrm table, in creation order.
ALL_TABLES: tuple[sa.Table, ...] = tuple(metadata.sorted_tables)

#: The meta key holding the schema version (an integer as text).
SCHEMA_VERSION_KEY = "schema_version"
