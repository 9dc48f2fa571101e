"""Segment filter trees: which contacts a segment selects, independent of any backend.

A tree is made of frozen nodes.  Leaves test one of the contacts' *clear* columns
(:data:`FIELDS`; personal data is ciphertext and can never be filtered on) or whether the
contact had an interaction:

* :class:`Eq` ``(field, value)`` — equal (``value=None`` means "not known", SQL ``IS NULL``);
* :class:`In` ``(field, values)`` — equal to one of the values (no values matches nothing);
* :class:`Range` ``(field, min, max)`` — numeric field between the bounds, both inclusive,
  either may be None (a contact whose value is not known is never in a range);
* :class:`Prefix` ``(field, prefix)`` — text field starting with ``prefix``, case-sensitive;
* :class:`HadInteraction` ``(kinds, since, until=None)`` — at least one interaction of one of
  ``kinds`` with ``since <= occurred_at < until`` (UTC; no ``until`` means no upper bound).

and :class:`And` / :class:`Or` / :class:`Not` combine them (``a & b``, ``a | b``, ``~a``
work too).  ``And()`` matches every contact, ``Or()`` none.  Logic is two-valued: ``Not(x)``
matches exactly the active contacts ``x`` does not match, so ``~Eq("city", "Chicago")``
includes contacts whose city is not known (a backend writes ``city IS NULL OR city <> ...``).

Only *active* contacts are ever selected (merged and erased ones never are); a backend
compiles the whole tree into one query of its own language (SQL: one statement with
``EXISTS`` sub-queries; see ``ContactRepository.select`` in :mod:`carecrm.core.storage.contract`),
never filtering rows one by one in Python.

A tree round-trips through JSON with :func:`unstructure` / :func:`structure` (what a saved
segment may store in ``SegmentRecord.definition``)::

    {"all": [{"field": "stage", "op": "in", "value": ["new_lead", "contacted"]},
             {"field": "score", "op": "range", "min": 10, "max": null},
             {"had": {"kinds": ["email.opened"], "since": "2024-03-01T06:00:00.000Z", "until": null}},
             {"not": {"field": "owner", "op": "eq", "value": null}}]}

``{"any": [...]}`` is :class:`Or`; ``op`` is ``eq``, ``in``, ``range`` or ``prefix``.

Errors: an unknown field raises :class:`~carecrm.core.errors.UnknownComponentError`
listing :data:`FIELDS`; a value of the wrong type, an empty kind list, a naive datetime
or a malformed JSON node raises :class:`CriteriaError` (a ``ValueError``) naming the
field or the JSON path, never echoing a value.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime, time, timedelta
from typing import Any, TypeAlias
from zoneinfo import ZoneInfo

import attrs

from carecrm.core.errors import CareCRMError, UnknownComponentError
from carecrm.core.model.timeutil import isoformat_z, to_utc_ms

#: The contacts' clear columns a segment may test, and the Python type of their values.
FIELDS: dict[str, type] = {
    "stage": str,
    "service_interest": str,
    "location": str,
    "city": str,
    "postal_prefix": str,
    "score": float,
    "owner": str,
    "pipeline": str,
}

#: Fields holding numbers (the only ones :class:`Range` accepts).
NUMERIC_FIELDS: frozenset[str] = frozenset(name for name, kind in FIELDS.items() if kind is float)


class CriteriaError(CareCRMError, ValueError):
    """A filter tree (or its JSON) is malformed; the message names the field or JSON path."""


def _check_field(name: str) -> str:
    if name not in FIELDS:
        raise UnknownComponentError("segment field", str(name), FIELDS)
    return name


def _check_value(field: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None:
        if allow_none:
            return
        raise CriteriaError(f"segment field {field!r}: a value is needed")
    if FIELDS[field] is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise CriteriaError(f"segment field {field!r}: expected a number")
    elif not isinstance(value, str):
        raise CriteriaError(f"segment field {field!r}: expected text")


def _field_validator(instance: Any, attribute: attrs.Attribute[str], value: str) -> None:
    _check_field(value)


class Node:
    """Base class of every filter-tree node: ``a & b``, ``a | b`` and ``~a`` combine nodes."""

    __slots__ = ()

    def __and__(self, other: Criteria) -> And:
        return And((self, other))  # type: ignore[arg-type]

    def __or__(self, other: Criteria) -> Or:
        return Or((self, other))  # type: ignore[arg-type]

    def __invert__(self) -> Not:
        return Not(self)  # type: ignore[arg-type]


@attrs.frozen
class Eq(Node):
    """``field`` equals ``value``; ``value=None`` matches contacts where the field is not known.

    :raises UnknownComponentError: for a field not in :data:`FIELDS`.
    :raises CriteriaError: for a value of the wrong type (text, or a number for ``score``).
    """

    field: str = attrs.field(validator=_field_validator)
    value: str | float | None

    def __attrs_post_init__(self) -> None:
        _check_value(self.field, self.value, allow_none=True)


def _tuple(values: Iterable[Any]) -> tuple[Any, ...]:
    if isinstance(values, (str, bytes)):
        return (values,)
    return tuple(values)


@attrs.frozen
class In(Node):
    """``field`` equals one of ``values`` (a tuple; empty matches nothing).

    :raises UnknownComponentError: for a field not in :data:`FIELDS`.
    :raises CriteriaError: when a value is None or of the wrong type.
    """

    field: str = attrs.field(validator=_field_validator)
    values: tuple[str | float, ...] = attrs.field(converter=_tuple)

    def __attrs_post_init__(self) -> None:
        for value in self.values:
            _check_value(self.field, value)


@attrs.frozen
class Range(Node):
    """Numeric ``field`` with ``min <= value <= max`` (both inclusive; None = unbounded).

    :raises UnknownComponentError: for a field not in :data:`FIELDS`.
    :raises CriteriaError: if the field is not numeric, no bound is given, a bound is not
        a number, or ``min > max``.
    """

    field: str = attrs.field(validator=_field_validator)
    min: float | None = None
    max: float | None = None

    def __attrs_post_init__(self) -> None:
        if self.field not in NUMERIC_FIELDS:
            raise CriteriaError(
                f"segment field {self.field!r}: a range needs a numeric field ({', '.join(sorted(NUMERIC_FIELDS))})"
            )
        if self.min is None and self.max is None:
            raise CriteriaError(f"segment field {self.field!r}: a range needs a minimum, a maximum or both")
        for bound in (self.min, self.max):
            _check_value(self.field, bound, allow_none=True)
        if self.min is not None and self.max is not None and self.min > self.max:
            raise CriteriaError(f"segment field {self.field!r}: the range's minimum is above its maximum")


@attrs.frozen
class Prefix(Node):
    """Text ``field`` starts with ``prefix`` (non-empty, case-sensitive; ``%`` and ``_`` are
    ordinary characters).

    :raises UnknownComponentError: for a field not in :data:`FIELDS`.
    :raises CriteriaError: if the field is numeric or the prefix is empty or not text.
    """

    field: str = attrs.field(validator=_field_validator)
    prefix: str

    def __attrs_post_init__(self) -> None:
        if self.field in NUMERIC_FIELDS:
            raise CriteriaError(f"segment field {self.field!r}: a prefix needs a text field")
        _check_value(self.field, self.prefix)
        if not self.prefix:
            raise CriteriaError(f"segment field {self.field!r}: the prefix is empty")


def _utc(value: datetime | None) -> datetime | None:
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise CriteriaError("had interaction: since and until must be datetimes")
    try:
        return to_utc_ms(value)
    except ValueError:
        raise CriteriaError("had interaction: since and until must be timezone-aware (UTC)") from None


def _utc_required(value: datetime) -> datetime:
    out = _utc(value)
    if out is None:
        raise CriteriaError("had interaction: since is required")
    return out


@attrs.frozen
class HadInteraction(Node):
    """The contact had an interaction of one of ``kinds`` with ``since <= occurred_at``
    and, when ``until`` is given, ``occurred_at < until``.

    :param kinds: interaction kinds (dotted ``noun.event`` names; at least one).
    :param since: timezone-aware, stored as UTC truncated to milliseconds.
    :param until: the same, or None for no upper bound.
    :raises CriteriaError: for no kinds, a kind that is not text, a naive datetime, or
        ``until <= since``.
    """

    kinds: tuple[str, ...] = attrs.field(converter=_tuple)
    since: datetime = attrs.field(converter=_utc_required)
    until: datetime | None = attrs.field(default=None, converter=_utc)

    def __attrs_post_init__(self) -> None:
        if not self.kinds:
            raise CriteriaError("had interaction: at least one interaction kind is needed")
        if not all(isinstance(k, str) and k for k in self.kinds):
            raise CriteriaError("had interaction: kinds must be non-empty text")
        if self.until is not None and self.until <= self.since:
            raise CriteriaError("had interaction: until must be later than since")


def _children(values: Iterable[Criteria]) -> tuple[Criteria, ...]:
    out = tuple(values)
    for child in out:
        if not isinstance(child, Node):
            raise CriteriaError(f"a combined criterion must hold criteria, not {type(child).__name__}")
    return out


@attrs.frozen
class And(Node):
    """Every child matches (no children: every active contact)."""

    children: tuple[Criteria, ...] = attrs.field(default=(), converter=_children)


@attrs.frozen
class Or(Node):
    """At least one child matches (no children: no contact)."""

    children: tuple[Criteria, ...] = attrs.field(default=(), converter=_children)


@attrs.frozen
class Not(Node):
    """The child does not match (two-valued: a field that is not known does not match
    ``Eq``, so ``Not(Eq(...))`` matches it)."""

    child: Criteria

    def __attrs_post_init__(self) -> None:
        _children((self.child,))


#: Any filter-tree node.
Criteria: TypeAlias = Eq | In | Range | Prefix | HadInteraction | And | Or | Not


def all_of(*children: Criteria) -> And:
    """``And(children)``: every child matches."""
    return And(children)


def any_of(*children: Criteria) -> Or:
    """``Or(children)``: at least one child matches."""
    return Or(children)


def walk(criteria: Criteria) -> Iterable[Criteria]:
    """Every node of the tree, depth first, the root first."""
    yield criteria
    if isinstance(criteria, (And, Or)):
        for child in criteria.children:
            yield from walk(child)
    elif isinstance(criteria, Not):
        yield from walk(criteria.child)


def local_days_start(now: datetime, timezone: str, days: int) -> datetime:
    """The start of a window of ``days`` whole local days before today, in UTC: local
    midnight of (today - ``days``) in ``timezone``, where today is ``now``'s local date.

    "Had an interaction within N days" counts calendar days in the practice location's
    time zone (local time only at the edges, ``docs/vocabulary.md``), so the window
    starts at a local midnight whatever the UTC offset, across daylight-saving changes
    too; ``days=0`` is today only.  Where a midnight does not exist (a zone that springs
    forward at 00:00) the window starts at that day's first instant.

    :param now: the current time, timezone-aware.
    :param timezone: an IANA zone name (``America/Chicago``).
    :param days: 0 or more.
    :returns: timezone-aware UTC, truncated to milliseconds.
    :raises CriteriaError: if ``now`` is naive or ``days`` is negative.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise CriteriaError("now: a timezone-aware datetime is needed")
    if days < 0:
        raise CriteriaError("within_days: must be 0 or more")
    zone = ZoneInfo(timezone)
    day = now.astimezone(zone).date() - timedelta(days=days)
    # fold=0 is the first of two midnights (fall back at 00:00); a midnight in a gap
    # (spring forward at 00:00) maps to the instant the gap ends, the day's first
    start = datetime.combine(day, time(0), tzinfo=zone)
    return to_utc_ms(start)


# --------------------------------------------------------------------------- JSON


def unstructure(criteria: Criteria) -> dict[str, Any]:
    """The tree as a JSON-ready dict (see the module docstring for the shape); datetimes
    become ISO 8601 UTC strings with milliseconds and a ``Z``.

    :raises CriteriaError: if ``criteria`` is not a filter-tree node.
    """
    if isinstance(criteria, Eq):
        return {"field": criteria.field, "op": "eq", "value": criteria.value}
    if isinstance(criteria, In):
        return {"field": criteria.field, "op": "in", "value": list(criteria.values)}
    if isinstance(criteria, Range):
        return {"field": criteria.field, "op": "range", "min": criteria.min, "max": criteria.max}
    if isinstance(criteria, Prefix):
        return {"field": criteria.field, "op": "prefix", "value": criteria.prefix}
    if isinstance(criteria, HadInteraction):
        return {
            "had": {
                "kinds": list(criteria.kinds),
                "since": isoformat_z(criteria.since),
                "until": isoformat_z(criteria.until) if criteria.until is not None else None,
            }
        }
    if isinstance(criteria, And):
        return {"all": [unstructure(c) for c in criteria.children]}
    if isinstance(criteria, Or):
        return {"any": [unstructure(c) for c in criteria.children]}
    if isinstance(criteria, Not):
        return {"not": unstructure(criteria.child)}
    raise CriteriaError(f"not a segment criterion: {type(criteria).__name__}")


_OPS = ("eq", "in", "range", "prefix")


def _datetime(value: Any, path: str) -> datetime:
    if not isinstance(value, str):
        raise CriteriaError(f"{path}: expected an ISO 8601 UTC time")
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise CriteriaError(f"{path}: not an ISO 8601 time") from None
    if parsed.tzinfo is None:
        raise CriteriaError(f"{path}: the time has no time zone")
    return parsed


def _list(value: Any, path: str) -> Sequence[Any]:
    if not isinstance(value, list):
        raise CriteriaError(f"{path}: expected a list")
    return value


def structure(doc: Any, path: str = "$") -> Criteria:
    """The filter tree of a JSON document made by :func:`unstructure`.

    :param path: where ``doc`` sits, for error messages (``$`` is the root).
    :raises CriteriaError: for a malformed node, naming its JSON path (``$.all[1].op``).
    :raises UnknownComponentError: for an unknown field, listing :data:`FIELDS`.
    """
    if not isinstance(doc, Mapping):
        raise CriteriaError(f"{path}: expected an object")
    keys = set(doc)
    if keys == {"all"}:
        return And(structure(c, f"{path}.all[{i}]") for i, c in enumerate(_list(doc["all"], f"{path}.all")))
    if keys == {"any"}:
        return Or(structure(c, f"{path}.any[{i}]") for i, c in enumerate(_list(doc["any"], f"{path}.any")))
    if keys == {"not"}:
        return Not(structure(doc["not"], f"{path}.not"))
    if keys == {"had"}:
        had = doc["had"]
        if not isinstance(had, Mapping) or "kinds" not in had or "since" not in had:
            raise CriteriaError(f"{path}.had: expected an object with kinds and since")
        unknown = set(had) - {"kinds", "since", "until"}
        if unknown:
            raise CriteriaError(f"{path}.had: unknown keys {sorted(unknown)}; known: kinds, since, until")
        until = had.get("until")
        return HadInteraction(
            kinds=tuple(_list(had["kinds"], f"{path}.had.kinds")),
            since=_datetime(had["since"], f"{path}.had.since"),
            until=_datetime(until, f"{path}.had.until") if until is not None else None,
        )
    if "field" in keys and "op" in keys:
        op = doc["op"]
        if op not in _OPS:
            raise UnknownComponentError(f"segment operator at {path}.op", str(op), _OPS)
        allowed = {"field", "op", "min", "max"} if op == "range" else {"field", "op", "value"}
        if keys - allowed or (op != "range" and "value" not in keys):
            raise CriteriaError(f"{path}: an {op!r} node has the keys {', '.join(sorted(allowed))}")
        field = str(doc["field"])
        if op == "eq":
            return Eq(field, doc["value"])
        if op == "in":
            return In(field, tuple(_list(doc["value"], f"{path}.value")))
        if op == "range":
            return Range(field, doc.get("min"), doc.get("max"))
        return Prefix(field, doc["value"])
    raise CriteriaError(f"{path}: not a segment criterion (expected all, any, not, had, or field and op)")
