"""The ingest path: normalize, match, encrypt and store lead events in batches.

For every batch: identities are normalized (emails, E.164 phones), the batch's blind
indexes are looked up in one query, each event is matched through
``carecrm_match_contact`` (the built-in exact matcher last), contacts, identities,
interactions, consent events and stage moves are buffered and written through one unit
of work, and live events fire after the commit.  A record that cannot be accepted is
quarantined with a reason naming source, record and field while the rest of the batch
goes in; if the batch's write fails, its records are retried one by one so only the bad
one is quarantined.  Re-ingesting the same event changes nothing (idempotency keys).

A poison record never stops a batch: text that cannot be stored is refused or cleaned
field by field before matching (:meth:`Ingestor.prepare`, rules in
:mod:`carecrm.core.text`), and any other exception while normalizing, matching, mapping or
encrypting one record quarantines that record (naming the step as the field, the
exception's type as the reason, never its text, which may quote the value) while the
batch is written again without it.  Storage errors are not a record's fault and are left
to the batch's retry.
"""

from __future__ import annotations

import logging
import re
import uuid
import warnings
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs

from carecrm.core import events as ev
from carecrm.core.connectors import Rejected
from carecrm.core.errors import (
    CareCRMError,
    ConflictError,
    DuplicateError,
    StorageError,
    UnstorableValue,
    ValidationFailed,
)
from carecrm.core.identity import (
    IdentityError,
    is_low_confidence_name,
    normalize_city,
    normalize_email,
    normalize_phone,
    split_full_name,
)
from carecrm.core.ids import new_id
from carecrm.core.mapping import ContactKey
from carecrm.core.matching import MatchCandidate, MatchResult
from carecrm.core.models import (
    Actor,
    ConsentEvent,
    Contact,
    Identity,
    Interaction,
    LeadEvent,
    Touchpoint,
)
from carecrm.core.outbox import publish
from carecrm.core.records import (
    ConsentRecord,
    ContactRecord,
    IdentityRecord,
    InteractionRecord,
    ReviewRecord,
    StageChangeRecord,
)
from carecrm.core.stage_moves import COMPLETED_TREATMENT_KINDS, implied_move
from carecrm.core.text import InvalidText, checked_text, cleaned_json, cleaned_text, printable
from carecrm.core.timeutil import utcnow
from carecrm.core.vocab import INBOUND_KINDS, is_valid_kind_name

if TYPE_CHECKING:
    from carecrm.core.app import CareCRM
    from carecrm.core.storage import UnitOfWork

log = logging.getLogger("carecrm.ingest")

#: How many times a batch write that lost a race with a concurrent writer is tried.
WRITE_ATTEMPTS = 6


def _printable(value: object) -> str:
    return printable(None if value is None else str(value), limit=120)


def _printable_opt(value: object) -> str | None:
    return None if value is None else printable(str(value), limit=200)


def _printable_reason(value: object) -> str:
    return printable(str(value), limit=1000)


@attrs.define
class Quarantined:
    """A record that was not accepted: where it came from and why (no personal data).

    :ivar source: the source's name; ``record``: the vendor's record id or ``#<index>``;
        ``field``: the field (or the step) at fault; ``reason``: why, never the value.
        All four are made printable (:func:`carecrm.core.text.printable`): a record id that
        holds a control character or a lone surrogate is shown escaped.
    :ivar inbox_id: the inbox entry of the payload, when it came through the inbox.
    :ivar payload: where the payload came from (the file it was read from), when known.
    :ivar cause: the exception that made the record fail, when it was not a refusal by
        rule (for ``--debug`` tracebacks; never shown otherwise, it may quote the value).
    """

    source: str = attrs.field(converter=_printable)
    record: str = attrs.field(converter=_printable)
    field: str = attrs.field(converter=_printable)
    reason: str = attrs.field(converter=_printable_reason)
    inbox_id: uuid.UUID | None = None
    payload: str | None = attrs.field(default=None, converter=_printable_opt)
    cause: BaseException | None = attrs.field(default=None, repr=False, eq=False)

    def message(self, *, with_payload: bool = True) -> str:
        """``source: payload P: record R: field 'F': reason`` (without ``payload P`` when
        it is unknown or ``with_payload`` is False: the inbox's clear reason column leaves
        the file name out, since the inbox entry is the payload and a file name can name
        the person; it is kept in the encrypted payload)."""
        where = f"payload {self.payload}: " if with_payload and self.payload else ""
        return f"{self.source}: {where}record {self.record}: field {self.field!r}: {self.reason}"


def parsed_item(
    source: str, item: LeadEvent | Rejected | ValidationFailed, inbox_id: uuid.UUID | None
) -> LeadEvent | Quarantined:
    """What the ingest side makes of one item a connector's ``parse`` yielded: the lead
    event itself, or the quarantine entry of a refused record.

    A :class:`~carecrm.core.connectors.Rejected` ``(ref, field, reason)`` becomes
    ``Quarantined(source, ref, field, reason)``, ``source`` being the connector's name.  A
    :class:`ValidationFailed` yielded in its place (the form before :class:`Rejected`) gives
    the same entry from its own source, with a :class:`DeprecationWarning`.  Anything else
    is passed on as a lead event (and refused by :meth:`Ingestor.prepare` if it is not one).

    :param source: the source's name (``connector.name``).
    :param inbox_id: the inbox entry of the payload the item came from, when known.
    """
    if isinstance(item, Rejected):
        return Quarantined(source, item.ref, item.field, item.reason, inbox_id)
    if isinstance(item, ValidationFailed):
        warnings.warn(
            f"source {source!r}: a connector's parse() yielded a ValidationFailed for one record; "
            "yield carecrm.core.Rejected(ref, field, reason) instead (ValidationFailed values are deprecated)",
            DeprecationWarning,
            stacklevel=2,
        )
        return Quarantined(item.source, item.record, item.field, item.reason, inbox_id)
    return item


class _Refused(ValidationFailed):
    """One record of a batch failed while it was matched, mapped or encrypted: the batch's
    unit of work is rolled back and the batch written again without it."""

    def __init__(self, prepared: _Prepared, field: str, reason: str, cause: BaseException) -> None:
        super().__init__(prepared.event.source, prepared.event.record_ref, field, reason)
        self.prepared = prepared
        self.cause = cause


@attrs.define
class _Cursor:
    """Which record (and which step of it) :meth:`Ingestor._write_batch` is working on."""

    record: _Prepared | None = None
    field: str = "record"


@contextmanager
def _refusing(cursor: _Cursor) -> Iterator[None]:
    """Turn an exception raised while ``cursor.record`` is set into :class:`_Refused`
    (storage errors and refusals by rule pass through unchanged)."""
    try:
        yield
    except (StorageError, _Refused):
        raise
    except Exception as exc:
        if cursor.record is None:
            raise
        if isinstance(exc, UnstorableValue | ValidationFailed):
            raise _Refused(cursor.record, exc.field, exc.reason, exc) from exc
        raise _Refused(cursor.record, cursor.field, f"cannot be stored ({type(exc).__name__})", exc) from exc


@attrs.define
class IngestReport:
    """What an ingest run did.

    :ivar payloads: payloads received; ``duplicate_payloads``: identical re-deliveries;
        ``empty_payloads``: payloads with no lead record (a vendor's other event types);
        ``purged_payloads``: processed payloads past the inbox retention, deleted.
    :ivar records: lead events seen; ``accepted``: events that stored something new;
        ``duplicates``: events whose every interaction was stored already.
    :ivar contacts_created, interactions_added: counts of new rows.
    :ivar pending: payloads waiting on a fetch (pointer-only vendors).
    :ivar quarantined: records not accepted, with their reasons.
    :ivar warnings: identities dropped as invalid while the record still went in.
    :ivar dropped_fields: fields the connector dropped for data minimization, by name.
    :ivar review_pairs: pairs sent to review (possible duplicates / household members).
    """

    payloads: int = 0
    duplicate_payloads: int = 0
    empty_payloads: int = 0
    purged_payloads: int = 0
    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    pending: int = 0
    contacts_created: int = 0
    interactions_added: int = 0
    review_pairs: int = 0
    quarantined: list[Quarantined] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)
    dropped_fields: dict[str, int] = attrs.Factory(dict)
    contact_ids: list[uuid.UUID] = attrs.Factory(list)

    def merge(self, other: IngestReport) -> None:
        """Add another report's counts to this one."""
        for f in attrs.fields(IngestReport):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, int):
                setattr(self, f.name, a + b)
            elif isinstance(a, list):
                a.extend(b)
            elif isinstance(a, dict):
                for k, v in b.items():
                    a[k] = a.get(k, 0) + v


@attrs.define
class _Prepared:
    """A lead event with normalized identities, ready to match."""

    event: LeadEvent
    inbox_id: uuid.UUID | None
    identities: list[Identity]
    keys: list[tuple[str, str]]
    first_name: str | None
    last_name: str | None
    confident: bool
    service_interest: str | None = None


class _BatchIdentities:
    """Identity reads that see both the database and this batch's pending writes."""

    def __init__(self, inner: Any, prefetched: dict[tuple[str, str], list[IdentityRecord]]) -> None:
        self._inner = inner
        self._known = prefetched
        self.pending: list[IdentityRecord] = []

    def find_many(self, keys: Iterable[tuple[str, str]]) -> list[IdentityRecord]:
        out: list[IdentityRecord] = []
        missing = []
        for key in keys:
            if key in self._known:
                out.extend(self._known[key])
            else:
                missing.append(key)
        if missing:
            fetched = self._inner.find_many(missing)
            for key in missing:
                self._known[key] = []
            for rec in fetched:
                self._known[(rec.kind, rec.bidx)].append(rec)
                out.append(rec)
        return out

    def find(self, kind: str, bidx: str) -> list[IdentityRecord]:
        return self.find_many([(kind, bidx)])

    def add(self, rec: IdentityRecord) -> None:
        self.pending.append(rec)
        self._known.setdefault((rec.kind, rec.bidx), []).append(rec)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _BatchContacts:
    """Contact reads that see this batch's new and changed contacts."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.cache: dict[uuid.UUID, ContactRecord] = {}
        self.new: dict[uuid.UUID, ContactRecord] = {}
        self.changed: dict[uuid.UUID, ContactRecord] = {}

    def get_many(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ContactRecord]:
        ids = list(ids)
        missing = [i for i in ids if i not in self.cache]
        if missing:
            self.cache.update(self._inner.get_many(missing))
        return {i: self.cache[i] for i in ids if i in self.cache}

    def stage(self, rec: ContactRecord) -> ContactRecord:
        """Record a changed contact: written with the batch (inserted if new, else updated)."""
        self.cache[rec.id] = rec
        if rec.id in self.new:
            self.new[rec.id] = rec
        else:
            self.changed[rec.id] = rec
        return rec

    def get(self, cid: uuid.UUID) -> ContactRecord:
        got = self.get_many([cid])
        if cid not in got:
            found: ContactRecord = self._inner.get(cid)  # raises NotFound
            return found
        return got[cid]

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


class _BatchView:
    """What the matcher hook sees as ``uow``: reads through the batch's buffers."""

    def __init__(self, uow: UnitOfWork, identities: _BatchIdentities, contacts: _BatchContacts) -> None:
        self._uow = uow
        self.identities = identities
        self.contacts = contacts

    def __getattr__(self, name: str) -> Any:
        return getattr(self._uow, name)


class Ingestor:
    """Runs the ingest path of one app for one call (see the module docstring).

    :param app: the facade.
    :param actor: who ingests: named by each batch's ``ingest`` audit entry (HIPAA 45 CFR
        164.312(b)), as the ``actor`` of the interactions stored and of the stage moves
        they imply.
    """

    def __init__(self, app: CareCRM, *, actor: Actor) -> None:
        self.app = app
        self.actor = actor

    # ------------------------------------------------------------------ preparation

    def prepare(self, event: LeadEvent, index: int, report: IngestReport, inbox_id: uuid.UUID | None) -> _Prepared:
        """Normalize a lead event's identities and check its interactions.

        Text is screened first, field by field (:meth:`screen`): a name, id or key that
        cannot be stored refuses the record; optional place fields are dropped with a
        warning; free text, touchpoint values and attributes are cleaned.

        :raises ValidationFailed: when no usable identity remains, an interaction is
            malformed or a refused field holds text that cannot be stored (naming the field).
        """
        app = self.app
        collect = app.settings.collect
        record = printable(event.record_ref, limit=120) or f"#{index}"
        event = self.screen(event, record, report)
        region = (
            event.region
            or app.settings.practice.location(
                event.location if event.location in {loc.name for loc in app.settings.practice.locations} else None
            ).region
        )
        identities: list[Identity] = []
        seen: set[tuple[str, str]] = set()
        for system, ext_id in event.external_ids:
            if ext_id is None or str(ext_id).strip() == "":
                continue
            kind = f"external:{system}"
            value = str(ext_id).strip()
            if (kind, value) not in seen:
                seen.add((kind, value))
                identities.append(Identity(kind=kind, value=value, source=event.source, verified=True))
        if collect.get("email", True):
            for i, raw in enumerate(event.emails):
                if raw is None or str(raw).strip() == "":
                    continue
                try:
                    value = normalize_email(str(raw))
                except IdentityError as exc:
                    report.warnings.append(f"{event.source}: record {record}: field 'email[{i}]': {exc}; dropped")
                    continue
                if ("email", value) not in seen:
                    seen.add(("email", value))
                    identities.append(
                        Identity(kind="email", value=value, display=str(raw).strip(), source=event.source)
                    )
        if collect.get("phone", True):
            for i, raw in enumerate(event.phones):
                if raw is None or str(raw).strip() == "":
                    continue
                try:
                    e164, valid = normalize_phone(str(raw), region)
                except IdentityError as exc:
                    report.warnings.append(f"{event.source}: record {record}: field 'phone[{i}]': {exc}; dropped")
                    continue
                if ("phone", e164) not in seen:
                    seen.add(("phone", e164))
                    identities.append(
                        Identity(
                            kind="phone",
                            value=e164,
                            display=str(raw).strip(),
                            valid=valid,
                            source=event.source,
                        )
                    )
        if not identities:
            raise ValidationFailed(
                event.source,
                record,
                "identity",
                "no usable email, phone or external id; a record needs at least one",
            )
        for j, draft in enumerate(event.interactions):
            if not is_valid_kind_name(draft.kind):
                raise ValidationFailed(event.source, record, f"interactions[{j}].kind", "not a dotted noun.event kind")
            if not draft.idempotency_key:
                raise ValidationFailed(event.source, record, f"interactions[{j}].idempotency_key", "missing")
        first, last = event.first_name, event.last_name
        if not (first or last) and event.full_name:
            first, last = split_full_name(event.full_name)
        if not collect.get("name", True):
            first = last = None
        confident = event.name_confidence != "low" and not is_low_confidence_name(
            " ".join(p for p in (first, last) if p) or None
        )
        mapper = app.mapper
        keys = [(i.kind, mapper.identity_bidx(i.kind, i.value)) for i in identities]
        for name in event.dropped_fields:
            report.dropped_fields[name] = report.dropped_fields.get(name, 0) + 1
        interest = None
        if event.service_interest and collect.get("service_interest", True):
            interest = service_interest_code(event.service_interest, app.settings.practice.service_lines)
            if interest is None:
                report.warnings.append(
                    f"{event.source}: record {record}: field 'service_interest': not a configured service line "
                    "(free text is never stored in clear); dropped"
                )
        return _Prepared(event, inbox_id, identities, keys, first, last, confident, interest)

    def screen(self, event: LeadEvent, record: str, report: IngestReport) -> LeadEvent:
        """The lead event with its text refused or cleaned field by field, so that every
        value that reaches matching, the mapper and the database can be stored (the rules
        are :mod:`carecrm.core.text`'s):

        * **refused**, the record is quarantined naming the field: ``first_name``,
          ``last_name`` and ``full_name`` (tab and line breaks fold to a space; a lone
          surrogate, NUL or other control character refuses: a silently altered name would
          address a patient by a name they never gave), ``source``, ``location``,
          ``external_ids.<system>``, and each interaction's and consent signal's kind,
          idempotency key, channel, direction, location, purpose and status;
        * **dropped with a warning**, the record still goes in: ``postal_code``, ``city``,
          ``region`` and the optional ``street_address`` and ``sex`` (place fields are
          optional; a corrupted one is worth less than the lead), and any attribute or
          consent evidence entry nested deeper than :data:`carecrm.core.text.MAX_DEPTH`;
          emails and phones that cannot be stored are invalid identities, dropped with a
          warning by normalization (:mod:`carecrm.core.identity`) like any invalid address;
        * **cleaned**, each bad character becomes U+FFFD: the inquiry text (``body``),
          touchpoint values, interaction attributes and consent evidence (the patient's
          message and the campaign are kept), where integers wider than 64 bits become
          their decimal text and non-finite numbers null.

        :param record: the record's printable name for messages.
        :returns: ``event`` itself when nothing needed a change, else a cleaned copy.
        :raises ValidationFailed: for a refused field (the reason, never the value).
        """
        source = event.source

        def refuse(field: str, value: Any, *, fold: bool = False) -> Any:
            if not isinstance(value, str):
                return value
            try:
                return checked_text(value, fold_space=fold)
            except InvalidText as exc:
                raise ValidationFailed(source, record, field, exc.reason) from None

        def optional(field: str, value: Any) -> Any:
            if not isinstance(value, str):
                return value
            try:
                return checked_text(value)
            except InvalidText as exc:
                report.warnings.append(f"{printable(source)}: record {record}: field {field!r}: {exc.reason}; dropped")
                return None

        def json_fields(field: str, values: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            changed = False
            for key, value in values.items():
                clean_key = cleaned_text(key) if isinstance(key, str) else key
                try:
                    out[clean_key] = clean = cleaned_json(value, depth=1)
                except InvalidText as exc:
                    name = f"{field}.{printable(str(key), limit=60)}"
                    report.warnings.append(
                        f"{printable(source)}: record {record}: field {name!r}: {exc.reason}; dropped"
                    )
                    changed = True
                    continue
                changed = changed or clean is not value or clean_key is not key
            return out if changed else values

        def touchpoint(tp: Touchpoint | None) -> Touchpoint | None:
            if tp is None:
                return None
            fields = attrs.asdict(tp, recurse=False)
            clean = {k: cleaned_text(v) if isinstance(v, str) else v for k, v in fields.items()}
            return tp if all(clean[k] is fields[k] for k in fields) else Touchpoint(**clean)

        refuse("source", source)
        changes: dict[str, Any] = {}
        for name in ("first_name", "last_name", "full_name"):
            value = getattr(event, name)
            checked = refuse(name, value, fold=True)
            if checked is not value:
                changes[name] = checked
        refuse("location", event.location)
        for system, ext_id in event.external_ids:
            refuse(f"external_ids.{printable(str(system), limit=40)}", system)
            refuse(f"external_ids.{printable(str(system), limit=40)}", ext_id)
        for name in ("postal_code", "city", "region"):
            value = getattr(event, name)
            checked = optional(name, value)
            if checked is not value:
                changes[name] = checked
        if event.extra:
            extra = {k: optional(k, v) if k in ("street_address", "sex") else v for k, v in event.extra.items()}
            if any(extra[k] is not event.extra[k] for k in extra):
                changes["extra"] = {k: v for k, v in extra.items() if v is not None}
        tp = touchpoint(event.touchpoint)
        if tp is not event.touchpoint:
            changes["touchpoint"] = tp
        drafts = []
        for j, draft in enumerate(event.interactions):
            for name in ("kind", "idempotency_key", "channel", "direction", "location"):
                refuse(f"interactions[{j}].{name}", getattr(draft, name))
            body = cleaned_text(draft.body) if isinstance(draft.body, str) else draft.body
            attributes = json_fields(f"interactions[{j}].attributes", draft.attributes)
            draft_tp = touchpoint(draft.touchpoint)
            if body is not draft.body or attributes is not draft.attributes or draft_tp is not draft.touchpoint:
                draft = attrs.evolve(draft, body=body, attributes=attributes, touchpoint=draft_tp)
            drafts.append(draft)
        if any(a is not b for a, b in zip(drafts, event.interactions, strict=True)):
            changes["interactions"] = tuple(drafts)
        signals = []
        for k, sig in enumerate(event.consents):
            for name in ("contact_point_kind", "channel", "purpose", "status", "idempotency_key"):
                refuse(f"consents[{k}].{name}", getattr(sig, name))
            evidence = json_fields(f"consents[{k}].evidence", sig.evidence)
            regime = json_fields(f"consents[{k}].regime", sig.regime)
            if evidence is not sig.evidence or regime is not sig.regime:
                sig = attrs.evolve(sig, evidence=evidence, regime=regime)
            signals.append(sig)
        if any(a is not b for a, b in zip(signals, event.consents, strict=True)):
            changes["consents"] = tuple(signals)
        dropped = tuple(printable(str(name), limit=80) for name in event.dropped_fields)
        if dropped != event.dropped_fields:
            changes["dropped_fields"] = dropped
        return attrs.evolve(event, **changes) if changes else event

    # ------------------------------------------------------------------ batches

    def run(self, items: Sequence[tuple[LeadEvent, uuid.UUID | None]], report: IngestReport) -> list[ev.Event]:
        """Ingest lead events in batches of ``settings.batch_size``; returns the live events
        fired (written to the outbox with each batch, and delivered after its commit)."""
        fired: list[ev.Event] = []
        size = max(1, self.app.settings.batch_size)
        for start in range(0, len(items), size):
            chunk = items[start : start + size]
            prepared: list[_Prepared] = []
            for offset, (event, inbox_id) in enumerate(chunk):
                report.records += 1
                try:
                    prepared.append(self.prepare(event, start + offset, report, inbox_id))
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
                self.app.deliver_events()
            fired.extend(events)
        return fired

    def _write_retrying(self, batch: list[_Prepared], report: IngestReport) -> list[ev.Event]:
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

    def _write_without_poison(self, batch: list[_Prepared], report: IngestReport) -> list[ev.Event]:
        """:meth:`_write_batch`, but a record that fails while it is matched, mapped or
        encrypted is quarantined into ``report`` and the batch written again without it
        (its unit of work was rolled back, so nothing of the bad record stays)."""
        remaining = list(batch)
        while remaining:
            attempt = IngestReport()
            try:
                events = self._write_batch(remaining, attempt)
            except _Refused as exc:
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

    def _write_batch(self, batch: list[_Prepared], report: IngestReport) -> list[ev.Event]:
        app = self.app
        mapper = app.mapper
        now = utcnow()
        pipeline = app.settings.pipeline
        events: list[ev.Event] = []
        cursor = _Cursor()  # which record is being written: its failure refuses only it
        with app.storage.unit_of_work() as uow, _refusing(cursor):
            all_keys = list({k for p in batch for k in p.keys})
            # the blind indexes about to be matched stay locked until the commit: a second
            # process ingesting the same person waits, then matches the contact made here
            # (one contact, never two); taken in one call, before any write
            uow.lock(sorted(f"identity:{kind}:{bidx}" for kind, bidx in all_keys))
            prefetched: dict[tuple[str, str], list[IdentityRecord]] = {k: [] for k in all_keys}
            for ident in uow.identities.find_many(all_keys):
                prefetched.setdefault((ident.kind, ident.bidx), []).append(ident)
            idents = _BatchIdentities(uow.identities, prefetched)
            contacts = _BatchContacts(uow.contacts)
            view = _BatchView(uow, idents, contacts)
            by_source: dict[str, list[str]] = {}
            for p in batch:
                for d in p.event.interactions:
                    by_source.setdefault(p.event.source, []).append(d.idempotency_key)
            existing: dict[str, set[str]] = {
                src: uow.interactions.existing_keys(src, keys) for src, keys in by_source.items()
            }
            new_interactions: list[InteractionRecord] = []
            new_stage: list[StageChangeRecord] = []
            new_consents: list[ConsentRecord] = []
            reviews: list[ReviewRecord] = []
            consent_keys: dict[str, set[str]] = {}
            treated: set[uuid.UUID] = set()  # contacts with a completed treatment pending here

            for p in batch:
                event = p.event
                cursor.record, cursor.field = p, "match"
                result: MatchResult = app.match(
                    MatchCandidate(
                        identity_keys=tuple(p.keys),
                        first_name=p.first_name,
                        last_name=p.last_name,
                        name_confident=p.confident,
                        name_bidx=mapper.name_bidx(p.first_name, p.last_name)[0],
                        source=event.source,
                    ),
                    view,
                )
                fresh = [
                    d for d in event.interactions if d.idempotency_key not in existing.setdefault(event.source, set())
                ]
                cursor.field = "contact"
                if result.contact_id is None:
                    if event.interactions and not fresh:
                        report.duplicates += 1
                        continue
                    key = mapper.new_contact_key()
                    # a lead enters the pipeline at its first touch, not at ingest time
                    since = min([d.occurred_at for d in fresh] + [now])
                    contact = self._new_contact(p, now, since)
                    mapper.remember(contact.id, key)
                    rec = mapper.contact_to_record(contact, key)
                    contacts.new[rec.id] = rec
                    contacts.cache[rec.id] = rec
                    report.contacts_created += 1
                    events.append(ev.ContactCreated(at=now, contact_id=rec.id, source=event.source))
                    new_stage.append(
                        StageChangeRecord(
                            id=new_id(),
                            contact_id=rec.id,
                            pipeline=pipeline.name,
                            from_stage=None,
                            to_stage=rec.stage,
                            changed_at=since,
                            actor=self.actor.name,
                            reason=f"created from {event.source}",
                        )
                    )
                else:
                    rec = contacts.get(result.contact_id)
                    key = mapper.key_of(rec)
                    if not fresh and event.interactions:
                        report.duplicates += 1
                        self._add_missing_identities(p, rec, key, idents)
                        continue
                    rec = self._update_contact(p, rec, key, now, contacts)
                self._add_missing_identities(p, rec, key, idents)
                for other, reason in result.review:
                    a, b = sorted((rec.id, other))
                    reviews.append(ReviewRecord(id=new_id(), contact_a=a, contact_b=b, reason=reason, created_at=now))
                report.accepted += 1
                report.contact_ids.append(rec.id)
                stored_any = False
                cursor.field = "interaction"
                for draft in fresh:
                    if draft.idempotency_key in existing[event.source]:
                        continue
                    existing[event.source].add(draft.idempotency_key)
                    tp = draft.touchpoint if draft.touchpoint is not None else event.touchpoint
                    if not app.settings.collect.get("touchpoint", True):
                        tp = Touchpoint()
                    tp = app.classify_touchpoint(tp)
                    body = draft.body if app.settings.collect.get("inquiry_text", True) else None
                    inter = Interaction(
                        contact_id=rec.id,
                        kind=draft.kind,
                        occurred_at=draft.occurred_at,
                        recorded_at=now,
                        source=event.source,
                        idempotency_key=draft.idempotency_key,
                        channel=draft.channel,
                        direction=draft.direction or ("inbound" if draft.kind in INBOUND_KINDS else None),
                        location=draft.location or event.location or rec.location,
                        touchpoint=tp,
                        attributes=draft.attributes,
                        body=body,
                        actor=self.actor.name,
                        inbox_id=p.inbox_id,
                    )
                    new_interactions.append(mapper.interaction_to_record(inter, key))
                    stored_any = True
                    report.interactions_added += 1
                    events.append(
                        ev.InteractionRecorded(
                            at=now,
                            contact_id=rec.id,
                            interaction_id=inter.id,
                            kind=inter.kind,
                            occurred_at=inter.occurred_at,
                            source=inter.source,
                            channel=inter.channel,
                        )
                    )
                    rec = self._apply_implied(
                        uow, rec, inter, key, now, contacts, treated, new_stage, new_interactions, events
                    )
                cursor.field = "consent"
                if app.settings.collect.get("consent", True):
                    for sig in event.consents:
                        seen = consent_keys.setdefault(event.source, set())
                        if sig.idempotency_key in seen:
                            continue
                        seen.add(sig.idempotency_key)
                        point = self._consent_point(sig.contact_point_kind, sig.contact_point, p)
                        if point is None:
                            report.warnings.append(
                                f"{event.source}: record {event.record_ref}: field 'consent': "
                                f"no {sig.contact_point_kind} to attach it to; dropped"
                            )
                            continue
                        ce = ConsentEvent(
                            contact_id=rec.id,
                            contact_point_kind=sig.contact_point_kind,
                            contact_point=point,
                            channel=sig.channel,
                            purpose=sig.purpose,
                            status=sig.status,
                            occurred_at=sig.occurred_at,
                            recorded_at=now,
                            source=event.source,
                            idempotency_key=sig.idempotency_key,
                            evidence=sig.evidence,
                            regime=sig.regime,
                            expires_at=sig.expires_at,
                        )
                        new_consents.append(mapper.consent_to_record(ce, key))
                        events.append(
                            ev.ConsentChanged(
                                at=now,
                                contact_id=rec.id,
                                channel=ce.channel,
                                purpose=ce.purpose,
                                status=ce.status,
                            )
                        )
                        stored_any = True
                if not stored_any and not event.interactions and result.contact_id is not None:
                    report.duplicates += 1
                    report.accepted -= 1

            cursor.record = None  # from here on a failure is the batch's, not a record's
            # consent idempotency against the database
            if new_consents:
                new_consents = self._drop_stored_consents(uow, new_consents)
            # flush, in an order that never leaves an identity without its contact
            if contacts.new:
                uow.contacts.add_many(list(contacts.new.values()))
            for cid, rec in contacts.changed.items():
                if cid not in contacts.new:
                    uow.contacts.update(rec)
            if idents.pending:
                uow.identities.add_many(idents.pending)
            if new_interactions:
                uow.interactions.add_many(new_interactions)
            if new_stage:
                uow.stages.add_many(new_stage)
            for cr in new_consents:
                uow.consents.add(cr)
            for rv in reviews:
                if uow.reviews.add(rv):
                    report.review_pairs += 1
                    events.append(
                        ev.PossibleDuplicate(at=now, contact_a=rv.contact_a, contact_b=rv.contact_b, reason=rv.reason)
                    )
            app.audit(
                uow,
                self.actor,
                "ingest",
                details={
                    "records": len(batch),
                    "contacts_created": report.contacts_created,
                    "interactions_added": report.interactions_added,
                },
            )
            publish(uow, events)
            uow.commit()
        return events

    # ------------------------------------------------------------------ helpers

    def _new_contact(self, p: _Prepared, now: Any, since: Any) -> Contact:
        app = self.app
        event = p.event
        collect = app.settings.collect
        extra = event.extra
        return Contact(
            created_at=now,
            updated_at=now,
            first_name=p.first_name,
            last_name=p.last_name,
            name_confidence="high" if p.confident else "low",
            postal_code=event.postal_code if collect.get("postal_code", True) else None,
            city=normalize_city(event.city) if collect.get("city", True) else None,
            region=event.region,
            street_address=extra.get("street_address") if collect.get("street_address") else None,
            date_of_birth=extra.get("date_of_birth") if collect.get("date_of_birth") else None,
            sex=extra.get("sex") if collect.get("sex") else None,
            pipeline=app.settings.pipeline.name,
            stage=app.settings.pipeline.initial,
            stage_changed_at=since,
            service_interest=p.service_interest,
            location=event.location or app.settings.practice.default_location.name,
            first_source=event.source,
        )

    def _update_contact(
        self, p: _Prepared, rec: ContactRecord, key: ContactKey, now: Any, contacts: _BatchContacts
    ) -> ContactRecord:
        """Fill what the stored contact lacks; a confident name replaces a low-confidence one,
        caller-ID text never overwrites a known name."""
        event = p.event
        collect = self.app.settings.collect
        changes: dict[str, Any] = {}
        stored = None
        if p.first_name or p.last_name:
            stored = self.app.read_path.contact_for_change(rec, actor=self.actor, purpose="ingest")
            stored_low = rec.name_confidence == "low" or not (stored.first_name or stored.last_name)
            if p.confident and stored_low:
                changes.update(first_name=p.first_name, last_name=p.last_name, name_confidence="high")
            elif p.confident and stored.first_name and not stored.last_name and p.last_name:
                changes.update(last_name=p.last_name)
        if p.service_interest and p.service_interest != rec.service_interest:
            changes["service_interest"] = p.service_interest
        if event.city and collect.get("city", True) and not rec.city:
            changes["city"] = normalize_city(event.city)
        if event.postal_code and collect.get("postal_code", True) and not rec.postal_prefix:
            changes["postal_code"] = event.postal_code
        if event.location and not rec.location:
            changes["location"] = event.location
        if not changes:
            return rec
        contact = stored or self.app.read_path.contact_for_change(rec, actor=self.actor, purpose="ingest")
        contact = attrs.evolve(contact, updated_at=now, **changes)
        new_rec = self.app.mapper.contact_to_record(contact, key)
        new_rec = attrs.evolve(new_rec, version=rec.version)
        return contacts.stage(new_rec)

    def _add_missing_identities(
        self, p: _Prepared, rec: ContactRecord, key: ContactKey, idents: _BatchIdentities
    ) -> None:
        have = {(r.kind, r.bidx) for r in idents.find_many(p.keys) if r.contact_id == rec.id}
        for ident, k in zip(p.identities, p.keys, strict=True):
            if k not in have:
                idents.add(self.app.mapper.identity_to_record(ident, rec.id, key, bidx=k[1]))
                have.add(k)

    def _apply_implied(
        self,
        uow: UnitOfWork,
        rec: ContactRecord,
        inter: Interaction,
        key: ContactKey,
        now: Any,
        contacts: _BatchContacts,
        treated: set[uuid.UUID],
        new_stage: list[StageChangeRecord],
        new_interactions: list[InteractionRecord],
        events: list[ev.Event],
    ) -> ContactRecord:
        """Apply the stage an interaction implies (:func:`carecrm.core.stage_moves.implied_move`)
        to the batch: the history, the ``stage.changed`` timeline entry and the event go
        with the batch's writes; ``treated`` holds the contacts with a completed treatment
        among the batch's pending interactions."""
        if inter.kind in COMPLETED_TREATMENT_KINDS:
            treated.add(rec.id)
        app = self.app
        move = implied_move(
            mapper=app.mapper,
            pipeline=app.settings.pipeline,
            uow=uow,
            rec=rec,
            inter=inter,
            key=key,
            now=now,
            actor=self.actor,
            pending_treatment=rec.id in treated,
        )
        if move is None:
            return rec
        new_stage.append(move.change)
        new_interactions.append(move.entry)
        events.append(move.event)
        return contacts.stage(move.contact)

    def _consent_point(self, kind: str, raw: str | None, p: _Prepared) -> str | None:
        if raw:
            try:
                if kind == "email":
                    return normalize_email(raw)
                region = p.event.region or self.app.settings.practice.default_location.region
                return normalize_phone(raw, region)[0]
            except IdentityError:
                return None
        for ident in p.identities:
            if ident.kind == kind:
                return ident.value
        return None

    @staticmethod
    def _drop_stored_consents(uow: UnitOfWork, records: list[ConsentRecord]) -> list[ConsentRecord]:
        out = []
        for rec in records:
            stored = uow.consents.for_contact_point(rec.contact_point_bidx, channel=rec.channel, purpose=rec.purpose)
            if any(s.source == rec.source and s.idempotency_key == rec.idempotency_key for s in stored):
                continue
            out.append(rec)
        return out


def _safe_reason(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}"


_CODE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def service_interest_code(raw: str, service_lines: Sequence[str]) -> str | None:
    """The service-line code for a raw service interest, or None.

    Service interest is stored in clear for segmenting, so only a code may be kept: one
    of the practice's ``service_lines`` (matched case-insensitively, spaces as ``_``), or,
    when the practice lists none, a short lowercase code (``acne``, ``mohs_surgery``).
    Free text ("I think I have skin cancer") is health information and is never stored in
    clear (HIPAA 45 CFR 164.514(b)): it is dropped with a warning.
    """
    text = raw.strip().casefold().replace(" ", "_")
    if service_lines:
        for line in service_lines:
            if line.casefold().replace(" ", "_") == text:
                return line
        return None
    return text if _CODE.match(text) else None


def is_reason_code(text: str) -> bool:
    """True for a short code such as ``too_expensive`` (kept in clear for reports)."""
    return bool(_CODE.match(text))


