"""Times people type (``--due``, ``--at``), read in a location's time zone and stored UTC."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from carecrm.core.model.when import parse_when

TZ = "America/Chicago"
#: Monday 6 October 2025, 10:00 CDT (UTC-5).
NOW = datetime(2025, 10, 6, 15, 0, tzinfo=UTC)


def when(text: str, now: datetime = NOW) -> datetime:
    return parse_when(text, timezone=TZ, now=now, field="--due")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-10-08 09:00", datetime(2025, 10, 8, 14, 0, tzinfo=UTC)),
        ("2025-10-08T09:00:30", datetime(2025, 10, 8, 14, 0, 30, tzinfo=UTC)),
        ("2025-10-08", datetime(2025, 10, 9, 4, 59, tzinfo=UTC)),  # the end of that local day
        ("2025-10-08T09:00-04:00", datetime(2025, 10, 8, 13, 0, tzinfo=UTC)),  # its own offset wins
        ("2025-10-08T14:00Z", datetime(2025, 10, 8, 14, 0, tzinfo=UTC)),
        ("2025-12-08 09:00", datetime(2025, 12, 8, 15, 0, tzinfo=UTC)),  # CST in December
        ("2025-03-09 02:30", datetime(2025, 3, 9, 8, 30, tzinfo=UTC)),  # does not exist: 03:30 CDT
    ],
)
def test_iso_dates_and_times_are_local(text: str, expected: datetime) -> None:
    assert when(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("+2h", datetime(2025, 10, 6, 17, 0, tzinfo=UTC)),
        ("+30m", datetime(2025, 10, 6, 15, 30, tzinfo=UTC)),
        ("-15m", datetime(2025, 10, 6, 14, 45, tzinfo=UTC)),
        ("+1d2h", datetime(2025, 10, 7, 17, 0, tzinfo=UTC)),
        ("+1w", datetime(2025, 10, 13, 15, 0, tzinfo=UTC)),
        ("  +1D ", datetime(2025, 10, 7, 15, 0, tzinfo=UTC)),
    ],
)
def test_relative_times(text: str, expected: datetime) -> None:
    assert when(text) == expected


def test_a_day_later_keeps_the_wall_clock_across_fall_back() -> None:
    saturday = datetime(2025, 11, 1, 15, 0, tzinfo=UTC)  # 10:00 CDT
    assert when("+1d", saturday) == datetime(2025, 11, 2, 16, 0, tzinfo=UTC)  # 10:00 CST
    assert when("+24h", saturday) == datetime(2025, 11, 2, 15, 0, tzinfo=UTC)  # 09:00 CST


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("tomorrow 09:00", datetime(2025, 10, 7, 14, 0, tzinfo=UTC)),
        ("Tomorrow", datetime(2025, 10, 8, 4, 59, tzinfo=UTC)),
        ("today 17:00", datetime(2025, 10, 6, 22, 0, tzinfo=UTC)),
        ("now", NOW),
        ("friday 10:00", datetime(2025, 10, 10, 15, 0, tzinfo=UTC)),
        ("mon 8:00", datetime(2025, 10, 13, 13, 0, tzinfo=UTC)),  # today is Monday: the next one
    ],
)
def test_words(text: str, expected: datetime) -> None:
    assert when(text) == expected


def test_today_is_the_local_date_not_the_utc_one() -> None:
    late_evening = datetime(2025, 10, 7, 3, 0, tzinfo=UTC)  # 22:00 CDT on Monday 6 October
    assert when("today 23:00", late_evening) == datetime(2025, 10, 7, 4, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    "text", ["", "soon", "tomorrow 25:00", "tomorrow at 9", "+2x", "+", "2025-13-01", "now 09:00", "next week"]
)
def test_anything_else_is_refused_naming_the_field(text: str) -> None:
    with pytest.raises(ValueError, match=r"^--due: not a time; use an ISO date .* read in America/Chicago"):
        when(text)


def test_bad_zone_or_naive_now() -> None:
    with pytest.raises(ValueError, match="--due: unknown IANA time zone 'Mars/Olympus'"):
        parse_when("+1h", timezone="Mars/Olympus", now=NOW, field="--due")
    with pytest.raises(ValueError, match="now: naive"):
        parse_when("+1h", timezone=TZ, now=datetime(2025, 10, 6, 10, 0))
