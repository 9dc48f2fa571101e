"""The pipeline service: a person's stage moves, the stage history, the pipeline report
and the pairs of contacts awaiting review.

A person's move and an interaction's implied move take the one stage-move path
(:mod:`carecrm.core.pipeline.moves`); a person's move always wins over implied ones.
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from carecrm.core.analytics.vendor_tests import flagged_contacts
from carecrm.core.config import Settings
from carecrm.core.events.outbox import Published, publish
from carecrm.core.ingest import is_reason_code
from carecrm.core.model.domain import Actor, StageChange
from carecrm.core.model.timeutil import utcnow
from carecrm.core.pipeline.moves import plan_move
from carecrm.core.pipeline.speed_to_lead import SpeedToLeadSummary
from carecrm.core.privacy.mapping import RecordMapper
from carecrm.core.privacy.read_path import ReadPath
from carecrm.core.storage.contract import StorageBackend, UnitOfWork

if TYPE_CHECKING:
    from carecrm.core.identity.directory import ContactResolver
    from carecrm.core.privacy.audit import AuditTrail


@attrs.frozen(kw_only=True)
class StageSummary:
    """One row of the pipeline report: contacts now in ``stage`` and the median time
    they have spent there so far, in seconds (None when empty), and the speed to lead of
    those of them who reached out (median business seconds to the first answer, how many
    were answered, how many still wait; see :meth:`CareCRM.speed_to_lead`)."""

    stage: str
    count: int
    median_seconds: float | None
    speed_to_lead: SpeedToLeadSummary = attrs.Factory(SpeedToLeadSummary)


class PipelineService:
    """Lifecycle stages of one practice's pipeline, with explicit collaborators (built per
    use by the facade: it holds no state of its own).

    :param storage: the backend.
    :param settings: the pipeline (stages and allowed moves).
    :param mapper: encrypts a move's timeline entry.
    :param read_path: the stage history's domain objects.
    :param audit: the audit trail (every person's move is audited).
    :param resolver: finds a contact by reference.
    :param deliver: delivers the outbox's events after a commit.
    :param speed_to_lead_values: each contact's speed to lead in business seconds, read in
        ``uow`` (``{contact id: (stage, location)} -> {contact id: seconds or None}``).
    """

    def __init__(
        self,
        *,
        storage: StorageBackend,
        settings: Settings,
        mapper: RecordMapper,
        read_path: ReadPath,
        audit: AuditTrail,
        resolver: ContactResolver,
        deliver: Callable[[Sequence[Published | None]], Any],
        speed_to_lead_values: Callable[[UnitOfWork, Mapping[uuid.UUID, str | None]], dict[uuid.UUID, float | None]],
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.mapper = mapper
        self.read_path = read_path
        self.audit = audit
        self.resolver = resolver
        self._deliver = deliver
        self._speed_to_lead_values = speed_to_lead_values

    def set_stage(self, ref: str | uuid.UUID, stage: str, *, actor: Actor, reason: str | None = None) -> StageChange:
        """``actor``'s move of a contact to ``stage`` (always wins over implied moves): one
        ``stage.set`` audit entry, in the same transaction as the change (the contact is
        resolved by id or blind index, nothing is decrypted).

        ``lost`` needs a reason.  A reason that is a short code (``too_expensive``) is kept in
        clear in the stage history for reports; free text ("worried about the cost after her
        diagnosis") may hold health information, so it is kept only encrypted, as the body of
        the ``stage.changed`` interaction on the timeline, and the history records the code
        ``free_text`` (HIPAA 45 CFR 164.312(a)(2)(iv)).

        :raises InvalidTransition: if the pipeline does not allow it (lists the allowed stages).
        :raises ValueError: for an unknown stage or a ``lost`` move without a reason.
        :raises ConflictError: if the contact changed meanwhile (retry).
        """
        pipeline = self.settings.pipeline
        now = utcnow()
        with self.storage.unit_of_work() as uow:
            rec = self.resolver.record(uow, ref)
            if stage == "lost" and not reason:
                raise ValueError("moving to 'lost' needs a reason code (--reason)")
            pipeline.check_move(rec.stage, stage)
            code = reason if reason is None or is_reason_code(reason) else "free_text"
            move = plan_move(
                mapper=self.mapper,
                pipeline=pipeline,
                rec=rec,
                key=self.mapper.key_of(rec),
                to_stage=stage,
                at=now,
                now=now,
                actor=actor,
                reason=code,
                free_text=reason if code == "free_text" else None,
            )
            uow.contacts.update(move.contact)
            uow.stages.add(move.change)
            uow.interactions.add(move.entry)
            self.audit.append(uow, actor, "stage.set", contact_id=rec.id, details={"from": rec.stage, "to": stage})
            published = publish(uow, [move.event])
            uow.commit()
        self._deliver([published])
        return StageChange(**attrs.asdict(move.change, recurse=False))

    def stage_history(self, contact_id: uuid.UUID) -> list[StageChange]:
        """A contact's stage changes, oldest first."""
        with self.storage.unit_of_work() as uow:
            return self.read_path.stage_history(uow.stages.history(contact_id))

    def pipeline_report(self, *, now: datetime | None = None) -> list[StageSummary]:
        """Contacts per stage, the median time (seconds) they have been in it, and their
        speed to lead (median business seconds; :meth:`CareCRM.speed_to_lead`).  Test
        contacts (only vendors' test events on their timeline:
        :mod:`carecrm.core.analytics.vendor_tests`) are left out."""
        now = now or utcnow()
        durations: dict[str, list[float]] = {s: [] for s in self.settings.pipeline.all_stages}
        located: dict[uuid.UUID, tuple[str, str | None]] = {}
        with self.storage.unit_of_work() as uow:
            after = None
            while True:
                page = uow.contacts.list(after=after, limit=1000)
                if not page:
                    break
                tests = flagged_contacts(uow, (rec.id for rec in page))
                for rec in page:
                    if rec.id in tests:
                        continue
                    since = rec.stage_changed_at or rec.created_at
                    durations.setdefault(rec.stage, []).append(max(0.0, (now - since).total_seconds()))
                    located[rec.id] = (rec.stage, rec.location)
                after = page[-1].id
            speeds = self._speed_to_lead_values(uow, {cid: loc for cid, (_, loc) in located.items()})
        by_stage: dict[str, list[float | None]] = {}
        for cid, value in speeds.items():
            by_stage.setdefault(located[cid][0], []).append(value)
        return [
            StageSummary(
                stage=s,
                count=len(d),
                median_seconds=statistics.median(d) if d else None,
                speed_to_lead=SpeedToLeadSummary.of(by_stage.get(s, [])),
            )
            for s, d in durations.items()
        ]

    def review_pairs(self, contact_id: uuid.UUID | None = None) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
        """Open pairs of contacts awaiting review: (a, b, reason)."""
        with self.storage.unit_of_work() as uow:
            recs = uow.reviews.for_contact(contact_id) if contact_id else uow.reviews.list(status="open")
        return [(r.contact_a, r.contact_b, r.reason) for r in recs if r.status == "open"]
