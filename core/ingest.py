"""The ingest path: normalize, match, encrypt and store lead events in batches.

For every batch: identities are normalized (emails, E.164 phones), the batch's blind
indexes are looked up in one query, each event is matched through
``carecrm_match_contact`` (the built-in exact matcher last), contacts, identities,
interactions, consent events and stage moves are buffered and written through one unit
of work, and live events fire after the commit.  A record that cannot be accepted is
quarantined with a reason naming source, record and field while the rest of the batch
goes in; if the batch's write fails, its records are retried one by one so only the bad
one is quarantined.  Re-ingesting the same event changes nothing (idempotency keys).
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from carecrm.core import events as ev
from carecrm.core.errors import CareCRMError, ValidationFailed
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
from carecrm.core.pipeline import implied_stage
from carecrm.core.records import (
    ConsentRecord,
    ContactRecord,
    IdentityRecord,
    InteractionRecord,
    ReviewRecord,
    StageChangeRecord,
)
from carecrm.core.timeutil import utcnow
from carecrm.core.vocab import INBOUND_KINDS, is_valid_kind_name

if TYPE_CHECKING:
    from carecrm.core.app import CareCRM
    from carecrm.core.storage import UnitOfWork

log = logging.getLogger("carecrm.ingest")


@attrs.define
class Quarantined:
    """A record that was not accepted: where it came from and why (no personal data)."""

    source: str
    record: str
    field: str
    reason: str
    inbox_id: uuid.UUID | None = None

    def message(self) -> str:
        """``source: record R: field 'F': reason``."""
        return f"{self.source}: record {self.record}: field {self.field!r}: {self.reason}"


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

        :raises ValidationFailed: when no usable identity remains or an interaction is
            malformed (naming the field).
        """
        app = self.app
        collect = app.settings.collect
        record = event.record_ref or f"#{index}"
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

    # ------------------------------------------------------------------ batches

    def run(self, items: Sequence[tuple[LeadEvent, uuid.UUID | None]], report: IngestReport) -> list[ev.Event]:
        """Ingest lead events in batches of ``settings.batch_size``; returns the live events
        fired (already dispatched)."""
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
            if not prepared:
                continue
            try:
                batch_report = IngestReport()
                events = self._write_batch(prepared, batch_report)
                report.merge(batch_report)
            except CareCRMError as exc:
                log.warning(
                    "batch write failed (%s); retrying its %d records one by one",
                    type(exc).__name__,
                    len(prepared),
                )
                events = []
                for prep in prepared:
                    single = IngestReport()
                    try:
                        events.extend(self._write_batch([prep], single))
                        report.merge(single)
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
            self.app.dispatch(events)
            fired.extend(events)
        return fired

    def _write_batch(self, batch: list[_Prepared], report: IngestReport) -> list[ev.Event]:
        app = self.app
        mapper = app.mapper
        now = utcnow()
        pipeline = app.settings.pipeline
        events: list[ev.Event] = []
        with app.storage.unit_of_work() as uow:
            all_keys = list({k for p in batch for k in p.keys})
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

            for p in batch:
                event = p.event
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
                    rec = self._apply_implied(uow, rec, inter, now, contacts, new_stage, events)
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
        now: Any,
        contacts: _BatchContacts,
        new_stage: list[StageChangeRecord],
        events: list[ev.Event],
    ) -> ContactRecord:
        """Apply the stage an interaction implies (see :func:`implied_move`) to the batch."""
        move = implied_move(self.app, uow, rec, inter, now, actor=self.actor)
        if move is None:
            return rec
        new_stage.append(move[0])
        events.append(move[1])
        new_rec = attrs.evolve(rec, stage=move[0].to_stage, stage_changed_at=inter.occurred_at, updated_at=now)
        return contacts.stage(new_rec)

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


def implied_move(
    app: CareCRM, uow: Any, rec: ContactRecord, inter: Interaction, now: datetime, *, actor: Actor
) -> tuple[StageChangeRecord, ev.StageChanged] | None:
    """The stage change an interaction implies for a contact, or None; ``actor`` (who
    recorded the interaction) is named by the stage history and the event.

    Rules (decisions.md, "Moves implied by interactions"): only a move the pipeline allows
    and that goes forward, and never over a person's later move (a person's own move always
    wins: an interaction older than the current stage's start does not move it).  Returns the
    record to store and the live event to fire; the caller writes them.
    """
    pipeline = app.settings.pipeline
    completed = False
    if rec.stage in ("booked_patient", "returning_patient") and (
        inter.kind == "treatment.accepted"
        or (inter.kind == "appointment.booked" and inter.attributes.get("appointment_type") == "treatment")
    ):
        completed = bool(uow.interactions.timeline(rec.id, kinds=["treatment.performed"], limit=1))
    target = implied_stage(inter.kind, inter.attributes, had_completed_treatment=completed)
    if target is None or target == rec.stage:
        return None
    if target not in pipeline.allowed_next(rec.stage) or not pipeline.is_forward(rec.stage, target):
        return None
    if rec.stage_changed_at is not None and inter.occurred_at < rec.stage_changed_at and rec.stage != pipeline.initial:
        return None
    change = StageChangeRecord(
        id=new_id(),
        contact_id=rec.id,
        pipeline=pipeline.name,
        from_stage=rec.stage,
        to_stage=target,
        changed_at=inter.occurred_at,
        actor=actor.name,
        reason=f"implied by {inter.kind}",
        implied_by=inter.id,
    )
    event = ev.StageChanged(
        at=now,
        contact_id=rec.id,
        pipeline=pipeline.name,
        from_stage=rec.stage,
        to_stage=target,
        actor=actor.name,
        implied_by=inter.id,
    )
    return change, event
