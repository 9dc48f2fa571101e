"""The scoring-model contract: a lead score, with its reasons, from a contact's timeline.

A scoring model is a swappable part (``docs/writing_plugins.md``): a class registered through
``carecrm_register_scoring_models`` and keyed by its :attr:`ScoringModel.model_id`; the
practice picks one by name::

    [scoring]
    model = "points"          # the default; an unknown name lists the registered ones
    live = true               # rescore on live events (default); false for bulk imports
    ...the model's own options (the built-in points model reads [[scoring.rules]])...

:meth:`ScoringModel.score` is **pure**: it gets the contact's interactions and the time
``now`` and returns a :class:`ScoreResult`; it does no I/O, reads no clock and is
deterministic, so the same timeline and ``now`` always give the same score.  The kind,
direction, channel, attributes and time of an interaction are stored in clear (no
personal data), so scoring never decrypts anything: the core hands the stored
:class:`~carecrm.core.model.records.InteractionRecord` objects to the model directly.
"""

from __future__ import annotations

import abc
import uuid
import warnings
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import attrs

from carecrm.core.errors import ConfigError
from carecrm.core.model.domain import Practice
from carecrm.core.model.timeutil import isoformat_z, to_utc_ms
from carecrm.core.plugins.options import component_options

if TYPE_CHECKING:
    from carecrm.core.config import Settings

#: The model used when ``[scoring] model`` is not set.
DEFAULT_MODEL = "points"

#: Keys of the ``[scoring]`` table the core reads itself; the rest are the model's options.
CORE_KEYS: tuple[str, ...] = ("model", "live")

#: At most this many reasons are stored with a score; the smaller rest are summed into
#: one ``(N smaller reasons)`` entry (a contact with thousands of page views keeps a
#: readable explanation and a bounded row).
MAX_STORED_REASONS = 100


class ScoredInteraction(Protocol):
    """What a scoring model may read of an interaction: clear fields only.

    Both :class:`~carecrm.core.model.records.InteractionRecord` (what the core passes) and
    :class:`~carecrm.core.model.domain.Interaction` satisfy it.  ``occurred_at`` is
    timezone-aware UTC; ``attributes`` is clear JSON (``machine_open``,
    ``appointment_type``, durations in seconds, ...).
    """

    @property
    def id(self) -> uuid.UUID: ...

    @property
    def kind(self) -> str: ...

    @property
    def occurred_at(self) -> datetime: ...

    @property
    def channel(self) -> str | None: ...

    @property
    def direction(self) -> str | None: ...

    @property
    def attributes(self) -> Mapping[str, Any]: ...


@attrs.frozen(kw_only=True)
class ScoreReason:
    """One contribution to a score: ``points`` (may be negative or fractional after
    decay) earned under ``rule`` by the interaction ``interaction_id`` of ``kind`` that
    occurred at ``occurred_at`` (UTC).  A summary of several small reasons has no
    interaction (``interaction_id`` and ``occurred_at`` None) and ``count`` > 1."""

    rule: str
    kind: str
    points: float
    interaction_id: uuid.UUID | None = None
    occurred_at: datetime | None = None
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        """The stored JSON object: ``{"rule", "kind", "points", "interaction_id",
        "occurred_at"}`` (id as a string, time ISO 8601 UTC with ``Z``), plus ``count``
        when it sums several reasons."""
        out: dict[str, Any] = {
            "rule": self.rule,
            "kind": self.kind,
            "points": self.points,
            "interaction_id": str(self.interaction_id) if self.interaction_id else None,
            "occurred_at": isoformat_z(self.occurred_at) if self.occurred_at else None,
        }
        if self.count != 1:
            out["count"] = self.count
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ScoreReason:
        """Read a stored reason back (missing keys become None / defaults).

        :raises ValueError: if ``interaction_id`` or ``occurred_at`` is malformed.
        """
        iid = data.get("interaction_id")
        when = data.get("occurred_at")
        return cls(
            rule=str(data.get("rule", "")),
            kind=str(data.get("kind", "")),
            points=float(data.get("points", 0.0)),
            interaction_id=uuid.UUID(str(iid)) if iid else None,
            occurred_at=to_utc_ms(datetime.fromisoformat(str(when).replace("Z", "+00:00"))) if when else None,
            count=int(data.get("count", 1)),
        )


def _reasons(reasons: Iterable[ScoreReason]) -> tuple[ScoreReason, ...]:
    return tuple(reasons)


@attrs.frozen(kw_only=True)
class ScoreResult:
    """What a model returns: the ``score`` (points, rounded to 2 decimals) and the
    ``reasons`` that add up to it (before rounding), oldest interaction first."""

    score: float
    reasons: tuple[ScoreReason, ...] = attrs.field(default=(), converter=_reasons)


class ScoringModel(abc.ABC):
    """Base class of lead-scoring models.

    Subclasses set :attr:`model_id` (the name in ``[scoring] model``) and implement
    :meth:`score`.  Options are checked once, in ``__init__``.

    Built keyword-only, like every component: ``Model(name=model_id, options=...,
    settings=settings)``; the old ``Model(options, practice)`` works for one release with a
    :class:`DeprecationWarning`.

    :param name: the name it was chosen by (its ``model_id``).
    :param options: the ``[scoring]`` table without the core's keys (``model``, ``live``),
        structured into :attr:`options_type` (a mapping is structured here).
    :param settings: the practice's settings (:attr:`practice` is ``settings.practice``:
        locations and time zones, service lines).
    :raises ConfigError: from ``__init__`` when an option is wrong, naming it as
        ``scoring.<option>`` (``scoring.rules[2].points``).
    """

    model_id: ClassVar[str] = ""
    #: One line for ``carecrm plugins`` and the docs.
    description: ClassVar[str] = ""
    #: The attrs class of the options; None (deprecated) passes them as a plain dict.
    options_type: ClassVar[type[Any] | None] = None

    def __init__(
        self, *legacy: Any, name: str | None = None, options: Any = None, settings: Settings | None = None
    ) -> None:
        if legacy:
            options, settings = _legacy_args(type(self), legacy)
        if settings is None:
            raise TypeError(f"{type(self).__name__}: pass name=..., options=..., settings=...")
        self.name = name or self.model_id
        self.settings = settings
        self.practice: Practice = settings.practice
        self.options: Any = component_options(
            type(self).options_type,
            {} if options is None else options,
            section="scoring",
            owner=f"scoring model {self.name!r}",
        )

    @abc.abstractmethod
    def score(self, interactions: Sequence[ScoredInteraction], now: datetime) -> ScoreResult:
        """Score one contact.

        :param interactions: every interaction of the contact, ordered by
            (occurred_at, id), oldest first.
        :param now: the time the score is computed for (timezone-aware UTC); decay and
            "within N days" rules measure ages from it.  Injected, never read from a clock.
        :returns: the score and its reasons.
        :raises ValueError: if ``now`` is naive.
        """


def _legacy_args(cls: type[Any], args: tuple[Any, ...]) -> tuple[Any, Settings]:
    """``(options, practice)`` positional arguments, deprecated, as keywords."""
    from carecrm.core.config import Settings

    if len(args) != 2:
        raise TypeError(f"{cls.__name__}: pass name=..., options=..., settings=...")
    warnings.warn(
        f"{cls.__name__}(options, practice) is deprecated: pass name=..., options=..., settings=...",
        DeprecationWarning,
        stacklevel=3,
    )
    return args[0], Settings(practice=args[1])


def scoring_config(raw: Mapping[str, Any]) -> tuple[str, bool, dict[str, Any]]:
    """Read the ``[scoring]`` table of a parsed config document.

    :param raw: the whole parsed ``carecrm.toml`` (``Settings.raw``).
    :returns: ``(model name, live updates on?, the model's options)``; without a
        ``[scoring]`` table ``("points", True, {})``.
    :raises ConfigError: if ``[scoring]`` is not a table, ``scoring.model`` not a
        non-empty string or ``scoring.live`` not a boolean.
    """
    table = raw.get("scoring", {})
    if not isinstance(table, Mapping):
        raise ConfigError("scoring: [scoring] must be a table")
    model = table.get("model", DEFAULT_MODEL)
    if not isinstance(model, str) or not model.strip():
        raise ConfigError('scoring.model: must be the name of a scoring model, e.g. "points"')
    live = table.get("live", True)
    if not isinstance(live, bool):
        raise ConfigError("scoring.live: must be true or false")
    options = {k: v for k, v in table.items() if k not in CORE_KEYS}
    return model.strip(), live, options


def compact_reasons(reasons: Iterable[ScoreReason], limit: int = MAX_STORED_REASONS) -> list[ScoreReason]:
    """At most ``limit`` reasons for storage: the ``limit - 1`` largest by absolute points
    (oldest first) and one summary ``(N smaller reasons)`` holding the sum of the rest.
    Fewer than ``limit`` reasons are returned unchanged.

    :raises ValueError: if ``limit`` < 2.
    """
    if limit < 2:
        raise ValueError("limit: keep at least 2 reasons")
    items = list(reasons)
    if len(items) <= limit:
        return items
    order = sorted(range(len(items)), key=lambda i: (-abs(items[i].points), i))
    keep = set(order[: limit - 1])
    kept = [r for i, r in enumerate(items) if i in keep]
    rest = [r for i, r in enumerate(items) if i not in keep]
    summary = ScoreReason(
        rule=f"({sum(r.count for r in rest)} smaller reasons)",
        kind="*",
        points=round(sum(r.points for r in rest), 2),
        count=sum(r.count for r in rest),
    )
    return [*kept, summary]
