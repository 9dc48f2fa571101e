"""The durable outbox: live events written with the change that raised them, delivered
from there to each subscriber in commit order, so a crash between a commit and its
delivery loses nothing.

The transactional-outbox pattern (cosmicpython, "Architecture Patterns with Python",
chapters 8-9: the unit of work's ``collect_new_events``; eventsourcing's notification
log and its per-follower tracking records):

* :func:`publish` appends a unit of work's events to ``uow.outbox`` in that unit, just
  before its commit.  Their ``seq`` numbers come from the outbox head (``meta``
  ``outbox_head``) read under :meth:`~carecrm.core.storage.contract.MetaRepository.get_for_update`,
  so the head stays locked until the unit commits: seq order is commit order, and a
  reader that has seen seq N never later finds an N-1 that committed after it.
* :class:`OutboxRelay` delivers the events of one subscriber (the in-process
  ``carecrm_track_event`` hook: :data:`LIVE_SUBSCRIBER`; later a server's worker)
  after that subscriber's cursor, a page at a time, and moves the cursor on after each
  page.  The cursor (``meta`` ``outbox_cursor:<subscriber>``) also holds a lease, so
  two processes (or threads) never deliver the same page: the one holding the lease
  delivers whatever the others commit meanwhile, and a lease left by a process that
  died expires after :data:`LEASE_SECONDS`.

Delivery is at least once: a process that dies in the middle of a page leaves that page
to be delivered again by the next relay run (``carecrm events deliver``, or any write).
Events hold ids, kinds, stages and times, never personal data (:mod:`carecrm.core.events.types`),
so the outbox needs no encryption.
"""

from __future__ import annotations

import contextvars
import functools
import logging
import time
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

import attrs

from carecrm.core.errors import ConflictError
from carecrm.core.events import types as ev
from carecrm.core.model.records import OutboxRecord
from carecrm.core.model.serialization import json_converter
from carecrm.core.model.timeutil import isoformat_z, utcnow
from carecrm.core.storage.contract import StorageBackend, UnitOfWork, run_retrying

log = logging.getLogger("carecrm")

#: The ``meta`` key of the outbox head: the last seq taken, as text.
OUTBOX_HEAD = "outbox_head"
#: The subscriber name of the in-process delivery to ``carecrm_track_event``.
LIVE_SUBSCRIBER = "carecrm_track_event"
#: Events per page a relay reads and delivers before moving its cursor on.
PAGE = 1000
#: How long (seconds) a relay's lease lasts without being renewed; a relay renews it
#: after every page.
LEASE_SECONDS = 120.0
#: How many times a relay's bookkeeping unit is tried when it loses a lock race.
ATTEMPTS = 5


def cursor_key(subscriber: str) -> str:
    """The ``meta`` key holding ``subscriber``'s cursor and lease."""
    return f"outbox_cursor:{subscriber}"


#: Event classes by name, found by walking ``Event``'s subclasses (walked again only when
#: a name is missing: a plugin may define its event classes after the first delivery).
_CLASSES: dict[str, type[ev.Event]] = {}


def _event_class(kind: str) -> type[ev.Event] | None:
    cls = _CLASSES.get(kind)
    if cls is None:
        todo: list[type[ev.Event]] = [ev.Event]
        while todo:
            for sub in todo.pop().__subclasses__():
                _CLASSES.setdefault(sub.__name__, sub)
                todo.append(sub)
        cls = _CLASSES.get(kind)
    return cls


#: How each event class's fields become JSON values, worked out once per class from its
#: resolved field types: ``(name, convert)`` with ``convert`` None for a JSON-ready value.
_FIELDS: dict[type[ev.Event], tuple[tuple[str, Callable[[Any], Any] | None], ...]] = {}

#: ISO texts of recent times (the events of one batch share their ``at``; bounded).
_ISO: dict[datetime, str] = {}


def _iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    text = _ISO.get(value)
    if text is None:
        if len(_ISO) > 4096:
            _ISO.clear()
        text = _ISO[value] = isoformat_z(value)
    return text


def _text_of_id(value: uuid.UUID | None) -> str | None:
    return None if value is None else str(value)


def _json_value(value: Any) -> Any:
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, datetime):
        return isoformat_z(value)
    return value


def _converters(cls: type[ev.Event]) -> tuple[tuple[str, Callable[[Any], Any] | None], ...]:
    """Each field's converter: ids to text, times to ISO 8601 ``Z`` text, plain values as
    they are; a field whose type is neither plainly an id, a time nor a JSON value (a
    plugin's event with a union type) goes through :func:`_json_value`."""
    plain = {str, int, float, bool, type(None)}
    try:
        fields = attrs.fields(attrs.resolve_types(cls))
    except Exception:  # noqa: BLE001 - a plugin's annotation that cannot be resolved: look at each value
        return tuple((field.name, _json_value) for field in attrs.fields(cls))
    out: list[tuple[str, Callable[[Any], Any] | None]] = []
    for field in fields:
        union = typing.get_origin(field.type) in (types.UnionType, typing.Union)
        members = set(typing.get_args(field.type)) if union else {field.type}
        if members <= {uuid.UUID, type(None)} and uuid.UUID in members:
            out.append((field.name, _text_of_id))
        elif members <= {datetime, type(None)} and datetime in members:
            out.append((field.name, _iso))
        elif members <= plain:
            out.append((field.name, None))
        else:
            out.append((field.name, _json_value))
    return tuple(out)


def to_record(event: ev.Event, seq: int, written_at: datetime) -> OutboxRecord:
    """The outbox record of ``event`` as number ``seq``: ``kind`` is the event class's
    name, ``data`` its fields as JSON values (UUIDs as strings, times ISO 8601 UTC with a
    ``Z``, as :data:`carecrm.core.model.serialization.json_converter` writes and reads them)."""
    cls = type(event)
    fields = _FIELDS.get(cls)
    if fields is None:
        fields = _FIELDS[cls] = _converters(cls)
    data: dict[str, Any] = {}
    for name, convert in fields:
        value = getattr(event, name)
        data[name] = value if convert is None else convert(value)
    return OutboxRecord(seq=seq, at=written_at, kind=cls.__name__, data=data)


def from_record(record: OutboxRecord) -> ev.Event | None:
    """The event an outbox record holds, or None (logged, by seq and kind only) when its
    kind is no event class this process knows (a plugin's event whose plugin is gone)
    or its data no longer fits the class."""
    cls = _event_class(record.kind)
    if cls is None:
        log.warning("outbox event %s: unknown kind %r, skipped", record.seq, record.kind)
        return None
    try:
        return json_converter.structure(record.data, cls)
    except Exception as exc:  # a stored event of an older shape: skip it, never stop the relay
        log.warning("outbox event %s (%s) no longer fits its class: %s", record.seq, record.kind, type(exc).__name__)
        return None


@attrs.frozen
class Published:
    """Events one unit of work wrote to the outbox: numbers ``first`` to ``last`` (seq).

    The writer hands it to :meth:`OutboxRelay.run` after its commit, so the relay can
    deliver these events from memory instead of reading them back, when they are exactly
    what comes next for the subscriber (the usual case: one process writing)."""

    first: int
    last: int
    events: tuple[ev.Event, ...]


def publish(uow: UnitOfWork, events: Iterable[ev.Event]) -> Published | None:
    """Append ``events`` to the outbox of ``uow`` (in order), numbered after the outbox
    head, which is locked until ``uow`` ends; returns what was written (None for no
    events), to pass to the relay once ``uow`` committed.  Call it last in a unit of work,
    after :meth:`~carecrm.core.app.CareCRM.audit` (one lock order everywhere: audit head,
    then outbox head), just before the commit.

    :raises ConflictError: lock wait timeout or deadlock (retry the unit).
    """
    batch = tuple(events)
    if not batch:
        return None
    head = uow.meta.get_for_update(OUTBOX_HEAD)
    last = int(head) if head else uow.outbox.last_seq()
    written_at = utcnow()
    records = [to_record(event, last + i, written_at) for i, event in enumerate(batch, start=1)]
    uow.outbox.append_many(records)
    uow.meta.set(OUTBOX_HEAD, str(records[-1].seq))
    return Published(first=records[0].seq, last=records[-1].seq, events=batch)


@attrs.frozen
class _Page:
    """Events to deliver next: the cursor's new position once they are, the events, how
    many stored records were skipped (unknown kinds)."""

    position: int
    events: list[ev.Event]
    skipped: int = 0

    @classmethod
    def of(cls, records: Sequence[OutboxRecord], position: int) -> _Page:
        """The page of stored ``records`` (empty: nothing after ``position``)."""
        if not records:
            return cls(position, [])
        events = [e for e in map(from_record, records) if e is not None]
        return cls(records[-1].seq, events, len(records) - len(events))


@attrs.frozen
class Cursor:
    """A subscriber's place in the outbox: every event with ``seq <= position`` was
    delivered; ``owner`` holds the lease until ``until`` (seconds since the epoch, UTC)."""

    position: int = 0
    owner: str = ""
    until: float = 0.0

    @classmethod
    def parse(cls, text: str | None) -> Cursor:
        """The cursor stored as ``position|owner|until`` (None or empty: the start)."""
        if not text:
            return cls()
        position, _, rest = text.partition("|")
        owner, _, until = rest.partition("|")
        return cls(int(position or 0), owner, float(until or 0))

    def text(self) -> str:
        """The stored form, ``position|owner|until``."""
        return f"{self.position}|{self.owner}|{self.until:.3f}"

    def held_by_other(self, me: str, now: float) -> bool:
        """True when another relay holds an unexpired lease."""
        return bool(self.owner) and self.owner != me and self.until > now


#: The relays running in this context (by backend and subscriber), each with what was
#: published while it delivers: a write made during a delivery (a plugin that writes,
#: live rescoring) leaves its events to that relay's next page, which takes them from
#: memory when they are exactly what follows (else reads them back).
_RUNNING: contextvars.ContextVar[Mapping[tuple[int, str], list[Published]]] = contextvars.ContextVar(
    "carecrm_outbox_relays", default=types.MappingProxyType({})
)


@attrs.frozen
class RelayReport:
    """What one :meth:`OutboxRelay.run` did: ``delivered`` events handed to the
    subscriber, ``skipped`` records of unknown kinds, ``busy`` True when another relay
    held the lease (it delivers them instead)."""

    delivered: int = 0
    skipped: int = 0
    busy: bool = False


class OutboxRelay:
    """Delivers the outbox to one subscriber, from its cursor, in seq order.

    :param storage: the backend whose outbox is read.
    :param subscriber: the subscriber's name (its cursor key).
    :param deliver: called with each page's events, in order; it must not raise for one
        event's failure (:class:`~carecrm.core.events.dispatch.EventDispatcher` logs those).  If
        it raises, the page is not acknowledged and is delivered again next time.
    :param page: events per page.
    :param lease_seconds: how long the lease lasts without renewal.
    :param clock: seconds since the epoch (tests pass a fake one).
    """

    def __init__(
        self,
        storage: StorageBackend,
        subscriber: str,
        deliver: Callable[[Sequence[ev.Event]], None],
        *,
        page: int = PAGE,
        lease_seconds: float = LEASE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._storage = storage
        self._subscriber = subscriber
        self._deliver = deliver
        self._page = page
        self._lease = lease_seconds
        self._clock = clock
        self._key = cursor_key(subscriber)

    def run(self, published: Sequence[Published] = ()) -> RelayReport:
        """Deliver every pending event (those committed while this runs too), then release
        the lease.  Returns at once, ``busy``, when another relay holds the lease, and at
        once, empty, when called from inside this subscriber's own delivery in this
        context (the running relay picks the new events up).

        :param published: what the caller's committed units of work wrote, in order: when
            it is exactly what comes next (checked under the cursor's lock against the
            outbox head), it is delivered from memory, not read back.

        Never raises for a lock race (retried, then left to the next run, logged); the
        exception of ``deliver`` propagates after the lease is released, its page
        unacknowledged.
        """
        running = (id(self._storage), self._subscriber)
        nested = _RUNNING.get().get(running)
        if nested is not None:
            nested.extend(published)
            return RelayReport()
        me = uuid.uuid4().hex
        page: _Page | None = self._bookkeep(functools.partial(self._claim, me=me, published=tuple(published)))
        if page is None:
            return RelayReport(busy=True)
        later: list[Published] = []
        token = _RUNNING.set({**_RUNNING.get(), running: later})
        delivered = skipped = 0
        try:
            while page is not None and (page.events or page.skipped):
                if page.events:
                    self._deliver(page.events)
                delivered += len(page.events)
                skipped += page.skipped
                written, later[:] = tuple(later), []
                page = self._bookkeep(
                    functools.partial(self._advance, me=me, position=page.position, published=written)
                )
        except BaseException:
            self._bookkeep(lambda uow: self._release(uow, me))
            raise
        finally:
            _RUNNING.reset(token)
        return RelayReport(delivered=delivered, skipped=skipped)

    def pending(self) -> int:
        """How many events are after this subscriber's cursor (read without locking)."""
        with self._storage.unit_of_work() as uow:
            cursor = Cursor.parse(uow.meta.get(self._key))
            return max(uow.outbox.last_seq() - cursor.position, 0)

    def position(self) -> int:
        """This subscriber's cursor: the last seq delivered (0: none yet)."""
        with self._storage.unit_of_work() as uow:
            return Cursor.parse(uow.meta.get(self._key)).position

    # -- bookkeeping units (each one short: the cursor row is locked only inside them)

    def _bookkeep(self, work: Callable[[UnitOfWork], Any]) -> Any:
        """Run ``work`` in a unit and commit (:func:`carecrm.core.storage.contract.run_retrying`); a
        race lost every time is given up (None, logged): the events stay pending for the
        next run."""

        def unit(uow: UnitOfWork) -> Any:
            result = work(uow)
            uow.commit()
            return result

        try:
            return run_retrying(self._storage, unit, attempts=ATTEMPTS)
        except ConflictError:
            log.warning("outbox relay %s: lock race lost %d times; events left pending", self._subscriber, ATTEMPTS)
            return None

    def _claim(self, uow: UnitOfWork, *, me: str, published: tuple[Published, ...]) -> _Page | None:
        """The first page after the cursor, with the lease taken when there is one (an
        empty page, the cursor untouched, when nothing is pending); None when another
        relay holds the lease.  ``published`` is the page when it is exactly what follows
        the cursor, up to the outbox head."""
        now = self._clock()
        text = uow.meta.get_for_update(self._key)
        cursor = Cursor.parse(text)
        if cursor.held_by_other(me, now):
            uow.meta.set(self._key, cursor.text())  # keep the row (a placeholder needs a value)
            return None
        page = self._from_memory(uow, cursor.position, published)
        if page is None:
            page = _Page.of(uow.outbox.after(cursor.position, limit=self._page), cursor.position)
        if page.events or page.skipped:
            uow.meta.set(self._key, Cursor(cursor.position, me, now + self._lease).text())
        elif not text:
            uow.meta.set(self._key, cursor.text())
        return page

    @staticmethod
    def _from_memory(uow: UnitOfWork, position: int, published: tuple[Published, ...]) -> _Page | None:
        """The page of ``published`` when it is contiguous, starts right after
        ``position`` and ends at the outbox head; else None (read the outbox)."""
        if not published or published[0].first != position + 1:
            return None
        for before, after in zip(published, published[1:], strict=False):
            if after.first != before.last + 1:
                return None
        if uow.meta.get(OUTBOX_HEAD) != str(published[-1].last):
            return None
        return _Page(published[-1].last, [e for p in published for e in p.events])

    def _advance(self, uow: UnitOfWork, *, me: str, position: int, published: tuple[Published, ...] = ()) -> _Page:
        """Acknowledge up to ``position`` and return the next page, renewing the lease;
        with nothing left, release it.  The next page is read under the cursor's lock, so
        an event committed by a relay that found the lease held is never stranded; it is
        ``published`` (written during the delivery) when that is exactly what follows."""
        now = self._clock()
        uow.meta.get_for_update(self._key)
        page = self._from_memory(uow, position, published)
        if page is None:
            page = _Page.of(uow.outbox.after(position, limit=self._page), position)
        more = bool(page.events or page.skipped)
        owner, until = (me, now + self._lease) if more else ("", 0.0)
        uow.meta.set(self._key, Cursor(position, owner, until).text())
        return page

    def _release(self, uow: UnitOfWork, me: str) -> None:
        """Give up the lease (after ``deliver`` raised), the cursor where it was."""
        cursor = Cursor.parse(uow.meta.get_for_update(self._key))
        uow.meta.set(self._key, (Cursor(cursor.position) if cursor.owner == me else cursor).text())


def prune(storage: StorageBackend, subscribers: Iterable[str], *, older_than: timedelta) -> int:
    """Delete the events every one of ``subscribers`` was given and that were written more
    than ``older_than`` ago; returns how many.  (A subscriber that never ran has cursor 0,
    so nothing is pruned before it first runs.)"""
    with storage.unit_of_work() as uow:
        upto = min((Cursor.parse(uow.meta.get(cursor_key(s))).position for s in subscribers), default=0)
        removed = uow.outbox.prune(upto_seq=upto, before=utcnow() - older_than)
        uow.commit()
    return removed
