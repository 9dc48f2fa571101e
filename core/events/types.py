"""Live domain events, passed to ``carecrm_track_event`` after each commit.

They carry ids, kinds, stages and times, never personal data, so a plugin that logs
them logs no PHI.  All are frozen attrs classes; times are UTC.
"""

from __future__ import annotations

import uuid
from datetime import datetime

import attrs


@attrs.frozen(kw_only=True)
class Event:
    """Base class of every live event; ``at`` is when it was committed (UTC)."""

    at: datetime


@attrs.frozen(kw_only=True)
class ContactCreated(Event):
    """A new contact was created from ``source`` (or by hand: ``source`` None)."""

    contact_id: uuid.UUID
    source: str | None


@attrs.frozen(kw_only=True)
class InteractionRecorded(Event):
    """An interaction was added to a contact's timeline."""

    contact_id: uuid.UUID
    interaction_id: uuid.UUID
    kind: str
    occurred_at: datetime
    source: str
    channel: str | None = None


@attrs.frozen(kw_only=True)
class StageChanged(Event):
    """A contact moved between lifecycle stages; ``implied_by`` is the interaction that
    implied the move, None for a person's move."""

    contact_id: uuid.UUID
    pipeline: str
    from_stage: str | None
    to_stage: str
    actor: str | None
    implied_by: uuid.UUID | None = None


@attrs.frozen(kw_only=True)
class ContactsMerged(Event):
    """``merged_id`` was folded into ``survivor_id``."""

    survivor_id: uuid.UUID
    merged_id: uuid.UUID
    actor: str | None


@attrs.frozen(kw_only=True)
class ScoreChanged(Event):
    """A contact's lead score under ``model`` changed."""

    contact_id: uuid.UUID
    model: str
    old_score: float | None
    new_score: float


@attrs.frozen(kw_only=True)
class ConsentChanged(Event):
    """A consent event was recorded for a contact's contact point."""

    contact_id: uuid.UUID | None
    channel: str
    purpose: str
    status: str


@attrs.frozen(kw_only=True)
class PossibleDuplicate(Event):
    """Two contacts were sent to review as a possible duplicate or household member."""

    contact_a: uuid.UUID
    contact_b: uuid.UUID
    reason: str
