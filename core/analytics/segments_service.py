"""The segments service (filter trees compiled by the storage backend, previews, saved
segments), which :class:`carecrm.core.CareCRM` builds once and delegates to.

A segment is asked for either as a **spec** (a JSON object of simple filters, as the
``carecrm segment`` flags make it) or as a **filter tree** (:mod:`carecrm.core.analytics.criteria`).
A spec is turned into a tree by the segment builder ``[segments] builder`` names (default
``basic``, :mod:`carecrm.plugins.segments.basic`), as of "now": "had email.opened within 90
days" starts at local midnight 90 days before today in the practice's time zone.  The
storage backend compiles the tree into one query (never a filter in Python) over active
contacts.

Saved segments (``uow.segments``) keep in ``SegmentRecord.definition`` either
``{"builder": NAME, "spec": {...}}`` — the spec, so relative windows move with the day the
segment is used on — or, for a tree saved as such, the tree's JSON
(:func:`carecrm.core.analytics.criteria.unstructure`), with absolute times.

Counting and listing ids read clear columns only; a preview decrypts the names of the
contacts it shows and writes one audit entry per contact shown (HIPAA 45 CFR 164.312(b)).
"""

from __future__ import annotations

import abc
import uuid
import warnings
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from carecrm.core.analytics.criteria import Criteria, CriteriaError, Node, structure, unstructure
from carecrm.core.analytics.vendor_tests import flagged_matching, seen_cache
from carecrm.core.errors import CareCRMError, NotFound
from carecrm.core.model.records import SegmentRecord
from carecrm.core.model.timeutil import to_utc_ms, utcnow
from carecrm.core.plugins.options import build_component, component_options
from carecrm.core.storage.capabilities import queries

if TYPE_CHECKING:
    from carecrm.core.config import Settings
    from carecrm.core.model.domain import Actor, Contact
    from carecrm.core.plugins.manager import Registry
    from carecrm.core.privacy.audit import AuditTrail
    from carecrm.core.privacy.read_path import ReadPath
    from carecrm.core.storage.contract import StorageBackend

#: The builder used when ``[segments] builder`` is not set.
DEFAULT_BUILDER = "basic"
#: Ids per query of :meth:`SegmentsService.segment_ids`.
ID_PAGE = 1000
#: The longest segment name.
MAX_NAME = 255

#: What the segment use cases take: a builder's spec or a filter tree.
SpecOrCriteria = Mapping[str, Any] | Criteria


class SegmentBuilder(abc.ABC):
    """Base class of segment builders (``carecrm_register_segment_builders``), keyed by
    :attr:`builder_id`.

    Built keyword-only, like every component: ``Builder(name=builder_id, options=...,
    settings=settings)``; the old ``Builder(settings)`` works for one release with a
    :class:`DeprecationWarning`.

    :param name: the name it was chosen by (its ``builder_id``).
    :param options: the ``[segments]`` table without ``builder``, structured into
        :attr:`options_type` (a mapping is structured here).
    :param settings: the practice's settings (pipeline stages, service lines, locations).
    :raises ConfigError: from ``__init__`` when an option is wrong.
    """

    builder_id: ClassVar[str] = ""
    #: The attrs class of the options; None (deprecated) passes them as a plain dict.
    options_type: ClassVar[type[Any] | None] = None

    def __init__(
        self, *legacy: Any, name: str | None = None, options: Any = None, settings: Settings | None = None
    ) -> None:
        if legacy:
            if len(legacy) != 1:
                raise TypeError(f"{type(self).__name__}: pass name=..., options=..., settings=...")
            warnings.warn(
                f"{type(self).__name__}(settings) is deprecated: pass name=..., options=..., settings=...",
                DeprecationWarning,
                stacklevel=2,
            )
            settings = legacy[0]
        if settings is None:
            raise TypeError(f"{type(self).__name__}: pass name=..., options=..., settings=...")
        self.name = name or self.builder_id
        self.settings = settings
        self.options: Any = component_options(
            type(self).options_type,
            {} if options is None else options,
            section="segments",
            owner=f"segment builder {self.name!r}",
        )

    @abc.abstractmethod
    def normalize(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """A checked, canonical JSON copy of ``spec`` (what a saved segment stores).

        :raises UnknownComponentError: for an unknown key or name, listing the known ones.
        :raises CriteriaError: for a bad value, naming its key.
        """

    @abc.abstractmethod
    def build(self, spec: Mapping[str, Any], *, now: datetime) -> Criteria:
        """The filter tree of ``spec`` as of ``now`` (timezone-aware).  Raises as :meth:`normalize`."""

    @abc.abstractmethod
    def describe(self, spec: Mapping[str, Any]) -> str:
        """One line describing ``spec`` for people.  Raises as :meth:`normalize`."""


@attrs.frozen(kw_only=True)
class SavedSegment:
    """A saved segment as people see it.

    :ivar builder: the builder of ``spec``; None for a filter tree saved as such.
    :ivar spec: the builder's spec (JSON), or None.
    :ivar criteria: the tree's JSON when a tree was saved, else None.
    :ivar description: one line for people (the builder's, or "filter tree").
    :ivar created_at: UTC.
    :ivar updated_at: UTC.
    """

    name: str
    builder: str | None
    spec: dict[str, Any] | None
    criteria: dict[str, Any] | None
    description: str
    created_at: datetime
    updated_at: datetime
    created_by: str | None


@attrs.frozen(kw_only=True)
class SegmentPreview:
    """How many contacts a segment selects and the first of them.

    :ivar count: active contacts matching, all of them.
    :ivar contacts: the first ``limit`` in id order (creation order), names decrypted,
        identities not loaded.
    :ivar criteria: the tree that was run (its absolute times show the window used).
    :ivar at: the "now" windows were counted from (UTC).
    :ivar segment: the saved segment previewed, if any.
    """

    count: int
    contacts: tuple[Contact, ...]
    criteria: Criteria
    at: datetime
    segment: SavedSegment | None = None


def _check_name(name: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise CriteriaError("segment name: must not be empty")
    name = name.strip()
    if len(name) > MAX_NAME or any(ord(ch) < 32 for ch in name):
        raise CriteriaError(f"segment name: at most {MAX_NAME} printable characters")
    return name


class SegmentsService:
    """Use cases of segments (filter trees compiled by the storage backend, previews, saved
    segments), with explicit collaborators.

    Built once by the facade, at its construction (it opens nothing, and holds no mutable
    state: every call builds the builder it uses).  The storage, the read path and the
    audit trail open lazily, so they are reached through providers on each use.

    :param settings: ``[segments]`` (the builder and its options), given to the builders.
    :param builders: the registered segment builder classes by ``builder_id``.
    :param storage: the current storage backend (called per use).
    :param read_path: the current read path (called per use; decrypts and audits reads).
    :param audit: the current audit trail (called per use; saves and deletes are audited).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        builders: Registry[type[SegmentBuilder]],
        storage: Callable[[], StorageBackend],
        read_path: Callable[[], ReadPath],
        audit: Callable[[], AuditTrail],
    ) -> None:
        self.settings = settings
        self.builders = builders
        self._storage = storage
        self._read_path = read_path
        self._audit = audit

    # ------------------------------------------------------------------ building

    def segment_builder(self, name: str | None = None) -> SegmentBuilder:
        """The segment builder ``name`` (default ``[segments] builder``, else ``basic``),
        built with the practice's settings.

        :raises UnknownComponentError: for an unknown builder, listing the registered ones.
        :raises ConfigError: for an option of ``[segments]`` the builder does not take.
        """
        configured = self.settings.segments
        name = configured.builder if name is None else name
        cls_ = self.builders.get(name)
        settings = self.settings
        return build_component(
            cls_,
            name=name,
            table=configured.options if name == configured.builder else {},
            settings=settings,
            section="segments",
            owner=f"segment builder {name!r} of plugin {self.builders.owner(name)}",
            legacy=lambda _options: cls_(settings),
        )

    def segment_criteria(self, spec: SpecOrCriteria, *, now: datetime | None = None) -> Criteria:
        """The filter tree of ``spec`` (a builder's spec, turned into a tree as of ``now``,
        default the current time), or ``spec`` itself when it is already a tree.

        :raises UnknownComponentError: for an unknown field, stage, location, kind, ...
            (listing the known ones).
        :raises CriteriaError: for a bad value (a ``ValueError``), naming the field.
        """
        if isinstance(spec, Node):
            return spec
        return self.segment_builder().build(spec, now=_now(now))

    def segment_count(self, spec: SpecOrCriteria, *, now: datetime | None = None) -> int:
        """How many active contacts match, test contacts left out (one count query and one
        for the unscored matches: :func:`~carecrm.core.analytics.vendor_tests.flagged_matching`;
        no personal data is read, so nothing is audited).  Raises as :meth:`segment_criteria`."""
        criteria = self.segment_criteria(spec, now=now)
        storage = self._storage()
        with storage.unit_of_work() as uow:
            tests = flagged_matching(uow, criteria, cache=seen_cache(storage))
            return queries(uow).count_matching(criteria) - len(tests)

    def segment_ids(
        self, spec: SpecOrCriteria, *, now: datetime | None = None, page_size: int = ID_PAGE
    ) -> Iterator[uuid.UUID]:
        """Every matching contact's id in id order, read ``page_size`` at a time by keyset
        (one query and one short unit of work per page, so nothing stays locked while the
        caller works).  The tree is built once, so every page uses the same window.
        Contacts changed between pages are seen as they are when their page is read.
        Test contacts (:mod:`carecrm.core.analytics.vendor_tests`, found once, with the
        first page) are left out.

        :raises ValueError: if ``page_size`` < 1.  Otherwise raises as :meth:`segment_criteria`
            (at the call, before the first id).
        """
        if page_size < 1:
            raise ValueError("page_size: must be 1 or more")
        criteria = self.segment_criteria(spec, now=now)
        storage = self._storage()

        def pages() -> Iterator[uuid.UUID]:
            after: uuid.UUID | None = None
            tests: frozenset[uuid.UUID] | None = None
            while True:
                with storage.unit_of_work() as uow:
                    if tests is None:  # found once, in the first page's unit
                        tests = flagged_matching(uow, criteria, cache=seen_cache(storage))
                    ids = queries(uow).select_ids(criteria, limit=page_size, after=after)
                yield from (i for i in ids if i not in tests)
                if len(ids) < page_size:
                    return
                after = ids[-1]

        return pages()

    def segment_preview(
        self,
        spec: SpecOrCriteria,
        *,
        actor: Actor,
        limit: int = 20,
        now: datetime | None = None,
        purpose: str = "segment",
    ) -> SegmentPreview:
        """The count and the first ``limit`` matching contacts (id order; test contacts
        left out, as by :meth:`segment_count`) with their names decrypted: a read by
        ``actor``, one ``contact.read`` entry per contact shown.

        :param limit: contacts to show (0: the count only).
        :param purpose: recorded in the audit log.
        :raises ValueError: if ``limit`` < 0.  Otherwise raises as :meth:`segment_criteria`.
        """
        if limit < 0:
            raise ValueError("limit: must be 0 or more")
        at = _now(now)
        criteria = self.segment_criteria(spec, now=at)
        storage = self._storage()
        with storage.unit_of_work() as uow:
            tests = flagged_matching(uow, criteria, cache=seen_cache(storage))
            count = queries(uow).count_matching(criteria) - len(tests)
            records = (
                [r for r in uow.contacts.select(criteria, limit=limit + len(tests)) if r.id not in tests][:limit]
                if limit and count
                else []
            )
            contacts = tuple(self._read_path().contacts(uow, records, actor=actor, purpose=purpose, fields=("name",)))
            if contacts:
                uow.commit()
        return SegmentPreview(count=count, contacts=contacts, criteria=criteria, at=at)

    # ------------------------------------------------------------------ saved segments

    def segment_save(self, name: str, spec: SpecOrCriteria, *, actor: Actor, replace: bool = False) -> SavedSegment:
        """Save a segment under ``name``: a spec (checked and normalized by the builder; its
        windows stay relative) or a filter tree (stored as its JSON, times absolute).
        ``actor`` is its ``created_by`` (when new) and is named by the ``segment.save`` entry.

        :param replace: replace a segment of that name (else it is refused).
        :raises CareCRMError: if ``name`` is taken and ``replace`` is False.
        :raises CriteriaError: for an empty or over-long name.  Otherwise raises as
            :meth:`segment_criteria`.
        """
        name = _check_name(name)
        if isinstance(spec, Node):
            definition: dict[str, Any] = unstructure(spec)
        else:
            builder = self.segment_builder()
            normalized = builder.normalize(spec)
            builder.build(normalized, now=utcnow())  # every check a build makes
            definition = {"builder": builder.builder_id, "spec": normalized}
        now = utcnow()
        with self._storage().unit_of_work() as uow:
            try:
                existing: SegmentRecord | None = uow.segments.get(name)
            except NotFound:
                existing = None
            if existing is not None and not replace:
                raise CareCRMError(f"a segment named {name!r} exists; replace it explicitly (--replace)")
            record = SegmentRecord(
                name=name,
                definition=definition,
                created_at=existing.created_at if existing else now,
                updated_at=now,
                created_by=existing.created_by if existing else actor.name,
            )
            uow.segments.put(record)
            self._audit().append(
                uow, actor, "segment.save", details={"segment": name, "replaced": existing is not None}
            )
            uow.commit()
        return self._saved(record)

    def segment_list(self) -> list[SavedSegment]:
        """Every saved segment, by name."""
        with self._storage().unit_of_work() as uow:
            records = uow.segments.list()
        return [self._saved(r) for r in records]

    def segment_get(self, name: str) -> SavedSegment:
        """One saved segment.  :raises NotFound: if there is none of that name."""
        with self._storage().unit_of_work() as uow:
            record = uow.segments.get(name)
        return self._saved(record)

    def segment_show(
        self,
        name: str,
        *,
        actor: Actor,
        limit: int = 20,
        now: datetime | None = None,
        purpose: str = "segment",
    ) -> SegmentPreview:
        """The preview (:meth:`segment_preview`) of a saved segment, its windows counted
        from ``now`` (default the current time): a read by ``actor``.

        :raises NotFound: if there is no segment of that name.
        :raises UnknownComponentError: if its builder is no longer registered.
        :raises CriteriaError: if its definition no longer passes the checks (a stage or a
            location removed from the config since: the message names the field).
        """
        saved = self.segment_get(name)
        at = _now(now)
        preview = self.segment_preview(
            self._saved_criteria(saved, at), actor=actor, limit=limit, now=at, purpose=purpose
        )
        return attrs.evolve(preview, segment=saved)

    def saved_segment_criteria(self, name: str, *, now: datetime | None = None) -> Criteria:
        """The filter tree of a saved segment as of ``now`` (default the current time), for
        :meth:`segment_count`, :meth:`segment_ids` and exports.  Raises as :meth:`segment_show`."""
        return self._saved_criteria(self.segment_get(name), _now(now))

    def segment_delete(self, name: str, *, actor: Actor) -> None:
        """Delete a saved segment (``actor`` is named by the ``segment.delete`` entry).

        :raises NotFound: if there is none of that name.
        """
        with self._storage().unit_of_work() as uow:
            uow.segments.delete(name)
            self._audit().append(uow, actor, "segment.delete", details={"segment": name})
            uow.commit()

    # ------------------------------------------------------------------ helpers

    def _saved_criteria(self, saved: SavedSegment, now: datetime) -> Criteria:
        if saved.spec is not None and saved.builder is not None:
            # the builder that saved it, even if [segments] builder names another since
            return self.segment_builder(saved.builder).build(saved.spec, now=now)
        if saved.criteria is not None:
            return structure(saved.criteria)
        raise CriteriaError(f"saved segment {saved.name!r}: its definition is neither a spec nor a filter tree")

    def _saved(self, record: SegmentRecord) -> SavedSegment:
        definition = record.definition
        builder: str | None = None
        spec: dict[str, Any] | None = None
        criteria: dict[str, Any] | None = None
        if isinstance(definition, Mapping) and "spec" in definition and "builder" in definition:
            builder, spec = str(definition["builder"]), dict(definition["spec"])
            try:
                description = self.segment_builder(builder).describe(spec)
            except (CareCRMError, ValueError) as exc:
                description = f"(cannot be used: {exc})"
        else:
            criteria = dict(definition)
            description = "filter tree"
        return SavedSegment(
            name=record.name,
            builder=builder,
            spec=spec,
            criteria=criteria,
            description=description,
            created_at=record.created_at,
            updated_at=record.updated_at,
            created_by=record.created_by,
        )


def _now(now: datetime | None) -> datetime:
    if now is None:
        return utcnow()
    try:
        return to_utc_ms(now)
    except ValueError:
        raise CriteriaError("now: a timezone-aware datetime is needed") from None
