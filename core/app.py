"""The :class:`CareCRM` facade: settings, plugins, registries, keys, storage, use cases.

The CLI and any other front end call this object only.  It is cheap to build: the key
ring and the storage backend are opened on first use, so ``carecrm --help`` and
``carecrm plugins`` never touch the database.
"""

from __future__ import annotations

import logging
import threading
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import attrs
import pluggy

from carecrm.core.analytics.attribution import AttributionModel
from carecrm.core.analytics.attribution_service import AttributionService
from carecrm.core.analytics.scoring import ScoringModel
from carecrm.core.analytics.scoring_service import ScoringService
from carecrm.core.analytics.segments_service import SegmentBuilder, SegmentsService
from carecrm.core.analytics.services import build_analytics
from carecrm.core.config import Settings, load_settings
from carecrm.core.delegation import delegate
from carecrm.core.errors import (
    CryptoError,
    UnknownComponentError,
)
from carecrm.core.events.live import LiveEvents
from carecrm.core.identity.directory import ContactDirectory, ContactResolver
from carecrm.core.identity.matching import MatchCandidate, MatchResult
from carecrm.core.ingest import Ingestor, IngestReport, LeadPreparer
from carecrm.core.ingest.connectors import SourceConnector
from carecrm.core.ingest.inbox import Inbox, InboxItem
from carecrm.core.ingest.pointers import Fetcher
from carecrm.core.model.domain import (
    Actor,
    LeadEvent,
    Location,
    RawPayload,
    Touchpoint,
)
from carecrm.core.model.records import AuditRecord
from carecrm.core.pipeline.business_hours import location_named
from carecrm.core.pipeline.coordination import CoordinationService
from carecrm.core.pipeline.service import PipelineService
from carecrm.core.pipeline.speed_to_lead import SpeedToLead
from carecrm.core.plugins.components import Components
from carecrm.core.plugins.manager import Registry, build_plugin_manager
from carecrm.core.plugins.registries import Registries, StorageEntry
from carecrm.core.privacy.audit import AuditTrail
from carecrm.core.privacy.crypto import KeyRing
from carecrm.core.privacy.mapping import RecordMapper
from carecrm.core.privacy.read_path import ReadPath
from carecrm.core.storage.contract import StorageBackend, UnitOfWork
from carecrm.core.storage.migrate import StorageMigration

log = logging.getLogger("carecrm")

#: Guards the lazy opening of the key ring, the mapper and the storage, which concurrent
#: callers of one app may reach first at the same time.
_OPEN_LOCK = threading.RLock()


class CareCRM:
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
        #: Every family's registry (:class:`carecrm.core.plugins.registries.Registries`), filled now.
        self.registries = Registries()
        #: Plugins' options, listing and source connectors (:class:`~carecrm.core.plugins.components.Components`),
        #: built once: the key ring is loaded only when a connector hashes a record.
        self.components = Components(
            pm=self.pm,
            settings=settings,
            registries=self.registries,
            digest=lambda data: self.keys.digest(b"record\x1f" + data),
        )
        self.components.check_enabled_plugins()
        self.registries.collect_from(self.pm)
        self.storage_backends: Registry[StorageEntry] = self.registries.storage_backends
        self.sources: Registry[type[SourceConnector]] = self.registries.sources
        self.scoring_models: Registry[type[ScoringModel]] = self.registries.scoring_models
        self.attribution_models: Registry[type[AttributionModel]] = self.registries.attribution_models
        self.segment_builders: Registry[type[SegmentBuilder]] = self.registries.segment_builders
        self._schemes = self.registries.schemes
        self._classified: dict[Touchpoint, Touchpoint] = {}
        #: Live events (:class:`~carecrm.core.events.live.LiveEvents`), built once: storage opens on use.
        self.live_events = LiveEvents(pm=self.pm, app=self, storage=lambda: self.storage)
        #: The analytics services (:mod:`carecrm.core.analytics.services`), built once: they open nothing.
        self.scores, self.attribution, self.segments = build_analytics(
            settings=settings,
            registries=self.registries,
            storage=lambda: self.storage,
            read_path=lambda: self.read_path,
            audit=lambda: self.audit_trail,
            resolve=self.resolve,
            collect=self.live_events.collect_after_dispatch,
            deliver=self.live_events.deliver_events,
        )
        self.components.check_options()
        self.attribution.check_configured()
        self.pm.hook.carecrm_configure(app=self)

    # ------------------------------------------------------------------ construction

    @classmethod
    def from_config(cls, path: str | Path | None = None, **kwargs: Any) -> CareCRM:
        """Load ``carecrm.toml`` (see :func:`carecrm.core.config.find_config`) and build the app."""
        return cls(load_settings(path), **kwargs)

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
        """The one read path for personal data (:mod:`carecrm.core.privacy.read_path`): decrypts
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
                        self.migration.verify_opened(backend)
                    except BaseException:
                        backend.close()
                        raise
                    self._storage = backend
        return self._storage

    def create_schema(self) -> None:
        """Create the schema on the configured storage and record the key check value."""
        backend = self.open_backend()
        try:
            backend.create_schema()
            self.migration.verify_opened(backend)
        except BaseException:
            backend.close()
            raise
        self._storage = backend

    def close(self) -> None:
        """Close the storage."""
        if self._storage is not None:
            self._storage.close()
            self._storage = None

    @property
    def migration(self) -> StorageMigration:
        """Storage check, upgrade, counts, copy (:class:`~carecrm.core.storage.migrate.StorageMigration`), per use."""
        return StorageMigration(
            open_backend=self.open_backend,
            storage=lambda: self.storage,
            keys=lambda: self.keys,
            audit=lambda: self.audit_trail,
        )

    storage_check = delegate("migration", StorageMigration.storage_check)
    storage_upgrade = delegate("migration", StorageMigration.storage_upgrade)
    counts = delegate("migration", StorageMigration.counts)
    migrate_to = delegate("migration", StorageMigration.migrate_to)

    def __enter__(self) -> CareCRM:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ plugins and events

    plugin_options = delegate("components", Components.plugin_options)
    plugins_info = delegate("components", Components.plugins_info)
    plugin_enabled = delegate("components", Components.plugin_enabled)
    connector = delegate("components", Components.connector)
    source_secret = delegate("components", Components.source_secret)
    dispatch = delegate("live_events", LiveEvents.dispatch)
    events_relay = delegate("live_events", LiveEvents.events_relay)
    deliver_events = delegate("live_events", LiveEvents.deliver_events)
    pending_events = delegate("live_events", LiveEvents.pending_events)
    prune_events = delegate("live_events", LiveEvents.prune_events)
    after_dispatch = delegate("live_events", LiveEvents.after_dispatch)
    collect_after_dispatch = delegate("live_events", LiveEvents.collect_after_dispatch)

    def match(self, candidate: MatchCandidate, uow: Any) -> MatchResult:
        """Ask the matching hook (plugins first, the exact matcher last)."""
        result = self.pm.hook.carecrm_match_contact(candidate=candidate, uow=uow, app=self)
        if result is None:
            return MatchResult(contact_id=None, rule="new")
        return result  # type: ignore[no-any-return]

    def classify_touchpoint(self, tp: Touchpoint) -> Touchpoint:
        """Fill ``channel_group`` from the practice's rules when a connector did not set it.

        The memo is shared by concurrent callers: a classification is a pure function of
        the touchpoint, and each dict read or write is atomic, so a race costs at most a
        second classification."""
        if tp.channel_group is not None or tp.is_empty():
            return tp
        cached = self._classified.get(tp)
        if cached is None:
            from carecrm.core.model.channels import classify

            cached = attrs.evolve(tp, channel_group=classify(tp, self.settings.channel_groups.as_config()))
            if len(self._classified) < 4096:  # touchpoints repeat across a campaign's leads
                self._classified[tp] = cached
        return cached

    # ------------------------------------------------------------------ analytics

    @property
    def scoring_model(self) -> ScoringModel:
        """The model ``[scoring] model`` names (:attr:`ScoringService.scoring_model`)."""
        return self.scores.scoring_model

    @property
    def scoring_live(self) -> bool:
        """``[scoring] live`` (:attr:`ScoringService.scoring_live`)."""
        return self.scores.scoring_live

    schedule_rescore = delegate("scores", ScoringService.schedule_rescore)
    rescore = delegate("scores", ScoringService.rescore)
    rescore_contacts = delegate("scores", ScoringService.rescore_contacts)
    rescore_all = delegate("scores", ScoringService.rescore_all)
    score_top = delegate("scores", ScoringService.score_top)
    score_explain = delegate("scores", ScoringService.score_explain)
    last_touches = delegate("scores", ScoringService.last_touches)
    attribution_model = delegate("attribution", AttributionService.attribution_model)
    conversion_steps = delegate("attribution", AttributionService.conversion_steps)
    attribute = delegate("attribution", AttributionService.attribute)
    segment_builder = delegate("segments", SegmentsService.segment_builder)
    segment_criteria = delegate("segments", SegmentsService.segment_criteria)
    segment_count = delegate("segments", SegmentsService.segment_count)
    segment_ids = delegate("segments", SegmentsService.segment_ids)
    segment_preview = delegate("segments", SegmentsService.segment_preview)
    segment_save = delegate("segments", SegmentsService.segment_save)
    segment_list = delegate("segments", SegmentsService.segment_list)
    segment_get = delegate("segments", SegmentsService.segment_get)
    segment_show = delegate("segments", SegmentsService.segment_show)
    saved_segment_criteria = delegate("segments", SegmentsService.saved_segment_criteria)
    segment_delete = delegate("segments", SegmentsService.segment_delete)

    # ------------------------------------------------------------------ audit

    @property
    def audit_trail(self) -> AuditTrail:
        """The audit log's writer and checker (:class:`carecrm.core.privacy.audit.AuditTrail`) on the
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
        :meth:`carecrm.core.privacy.audit.AuditTrail.append`).

        :raises ConflictError: lock wait timeout or deadlock (retry the unit)."""
        self.audit_trail.append(
            uow, actor, action, contact_id=contact_id, purpose=purpose, fields=fields, details=details
        )

    def audit_head(self) -> str | None:
        """The audit log's head anchor ``seq:hash:mac`` (None for an empty log): export it on
        a schedule (see :meth:`carecrm.core.privacy.audit.AuditTrail.head`)."""
        return self.audit_trail.head()

    def audit_log(self, *, limit: int = 50, contact_id: uuid.UUID | None = None) -> list[AuditRecord]:
        """The newest ``limit`` audit-log entries, oldest first, optionally about one contact
        (``carecrm audit log``; see :meth:`carecrm.core.privacy.audit.AuditTrail.entries`)."""
        return self.audit_trail.entries(limit=limit, contact_id=contact_id)

    def verify_audit_chain(self, *, expected_head: str | None = None) -> tuple[bool, int, str | None]:
        """Recompute the audit chain: ``(ok, entries checked, None or what is wrong)`` (see
        :meth:`carecrm.core.privacy.audit.AuditTrail.verify`)."""
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
        return Ingestor(
            storage=self.storage,
            settings=self.settings,
            mapper=self.mapper,
            read_path=self.read_path,
            match=self.match,
            classify=self.classify_touchpoint,
            audit=self.audit_trail,
            deliver=self.deliver_events,
            actor=actor,
        )

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

    def inbox_reprocess(self, inbox_id: uuid.UUID, *, actor: Actor) -> IngestReport:
        """Re-derive what a processed payload produced, replacing its interactions (see
        :meth:`carecrm.core.ingest.inbox.Inbox.reprocess`; audited)."""
        return self.inbox.reprocess(inbox_id, actor=actor)

    def inbox_reprocess_source(self, source: str, *, actor: Actor) -> IngestReport:
        """:meth:`inbox_reprocess` every processed payload of ``source``."""
        return self.inbox.reprocess_source(source, actor=actor)

    def inbox_complete(self, inbox_id: uuid.UUID, fetched: Sequence[RawPayload], *, actor: Actor) -> IngestReport:
        """Complete a pending pointer entry from the vendor's API objects (see
        :meth:`carecrm.core.ingest.inbox.Inbox.complete`; audited)."""
        return self.inbox.complete(inbox_id, fetched, actor=actor)

    def inbox_fetch(self, inbox_id: uuid.UUID, fetcher: Fetcher, *, actor: Actor) -> IngestReport:
        """Complete a pending pointer entry through ``fetcher`` (the vendor's API; see
        :meth:`carecrm.core.ingest.inbox.Inbox.fetch`)."""
        return self.inbox.fetch(inbox_id, fetcher, actor=actor)

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

    @property
    def resolver(self) -> ContactResolver:
        """Finds the contact a reference names, through blind indexes only
        (:class:`carecrm.core.identity.directory.ContactResolver`)."""
        return ContactResolver(self.settings, self.mapper)

    @property
    def directory(self) -> ContactDirectory:
        """Contacts: add, look up, read, annotate (:class:`carecrm.core.identity.directory.ContactDirectory`)
        on the current storage."""
        return ContactDirectory(
            storage=self.storage,
            settings=self.settings,
            mapper=self.mapper,
            keys=self.keys,
            read_path=self.read_path,
            audit=self.audit_trail,
            resolver=self.resolver,
            prepare=LeadPreparer(self.settings, self.mapper).prepare,
            ingest=self.ingest,
            deliver=self.deliver_events,
        )

    add_contact = delegate("directory", ContactDirectory.add_contact)

    get_contact = delegate("directory", ContactDirectory.get_contact)

    resolve = delegate("directory", ContactDirectory.resolve)

    def resolve_id(self, kind: str, ref: str | uuid.UUID) -> uuid.UUID:
        """The whole id a command-line id names, whole or short, among the records of
        ``kind`` (``contact``, ``task``, ``inbox``); see
        :meth:`carecrm.core.identity.directory.ContactResolver.resolve_id`.

        :raises ValueError: if ``ref`` is not an id or ``kind`` is unknown.
        :raises NotFound: if no record of that kind has an id ending so.
        :raises AmbiguousId: if several have (the message lists their ids).
        """
        return self.resolver.resolve_id(self.storage, kind, ref)

    find_contacts = delegate("directory", ContactDirectory.find_contacts)

    timeline = delegate("directory", ContactDirectory.timeline)

    notes = delegate("directory", ContactDirectory.notes)

    add_note = delegate("directory", ContactDirectory.add_note)

    # ------------------------------------------------------------------ pipeline

    @property
    def pipeline(self) -> PipelineService:
        """Stage moves, history, report and reviews (:class:`carecrm.core.pipeline.service.PipelineService`)."""
        return PipelineService(
            storage=self.storage,
            settings=self.settings,
            mapper=self.mapper,
            read_path=self.read_path,
            audit=self.audit_trail,
            resolver=self.resolver,
            deliver=self.deliver_events,
            speed_to_lead_values=self.speed_to_lead_figures.speed_to_lead_values,
        )

    set_stage = delegate("pipeline", PipelineService.set_stage)

    stage_history = delegate("pipeline", PipelineService.stage_history)

    pipeline_report = delegate("pipeline", PipelineService.pipeline_report)

    review_pairs = delegate("pipeline", PipelineService.review_pairs)

    @property
    def coordination(self) -> CoordinationService:
        """Tasks, assignment, calls (:class:`~carecrm.core.pipeline.coordination.CoordinationService`), per use."""
        return CoordinationService(
            storage=self.storage,
            settings=self.settings,
            mapper=self.mapper,
            read_path=self.read_path,
            audit=self.audit_trail,
            resolver=self.resolver,
            deliver=self.deliver_events,
        )

    @property
    def speed_to_lead_figures(self) -> SpeedToLead:
        """Speed to lead (:class:`carecrm.core.pipeline.speed_to_lead.SpeedToLead`), built per use (stateless)."""
        return SpeedToLead(storage=self.storage, settings=self.settings)

    def location_of(self, name: str | None) -> Location:
        """The practice location called ``name``, else the default (first) one; reads the settings only
        (:func:`carecrm.core.pipeline.business_hours.location_named`)."""
        return location_named(self.settings.practice, name)

    location_of_contact = delegate("coordination", CoordinationService.location_of_contact)
    add_task = delegate("coordination", CoordinationService.add_task)
    tasks = delegate("coordination", CoordinationService.tasks)
    complete_task = delegate("coordination", CoordinationService.complete_task)
    assign = delegate("coordination", CoordinationService.assign)
    log_interaction = delegate("coordination", CoordinationService.log_interaction)
    first_response = delegate("speed_to_lead_figures", SpeedToLead.first_response)
    speed_to_lead = delegate("speed_to_lead_figures", SpeedToLead.speed_to_lead)
    speed_to_lead_values = delegate("speed_to_lead_figures", SpeedToLead.speed_to_lead_values)
    speed_to_lead_summary = delegate("speed_to_lead_figures", SpeedToLead.speed_to_lead_summary)


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
