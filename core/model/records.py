"""Stored records: the only shapes a storage backend ever receives or returns.

The core's mapping layer (:mod:`carecrm.core.privacy.mapping`) turns domain objects into these
records: personal data is already ciphertext (``*_enc`` fields, AES-256-GCM bytes) or a
blind index (``*_bidx``, lowercase hex HMAC-SHA256, 64 characters); everything else is in
clear for querying and reporting: no backend ever sees plaintext personal data.  A backend stores
the fields as they are and returns equal values: datetimes timezone-aware UTC at
millisecond precision, ``dict`` fields as JSON objects, ``bytes`` as binary.

Field names are the column / document-key names every backend uses.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

import attrs

JSON = dict[str, Any]

# Contact status values.
ACTIVE = "active"
MERGED = "merged"
ERASED = "erased"


@attrs.frozen(kw_only=True)
class ContactRecord:
    """A person, as stored.

    ``pii_enc`` is the AES-GCM ciphertext (under the contact's own data key) of a JSON
    object with the names, street address, date of birth and other personal fields;
    ``wrapped_key`` is that data key wrapped by master key ``key_version``.  Erasure
    (crypto-shredding) sets ``wrapped_key`` and ``pii_enc`` to ``None``.
    ``version`` increases by one on every update (optimistic concurrency).
    """

    id: uuid.UUID
    created_at: datetime
    updated_at: datetime
    version: int = 1
    status: str = ACTIVE
    merged_into: uuid.UUID | None = None
    key_version: str | None = None
    wrapped_key: bytes | None = attrs.field(default=None, repr=False)
    pii_enc: bytes | None = attrs.field(default=None, repr=False)
    name_bidx: str | None = attrs.field(default=None, repr=False)
    family_name_bidx: str | None = attrs.field(default=None, repr=False)
    name_confidence: str | None = None
    pipeline: str = "default"
    stage: str = "new_lead"
    stage_changed_at: datetime | None = None
    service_interest: str | None = None
    location: str | None = None
    city: str | None = None
    postal_prefix: str | None = None
    owner: str | None = None
    score: float | None = None
    first_source: str | None = None


@attrs.frozen(kw_only=True)
class IdentityRecord:
    """One identity of a contact: ``kind`` is ``email``, ``phone`` or ``external:<system>``.

    ``bidx`` is the blind index of the normalized value.  It is indexed but NOT unique:
    family members share phones and emails (``docs/vocabulary.md``, "Identities").  ``valid`` is the
    phonenumbers validity flag for phones (possible-but-not-valid numbers are kept).
    """

    id: uuid.UUID
    contact_id: uuid.UUID
    kind: str
    bidx: str = attrs.field(repr=False)
    value_enc: bytes | None = attrs.field(default=None, repr=False)
    source: str | None = None
    verified: bool = False
    valid: bool | None = None
    created_at: datetime


@attrs.frozen(kw_only=True)
class InteractionRecord:
    """One event on a contact's timeline.

    Unique on (``source``, ``idempotency_key``): a backend refuses a second one with
    :class:`~carecrm.core.errors.DuplicateError`.  ``touchpoint`` and ``attributes`` are
    clear JSON (no personal data); ``body_enc`` is the encrypted free text (inquiry
    text, message bodies, form answers) under the contact's data key.
    """

    id: uuid.UUID
    contact_id: uuid.UUID
    kind: str
    occurred_at: datetime
    recorded_at: datetime
    source: str
    idempotency_key: str
    channel: str | None = None
    direction: str | None = None
    location: str | None = None
    campaign: str | None = None
    channel_group: str | None = None
    touchpoint: JSON = attrs.Factory(dict)
    attributes: JSON = attrs.Factory(dict)
    body_enc: bytes | None = attrs.field(default=None, repr=False)
    actor: str | None = None
    inbox_id: uuid.UUID | None = None


@attrs.frozen(kw_only=True)
class FirstResponseRecord:
    """When a contact first reached out and when the practice first answered (speed to lead).

    ``first_inbound_at`` is the time of the contact's first inbound interaction;
    ``first_outbound_at`` the time of its first outbound answer at or after that, None
    while nobody has answered.  Clear fields only (a query result, not a stored row).
    """

    contact_id: uuid.UUID
    first_inbound_at: datetime
    first_outbound_at: datetime | None = None


@attrs.frozen(kw_only=True)
class InteractionFacts:
    """The clear facts of a stored interaction that lead scoring reads (no body, no
    touchpoint): a light, read-only view of an :class:`InteractionRecord` returned by
    ``InteractionRepository.clear_timelines``."""

    id: uuid.UUID
    contact_id: uuid.UUID
    kind: str
    occurred_at: datetime
    channel: str | None = None
    direction: str | None = None
    attributes: JSON = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class TouchRecord:
    """The clear marketing fields of a stored interaction that attribution reads (a query
    result, not a stored row: no body, no idempotency key, no attributes).

    ``campaign`` and ``channel_group`` are the interaction's clear columns; ``touchpoint``
    its clear touchpoint JSON (source, medium, click ids ...).
    """

    id: uuid.UUID
    contact_id: uuid.UUID
    kind: str
    occurred_at: datetime
    channel: str | None = None
    direction: str | None = None
    campaign: str | None = None
    channel_group: str | None = None
    touchpoint: JSON = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class StageReachedRecord:
    """When a contact first entered one of a set of stages: the earliest ``changed_at`` of
    its stage changes into them (a query result, not a stored row)."""

    contact_id: uuid.UUID
    reached_at: datetime


@attrs.frozen(kw_only=True)
class StageChangeRecord:
    """One lifecycle-stage change: who moved the contact, when, why, and (for an
    implied move) which interaction implied it."""

    id: uuid.UUID
    contact_id: uuid.UUID
    pipeline: str
    from_stage: str | None
    to_stage: str
    changed_at: datetime
    actor: str | None = None
    reason: str | None = None
    implied_by: uuid.UUID | None = None


@attrs.frozen(kw_only=True)
class AppointmentRecord:
    """An appointment (consult, treatment, follow-up) as a booking tool or the EHR knows it.

    Unique on (``source``, ``external_id``); ``put`` replaces the stored row of that key.
    """

    id: uuid.UUID
    contact_id: uuid.UUID
    source: str
    external_id: str
    type: str | None = None
    status: str = "booked"
    location: str | None = None
    provider: str | None = None
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    created_at: datetime
    updated_at: datetime


@attrs.frozen(kw_only=True)
class ConsentRecord:
    """One event of the consent ledger, keyed by contact point × channel × purpose.

    ``contact_point_bidx`` is the blind index of the phone number or address (TCPA
    consent belongs to the number, 47 CFR 64.1200); ``evidence_enc`` is the encrypted
    evidence JSON (form text and version, keyword reply, recording reference).
    Unique on (``source``, ``idempotency_key``).
    """

    id: uuid.UUID
    contact_id: uuid.UUID | None
    contact_point_bidx: str = attrs.field(repr=False)
    channel: str
    purpose: str
    status: str
    occurred_at: datetime
    recorded_at: datetime
    source: str
    idempotency_key: str
    evidence_enc: bytes | None = attrs.field(default=None, repr=False)
    regime: JSON = attrs.Factory(dict)
    expires_at: datetime | None = None


@attrs.frozen(kw_only=True)
class NoteRecord:
    """A coordinator's note; the text is encrypted under the contact's data key."""

    id: uuid.UUID
    contact_id: uuid.UUID
    created_at: datetime
    author: str | None = None
    body_enc: bytes = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class TaskRecord:
    """A to-do about a contact (call back, send forms); text encrypted, times UTC."""

    id: uuid.UUID
    contact_id: uuid.UUID
    created_at: datetime
    created_by: str | None = None
    assignee: str | None = None
    due_at: datetime | None = None
    status: str = "open"
    completed_at: datetime | None = None
    completed_by: str | None = None
    body_enc: bytes | None = attrs.field(default=None, repr=False)


@attrs.frozen(kw_only=True)
class ScoreRecord:
    """The current lead score of a contact under one scoring model, with its reasons
    (a JSON list of ``{"rule", "kind", "points", "interaction_id", "occurred_at"}``
    objects, see :class:`carecrm.core.analytics.scoring.ScoreReason`)."""

    contact_id: uuid.UUID
    model: str
    score: float
    reasons: list[JSON] = attrs.Factory(list)
    computed_at: datetime


@attrs.frozen(kw_only=True)
class ReviewRecord:
    """A pair of contacts for a person to review (possible duplicate or household member).

    Unique on the unordered pair.  The pair is ordered here, in the core, whoever builds
    the record: ``contact_a`` is always the smaller id (a pair given larger id first is
    swapped), so a backend stores what it gets and finds a repeat by (contact_a, contact_b).
    """

    id: uuid.UUID
    contact_a: uuid.UUID
    contact_b: uuid.UUID
    reason: str
    created_at: datetime
    status: str = "open"
    resolved_at: datetime | None = None
    resolved_by: str | None = None

    def __attrs_post_init__(self) -> None:
        if self.contact_a > self.contact_b:
            a, b = self.contact_b, self.contact_a
            object.__setattr__(self, "contact_a", a)
            object.__setattr__(self, "contact_b", b)


@attrs.frozen(kw_only=True)
class SegmentRecord:
    """A saved segment: its name and its filter tree as JSON."""

    name: str
    definition: JSON
    created_at: datetime
    updated_at: datetime
    created_by: str | None = None


#: Every inbox status: ``received`` (stored, not processed yet), ``processed``, ``ignored``
#: (no lead record in it), ``quarantined`` (with its reasons), ``pending`` (a pointer-only
#: vendor's payload waiting on a fetch, :mod:`carecrm.core.ingest.pointers`), ``discarded``
#: (by a person).
INBOX_STATUSES: tuple[str, ...] = ("received", "processed", "ignored", "quarantined", "pending", "discarded")


@attrs.frozen(kw_only=True)
class InboxRecord:
    """A raw payload as received, written before it is processed.

    ``payload_enc`` is the encrypted JSON envelope (body, content type, headers, URL)
    under the payload's own data key ``wrapped_key`` (it arrives before any contact is
    known).  ``digest`` is a keyed hash of source + body for spotting re-deliveries.
    ``status``: ``received``, ``processed``, ``ignored`` (no lead record in it),
    ``quarantined``, ``pending``, ``discarded``.
    ``verified`` (schema version 4): True when the payload's signature was checked (it
    was processed only if it passed), False when it was taken without a check (``carecrm
    ingest --no-verify``, ``verify=False``: a file an operator imported by hand), None
    when its source has no secret, so there was nothing to check.
    """

    id: uuid.UUID
    source: str
    received_at: datetime
    status: str = "received"
    reason: str | None = None
    key_version: str
    wrapped_key: bytes = attrs.field(repr=False)
    payload_enc: bytes = attrs.field(repr=False)
    digest: str = attrs.field(repr=False)
    processed_at: datetime | None = None
    attempts: int = 0
    verified: bool | None = None


@attrs.frozen(kw_only=True)
class MergeRecord:
    """One entry of the merge journal: ``merged_id`` was folded into ``survivor_id``."""

    id: uuid.UUID
    survivor_id: uuid.UUID
    merged_id: uuid.UUID
    merged_at: datetime
    actor: str | None = None
    reason: str | None = None
    details: JSON = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class AuditRecord:
    """One entry of the append-only audit log (HIPAA 45 CFR 164.312(b), audit controls).

    ``seq`` is assigned by the core (previous seq + 1); ``hash`` is the keyed
    HMAC-SHA256 of this entry chained to ``prev_hash``, so an edit, a deletion or a
    cut-off tail is detectable.  ``fields`` lists field names, never values.
    """

    seq: int
    id: uuid.UUID
    at: datetime
    actor: str | None
    role: str | None
    action: str
    contact_id: uuid.UUID | None = None
    purpose: str | None = None
    fields: list[str] = attrs.Factory(list)
    details: JSON = attrs.Factory(dict)
    prev_hash: str | None = None
    hash: str


@attrs.frozen(kw_only=True)
class OutboxRecord:
    """One committed domain event in the durable outbox (the transactional-outbox pattern:
    cosmicpython, "Architecture Patterns with Python", ch. 8-9, ``collect_new_events``).

    Written in the same unit of work as the change that raised it, so it exists exactly
    when the change does.  ``seq`` is assigned by the core under the outbox head's lock
    (previous seq + 1), so seq order is commit order and a subscriber's cursor (the last
    seq it was given) never skips an event that commits later; the seq is the event's
    identity (a consumer keys its idempotency by it).  ``kind`` is the event
    class's name (``InteractionRecorded`` ...); ``data`` its fields, JSON-safe (ids and
    times as strings): ids, kinds, stages and times, never personal data.  ``at`` is when
    the event was written (UTC).
    """

    seq: int
    at: datetime
    kind: str
    data: JSON = attrs.Factory(dict)
