"""The built-in ``points`` scoring model: points per interaction, by rules set in config.

Each rule gives points to the interactions it matches::

    [scoring]
    model = "points"

    [[scoring.rules]]
    kind = "form.submitted"       # an interaction kind, or a "noun.*" wildcard ("email.*")
    points = 10                   # any number; negative lowers the score
    first_time_only = true        # only the contact's first matching interaction earns it
    name = "first inquiry"        # optional label shown in explanations

    [[scoring.rules]]
    kind = "email.opened"
    points = 2
    half_life_days = 30           # exponential decay: worth half after 30 days, a quarter after 60
    where = { machine_open = false }   # optional: attributes that must be equal

Rules:

* an interaction earns the points of **every** rule that matches it (a rule for
  ``email.*`` and one for ``email.clicked`` both count for a click); the score is the sum,
  rounded to 2 decimals, and every earning is a reason kept with the score;
* ``where`` compares the interaction's attributes for equality (``true`` is not ``1``);
  the keys ``channel`` and ``direction`` compare the interaction's own channel and
  direction (``where = { direction = "inbound" }``);
* decay measures an interaction's age from the ``now`` the score is computed for;
  interactions dated after ``now`` count in full;
* an ``email.opened`` whose ``machine_open`` attribute is true (Apple Mail Privacy
  Protection fetched the mail without a person) matches only rules whose
  ``where`` names ``machine_open`` explicitly, so by default it earns nothing.

Without ``[[scoring.rules]]`` the :data:`DEFAULT_RULES` apply (a sensible start for a
practice: inquiries, calls and bookings count most, marketing-email engagement little and
fading, opt-outs and bounces negative).  Giving rules replaces them all.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

import attrs

from carecrm.core.analytics.scoring import ScoredInteraction, ScoreReason, ScoreResult, ScoringModel
from carecrm.core.errors import ConfigError
from carecrm.core.plugins.hookspecs import hookimpl

#: The rules used when the practice configures none (the same shapes as ``[[scoring.rules]]``).
DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    # a person reached out: the strongest signals of intent
    {"kind": "form.submitted", "points": 10, "first_time_only": True},
    {"kind": "ad_lead.submitted", "points": 10, "first_time_only": True},
    {"kind": "referral.received", "points": 8, "first_time_only": True},
    {"kind": "walk_in.visited", "points": 8},
    {"kind": "call.completed", "points": 8, "half_life_days": 90},
    {"kind": "call.missed", "points": 4, "half_life_days": 30, "where": {"direction": "inbound"}},
    {"kind": "call.voicemail", "points": 4, "half_life_days": 30},
    {"kind": "chat.started", "points": 6, "half_life_days": 60},
    {"kind": "chat.offline_message", "points": 5, "half_life_days": 60},
    {"kind": "sms.received", "points": 5, "half_life_days": 60},
    # engagement with marketing: little, and fading
    {"kind": "email.opened", "points": 2, "half_life_days": 30},
    {"kind": "email.clicked", "points": 4, "half_life_days": 60},
    {"kind": "page.viewed", "points": 1, "half_life_days": 14},
    # moving towards care
    {"kind": "appointment.requested", "points": 12},
    {"kind": "appointment.booked", "points": 15},
    {"kind": "appointment.attended", "points": 10},
    {"kind": "appointment.canceled", "points": -8},
    {"kind": "appointment.no_show", "points": -5},
    # opting out or unreachable
    {"kind": "email.unsubscribed", "points": -10},
    {"kind": "email.bounced", "points": -5},
    {"kind": "email.complained", "points": -20},
)

#: The keys a rule may have.
RULE_FIELDS: tuple[str, ...] = ("kind", "points", "first_time_only", "half_life_days", "where", "name")

#: ``where`` keys that compare the interaction's own fields instead of its attributes.
FIELD_KEYS: frozenset[str] = frozenset({"channel", "direction"})

_KIND = re.compile(r"^[a-z][a-z0-9_]*\.(?:[a-z][a-z0-9_]*|\*)$")
_SECONDS_PER_DAY = 86400.0


def _same(actual: Any, expected: Any) -> bool:
    """Equal, and a boolean only equals a boolean (``true`` is not ``1``)."""
    return isinstance(actual, bool) == isinstance(expected, bool) and actual == expected


@attrs.frozen(kw_only=True)
class PointsRule:
    """One checked rule (see the module docstring).

    :ivar kind: an exact kind or a ``noun.*`` wildcard.
    :ivar points: points earned (before decay).
    :ivar half_life_days: days after which the points are worth half; None: no decay.
    :ivar where: attribute (or ``channel`` / ``direction``) values that must be equal.
    :ivar name: the label shown in explanations.
    """

    kind: str
    points: float
    first_time_only: bool = False
    half_life_days: float | None = None
    where: Mapping[str, Any] = attrs.Factory(dict)
    name: str

    def matches(self, item: ScoredInteraction) -> bool:
        """True when ``item`` is of the rule's kind and meets its ``where``; a machine
        open matches only a rule that names ``machine_open``."""
        kind = item.kind
        if self.kind.endswith(".*"):
            if not kind.startswith(self.kind[:-1]):
                return False
        elif kind != self.kind:
            return False
        attributes = item.attributes
        if attributes.get("machine_open") is True and "machine_open" not in self.where:
            return False
        for key, expected in self.where.items():
            actual = getattr(item, key) if key in FIELD_KEYS else attributes.get(key)
            if not _same(actual, expected):
                return False
        return True

    def points_at(self, occurred_at: datetime, now: datetime) -> float:
        """The points of an interaction that occurred at ``occurred_at``, seen at ``now``:
        ``points × 0.5 ** (age in days / half_life_days)``, full points without decay or
        for an interaction dated after ``now``."""
        if self.half_life_days is None:
            return self.points
        age_days = max(0.0, (now - occurred_at).total_seconds() / _SECONDS_PER_DAY)
        return self.points * math.pow(0.5, age_days / self.half_life_days)


def _number(value: Any, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{where}: must be a number")
    return float(value)


def parse_rule(raw: Any, index: int) -> PointsRule:
    """Check one ``[[scoring.rules]]`` table.

    :raises ConfigError: naming ``scoring.rules[<index>].<field>`` and what is wrong.
    """
    at = f"scoring.rules[{index}]"
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{at}: must be a table with kind and points")
    for key in raw:
        if key not in RULE_FIELDS:
            raise ConfigError(f"{at}.{key}: unknown field; known: {', '.join(RULE_FIELDS)}")
    kind = raw.get("kind")
    if kind is None:
        raise ConfigError(f'{at}.kind: required (an interaction kind such as "form.submitted", or "email.*")')
    if not isinstance(kind, str) or not _KIND.match(kind):
        raise ConfigError(f'{at}.kind: must be a dotted kind such as "email.opened" or a wildcard such as "email.*"')
    if "points" not in raw:
        raise ConfigError(f"{at}.points: required (a number, negative to lower the score)")
    points = _number(raw["points"], f"{at}.points")
    first = raw.get("first_time_only", False)
    if not isinstance(first, bool):
        raise ConfigError(f"{at}.first_time_only: must be true or false")
    half_life: float | None = None
    if raw.get("half_life_days") is not None:
        half_life = _number(raw["half_life_days"], f"{at}.half_life_days")
        if half_life <= 0:
            raise ConfigError(f"{at}.half_life_days: must be more than 0 days")
    where = raw.get("where", {})
    if not isinstance(where, Mapping):
        raise ConfigError(f"{at}.where: must be a table of attribute = value, e.g. {{ machine_open = false }}")
    for key, value in where.items():
        if not isinstance(value, (str, int, float, bool)):
            raise ConfigError(f"{at}.where.{key}: must be a string, number or boolean")
    name = raw.get("name")
    if name is not None and (not isinstance(name, str) or not name.strip()):
        raise ConfigError(f"{at}.name: must be a non-empty string")
    if name is None:
        name = kind
        if where:
            name += " where " + ", ".join(f"{k}={_toml_value(v)}" for k, v in where.items())
        if first:
            name += " (first time)"
    return PointsRule(
        kind=kind,
        points=points,
        first_time_only=first,
        half_life_days=half_life,
        where=dict(where),
        name=name.strip(),
    )


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_rules(raw: Any) -> tuple[PointsRule, ...]:
    """Check the ``scoring.rules`` array.

    :raises ConfigError: if it is not an array of tables, or naming the rule and field at fault.
    """
    if not isinstance(raw, Sequence) or isinstance(raw, (str, bytes)):
        raise ConfigError("scoring.rules: must be an array of tables ([[scoring.rules]] with kind and points)")
    return tuple(parse_rule(item, i) for i, item in enumerate(raw))


@attrs.frozen(kw_only=True)
class PointsOptions:
    """The points model's options (the ``[scoring]`` table without ``model`` and ``live``).

    :ivar rules: ``[[scoring.rules]]``, an array of rule tables (checked by
        :func:`parse_rules`, which names the rule and field at fault); None for
        :data:`DEFAULT_RULES`.
    """

    rules: Any = None


class PointsModel(ScoringModel):
    """Points per interaction by configured rules (see the module docstring).

    :param options: the ``[scoring]`` options: ``rules`` (optional array of tables).
    :raises ConfigError: for an unknown option or a bad rule (``scoring.rules[i].<field>``).
    """

    model_id = "points"
    description = "points per interaction kind from [[scoring.rules]], with first-time-only and decay"
    options_type = PointsOptions

    def __init__(self, *legacy: Any, name: str | None = None, options: Any = None, settings: Any = None) -> None:
        super().__init__(*legacy, name=name, options=options, settings=settings)
        raw = self.options.rules
        self.rules: tuple[PointsRule, ...] = parse_rules(DEFAULT_RULES if raw is None else raw)

    def score(self, interactions: Sequence[ScoredInteraction], now: datetime) -> ScoreResult:
        """Sum the points of every matching rule over ``interactions`` at ``now``.

        :param interactions: the contact's interactions (any order; read oldest first).
        :param now: timezone-aware; ages for decay are measured from it.
        :returns: the rounded sum and one reason per earning, oldest interaction first.
        :raises ValueError: if ``now`` is naive.
        """
        if now.tzinfo is None or now.utcoffset() is None:
            raise ValueError("now: naive datetime refused; pass timezone-aware UTC")
        earned: set[int] = set()
        reasons: list[ScoreReason] = []
        total = 0.0
        for item in sorted(interactions, key=lambda i: (i.occurred_at, i.id)):
            for index, rule in enumerate(self.rules):
                if not rule.matches(item):
                    continue
                if rule.first_time_only:
                    if index in earned:
                        continue
                    earned.add(index)
                points = rule.points_at(item.occurred_at, now)
                total += points
                reasons.append(
                    ScoreReason(
                        rule=rule.name,
                        kind=item.kind,
                        points=round(points, 2),
                        interaction_id=item.id,
                        occurred_at=item.occurred_at,
                    )
                )
        return ScoreResult(score=round(total, 2) + 0.0, reasons=reasons)


@hookimpl
def carecrm_register_scoring_models(register: Callable[[type[ScoringModel]], None]) -> None:
    """Register the ``points`` model."""
    register(PointsModel)
