"""The :class:`CareCRM` facade: settings, plugins, registries, keys, storage, use cases.

The CLI and any other front end call this object only.  It is cheap to build: the key
ring and the storage backend are opened on first use, so ``carecrm --help`` and
``carecrm plugins`` never touch the database.
"""

from __future__ import annotations

import logging
import statistics
import threading
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pluggy

from carecrm.core import events as ev
from carecrm.core import short_ids
from carecrm.core.attribution import AttributionModel
from carecrm.core.attribution_api import AttributionMixin
from carecrm.core.audit import AuditTrail
from carecrm.core.config import Settings, load_settings
from carecrm.core.connectors import SourceConnector
from carecrm.core.coordination_api import CoordinationMixin, SpeedToLeadSummary
from carecrm.core.crypto import KeyRing
from carecrm.core.dispatch import EventDispatcher
from carecrm.core.errors import (
    CareCRMError,
    CryptoError,
    NotFound,
    PluginError,
    UnknownComponentError,
    ValidationFailed,
)
from carecrm.core.identity import IdentityError, normalize_email, normalize_name, normalize_phone
from carecrm.core.ids import new_id
from carecrm.core.ingest import Ingestor, IngestReport, is_reason_code
from carecrm.core.ingest.inbox import Inbox, InboxItem
from carecrm.core.mapping import RecordMapper
from carecrm.core.matching import MatchCandidate, MatchResult
from carecrm.core.migrate_api import MigrationMixin
from carecrm.core.models import (
    Actor,
    Contact,
    Interaction,
    LeadEvent,
    Note,
    RawPayload,
    StageChange,
    Touchpoint,
)
from carecrm.core.options import build_component, structure_options
from carecrm.core.outbox import LIVE_SUBSCRIBER, OutboxRelay, RelayReport, publish
from carecrm.core.outbox import prune as prune_outbox
from carecrm.core.plugins import (
    DEFAULT_PLUGINS,
    PluginInfo,
    Registry,
    build_plugin_manager,
    collect,
    entry_point_names,
    families_of,
    origin_of,
)
from carecrm.core.read_path import CONTACT_FIELDS, ReadPath
from carecrm.core.records import ACTIVE, AuditRecord, ContactRecord
from carecrm.core.scoring import ScoringModel
from carecrm.core.scoring_api import ScoringMixin
from carecrm.core.segments_api import SegmentBuilder, SegmentsMixin
from carecrm.core.short_ids import id_suffix, looks_like_phone
from carecrm.core.stage_moves import plan_move
from carecrm.core.storage import SCHEMA_VERSION, StorageBackend, StorageFactory, TimelineCursor, UnitOfWork
from carecrm.core.timeutil import utcnow

log = logging.getLogger("carecrm")

_T = TypeVar("_T")

#: Default time-zone-free settings for a brand-new practice written by ``init``.
_META_KEY_CHECK = "key_check"
#: Guards the lazy opening of the key ring, the mapper and the storage, which concurrent
#: callers of one app may reach first at the same time.
_OPEN_LOCK = threading.RLock()


@attrs.frozen(kw_only=True)
class StorageEntry:
    """A registered storage backend: its name, URL schemes and factory."""

    name: str
    schemes: tuple[str, ...]
    factory: StorageFactory


@attrs.frozen(kw_only=True)
class Timeline:
    """A contact and one page of its interactions, oldest first.

    ``next_cursor`` is the (occurred_at, id) to pass as ``after`` for the next page, or
    None when this page is the last.
    """

    contact: Contact
    interactions: tuple[Interaction, ...]
    next_cursor: TimelineCursor | None = None


@attrs.frozen(kw_only=True)
class StageSummary:
    """One row of the pipeline report: contacts now in ``stage`` and the median time
    they have spent there so far, in seconds (None when empty), and the speed to lead of
    those of them who reached out (median business seconds to the first answer, how many
    were answered, how many still wait; see :meth:`CareCRM.speed_to_lead`)."""

    stage: str
    count: int
    median_seconds: float | None
    speed_to_lead: SpeedToLeadSummary = attrs.Factory(SpeedToLeadSummary)


class CareCRM(ScoringMixin, AttributionMixin, SegmentsMixin, CoordinationMixin, MigrationMixin):
    """The app object.

    Who acts is not part of the app: every method that reads or changes personal data
    takes ``actor: Actor`` (keyword-only), recorded in the audit log on every read and
    change (HIPAA 45 CFR 164.312(b)), so one app serves concurrent callers acting as
    different people.  No per-call state is kept on the instance.

    :param settings: the practice's settings (``load_settings()``).
    :param keys: the key ring; default read from ``CARECRM_KEYS``, ``CARECRM_KEY_FILE``
        or ``[keys] file`` on first use.
    :param load_entrypoints: load third-party plugins from the ``carecrm`` entry points.
    :param extra_plugins: plugin objects registered after the built-ins (tests).
    :raises ConfigError: if config enables a plugin that is not installed, or names an
        unknown connector.
    :raises PluginError: if two plugins register the same name.
    """

    def __init__(
        self,
        settings: Settings,
        *,
        keys: KeyRing | None = None,
        load_entrypoints: bool = True,
        extra_plugins: Sequence[object] = (),
    ) -> None:
        self.settings = settings
        self._keys = keys
        self._storage: StorageBackend | None = None
        self._mapper: RecordMapper | None = None
        self._read_path: ReadPath | None = None
        self.pm: pluggy.PluginManager = build_plugin_manager(
            load_entrypoints=load_entrypoints, extra_plugins=extra_plugins
        )
        self._check_enabled_plugins()
        self.storage_backends: Registry[StorageEntry] = Registry("storage backend")
        self._schemes: dict[str, str] = {}
        self.sources: Registry[type[SourceConnector]] = Registry("source connector", base=SourceConnector)
        self.scoring_models: Registry[type[ScoringModel]] = Registry("scoring model", base=ScoringModel)
        self.attribution_models: Registry[type[AttributionModel]] = Registry("attribution model", base=AttributionModel)
        self.segment_builders: Registry[type[SegmentBuilder]] = Registry("segment builder", base=SegmentBuilder)
        self._options_types: dict[str, type[Any]] = {}
        self._plugin_options: dict[str, Any] = {}
        self._components: dict[str, list[str]] = {}
        self._connectors: dict[str, SourceConnector] = {}
        self._classified: dict[Touchpoint, Touchpoint] = {}
        self._build_registries()
        self._check_component_options()
        self.pm.hook.carecrm_configure(app=self)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, path: str | Path | None = None, **kwargs: Any) -> CareCRM:
        """Load ``carecrm.toml`` (see :func:`carecrm.core.config.find_config`) and build the app."""
        return cls(load_settings(path), **kwargs)

    def _check_enabled_plugins(self) -> None:
        enabled = self.settings.enabled_plugins
        if enabled is None:
            return
        installed = set(entry_point_names()) | {name for name, _ in self.pm.list_name_plugin()}
        for name in enabled:
            if name not in installed:
                raise UnknownComponentError(
                    "plugin", name, sorted(entry_point_names()) or ["(no third-party plugins installed)"]
                )

    def _build_registries(self) -> None:
        def storage_register(owner: str) -> Any:
            def register(name: str, schemes: Sequence[str], factory: StorageFactory) -> None:
                if not callable(factory):
                    raise PluginError(
                        f"plugin {owner} registered storage backend {name!r} with a factory that is not callable; "
                        "expected factory(url: str, options: dict) -> StorageBackend"
                    )
                if isinstance(schemes, str) or not all(isinstance(x, str) for x in schemes):
                    raise PluginError(
                        f"plugin {owner} registered storage backend {name!r} with schemes that are not "
                        "a list of strings"
                    )
                self.storage_backends.register(
                    name, StorageEntry(name=name, schemes=tuple(schemes), factory=factory), owner=owner
                )
                for scheme in schemes:
                    if scheme in self._schemes:
                        raise PluginError(
                            f"URL scheme {scheme!r} registered twice: by {self._schemes[scheme]} and by {owner}"
                        )
                    self._schemes[scheme] = name
                self._components.setdefault(owner, []).append(f"storage:{name}")

            return register

        def class_register(registry: Registry[Any], attr: str, family: str) -> Any:
            def make(owner: str) -> Any:
                def register(cls_: Any) -> None:
                    name = getattr(cls_, attr, None)
                    if not name:
                        raise PluginError(f"{owner} registered a {registry.family} without {attr}")
                    registry.register(name, cls_, owner=owner)
                    self._components.setdefault(owner, []).append(f"{family}:{name}")

                return register

            return make

        def options_register(owner: str) -> Any:
            def register(options_cls: type[Any]) -> None:
                if not attrs.has(options_cls):
                    raise PluginError(
                        f"plugin {owner} registered {options_cls!r} as its options class, but it is not an attrs class"
                    )
                if owner in self._options_types:
                    raise PluginError(f"plugin {owner} registered its options class twice")
                self._options_types[owner] = options_cls

            return register

        collect(self.pm, "carecrm_register_storage_backends", storage_register)
        collect(self.pm, "carecrm_register_options", options_register)
        collect(self.pm, "carecrm_register_sources", class_register(self.sources, "connector_id", "source"))
        collect(
            self.pm,
            "carecrm_register_scoring_models",
            class_register(self.scoring_models, "model_id", "scoring"),
        )
        collect(
            self.pm,
            "carecrm_register_attribution_models",
            class_register(self.attribution_models, "model_id", "attribution"),
        )
        collect(
            self.pm,
            "carecrm_register_segment_builders",
            class_register(self.segment_builders, "builder_id", "segment"),
        )

    def _check_component_options(self) -> None:
        """Structure, at start-up, the options the practice gave to plugins that declare
        their options class, and check that every ``[attribution.models.<id>]`` names a
        registered model with valid options.

        :raises ConfigError: naming the plugin, the key and the known keys.
        :raises UnknownComponentError: for an attribution model no plugin registers.
        """
        for name in self._options_types:
            self.plugin_options(name)
        for model_id in self.settings.attribution.models:
            if model_id not in self.attribution_models:
                raise UnknownComponentError("attribution model", model_id, self.attribution_models.names())
            self.attribution_model(model_id)

    # ------------------------------------------------------------------ keys and storage

    @property
    def keys(self) -> KeyRing:
        """The key ring, loaded on first use.  :raises CryptoError: if missing or unreadable."""
        if self._keys is not None:
            return self._keys
        with _OPEN_LOCK:
            return self._load_keys()

    def _load_keys(self) -> KeyRing:
        if self._keys is None:
            if self.settings.keys_json:
                self._keys = KeyRing.from_json(self.settings.keys_json, origin="CARECRM_KEYS")
            elif self.settings.key_file is not None:
                self._keys = KeyRing.from_file(self.settings.key_file)
            else:
                raise CryptoError(
                    "no keys configured: set [keys] file in carecrm.toml, CARECRM_KEY_FILE or CARECRM_KEYS"
                )
        return self._keys

    @property
    def mapper(self) -> RecordMapper:
        """The encryption boundary (domain ⇄ stored records)."""
        if self._mapper is None:
            with _OPEN_LOCK:
                if self._mapper is None:
                    self._mapper = RecordMapper(self.keys)
        return self._mapper

    @property
    def read_path(self) -> ReadPath:
        """The one read path for personal data (:mod:`carecrm.core.read_path`): decrypts
        for an actor and a purpose and writes the audit entry."""
        if self._read_path is None:
            with _OPEN_LOCK:
                if self._read_path is None:
                    self._read_path = ReadPath(self.mapper, self.audit)
        return self._read_path

    def open_backend(self, url: str | None = None, options: dict[str, Any] | None = None) -> StorageBackend:
        """Open a backend by URL (default ``[storage] url``) without checking its schema.

        :raises UnknownComponentError: if no backend serves the URL's scheme (listing those that do).
        """
        url = url or self.settings.storage_url
        scheme = url.split("://", 1)[0] if "://" in url else ""
        name = self._schemes.get(scheme)
        if name is None:
            raise UnknownComponentError("storage URL scheme", scheme or url, self._schemes)
        entry = self.storage_backends.get(name)
        return entry.factory(url, dict(options if options is not None else self.settings.storage_options))

    @property
    def storage(self) -> StorageBackend:
        """The practice's storage, opened on first use and checked: its schema version must
        be this release's, and the keys must be the ones it was written with.

        :raises SchemaVersionError: for a database of another schema version.
        :raises CryptoError: when the keys do not match the database.
        :raises BackendUnavailable: when it cannot be opened.
        """
        if self._storage is None:
            with _OPEN_LOCK:
                if self._storage is None:
                    backend = self.open_backend()
                    try:
                        self._verify(backend)
                    except BaseException:
                        backend.close()
                        raise
                    self._storage = backend
        return self._storage

    def _verify(self, backend: StorageBackend) -> None:
        from carecrm.core.errors import SchemaVersionError

        version = backend.schema_version()
        if version is None:
            raise SchemaVersionError(
                f"{backend.url_display} holds no carecrm schema: run `carecrm init` (or `carecrm storage upgrade`)"
            )
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{backend.url_display} was written by a newer carecrm (schema {version}, this release reads "
                f"{SCHEMA_VERSION}): upgrade carecrm"
            )
        if version < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{backend.url_display} has schema {version}; this release needs {SCHEMA_VERSION}: "
                "run `carecrm storage upgrade`"
            )
        with backend.unit_of_work() as uow:
            stored = uow.meta.get(_META_KEY_CHECK)
            if stored is None:
                uow.meta.set(_META_KEY_CHECK, self.keys.check_value())
                uow.commit()
            elif not self.keys.matches_check_value(stored):
                raise CryptoError(
                    "the keys do not match this database (wrong key file or CARECRM_KEYS?); nothing was read or written"
                )

    def create_schema(self) -> None:
        """Create the schema on the configured storage and record the key check value."""
        backend = self.open_backend()
        try:
            backend.create_schema()
            self._verify(backend)
        except BaseException:
            backend.close()
            raise
        self._storage = backend

    def close(self) -> None:
        """Close the storage."""
        if self._storage is not None:
            self._storage.close()
            self._storage = None

    def __enter__(self) -> CareCRM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plugins

    def plugin_options(self, name: str) -> Any:
        """The ``[plugins.<name>]`` options of plugin ``name``.

        :returns: an instance of the options class the plugin declared through
            ``carecrm_register_options`` (defaults when the table is absent); for a plugin
            that declares none (deprecated), a copy of the table as a dict (empty when absent).
        :raises ConfigError: for an unknown key or a wrong type, naming the plugin, the key
            and the known keys.
        """
        options_type = self._options_types.get(name)
        table = self.settings.plugin_options.get(name, {})
        if options_type is None:
            return dict(table)
        cached = self._plugin_options.get(name)
        if cached is None:
            cached = structure_options(options_type, table, section=f"plugins.{name}", owner=f"plugin {name}")
            self._plugin_options[name] = cached
        return cached

    def plugins_info(self) -> list[PluginInfo]:
        """Every registered plugin with families, origin and components, for ``carecrm plugins``."""
        out = []
        for name, plugin in self.pm.list_name_plugin():
            if plugin is None:
                continue
            out.append(
                PluginInfo(
                    name=name,
                    families=families_of(self.pm, plugin),
                    origin=origin_of(self.pm, plugin),
                    components=tuple(self._components.get(name, ())),
                )
            )
        return out

    def plugin_enabled(self, name: str) -> bool:
        """Built-ins are always enabled; a third-party plugin is enabled unless
        ``[plugins] enabled`` lists others only."""
        if name in DEFAULT_PLUGINS or self.settings.enabled_plugins is None:
            return True
        return name in self.settings.enabled_plugins

    def connector(self, source: str) -> SourceConnector:
        """The configured connector of ``source`` (a ``[sources.<name>]`` table, or a
        registered connector id used with no options).

        :raises UnknownComponentError: listing the configured sources and connectors.
        """
        cached = self._connectors.get(source)
        if cached is not None:
            return cached
        connector = self._make_connector(source)
        self._connectors[source] = connector
        return connector

    def _make_connector(self, source: str) -> SourceConnector:
        settings = self.settings.sources.get(source)
        if settings is None:
            if not (source in self.sources and source != "mapped"):
                known = sorted(set(self.settings.sources) | (set(self.sources.names()) - {"mapped"}))
                raise UnknownComponentError("source", source, known)
            connector_id, table = source, {}
        else:
            connector_id, table = settings.connector, settings.options
        cls_ = self.sources.get(connector_id)
        practice = self.settings.practice
        connector = build_component(
            cls_,
            name=source,
            table=table,
            settings=self.settings,
            section=f"sources.{source}",
            owner=f"source {source!r} (connector {connector_id!r} of plugin {self.sources.owner(connector_id)})",
            legacy=lambda options: cls_(source, options, practice),
        )
        connector.bind_digest(lambda data: self.keys.digest(b"record\x1f" + data))
        return connector

    def source_secret(self, source: str) -> str | None:
        """The resolved ``secret`` of a source (``$env:`` / ``$file:`` references read)."""
        from carecrm.core.config import resolve_secret

        settings = self.settings.sources.get(source)
        if settings is None:
            return None
        return resolve_secret(settings.secret, what=f"sources.{source}.secret")

    def match(self, candidate: MatchCandidate, uow: Any) -> MatchResult:
        """Ask the matching hook (plugins first, the exact matcher last)."""
        result = self.pm.hook.carecrm_match_contact(candidate=candidate, uow=uow, app=self)
        if result is None:
            return MatchResult(contact_id=None, rule="new")
        return result  # type: ignore[no-any-return]

    def dispatch(self, events: Iterable[ev.Event]) -> None:
        """Deliver ``events`` to ``carecrm_track_event`` at once, in memory, through
        pluggy's hook callers (wrappers and ``CARECRM_TRACE_PLUGINS`` see them); an
        implementation's exception is logged with its plugin's name, never stops the other
        plugins and never undoes committed data.  Then run the work deferred with
        :meth:`after_dispatch` during the delivery (see :mod:`carecrm.core.dispatch`).

        The use cases never call this directly: they write their events to the outbox
        in the unit of work of the change (:func:`carecrm.core.outbox.publish`) and call
        :meth:`deliver_events` after the commit, which delivers through here."""
        EventDispatcher(self.pm, self).dispatch(events)

    def events_relay(self, subscriber: str = LIVE_SUBSCRIBER) -> OutboxRelay:
        """The relay of the outbox to ``subscriber`` (default: the in-process
        ``carecrm_track_event`` delivery, :meth:`dispatch`).  A server's worker or a
        scheduler builds its own subscriber with :class:`~carecrm.core.outbox.OutboxRelay`."""
        dispatcher = EventDispatcher(self.pm, self)
        return OutboxRelay(self.storage, subscriber, dispatcher.dispatch)

    def deliver_events(self) -> RelayReport:
        """Deliver every committed event not yet given to ``carecrm_track_event``, in commit
        order, from the durable outbox (:mod:`carecrm.core.outbox`): the events of the
        write just committed, and any a crashed process committed but never delivered.
        Called after every commit that wrote events; ``carecrm events deliver`` runs it by
        hand.  When another process is delivering, returns at once (it delivers these
        too).  Never raises for a plugin's failure (logged)."""
        return self.events_relay().run()

    def pending_events(self) -> int:
        """How many committed events ``carecrm_track_event`` has not been given yet."""
        return self.events_relay().pending()

    def prune_events(self, *, older_than: timedelta = timedelta(days=30)) -> int:
        """Delete outbox events already delivered and written more than ``older_than`` ago
        (default 30 days); returns how many (``carecrm events prune``)."""
        return prune_outbox(self.storage, [LIVE_SUBSCRIBER], older_than=older_than)

    def after_dispatch(self, key: str, callback: Callable[[], None]) -> None:
        """Run ``callback()`` once after the events being dispatched have all been
        delivered (a plugin batches work over an ingest batch: scoring rescores each
        contact once); outside a dispatch, at once.  The same ``key`` registered again in
        one batch runs once.  A failure is logged with ``key`` and never undoes committed
        data; work that dispatches events of its own runs those at once.  The deferred
        work belongs to the delivery in progress, not to the app (concurrent callers
        never share it)."""
        EventDispatcher(self.pm, self).after_dispatch(key, callback)

    def collect_after_dispatch(self, key: str, item: Hashable, flush: Callable[[list[Any]], None]) -> None:
        """Add ``item`` to the batch ``key`` of the delivery in progress; ``flush(items)``
        runs once after it with the distinct items (first-added order); outside a
        dispatch ``flush([item])`` runs at once.  Failures are logged as for
        :meth:`after_dispatch`."""
        EventDispatcher(self.pm, self).collect(key, item, flush)

    def classify_touchpoint(self, tp: Touchpoint) -> Touchpoint:
        """Fill ``channel_group`` from the practice's rules when a connector did not set it.

        The memo is shared by concurrent callers: a classification is a pure function of
        the touchpoint, and each dict read or write is atomic, so a race costs at most a
        second classification."""
        if tp.channel_group is not None or tp.is_empty():
            return tp
        cached = self._classified.get(tp)
        if cached is None:
            from carecrm.core.channels import classify

            cached = attrs.evolve(tp, channel_group=classify(tp, self.settings.channel_groups.as_config()))
            if len(self._classified) < 4096:  # touchpoints repeat across a campaign's leads
                self._classified[tp] = cached
        return cached

    # ------------------------------------------------------------------ audit

    @property
    def audit_trail(self) -> AuditTrail:
        """The audit log's writer and checker (:class:`carecrm.core.audit.AuditTrail`) on the
        current storage (built per use: it holds no state of its own)."""
        return AuditTrail(self.storage, self.keys)

    def audit(
        self,
        uow: UnitOfWork,
        actor: Actor,
        action: str,
        *,
        contact_id: uuid.UUID | None = None,
        purpose: str | None = None,
        fields: Sequence[str] = (),
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append an audit-log entry in ``uow``, chained to the last one (HIPAA 45 CFR
        164.312(b)); call it last in a unit of work, just before its commit (see
        :meth:`carecrm.core.audit.AuditTrail.append`).

        :raises ConflictError: lock wait timeout or deadlock (retry the unit)."""
        self.audit_trail.append(
            uow, actor, action, contact_id=contact_id, purpose=purpose, fields=fields, details=details
        )

    def audit_head(self) -> str | None:
        """The audit log's head anchor ``seq:hash:mac`` (None for an empty log): export it on
        a schedule (see :meth:`carecrm.core.audit.AuditTrail.head`)."""
        return self.audit_trail.head()

    def audit_log(self, *, limit: int = 50, contact_id: uuid.UUID | None = None) -> list[AuditRecord]:
        """The newest ``limit`` audit-log entries, oldest first, optionally about one contact
        (``carecrm audit log``; see :meth:`carecrm.core.audit.AuditTrail.entries`)."""
        return self.audit_trail.entries(limit=limit, contact_id=contact_id)

    def verify_audit_chain(self, *, expected_head: str | None = None) -> tuple[bool, int, str | None]:
        """Recompute the audit chain: ``(ok, entries checked, None or what is wrong)`` (see
        :meth:`carecrm.core.audit.AuditTrail.verify`)."""
        return self.audit_trail.verify(expected_head=expected_head)

    # ------------------------------------------------------------------ ingest

    @property
    def inbox(self) -> Inbox:
        """The inbox stage of ingest (:class:`carecrm.core.ingest.inbox.Inbox`) on the
        current storage: ``ingest_payloads`` and the operators' ``inbox_*`` calls go
        through it."""
        return Inbox(
            storage=self.storage,
            settings=self.settings,
            mapper=self.mapper,
            read_path=self.read_path,
            audit=self.audit_trail,
            connector=self.connector,
            secret=self.source_secret,
            ingestor=self._ingestor,
        )

    def ingest_payloads(
        self, source: str, payloads: Iterable[RawPayload], *, actor: Actor, verify: bool = True
    ) -> IngestReport:
        """Ingest raw payloads of ``source`` by ``actor`` through the encrypted inbox (see
        :meth:`carecrm.core.ingest.inbox.Inbox.ingest_payloads`; ``verify=False`` skips
        signature checks for the practice's own exports).

        :raises UnknownComponentError: if ``source`` is not configured (listing those that are).
        :raises ConfigError: if the source's secret is missing or cannot be resolved.
        """
        return self.inbox.ingest_payloads(source, payloads, actor=actor, verify=verify)

    def _ingestor(self, actor: Actor) -> Ingestor:
        """The ingest engine for one call by ``actor`` (see :mod:`carecrm.core.ingest`)."""
        return Ingestor(self, actor=actor)

    def ingest(self, events: Iterable[LeadEvent], *, actor: Actor) -> IngestReport:
        """Ingest lead events that did not come through the inbox (a connector run in code,
        an import).  Same rules as :meth:`ingest_payloads` from normalization on; ``actor``
        is named by the audit entries and the implied stage moves."""
        report = IngestReport()
        items: list[tuple[LeadEvent, uuid.UUID | None]] = [(e, None) for e in events]
        self._ingestor(actor).run(items, report)
        return report

    # ------------------------------------------------------------------ inbox

    def inbox_list(self, *, status: str | None = None, source: str | None = None, limit: int = 100) -> list[InboxItem]:
        """Inbox entries, newest first (no payload content)."""
        return self.inbox.list(status=status, source=source, limit=limit)

    def inbox_show(self, inbox_id: uuid.UUID, *, actor: Actor) -> tuple[InboxItem, RawPayload]:
        """One entry and its decrypted payload (an audited read by ``actor``).

        :raises NotFound: if there is no such entry.
        """
        return self.inbox.show(inbox_id, actor=actor)

    def inbox_retry(self, inbox_id: uuid.UUID, *, actor: Actor) -> IngestReport:
        """Process a stored payload again (after fixing config or a connector).

        :raises NotFound: if there is no such entry.
        :raises CareCRMError: if it was discarded.
        """
        return self.inbox.retry(inbox_id, actor=actor)

    def inbox_discard(self, inbox_id: uuid.UUID, *, actor: Actor, reason: str | None = None) -> None:
        """Mark an entry discarded by ``actor`` (never processed again; purged later; audited).

        :raises NotFound: if there is no such entry.
        """
        self.inbox.discard(inbox_id, actor=actor, reason=reason)

    def inbox_purge(self, *, now: datetime | None = None) -> int:
        """Delete processed, ignored and discarded payloads past ``[ingest]
        inbox_retention_days``; quarantined ones stay.  Returns how many."""
        return self.inbox.purge(now=now)

    # ------------------------------------------------------------------ contacts

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
            self._ingestor(actor).prepare(event, 0, check, None)
        except ValidationFailed as exc:
            raise ValidationFailed("manual", "new contact", exc.field, exc.reason) from None
        if check.warnings:
            # name the field that was refused (an invalid email, a free-text service interest)
            detail = check.warnings[0].split(": field ", 1)[-1]
            field = detail.split("'")[1] if detail.count("'") >= 2 else "input"
            reason = detail.split("': ", 1)[-1].removesuffix("; dropped")
            raise ValidationFailed("manual", "new contact", field, reason)
        report = self.ingest([event], actor=actor)
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
            rec = self._resolve_record(uow, ref)
            contact = self.read_path.contact(uow, rec, actor=actor, purpose=purpose)
            uow.commit()
        return contact

    def _resolve_id(self, uow: UnitOfWork, ref: str | uuid.UUID) -> uuid.UUID:
        """The id of the one active contact ``ref`` names (id, email or phone), following
        merges; reads no personal data (blind indexes only), so it is not audited itself."""
        return self._resolve_record(uow, ref).id

    def _resolve_record(self, uow: UnitOfWork, ref: str | uuid.UUID) -> ContactRecord:
        """The stored record of the contact ``ref`` names (see :meth:`_resolve_id`): a whole
        id, a short id (:mod:`carecrm.core.short_ids`), an email or a phone.  Text of
        decimal digits only is read as a phone number first, then as a short id."""
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
                return self._record_by_identity(uow, text)
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
        return self._record_by_identity(uow, text)

    def _record_by_identity(self, uow: UnitOfWork, text: str) -> ContactRecord:
        """The one active contact with the email or phone ``text`` (blind indexes only)."""
        kind = "email" if "@" in text else "phone"
        try:
            if kind == "email":
                value = normalize_email(text)
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

    def resolve_id(self, kind: str, ref: str | uuid.UUID) -> uuid.UUID:
        """The whole id a command-line id names: a UUID as it is, or a short id (the last
        hex digits, as tables show them; :mod:`carecrm.core.short_ids`) resolved among
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
        with self.storage.unit_of_work() as uow:
            return short_ids.resolve(uow, kind, suffix)

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
                keys.append(("email", self.mapper.identity_bidx("email", normalize_email(email))))
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
            rec = self._resolve_record(uow, ref)
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
            rec = self._resolve_record(uow, ref)
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
            self.audit(uow, actor, "note.add", contact_id=rec.id, fields=["note"])
            publish(
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
        self.deliver_events()
        return note

    # ------------------------------------------------------------------ pipeline

    def set_stage(
        self, ref: str | uuid.UUID, stage: str, *, actor: Actor, reason: str | None = None
    ) -> StageChange:
        """``actor``'s move of a contact to ``stage`` (always wins over implied moves): one
        ``stage.set`` audit entry, in the same transaction as the change (the contact is
        resolved by id or blind index, nothing is decrypted).

        ``lost`` needs a reason.  A reason that is a short code (``too_expensive``) is kept in
        clear in the stage history for reports; free text ("worried about the cost after her
        diagnosis") may hold health information, so it is kept only encrypted, as the body of
        the ``stage.changed`` interaction on the timeline, and the history records the code
        ``free_text`` (HIPAA 45 CFR 164.312(a)(2)(iv)).

        :raises InvalidTransition: if the pipeline does not allow it (lists the allowed stages).
        :raises ValueError: for an unknown stage or a ``lost`` move without a reason.
        :raises ConflictError: if the contact changed meanwhile (retry).
        """
        pipeline = self.settings.pipeline
        now = utcnow()
        with self.storage.unit_of_work() as uow:
            rec = self._resolve_record(uow, ref)
            if stage == "lost" and not reason:
                raise ValueError("moving to 'lost' needs a reason code (--reason)")
            pipeline.check_move(rec.stage, stage)
            code = reason if reason is None or is_reason_code(reason) else "free_text"
            move = plan_move(
                mapper=self.mapper,
                pipeline=pipeline,
                rec=rec,
                key=self.mapper.key_of(rec),
                to_stage=stage,
                at=now,
                now=now,
                actor=actor,
                reason=code,
                free_text=reason if code == "free_text" else None,
            )
            uow.contacts.update(move.contact)
            uow.stages.add(move.change)
            uow.interactions.add(move.entry)
            self.audit(uow, actor, "stage.set", contact_id=rec.id, details={"from": rec.stage, "to": stage})
            publish(uow, [move.event])
            uow.commit()
        self.deliver_events()
        return StageChange(**attrs.asdict(move.change, recurse=False))

    def stage_history(self, contact_id: uuid.UUID) -> list[StageChange]:
        """A contact's stage changes, oldest first."""
        with self.storage.unit_of_work() as uow:
            return self.read_path.stage_history(uow.stages.history(contact_id))

    def pipeline_report(self, *, now: datetime | None = None) -> list[StageSummary]:
        """Contacts per stage, the median time (seconds) they have been in it, and their
        speed to lead (median business seconds; :meth:`speed_to_lead`)."""
        now = now or utcnow()
        durations: dict[str, list[float]] = {s: [] for s in self.settings.pipeline.all_stages}
        located: dict[uuid.UUID, tuple[str, str | None]] = {}
        with self.storage.unit_of_work() as uow:
            after = None
            while True:
                page = uow.contacts.list(after=after, limit=1000)
                if not page:
                    break
                for rec in page:
                    since = rec.stage_changed_at or rec.created_at
                    durations.setdefault(rec.stage, []).append(max(0.0, (now - since).total_seconds()))
                    located[rec.id] = (rec.stage, rec.location)
                after = page[-1].id
            speeds = self.speed_to_lead_values(uow, {cid: loc for cid, (_, loc) in located.items()})
        by_stage: dict[str, list[float | None]] = {}
        for cid, value in speeds.items():
            by_stage.setdefault(located[cid][0], []).append(value)
        return [
            StageSummary(
                stage=s,
                count=len(d),
                median_seconds=statistics.median(d) if d else None,
                speed_to_lead=SpeedToLeadSummary.of(by_stage.get(s, [])),
            )
            for s, d in durations.items()
        ]

    # ------------------------------------------------------------------ reviews

    def review_pairs(self, contact_id: uuid.UUID | None = None) -> list[tuple[uuid.UUID, uuid.UUID, str]]:
        """Open pairs of contacts awaiting review: (a, b, reason)."""
        with self.storage.unit_of_work() as uow:
            recs = uow.reviews.for_contact(contact_id) if contact_id else uow.reviews.list(status="open")
        return [(r.contact_a, r.contact_b, r.reason) for r in recs if r.status == "open"]

    # ------------------------------------------------------------------ storage admin

    def storage_check(self) -> dict[str, Any]:
        """Ping the configured storage and describe it (never raises for a schema mismatch:
        the answer says what to do)."""
        backend = self.open_backend()
        try:
            info = dict(backend.check())
            version = info.get("schema_version")
            info["expected_schema_version"] = SCHEMA_VERSION
            if version is None:
                info["advice"] = "no carecrm schema: run `carecrm init` or `carecrm storage upgrade`"
            elif version < SCHEMA_VERSION:
                info["advice"] = "run `carecrm storage upgrade`"
            elif version > SCHEMA_VERSION:
                info["advice"] = "written by a newer carecrm: upgrade carecrm"
            else:
                info["counts"] = _counts(backend)
            return info
        finally:
            backend.close()

    def storage_upgrade(self) -> list[str]:
        """Upgrade the configured storage to this release's schema; returns the steps applied."""
        backend = self.open_backend()
        try:
            if backend.schema_version() is None:
                backend.create_schema()
                return ["create schema"]
            return backend.upgrade()
        finally:
            backend.close()

    def counts(self) -> dict[str, int]:
        """Row counts per kind of record (for checks and migrations)."""
        return _counts(self.storage)


def default_actor() -> Actor:
    """``CARECRM_ACTOR`` (``NAME[:ROLE]``), else the operating-system user as admin."""
    import getpass
    import os

    text = os.environ.get("CARECRM_ACTOR")
    if text:
        return Actor.parse(text)
    try:
        name = getpass.getuser()
    except (KeyError, OSError):
        name = "unknown"
    return Actor(name=name, role="admin")


def _counts(backend: StorageBackend) -> dict[str, int]:
    """Row counts per kind of record of a backend (no personal data is read)."""
    with backend.unit_of_work() as uow:
        return {
            "contacts": uow.contacts.count(),
            "identities": uow.identities.count(),
            "interactions": uow.interactions.count(),
            "stage_changes": uow.stages.count(),
            "appointments": uow.appointments.count(),
            "consents": uow.consents.count(),
            "inbox": uow.inbox.count(),
        }
