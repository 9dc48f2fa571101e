"""The plan stage of ingest: match a batch of prepared leads and plan every write.

:meth:`BatchPlanner.plan` reads what it must (the batch's blind indexes in one query, the
idempotency keys already stored, the contacts matched) inside the batch's unit of work and
returns a :class:`BatchPlan`: a typed value holding every record the batch will write
and every live event it raises, nothing written yet.  Planning sees its own pending
writes: the matcher's view of identities and contacts (:class:`BatchView`) includes the
contacts and identities planned earlier in the batch, so two leads of one new person in
one batch make one contact; implied stage moves count a completed treatment planned
earlier in the batch.  A record that fails while it is planned is refused alone
(:class:`Refused`, through :func:`refusing`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from carecrm.core.config import Settings
from carecrm.core.errors import StorageError, UnstorableValue, ValidationFailed
from carecrm.core.events import types as ev
from carecrm.core.identity.matching import MatchCandidate, MatchResult
from carecrm.core.identity.normalize import IdentityError, normalize_city, normalize_email, normalize_phone
from carecrm.core.ingest.prepare import PreparedLead
from carecrm.core.ingest.report import IngestReport
from carecrm.core.model.domain import Actor, ConsentEvent, Contact, Interaction, Touchpoint
from carecrm.core.model.ids import new_id
from carecrm.core.model.records import (
    ConsentRecord,
    ContactRecord,
    IdentityRecord,
    InteractionRecord,
    ReviewRecord,
    StageChangeRecord,
)
from carecrm.core.model.vocab import INBOUND_KINDS
from carecrm.core.pipeline.moves import COMPLETED_TREATMENT_KINDS, implied_move
from carecrm.core.privacy.mapping import ContactKey, RecordMapper

if TYPE_CHECKING:
    from carecrm.core.privacy.read_path import ReadPath
    from carecrm.core.storage.contract import UnitOfWork


class Refused(ValidationFailed):
    """One record of a batch failed while it was matched, mapped or encrypted: the batch's
    unit of work is rolled back and the batch written again without it."""

    def __init__(self, prepared: PreparedLead, field: str, reason: str, cause: BaseException) -> None:
        super().__init__(prepared.event.source, prepared.event.record_ref, field, reason)
        self.prepared = prepared
        self.cause = cause


@attrs.define
class Cursor:
    """Which record (and which step of it) :meth:`BatchPlanner.plan` is working on."""

    record: PreparedLead | None = None
    field: str = "record"


@contextmanager
def refusing(cursor: Cursor) -> Iterator[None]:
    """Turn an exception raised while ``cursor.record`` is set into :class:`Refused`
    (storage errors and refusals by rule pass through unchanged)."""
    try:
        yield
    except (StorageError, Refused):
        raise
    except Exception as exc:
        if cursor.record is None:
            raise
        if isinstance(exc, UnstorableValue | ValidationFailed):
            raise Refused(cursor.record, exc.field, exc.reason, exc) from exc
        raise Refused(cursor.record, cursor.field, f"cannot be stored ({type(exc).__name__})", exc) from exc


class BatchIdentities:
    """Identity reads that see both the database and the batch's pending identities.

    :param inner: the unit of work's identity repository.
    :param prefetched: the identities of the batch's blind indexes, read in one query.
    """

    def __init__(self, inner: Any, prefetched: dict[tuple[str, str], list[IdentityRecord]]) -> None:
        self._inner = inner
        self._known = prefetched
        self.pending: list[IdentityRecord] = []

    def find_many(self, keys: Iterable[tuple[str, str]]) -> list[IdentityRecord]:
        """Identities of any of the (kind, bidx) keys, stored or pending (one query for the
        keys not read yet)."""
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
        """Identities of ``kind`` with this blind index, stored or pending."""
        return self.find_many([(kind, bidx)])

    def for_contact(self, contact_id: uuid.UUID) -> list[IdentityRecord]:
        """A contact's identities: the stored ones, then those pending in the batch."""
        stored: list[IdentityRecord] = self._inner.for_contact(contact_id)
        return stored + [r for r in self.pending if r.contact_id == contact_id]

    def add(self, rec: IdentityRecord) -> None:
        """Plan an identity: written with the batch, seen by later reads at once."""
        self.pending.append(rec)
        self._known.setdefault((rec.kind, rec.bidx), []).append(rec)


class BatchContacts:
    """Contact reads that see the batch's new and changed contacts.

    :param inner: the unit of work's contact repository.
    """

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.cache: dict[uuid.UUID, ContactRecord] = {}
        self.new: dict[uuid.UUID, ContactRecord] = {}
        self.changed: dict[uuid.UUID, ContactRecord] = {}

    def get_many(self, ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ContactRecord]:
        """The contacts among ``ids`` at their planned state (read once, then cached)."""
        ids = list(ids)
        missing = [i for i in ids if i not in self.cache]
        if missing:
            self.cache.update(self._inner.get_many(missing))
        return {i: self.cache[i] for i in ids if i in self.cache}

    def get(self, cid: uuid.UUID) -> ContactRecord:
        """The contact at its planned state.  :raises NotFound: if there is none."""
        got = self.get_many([cid])
        if cid not in got:
            found: ContactRecord = self._inner.get(cid)  # raises NotFound
            return found
        return got[cid]

    def find_by_name(self, name_bidx: str) -> list[ContactRecord]:
        """Active contacts with this full-name blind index: stored, then new in the batch."""
        return self._with_new(self._inner.find_by_name(name_bidx), "name_bidx", name_bidx)

    def find_by_family_name(self, family_name_bidx: str) -> list[ContactRecord]:
        """Active contacts with this family-name blind index: stored, then new in the batch."""
        return self._with_new(self._inner.find_by_family_name(family_name_bidx), "family_name_bidx", family_name_bidx)

    def _with_new(self, stored: list[ContactRecord], field: str, value: str) -> list[ContactRecord]:
        seen = {r.id for r in stored}
        planned = [self.cache.get(r.id, r) for r in stored]
        return planned + [r for r in self.new.values() if getattr(r, field) == value and r.id not in seen]

    def stage(self, rec: ContactRecord) -> ContactRecord:
        """Plan a changed contact: written with the batch (inserted if new, else updated)."""
        self.cache[rec.id] = rec
        if rec.id in self.new:
            self.new[rec.id] = rec
        else:
            self.changed[rec.id] = rec
        return rec


class BatchView:
    """What the matching hook sees as ``uow`` while a batch is planned: ``identities`` and
    ``contacts`` read through the batch's pending writes (:class:`BatchIdentities`,
    :class:`BatchContacts`); every other repository is the unit of work's own (the batch
    plans no writes to them before it is written)."""

    def __init__(self, uow: UnitOfWork, identities: BatchIdentities, contacts: BatchContacts) -> None:
        self._uow = uow
        self.identities = identities
        self.contacts = contacts

    @property
    def interactions(self) -> Any:
        """The unit of work's interactions (the batch's new ones are not visible yet)."""
        return self._uow.interactions

    @property
    def stages(self) -> Any:
        """The unit of work's stage history."""
        return self._uow.stages

    @property
    def consents(self) -> Any:
        """The unit of work's consent events."""
        return self._uow.consents

    @property
    def reviews(self) -> Any:
        """The unit of work's review pairs."""
        return self._uow.reviews


@attrs.frozen(kw_only=True)
class BatchPlan:
    """Every write one batch will make, planned: the value :meth:`BatchPlanner.plan`
    returns and :func:`write_plan` writes.

    :ivar new_contacts: contacts to insert (at their planned state), by id.
    :ivar changed_contacts: stored contacts to update (each at the version it was read at).
    :ivar identities: identities to insert.
    :ivar interactions: interactions to insert, the ``stage.changed`` entries of implied
        moves among them.
    :ivar stage_changes: stage-history entries (a new contact's first stage, implied moves).
    :ivar consents: consent events not stored yet.
    :ivar reviews: possible-duplicate pairs to send to review (``contact_a`` < ``contact_b``).
    :ivar events: the live events the writes raise, in order (the reviews' are added by
        :func:`write_plan`, for the pairs that were new).
    :ivar records: how many prepared leads the plan covers.
    """

    new_contacts: dict[uuid.UUID, ContactRecord]
    changed_contacts: dict[uuid.UUID, ContactRecord]
    identities: list[IdentityRecord]
    interactions: list[InteractionRecord]
    stage_changes: list[StageChangeRecord]
    consents: list[ConsentRecord]
    reviews: list[ReviewRecord]
    events: list[ev.Event]
    records: int


def write_plan(uow: UnitOfWork, plan: BatchPlan, report: IngestReport, now: datetime) -> list[ev.Event]:
    """The write stage: store ``plan`` in ``uow`` in an order that never leaves an identity
    without its contact (contacts, identities, interactions, stage history, consents,
    reviews); returns the plan's events plus a ``PossibleDuplicate`` for each review pair
    that was new (counted in ``report.review_pairs``).  Nothing is committed here.

    :raises StorageError: as the repositories raise it (the batch's, not a record's).
    """
    events = list(plan.events)
    if plan.new_contacts:
        uow.contacts.add_many(list(plan.new_contacts.values()))
    for rec in plan.changed_contacts.values():
        uow.contacts.update(rec)
    if plan.identities:
        uow.identities.add_many(plan.identities)
    if plan.interactions:
        uow.interactions.add_many(plan.interactions)
    if plan.stage_changes:
        uow.stages.add_many(plan.stage_changes)
    for cr in plan.consents:
        uow.consents.add(cr)
    for rv in plan.reviews:
        if uow.reviews.add(rv):
            report.review_pairs += 1
            pair = ev.PossibleDuplicate(at=now, contact_a=rv.contact_a, contact_b=rv.contact_b, reason=rv.reason)
            events.append(pair)
    return events


class BatchPlanner:
    """Plans batches for one ingest call, with explicit collaborators.

    :param settings: the practice's settings (``collect``, pipeline, locations).
    :param mapper: encrypts records and computes blind indexes.
    :param read_path: decrypts a matched contact when a lead may fill its name (audited
        with purpose ``ingest``).
    :param match: the matching hook (``carecrm_match_contact``, the exact matcher last).
    :param classify: a touchpoint's channel group (memoized by the app).
    :param actor: who ingests: named by the interactions and stage moves planned.
    """

    def __init__(
        self,
        *,
        settings: Settings,
        mapper: RecordMapper,
        read_path: ReadPath,
        match: Callable[[MatchCandidate, Any], MatchResult],
        classify: Callable[[Touchpoint], Touchpoint],
        actor: Actor,
    ) -> None:
        self.settings = settings
        self.mapper = mapper
        self.read_path = read_path
        self.match = match
        self.classify = classify
        self.actor = actor

    def plan(
        self, uow: UnitOfWork, batch: list[PreparedLead], report: IngestReport, cursor: Cursor, now: datetime
    ) -> BatchPlan:
        """Match ``batch`` and plan its writes (see the module docstring); the counts of the
        plan (contacts created, interactions added, duplicates, warnings) go into
        ``report``.  ``cursor`` names the record being planned, so that its failure refuses
        only it (run this inside :func:`refusing`).

        The blind indexes about to be matched are locked in ``uow`` first (until its
        commit): a second process ingesting the same person waits, then matches the
        contact planned here (one contact, never two).
        """
        mapper = self.mapper
        pipeline = self.settings.pipeline
        events: list[ev.Event] = []
        all_keys = list({k for p in batch for k in p.keys})
        # the blind indexes about to be matched stay locked until the commit: a second
        # process ingesting the same person waits, then matches the contact made here
        # (one contact, never two); taken in one call, before any write
        uow.lock(sorted(f"identity:{kind}:{bidx}" for kind, bidx in all_keys))
        prefetched: dict[tuple[str, str], list[IdentityRecord]] = {k: [] for k in all_keys}
        for ident in uow.identities.find_many(all_keys):
            prefetched.setdefault((ident.kind, ident.bidx), []).append(ident)
        idents = BatchIdentities(uow.identities, prefetched)
        contacts = BatchContacts(uow.contacts)
        view = BatchView(uow, idents, contacts)
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
            result: MatchResult = self.match(
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
            fresh = [d for d in event.interactions if d.idempotency_key not in existing.setdefault(event.source, set())]
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
                if not self.settings.collect.get("touchpoint", True):
                    tp = Touchpoint()
                tp = self.classify(tp)
                body = draft.body if self.settings.collect.get("inquiry_text", True) else None
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
            if self.settings.collect.get("consent", True):
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
        return BatchPlan(
            new_contacts=dict(contacts.new),
            changed_contacts={cid: rec for cid, rec in contacts.changed.items() if cid not in contacts.new},
            identities=list(idents.pending),
            interactions=new_interactions,
            stage_changes=new_stage,
            consents=new_consents,
            reviews=reviews,
            events=events,
            records=len(batch),
        )

    # ------------------------------------------------------------------ helpers

    def _new_contact(self, p: PreparedLead, now: Any, since: Any) -> Contact:
        settings = self.settings
        event = p.event
        collect = settings.collect
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
            pipeline=settings.pipeline.name,
            stage=settings.pipeline.initial,
            stage_changed_at=since,
            service_interest=p.service_interest,
            location=event.location or settings.practice.default_location.name,
            first_source=event.source,
        )

    def _update_contact(
        self, p: PreparedLead, rec: ContactRecord, key: ContactKey, now: Any, contacts: BatchContacts
    ) -> ContactRecord:
        """Fill what the stored contact lacks; a confident name replaces a low-confidence one,
        caller-ID text never overwrites a known name."""
        event = p.event
        collect = self.settings.collect
        changes: dict[str, Any] = {}
        stored = None
        if p.first_name or p.last_name:
            stored = self.read_path.contact_for_change(rec, actor=self.actor, purpose="ingest")
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
        contact = stored or self.read_path.contact_for_change(rec, actor=self.actor, purpose="ingest")
        contact = attrs.evolve(contact, updated_at=now, **changes)
        new_rec = self.mapper.contact_to_record(contact, key)
        new_rec = attrs.evolve(new_rec, version=rec.version)
        return contacts.stage(new_rec)

    def _add_missing_identities(
        self, p: PreparedLead, rec: ContactRecord, key: ContactKey, idents: BatchIdentities
    ) -> None:
        have = {(r.kind, r.bidx) for r in idents.find_many(p.keys) if r.contact_id == rec.id}
        for ident, k in zip(p.identities, p.keys, strict=True):
            if k not in have:
                idents.add(self.mapper.identity_to_record(ident, rec.id, key, bidx=k[1]))
                have.add(k)

    def _apply_implied(
        self,
        uow: UnitOfWork,
        rec: ContactRecord,
        inter: Interaction,
        key: ContactKey,
        now: Any,
        contacts: BatchContacts,
        treated: set[uuid.UUID],
        new_stage: list[StageChangeRecord],
        new_interactions: list[InteractionRecord],
        events: list[ev.Event],
    ) -> ContactRecord:
        """Apply the stage an interaction implies (:func:`carecrm.core.pipeline.moves.implied_move`)
        to the batch: the history, the ``stage.changed`` timeline entry and the event go
        with the batch's writes; ``treated`` holds the contacts with a completed treatment
        among the batch's pending interactions."""
        if inter.kind in COMPLETED_TREATMENT_KINDS:
            treated.add(rec.id)
        move = implied_move(
            mapper=self.mapper,
            pipeline=self.settings.pipeline,
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

    def _consent_point(self, kind: str, raw: str | None, p: PreparedLead) -> str | None:
        if raw:
            try:
                if kind == "email":
                    return normalize_email(raw, allow_test_domains=self.settings.allow_test_domains)
                region = p.event.region or self.settings.practice.default_location.region
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
