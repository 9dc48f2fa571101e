"""Marketing attribution: the model contract, what counts as a touch, the conversion
ladder's steps, and the streaming engine that credits channel groups, sources and
campaigns.

**Touches** (``docs/vocabulary.md`` names the kinds; which of them carry marketing meaning is
decided here).  A touch is an interaction in which the *person* reached the practice or
engaged with its marketing:

* inquiries (:data:`INQUIRY_KINDS`): ``form.submitted``, ``ad_lead.submitted``,
  ``chat.started``, ``chat.message_received``, ``chat.offline_message``, ``sms.received``,
  ``referral.received``, ``walk_in.visited``, ``appointment.requested`` and the calls
  ``call.completed``, ``call.missed``, ``call.voicemail`` unless their direction is
  ``outbound`` (a coordinator's call back is follow-up, not marketing).  Offline touches
  (calls, referrals, walk-ins) count like online ones;
* engagement (:data:`ENGAGEMENT_KINDS`): ``page.viewed``, ``ad.clicked``,
  ``email.clicked``, ``event.attended``.

Not touches: what the practice sends (``email.sent``, ``sms.sent`` ...), delivery and
open receipts (``email.opened`` counts nothing: Apple Mail Privacy Protection opens mail
without a person), appointments, treatments, payments, notes, tasks and system kinds.

A touch's **channel group** is the interaction's ``channel_group`` (derived from its
touchpoint by the practice's rules, :mod:`carecrm.core.model.channels`).  A touch without one
(no touchpoint data) falls back by kind (:data:`KIND_GROUPS`): ``email.clicked`` →
``email``, ``referral.received`` → ``referral_physician`` (a connector that knows a
referral came from a patient sets the touchpoint medium ``patient_referral``), anything
else → ``direct``.  A missing source or campaign is credited to :data:`NOT_SET`.

**Conversions** (the ladder of :data:`carecrm.core.model.vocab.CONVERSION_STEPS`; one conversion
per contact and step):

* ``lead``: the contact's first inquiry (as above);
* ``consult_scheduled``, ``consult_attended``, ``booked_patient``, ``returning_patient``:
  the first stage change (stage history of the practice's pipeline) *into that stage or
  any later main stage* (:meth:`~carecrm.core.storage.contract.StageRepository.first_reached`), so
  a contact moved straight from ``new_lead`` to ``booked_patient`` converts for
  ``consult_scheduled`` and ``consult_attended`` too, at that move;
* ``revenue``: the contact's first ``payment.received``.

The touches of a conversion at time *T* are the contact's touches with
``T - lookback <= occurred_at <= T`` (both ends included), oldest first (ties by id).
"""

from __future__ import annotations

import abc
import math
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from datetime import datetime, timedelta
from itertools import groupby
from typing import TYPE_CHECKING, Any, ClassVar

import attrs

from carecrm.core.analytics.vendor_tests import without_tests
from carecrm.core.errors import PluginError, UnknownComponentError
from carecrm.core.model.records import TouchRecord
from carecrm.core.model.vocab import CONVERSION_STEPS, INBOUND_KINDS
from carecrm.core.pipeline.stages import PipelineConfig
from carecrm.core.plugins.options import component_options
from carecrm.core.storage.capabilities import queries
from carecrm.core.storage.contract import UnitOfWork

if TYPE_CHECKING:
    from carecrm.core.config import Settings

#: Calls: touches unless outbound.
CALL_KINDS: frozenset[str] = frozenset({"call.completed", "call.missed", "call.voicemail"})

#: A person reached out; the first of these is the ``lead`` conversion.
INQUIRY_KINDS: frozenset[str] = frozenset(INBOUND_KINDS | CALL_KINDS | {"appointment.requested"})

#: A person engaged with the practice's marketing (not an inquiry).
ENGAGEMENT_KINDS: frozenset[str] = frozenset({"page.viewed", "ad.clicked", "email.clicked", "event.attended"})

#: Every kind that is a touch.
TOUCH_KINDS: frozenset[str] = INQUIRY_KINDS | ENGAGEMENT_KINDS

#: The channel group of a touch whose interaction has none, by kind (default ``direct``).
KIND_GROUPS: Mapping[str, str] = {"email.clicked": "email", "referral.received": "referral_physician"}

#: The kind whose first occurrence is the ``revenue`` conversion.
REVENUE_KIND = "payment.received"

#: The key credited for a touch without a source or campaign.
NOT_SET = "(not set)"

#: What credit can be grouped by.
DIMENSIONS: tuple[str, ...] = ("channel_group", "source", "campaign")

#: Weights of one journey may miss 1 by this much (floating-point rounding).
SUM_TOLERANCE = 1e-9


@attrs.frozen(kw_only=True, slots=True)
class Touch:
    """One touch of a journey: clear fields of an interaction and its touchpoint.

    :ivar interaction_id: the interaction's id.
    :ivar occurred_at: when it happened (timezone-aware UTC).
    :ivar kind: its kind (``form.submitted``, ``call.completed`` ...).
    :ivar channel: how it happened (``web``, ``phone`` ...), or None.
    :ivar channel_group: the marketing channel group (never None: ``direct`` when the
        interaction has no touchpoint data; see the module docstring).
    :ivar source: the touchpoint's source (``utm_source``: ``google``), or None.
    :ivar medium: the touchpoint's medium (``utm_medium``: ``cpc``), or None.
    :ivar campaign: the touchpoint's campaign, or None.
    """

    interaction_id: uuid.UUID
    occurred_at: datetime
    kind: str
    channel: str | None = None
    channel_group: str = "direct"
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None

    @classmethod
    def from_record(cls, record: TouchRecord) -> Touch:
        """The touch of a stored interaction's clear fields (nothing is decrypted)."""
        tp = record.touchpoint
        return cls(
            interaction_id=record.id,
            occurred_at=record.occurred_at,
            kind=record.kind,
            channel=record.channel,
            channel_group=record.channel_group or KIND_GROUPS.get(record.kind, "direct"),
            source=tp.get("source") or None,
            medium=tp.get("medium") or None,
            campaign=record.campaign or tp.get("campaign") or None,
        )


class AttributionModel(abc.ABC):
    """Base class of attribution models (registered with
    ``carecrm_register_attribution_models``, chosen by :attr:`model_id`).

    A model only splits one conversion's credit among its touches; the core finds the
    conversions and their touches, checks the weights and adds them up.

    Built keyword-only, like every component: ``Model(name=model_id, options=...,
    settings=settings)``; the old ``Model(options)`` works for one release with a
    :class:`DeprecationWarning`.

    :param name: the name it was chosen by (its ``model_id``).
    :param options: the ``[attribution.models.<model_id>]`` table of the practice's
        config (empty when absent), structured into :attr:`options_type`.
    :param settings: the practice's settings (None only for a model built standalone).
    :raises ConfigError: from ``__init__`` when an option is wrong (name the option).
    """

    #: The name a practice picks the model by (``first_touch``).
    model_id: ClassVar[str] = ""
    #: One line for ``carecrm plugins`` and ``carecrm attribute --help``.
    description: ClassVar[str] = ""
    #: The attrs class of the options; None (deprecated) passes them as a plain dict.
    options_type: ClassVar[type[Any] | None] = None

    def __init__(
        self, *legacy: Any, name: str | None = None, options: Any = None, settings: Settings | None = None
    ) -> None:
        if legacy:
            if len(legacy) != 1:
                raise TypeError(f"{type(self).__name__}: pass name=..., options=..., settings=...")
            warnings.warn(
                f"{type(self).__name__}(options) is deprecated: pass name=..., options=..., settings=...",
                DeprecationWarning,
                stacklevel=2,
            )
            options = legacy[0]
        self.name = name or self.model_id
        self.settings = settings
        self.options: Any = component_options(
            type(self).options_type,
            {} if options is None else options,
            section=f"attribution.models.{self.name}",
            owner=f"attribution model {self.name!r}",
        )

    @abc.abstractmethod
    def attribute(self, touches: Sequence[Touch], conversion_at: datetime) -> Sequence[float]:
        """Split one conversion's credit among its touches.

        :param touches: the conversion's touches in its lookback window, oldest first
            (never empty).
        :param conversion_at: when the conversion happened (UTC); every touch is at or
            before it.
        :returns: one weight per touch, in the same order, each >= 0, summing to 1 (the
            core checks this and raises :class:`PluginError` otherwise).
        """


def check_weights(model_id: str, weights: Sequence[float], touches: int) -> None:
    """Check one journey's weights: ``touches`` finite numbers >= 0 summing to 1
    (within :data:`SUM_TOLERANCE`).

    :raises PluginError: naming the model and what is wrong.
    """
    if len(weights) != touches:
        raise PluginError(
            f"attribution model {model_id!r} returned {len(weights)} weights for a journey of {touches} touches"
        )
    for w in weights:
        if not (isinstance(w, (int, float)) and math.isfinite(w) and w >= 0):
            raise PluginError(f"attribution model {model_id!r} returned a weight that is not a number >= 0")
    total = math.fsum(weights)
    if abs(total - 1.0) > SUM_TOLERANCE:
        raise PluginError(
            f"attribution model {model_id!r} returned weights summing to {total!r} for a journey of "
            f"{touches} touches; they must sum to 1"
        )


def conversion_steps(pipeline: PipelineConfig) -> tuple[str, ...]:
    """The steps of the conversion ladder this pipeline can measure, in ladder order:
    ``lead``, ``revenue`` and every ladder stage that is a main stage of the pipeline."""
    return tuple(s for s in CONVERSION_STEPS if s in ("lead", "revenue") or s in pipeline.stages)


def check_step(step: str, pipeline: PipelineConfig) -> None:
    """:raises UnknownComponentError: if ``step`` is not a step of :func:`conversion_steps`."""
    if step not in conversion_steps(pipeline):
        raise UnknownComponentError("conversion step", step, conversion_steps(pipeline))


def check_dimension(by: str) -> None:
    """:raises UnknownComponentError: if ``by`` is not one of :data:`DIMENSIONS`."""
    if by not in DIMENSIONS:
        raise UnknownComponentError("attribution dimension", by, DIMENSIONS)


@attrs.frozen(kw_only=True)
class Journey:
    """One conversion and its touches (oldest first; may be empty)."""

    contact_id: uuid.UUID
    conversion_at: datetime
    touches: tuple[Touch, ...]


@attrs.frozen(kw_only=True)
class AttributionRow:
    """One credited key.

    :ivar key: the channel group, source or campaign (:data:`NOT_SET` when unknown).
    :ivar credit: the conversions credited to it (a sum of fractions, > 0).
    :ivar conversions: the conversions it received some credit of (a key that was in a
        journey but got no credit from the model, such as a middle touch under
        ``first_touch``, gets no row).
    """

    key: str
    credit: float
    conversions: int


@attrs.frozen(kw_only=True)
class AttributionReport:
    """What ``CareCRM.attribute`` answers.

    ``rows`` are sorted by credit (highest first), then key; the credits add up to
    ``conversions_touched``.

    :ivar model: the model's id.
    :ivar by: ``channel_group``, ``source`` or ``campaign``.
    :ivar step: the conversion step measured.
    :ivar lookback_days: the window before each conversion, in days.
    :ivar since: conversions at or after this time (UTC), or None.
    :ivar until: conversions before this time (UTC), or None.
    :ivar conversions: conversions in [since, until).
    :ivar conversions_touched: of those, the ones with at least one touch in their window.
    :ivar conversions_without_touch: the others (no credit to give).
    :ivar touches: touches credited in all, over every journey.
    """

    model: str
    by: str
    step: str
    lookback_days: int
    since: datetime | None
    until: datetime | None
    rows: tuple[AttributionRow, ...]
    conversions: int
    conversions_touched: int
    conversions_without_touch: int
    touches: int


# --------------------------------------------------------------------------- journeys


def _by_contact(records: Iterable[TouchRecord]) -> Iterator[tuple[uuid.UUID, list[TouchRecord]]]:
    for cid, group in groupby(records, key=lambda r: r.contact_id):
        yield cid, list(group)


def iter_journeys(
    uow: UnitOfWork,
    *,
    step: str,
    pipeline: PipelineConfig,
    lookback: timedelta,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[Journey]:
    """Stream the journeys of every conversion at ``step`` with ``since <= T < until``,
    in contact-id order, holding one chunk of contacts' rows at a time.

    Touches come from :meth:`InteractionRepository.iter_touches`; for the stage steps the
    conversions come from :meth:`StageRepository.first_reached` (the database finds each
    contact's first entry and applies [since, until)) and the two streams, both in
    contact-id order, are merge-joined.  Vendors' test events are left out
    (:mod:`carecrm.core.analytics.vendor_tests`): a test interaction is no touch and a
    test contact no conversion; to tell them, both streams are read
    :data:`~carecrm.core.analytics.vendor_tests.CHUNK` contacts ahead and their clear
    facts read once per chunk.

    :param step: a step of :func:`conversion_steps` (checked by the caller).
    :param lookback: the window before each conversion.
    """
    touch_kinds = sorted(TOUCH_KINDS | ({REVENUE_KIND} if step == "revenue" else set()))
    if step in ("lead", "revenue"):
        # the first inquiry / payment ever decides: no lower bound on the stream
        rows = queries(uow).iter_touches(touch_kinds, skip_outbound=sorted(CALL_KINDS), occurred_before=until)
        for cid, records in _by_contact(_real_touches(uow, rows)):
            yield from _event_journey(cid, records, step, lookback, since, until)
        return

    qualifying = pipeline.stages[pipeline.stages.index(step) :]
    conversions = without_tests(
        uow,
        queries(uow).first_reached(qualifying, pipeline=pipeline.name, reached_from=since, reached_before=until),
        lambda c: c.contact_id,
    )
    rows = _real_touches(
        uow,
        queries(uow).iter_touches(
            touch_kinds,
            skip_outbound=sorted(CALL_KINDS),
            occurred_after=(since - lookback) if since is not None else None,
            occurred_before=until,
        ),
    )
    pending: TouchRecord | None = next(rows, None)
    for conversion in conversions:
        cid, converted_at = conversion.contact_id, conversion.reached_at
        while pending is not None and pending.contact_id < cid:
            pending = next(rows, None)
        low = converted_at - lookback
        touches: list[Touch] = []
        while pending is not None and pending.contact_id == cid:
            if low <= pending.occurred_at <= converted_at:
                touches.append(Touch.from_record(pending))
            pending = next(rows, None)
        yield Journey(contact_id=cid, conversion_at=converted_at, touches=tuple(touches))


def _real_touches(uow: UnitOfWork, rows: Iterable[TouchRecord]) -> Iterator[TouchRecord]:
    """``rows`` without vendors' test interactions and without the touches of test
    contacts (:mod:`carecrm.core.analytics.vendor_tests`): a test lead is never a touch
    nor a conversion."""
    return without_tests(uow, rows, lambda t: t.contact_id, id_of=lambda t: t.id)


def _event_journey(
    cid: uuid.UUID,
    records: list[TouchRecord],
    step: str,
    lookback: timedelta,
    since: datetime | None,
    until: datetime | None,
) -> Iterator[Journey]:
    """The journey of one contact for ``lead`` (first inquiry) or ``revenue`` (first payment)."""
    if step == "lead":
        first = next((r for r in records if r.kind in INQUIRY_KINDS), None)
    else:
        first = next((r for r in records if r.kind == REVENUE_KIND), None)
    if first is None:
        return
    at = first.occurred_at
    if (since is not None and at < since) or (until is not None and at >= until):
        return
    low = at - lookback
    touches = tuple(Touch.from_record(r) for r in records if r.kind != REVENUE_KIND and low <= r.occurred_at <= at)
    yield Journey(contact_id=cid, conversion_at=at, touches=touches)


# --------------------------------------------------------------------------- credit


def _key_function(by: str) -> Callable[[Touch], str]:
    if by == "channel_group":
        return lambda t: t.channel_group
    if by == "source":
        return lambda t: t.source or NOT_SET
    return lambda t: t.campaign or NOT_SET


def credit_journeys(
    journeys: Iterable[Journey],
    model: AttributionModel,
    *,
    by: str,
    step: str,
    lookback_days: int,
    since: datetime | None = None,
    until: datetime | None = None,
) -> AttributionReport:
    """Apply ``model`` to every journey and add the credit up by ``by``.

    :raises PluginError: if the model returns weights that are not one number >= 0 per
        touch summing to 1 (:func:`check_weights`).
    :raises UnknownComponentError: for an unknown ``by``.
    """
    check_dimension(by)
    key_of = _key_function(by)
    model_id = model.model_id
    credit: dict[str, float] = {}
    touched: dict[str, int] = {}
    conversions = with_touch = touches_total = 0
    for journey in journeys:
        conversions += 1
        touches = journey.touches
        if not touches:
            continue
        with_touch += 1
        touches_total += len(touches)
        weights = model.attribute(touches, journey.conversion_at)
        check_weights(model_id, weights, len(touches))
        shared: set[str] = set()
        for touch, weight in zip(touches, weights, strict=True):
            if weight > 0:
                key = key_of(touch)
                credit[key] = credit.get(key, 0.0) + weight
                shared.add(key)
        for key in shared:
            touched[key] = touched.get(key, 0) + 1
    rows = sorted(
        (AttributionRow(key=k, credit=credit[k], conversions=touched[k]) for k in credit),
        key=lambda r: (-r.credit, r.key),
    )
    return AttributionReport(
        model=model_id,
        by=by,
        step=step,
        lookback_days=lookback_days,
        since=since,
        until=until,
        rows=tuple(rows),
        conversions=conversions,
        conversions_touched=with_touch,
        conversions_without_touch=conversions - with_touch,
        touches=touches_total,
    )
