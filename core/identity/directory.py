"""The contact directory: add, look up, read and annotate contacts.

Every look-up goes through blind indexes (:class:`ContactResolver`): an id (whole or
short), an email or a phone number finds a contact without decrypting anyone; every read
decrypts through the one read path, which writes its audit entry (HIPAA 45 CFR
164.312(b)) in the same transaction as the read.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from carecrm.core.config import Settings
from carecrm.core.errors import CareCRMError, NotFound, ValidationFailed
from carecrm.core.events import types as ev
from carecrm.core.events.outbox import Published, publish
from carecrm.core.identity.normalize import IdentityError, normalize_email, normalize_name, normalize_phone
from carecrm.core.ingest import IngestReport
from carecrm.core.model import short_ids
from carecrm.core.model.domain import Actor, Contact, Interaction, LeadEvent, Note
from carecrm.core.model.ids import new_id
from carecrm.core.model.records import ACTIVE, ContactRecord
from carecrm.core.model.short_ids import id_suffix, looks_like_phone
from carecrm.core.model.timeutil import utcnow
from carecrm.core.privacy.crypto import KeyRing
from carecrm.core.privacy.mapping import RecordMapper
from carecrm.core.privacy.read_path import CONTACT_FIELDS, ReadPath
from carecrm.core.storage.contract import StorageBackend, TimelineCursor, UnitOfWork

if TYPE_CHECKING:
    from carecrm.core.privacy.audit import AuditTrail


@attrs.frozen(kw_only=True)
class Timeline:
    """A contact and one page of its interactions, oldest first.

    ``next_cursor`` is the (occurred_at, id) to pass as ``after`` for the next page, or
    None when this page is the last.
    """

    contact: Contact
    interactions: tuple[Interaction, ...]
    next_cursor: TimelineCursor | None = None


class ContactResolver:
    """Finds the stored contact a reference names, through blind indexes only.

    :param settings: the default location's region reads phone numbers without a country code.
    :param mapper: computes the blind indexes.
    """

    def __init__(self, settings: Settings, mapper: RecordMapper) -> None:
        self.settings = settings
        self.mapper = mapper

    def record(self, uow: UnitOfWork, ref: str | uuid.UUID) -> ContactRecord:
        """The stored record of the contact ``ref`` names: a whole id (a merged contact's
        gives its survivor), a short id (:mod:`carecrm.core.model.short_ids`), an email or a
        phone.  Text of decimal digits only is read as a phone number first, then as a
        short id.  Reads no personal data (blind indexes only), so it is not audited.

        :raises NotFound: when nothing matches.
        :raises ValidationFailed: when ``ref`` is neither an id, an email nor a phone.
        :raises CareCRMError: when several contacts share the email or phone.
        """
        if isinstance(ref, uuid.UUID):
            cid: uuid.UUID | None = ref
        else:
            ref = ref.strip()
            try:
                cid = uuid.UUID(ref)
            except ValueError:
                cid = None
        text = str(ref)
        suffix = None if cid is not None or "@" in text else id_suffix(text)
        if suffix is not None and looks_like_phone(suffix):
            try:
                return self.by_identity(uow, text)
            except (NotFound, ValidationFailed):
                pass  # no one has that phone: the digits may be a short id
        if suffix is not None:
            cid = short_ids.resolve(uow, "contact", suffix)
        if cid is not None:
            rec = uow.contacts.get(cid)
            hops = 0
            while rec.status != ACTIVE and rec.merged_into is not None and hops < 8:
                rec, hops = uow.contacts.get(rec.merged_into), hops + 1
            return rec
        return self.by_identity(uow, text)

    def by_identity(self, uow: UnitOfWork, text: str) -> ContactRecord:
        """The one active contact with the email or phone ``text`` (blind indexes only)."""
        kind = "email" if "@" in text else "phone"
        try:
            if kind == "email":
                value = normalize_email(text, allow_test_domains=self.settings.allow_test_domains)
            else:
                value = normalize_phone(text, self.settings.practice.default_location.region)[0]
        except IdentityError:
            raise ValidationFailed(
                "lookup",
                "REF",
                kind,
                "not a contact id, an email address or a phone number (for names use `contacts find --name`)",
            ) from None
        records = uow.contacts.get_many(
            i.contact_id for i in uow.identities.find(kind, self.mapper.identity_bidx(kind, value))
        )
        active = [r for r in records.values() if r.status == ACTIVE]
        if not active:
            raise NotFound(f"no contact has that {kind}")
        if len(active) > 1:
            raise CareCRMError(
                f"several contacts share that {kind} (a household?): use one of their ids: "
                + ", ".join(sorted(str(r.id) for r in active))
            )
        return active[0]

    def resolve_id(self, storage: StorageBackend, kind: str, ref: str | uuid.UUID) -> uuid.UUID:
        """The whole id a command-line id names: a UUID as it is, or a short id (the last
        hex digits, as tables show them; :mod:`carecrm.core.model.short_ids`) resolved among
        the records of ``kind``.  Reads ids only: nothing is decrypted or audited.

        :param kind: ``"contact"`` (active contacts), ``"task"`` or ``"inbox"``.
        :param ref: the id as typed.
        :raises ValueError: if ``ref`` is neither a UUID nor a short id, or ``kind`` is unknown.
        :raises NotFound: if no record of that kind has an id ending so.
        :raises AmbiguousId: if several have (the message lists their ids).
        """
        if isinstance(ref, uuid.UUID):
            return ref
        try:
            return uuid.UUID(ref.strip())
        except ValueError:
            pass
        suffix = id_suffix(ref)
        if suffix is None:
            raise ValueError(
                f"{kind} id: not an id (a UUID, or the last {short_ids.SHORT_LENGTH}+ hex digits tables show)"
            )
        with storage.unit_of_work() as uow:
            return short_ids.resolve(uow, kind, suffix)


class ContactDirectory:
    """Adds, looks up, reads and annotates contacts, with explicit collaborators (built per
    use by the facade: it holds no state of its own).

    :param storage: the backend.
    :param settings: the practice's settings (the default region of phone numbers).
    :param mapper: encrypts notes and interactions, computes blind indexes.
    :param keys: the key ring (name blind indexes).
    :param read_path: decrypts for an actor and a purpose, writing the audit entry.
    :param audit: the audit trail (changes are audited in their own transaction).
    :param resolver: finds a contact by reference.
    :param prepare: ingest's prepare stage (:meth:`carecrm.core.ingest.LeadPreparer.prepare`):
        a hand-made contact is checked like a lead before anything is stored.
    :param ingest: ingest of lead events by an actor.
    :param deliver: delivers the outbox's events after a commit.
    """

    def __init__(
        self,
        *,
        storage: StorageBackend,
        settings: Settings,
        mapper: RecordMapper,
        keys: KeyRing,
        read_path: ReadPath,
        audit: AuditTrail,
        resolver: ContactResolver,
        prepare: Callable[[LeadEvent, int, IngestReport, uuid.UUID | None], Any],
        ingest: Callable[..., IngestReport],
        deliver: Callable[[Sequence[Published | None]], Any],
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.mapper = mapper
        self.keys = keys
        self.read_path = read_path
        self.audit = audit
        self.resolver = resolver
        self._prepare = prepare
        self._ingest = ingest
        self._deliver = deliver

    def add_contact(
        self,
        *,
        actor: Actor,
        first_name: str | None = None,
        last_name: str | None = None,
        emails: Sequence[str] = (),
        phones: Sequence[str] = (),
        service_interest: str | None = None,
        location: str | None = None,
        city: str | None = None,
        postal_code: str | None = None,
    ) -> Contact:
        """Create a contact by hand (a walk-in, a phone call), matched like any lead;
        ``actor`` is named by the ``ingest`` entry and the returned contact's read entry.

        :returns: the stored contact (an existing one when an identity matches).
        :raises ValidationFailed: when no valid email or phone is given (field named).
        """
        ref = f"manual-{new_id()}"
        event = LeadEvent(
            source="manual",
            record_ref=ref,
            emails=tuple(emails),
            phones=tuple(phones),
            first_name=first_name,
            last_name=last_name,
            service_interest=service_interest,
            location=location,
            city=city,
            postal_code=postal_code,
        )
        # check first, so that a refused field leaves nothing half-stored
        check = IngestReport()
        try:
            self._prepare(event, 0, check, None)
        except ValidationFailed as exc:
            raise ValidationFailed("manual", "new contact", exc.field, exc.reason) from None
        if check.warnings:
            # name the field that was refused (an invalid email, a free-text service interest)
            detail = check.warnings[0].split(": field ", 1)[-1]
            field = detail.split("'")[1] if detail.count("'") >= 2 else "input"
            reason = detail.split("': ", 1)[-1].removesuffix("; dropped")
            raise ValidationFailed("manual", "new contact", field, reason)
        report = self._ingest([event], actor=actor)
        if report.quarantined:
            q = report.quarantined[0]
            raise ValidationFailed(q.source, "new contact", q.field, q.reason)
        return self.get_contact(report.contact_ids[0], actor=actor)

    def get_contact(self, contact_id: uuid.UUID, *, actor: Actor, purpose: str = "view") -> Contact:
        """A contact with its identities, decrypted: a read by ``actor`` for ``purpose``,
        one ``contact.read`` audit entry (HIPAA 45 CFR 164.312(b)).

        :raises NotFound: if there is no such contact.
        """
        with self.storage.unit_of_work() as uow:
            rec = uow.contacts.get(contact_id)
            contact = self.read_path.contact(uow, rec, actor=actor, purpose=purpose)
            uow.commit()
        return contact

    def resolve(self, ref: str | uuid.UUID, *, actor: Actor, purpose: str = "view") -> Contact:
        """Find one contact by id, email or phone (via blind indexes; a merged contact's id
        gives its survivor); a read by ``actor``: one ``contact.read`` entry, in the same
        transaction as the look-up.

        :raises NotFound: when nothing matches.
        :raises ValidationFailed: when ``ref`` is neither an id, an email nor a phone number.
        :raises CareCRMError: when the email or phone is shared by several contacts
            (household): the message lists their ids to pick from.
        """
        with self.storage.unit_of_work() as uow:
            rec = self.resolver.record(uow, ref)
            contact = self.read_path.contact(uow, rec, actor=actor, purpose=purpose)
            uow.commit()
        return contact

    def find_contacts(
        self,
        *,
        actor: Actor,
        email: str | None = None,
        phone: str | None = None,
        name: str | None = None,
        limit: int = 50,
    ) -> list[Contact]:
        """Contacts by exact email, phone (any format, read in the default location's
        region) or full / family name (case and accents folded); a read by ``actor``
        with one ``contact.read`` entry (purpose ``lookup``) per contact shown.

        :raises ValidationFailed: if the email or phone cannot be normalized.
        """
        keys: list[tuple[str, str]] = []
        try:
            if email:
                address = normalize_email(email, allow_test_domains=self.settings.allow_test_domains)
                keys.append(("email", self.mapper.identity_bidx("email", address)))
            if phone:
                e164, _ = normalize_phone(phone, self.settings.practice.default_location.region)
                keys.append(("phone", self.mapper.identity_bidx("phone", e164)))
        except IdentityError as exc:
            raise ValidationFailed("search", "query", "email" if email and not keys else "phone", str(exc)) from None
        ids: list[uuid.UUID] = []
        with self.storage.unit_of_work() as uow:
            if keys:
                for ident in uow.identities.find_many(keys):
                    if ident.contact_id not in ids:
                        ids.append(ident.contact_id)
            if name:
                norm = normalize_name(name)
                if norm:
                    recs = uow.contacts.find_by_name(self.keys.blind_index("name", norm))
                    if not recs:
                        recs = uow.contacts.find_by_family_name(self.keys.blind_index("family_name", norm))
                    for r in recs:
                        if r.id not in ids:
                            ids.append(r.id)
            records = uow.contacts.get_many(ids)
            found = (records.get(cid) for cid in ids[:limit])
            shown = [rec for rec in found if rec is not None and rec.status == ACTIVE]
            # one entry per person shown, so `audit log --contact ID` answers who saw them
            out = self.read_path.contacts(uow, shown, actor=actor, purpose="lookup", fields=CONTACT_FIELDS)
            if out:
                uow.commit()
        return out

    def timeline(
        self,
        ref: str | uuid.UUID,
        *,
        actor: Actor,
        after: TimelineCursor | None = None,
        limit: int = 100,
        purpose: str = "care",
    ) -> Timeline:
        """A contact's timeline, oldest first, decrypted: a read by ``actor`` for
        ``purpose`` (one ``timeline.read`` entry for the contact and the page).

        :param ref: contact id, email or phone.
        :param after: keyset cursor of the previous page.
        :param limit: interactions per page.
        :raises NotFound: if the contact does not exist.
        """
        # one unit of work and one audit entry for the whole read (contact and page)
        with self.storage.unit_of_work() as uow:
            rec = self.resolver.record(uow, ref)
            rows = uow.interactions.timeline(rec.id, after=after, limit=limit + 1)
            more = len(rows) > limit
            rows = rows[:limit]
            contact, items = self.read_path.timeline(uow, rec, rows, actor=actor, purpose=purpose)
            uow.commit()
        cursor = (rows[-1].occurred_at, rows[-1].id) if more and rows else None
        return Timeline(contact=contact, interactions=items, next_cursor=cursor)

    def notes(self, contact_id: uuid.UUID, *, actor: Actor) -> list[Note]:
        """A contact's notes, oldest first: a read by ``actor`` (one ``notes.read`` entry
        when there is any note)."""
        with self.storage.unit_of_work() as uow:
            rec = uow.contacts.get(contact_id)
            notes = self.read_path.notes(uow, rec, uow.notes.for_contact(contact_id), actor=actor)
            if notes:
                uow.commit()
        return notes

    def add_note(self, ref: str | uuid.UUID, text: str, *, actor: Actor) -> Note:
        """Add ``actor``'s note (encrypted) and a ``note.added`` interaction; one
        ``note.add`` audit entry in the same transaction (the contact is resolved by
        id or blind index, nothing is decrypted).

        :raises ValueError: if ``text`` is empty.
        :raises NotFound: if the contact does not exist.
        """
        if not text or not text.strip():
            raise ValueError("note text is empty")
        now = utcnow()
        with self.storage.unit_of_work() as uow:
            rec = self.resolver.record(uow, ref)
            note = Note(contact_id=rec.id, created_at=now, author=actor.name, text=text)
            key = self.mapper.key_of(rec)
            uow.notes.add(self.mapper.note_to_record(note, key))
            inter = Interaction(
                contact_id=rec.id,
                kind="note.added",
                occurred_at=now,
                recorded_at=now,
                source="carecrm",
                idempotency_key=f"note.added:{note.id}",
                channel=None,
                body=text,
                actor=actor.name,
                attributes={"note_id": str(note.id)},
            )
            uow.interactions.add(self.mapper.interaction_to_record(inter, key))
            self.audit.append(uow, actor, "note.add", contact_id=rec.id, fields=["note"])
            published = publish(
                uow,
                [
                    ev.InteractionRecorded(
                        at=now,
                        contact_id=rec.id,
                        interaction_id=inter.id,
                        kind=inter.kind,
                        occurred_at=now,
                        source="carecrm",
                    )
                ],
            )
            uow.commit()
        self._deliver([published])
        return note
