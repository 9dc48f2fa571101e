"""The ingest service: runs the stages of ingest over lead events, batch by batch.

The stages, each in its own module:

1. **inbox** (:mod:`carecrm.core.ingest.inbox`, ``Inbox.ingest_payloads``): a payload is stored
   encrypted in the inbox before anything else (one row per payload digest);
2. **parse**: the source connector turns it into lead events or
   :class:`~carecrm.core.ingest.connectors.Rejected` values (:func:`~carecrm.core.ingest.report.parsed_item`);
3. **prepare** (:mod:`carecrm.core.ingest.prepare`): text screened, identities normalized,
   blind indexes computed; a record refused here is quarantined;
4. **plan** (:mod:`carecrm.core.ingest.plan`): the batch is matched and every write
   planned as one :class:`~carecrm.core.ingest.plan.BatchPlan`, seeing its own pending
   writes;
5. **write** (:func:`~carecrm.core.ingest.plan.write_plan`): the plan stored in the
   batch's unit of work, with its ``ingest`` audit entry;
6. **publish**: the batch's live events written to the outbox in the same unit
   (:func:`carecrm.core.events.outbox.publish`), then delivered after the commit.

A record that fails while it is planned (matched, mapped, encrypted) is quarantined with a
reason naming source, record and field and the batch planned again without it; a batch that
loses a race with a concurrent writer is planned and written again from the start; a batch
whose write fails is retried record by record, so only the bad record is quarantined.
Re-ingesting the same event changes nothing (idempotency keys).
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from carecrm.core.config import Settings
from carecrm.core.errors import CareCRMError, ConflictError, DuplicateError, ValidationFailed
from carecrm.core.events import types as ev
from carecrm.core.events.outbox import Published, publish
from carecrm.core.identity.matching import MatchCandidate, MatchResult
from carecrm.core.ingest.plan import BatchPlanner, Cursor, Refused, refusing, write_plan
from carecrm.core.ingest.prepare import LeadPreparer, PreparedLead
from carecrm.core.ingest.report import IngestReport, Quarantined
from carecrm.core.model.domain import Actor, LeadEvent, Touchpoint
from carecrm.core.model.timeutil import utcnow
from carecrm.core.privacy.audit import AuditTrail
from carecrm.core.privacy.mapping import RecordMapper
from carecrm.core.privacy.read_path import ReadPath
from carecrm.core.storage.contract import StorageBackend

log = logging.getLogger("carecrm")

#: How many times a batch write that lost a race with a concurrent writer is tried.
WRITE_ATTEMPTS = 6


class Ingestor:
    """Runs the ingest stages for one call (see the module docstring).

    :param storage: the backend (one unit of work per batch).
    :param settings: batch size, pipeline, what to collect, the practice.
    :param mapper: blind indexes and encryption of the records planned.
    :param read_path: decrypts the stored contacts a lead updates.
    :param match: the matching hook (``carecrm_match_contact``): a candidate and the
        batch's view of storage -> the match.
    :param classify: fills a touchpoint's channel group from the practice's rules.
    :param audit: the audit trail (one ``ingest`` entry per batch).
    :param deliver: delivers the outbox's events after a commit.
    :param actor: who ingests: named by each batch's ``ingest`` audit entry (HIPAA 45 CFR
        164.312(b)), as the ``actor`` of the interactions stored and of the stage moves
        they imply.
    """

    def __init__(
        self,
        *,
        storage: StorageBackend,
        settings: Settings,
        mapper: RecordMapper,
        read_path: ReadPath,
        match: Callable[[MatchCandidate, Any], MatchResult],
        classify: Callable[[Touchpoint], Touchpoint],
        audit: AuditTrail,
        deliver: Callable[[Sequence[Published | None]], Any],
        actor: Actor,
    ) -> None:
        self.storage = storage
        self.audit = audit
        self._deliver = deliver
        self.actor = actor
        self.settings = settings
        #: What this call's committed batches wrote to the outbox, not yet delivered.
        self._published: list[Published] = []
        #: Added to each batch's ``ingest`` audit entry: the inbox sets ``verified`` (were
        #: the payloads' signatures checked; False for an operator's ``--no-verify`` import).
        self.audit_details: dict[str, Any] = {}
        self.preparer = LeadPreparer(settings, mapper)
        self.planner = BatchPlanner(
            settings=settings,
            mapper=mapper,
            read_path=read_path,
            match=match,
            classify=classify,
            actor=actor,
        )

    def run(self, items: Sequence[tuple[LeadEvent, uuid.UUID | None]], report: IngestReport) -> list[ev.Event]:
        """Ingest lead events in batches of ``settings.batch_size``; returns the live events
        fired (written to the outbox with each batch, and delivered after its commit)."""
        fired: list[ev.Event] = []
        size = max(1, self.settings.batch_size)
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            prepared: list[PreparedLead] = []
            for offset, (event, inbox_id) in enumerate(chunk):
                report.records += 1
                try:
                    prepared.append(self.preparer.prepare(event, start + offset, report, inbox_id))
                except ValidationFailed as exc:
                    report.quarantined.append(Quarantined(exc.source, exc.record, exc.field, exc.reason, inbox_id))
                except Exception as exc:  # noqa: BLE001 - one record's failure never stops the batch
                    reason = f"cannot be read ({type(exc).__name__})"  # the text may quote the value
                    ref = event.record_ref or f"#{start + offset}"
                    report.quarantined.append(Quarantined(event.source, ref, "record", reason, inbox_id, cause=exc))
            if not prepared:
                continue
            try:
                events = self._write_retrying(prepared, report)
            except CareCRMError as exc:
                log.warning(
                    "batch write failed (%s); retrying its %d records one by one",
                    type(exc).__name__,
                    len(prepared),
                )
                events = []
                for prep in prepared:
                    try:
                        events.extend(self._write_retrying([prep], report))
                    except CareCRMError as exc2:
                        report.quarantined.append(
                            Quarantined(
                                prep.event.source,
                                prep.event.record_ref,
                                "storage",
                                _safe_reason(exc2),
                                prep.inbox_id,
                            )
                        )
            if events:
                done, self._published = self._published, []
                self._deliver(done)
            fired.extend(events)
        return fired

    def _write_retrying(self, batch: list[PreparedLead], report: IngestReport) -> list[ev.Event]:
        """Write ``batch`` in one unit of work, again from the start (matching included)
        when it lost a race with a concurrent writer: a deadlock or lock timeout
        (:class:`ConflictError`: PostgreSQL 40P01/40001, MariaDB 1213/1205) or a unique key
        another process stored first (:class:`DuplicateError`); after
        :data:`WRITE_ATTEMPTS` attempts the last error propagates.  The batch's counts go
        into ``report`` only once it committed."""
        import random
        import time

        for attempt in range(1, WRITE_ATTEMPTS + 1):
            batch_report = IngestReport()
            try:
                events = self._write_without_poison(batch, batch_report)
            except (ConflictError, DuplicateError) as exc:
                if attempt == WRITE_ATTEMPTS:
                    raise
                log.info(
                    "batch write lost a race (%s); attempt %d of %d", type(exc).__name__, attempt + 1, WRITE_ATTEMPTS
                )
                time.sleep(random.uniform(0.01, 0.05) * attempt)
                continue
            report.merge(batch_report)
            return events
        raise AssertionError("unreachable")

    def _write_without_poison(self, batch: list[PreparedLead], report: IngestReport) -> list[ev.Event]:
        """:meth:`_write_batch`, but a record that fails while it is matched, mapped or
        encrypted is quarantined into ``report`` and the batch written again without it
        (its unit of work was rolled back, so nothing of the bad record stays)."""
        remaining = list(batch)
        while remaining:
            attempt = IngestReport()
            try:
                events = self._write_batch(remaining, attempt)
            except Refused as exc:
                log.debug("record refused while writing (%s)", type(exc.cause).__name__)
                prep = exc.prepared
                report.quarantined.append(
                    Quarantined(exc.source, exc.record, exc.field, exc.reason, prep.inbox_id, cause=exc.cause)
                )
                remaining = [p for p in remaining if p is not prep]
                continue
            report.merge(attempt)
            return events
        return []

    def _write_batch(self, batch: list[PreparedLead], report: IngestReport) -> list[ev.Event]:
        """Plan, write and publish ``batch`` in one unit of work, with its ``ingest`` audit
        entry; returns the live events written to the outbox (delivered by the caller
        after the commit).

        :raises Refused: when one record failed while it was planned.
        """
        now = utcnow()
        cursor = Cursor()  # which record is being planned: its failure refuses only it
        with self.storage.unit_of_work() as uow:
            with refusing(cursor):
                plan = self.planner.plan(uow, batch, report, cursor, now)
            events = write_plan(uow, plan, report, now)
            self.audit.append(
                uow,
                self.actor,
                "ingest",
                details={
                    "records": plan.records,
                    "contacts_created": report.contacts_created,
                    "interactions_added": report.interactions_added,
                    **self.audit_details,
                },
            )
            published = publish(uow, events)
            uow.commit()
        if published is not None:
            self._published.append(published)
        return events


def _safe_reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"
