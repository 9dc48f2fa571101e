"""Live-event delivery: committed domain events to ``carecrm_track_event``, through pluggy.

Every delivery goes through pluggy's own hook callers, so ``wrapper=True`` (and old-style
``hookwrapper=True``) implementations wrap it and ``CARECRM_TRACE_PLUGINS=1`` shows it:

* each event is one call of the hook (when wrappers are registered: the wrappers around
  a fan-out passed with :meth:`pluggy.HookCaller.call_extra`, so a wrapper sees every
  event once);
* the fan-out calls each plugin's plain implementation through its own
  :meth:`pluggy.PluginManager.subset_hook_caller`, one plugin at a time, so an exception
  is logged with that plugin's name and never stops the other plugins nor undoes
  committed data.

Nothing per call is kept on the app: the work deferred during a delivery
(:meth:`EventDispatcher.after_dispatch`, :meth:`EventDispatcher.collect`) belongs to the
delivery in progress, found through a :class:`contextvars.ContextVar`, so several
threads (or tasks) dispatching through one app never share it.
"""

from __future__ import annotations

import contextvars
import functools
import logging
from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import Any

import attrs
import pluggy

from carecrm.core.events.types import Event

log = logging.getLogger("carecrm")

HOOK = "carecrm_track_event"


@attrs.define(eq=False)
class _Delivery:
    """The state of one outermost dispatch: the app it belongs to and the deferred work."""

    owner: object
    deferred: dict[str, Callable[[], None]] = attrs.Factory(dict)
    batches: dict[str, dict[Hashable, None]] = attrs.Factory(dict)


_CURRENT: contextvars.ContextVar[_Delivery | None] = contextvars.ContextVar("carecrm_delivery", default=None)


class EventDispatcher:
    """Delivers committed events of one app to the ``carecrm_track_event`` implementations.

    Holds no per-call state (it may be built per call or shared by threads).

    :param pm: the app's plugin manager.
    :param app: the facade passed to implementations as ``app``.
    """

    def __init__(self, pm: pluggy.PluginManager, app: object) -> None:
        self._pm = pm
        self._app = app

    def _current(self) -> _Delivery | None:
        delivery = _CURRENT.get()
        return delivery if delivery is not None and delivery.owner is self._app else None

    def dispatch(self, events: Iterable[Event]) -> None:
        """Deliver ``events`` in order, each to every implementation, then run the work
        deferred during the delivery (:meth:`after_dispatch`).

        A dispatch made by an implementation while events are being delivered (a plugin
        that writes) delivers its own events at once and leaves the deferred work to the
        outer delivery.  Nothing raises: an implementation's exception is logged with its
        plugin's name, a deferred callback's with its key.
        """
        hook = getattr(self._pm.hook, HOOK)
        impls = hook.get_hookimpls()
        if not impls:
            return
        events = list(events)
        outer = self._current()
        if outer is not None:
            self._deliver(events, impls)
            return
        delivery = _Delivery(owner=self._app)
        token = _CURRENT.set(delivery)
        try:
            self._deliver(events, impls)
        finally:
            _CURRENT.reset(token)
        while delivery.deferred:
            key = next(iter(delivery.deferred))
            callback = delivery.deferred.pop(key)
            delivery.batches.pop(key, None)
            try:
                callback()
            except Exception:
                log.exception("deferred work %s failed after dispatch", key)

    def _deliver(self, events: Sequence[Event], impls: Sequence[pluggy.HookImpl]) -> None:
        pm = self._pm
        is_wrapper = [bool(i.wrapper or i.hookwrapper) for i in impls]
        plain = [i for i, w in zip(impls, is_wrapper, strict=True) if not w]
        everyone = {i.plugin for i in impls}
        # pluggy's call order is the reverse of get_hookimpls()'s
        callers = [
            (impl.plugin_name, pm.subset_hook_caller(HOOK, everyone - {impl.plugin})) for impl in reversed(plain)
        ]

        def fan_out(event: Event, app: Any) -> None:
            for name, caller in callers:
                try:
                    caller(event=event, app=app)
                except Exception:
                    log.exception("plugin %s failed in carecrm_track_event (%s)", name, type(event).__name__)

        if not any(is_wrapper):
            for event in events:
                fan_out(event, self._app)
            return
        around = pm.subset_hook_caller(HOOK, {i.plugin for i in plain} - {i.plugin for i in impls if i not in plain})
        for event in events:
            try:
                around.call_extra([fan_out], {"event": event, "app": self._app})
            except Exception:
                log.exception("a carecrm_track_event wrapper failed (%s)", type(event).__name__)

    def after_dispatch(self, key: str, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once after the events being delivered have all been
        delivered; outside a delivery, at once.  The same ``key`` registered again during
        one delivery runs once (the first callback is kept)."""
        delivery = self._current()
        if delivery is None:
            callback()
            return
        delivery.deferred.setdefault(key, callback)

    def collect(self, key: str, item: Hashable, flush: Callable[[list[Any]], None]) -> None:
        """Add ``item`` to the batch ``key`` of the delivery in progress; ``flush(items)``
        runs once after the delivery with the batch's distinct items in the order first
        added.  Outside a delivery ``flush([item])`` runs at once."""
        delivery = self._current()
        if delivery is None:
            flush([item])
            return
        batch = delivery.batches.get(key)
        if batch is None:
            batch = delivery.batches[key] = {}
            delivery.deferred.setdefault(key, functools.partial(_flush, flush, batch))
        batch[item] = None


def _flush(flush: Callable[[list[Any]], None], batch: dict[Hashable, None]) -> None:
    flush(list(batch))
