"""Every carecrm hook, in one module.  These docstrings are the plugin reference
(``docs/plugin_hooks.md`` is generated from them by ``python -m carecrm.core.plugins.hookdocs``).

Hooks are called with keyword arguments only.  An implementation may accept fewer
arguments than the spec names (pluggy passes only those it asks for), so specs only
ever gain parameters.  Plugin authors write::

    from carecrm.core import hookimpl

    @hookimpl
    def carecrm_register_sources(register):
        register(MyConnector)

Families:

* registration hooks, called once when the app starts, collect swappable parts by name.
  They are called through pluggy's hook callers once per implementing plugin, each call
  with that plugin's own ``register`` (so every component knows its owner); a
  ``wrapper=True`` implementation runs around each of those calls and
  ``CARECRM_TRACE_PLUGINS=1`` traces them;
* ``carecrm_configure``, called once the app is ready;
* ``carecrm_track_event``, the one live-event hook, called after each commit (from the
  durable outbox);
* ``carecrm_match_contact``, a ``firstresult`` choice hook ("can anyone answer this?").
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    import click

    from carecrm.core import CareCRM
    from carecrm.core.events.types import Event
    from carecrm.core.identity.matching import MatchCandidate, MatchResult
    from carecrm.core.storage.contract import UnitOfWork

PROJECT = "carecrm"

hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


# --------------------------------------------------------------------------- registration


@hookspec
def carecrm_register_storage_backends(register: Callable[..., None]) -> None:
    """Register storage backends by name and the URL schemes they serve.

    Called once when the app builds its storage registry.

    :param register: ``register(name: str, schemes: Sequence[str], factory)`` where
        ``factory(url: str, options: dict) -> StorageBackend`` opens the backend
        (import the driver inside the factory, not at module level).  A scheme is the
        part of ``[storage] url`` before ``://`` (``sqlite``, ``postgresql+psycopg``).
        Registering a name or scheme twice, or a factory that is not callable, raises
        ``PluginError`` naming the plugin(s).
    :returns: nothing.
    """


@hookspec
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register source connectors (push parsers of vendors' payloads).

    Called once when the app builds its source registry.

    :param register: ``register(connector_cls)``; the class must subclass
        :class:`carecrm.core.ingest.connectors.SourceConnector` (else ``PluginError``) and is
        keyed by its ``connector_id``.  A practice names it in ``[sources.<name>]
        connector = ...``; the core builds it as ``cls(name=source_name, options=...,
        settings=settings)`` with the table structured into ``cls.options_type``.
    :returns: nothing.
    """


@hookspec
def carecrm_register_scoring_models(register: Callable[..., None]) -> None:
    """Register lead-scoring models, keyed by their ``model_id``.

    Called once when the app builds its scoring registry; ``[scoring] model`` picks one.

    :param register: ``register(model_cls)``; the class must subclass
        :class:`carecrm.core.analytics.scoring.ScoringModel` (else ``PluginError``); the core builds
        it as ``cls(name=model_id, options=..., settings=settings)`` with the rest of
        ``[scoring]`` structured into ``cls.options_type``.
    :returns: nothing.
    """


@hookspec
def carecrm_register_attribution_models(register: Callable[..., None]) -> None:
    """Register marketing attribution models, keyed by their ``model_id``.

    Called once when the app builds its attribution registry; ``carecrm attribute --model
    NAME`` (``CareCRM.attribute(model=...)``) picks one.

    :param register: ``register(model_cls)``; the class must subclass
        :class:`carecrm.core.analytics.attribution.AttributionModel` (else ``PluginError``), is
        built as ``cls(name=model_id, options=..., settings=settings)`` with the
        ``[attribution.models.<model_id>]`` table structured into ``cls.options_type``,
        and implements ``attribute(touches,
        conversion_at) -> weights``: one weight >= 0 per touch summing to 1 (the core checks).
        The core finds conversions and touches; a model only splits the credit.
    :returns: nothing.
    """


@hookspec
def carecrm_register_segment_builders(register: Callable[..., None]) -> None:
    """Register segment builders, keyed by their ``builder_id``.

    Called once when the app builds its segment registry; ``[segments] builder`` picks one.

    :param register: ``register(builder_cls)``; the class must subclass
        :class:`carecrm.core.analytics.segments_service.SegmentBuilder` (else ``PluginError``); the core
        builds it as ``cls(name=builder_id, options=..., settings=settings)`` with the rest
        of ``[segments]`` structured into ``cls.options_type``.
    :returns: nothing.
    """


@hookspec
def carecrm_register_options(register: Callable[..., None]) -> None:
    """Declare the class of this plugin's own ``[plugins.<name>]`` options.

    Called once when the app starts, like the other registration hooks; ``<name>`` is
    the plugin's name (its entry-point name, or the module path of a built-in).  The
    table is structured into the class at start-up, so an unknown key or a wrong type
    is a ``ConfigError`` naming the plugin, the key and the known keys;
    ``app.plugin_options(name)`` then returns the instance.  A plugin that declares no
    class gets its table as a plain dict (deprecated).

    :param register: ``register(options_cls)``: a frozen attrs class (fields with
        defaults are optional keys; see :mod:`carecrm.core.plugins.options`).  Registering twice
        raises ``PluginError``.
    :returns: nothing.
    """


@hookspec
def carecrm_register_commands(cli: click.Group) -> None:
    """Add click commands or groups to the ``carecrm`` command line.

    Called once, the first time the CLI lists or resolves its commands.

    :param cli: the root ``click.Group``; call ``cli.add_command(...)``.
    :returns: nothing.
    """


# --------------------------------------------------------------------------- lifecycle


@hookspec
def carecrm_configure(app: CareCRM) -> None:
    """The app is ready: settings read, registries built, storage not yet opened.

    Called once per app.  Read your options with ``app.plugin_options(name)``.

    :param app: the :class:`carecrm.core.CareCRM` facade.
    :returns: nothing.
    """


# --------------------------------------------------------------------------- live events


@hookspec
def carecrm_track_event(event: Event, app: CareCRM) -> None:
    """A change was committed: react to it (automation, scoring, notifications).

    Called after each successful commit, once per domain event, in commit order.  The
    events are durable: the unit of work writes them to the outbox in the same
    transaction as the change, and they are delivered from there
    (:mod:`carecrm.core.events.outbox`), so a process that dies between its commit and the
    delivery loses nothing: the next write, or ``carecrm events deliver``, delivers them.
    Delivery is at least once (a crash in the middle of a page of events delivers that
    page again): make what you do idempotent, or key it by the event's ids.  A write made
    here has its events delivered after the current page.  ``event``
    is a frozen instance of a :mod:`carecrm.core.events.types` class (``InteractionRecorded``,
    ``StageChanged``, ``ContactCreated``, ``ContactsMerged``, ``ScoreChanged``,
    ``ConsentChanged``, ``PossibleDuplicate``).  Events carry ids and kinds, never
    personal data.  An exception is logged with the plugin's name, never stops the other
    plugins and never undoes the committed data.  Calls go through pluggy: a
    ``wrapper=True`` implementation wraps the delivery of each event (once per event) and
    ``CARECRM_TRACE_PLUGINS=1`` traces each plugin's call.  A write made here needs an
    ``actor`` like any other facade call (the plugin's own, e.g. ``Actor("automation",
    "system")``).

    :param event: the domain event.
    :param app: the facade, to read more or to write (a write fires its own events).
    :returns: nothing.
    """


# --------------------------------------------------------------------------- choices


@hookspec(firstresult=True)
def carecrm_match_contact(candidate: MatchCandidate, uow: UnitOfWork, app: CareCRM) -> MatchResult | None:
    """Decide which stored contact an incoming lead event belongs to.

    Called during ingest for every lead event, inside the batch's unit of work.  The
    first non-None answer wins; the built-in exact matcher (``docs/vocabulary.md``,
    "Identities and matching") runs last (``trylast``), so a plugin with fuzzy or probabilistic rules
    answers first and may return None to fall through.

    :param candidate: normalized identities, blind indexes and names of the event.
    :param uow: the open unit of work (read its repositories; do not commit).
    :param app: the facade.
    :returns: a :class:`carecrm.core.identity.matching.MatchResult` (the contact id, or None for a
        new contact, plus pairs to send to review), or None to let others decide.
    """


# --------------------------------------------------------------------------- helpers


def hook_names() -> list[str]:
    """Names of every hookspec in this module, sorted."""
    return sorted(name for name, value in globals().items() if name.startswith("carecrm_") and callable(value))
