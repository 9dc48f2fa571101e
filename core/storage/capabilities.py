"""Optional query capabilities of the storage contract, each with a reference implementation.

The storage contract has two layers, the way eventsourcing layers its recorders:

* the **required core** in :mod:`carecrm.core.storage.contract`: CRUD, keyset paging
  (``contacts.list``, ``interactions.timeline``), idempotent appends, and select and count
  over :class:`~carecrm.core.analytics.criteria.Criteria` (``contacts.select``);
* the **optional queries** here: aggregate reads a use case needs fast (speed to lead, a
  batch's timelines for scoring, attribution's journeys ...).  Each one has a reference
  implementation below written *only* on the required core, so a new backend works
  without any of them, only slower.  A backend that computes one natively in its database
  names it in :attr:`UnitOfWork.native_queries <carecrm.core.storage.contract.UnitOfWork.native_queries>`
  and has the method of the same name on the repository (the signatures are the
  Protocols below).

Use-case code never calls an optional query on a repository directly; it goes through
:func:`queries`, which calls the native method when the unit of work declares it and the
reference otherwise::

    with backend.unit_of_work() as uow:
        rows = queries(uow).first_responses(inbound_kinds=[...], outbound_kinds=[...])

The conformance suite (:mod:`carecrm.core.testing.storage`) runs every declared native
query and its reference on the same data and checks they agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol

import attrs

from carecrm.core.analytics.criteria import Criteria
from carecrm.core.errors import NotFound, UnknownComponentError
from carecrm.core.model.records import (
    ACTIVE,
    FirstResponseRecord,
    InteractionFacts,
    InteractionRecord,
    ScoreRecord,
    StageReachedRecord,
    TouchRecord,
)
from carecrm.core.model.timeutil import stored_utc
from carecrm.core.storage.contract import UnitOfWork

#: Rows per call of a required paging method inside a reference implementation.
PAGE = 500


# --------------------------------------------------------------------------- native signatures


class FirstResponsesQuery(Protocol):
    """``interactions.first_responses``: speed to lead in one grouped query per chunk of ids."""

    def first_responses(
        self,
        *,
        inbound_kinds: Sequence[str],
        outbound_kinds: Sequence[str],
        contact_ids: Sequence[uuid.UUID] | None = None,
    ) -> list[FirstResponseRecord]:
        """When each contact first reached out and when the practice first answered.

        A contact's *first inbound* is its earliest interaction whose kind is in
        ``inbound_kinds`` and whose ``direction`` is ``inbound``; its *first outbound* is
        the earliest interaction at or after that time whose kind is in ``outbound_kinds``
        and whose ``direction`` is ``outbound`` (an unknown direction never counts).

        :param inbound_kinds: kinds that start the clock (``form.submitted``, ``call.missed`` ...).
        :param outbound_kinds: kinds that stop it (``call.completed``, ``sms.sent`` ...).
        :param contact_ids: only these contacts (``[]``: nothing); None: every contact.
        :returns: one record per contact that has a first inbound, in contact-id order;
            ``first_outbound_at`` is None when nobody has answered yet.
        """


class TimelineFactsQuery(Protocol):
    """``interactions.clear_timelines`` and ``interactions.latest_times``: per-contact reads
    of a whole batch, one query per chunk of ids."""

    def clear_timelines(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[InteractionFacts]]:
        """The clear facts of every interaction of each of ``contact_ids``, per contact
        ordered by (occurred_at, id), oldest first; contacts without interactions left out."""

    def latest_times(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """When each contact's latest interaction occurred (``max(occurred_at)``);
        contacts without interactions left out."""


class TouchesQuery(Protocol):
    """``interactions.iter_touches``: attribution's journeys, streamed."""

    def iter_touches(
        self,
        kinds: Sequence[str],
        *,
        skip_outbound: Sequence[str] = (),
        occurred_after: datetime | None = None,
        occurred_before: datetime | None = None,
    ) -> Iterator[TouchRecord]:
        """Every contact's interactions of ``kinds`` ordered by (contact_id, occurred_at, id).

        :param kinds: interaction kinds to return; ``[]`` returns nothing.
        :param skip_outbound: kinds returned only when their direction is not ``outbound``
            (an unknown direction is kept).
        :param occurred_after: only interactions at or after this time (UTC).
        :param occurred_before: only interactions before this time (UTC).
        :raises ValueError: if a bound is a naive datetime.
        """


class FirstReachedQuery(Protocol):
    """``stages.first_reached``: attribution's conversions, streamed."""

    def first_reached(
        self,
        stages: Sequence[str],
        *,
        pipeline: str | None = None,
        reached_from: datetime | None = None,
        reached_before: datetime | None = None,
    ) -> Iterator[StageReachedRecord]:
        """For each contact, its first change into any of ``stages`` (the earliest
        ``changed_at`` of its changes whose ``to_stage`` is one of them, of ``pipeline``
        when given), ordered by contact_id.  The window [``reached_from``,
        ``reached_before``) applies to that first entry only.

        :raises ValueError: if a bound is a naive datetime.
        """


class ActiveScoresQuery(Protocol):
    """``contacts.active_scores``: the clear score field of a batch of active contacts."""

    def active_scores(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, float | None]:
        """The clear ``score`` of each active contact among ``contact_ids`` (None: never
        scored); merged, erased and missing contacts are left out."""


class TopActiveQuery(Protocol):
    """``scores.top_active``: the leaderboard of active contacts under one model."""

    def top_active(self, model: str, *, limit: int = 20, stages: Sequence[str] | None = None) -> list[ScoreRecord]:
        """Highest scores under ``model`` of active contacts, optionally only of contacts
        whose stage is in ``stages`` (``[]`` matches nothing); ties by contact id.

        :raises ValueError: if ``limit`` is negative.
        """


class SegmentIdsQuery(Protocol):
    """``contacts.select_ids`` and ``contacts.count_matching``: segment pages without rows."""

    def select_ids(self, criteria: Criteria, *, limit: int = 1000, after: uuid.UUID | None = None) -> list[uuid.UUID]:
        """The ids ``contacts.select`` would return, without reading the rows.

        :raises ValueError: if ``limit`` is negative.
        """

    def count_matching(self, criteria: Criteria) -> int:
        """How many active contacts match a segment filter tree."""


# --------------------------------------------------------------------------- reference implementations


def _timeline(
    uow: UnitOfWork, contact_id: uuid.UUID, kinds: Sequence[str] | None = None
) -> Iterator[InteractionRecord]:
    """Every interaction of one contact by (occurred_at, id), paged through ``timeline``."""
    after = None
    while True:
        page = uow.interactions.timeline(contact_id, after=after, limit=PAGE, kinds=kinds)
        yield from page
        if len(page) < PAGE:
            return
        after = (page[-1].occurred_at, page[-1].id)


def _contact_ids(uow: UnitOfWork, kind: str) -> list[uuid.UUID]:
    """The ids of the contacts that have records of ``kind`` (``interactions``,
    ``stage_changes``), in id order, read once through ``export_records`` (memory: one id
    per contact, never the rows)."""
    return sorted({record.contact_id for record in uow.export_records(kind)})


def _bound(value: datetime | None, what: str) -> datetime | None:
    return None if value is None else stored_utc(value, what)


def reference_first_responses(
    uow: UnitOfWork,
    *,
    inbound_kinds: Sequence[str],
    outbound_kinds: Sequence[str],
    contact_ids: Sequence[uuid.UUID] | None = None,
) -> list[FirstResponseRecord]:
    """:meth:`FirstResponsesQuery.first_responses` on ``interactions.timeline`` (one paged
    timeline read per contact)."""
    inbound, outbound = set(inbound_kinds), set(outbound_kinds)
    if not inbound:
        return []
    ids = sorted(set(contact_ids)) if contact_ids is not None else _contact_ids(uow, "interactions")
    out: list[FirstResponseRecord] = []
    for cid in ids:
        rows = list(_timeline(uow, cid, sorted(inbound | outbound)))
        first_in = next((r.occurred_at for r in rows if r.kind in inbound and r.direction == "inbound"), None)
        if first_in is None:
            continue
        first_out = min(
            (
                r.occurred_at
                for r in rows
                if r.kind in outbound and r.direction == "outbound" and r.occurred_at >= first_in
            ),
            default=None,
        )
        out.append(FirstResponseRecord(contact_id=cid, first_inbound_at=first_in, first_outbound_at=first_out))
    return out


def reference_clear_timelines(
    uow: UnitOfWork, contact_ids: Iterable[uuid.UUID]
) -> dict[uuid.UUID, list[InteractionFacts]]:
    """:meth:`TimelineFactsQuery.clear_timelines` on ``interactions.timeline``."""
    out: dict[uuid.UUID, list[InteractionFacts]] = {}
    for cid in dict.fromkeys(contact_ids):
        facts = [
            InteractionFacts(
                id=r.id,
                contact_id=r.contact_id,
                kind=r.kind,
                occurred_at=r.occurred_at,
                channel=r.channel,
                direction=r.direction,
                attributes=r.attributes,
            )
            for r in _timeline(uow, cid)
        ]
        if facts:
            out[cid] = facts
    return out


def reference_latest_times(uow: UnitOfWork, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, datetime]:
    """:meth:`TimelineFactsQuery.latest_times` on ``interactions.timeline``."""
    out: dict[uuid.UUID, datetime] = {}
    for cid in dict.fromkeys(contact_ids):
        latest = None
        for r in _timeline(uow, cid):
            latest = r.occurred_at if latest is None else max(latest, r.occurred_at)
        if latest is not None:
            out[cid] = latest
    return out


def reference_iter_touches(
    uow: UnitOfWork,
    kinds: Sequence[str],
    *,
    skip_outbound: Sequence[str] = (),
    occurred_after: datetime | None = None,
    occurred_before: datetime | None = None,
) -> Iterator[TouchRecord]:
    """:meth:`TouchesQuery.iter_touches` on ``export_records("interactions")`` (for the
    contact ids) and one paged ``interactions.timeline`` per contact (streamed: one
    contact's page at a time).

    :raises ValueError: at once (not at the first row) if a bound is naive.
    """
    after = _bound(occurred_after, "occurred_after")
    before = _bound(occurred_before, "occurred_before")
    wanted, skip = list(dict.fromkeys(kinds)), set(skip_outbound)

    def rows() -> Iterator[TouchRecord]:
        if not wanted:
            return
        for cid in _contact_ids(uow, "interactions"):
            for r in _timeline(uow, cid, wanted):
                if r.kind in skip and r.direction == "outbound":
                    continue
                if (after is not None and r.occurred_at < after) or (before is not None and r.occurred_at >= before):
                    continue
                yield TouchRecord(
                    id=r.id,
                    contact_id=r.contact_id,
                    kind=r.kind,
                    occurred_at=r.occurred_at,
                    channel=r.channel,
                    direction=r.direction,
                    campaign=r.campaign,
                    channel_group=r.channel_group,
                    touchpoint=r.touchpoint,
                )

    return rows()


def reference_first_reached(
    uow: UnitOfWork,
    stages: Sequence[str],
    *,
    pipeline: str | None = None,
    reached_from: datetime | None = None,
    reached_before: datetime | None = None,
) -> Iterator[StageReachedRecord]:
    """:meth:`FirstReachedQuery.first_reached` on ``export_records("stage_changes")``, read
    once (memory: one time per contact), yielded in contact-id order.

    :raises ValueError: at once if a bound is naive.
    """
    start = _bound(reached_from, "reached_from")
    end = _bound(reached_before, "reached_before")
    wanted = set(stages)

    def rows() -> Iterator[StageReachedRecord]:
        if not wanted:
            return
        firsts: dict[uuid.UUID, datetime] = {}
        for change in uow.export_records("stage_changes"):
            if change.to_stage in wanted and (pipeline is None or change.pipeline == pipeline):
                seen = firsts.get(change.contact_id)
                if seen is None or change.changed_at < seen:
                    firsts[change.contact_id] = change.changed_at
        for cid in sorted(firsts):
            first = firsts[cid]
            if (start is not None and first < start) or (end is not None and first >= end):
                continue
            yield StageReachedRecord(contact_id=cid, reached_at=first)

    return rows()


def reference_active_scores(uow: UnitOfWork, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, float | None]:
    """:meth:`ActiveScoresQuery.active_scores` on ``contacts.get_many``."""
    found = uow.contacts.get_many(list(dict.fromkeys(contact_ids)))
    return {cid: record.score for cid, record in found.items() if record.status == ACTIVE}


def reference_top_active(
    uow: UnitOfWork, model: str, *, limit: int = 20, stages: Sequence[str] | None = None
) -> list[ScoreRecord]:
    """:meth:`TopActiveQuery.top_active` on ``contacts.list`` (paged) and ``scores.get``
    per active contact.

    :raises ValueError: if ``limit`` is negative.
    """
    if limit < 0:
        raise ValueError("limit must not be negative")
    wanted = None if stages is None else set(stages)
    scored: list[ScoreRecord] = []
    after = None
    while True:
        page = uow.contacts.list(after=after, limit=PAGE)
        for contact in page:
            if wanted is not None and contact.stage not in wanted:
                continue
            try:
                scored.append(uow.scores.get(contact.id, model))
            except NotFound:
                continue
        if len(page) < PAGE:
            break
        after = page[-1].id
    scored.sort(key=lambda s: (-s.score, s.contact_id))
    return scored[:limit]


def reference_select_ids(
    uow: UnitOfWork, criteria: Criteria, *, limit: int = 1000, after: uuid.UUID | None = None
) -> list[uuid.UUID]:
    """:meth:`SegmentIdsQuery.select_ids` on ``contacts.select``.

    :raises ValueError: if ``limit`` is negative.
    """
    return [c.id for c in uow.contacts.select(criteria, limit=limit, after=after)]


def reference_count_matching(uow: UnitOfWork, criteria: Criteria) -> int:
    """:meth:`SegmentIdsQuery.count_matching` on ``contacts.select`` (paged by id)."""
    count, after = 0, None
    while True:
        page = uow.contacts.select(criteria, limit=PAGE, after=after)
        count += len(page)
        if len(page) < PAGE:
            return count
        after = page[-1].id


# --------------------------------------------------------------------------- registry and dispatch


@attrs.frozen
class QueryCapability:
    """One optional query: ``name`` (``"<repository>.<method>"``, what a backend puts in
    ``native_queries``), the repository attribute of the unit of work and the method's
    name there, and the reference implementation (called with the unit of work first)."""

    name: str
    repository: str
    method: str
    reference: Callable[..., Any]


def _capability(repository: str, method: str, reference: Callable[..., Any]) -> QueryCapability:
    return QueryCapability(f"{repository}.{method}", repository, method, reference)


#: Every optional query capability, by name.
QUERY_CAPABILITIES: dict[str, QueryCapability] = {
    c.name: c
    for c in (
        _capability("interactions", "first_responses", reference_first_responses),
        _capability("interactions", "clear_timelines", reference_clear_timelines),
        _capability("interactions", "latest_times", reference_latest_times),
        _capability("interactions", "iter_touches", reference_iter_touches),
        _capability("stages", "first_reached", reference_first_reached),
        _capability("contacts", "active_scores", reference_active_scores),
        _capability("contacts", "select_ids", reference_select_ids),
        _capability("contacts", "count_matching", reference_count_matching),
        _capability("scores", "top_active", reference_top_active),
    )
}

#: Every capability name: what a backend declares when it implements them all.
ALL_QUERIES: frozenset[str] = frozenset(QUERY_CAPABILITIES)


def query_function(uow: UnitOfWork, name: str, *, native: bool | None = None) -> Callable[..., Any]:
    """The callable that answers query ``name`` on ``uow``: the repository's own method if
    the unit of work declares ``name`` in ``native_queries``, else the reference
    implementation bound to ``uow``.

    :param name: a key of :data:`QUERY_CAPABILITIES` (``"interactions.first_responses"``).
    :param native: force the native method (True) or the reference (False); the
        conformance suite compares the two.  None: as declared.
    :raises UnknownComponentError: if ``name`` is not a known capability.
    :raises NotImplementedError: if ``native=True`` and the backend does not declare it.
    """
    capability = QUERY_CAPABILITIES.get(name)
    if capability is None:
        raise UnknownComponentError("storage query", name, sorted(QUERY_CAPABILITIES))
    declared = name in uow.native_queries
    use_native = declared if native is None else native
    if use_native:
        if not declared:
            raise NotImplementedError(f"the backend does not declare the native query {name!r}")
        method: Callable[..., Any] = getattr(getattr(uow, capability.repository), capability.method)
        return method

    def reference(*args: Any, **kwargs: Any) -> Any:
        return capability.reference(uow, *args, **kwargs)

    return reference


class Queries:
    """The optional queries of one unit of work, typed (see :func:`queries`); each method
    has the signature and meaning of the capability Protocol of the same name."""

    def __init__(self, uow: UnitOfWork) -> None:
        self._uow = uow

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        return query_function(self._uow, name)(*args, **kwargs)

    def first_responses(
        self,
        *,
        inbound_kinds: Sequence[str],
        outbound_kinds: Sequence[str],
        contact_ids: Sequence[uuid.UUID] | None = None,
    ) -> list[FirstResponseRecord]:
        """:meth:`FirstResponsesQuery.first_responses`."""
        result: list[FirstResponseRecord] = self._call(
            "interactions.first_responses",
            inbound_kinds=inbound_kinds,
            outbound_kinds=outbound_kinds,
            contact_ids=contact_ids,
        )
        return result

    def clear_timelines(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[InteractionFacts]]:
        """:meth:`TimelineFactsQuery.clear_timelines`."""
        result: dict[uuid.UUID, list[InteractionFacts]] = self._call("interactions.clear_timelines", contact_ids)
        return result

    def latest_times(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """:meth:`TimelineFactsQuery.latest_times`."""
        result: dict[uuid.UUID, datetime] = self._call("interactions.latest_times", contact_ids)
        return result

    def iter_touches(
        self,
        kinds: Sequence[str],
        *,
        skip_outbound: Sequence[str] = (),
        occurred_after: datetime | None = None,
        occurred_before: datetime | None = None,
    ) -> Iterator[TouchRecord]:
        """:meth:`TouchesQuery.iter_touches`."""
        result: Iterator[TouchRecord] = self._call(
            "interactions.iter_touches",
            kinds,
            skip_outbound=skip_outbound,
            occurred_after=occurred_after,
            occurred_before=occurred_before,
        )
        return result

    def first_reached(
        self,
        stages: Sequence[str],
        *,
        pipeline: str | None = None,
        reached_from: datetime | None = None,
        reached_before: datetime | None = None,
    ) -> Iterator[StageReachedRecord]:
        """:meth:`FirstReachedQuery.first_reached`."""
        result: Iterator[StageReachedRecord] = self._call(
            "stages.first_reached", stages, pipeline=pipeline, reached_from=reached_from, reached_before=reached_before
        )
        return result

    def active_scores(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, float | None]:
        """:meth:`ActiveScoresQuery.active_scores`."""
        result: dict[uuid.UUID, float | None] = self._call("contacts.active_scores", contact_ids)
        return result

    def top_active(self, model: str, *, limit: int = 20, stages: Sequence[str] | None = None) -> list[ScoreRecord]:
        """:meth:`TopActiveQuery.top_active`."""
        result: list[ScoreRecord] = self._call("scores.top_active", model, limit=limit, stages=stages)
        return result

    def select_ids(self, criteria: Criteria, *, limit: int = 1000, after: uuid.UUID | None = None) -> list[uuid.UUID]:
        """:meth:`SegmentIdsQuery.select_ids`."""
        result: list[uuid.UUID] = self._call("contacts.select_ids", criteria, limit=limit, after=after)
        return result

    def count_matching(self, criteria: Criteria) -> int:
        """:meth:`SegmentIdsQuery.count_matching`."""
        result: int = self._call("contacts.count_matching", criteria)
        return result


def queries(uow: UnitOfWork) -> Queries:
    """The optional queries of ``uow``, each answered natively when the backend declares
    it (:attr:`UnitOfWork.native_queries <carecrm.core.storage.contract.UnitOfWork.native_queries>`)
    and by the reference implementation on the required core otherwise."""
    return Queries(uow)
