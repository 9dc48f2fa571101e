"""Live events of one app: the outbox relayed to ``carecrm_track_event``, and the work
plugins defer to the end of a delivery.

:class:`LiveEvents` is built once by the facade (:class:`carecrm.core.CareCRM`) with the
plugin manager, the object hook implementations receive as ``app=`` (the facade: that
argument is part of the public hook contract, and this service never calls anything on
it) and a zero-argument storage provider, called on each use so the storage still opens
lazily.  It holds no per-call state: the deferred work of a delivery belongs to the
delivery in progress (:mod:`carecrm.core.events.dispatch`), so one instance serves
concurrent callers.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import timedelta
from typing import Any

import pluggy

from carecrm.core.events import types as ev
from carecrm.core.events.dispatch import EventDispatcher
from carecrm.core.events.outbox import LIVE_SUBSCRIBER, OutboxRelay, Published, RelayReport
from carecrm.core.events.outbox import prune as prune_outbox
from carecrm.core.storage.contract import StorageBackend


class LiveEvents:
    """Delivery of committed events to the in-process ``carecrm_track_event`` hook.

    :param pm: the app's plugin manager.
    :param app: the object passed to hook implementations as ``app`` (never used otherwise).
    :param storage: the current storage backend, called on each use (opens it lazily).
    """

    def __init__(self, *, pm: pluggy.PluginManager, app: object, storage: Callable[[], StorageBackend]) -> None:
        self._dispatcher = EventDispatcher(pm, app)
        self._storage = storage

    def dispatch(self, events: Iterable[ev.Event]) -> None:
        """Deliver ``events`` to ``carecrm_track_event`` at once, in memory, through
        pluggy's hook callers (wrappers and ``CARECRM_TRACE_PLUGINS`` see them); an
        implementation's exception is logged with its plugin's name, never stops the other
        plugins and never undoes committed data.  Then run the work deferred with
        :meth:`after_dispatch` during the delivery (see :mod:`carecrm.core.events.dispatch`).

        The use cases never call this directly: they write their events to the outbox
        in the unit of work of the change (:func:`carecrm.core.events.outbox.publish`) and call
        :meth:`deliver_events` after the commit, which delivers through here."""
        self._dispatcher.dispatch(events)

    def events_relay(self, subscriber: str = LIVE_SUBSCRIBER) -> OutboxRelay:
        """The relay of the outbox to ``subscriber`` (default: the in-process
        ``carecrm_track_event`` delivery, :meth:`dispatch`).  A server's worker or a
        scheduler builds its own subscriber with :class:`~carecrm.core.events.outbox.OutboxRelay`."""
        return OutboxRelay(self._storage(), subscriber, self._dispatcher.dispatch)

    def deliver_events(self, published: Sequence[Published | None] = ()) -> RelayReport:
        """Deliver every committed event not yet given to ``carecrm_track_event``, in commit
        order, from the durable outbox (:mod:`carecrm.core.events.outbox`): the events of the
        write just committed, and any a crashed process committed but never delivered.
        Called after every commit that wrote events; ``carecrm events deliver`` runs it by
        hand.  When another process is delivering, returns at once (it delivers these
        too).  Never raises for a plugin's failure (logged).

        :param published: what the caller's units of work just committed
            (:func:`carecrm.core.events.outbox.publish`'s results), delivered from memory when it
            is exactly what comes next.
        """
        return self.events_relay().run([p for p in published if p is not None])

    def pending_events(self) -> int:
        """How many committed events ``carecrm_track_event`` has not been given yet."""
        return self.events_relay().pending()

    def prune_events(self, *, older_than: timedelta = timedelta(days=30)) -> int:
        """Delete outbox events already delivered and written more than ``older_than`` ago
        (default 30 days); returns how many (``carecrm events prune``)."""
        return prune_outbox(self._storage(), [LIVE_SUBSCRIBER], older_than=older_than)

    def after_dispatch(self, key: str, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once after the events being dispatched have all been
        delivered (a plugin batches work over an ingest batch: scoring rescores each
        contact once); outside a dispatch, at once.  The same ``key`` registered again in
        one batch runs once.  A failure is logged with ``key`` and never undoes committed
        data; work that dispatches events of its own runs those at once.  The deferred
        work belongs to the delivery in progress, not to the app (concurrent callers
        never share it)."""
        self._dispatcher.after_dispatch(key, callback)

    def collect_after_dispatch(self, key: str, item: Hashable, flush: Callable[[list[Any]], None]) -> None:
        """Add ``item`` to the batch ``key`` of the delivery in progress; ``flush(items)``
        runs once after it with the distinct items (first-added order); outside a
        dispatch ``flush([item])`` runs at once.  Failures are logged as for
        :meth:`after_dispatch`."""
        self._dispatcher.collect(key, item, flush)
