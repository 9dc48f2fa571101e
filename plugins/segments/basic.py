"""The built-in ``basic`` segment builder: a simple spec → a filter tree.

A spec is a JSON object, as the ``carecrm segment`` flags make it or a saved segment
stores it.  Every key is optional; the tree selects the contacts that satisfy all of them:

=====================  ==============================================  =============================
key                    value                                           tree
=====================  ==============================================  =============================
``stage``              stage name or list (the pipeline's stages)      ``Eq`` / ``In("stage", ...)``
``service_interest``   service-line code or list (``[practice]         ``Eq`` / ``In``
                       service_lines`` when the practice lists them)
``location``           a configured location's name                    ``Eq("location", ...)``
``city``               city or list, any casing (title-cased)          ``Eq`` / ``In("city", ...)``
``postal_prefix``      the start of the clear postal prefix (a US      ``Prefix("postal_prefix")``
                       ZIP keeps 3 digits in clear, HIPAA Safe
                       Harbor, 45 CFR 164.514(b)(2)(i)(B))
``score_min``          number, inclusive                               ``Range("score", min, max)``
``score_max``          number, inclusive
``had``                list of ``{"kind": K}`` or ``{"kinds": [..]}``  one ``HadInteraction`` each
                       with ``"within_days": N``
``owner``              the coordinator the contact is assigned to      ``Eq("owner", ...)``
=====================  ==============================================  =============================

"Within N days" counts calendar days in the practice's time zone: the zone of the
``location`` the spec filters on, else the default (first) location's.  The window starts at
local midnight N days before today and has no end (:func:`carecrm.core.analytics.criteria.local_days_start`),
so ``within_days = 0`` is "today", ``90`` is today and the 90 days before it.  A saved spec keeps
``within_days``, not a date: the window moves with the day it is used on.

Names are checked against what the practice configures, and an unknown one raises
:class:`~carecrm.core.errors.UnknownComponentError` listing the known ones (spec keys, stages,
service lines, locations, interaction kinds).  Other bad values raise
:class:`~carecrm.core.analytics.criteria.CriteriaError` naming the key.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, ClassVar

from carecrm.core.analytics.criteria import (
    And,
    Criteria,
    CriteriaError,
    Eq,
    HadInteraction,
    In,
    Prefix,
    Range,
    local_days_start,
)
from carecrm.core.analytics.segments_service import SegmentBuilder
from carecrm.core.errors import UnknownComponentError
from carecrm.core.identity.normalize import normalize_city
from carecrm.core.ingest import service_interest_code
from carecrm.core.model.vocab import is_known_kind, known_kinds
from carecrm.core.plugins.hookspecs import hookimpl
from carecrm.core.plugins.options import NoOptions

#: The keys of a spec, in the order :meth:`BasicSegmentBuilder.describe` lists them.
SPEC_KEYS: tuple[str, ...] = (
    "stage",
    "service_interest",
    "location",
    "city",
    "postal_prefix",
    "score_min",
    "score_max",
    "had",
    "owner",
)

#: The most days a ``within_days`` may count (100 years).
MAX_DAYS = 36_500


def _texts(key: str, value: Any) -> list[str]:
    """One text or a list of texts, each non-empty after stripping, duplicates dropped."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, (list, tuple)) or not items:
        raise CriteriaError(f"segment spec {key!r}: expected text or a non-empty list of texts")
    out: list[str] = []
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise CriteriaError(f"segment spec {key!r}: every value must be non-empty text")
        if item.strip() not in out:
            out.append(item.strip())
    return out


def _text(key: str, value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise CriteriaError(f"segment spec {key!r}: expected non-empty text")
    return value.strip()


def _number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        raise CriteriaError(f"segment spec {key!r}: expected a number")
    return float(value)


class BasicSegmentBuilder(SegmentBuilder):
    """Builds :mod:`carecrm.core.analytics.criteria` trees from simple specs (see the module docstring).

    Built as ``BasicSegmentBuilder(name="basic", options=NoOptions(), settings=settings)``
    (it takes no options).

    :param settings: the practice's settings: the pipeline's stages, the service lines,
        the locations and their time zones, the regime.
    """

    builder_id: ClassVar[str] = "basic"
    options_type = NoOptions
    #: The spec keys this builder reads.
    keys: ClassVar[tuple[str, ...]] = SPEC_KEYS

    # ------------------------------------------------------------------ validation

    def normalize(self, spec: Mapping[str, Any]) -> dict[str, Any]:
        """A checked, canonical copy of ``spec``: keys in :data:`SPEC_KEYS` order, texts
        stripped, lists for ``stage``/``service_interest``/``city``, service lines as their
        configured codes, numbers as floats, ``had`` as ``[{"kinds": [...], "within_days": N}]``.
        Keys whose value is None or an empty list are dropped.

        :raises UnknownComponentError: for an unknown key, stage, service line, location or
            interaction kind (listing the known ones).
        :raises CriteriaError: for a value of the wrong shape, naming the key.
        """
        if not isinstance(spec, Mapping):
            raise CriteriaError("segment spec: expected an object of filters")
        for key in spec:
            if key not in SPEC_KEYS:
                raise UnknownComponentError("segment field", str(key), SPEC_KEYS)
        given = {k: v for k, v in spec.items() if v is not None and v != [] and v != ()}
        out: dict[str, Any] = {}
        practice = self.settings.practice
        if "stage" in given:
            stages = self.settings.pipeline.all_stages
            out["stage"] = _texts("stage", given["stage"])
            for stage in out["stage"]:
                if stage not in stages:
                    raise UnknownComponentError("stage", stage, stages)
        if "service_interest" in given:
            codes: list[str] = []
            for raw in _texts("service_interest", given["service_interest"]):
                code = service_interest_code(raw, practice.service_lines)
                if code is None:
                    if practice.service_lines:
                        raise UnknownComponentError("service interest", raw, practice.service_lines)
                    raise CriteriaError("segment spec 'service_interest': expected a short code such as acne")
                if code not in codes:
                    codes.append(code)
            out["service_interest"] = codes
        if "location" in given:
            location = _text("location", given["location"])
            names = [loc.name for loc in practice.locations]
            if location not in names:
                raise UnknownComponentError("location", location, names)
            out["location"] = location
        if "city" in given:
            # stored cities are title-cased at ingest (normalize_city), so match any casing
            out["city"] = [normalize_city(c) or c for c in _texts("city", given["city"])]
        if "postal_prefix" in given:
            prefix = _text("postal_prefix", given["postal_prefix"]).upper()
            longest = 3 if practice.regime == "US" else 4
            if len(prefix) > longest:
                raise CriteriaError(
                    f"segment spec 'postal_prefix': at most {longest} characters (only a postal code's "
                    "first characters are kept in clear)"
                )
            out["postal_prefix"] = prefix
        for key in ("score_min", "score_max"):
            if key in given:
                out[key] = _number(key, given[key])
        if "score_min" in out and "score_max" in out and out["score_min"] > out["score_max"]:
            raise CriteriaError("segment spec 'score_min': above score_max")
        if "had" in given:
            out["had"] = [self._had(i, item) for i, item in enumerate(self._list("had", given["had"]))]
        if "owner" in given:
            out["owner"] = _text("owner", given["owner"])
        return out

    @staticmethod
    def _list(key: str, value: Any) -> list[Any]:
        items = [value] if isinstance(value, Mapping) else value
        if not isinstance(items, (list, tuple)):
            raise CriteriaError(f"segment spec {key!r}: expected a list")
        return list(items)

    def _had(self, index: int, item: Any) -> dict[str, Any]:
        where = f"segment spec 'had[{index}]'"
        if not isinstance(item, Mapping):
            raise CriteriaError(f"{where}: expected an object with kind (or kinds) and within_days")
        unknown = set(item) - {"kind", "kinds", "within_days"}
        if unknown:
            raise CriteriaError(f"{where}: unknown keys {sorted(unknown)}; known: kind, kinds, within_days")
        if ("kind" in item) == ("kinds" in item):
            raise CriteriaError(f"{where}: give kind or kinds (one of them)")
        kinds = _texts("had.kinds", item["kind"] if "kind" in item else item["kinds"])
        for kind in kinds:
            if not is_known_kind(kind):
                raise UnknownComponentError("interaction kind", kind, known_kinds())
        days = item.get("within_days")
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= MAX_DAYS:
            raise CriteriaError(f"{where}: within_days must be a whole number of days from 0 to {MAX_DAYS}")
        return {"kinds": kinds, "within_days": days}

    # ------------------------------------------------------------------ building

    def timezone(self, spec: Mapping[str, Any]) -> str:
        """The IANA zone "within N days" is counted in: the spec's location's, else the
        default location's.  :raises UnknownComponentError: for an unknown location."""
        location = spec.get("location")
        practice = self.settings.practice
        if location is None:
            return practice.default_location.timezone
        try:
            return practice.location(str(location)).timezone
        except KeyError:
            raise UnknownComponentError("location", str(location), [loc.name for loc in practice.locations]) from None

    def build(self, spec: Mapping[str, Any], *, now: datetime) -> Criteria:
        """The filter tree of ``spec`` (checked with :meth:`normalize`) as of ``now``.

        :param now: the current time, timezone-aware; "within N days" windows start at
            local midnight N days before ``now``'s local date.
        :returns: an :class:`~carecrm.core.analytics.criteria.And` of one node per key (empty: every
            active contact).
        :raises UnknownComponentError: see :meth:`normalize`.
        :raises CriteriaError: see :meth:`normalize`; also for a naive ``now``.
        """
        norm = self.normalize(spec)
        parts: list[Criteria] = []
        for key in ("stage", "service_interest"):
            if key in norm:
                parts.append(_one_or_many(key, norm[key]))
        if "location" in norm:
            parts.append(Eq("location", norm["location"]))
        if "city" in norm:
            parts.append(_one_or_many("city", norm["city"]))
        if "postal_prefix" in norm:
            parts.append(Prefix("postal_prefix", norm["postal_prefix"]))
        if "score_min" in norm or "score_max" in norm:
            parts.append(Range("score", norm.get("score_min"), norm.get("score_max")))
        if "owner" in norm:
            parts.append(Eq("owner", norm["owner"]))
        if norm.get("had"):
            zone = self.timezone(norm)
            for had in norm["had"]:
                parts.append(HadInteraction(tuple(had["kinds"]), since=local_days_start(now, zone, had["within_days"])))
        return And(tuple(parts))

    def describe(self, spec: Mapping[str, Any]) -> str:
        """One line for people: ``stage new_lead; city Chicago or Evanston; had email.opened
        within 90 days`` ("everyone" for an empty spec).  :raises: as :meth:`normalize`."""
        norm = self.normalize(spec)
        parts: list[str] = []
        for key in ("stage", "service_interest", "location", "city"):
            if key in norm:
                value = norm[key]
                parts.append(f"{key.replace('_', ' ')} {' or '.join(value) if isinstance(value, list) else value}")
        if "postal_prefix" in norm:
            parts.append(f"postal prefix {norm['postal_prefix']}…")
        if "score_min" in norm or "score_max" in norm:
            low, high = norm.get("score_min"), norm.get("score_max")
            parts.append(
                f"score {_num(low)}–{_num(high)}"
                if low is not None and high is not None
                else (f"score >= {_num(low)}" if low is not None else f"score <= {_num(high)}")
            )
        for had in norm.get("had", ()):
            parts.append(f"had {' or '.join(had['kinds'])} within {had['within_days']} days")
        if "owner" in norm:
            parts.append(f"owner {norm['owner']}")
        return "; ".join(parts) or "everyone"


def _num(value: float | None) -> str:
    return "" if value is None else (f"{value:g}")


def _one_or_many(field: str, values: list[str]) -> Criteria:
    return Eq(field, values[0]) if len(values) == 1 else In(field, tuple(values))


@hookimpl
def carecrm_register_segment_builders(register: Callable[[type[SegmentBuilder]], None]) -> None:
    """Register the ``basic`` segment builder."""
    register(BasicSegmentBuilder)
