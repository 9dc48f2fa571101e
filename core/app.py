"""The :class:`CareCRM` facade: settings, plugins, registries, keys, storage, use cases.

The CLI and any other front end call this object only.  It is cheap to build: the key
ring and the storage backend are opened on first use, so ``carecrm --help`` and
``carecrm plugins`` never touch the database.
"""

from __future__ import annotations

import json
import logging
import statistics
import threading
import uuid
from collections import deque
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import attrs
import pluggy

from carecrm.core import events as ev
from carecrm.core import short_ids
from carecrm.core.attribution import AttributionModel
from carecrm.core.attribution_api import AttributionMixin
from carecrm.core.config import Settings, load_settings
from carecrm.core.connectors import SourceConnector
from carecrm.core.coordination_api import CoordinationMixin, SpeedToLeadSummary
from carecrm.core.crypto import KeyRing
from carecrm.core.dispatch import EventDispatcher
from carecrm.core.errors import (
    CareCRMError,
    ConfigError,
    CryptoError,
    NotFound,
    PluginError,
    UnknownComponentError,
    ValidationFailed,
)
from carecrm.core.identity import IdentityError, normalize_email, normalize_name, normalize_phone
from carecrm.core.ids import new_id
from carecrm.core.ingest import Ingestor, IngestReport, Quarantined, is_reason_code
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
from carecrm.core.records import ACTIVE, AuditRecord, ContactRecord, InboxRecord
from carecrm.core.scoring import ScoringModel
from carecrm.core.scoring_api import ScoringMixin
from carecrm.core.segments_api import SegmentBuilder, SegmentsMixin
from carecrm.core.short_ids import id_suffix, looks_like_phone
from carecrm.core.storage import SCHEMA_VERSION, StorageBackend, StorageFactory, TimelineCursor, UnitOfWork
from carecrm.core.timeutil import utcnow

log = logging.getLogger("carecrm")

_T = TypeVar("_T")

#: Default time-zone-free settings for a brand-new practice written by ``init``.
_META_KEY_CHECK = "key_check"
_META_AUDIT_HEAD = "audit_head"
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


@attrs.frozen(kw_only=True)
class InboxItem:
    """An inbox entry as shown to people: everything clear about a stored payload."""

    id: uuid.UUID
    source: str
    received_at: datetime
    status: str
    reason: str | None
    processed_at: datetime | None
    attempts: int


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
        """Deliver committed events to ``carecrm_track_event`` through pluggy's hook
        callers (wrappers and ``CARECRM_TRACE_PLUGINS`` see them); an implementation's
        exception is logged with its plugin's name, never stops the other plugins and
        never undoes committed data.  Then run the work deferred with
        :meth:`after_dispatch` during the delivery (see :mod:`carecrm.core.dispatch`)."""
        EventDispatcher(self.pm, self).dispatch(events)

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
        """Append an audit-log entry in ``uow`` (HIPAA 45 CFR 164.312(b)), chained to the last
        one by a keyed hash, and move the keyed head anchor (``meta.audit_head``) to it, so an
        edited, deleted or cut-off entry is detectable.  ``fields`` and ``details`` hold
        names and counts, never values; ``actor`` is who acted (every caller passes its own).

        Concurrent writers: the head anchor is read with
        :meth:`~carecrm.core.storage.MetaRepository.get_for_update`, so the head stays
        locked until ``uow`` ends and two processes never take the same ``seq``; call this
        last in a unit of work, just before its commit, so the lock is held for as short a
        time as possible (appends serialize, nothing else does).

        :raises ConflictError: lock wait timeout or deadlock (retry the unit)."""
        # the chain's head from its anchor (one small row, locked), else from the log itself
        head = uow.meta.get_for_update(_META_AUDIT_HEAD)
        prev: str | None
        if head is not None and head.count(":") == 2:
            seq_text, prev_hash, _ = head.split(":")
            seq, prev = int(seq_text) + 1, prev_hash
        else:
            last = uow.audit.last()
            seq = 1 if last is None else last.seq + 1
            prev = None if last is None else last.hash
        rec = AuditRecord(
            seq=seq,
            id=new_id(),
            at=utcnow(),
            actor=actor.name,
            role=actor.role,
            action=action,
            contact_id=contact_id,
            purpose=purpose,
            fields=list(fields),
            details=details or {},
            prev_hash=prev,
            hash="",
        )
        rec = attrs.evolve(rec, hash=self.keys.audit_mac(prev, _audit_body(rec)))
        uow.audit.append(rec)
        uow.meta.set(_META_AUDIT_HEAD, self._audit_head_value(rec.seq, rec.hash))

    def _audit_head_value(self, seq: int, entry_hash: str) -> str:
        return f"{seq}:{entry_hash}:{self.keys.audit_mac(None, f'head:{seq}:{entry_hash}'.encode())}"

    def audit_head(self) -> str | None:
        """The audit log's head anchor ``seq:hash:mac`` (None for an empty log).

        Export it on a schedule (print it into a ticket, a WORM bucket, an email to the
        privacy officer): ``verify_audit_chain(expected_head=...)`` with an exported value
        then proves that no entry up to it was removed, even by someone holding the database.
        """
        with self.storage.unit_of_work() as uow:
            return uow.meta.get(_META_AUDIT_HEAD)

    def audit_log(self, *, limit: int = 50, contact_id: uuid.UUID | None = None) -> list[AuditRecord]:
        """The newest ``limit`` audit-log entries, oldest first (for ``carecrm audit log``).

        Entries hold who (actor and role), what (action, purpose, field names, counts)
        and which contact id, never personal data, so reading them is not itself audited.
        The log is read from its start (it has no index by time); fine for a person's
        review, not for a hot path.

        :param contact_id: keep only the entries about this contact.
        """
        tail: deque[AuditRecord] = deque(maxlen=max(1, limit))
        with self.storage.unit_of_work() as uow:
            for rec in uow.audit.iter():
                if contact_id is None or rec.contact_id == contact_id:
                    tail.append(rec)
        return list(tail)

    def verify_audit_chain(self, *, expected_head: str | None = None) -> tuple[bool, int, str | None]:
        """Recompute the audit chain.

        Checks every entry's keyed hash and link, that the last entry is the keyed head
        anchor stored with the log (a cut-off tail or an emptied log is detected), and, given
        ``expected_head`` (an anchor exported earlier), that the log still reaches it.

        :returns: ``(ok, entries checked, None or what is wrong)``.
        """
        prev = None
        n = 0
        last: AuditRecord | None = None
        with self.storage.unit_of_work() as uow:
            expected_seq = 1
            for rec in uow.audit.iter():
                if (
                    rec.seq != expected_seq
                    or rec.prev_hash != prev
                    or self.keys.audit_mac(prev, _audit_body(rec)) != rec.hash
                ):
                    return False, n, f"entry seq {rec.seq} was edited, or entries before it were removed"
                prev, n, expected_seq, last = rec.hash, n + 1, expected_seq + 1, rec
                if expected_head and expected_head.split(":")[:2] == [str(rec.seq), rec.hash]:
                    expected_head = None  # reached
            head = uow.meta.get(_META_AUDIT_HEAD)
            has_data = uow.contacts.count() > 0 or uow.inbox.count() > 0
        if expected_head:
            return False, n, "the log no longer reaches the exported head: entries were removed"
        if head is None:
            if last is not None or has_data:
                return False, n, "the head anchor is missing: the log was truncated or emptied"
            return True, n, None
        try:
            seq_text, head_hash, _ = head.split(":")
            head_ok = head == self._audit_head_value(int(seq_text), head_hash)
        except ValueError:
            head_ok = False
        if not head_ok:
            return False, n, "the head anchor was altered"
        if last is None or (last.seq, last.hash) != (int(seq_text), head_hash):
            return False, n, f"the log ends before its head anchor (seq {seq_text}): entries were removed"
        return True, n, None

    # ------------------------------------------------------------------ ingest

    def ingest_payloads(
        self, source: str, payloads: Iterable[RawPayload], *, actor: Actor, verify: bool = True
    ) -> IngestReport:
        """Ingest raw payloads of ``source``: each is written to the (encrypted) inbox first,
        its signature verified when a secret is configured, parsed by the source's
        connector, and its lead events ingested.  A payload that fails verification or
        parsing is quarantined whole with its reason; a bad record is quarantined while
        the payload's other records go in.  A byte-identical re-delivery of a processed
        payload is counted as a duplicate and changes nothing; one of a quarantined payload
        is processed again in the same inbox entry.  Afterwards processed payloads older
        than ``[ingest] inbox_retention_days`` are purged.

        :param actor: who ingests (a webhook receiver, a person running ``carecrm ingest``):
            named by the batch's ``ingest`` audit entries and the stage moves the leads imply.
        :param verify: check signatures (False for payloads exported by the practice itself;
            then no secret is needed).

        :raises UnknownComponentError: if ``source`` is not configured (listing those that are).
        :raises ConfigError: if the source's secret reference cannot be resolved.
        """
        connector = self.connector(source)
        secret = self.source_secret(source) if verify else None
        if verify and secret is None and getattr(connector, "signed", False):
            raise ConfigError(
                f"source {source!r} verifies signatures but has no secret: set [sources.{source}] secret "
                '(e.g. "$env:NAME"), so unsigned payloads are never accepted silently'
            )
        report = IngestReport()
        pending: list[tuple[InboxRecord, RawPayload]] = []
        chunk = max(1, self.settings.batch_size)
        buffer: list[RawPayload] = []

        def flush() -> None:
            if not buffer:
                return
            records = [(self.mapper.inbox_to_record(new_id(), source, payload), payload) for payload in buffer]
            digests = [rec.digest for rec, _ in records]

            def store(uow: UnitOfWork) -> dict[str, InboxRecord]:
                # the same bytes again: after a processed copy nothing changes; a quarantined,
                # discarded or unfinished copy is processed again in its own inbox entry.
                # One row per (source, digest): stored with insert-or-skip, so a concurrent
                # receiver of the same bytes (another process, another worker) keeps the
                # same row, and both agree on its status
                before = {r.digest: r for r in uow.inbox.find_digests(source, digests)}
                uow.inbox.add_new([rec for rec, _ in records if rec.digest not in before])
                found = {r.digest: r for r in uow.inbox.find_digests(source, digests)}
                uow.commit()
                return found

            stored = self._retrying(store)
            seen: set[str] = set()
            for rec, payload in records:
                if rec.digest in seen:  # the same bytes twice in one batch: once
                    report.duplicate_payloads += 1
                    continue
                seen.add(rec.digest)
                row = stored.get(rec.digest, rec)
                if row.status == "processed":
                    report.duplicate_payloads += 1
                    continue
                pending.append((row, payload))
            buffer.clear()
            self._process(connector, secret if verify else None, pending, report, actor)
            pending.clear()

        for payload in payloads:
            report.payloads += 1
            buffer.append(payload)
            if len(buffer) >= chunk:
                flush()
        flush()
        # retention: processed payloads leave the inbox after [ingest] inbox_retention_days
        report.purged_payloads = self.inbox_purge()
        return report

    def _process(
        self,
        connector: SourceConnector,
        secret: str | None,
        items: list[tuple[InboxRecord, RawPayload]],
        report: IngestReport,
        actor: Actor,
    ) -> None:
        events: list[tuple[LeadEvent, uuid.UUID | None]] = []
        failed: dict[uuid.UUID, list[Quarantined]] = {}
        empty: set[uuid.UUID] = set()
        for rec, payload in items:
            try:
                if secret is not None:
                    connector.verify(payload, secret)
                produced = list(connector.parse(payload))
            except ValidationFailed as exc:
                failed.setdefault(rec.id, []).append(Quarantined(exc.source, exc.record, exc.field, exc.reason, rec.id))
                continue
            except Exception as exc:  # noqa: BLE001 - any connector failure quarantines this payload only
                # (a RecursionError from a deeply nested body, a connector bug): the exception's
                # text may quote the payload, so only its type is kept
                failed.setdefault(rec.id, []).append(
                    Quarantined(connector.name, "payload", "body", f"cannot be parsed ({type(exc).__name__})", rec.id)
                )
                continue
            if not produced:
                report.empty_payloads += 1
                empty.add(rec.id)
            for item in produced:
                if isinstance(item, ValidationFailed):
                    report.records += 1
                    failed.setdefault(rec.id, []).append(
                        Quarantined(item.source, item.record, item.field, item.reason, rec.id)
                    )
                else:
                    events.append((item, rec.id))
        before = len(report.quarantined)
        for qs in failed.values():
            report.quarantined.extend(qs)
        self._ingestor(actor).run(events, report)
        # every payload with a quarantined record stays quarantined with its reasons; the
        # report names the payload's file, the inbox's clear reason does not (see Quarantined)
        origins = {rec.id: payload.origin for rec, payload in items}
        bad: dict[uuid.UUID, list[str]] = {}
        for q in report.quarantined[before:]:
            if q.inbox_id is not None:
                bad.setdefault(q.inbox_id, []).append(q.message(with_payload=False))
                if q.payload is None:
                    q.payload = origins.get(q.inbox_id) or f"inbox {q.inbox_id}"
        now = utcnow()
        ignored = [rec.id for rec, _ in items if rec.id in empty and rec.id not in bad]
        done = [rec.id for rec, _ in items if rec.id not in empty and rec.id not in bad]
        def mark(uow: UnitOfWork) -> None:
            for iid, reasons in bad.items():
                uow.inbox.set_status_many([iid], "quarantined", reason="; ".join(reasons)[:2000], processed_at=now)
            if ignored:
                # nothing to ingest (another event type, or an `only_if` that matched nothing):
                # kept as "ignored", so a re-delivery or a retry after a config fix processes it
                # again; purged with processed payloads
                uow.inbox.set_status_many(ignored, "ignored", reason="no lead record in the payload", processed_at=now)
            if done:
                uow.inbox.set_status_many(done, "processed", processed_at=now)
            uow.commit()

        self._retrying(mark)

    def _retrying(self, work: Callable[[UnitOfWork], _T]) -> _T:
        """Run ``work(uow)`` in a new unit of work, again in a fresh one when it lost a race
        with a concurrent writer (:class:`ConflictError`: a deadlock such as MariaDB 1213 or
        PostgreSQL 40P01, or a lock wait timeout), up to :data:`WRITE_ATTEMPTS` times; then
        the last error propagates.  ``work`` must commit and be safe to repeat."""
        import random
        import time

        from carecrm.core.errors import ConflictError
        from carecrm.core.ingest import WRITE_ATTEMPTS

        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                with self.storage.unit_of_work() as uow:
                    return work(uow)
            except ConflictError:
                if attempt == WRITE_ATTEMPTS:
                    raise
                time.sleep(random.uniform(0.01, 0.05) * attempt)
        raise AssertionError("unreachable")

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
        with self.storage.unit_of_work() as uow:
            return [_inbox_item(r) for r in uow.inbox.list(status=status, source=source, limit=limit)]

    def inbox_show(self, inbox_id: uuid.UUID, *, actor: Actor) -> tuple[InboxItem, RawPayload]:
        """One entry and its decrypted payload (an audited read of raw personal data by ``actor``).

        :raises NotFound: if there is no such entry.
        """
        with self.storage.unit_of_work() as uow:
            rec = uow.inbox.get(inbox_id)
            payload = self.read_path.inbox_payload(uow, rec, actor=actor, purpose="operations")
            uow.commit()
        return _inbox_item(rec), payload

    def inbox_retry(self, inbox_id: uuid.UUID, *, actor: Actor) -> IngestReport:
        """Process a stored payload again (after fixing config or a connector).

        :raises NotFound: if there is no such entry.
        :raises CareCRMError: if it was discarded.
        """
        with self.storage.unit_of_work() as uow:
            rec = uow.inbox.get(inbox_id)
        if rec.status == "discarded":
            raise CareCRMError(f"inbox entry {inbox_id} was discarded; it cannot be retried")
        payload = self.read_path.payload_for_processing(rec, actor=actor)
        connector = self.connector(rec.source)
        report = IngestReport(payloads=1)
        self._process(connector, self.source_secret(rec.source), [(rec, payload)], report, actor)
        return report

    def inbox_discard(self, inbox_id: uuid.UUID, *, actor: Actor, reason: str | None = None) -> None:
        """Mark an entry discarded (it is never processed again; purged later).

        :raises NotFound: if there is no such entry.
        """
        with self.storage.unit_of_work() as uow:
            uow.inbox.get(inbox_id)
            uow.inbox.set_status(
                inbox_id,
                "discarded",
                reason=reason or f"discarded by {actor.name}",
                processed_at=utcnow(),
            )
            self.audit(uow, actor, "inbox.discard", details={"inbox_id": str(inbox_id)})
            uow.commit()

    def inbox_purge(self, *, now: datetime | None = None) -> int:
        """Delete processed, ignored and discarded payloads older than the retention
        (``[ingest] inbox_retention_days``, default 30); quarantined ones stay."""
        from datetime import timedelta

        cutoff = (now or utcnow()) - timedelta(days=self.settings.inbox_retention_days)
        with self.storage.unit_of_work() as uow:
            n = sum(uow.inbox.purge(status=st, before=cutoff) for st in ("processed", "ignored", "discarded"))
            uow.commit()
        return n

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
            uow.commit()
        self.dispatch(
            [
                ev.InteractionRecorded(
                    at=now,
                    contact_id=rec.id,
                    interaction_id=inter.id,
                    kind=inter.kind,
                    occurred_at=now,
                    source="carecrm",
                )
            ]
        )
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
            change = StageChange(
                contact_id=rec.id,
                pipeline=pipeline.name,
                from_stage=rec.stage,
                to_stage=stage,
                changed_at=now,
                actor=actor.name,
                reason=reason if reason is None or is_reason_code(reason) else "free_text",
            )
            uow.contacts.update(attrs.evolve(rec, stage=stage, stage_changed_at=now, updated_at=now))
            uow.stages.add(self.mapper.stage_change_to_record(change))
            uow.interactions.add(
                self.mapper.interaction_to_record(
                    Interaction(
                        contact_id=rec.id,
                        kind="stage.changed",
                        occurred_at=now,
                        recorded_at=now,
                        source="carecrm",
                        idempotency_key=f"stage.changed:{change.id}",
                        actor=actor.name,
                        attributes={
                            "from_stage": rec.stage,
                            "to_stage": stage,
                            **({"reason": change.reason} if change.reason else {}),
                        },
                        body=reason if change.reason == "free_text" else None,
                    ),
                    self.mapper.key_of(rec),
                )
            )
            self.audit(uow, actor, "stage.set", contact_id=rec.id, details={"from": rec.stage, "to": stage})
            uow.commit()
        self.dispatch(
            [
                ev.StageChanged(
                    at=now,
                    contact_id=rec.id,
                    pipeline=pipeline.name,
                    from_stage=rec.stage,
                    to_stage=stage,
                    actor=actor.name,
                )
            ]
        )
        return change

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


def _inbox_item(rec: InboxRecord) -> InboxItem:
    return InboxItem(
        id=rec.id,
        source=rec.source,
        received_at=rec.received_at,
        status=rec.status,
        reason=rec.reason,
        processed_at=rec.processed_at,
        attempts=rec.attempts,
    )


def _audit_body(rec: AuditRecord) -> bytes:
    """The canonical bytes an audit entry's hash covers (everything but the hashes)."""
    return json.dumps(
        [
            rec.seq,
            str(rec.id),
            rec.at.isoformat(),
            rec.actor,
            rec.role,
            rec.action,
            str(rec.contact_id) if rec.contact_id else None,
            rec.purpose,
            list(rec.fields),
            rec.details,
        ],
        sort_keys=True,
        separators=(",", ":"),
    ).encode()


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
