"""Coordinator work (:class:`CoordinationService`): tasks, assignment and logged calls.

* **Tasks** (:meth:`CoordinationService.add_task`, :meth:`~CoordinationService.tasks`,
  :meth:`~CoordinationService.complete_task`): a to-do about a contact with a due time (UTC)
  and an assignee (a staff name, clear); its text is encrypted under the contact's data key.
  Adding and completing one also appends ``task.created`` / ``task.completed`` to the
  contact's timeline, so the next coordinator sees it where the conversation is.
* **Assignment** (:meth:`~CoordinationService.assign`): the contact's clear ``owner`` (a staff
  name), changed with an optimistic-concurrency update.  It is recorded in the audit log
  (action ``contact.assign`` with the previous and new owner) and **not** on the timeline:
  the timeline holds what happened between the person and the practice, and an internal
  hand-over is neither (no such kind exists in the vocabulary, ``docs/vocabulary.md``).
* **Logged interactions** (:meth:`~CoordinationService.log_interaction`): a call, text or
  email made by hand, with a kind from the vocabulary and the channel derived from it.

Speed to lead, the time from a lead's first inbound interaction to the practice's first
answer, lives in :mod:`carecrm.core.pipeline.speed_to_lead`; its names stay importable from
here too.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

import attrs

from carecrm.core.config import Settings
from carecrm.core.errors import ConflictError, UnknownComponentError
from carecrm.core.events import types as ev
from carecrm.core.events.outbox import Published, publish
from carecrm.core.model.domain import Actor, Contact, Interaction, Location, Task
from carecrm.core.model.ids import new_id
from carecrm.core.model.records import ACTIVE, ContactRecord
from carecrm.core.model.timeutil import to_utc_ms, utcnow
from carecrm.core.model.vocab import (
    CHANNEL_OF_NOUN,
    CHANNELS,
    DIRECTION_OF_KIND,
    INTERACTION_KINDS,
    is_known_kind,
)
from carecrm.core.model.when import parse_when
from carecrm.core.pipeline.business_hours import location_named
from carecrm.core.pipeline.moves import implied_move
from carecrm.core.pipeline.speed_to_lead import (
    SPEED_TO_LEAD_INBOUND_KINDS,
    SPEED_TO_LEAD_OUTBOUND_KINDS,
    FirstResponse,
    SpeedToLeadSummary,
)
from carecrm.core.privacy.mapping import RecordMapper
from carecrm.core.privacy.read_path import ReadPath
from carecrm.core.storage.contract import StorageBackend

if TYPE_CHECKING:
    from carecrm.core.identity.directory import ContactResolver
    from carecrm.core.privacy.audit import AuditTrail
    from carecrm.core.storage.contract import UnitOfWork

#: Task statuses.
TASK_STATUSES: tuple[str, ...] = ("open", "done")

#: Longest task text and staff name accepted (characters).
MAX_TASK_TEXT = 4000
MAX_STAFF_NAME = 100

#: Kinds with their own use case (or written by carecrm itself), refused by log_interaction.
_NOT_LOGGABLE: dict[str, str] = {
    "note.added": "add_note (carecrm note add)",
    "task.created": "add_task (carecrm task add)",
    "task.completed": "complete_task (carecrm task done)",
    "stage.changed": "set_stage (carecrm stage set)",
    "consent.changed": "the consent ledger",
    "contacts.merged": "merging",
}

#: A logged interaction may lie this far in the future (clock skew between machines).
_FUTURE_SLACK = timedelta(minutes=5)


@attrs.frozen(kw_only=True)
class ContactSummary:
    """The few fields of a contact a task list shows beside each task.

    ``full_name`` is decrypted (an audited read); the rest is clear.
    """

    id: uuid.UUID
    full_name: str | None = attrs.field(default=None, repr=False)
    stage: str
    owner: str | None = None
    location: str | None = None
    service_interest: str | None = None
    status: str = ACTIVE


def _staff_name(value: str, field: str) -> str:
    """A staff name (assignee, owner): trimmed, non-empty, one line, at most 100 characters.

    :raises ValueError: naming ``field``.
    """
    name = str(value).strip()
    if not name:
        raise ValueError(f"{field}: empty name")
    if len(name) > MAX_STAFF_NAME:
        raise ValueError(f"{field}: longer than {MAX_STAFF_NAME} characters")
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise ValueError(f"{field}: control characters (a line break?) are not allowed in a name")
    return name


def _aware(value: datetime, field: str) -> datetime:
    try:
        return to_utc_ms(value)
    except ValueError:
        raise ValueError(f"{field}: naive datetime; give a timezone-aware time (UTC)") from None


class CoordinationService:
    """Use cases of coordinator work (tasks, assignment, logged calls) with explicit
    collaborators; it holds no state of its own (the facade builds it per use).

    :param storage: the backend.
    :param settings: the practice's locations (the time zone a typed time is read in) and
        pipeline (the stages a logged interaction implies).
    :param mapper: encrypts task texts and interaction bodies under the contact's key.
    :param read_path: decrypts the tasks, contacts and names shown (audited reads).
    :param audit: the audit trail (every change is audited in its own transaction).
    :param resolver: finds the contact a reference names, and a task by short id.
    :param deliver: delivers the outbox's events after a commit
        (:meth:`carecrm.core.CareCRM.deliver_events`).
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
    ) -> None:
        self.storage = storage
        self.settings = settings
        self.mapper = mapper
        self.read_path = read_path
        self.audit = audit
        self.resolver = resolver
        self._deliver = deliver

    # ------------------------------------------------------------------ helpers

    def location_of(self, name: str | None) -> Location:
        """The practice location called ``name``; the default (first) location when ``name``
        is None or no longer configured (:func:`carecrm.core.pipeline.business_hours.location_named`)."""
        return location_named(self.settings.practice, name)

    def location_of_contact(self, contact_id: uuid.UUID) -> Location:
        """The location a contact belongs to (read from clear fields: not an audited read).

        :raises NotFound: if the contact does not exist.
        """
        with self.storage.unit_of_work() as uow:
            return self.location_of(uow.contacts.get(contact_id).location)

    def _when(self, value: datetime | str | None, location: str | None, field: str) -> datetime | None:
        """``value`` as UTC: an aware datetime as given, text read in ``location``'s time zone."""
        if value is None:
            return None
        if isinstance(value, datetime):
            return _aware(value, field)
        return parse_when(value, timezone=self.location_of(location).timezone, now=utcnow(), field=field)

    # ------------------------------------------------------------------ tasks

    def add_task(
        self,
        ref: str | uuid.UUID,
        text: str,
        *,
        actor: Actor,
        due: datetime | str | None = None,
        assignee: str | None = None,
    ) -> Task:
        """Add ``actor``'s task about a contact and a ``task.created`` interaction on its
        timeline; one ``task.add`` audit entry in the same transaction (the contact is
        resolved by id or blind index, nothing is decrypted).

        :param ref: contact id, email or phone.
        :param text: what to do (encrypted at rest, like a note: it may hold health details).
        :param due: when it is due: a timezone-aware datetime, or text a person typed
            (``2025-10-06 09:00``, ``+2h``, ``tomorrow 09:00``; see :mod:`carecrm.core.model.when`)
            read in the time zone of the contact's location; None: no due time.
        :param actor: who adds it (its ``created_by``; the assignee by default).
        :param assignee: the staff name it is assigned to; None: the acting person.
        :returns: the stored task (``due_at`` UTC).
        :raises ValueError: for empty or over-long text, a bad assignee or due time (the
            message names the field).
        :raises NotFound: if the contact does not exist.
        :raises CryptoError: if the contact was erased.
        """
        body = (text or "").strip()
        if not body:
            raise ValueError("text: the task text is empty")
        if len(body) > MAX_TASK_TEXT:
            raise ValueError(f"text: longer than {MAX_TASK_TEXT} characters")
        who = _staff_name(assignee, "assignee") if assignee is not None else actor.name
        with self.storage.unit_of_work() as uow:
            rec = self.resolver.record(uow, ref)
            due_at = self._when(due, rec.location, "due")
            now = utcnow()
            task = Task(
                contact_id=rec.id,
                created_at=now,
                created_by=actor.name,
                assignee=who,
                due_at=due_at,
                text=body,
            )
            attributes: dict[str, Any] = {"task_id": str(task.id), "assignee": who}
            if task.due_at is not None:
                attributes["due_at"] = task.due_at.isoformat().replace("+00:00", "Z")
            key = self.mapper.key_of(rec)
            uow.tasks.add(self.mapper.task_to_record(task, key))
            inter = Interaction(
                contact_id=rec.id,
                kind="task.created",
                occurred_at=now,
                recorded_at=now,
                source="carecrm",
                idempotency_key=f"task.created:{task.id}",
                location=rec.location,
                attributes=attributes,
                body=body,
                actor=actor.name,
            )
            uow.interactions.add(self.mapper.interaction_to_record(inter, key))
            self.audit.append(
                uow,
                actor,
                "task.add",
                contact_id=rec.id,
                fields=["task"],
                details={"task_id": str(task.id), "assignee": who},
            )
            published = publish(uow, [_recorded(inter, now)])
            uow.commit()
        self._deliver([published])
        return task

    def tasks(
        self,
        *,
        actor: Actor,
        assignee: str | None = None,
        contact: str | uuid.UUID | None = None,
        overdue: bool = False,
        status: str | None = "open",
        now: datetime | None = None,
    ) -> list[tuple[Task, ContactSummary]]:
        """Tasks with the contact each is about, by due time (no due time last), then id.

        Decrypts each task's text and its contact's name: a read by ``actor``, one audit
        entry (``tasks.read``) per contact shown, as for a look-up (the ``contact`` filter
        is resolved by id or blind index and decrypts nothing).

        :param assignee: only tasks assigned to this staff name.
        :param contact: only tasks about this contact (id, email or phone).
        :param overdue: only open tasks due before ``now``.
        :param status: ``open`` (default), ``done``, or None for both.
        :param now: the current time (UTC; default the clock), for ``overdue``.
        :raises ValueError: for an unknown status (listing the known ones), ``overdue`` with
            status ``done``, or a naive ``now``.
        :raises NotFound: if ``contact`` names no contact.
        """
        if status is not None and status not in TASK_STATUSES:
            raise ValueError(f"status: unknown task status {status!r}; known: {', '.join(TASK_STATUSES)}")
        if overdue and status == "done":
            raise ValueError("overdue: only open tasks can be overdue")
        when = _aware(now, "now") if now is not None else utcnow()
        with self.storage.unit_of_work() as uow:
            contact_id = self.resolver.record(uow, contact).id if contact is not None else None
            records = uow.tasks.list(
                assignee=assignee,
                contact_id=contact_id,
                status="open" if overdue else status,
                due_before=when if overdue else None,
            )
            people = uow.contacts.get_many({r.contact_id for r in records})
            read = self.read_path.tasks(uow, records, people, actor=actor, purpose="care")
            if read:
                uow.commit()
        return [(task, _summary_of(task.contact_id, who)) for task, who in read]

    def complete_task(self, task_id: uuid.UUID | str, *, actor: Actor) -> Task:
        """Mark a task done (by ``actor``, now) and append ``task.completed`` to the
        contact's timeline; one ``task.complete`` audit entry.

        :param task_id: the task's id: a UUID, its text, or its short form (the last hex
            digits, as ``task list`` shows it).
        :returns: the updated task, text decrypted.
        :raises ValueError: if ``task_id`` is not a task id, or the task is already done.
        :raises NotFound: if there is no such task.
        :raises AmbiguousId: if a short id names several tasks.
        """
        if not isinstance(task_id, uuid.UUID):
            try:
                task_id = self.resolver.resolve_id(self.storage, "task", str(task_id))
            except ValueError:
                raise ValueError("task id: not a task id (the id that `carecrm task list` shows)") from None
        now = utcnow()
        with self.storage.unit_of_work() as uow:
            rec = uow.tasks.get(task_id)
            if rec.status == "done":
                raise ValueError(f"task id: task {task_id} is already done")
            done = attrs.evolve(rec, status="done", completed_at=now, completed_by=actor.name)
            uow.tasks.update(done)
            crec = uow.contacts.get(rec.contact_id)
            key = self.mapper.key_of(crec) if crec.wrapped_key is not None else None
            inter = Interaction(
                contact_id=crec.id,
                kind="task.completed",
                occurred_at=now,
                recorded_at=now,
                source="carecrm",
                idempotency_key=f"task.completed:{task_id}",
                location=crec.location,
                attributes={"task_id": str(task_id)},
                actor=actor.name,
            )
            if key is not None:
                uow.interactions.add(self.mapper.interaction_to_record(inter, key))
            self.audit.append(uow, actor, "task.complete", contact_id=crec.id, details={"task_id": str(task_id)})
            published = publish(uow, [_recorded(inter, now)]) if key is not None else None
            uow.commit()
        if published is not None:
            self._deliver([published])
        return self.read_path.task_for_change(done, crec, actor=actor)

    # ------------------------------------------------------------------ assignment

    def assign(self, ref: str | uuid.UUID, owner: str | None, *, actor: Actor) -> Contact:
        """Make ``owner`` (a staff name) the coordinator in charge of a contact; None unassigns.

        The contact's clear ``owner`` changes by an optimistic-concurrency update (retried
        up to three times when another writer got in first); an audit entry
        ``contact.assign`` records the previous and the new owner.  No interaction is added:
        an internal hand-over is not something that happened with the person.  Assigning
        the current owner again changes nothing and records nothing but the read.  The
        contact returned is a read by ``actor`` (``contact.read``), written in the same
        transaction as the change.

        :param ref: contact id, email or phone.
        :returns: the contact as stored afterwards.
        :raises ValueError: for an empty, over-long or multi-line name.
        :raises NotFound: if the contact does not exist.
        :raises ConflictError: if the contact kept changing under three attempts.
        """
        name = _staff_name(owner, "owner") if owner is not None else None
        for attempt in range(3):
            try:
                with self.storage.unit_of_work() as uow:
                    rec = self.resolver.record(uow, ref)
                    if rec.owner == name:
                        contact = self.read_path.contact(uow, rec, actor=actor, purpose="view")
                        uow.commit()
                        return contact
                    now = utcnow()
                    stored = uow.contacts.update(attrs.evolve(rec, owner=name, updated_at=now))
                    self.audit.append(
                        uow,
                        actor,
                        "contact.assign",
                        contact_id=rec.id,
                        fields=["owner"],
                        details={"from": rec.owner, "to": name},
                    )
                    contact = self.read_path.contact(uow, stored, actor=actor, purpose="view")
                    uow.commit()
                return contact
            except ConflictError:
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    # ------------------------------------------------------------------ logged interactions

    def log_interaction(
        self,
        ref: str | uuid.UUID,
        *,
        actor: Actor,
        kind: str,
        direction: str | None = None,
        body: str | None = None,
        occurred_at: datetime | str | None = None,
        channel: str | None = None,
        attributes: Mapping[str, Any] | None = None,
    ) -> Interaction:
        """Record by hand something that happened with a contact: a call made from a desk
        phone, a text sent from a mobile, an email from a mailbox carecrm does not see.

        The channel is derived from the kind (``call.*`` → ``phone``, ``sms.*`` → ``sms``,
        ``email.*`` → ``email``, ``chat.*`` → ``chat``, ``form.*`` and ``page.*`` → ``web``,
        ``walk_in.*`` and ``event.*`` → ``in_person``, ``referral.*`` → ``referral``, ``ad.*`` and
        ``ad_lead.*`` → ``ad_platform``) unless given.  The direction is fixed by kinds that
        go one way (``sms.sent`` outbound, ``form.submitted`` inbound ...); a call needs it
        given.  A kind that implies a stage (``appointment.booked`` of type consult ...)
        moves the contact as an ingested one would (``docs/vocabulary.md``, "Moves implied
        by interactions").  Live events fire after commit, so scores update.

        :param ref: contact id, email or phone.
        :param actor: who logs it (the interaction's ``actor``; one ``interaction.log``
            audit entry in the same transaction).
        :param kind: an interaction kind of the vocabulary (:mod:`carecrm.core.model.vocab`).
        :param direction: ``inbound`` or ``outbound``.
        :param body: free text (encrypted at rest), e.g. what was said.
        :param occurred_at: when (timezone-aware, or text as for :meth:`add_task`'s ``due``;
            default now); at most five minutes ahead of the clock.
        :param channel: override the derived channel (one of the vocabulary's channels).
        :param attributes: clear JSON facts without personal data (``duration_seconds``,
            ``appointment_type``): string keys; values strings of at most 100 characters,
            numbers, booleans or None.
        :returns: the stored interaction.
        :raises UnknownComponentError: for a kind or channel outside the vocabulary (lists the known ones).
        :raises ValueError: for a kind with its own use case (``note.added`` ...), a direction
            that is missing for a call, unknown or contrary to the kind, a time in the
            future, or bad attributes (naming the field).
        :raises NotFound: if the contact does not exist.
        """
        if not is_known_kind(kind):
            raise UnknownComponentError("interaction kind", kind, INTERACTION_KINDS)
        if kind in _NOT_LOGGABLE:
            raise ValueError(f"kind: {kind} is recorded by {_NOT_LOGGABLE[kind]}, not logged by hand")
        if direction is not None and direction not in ("inbound", "outbound"):
            raise ValueError("direction: expected inbound or outbound")
        fixed = DIRECTION_OF_KIND.get(kind)
        if fixed is not None and direction is not None and direction != fixed:
            raise ValueError(f"direction: {kind} is always {fixed}")
        direction = direction or fixed
        if direction is None and kind.startswith("call."):
            raise ValueError("direction: say whether the call was inbound or outbound")
        noun = kind.split(".", 1)[0]
        if channel is not None and channel not in CHANNELS:
            raise UnknownComponentError("channel", channel, CHANNELS)
        channel = channel or CHANNEL_OF_NOUN.get(noun)
        facts = _clear_attributes(attributes)
        text = body.strip() if body is not None and body.strip() else None
        events: list[ev.Event] = []
        with self.storage.unit_of_work() as uow:
            rec = self.resolver.record(uow, ref)
            now = utcnow()
            when = self._when(occurred_at, rec.location, "occurred_at") or now
            if when > now + _FUTURE_SLACK:
                raise ValueError("occurred_at: in the future; log what already happened")
            key = self.mapper.key_of(rec)
            inter_id = new_id()
            inter = Interaction(
                id=inter_id,
                contact_id=rec.id,
                kind=kind,
                occurred_at=when,
                recorded_at=now,
                source="carecrm",
                idempotency_key=f"{kind}:{inter_id}",
                channel=channel,
                direction=direction,
                location=rec.location,
                attributes=facts,
                body=text,
                actor=actor.name,
            )
            uow.interactions.add(self.mapper.interaction_to_record(inter, key))
            events.append(_recorded(inter, now))
            events += self._implied_move(uow, rec, inter, now, actor)
            self.audit.append(
                uow,
                actor,
                "interaction.log",
                contact_id=rec.id,
                fields=["body"] if text else [],
                details={"kind": kind, "interaction_id": str(inter.id)},
            )
            published = publish(uow, events)
            uow.commit()
        self._deliver([published])
        return inter

    def _implied_move(
        self, uow: UnitOfWork, rec: ContactRecord, inter: Interaction, now: datetime, actor: Actor
    ) -> list[ev.Event]:
        """Apply the stage a logged interaction implies, on the one stage-move path ingest
        follows too (:func:`carecrm.core.pipeline.moves.implied_move`: the history, the
        ``stage.changed`` timeline entry and the event)."""
        move = implied_move(
            mapper=self.mapper,
            pipeline=self.settings.pipeline,
            uow=uow,
            rec=rec,
            inter=inter,
            key=self.mapper.key_of(rec),
            now=now,
            actor=actor,
        )
        if move is None:
            return []
        uow.stages.add(move.change)
        uow.interactions.add(move.entry)
        uow.contacts.update(move.contact)
        return [move.event]


def _summary_of(contact_id: uuid.UUID, contact: Contact | None) -> ContactSummary:
    """The summary of a task's contact (decrypted by the read path); a contact that is
    gone shows its id alone."""
    if contact is None:
        return ContactSummary(id=contact_id, stage="", status="missing")
    return ContactSummary(
        id=contact.id,
        full_name=contact.full_name,
        stage=contact.stage,
        owner=contact.owner,
        location=contact.location,
        service_interest=contact.service_interest,
        status=contact.status,
    )


def _recorded(inter: Interaction, now: datetime) -> ev.InteractionRecorded:
    return ev.InteractionRecorded(
        at=now,
        contact_id=inter.contact_id,
        interaction_id=inter.id,
        kind=inter.kind,
        occurred_at=inter.occurred_at,
        source=inter.source,
        channel=inter.channel,
    )


def _clear_attributes(attributes: Mapping[str, Any] | None) -> dict[str, Any]:
    """Validate a logged interaction's clear attributes (see :meth:`CoordinationService.log_interaction`).

    :raises ValueError: naming the attribute at fault, never echoing its value.
    """
    out: dict[str, Any] = {}
    for name, value in (attributes or {}).items():
        if not isinstance(name, str) or not name or len(name) > 64:
            raise ValueError("attributes: names must be strings of 1 to 64 characters")
        if isinstance(value, str):
            if len(value) > 100:
                raise ValueError(f"attributes.{name}: longer than 100 characters (free text belongs in the body)")
        elif value is not None and not isinstance(value, (bool, int, float)):
            raise ValueError(f"attributes.{name}: expected a string, a number, a boolean or null")
        out[name] = value
    return out


__all__ = [
    "SPEED_TO_LEAD_INBOUND_KINDS",
    "SPEED_TO_LEAD_OUTBOUND_KINDS",
    "TASK_STATUSES",
    "ContactSummary",
    "CoordinationService",
    "FirstResponse",
    "SpeedToLeadSummary",
]
