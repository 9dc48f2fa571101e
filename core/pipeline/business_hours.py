"""Business hours of a practice location: how much open time lies between two instants.

A location's config gives its IANA time zone, its opening hours per weekday in local
time (``{"mon": ("08:00", "17:00"), ...}``) and its holidays (ISO dates, closed all day);
see :class:`carecrm.core.model.domain.Location` and ``docs/configuration.md`` (``[[practice.locations]]``).
Speed to lead is counted in these hours: a lead that came in on Saturday and was called
on Monday at 08:30 waited 30 business minutes (1,800 seconds).

Rules:

* Hours are local wall-clock times ``HH:MM``; ``24:00`` closes at midnight.  A closing
  time earlier than the opening time runs past midnight (``("22:00", "06:00")``: an
  answering service) and belongs to the weekday it opens on; a holiday closes the day's
  opening, including the part after midnight.
* Every local time is turned into UTC through the IANA zone, so a day's open seconds
  follow daylight-saving changes: hours of ``00:00``–``24:00`` on the spring-forward
  Sunday hold 23 hours, on the fall-back Sunday 25.  A local time that does not exist
  (02:30 on spring-forward day in America/Chicago) is read with the offset in force
  before the change (Python's ``fold=0``), i.e. one hour later on the clock.
* Overlapping openings (an overnight opening running into the next day's) count once.
* A location with no business hours configured counts wall-clock time.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

from carecrm.core.errors import ConfigError
from carecrm.core.model.domain import Location, Practice

#: Weekday keys of ``business_hours``, Monday first (``datetime.weekday()`` order).
WEEKDAYS: tuple[str, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_MIDNIGHT = time(0, 0)


def _parse_clock(text: str, where: str) -> tuple[time, bool]:
    """``HH:MM`` → (time, is_24:00).  :raises ConfigError: naming ``where``."""
    parts = text.strip().split(":")
    if len(parts) == 2 and all(p.isdigit() and len(p) == 2 for p in parts):
        hour, minute = int(parts[0]), int(parts[1])
        if (hour, minute) == (24, 0):
            return _MIDNIGHT, True
        if hour < 24 and minute < 60:
            return time(hour, minute), False
    raise ConfigError(f"{where}: expected a local time HH:MM between 00:00 and 24:00")


class BusinessCalendar:
    """The open periods of one location, as UTC intervals, and sums over them.

    Open periods are built lazily for the local days a question touches and kept (with
    running totals), so each :meth:`seconds_between` after the first costs two binary
    searches: the pipeline report asks it once per lead.

    :param location: the practice location (time zone, business hours, holidays).
    :raises ConfigError: for an unknown weekday key, a time that is not ``HH:MM``, an
        opening that closes when it opens, or a holiday that is not an ISO date (the
        message names ``practice.locations[<name>].business_hours.<day>`` or ``.holidays``).
    """

    def __init__(self, location: Location) -> None:
        where = f"practice.locations[{location.name}]"
        self.location_name = location.name
        self.zone = ZoneInfo(location.timezone)
        self._hours: dict[int, tuple[time, time, int]] = {}
        for key, span in location.business_hours.items():
            day = str(key).lower()[:3]
            if day not in WEEKDAYS:
                raise ConfigError(f"{where}.business_hours: unknown weekday {key!r}; known: {', '.join(WEEKDAYS)}")
            field = f"{where}.business_hours.{day}"
            if not isinstance(span, Sequence) or isinstance(span, str) or len(span) != 2:
                raise ConfigError(f'{field}: expected ["HH:MM", "HH:MM"] (opening and closing time)')
            opens, opens_24 = _parse_clock(str(span[0]), field)
            closes, closes_24 = _parse_clock(str(span[1]), field)
            if opens_24:
                raise ConfigError(f"{field}: the opening time must be before 24:00")
            if closes_24:
                extra_days = 1  # closes at the next midnight
            elif closes == opens:
                raise ConfigError(f'{field}: closes when it opens; use ["00:00", "24:00"] for the whole day')
            else:
                extra_days = 1 if closes < opens else 0  # overnight: closes the next day
            self._hours[WEEKDAYS.index(day)] = (opens, closes, extra_days)
        self._holidays: set[date] = set()
        for text in location.holidays:
            try:
                self._holidays.add(date.fromisoformat(str(text)))
            except ValueError:
                raise ConfigError(f"{where}.holidays: expected ISO dates (YYYY-MM-DD)") from None
        self._first: date | None = None
        self._last: date | None = None
        self._starts: list[float] = []
        self._ends: list[float] = []
        self._before: list[float] = []  # open seconds of every interval before index i

    @property
    def has_hours(self) -> bool:
        """True when at least one weekday has opening hours (else time counts wall-clock)."""
        return bool(self._hours)

    def open_periods(self, day: date) -> list[tuple[datetime, datetime]]:
        """The opening that starts on local date ``day`` as a UTC ``(start, end)`` pair
        (a list of zero or one: closed days and holidays have none)."""
        span = self._hours.get(day.weekday())
        if span is None or day in self._holidays:
            return []
        opens, closes, extra_days = span
        start = datetime.combine(day, opens, tzinfo=self.zone).astimezone(UTC)
        end = datetime.combine(day + timedelta(days=extra_days), closes, tzinfo=self.zone).astimezone(UTC)
        return [(start, end)] if end > start else []

    def _cover(self, first: date, last: date) -> None:
        """Build the merged open intervals of local days ``first``..``last`` (widening the
        days already built, so that the running totals stay consistent)."""
        if self._first is not None and self._last is not None:
            if self._first <= first and last <= self._last:
                return
            first, last = min(first, self._first), max(last, self._last)
        merged: list[list[float]] = []
        day = first
        while day <= last:
            for start, end in self.open_periods(day):
                s, e = start.timestamp(), end.timestamp()
                if merged and s <= merged[-1][1]:
                    merged[-1][1] = max(merged[-1][1], e)
                else:
                    merged.append([s, e])
            day += timedelta(days=1)
        self._starts = [m[0] for m in merged]
        self._ends = [m[1] for m in merged]
        total = 0.0
        self._before = []
        for s, e in merged:
            self._before.append(total)
            total += e - s
        self._first, self._last = first, last

    def _open_until(self, t: float) -> float:
        """Open seconds of the built intervals that lie before the POSIX time ``t``."""
        i = bisect.bisect_right(self._starts, t) - 1
        if i < 0:
            return 0.0
        return self._before[i] + min(t, self._ends[i]) - self._starts[i]

    def seconds_between(self, start: datetime, end: datetime) -> float:
        """Open seconds between ``start`` and ``end`` (both timezone-aware; any zone).

        :returns: seconds (a float; 0.0 when both lie in the same closed stretch).
        :raises ValueError: if either is naive, or ``end`` is before ``start``.
        """
        for name, value in (("start", start), ("end", end)):
            if value.tzinfo is None or value.utcoffset() is None:
                raise ValueError(f"{name}: naive datetime; business hours need timezone-aware times")
        if end < start:
            raise ValueError("end: before start")
        if not self._hours:
            return (end - start).total_seconds()
        # the day before: an overnight opening that started then may still run
        self._cover(
            start.astimezone(self.zone).date() - timedelta(days=1),
            end.astimezone(self.zone).date() + timedelta(days=1),
        )
        return max(0.0, self._open_until(end.timestamp()) - self._open_until(start.timestamp()))

    def is_open(self, at: datetime) -> bool:
        """True when ``at`` (timezone-aware) falls within business hours (always True for a
        location with none configured).  :raises ValueError: if ``at`` is naive."""
        if at.tzinfo is None or at.utcoffset() is None:
            raise ValueError("at: naive datetime; business hours need timezone-aware times")
        if not self._hours:
            return True
        local = at.astimezone(self.zone).date()
        self._cover(local - timedelta(days=1), local + timedelta(days=1))
        t = at.timestamp()
        i = bisect.bisect_right(self._starts, t) - 1
        return i >= 0 and t < self._ends[i]


def _calendar_key(location: Location) -> tuple[object, ...]:
    hours: Mapping[str, tuple[str, str]] = location.business_hours
    return (
        location.name,
        location.timezone,
        tuple(sorted((str(k), tuple(str(x) for x in v)) for k, v in hours.items())),
        tuple(location.holidays),
    )


_CALENDARS: dict[tuple[object, ...], BusinessCalendar] = {}


def calendar_for(location: Location) -> BusinessCalendar:
    """The (cached) :class:`BusinessCalendar` of ``location``.

    :raises ConfigError: see :class:`BusinessCalendar`.
    """
    key = _calendar_key(location)
    cal = _CALENDARS.get(key)
    if cal is None:
        if len(_CALENDARS) > 256:
            _CALENDARS.clear()
        cal = _CALENDARS[key] = BusinessCalendar(location)
    return cal


def business_seconds_between(start_utc: datetime, end_utc: datetime, location: Location) -> float:
    """Seconds of ``location``'s business hours between two instants.

    :param start_utc: the earlier instant, timezone-aware (UTC by convention; any zone works).
    :param end_utc: the later instant, timezone-aware.
    :param location: the practice location whose time zone, weekday hours and holidays count.
    :returns: open seconds between them; wall-clock seconds when the location has no
        business hours configured.
    :raises ValueError: for a naive datetime, or ``end_utc`` before ``start_utc``.
    :raises ConfigError: for malformed business hours or holidays (see :class:`BusinessCalendar`).
    """
    return calendar_for(location).seconds_between(start_utc, end_utc)


def location_named(practice: Practice, name: str | None) -> Location:
    """The location of ``practice`` called ``name``: the default (first) location when
    ``name`` is None or no longer configured (a record keeps the name it was stored with,
    and a practice may rename or drop a location later).

    :param practice: the practice's settings (``[practice]``, ``[[practice.locations]]``).
    :param name: the location name a record holds, or None.
    :returns: the location whose time zone and business hours apply.
    """
    try:
        return practice.location(name)
    except KeyError:
        return practice.default_location
