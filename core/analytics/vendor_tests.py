"""Vendors' test and sample events: stored and shown, kept out of the figures.

Ad platforms and form tools send test leads ("Send test data" in Google Ads, Meta's Lead
Ads Testing Tool, LinkedIn's test leads, Mailgun's test webhooks).  They are real
deliveries of the vendor's format, so they go through the inbox and are stored like any
other lead (an operator checking a new webhook sees them on the timeline), but they are
not the practice's marketing: they never count in the pipeline report, lead scores,
attribution credits or segments.

**The one rule** (``docs/writing_plugins.md``, "Test events"): a connector marks a test
event with the interaction attribute ``test`` set to ``True``
(``Interaction.attributes["test"] = True``; :data:`TEST_ATTRIBUTE`); nothing else
(``"true"``, ``1``) counts.  The attribute is clear JSON, stored with the interaction,
and readable without decrypting anything.

**Where the figures leave them out**:

* a *test interaction* (:func:`is_test`) is dropped wherever interactions are counted:
  the facts a scoring model reads and the touches attribution credits;
* a *test contact* (:func:`flagged_contacts`) is one whose timeline has at least one test
  interaction and no other interaction except the practice's own bookkeeping
  (:data:`BOOKKEEPING_KINDS`: stage changes, notes, tasks, consent changes, merges): a
  contact that only a vendor's test ever created.  It is left out of the pipeline
  report, is never scored (so never on the leaderboard), is never a conversion in
  attribution and never in a segment.

**Why derived, not stored** (no schema change): the mark is computed from the
interactions each time a figure is computed, so there is nothing to keep in step: a
test contact that later sends a real lead counts from that lead on; a merge of a test
contact into a real one just works; a connector that marks its test events needs no
core change, and every backend answers through the existing ``clear_timelines`` query
(one more query per page of contacts a figure already reads).  Storing a flag on the
contact would need a column (a migration on every backend) and an update rule on every
ingest, merge and re-processing.  The cost is a read of the clear facts of the contacts
a figure covers, paid only once lead scoring has seen a test event (:data:`SEEN_KEY`, a
database setting written the first time scoring reads a test interaction: at once with
``[scoring] live``, the default; with ``live = false`` at the next ``carecrm score
recompute``): a practice that never received a test lead pays one small read per figure.
Segments, whose count is one query, then look only among the matching contacts that have
no score (:func:`flagged_matching`).

Nothing here reads personal data: only kinds and clear attributes.
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Protocol, TypeVar

import attrs

from carecrm.core.analytics.criteria import And, Criteria, Eq
from carecrm.core.ingest import kit
from carecrm.core.storage.capabilities import queries
from carecrm.core.storage.contract import UnitOfWork

#: The interaction attribute that marks a vendor's test or sample event (the connector
#: kit's :data:`carecrm.core.ingest.kit.TEST_ATTRIBUTE`).
TEST_ATTRIBUTE = kit.TEST_ATTRIBUTE

#: Kinds the practice's own work adds to a timeline: they neither make a contact real
#: nor a test (a coordinator moving a test lead's stage does not make it a lead).
BOOKKEEPING_KINDS: frozenset[str] = frozenset(
    {"stage.changed", "consent.changed", "contacts.merged", "note.added", "task.created", "task.completed"}
)

#: Contacts classified per query (the chunk size of :func:`flagged_contacts`).
CHUNK = 500


class _Facts(Protocol):
    @property
    def id(self) -> uuid.UUID: ...

    @property
    def kind(self) -> str: ...

    @property
    def attributes(self) -> Mapping[str, Any]: ...


def is_test(attributes: Mapping[str, Any] | None) -> bool:
    """True when an interaction's clear attributes mark it as a vendor's test event
    (``attributes["test"] is True``).

    :param attributes: the interaction's ``attributes`` (None: not a test).
    """
    return bool(attributes) and attributes.get(TEST_ATTRIBUTE) is True  # type: ignore[union-attr]


def is_test_timeline(facts: Iterable[_Facts]) -> bool:
    """True when a contact's interactions make it a *test contact*: at least one test
    interaction and no interaction other than a test one or the practice's bookkeeping
    (:data:`BOOKKEEPING_KINDS`).  An empty timeline is not a test contact."""
    seen_test = False
    for fact in facts:
        if is_test(fact.attributes):
            seen_test = True
        elif fact.kind not in BOOKKEEPING_KINDS:
            return False
    return seen_test


@attrs.frozen
class Marks:
    """What :func:`marks` found among some contacts: ``interactions``, the ids of their
    test interactions; ``contacts``, the test contacts among them."""

    interactions: frozenset[uuid.UUID] = frozenset()
    contacts: frozenset[uuid.UUID] = frozenset()


def marks(uow: UnitOfWork, contact_ids: Iterable[uuid.UUID]) -> Marks:
    """The test interactions and test contacts (:func:`is_test_timeline`) among
    ``contact_ids``, read :data:`CHUNK` contacts per ``clear_timelines`` query (clear
    facts only, nothing decrypted).  Nothing is read but one setting until lead scoring
    has seen a test event (:func:`seen`)."""
    if not seen(uow):
        return Marks()
    ids = list(dict.fromkeys(contact_ids))
    interactions: set[uuid.UUID] = set()
    contacts: set[uuid.UUID] = set()
    for start in range(0, len(ids), CHUNK):
        timelines = queries(uow).clear_timelines(ids[start : start + CHUNK])
        for cid, facts in timelines.items():
            interactions.update(f.id for f in facts if is_test(f.attributes))
            if is_test_timeline(facts):
                contacts.add(cid)
    return Marks(interactions=frozenset(interactions), contacts=frozenset(contacts))


def flagged_contacts(uow: UnitOfWork, contact_ids: Iterable[uuid.UUID]) -> frozenset[uuid.UUID]:
    """The test contacts among ``contact_ids`` (see :func:`marks`)."""
    return marks(uow, contact_ids).contacts


T = TypeVar("T")


def without_tests(
    uow: UnitOfWork,
    rows: Iterable[T],
    contact_of: Callable[[T], uuid.UUID],
    *,
    id_of: Callable[[T], uuid.UUID] | None = None,
    chunk: int = CHUNK,
) -> Iterator[T]:
    """``rows`` without those of test contacts (and, with ``id_of``, without the rows
    that are test interactions), order kept, streamed: rows are held ``chunk`` distinct
    contacts at a time and classified with one :func:`marks` per chunk.

    :param rows: rows naming a contact (touches, conversions, ids), in any order.
    :param contact_of: the row's contact id.
    :param id_of: the row's interaction id, for rows that are interactions.
    """
    held: list[T] = []
    contacts: set[uuid.UUID] = set()

    def release() -> Iterator[T]:
        found = marks(uow, contacts)
        for r in held:
            if contact_of(r) in found.contacts:
                continue
            if id_of is not None and id_of(r) in found.interactions:
                continue
            yield r

    for row in rows:
        cid = contact_of(row)
        if cid not in contacts and len(contacts) >= chunk:
            yield from release()
            held, contacts = [], set()
        held.append(row)
        contacts.add(cid)
    if held:
        yield from release()


#: The database setting (``uow.meta``) that says a vendor's test event has been seen:
#: set once, by lead scoring, when it first reads a test interaction; never unset.
SEEN_KEY = "vendor_tests.seen"


def note_seen(uow: UnitOfWork) -> None:
    """Record, in ``uow``, that the database holds a vendor's test event (:data:`SEEN_KEY`;
    written only the first time)."""
    if uow.meta.get(SEEN_KEY) is None:
        uow.meta.set(SEEN_KEY, "1")


def seen(uow: UnitOfWork) -> bool:
    """Whether a vendor's test event has ever been seen (:func:`note_seen`)."""
    return uow.meta.get(SEEN_KEY) is not None


class SeenCache:
    """What :func:`seen` answered for one storage, remembered by a service that asks on
    every call (a segment count is a few milliseconds; the setting's read would add a
    tenth).  A yes is kept for good (the setting is never unset); a no is asked again
    after ``ttl_seconds`` (default 5 s), so a process learns within that time that
    another process received the first test lead ever; a process that notes it itself
    (:func:`note_seen`) is told at once through :meth:`mark`.

    :param ttl_seconds: how long a "not seen" answer is reused, in seconds.
    :param clock: monotonic seconds (tests pass a fake one).
    """

    def __init__(self, ttl_seconds: float = 5.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._seen = False
        self._checked_at: float | None = None

    def seen(self, uow: UnitOfWork) -> bool:
        """:func:`seen`, read again only when the last answer was no and is older than the TTL."""
        if self._seen:
            return True
        now = self._clock()
        if self._checked_at is None or now - self._checked_at >= self._ttl:
            self._seen = seen(uow)
            self._checked_at = now
        return self._seen

    def mark(self) -> None:
        """Remember that a test event was seen (this process just noted one)."""
        self._seen = True


#: One :class:`SeenCache` per open storage backend of this process.
_CACHES: weakref.WeakKeyDictionary[Any, SeenCache] = weakref.WeakKeyDictionary()


def seen_cache(storage: Any) -> SeenCache:
    """The :class:`SeenCache` of ``storage`` (a :class:`~carecrm.core.storage.contract.StorageBackend`),
    made on first use; the scoring service marks it when it notes a test event, the
    segments service asks it."""
    cache = _CACHES.get(storage)
    if cache is None:
        cache = _CACHES.setdefault(storage, SeenCache())
    return cache


def flagged_matching(
    uow: UnitOfWork, criteria: Criteria, *, page: int = 1000, cache: SeenCache | None = None
) -> frozenset[uuid.UUID]:
    """The test contacts a segment filter tree matches.

    Until lead scoring has seen a test event (:func:`seen`: one small read of a setting),
    there are none and nothing else is read, so a segment count stays one count query
    for a practice that never received a test lead.  Scoring reads every new interaction
    as it arrives (``[scoring] live``, the default); with ``live = false`` a test lead is
    counted in segments until ``carecrm score recompute`` has read it.

    Then: a test contact is never scored (:meth:`ScoringService.rescore_contacts
    <carecrm.core.analytics.scoring_service.ScoringService.rescore_contacts>` skips it
    and clears a score stored before), so only the matching contacts whose clear
    ``score`` is not known can be test contacts: those are selected by id (one query
    per ``page``) and classified with :func:`marks`.  With live scoring (the default)
    they are the few contacts without a scored interaction, so a segment count stays
    one count query plus a small one; without it the answer is the same, only slower.
    """
    if not (cache.seen(uow) if cache is not None else seen(uow)):
        return frozenset()
    candidates: list[uuid.UUID] = []
    narrowed = And((criteria, Eq("score", None)))
    after: uuid.UUID | None = None
    while True:
        ids = queries(uow).select_ids(narrowed, limit=page, after=after)
        candidates.extend(ids)
        if len(ids) < page:
            break
        after = ids[-1]
    return flagged_contacts(uow, candidates) if candidates else frozenset()
