"""The inbox stage of ingest: every payload is stored, encrypted, before it is processed.

A payload from any source (a webhook delivery, a file) is written to the inbox first, one
row per (source, digest of its bytes), so a re-delivery is recognized and nothing received
is lost if processing fails; then its signature is verified, the source's connector parses
it and its lead events go through the other stages (:mod:`carecrm.core.ingest.service`).
Each inbox entry ends ``processed``, ``ignored`` (no lead record), ``quarantined`` (with
its reasons, never values) or ``pending``: a pointer-only vendor's payload (Meta Lead Ads,
HubSpot) that names records to fetch from the vendor's API
(:mod:`carecrm.core.ingest.pointers`), completed later by :meth:`Inbox.complete` (the
fetched objects, from a file) or :meth:`Inbox.fetch` (a :class:`~carecrm.core.ingest.pointers.Fetcher`).
Operators list, show (an audited read), retry, complete and discard entries, and processed
ones are purged after ``[ingest] inbox_retention_days``.
"""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, TypeVar

import attrs

from carecrm.core.config import Settings
from carecrm.core.errors import CareCRMError, ConfigError, ValidationFailed
from carecrm.core.ingest.connectors import SourceConnector
from carecrm.core.ingest.pointers import CompletesPointers, Fetcher, Pointer
from carecrm.core.ingest.report import IngestReport, Quarantined, parsed_item
from carecrm.core.ingest.service import WRITE_ATTEMPTS, Ingestor
from carecrm.core.model.domain import Actor, LeadEvent, RawPayload
from carecrm.core.model.ids import new_id
from carecrm.core.model.records import INBOX_STATUSES, InboxRecord
from carecrm.core.model.text import printable
from carecrm.core.model.timeutil import utcnow
from carecrm.core.privacy.mapping import RecordMapper
from carecrm.core.storage.contract import StorageBackend, UnitOfWork, run_retrying

if TYPE_CHECKING:
    from carecrm.core.privacy.audit import AuditTrail
    from carecrm.core.privacy.read_path import ReadPath

__all__ = ["INBOX_STATUSES", "Inbox", "InboxItem"]

_T = TypeVar("_T")

#: In the reason of a payload refused for its size (see ``Inbox._refuse_too_large``).
TOO_LARGE = "larger than [ingest] max_payload_bytes"


@attrs.frozen(kw_only=True)
class InboxItem:
    """An inbox entry as shown to people: everything clear about a stored payload."""

    id: uuid.UUID
    source: str
    received_at: datetime
    status: str
    reason: str | None
    processed_at: datetime | None
    attempts: int
    #: Was the signature checked: True yes, False no (an operator's ``--no-verify``
    #: import), None the source has no secret (see ``InboxRecord.verified``).
    verified: bool | None = None


class Inbox:
    """The inbox of one app, with explicit collaborators (built per use by the facade:
    it holds no state of its own).

    :param storage: the backend.
    :param settings: ``batch_size`` and ``inbox_retention_days``.
    :param mapper: encrypts payloads into inbox records.
    :param read_path: decrypts a stored payload (audited).
    :param audit: the audit trail (discards are audited).
    :param connector: the configured connector of a source name.
    :param secret: the signing secret of a source name (None: none configured).
    :param ingestor: the ingest service for one actor.
    """

    def __init__(
        self,
        *,
        storage: StorageBackend,
        settings: Settings,
        mapper: RecordMapper,
        read_path: ReadPath,
        audit: AuditTrail,
        connector: Callable[[str], SourceConnector],
        secret: Callable[[str], str | None],
        ingestor: Callable[[Actor], Ingestor],
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.mapper = mapper
        self.read_path = read_path
        self._audit = audit
        self._connector = connector
        self._secret = secret
        self._ingestor = ingestor

    def ingest_payloads(
        self, source: str, payloads: Iterable[RawPayload], *, actor: Actor, verify: bool = True
    ) -> IngestReport:
        """Ingest raw payloads of ``source``: each is written to the (encrypted) inbox first,
        its signature verified when a secret is configured, parsed by the source's
        connector, and its lead events ingested.  A payload that fails verification or
        parsing is quarantined whole with its reason; a bad record is quarantined while
        the payload's other records go in.  A byte-identical re-delivery of a processed
        payload is counted as a duplicate and changes nothing; one of a quarantined payload
        is processed again in the same inbox entry.  Afterwards processed payloads older
        than ``[ingest] inbox_retention_days`` are purged.

        :param actor: who ingests (a webhook receiver, a person running ``carecrm ingest``):
            named by the batch's ``ingest`` audit entries and the stage moves the leads imply.
        :param verify: check signatures (False for payloads exported by the practice itself;
            then no secret is needed).

        :raises UnknownComponentError: if ``source`` is not configured (listing those that are).
        :raises ConfigError: if the source's secret reference cannot be resolved.
        """
        connector = self._connector(source)
        secret = self._secret(source) if verify else None
        if verify and secret is None and getattr(connector, "signed", False):
            raise ConfigError(
                f"source {source!r} verifies signatures but has no secret: set [sources.{source}] secret "
                '(e.g. "$env:NAME"), so unsigned payloads are never accepted silently'
            )
        checked = _checked(verify, secret)
        report = IngestReport()
        pending: list[tuple[InboxRecord, RawPayload]] = []
        chunk = max(1, self.settings.batch_size)
        buffer: list[RawPayload] = []

        def flush() -> None:
            if not buffer:
                return
            records = [
                (attrs.evolve(self.mapper.inbox_to_record(new_id(), source, payload), verified=checked), payload)
                for payload in buffer
            ]
            digests = [rec.digest for rec, _ in records]

            def store(uow: UnitOfWork) -> dict[str, InboxRecord]:
                # the same bytes again: after a processed copy nothing changes; a quarantined,
                # discarded or unfinished copy is processed again in its own inbox entry.
                # One row per (source, digest): stored with insert-or-skip, so a concurrent
                # receiver of the same bytes (another process, another worker) keeps the
                # same row, and both agree on its status
                before = {r.digest: r for r in uow.inbox.find_digests(source, digests)}
                fresh: dict[str, InboxRecord] = {}
                for rec, _ in records:  # the same bytes twice in one batch: the first is stored
                    if rec.digest not in before:
                        fresh.setdefault(rec.digest, rec)
                new = list(fresh.values())
                stored = uow.inbox.add_new(new)
                if stored == len(new):  # every new row is ours: nothing to read back
                    found = before | {rec.digest: rec for rec in new}
                else:
                    found = {r.digest: r for r in uow.inbox.find_digests(source, digests)}
                # a stored copy processed again now: its row says how this delivery was checked
                again = [r.id for r in found.values() if r.status != "processed" and r.verified is not checked]
                if again:
                    uow.inbox.set_verified(again, checked)
                    found = {d: (attrs.evolve(r, verified=checked) if r.id in again else r) for d, r in found.items()}
                uow.commit()
                return found

            stored = self.retrying(store)
            seen: set[str] = set()
            for rec, payload in records:
                row = stored.get(rec.digest, rec)
                if rec.digest in seen or row.status == "processed":
                    # the same bytes again (in this batch, or accepted before): a duplicate,
                    # but only if this delivery's own signature holds; a forged one on an
                    # accepted body is a failed verification, and the stored entry is kept
                    refused = self._check_again(connector, secret, row, payload)
                    if refused is None:
                        report.duplicate_payloads += 1
                    else:
                        report.quarantined.append(refused)
                    continue
                seen.add(rec.digest)
                pending.append((row, payload))
            buffer.clear()
            self.process(connector, secret if verify else None, pending, report, actor, verified=checked)
            pending.clear()

        # a connector whose vendor puts a secret in the body (Google Ads' google_key) gives
        # the form to store: the secret never reaches the inbox, and verify still works on it
        redact: Callable[[RawPayload], RawPayload] | None = getattr(connector, "redact", None)
        limit = self.settings.max_payload_bytes
        for payload in payloads:
            report.payloads += 1
            if len(payload.body) > limit:  # refused unread; the rest of the batch goes in
                report.quarantined.append(self._refuse_too_large(source, payload, limit))
                continue
            buffer.append(redact(payload) if redact is not None else payload)
            if len(buffer) >= chunk:
                flush()
        flush()
        # retention: processed payloads leave the inbox after [ingest] inbox_retention_days
        report.purged_payloads = self.purge()
        return report

    @staticmethod
    def _check_again(
        connector: SourceConnector, secret: str | None, row: InboxRecord, payload: RawPayload
    ) -> Quarantined | None:
        """The signature check of a re-delivery of stored bytes: None when it holds (or
        there is no secret), else the failed verification to report.  The stored entry is
        unchanged either way: its own delivery was checked when it was processed."""
        if secret is None:
            return None
        try:
            connector.verify(payload, secret)
        except ValidationFailed as exc:
            reason = f"{exc.reason} (a re-delivery of an accepted payload; the stored one is kept)"
            return Quarantined(exc.source, exc.record, exc.field, reason, row.id, payload=payload.origin)
        return None

    def _refuse_too_large(self, source: str, payload: RawPayload, limit: int) -> Quarantined:
        """Quarantine a payload whose body is over ``[ingest] max_payload_bytes``, unread.

        Only what shows it was refused is stored: an inbox entry with the envelope (content
        type, headers, URL, file name: encrypted as always) and an **empty** body, its
        clear reason naming the source, the field ``body``, the size and the limit.  The
        entry's digest is of the refused body under a separate label, so the same bytes
        again reuse the entry (one more attempt), and after the limit is raised they go in
        as a new entry (the refused one can then be discarded).
        """
        size = len(payload.body)
        digest = self.mapper.keys.digest(b"\x00too-large\x1f" + source.encode() + b"\x1f" + payload.body)
        stub = attrs.evolve(payload, body=b"")
        rec = attrs.evolve(self.mapper.inbox_to_record(new_id(), source, stub), digest=digest)
        reason = f"{size} bytes, {TOO_LARGE} ({limit}); the body was not stored"
        q = Quarantined(source, "payload", "body", reason, rec.id, payload=payload.origin)
        now = utcnow()

        def store(uow: UnitOfWork) -> uuid.UUID:
            found = uow.inbox.find_digests(source, [digest])
            if not found:
                uow.inbox.add_new([rec])
                found = uow.inbox.find_digests(source, [digest])
            row = found[0].id
            uow.inbox.set_status_many([row], "quarantined", reason=q.message(with_payload=False), processed_at=now)
            uow.commit()
            return row

        q.inbox_id = self.retrying(store)
        return q

    def process(
        self,
        connector: SourceConnector,
        secret: str | None,
        items: list[tuple[InboxRecord, RawPayload]],
        report: IngestReport,
        actor: Actor,
        *,
        verified: bool | None = None,
    ) -> None:
        """Verify and parse stored payloads, ingest their lead events, then mark each inbox
        entry ``processed``, ``ignored`` (no lead record) or ``quarantined`` with its
        reasons.  A payload that fails verification or parsing is quarantined whole; a bad
        record is quarantined while the payload's other records go in.

        :param secret: the source's signing secret (None: signatures are not checked).
        :param verified: what the entries' rows say of the check (:attr:`InboxRecord.verified`),
            also written into each batch's ``ingest`` audit entry.
        """
        events: list[tuple[LeadEvent, uuid.UUID | None]] = []
        failed: dict[uuid.UUID, list[Quarantined]] = {}
        empty: set[uuid.UUID] = set()
        pointers: dict[uuid.UUID, list[Pointer]] = {}
        positions: list[int] = []  # each event's index among its payload's items
        for rec, payload in items:
            try:
                if secret is not None:
                    connector.verify(payload, secret)
                produced = list(connector.parse(payload))
            except ValidationFailed as exc:
                failed.setdefault(rec.id, []).append(Quarantined(exc.source, exc.record, exc.field, exc.reason, rec.id))
                continue
            except Exception as exc:  # noqa: BLE001 - any connector failure quarantines this payload only
                # (a RecursionError from a deeply nested body, a connector bug): the exception's
                # text may quote the payload, so only its type is kept
                failed.setdefault(rec.id, []).append(
                    Quarantined(connector.name, "payload", "body", f"cannot be parsed ({type(exc).__name__})", rec.id)
                )
                continue
            if not produced:
                report.empty_payloads += 1
                empty.add(rec.id)
            for index, item in enumerate(produced):
                if isinstance(item, Pointer):  # a record to fetch from the vendor's API
                    pointers.setdefault(rec.id, []).append(item)
                    continue
                taken = parsed_item(connector.name, item, rec.id)
                if isinstance(taken, Quarantined):
                    report.records += 1
                    taken.index = _ref_index(taken.record, index)
                    failed.setdefault(rec.id, []).append(taken)
                else:
                    positions.append(index)
                    events.append((taken, rec.id))
        before = len(report.quarantined)
        for qs in failed.values():
            report.quarantined.extend(qs)
        running = len(report.quarantined)
        ingestor = self._ingestor(actor)
        ingestor.audit_details = {"verified": verified}
        ingestor.run(events, report)
        _locate(report.quarantined[running:], events, positions)
        # every payload with a quarantined record stays quarantined with its reasons; the
        # report names the payload's file, the inbox's clear reason does not (see Quarantined)
        origins = {rec.id: payload.origin for rec, payload in items}
        bad: dict[uuid.UUID, list[str]] = {}
        for q in report.quarantined[before:]:
            if q.inbox_id is not None:
                bad.setdefault(q.inbox_id, []).append(q.message(with_payload=False))
                if q.payload is None:
                    q.payload = origins.get(q.inbox_id) or f"inbox {q.inbox_id}"
        now = utcnow()
        ignored = [rec.id for rec, _ in items if rec.id in empty and rec.id not in bad]
        live = {iid: ps for iid, ps in pointers.items() if iid not in bad}
        waiting = {iid: why for iid, why in self._waiting(connector.name, live).items() if why is not None}
        report.pending += len(waiting)
        done = [rec.id for rec, _ in items if rec.id not in empty and rec.id not in bad and rec.id not in waiting]

        def mark(uow: UnitOfWork) -> None:
            for iid, reason in waiting.items():
                uow.inbox.set_status_many([iid], "pending", reason=reason, processed_at=now)
            for iid, reasons in bad.items():
                uow.inbox.set_status_many([iid], "quarantined", reason="; ".join(reasons)[:2000], processed_at=now)
            if ignored:
                # nothing to ingest (another event type, or an `only_if` that matched nothing):
                # kept as "ignored", so a re-delivery or a retry after a config fix processes it
                # again; purged with processed payloads
                uow.inbox.set_status_many(ignored, "ignored", reason="no lead record in the payload", processed_at=now)
            if done:
                uow.inbox.set_status_many(done, "processed", processed_at=now)
            uow.commit()

        self.retrying(mark)

    def _waiting(self, source: str, pointers: dict[uuid.UUID, list[Pointer]]) -> dict[uuid.UUID, str | None]:
        """For each entry's pointers, the pending reason naming what is still to fetch, or
        None when every pointer is done (the interaction its completion yields is stored:
        a re-delivered notification of a completed lead)."""
        if not pointers:
            return {}
        keys = {p.key for ps in pointers.values() for p in ps}
        with self.storage.unit_of_work() as uow:
            stored = uow.interactions.existing_keys(source, keys)
        out: dict[uuid.UUID, str | None] = {}
        for iid, ps in pointers.items():
            left = [p for p in ps if p.key not in stored]
            out[iid] = _pending_reason(left, len(ps)) if left else None
        return out

    def complete(self, inbox_id: uuid.UUID, fetched: Sequence[RawPayload], *, actor: Actor) -> IngestReport:
        """Complete a ``pending`` entry from the vendor's API objects it points to (files
        an operator fetched, or a :class:`~carecrm.core.ingest.pointers.Fetcher`'s
        responses): the connector's ``complete`` turns them into lead events, ingested as
        from the entry (their interactions name it).  The entry is ``processed`` once every
        record it names is stored, else it stays ``pending`` with what is left (and why a
        fetched object was refused).  Audited (``inbox.complete``, with counts only).

        :raises NotFound: if there is no such entry.
        :raises CareCRMError: if the entry is not pending, or its source does not complete
            pointers.
        """
        with self.storage.unit_of_work() as uow:
            rec = uow.inbox.get(inbox_id)
        if rec.status != "pending":
            raise CareCRMError(f"inbox entry {inbox_id} is {rec.status}, not pending: there is nothing to complete")
        connector = self._connector(rec.source)
        if not isinstance(connector, CompletesPointers):
            raise CareCRMError(f"source {rec.source!r} does not complete pointers (its connector reads whole records)")
        payload = self.read_path.payload_for_processing(rec, actor=actor)
        report = IngestReport(payloads=len(fetched))
        events: list[tuple[LeadEvent, uuid.UUID | None]] = []
        try:
            ps = connector.pointers(payload)
            produced = list(connector.complete(payload, fetched))
        except ValidationFailed as exc:
            report.quarantined.append(Quarantined(exc.source, exc.record, exc.field, exc.reason, rec.id))
            produced = []
            ps = []
        for item in produced:
            taken = parsed_item(connector.name, item, rec.id)
            if isinstance(taken, Quarantined):
                report.records += 1
                report.quarantined.append(taken)
            else:
                events.append((taken, rec.id))
        self._ingestor(actor).run(events, report)
        # the report names the fetched file(s) (the connector merges several per record);
        # the inbox's clear reason does not (see Quarantined.message)
        origins = ", ".join(p.origin for p in fetched if p.origin) or None
        for q in report.quarantined:
            if q.payload is None:
                q.payload = origins or f"inbox {rec.id}"
        refused = [q.message(with_payload=False) for q in report.quarantined]
        left = self._waiting(rec.source, {rec.id: ps}).get(rec.id) if ps else _pending_reason([], 0)
        now = utcnow()

        def mark(uow: UnitOfWork) -> None:
            if left is None and not refused:
                uow.inbox.set_status_many([rec.id], "processed", processed_at=now)
            else:
                reason = "; ".join([left or "waiting on a fetch", *(f"refused: {r}" for r in refused)])
                uow.inbox.set_status_many([rec.id], "pending", reason=reason[:2000], processed_at=now)
            self._audit.append(
                uow,
                actor,
                "inbox.complete",
                details={
                    "inbox_id": str(rec.id),
                    "fetched": len(fetched),
                    "accepted": report.accepted,
                    "refused": len(refused),
                    "done": left is None and not refused,
                },
            )
            uow.commit()

        self.retrying(mark)
        if left is not None or refused:
            report.pending += 1
        return report

    def fetch(self, inbox_id: uuid.UUID, fetcher: Fetcher, *, actor: Actor) -> IngestReport:
        """Complete a ``pending`` entry by reading each record it still points to through
        ``fetcher`` (the vendor's API with the practice's token), then as :meth:`complete`.

        :raises NotFound: if there is no such entry.
        :raises CareCRMError: as :meth:`complete`, or from the fetcher (nothing changes).
        """
        with self.storage.unit_of_work() as uow:
            rec = uow.inbox.get(inbox_id)
        connector = self._connector(rec.source)
        if rec.status != "pending" or not isinstance(connector, CompletesPointers):
            return self.complete(inbox_id, [], actor=actor)  # raises the reason
        payload = self.read_path.payload_for_processing(rec, actor=actor)
        ps = connector.pointers(payload)
        with self.storage.unit_of_work() as uow:
            stored_keys = uow.interactions.existing_keys(rec.source, {p.key for p in ps})
        responses = [fetcher.fetch(rec.source, p) for p in ps if p.key not in stored_keys]
        return self.complete(inbox_id, responses, actor=actor)

    def retrying(self, work: Callable[[UnitOfWork], _T]) -> _T:
        """Run ``work(uow)`` in a unit of work, again when it lost a race with a concurrent
        writer (:func:`carecrm.core.storage.contract.run_retrying`); ``work`` commits."""
        return run_retrying(self.storage, work, attempts=WRITE_ATTEMPTS)

    # ------------------------------------------------------------------ inbox

    def list(
        self, *, status: str | None = None, source: str | None = None, limit: int = 100
    ) -> builtins.list[InboxItem]:
        """Inbox entries, newest first (no payload content)."""
        with self.storage.unit_of_work() as uow:
            return [_inbox_item(r) for r in uow.inbox.list(status=status, source=source, limit=limit)]

    def show(self, inbox_id: uuid.UUID, *, actor: Actor) -> tuple[InboxItem, RawPayload]:
        """One entry and its decrypted payload (an audited read of raw personal data by ``actor``).

        :raises NotFound: if there is no such entry.
        """
        with self.storage.unit_of_work() as uow:
            rec = uow.inbox.get(inbox_id)
            payload = self.read_path.inbox_payload(uow, rec, actor=actor, purpose="operations")
            uow.commit()
        return _inbox_item(rec), payload

    def retry(self, inbox_id: uuid.UUID, *, actor: Actor) -> IngestReport:
        """Process a stored payload again (after fixing config or a connector).

        :raises NotFound: if there is no such entry.
        :raises CareCRMError: if it was discarded.
        """
        with self.storage.unit_of_work() as uow:
            rec = uow.inbox.get(inbox_id)
        if rec.status == "discarded":
            raise CareCRMError(f"inbox entry {inbox_id} was discarded; it cannot be retried")
        if rec.status == "quarantined" and TOO_LARGE in (rec.reason or ""):
            raise CareCRMError(
                f"inbox entry {inbox_id} was refused for its size and its body was not stored: raise "
                "[ingest] max_payload_bytes and ingest the file again (then discard this entry)"
            )
        payload = self.read_path.payload_for_processing(rec, actor=actor)
        connector = self._connector(rec.source)
        report = IngestReport(payloads=1)
        # an operator's unchecked import stays unchecked (its file carries no signature)
        secret = None if rec.verified is False else self._secret(rec.source)
        checked = False if rec.verified is False else _checked(True, secret)
        if checked is not rec.verified:

            def record_check(uow: UnitOfWork) -> None:
                uow.inbox.set_verified([rec.id], checked)
                uow.commit()

            self.retrying(record_check)
        self.process(connector, secret, [(rec, payload)], report, actor, verified=checked)
        return report

    def reprocess(self, inbox_id: uuid.UUID, *, actor: Actor) -> IngestReport:
        """Derive again the records of an already processed (or ignored) payload, after a
        config or connector change: the interactions it produced (those naming its inbox
        id) are deleted and the payload processed again as it is configured now, so they
        are replaced.  Audited: an ``inbox.reprocess`` entry (with how many interactions
        were removed) in the unit that deletes them, then the run's ``ingest`` entries.

        The payload is checked first, as it was stored: its signature again (unless it was
        an operator's ``--no-verify`` import) and that it still parses; if either fails it
        is reported quarantined and nothing stored changes.  A record the new config refuses
        is quarantined (its old interactions are gone: it is not derived any more).
        Consent records, stage changes and contacts stay: consent is evidence, kept
        append-only; a re-derived consent signal with the same key is a duplicate.

        :raises NotFound: if there is no such entry.
        :raises CareCRMError: if the entry is not processed or ignored (``inbox retry`` a
            quarantined one; complete a pending one), or its source is pointer-only
            (Meta Lead Ads, HubSpot: the records came from fetched objects that are not
            stored, so they cannot be derived again from the notification).
        """
        with self.storage.unit_of_work() as uow:
            rec = uow.inbox.get(inbox_id)
        if rec.status not in ("processed", "ignored"):
            raise CareCRMError(
                f"inbox entry {inbox_id} is {rec.status}: only processed or ignored payloads are reprocessed "
                "(retry a quarantined one, complete a pending one)"
            )
        connector = self._connector(rec.source)
        _reprocessable(rec.source, connector)
        payload = self.read_path.payload_for_processing(rec, actor=actor)
        report = IngestReport(payloads=1)
        secret = None if rec.verified is False else self._secret(rec.source)
        try:
            if secret is not None:
                connector.verify(payload, secret)
            list(connector.parse(payload))
        except ValidationFailed as exc:
            reason = f"{exc.reason} (reprocess: nothing changed)"
            report.quarantined.append(Quarantined(exc.source, exc.record, exc.field, reason, rec.id, payload.origin))
            return report
        except Exception as exc:  # noqa: BLE001 - as in process: only the type, never the text
            reason = f"cannot be parsed ({type(exc).__name__}) (reprocess: nothing changed)"
            report.quarantined.append(Quarantined(connector.name, "payload", "body", reason, rec.id, payload.origin))
            return report

        def remove(uow: UnitOfWork) -> int:
            gone = uow.interactions.delete_for_inbox(rec.id)
            self._audit.append(
                uow,
                actor,
                "inbox.reprocess",
                details={"inbox_id": str(rec.id), "source": rec.source, "removed": len(gone)},
            )
            uow.commit()
            return len(gone)

        report.interactions_removed = self.retrying(remove)
        checked = False if rec.verified is False else _checked(True, secret)
        self.process(connector, secret, [(rec, payload)], report, actor, verified=checked)
        return report

    def reprocess_source(self, source: str, *, actor: Actor, limit: int = 100_000) -> IngestReport:
        """:meth:`reprocess` every processed and ignored payload of ``source`` (oldest
        first, at most ``limit``); one report for all.

        :raises UnknownComponentError: if ``source`` is not configured.
        """
        _reprocessable(source, self._connector(source))  # fails before anything changes
        entries = [r for st in ("processed", "ignored") for r in self.list(status=st, source=source, limit=limit)]
        entries.sort(key=lambda i: (i.received_at, i.id))
        report = IngestReport()
        for item in entries:
            report.merge(self.reprocess(item.id, actor=actor))
        return report

    def discard(self, inbox_id: uuid.UUID, *, actor: Actor, reason: str | None = None) -> None:
        """Mark an entry discarded (it is never processed again; purged later).

        :raises NotFound: if there is no such entry.
        """
        with self.storage.unit_of_work() as uow:
            uow.inbox.get(inbox_id)
            uow.inbox.set_status(
                inbox_id,
                "discarded",
                reason=reason or f"discarded by {actor.name}",
                processed_at=utcnow(),
            )
            self._audit.append(uow, actor, "inbox.discard", details={"inbox_id": str(inbox_id)})
            uow.commit()

    def purge(self, *, now: datetime | None = None) -> int:
        """Delete processed, ignored and discarded payloads older than the retention
        (``[ingest] inbox_retention_days``, default 30); quarantined ones stay."""
        cutoff = (now or utcnow()) - timedelta(days=self.settings.inbox_retention_days)
        with self.storage.unit_of_work() as uow:
            n = sum(uow.inbox.purge(status=st, before=cutoff) for st in ("processed", "ignored", "discarded"))
            uow.commit()
        return n


def _reprocessable(source: str, connector: SourceConnector) -> None:
    """:raises CareCRMError: for a pointer-only source, whose interactions were derived
    from fetched objects the inbox does not keep (re-deriving the notification alone would
    delete them and leave the entry pending)."""
    if isinstance(connector, CompletesPointers):
        raise CareCRMError(
            f"source {source!r} is pointer-only: its records came from fetched objects the inbox does not keep, "
            "so they cannot be derived again; ingest the fetched objects again with carecrm inbox complete "
            "on a new notification instead"
        )


def _checked(verify: bool, secret: str | None) -> bool | None:
    """What an inbox row records of a payload's signature check
    (:attr:`~carecrm.core.model.records.InboxRecord.verified`): False when the caller
    skipped it (``--no-verify``), True when a secret was there to check it with, None when
    the source has no secret (nothing to check)."""
    if not verify:
        return False
    return True if secret is not None else None


def _ref_index(ref: str, index: int) -> int:
    """The index of a refused record in its payload: the connector's own ``#N`` ref, else
    its position among the items the connector yielded."""
    if ref.startswith("#") and ref[1:].isdigit():
        return int(ref[1:])
    return index


def _locate(
    quarantined: Sequence[Quarantined],
    events: Sequence[tuple[LeadEvent, uuid.UUID | None]],
    positions: Sequence[int],
) -> None:
    """Give the records the ingest stages refused their index within their own payload:
    the stages number the events of the whole call (``#N`` for a record without an id),
    the operator wants the record's place in the file it came from."""
    by_ref: dict[tuple[uuid.UUID | None, str], int] = {}
    for (event, inbox_id), index in zip(events, positions, strict=True):
        if event.record_ref:
            by_ref.setdefault((inbox_id, printable(event.record_ref, limit=120)), index)
    for q in quarantined:
        if q.index is not None:
            continue
        if q.record.startswith("#") and q.record[1:].isdigit() and int(q.record[1:]) < len(events):
            n = int(q.record[1:])
            if events[n][1] == q.inbox_id and not events[n][0].record_ref:
                q.index = positions[n]
                q.record = f"#{positions[n]}"
                continue
        q.index = by_ref.get((q.inbox_id, q.record))


def _pending_reason(left: Sequence[Pointer], total: int) -> str:
    """The clear reason of a pending entry: what is still to fetch (vendor ids only)."""
    if not left:
        return "waiting on a fetch"
    head = f"waiting on fetch ({len(left)} of {total}): "
    return (head + "; ".join(p.fetch for p in left))[:2000]


def _inbox_item(rec: InboxRecord) -> InboxItem:
    return InboxItem(
        id=rec.id,
        source=rec.source,
        received_at=rec.received_at,
        status=rec.status,
        reason=rec.reason,
        processed_at=rec.processed_at,
        attempts=rec.attempts,
        verified=rec.verified,
    )
