"""The one read path for personal data.

Every decryption of stored personal data in the core goes through :class:`ReadPath`:
given who reads (an :class:`~carecrm.core.model.domain.Actor`), why (the purpose) and which
fields, it decrypts the stored records (:class:`~carecrm.core.privacy.mapping.RecordMapper`),
writes the audit entry in the caller's unit of work (HIPAA 45 CFR 164.312(b), audit
controls: one entry per contact shown, in the same transaction as the read or the
change), and returns the domain objects.  No other core module calls the mapper's
decrypting functions (``*_from_record``, ``inbox_payload``, ``consent_evidence``); a test
checks the call graph.

:meth:`ReadPath.fields_for` is where role rules will decide which fields an actor may
see for a purpose (HIPAA 45 CFR 164.502(b), minimum necessary); today every field asked
for is granted.

Two kinds of access:

* **reads** (``contact``, ``contacts``, ``timeline``, ``notes``, ``tasks``,
  ``inbox_payload``): decrypted for a person to see, each with its own audit entry;
* **access inside a change** (``*_for_change``, ``payload_for_processing``): decrypted
  while writing (ingest filling in a stored contact's missing name, a completed task
  returned to the person completing it, a stored payload processed again); the change's
  own audit entry records the access, so these write none.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

from carecrm.core.model.domain import Actor, Contact, Interaction, Note, RawPayload, StageChange, Task

if TYPE_CHECKING:
    from carecrm.core.model.records import (
        ContactRecord,
        InboxRecord,
        InteractionRecord,
        NoteRecord,
        StageChangeRecord,
        TaskRecord,
    )
    from carecrm.core.privacy.mapping import RecordMapper
    from carecrm.core.storage.contract import UnitOfWork

#: The fields of a contact look-up: the name (and other personal fields) and identities.
CONTACT_FIELDS: tuple[str, ...] = ("name", "identities")
#: The fields of a timeline read.
TIMELINE_FIELDS: tuple[str, ...] = ("name", "identities", "interactions", "body")


class AuditWriter(Protocol):
    """Appends one audit entry in ``uow`` (``CareCRM.audit``): who (``actor``), what
    (``action``), about whom (``contact_id``), why (``purpose``) and which fields (names
    and counts only, never values)."""

    def __call__(
        self,
        uow: UnitOfWork,
        actor: Actor,
        action: str,
        *,
        contact_id: uuid.UUID | None = None,
        purpose: str | None = None,
        fields: Sequence[str] = (),
        details: dict[str, Any] | None = None,
    ) -> None: ...


class ReadPath:
    """Decrypts stored records for an actor and a purpose and audits the read.

    Holds no per-call state, so one instance serves concurrent callers.

    :param mapper: the encryption boundary.
    :param audit: the audit writer (``CareCRM.audit``).
    """

    def __init__(self, mapper: RecordMapper, audit: AuditWriter) -> None:
        self._mapper = mapper
        self._audit = audit

    # ------------------------------------------------------------------ the rule

    def fields_for(self, actor: Actor, purpose: str, fields: Sequence[str]) -> tuple[str, ...]:
        """The fields ``actor`` may read for ``purpose`` out of ``fields``.

        The one place where role allow-lists will apply the minimum-necessary standard
        (HIPAA 45 CFR 164.502(b)); until roles are enforced, every field asked for.
        """
        return tuple(fields)

    def _contact(self, uow: UnitOfWork | None, record: ContactRecord, allowed: Sequence[str]) -> Contact:
        identities = uow.identities.for_contact(record.id) if uow is not None and "identities" in allowed else None
        return self._mapper.contact_from_record(record, identities)

    # ------------------------------------------------------------------ reads

    def contact(
        self,
        uow: UnitOfWork,
        record: ContactRecord,
        *,
        actor: Actor,
        purpose: str,
        fields: Sequence[str] = CONTACT_FIELDS,
        action: str = "contact.read",
    ) -> Contact:
        """One contact, decrypted (its identities loaded when ``identities`` is among the
        fields), with one audit entry ``action`` in ``uow`` (the caller commits).

        :raises CryptoError: if the keys cannot open the record.
        """
        return self.contacts(uow, [record], actor=actor, purpose=purpose, fields=fields, action=action)[0]

    def contacts(
        self,
        uow: UnitOfWork,
        records: Iterable[ContactRecord],
        *,
        actor: Actor,
        purpose: str,
        fields: Sequence[str] = CONTACT_FIELDS,
        action: str = "contact.read",
    ) -> list[Contact]:
        """Contacts, decrypted, in the order given, with one audit entry per contact
        shown (so ``audit log --contact ID`` answers who saw whom).  Raises as :meth:`contact`."""
        allowed = self.fields_for(actor, purpose, fields)
        out = [self._contact(uow, rec, allowed) for rec in records]
        for contact in out:
            self._audit(uow, actor, action, contact_id=contact.id, purpose=purpose, fields=list(allowed))
        return out

    def timeline(
        self,
        uow: UnitOfWork,
        record: ContactRecord,
        rows: Sequence[InteractionRecord],
        *,
        actor: Actor,
        purpose: str,
        fields: Sequence[str] = TIMELINE_FIELDS,
    ) -> tuple[Contact, tuple[Interaction, ...]]:
        """A contact and a page of its interactions, decrypted (bodies of an erased
        contact come back None), with one ``timeline.read`` entry for the whole page."""
        allowed = self.fields_for(actor, purpose, fields)
        key = self._mapper.key_of(record) if record.wrapped_key is not None else None
        contact = self._contact(uow, record, allowed)
        items = tuple(self._mapper.interaction_from_record(r, key if "body" in allowed else None) for r in rows)
        self._audit(
            uow,
            actor,
            "timeline.read",
            contact_id=record.id,
            purpose=purpose,
            fields=list(allowed),
            details={"interactions": len(items)},
        )
        return contact, items

    def notes(
        self,
        uow: UnitOfWork,
        record: ContactRecord,
        notes: Sequence[NoteRecord],
        *,
        actor: Actor,
        purpose: str = "care",
    ) -> list[Note]:
        """A contact's notes, decrypted ("" for an erased contact), with one
        ``notes.read`` entry when there is any note."""
        allowed = self.fields_for(actor, purpose, ("note",))
        key = self._mapper.key_of(record) if record.wrapped_key is not None and "note" in allowed else None
        out = [self._mapper.note_from_record(n, key) for n in notes]
        if out:
            self._audit(uow, actor, "notes.read", contact_id=record.id, purpose=purpose, fields=list(allowed))
        return out

    def tasks(
        self,
        uow: UnitOfWork,
        tasks: Sequence[TaskRecord],
        people: Mapping[uuid.UUID, ContactRecord],
        *,
        actor: Actor,
        purpose: str = "care",
    ) -> list[tuple[Task, Contact | None]]:
        """Tasks with their contacts (names decrypted, identities not loaded; None for a
        contact that is gone), with one ``tasks.read`` entry per contact shown."""
        allowed = self.fields_for(actor, purpose, ("task", "name"))
        out: list[tuple[Task, Contact | None]] = []
        shown: dict[uuid.UUID, None] = {}
        for rec in tasks:
            crec = people.get(rec.contact_id)
            key = self._mapper.key_of(crec) if crec is not None and crec.wrapped_key is not None else None
            task = self._mapper.task_from_record(rec, key if "task" in allowed else None)
            out.append((task, self._contact(None, crec, allowed) if crec is not None else None))
            shown[rec.contact_id] = None
        for cid in shown:
            self._audit(uow, actor, "tasks.read", contact_id=cid, purpose=purpose, fields=list(allowed))
        return out

    def inbox_payload(
        self, uow: UnitOfWork, record: InboxRecord, *, actor: Actor, purpose: str = "operations"
    ) -> RawPayload:
        """A stored raw payload, decrypted, with an ``inbox.read`` entry (raw payloads
        hold personal data of a contact not yet known).

        :raises CryptoError: if the keys cannot open it.
        """
        allowed = self.fields_for(actor, purpose, ("payload",))
        payload = self._mapper.inbox_payload(record)
        self._audit(
            uow, actor, "inbox.read", purpose=purpose, fields=list(allowed), details={"inbox_id": str(record.id)}
        )
        return payload

    @staticmethod
    def stage_history(records: Iterable[StageChangeRecord]) -> list[StageChange]:
        """Stage changes (clear fields only: nothing is decrypted, nothing audited)."""
        from carecrm.core.privacy.mapping import RecordMapper

        return [RecordMapper.stage_change_from_record(r) for r in records]

    # ------------------------------------------------------------------ access inside a change

    def contact_for_change(
        self, record: ContactRecord, *, actor: Actor, purpose: str, fields: Sequence[str] = ("name",)
    ) -> Contact:
        """A stored contact decrypted while ``actor`` changes it (identities not loaded);
        the change's own audit entry records the access, so none is written here."""
        return self._contact(None, record, self.fields_for(actor, purpose, fields))

    def task_for_change(self, record: TaskRecord, contact: ContactRecord, *, actor: Actor) -> Task:
        """A task decrypted for the person changing it (``task.complete`` records it)."""
        key = self._mapper.key_of(contact) if contact.wrapped_key is not None else None
        return self._mapper.task_from_record(record, key)

    def payload_for_processing(self, record: InboxRecord, *, actor: Actor) -> RawPayload:
        """A stored payload decrypted to be processed again (the ``ingest`` entry of the
        run records it).  :raises CryptoError: if the keys cannot open it."""
        return self._mapper.inbox_payload(record)
