"""Reading a time a person typed (``--due``, ``--at``) into UTC.

People type local times; carecrm stores UTC (``docs/vocabulary.md``, "Time": local time only
at the edges, in the time zone of the location the record belongs to).  :func:`parse_when`
accepts:

* an ISO 8601 date or date and time: ``2025-10-06``, ``2025-10-06 09:00``,
  ``2025-10-06T09:00:00``; read in the given time zone unless it carries an offset
  (``2025-10-06T14:00Z``, ``2025-10-06T09:00-05:00``);
* a time relative to now: ``+30m``, ``+2h``, ``+1d``, ``+1w``, combined (``+1d2h``) or in the
  past (``-15m``); days and weeks move the local calendar date keeping the wall-clock
  time (so ``+1d`` across a daylight-saving change is still "tomorrow, same time"),
  hours and minutes are elapsed time;
* ``now``, ``today``, ``tomorrow`` or a weekday name (``monday`` or ``mon``: the next such
  day after today), each optionally followed by ``HH:MM`` (``tomorrow 09:00``).

A date without a time of day means the end of that local day (23:59), so a task due
"2025-10-06" is not overdue until that day is over.
"""

from __future__ import annotations

import re
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from carecrm.core.model.timeutil import to_utc_ms

#: The local time a date without a time of day stands for (the end of that day).
END_OF_DAY = time(23, 59)

_WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_RELATIVE = re.compile(r"^([+-])((?:\d{1,5}[mhdw])+)$")
_PART = re.compile(r"(\d{1,5})([mhdw])")
_CLOCK = re.compile(r"^([01]?\d|2[0-3]):([0-5]\d)$")


def _help(field: str, timezone: str) -> str:
    return (
        f"{field}: not a time; use an ISO date or date and time (2025-10-06, 2025-10-06 09:00; read in "
        f"{timezone}), a relative time (+30m, +2h, +1d, +1w), or today/tomorrow/a weekday with an optional HH:MM"
    )


def _local(day: date, clock: time, zone: ZoneInfo) -> datetime:
    return datetime.combine(day, clock, tzinfo=zone)


def parse_when(text: str, *, timezone: str, now: datetime, field: str = "time") -> datetime:
    """Read ``text`` (see the module's doc for the forms) as an instant.

    :param text: what the person typed.
    :param timezone: the IANA zone local times are read in (the location's).
    :param now: the current time, timezone-aware (relative forms count from it).
    :param field: the option's name for error messages (``--due``).
    :returns: a timezone-aware UTC datetime truncated to milliseconds.
    :raises ValueError: naming ``field`` when ``text`` is none of the forms, when ``now``
        is naive, or when ``timezone`` is not an IANA zone.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now: naive datetime; carecrm needs timezone-aware datetimes")
    try:
        zone = ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{field}: unknown IANA time zone {timezone!r}") from None
    raw = " ".join(str(text).strip().split())
    lowered = raw.lower()
    if not raw:
        raise ValueError(_help(field, timezone))

    rel = _RELATIVE.match(lowered)
    if rel:
        sign = 1 if rel.group(1) == "+" else -1
        days = minutes = 0
        for amount, unit in _PART.findall(rel.group(2)):
            n = int(amount)
            if unit == "w":
                days += 7 * n
            elif unit == "d":
                days += n
            elif unit == "h":
                minutes += 60 * n
            else:
                minutes += n
        local = now.astimezone(zone)
        wall = local.replace(tzinfo=None) + timedelta(days=sign * days)
        # hours and minutes are elapsed time: add them in UTC (aware + timedelta is wall-clock maths)
        moved = wall.replace(tzinfo=zone).astimezone(UTC) + timedelta(minutes=sign * minutes)
        return to_utc_ms(moved)

    words = lowered.split(" ")
    if words[0] in ("now", "today", "tomorrow") or _weekday(words[0]) is not None:
        if len(words) > 2 or (words[0] == "now" and len(words) > 1):
            raise ValueError(_help(field, timezone))
        if words[0] == "now":
            return to_utc_ms(now)
        clock = END_OF_DAY
        if len(words) == 2:
            m = _CLOCK.match(words[1])
            if not m:
                raise ValueError(_help(field, timezone))
            clock = time(int(m.group(1)), int(m.group(2)))
        today = now.astimezone(zone).date()
        if words[0] == "today":
            day = today
        elif words[0] == "tomorrow":
            day = today + timedelta(days=1)
        else:
            wanted = _weekday(words[0])
            assert wanted is not None
            ahead = (wanted - today.weekday()) % 7 or 7
            day = today + timedelta(days=ahead)
        return to_utc_ms(_local(day, clock, zone))

    try:
        if len(raw) == 10:
            return to_utc_ms(_local(date.fromisoformat(raw), END_OF_DAY, zone))
        parsed = datetime.fromisoformat(raw)
    except ValueError:
        raise ValueError(_help(field, timezone)) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    return to_utc_ms(parsed)


def _weekday(word: str) -> int | None:
    """0 (Monday) .. 6 for a weekday name or its first three letters, else None."""
    for i, name in enumerate(_WEEKDAYS):
        if word == name or (len(word) == 3 and name.startswith(word)):
            return i
    return None
