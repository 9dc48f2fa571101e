"""One stage-move path for every cause: a person's move, an interaction's implied move.

Every lifecycle-stage move, whoever or whatever causes it, is planned here and writes the
same four things in the unit of work of its cause:

* the contact, at its new stage (``stage_changed_at`` the move's time);
* a :class:`~carecrm.core.model.records.StageChangeRecord` in the stage history (``implied_by``
  the interaction for an implied move; ``reason`` a short code, or ``free_text``);
* a ``stage.changed`` interaction on the contact's timeline (source ``carecrm``,
  attributes ``from_stage``, ``to_stage``, ``reason`` and, for an implied move,
  ``implied_by`` and ``cause`` the implying interaction's kind), so a coordinator reading
  the timeline sees every move, not only people's;
* a :class:`~carecrm.core.events.types.StageChanged` live event.

:func:`plan_move` builds them as one :class:`StageMove` value (pure: it reads nothing and
writes nothing); :func:`implied_target` holds the rules of implied moves (``docs/vocabulary.md``,
"Moves implied by interactions").
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

import attrs

from carecrm.core.events import types as ev
from carecrm.core.model.domain import Actor, Interaction
from carecrm.core.model.ids import new_id
from carecrm.core.model.records import ContactRecord, InteractionRecord, StageChangeRecord
from carecrm.core.pipeline.stages import PipelineConfig, implied_stage
from carecrm.core.privacy.mapping import ContactKey, RecordMapper

#: The kinds whose presence on a timeline means a treatment was completed (a booked or
#: accepted treatment after one is a returning patient's).
COMPLETED_TREATMENT_KINDS: tuple[str, ...] = ("treatment.performed",)


@attrs.frozen
class StageMove:
    """What one stage move writes (see the module docstring); ``contact`` is the contact
    record at its new stage, still to be written by the caller (its version unchanged)."""

    contact: ContactRecord
    change: StageChangeRecord
    entry: InteractionRecord
    event: ev.StageChanged


def needs_treatment_history(rec: ContactRecord, kind: str, attributes: Mapping[str, Any]) -> bool:
    """Whether :func:`implied_target` needs to know if the contact had a completed
    treatment (only a booked or accepted treatment of a booked or returning patient does,
    so the look-up is made only then)."""
    return rec.stage in ("booked_patient", "returning_patient") and (
        kind == "treatment.accepted"
        or (kind == "appointment.booked" and str(attributes.get("appointment_type") or "").lower() == "treatment")
    )


def implied_target(
    pipeline: PipelineConfig, rec: ContactRecord, inter: Interaction, *, had_completed_treatment: bool
) -> str | None:
    """The stage ``inter`` moves ``rec`` to, or None.

    Rules: the interaction must imply a stage (:func:`carecrm.core.pipeline.stages.implied_stage`),
    the pipeline must allow the move from the contact's stage and it must go forward; a
    person's move always wins, so an interaction older than the current stage's start does
    not move it (unless the contact is still at the pipeline's first stage).

    :param had_completed_treatment: whether the contact's timeline, including the writes
        pending in the same unit of work, holds a completed treatment
        (:data:`COMPLETED_TREATMENT_KINDS`): then a booked or accepted treatment makes a
        ``returning_patient``.
    """
    target = implied_stage(inter.kind, inter.attributes, had_completed_treatment=had_completed_treatment)
    if target is None or target == rec.stage:
        return None
    if target not in pipeline.allowed_next(rec.stage) or not pipeline.is_forward(rec.stage, target):
        return None
    if rec.stage_changed_at is not None and inter.occurred_at < rec.stage_changed_at and rec.stage != pipeline.initial:
        return None
    return target


def plan_move(
    *,
    mapper: RecordMapper,
    pipeline: PipelineConfig,
    rec: ContactRecord,
    key: ContactKey,
    to_stage: str,
    at: datetime,
    now: datetime,
    actor: Actor,
    reason: str | None = None,
    free_text: str | None = None,
    implied_by: Interaction | None = None,
) -> StageMove:
    """The writes of moving ``rec`` to ``to_stage`` at ``at`` (UTC): a person's move
    (``implied_by`` None) or an interaction's implied move.  Nothing is checked here: the
    caller has checked the move (``Pipeline.check_move`` for a person, :func:`implied_target`
    for an interaction).

    :param key: the contact's data key (the timeline entry's body is encrypted under it).
    :param reason: a short reason code kept in clear in the history (``too_expensive``),
        ``free_text`` when the person gave free text; None for none.
    :param free_text: the person's free-text reason: kept only encrypted, as the timeline
        entry's body (it may hold health information: HIPAA 45 CFR 164.312(a)(2)(iv)).
    :param now: when the move is recorded (UTC).
    """
    if implied_by is not None:
        reason = f"implied by {implied_by.kind}"
    change = StageChangeRecord(
        id=new_id(),
        contact_id=rec.id,
        pipeline=pipeline.name,
        from_stage=rec.stage,
        to_stage=to_stage,
        changed_at=at,
        actor=actor.name,
        reason=reason,
        implied_by=None if implied_by is None else implied_by.id,
    )
    attributes: dict[str, Any] = {"from_stage": rec.stage, "to_stage": to_stage}
    if implied_by is not None:
        attributes.update(implied_by=str(implied_by.id), cause=implied_by.kind)
    elif reason:
        attributes["reason"] = reason
    entry = Interaction(
        contact_id=rec.id,
        kind="stage.changed",
        occurred_at=at,
        recorded_at=now,
        source="carecrm",
        idempotency_key=f"stage.changed:{change.id}",
        actor=actor.name,
        location=rec.location,
        attributes=attributes,
        body=free_text,
    )
    event = ev.StageChanged(
        at=now,
        contact_id=rec.id,
        pipeline=pipeline.name,
        from_stage=rec.stage,
        to_stage=to_stage,
        actor=actor.name,
        implied_by=change.implied_by,
    )
    moved = attrs.evolve(rec, stage=to_stage, stage_changed_at=at, updated_at=now)
    return StageMove(contact=moved, change=change, entry=mapper.interaction_to_record(entry, key), event=event)


def completed_treatment_stored(uow: Any, contact_id: uuid.UUID) -> bool:
    """Whether the stored timeline of ``contact_id`` holds a completed treatment (one
    keyset-paged read of at most one row)."""
    return bool(uow.interactions.timeline(contact_id, kinds=list(COMPLETED_TREATMENT_KINDS), limit=1))


def implied_move(
    *,
    mapper: RecordMapper,
    pipeline: PipelineConfig,
    uow: Any,
    rec: ContactRecord,
    inter: Interaction,
    key: ContactKey,
    now: datetime,
    actor: Actor,
    pending_treatment: bool = False,
) -> StageMove | None:
    """The move ``inter`` implies for ``rec`` (:func:`implied_target`), planned with
    :func:`plan_move` at the interaction's time, or None.  Every cause of an implied move
    (ingest, a logged interaction) comes through here.

    :param uow: the unit of work the interaction is written in (its stored timeline is
        read only when the rule needs the treatment history).
    :param pending_treatment: True when a completed treatment of this contact is among the
        writes pending in the same batch (not yet visible to ``uow``'s reads), so a whole
        history gives the same stage in one lead event as in several.
    """
    completed = False
    if needs_treatment_history(rec, inter.kind, inter.attributes):
        completed = pending_treatment or completed_treatment_stored(uow, rec.id)
    target = implied_target(pipeline, rec, inter, had_completed_treatment=completed)
    if target is None:
        return None
    return plan_move(
        mapper=mapper,
        pipeline=pipeline,
        rec=rec,
        key=key,
        to_stage=target,
        at=inter.occurred_at,
        now=now,
        actor=actor,
        implied_by=inter,
    )
