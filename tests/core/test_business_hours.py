"""Business seconds between two instants in a location's hours: weekends, holidays,
overnight gaps, overnight openings and daylight-saving changes in America/Chicago
(2025: clocks spring forward on Sunday 9 March at 02:00 and fall back on Sunday
2 November at 02:00)."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from carecrm.core.errors import ConfigError
from carecrm.core.model.domain import Location
from carecrm.core.pipeline.business_hours import BusinessCalendar, business_seconds_between, calendar_for

CHICAGO = ZoneInfo("America/Chicago")
WEEKDAYS_8_TO_5 = {d: ("08:00", "17:00") for d in ("mon", "tue", "wed", "thu", "fri")}
HOUR = 3600.0


def chicago(*args: int) -> datetime:
    """A Chicago wall-clock time as UTC."""
    return datetime(*args, tzinfo=CHICAGO).astimezone(UTC)


def office(**overrides: object) -> Location:
    values: dict[str, object] = {
        "name": "downtown",
        "timezone": "America/Chicago",
        "business_hours": WEEKDAYS_8_TO_5,
    }
    values.update(overrides)
    return Location(**values)  # type: ignore[arg-type]


def secs(start: datetime, end: datetime, location: Location | None = None) -> float:
    return business_seconds_between(start, end, location or office())


# --------------------------------------------------------------------------- ordinary days


def test_within_one_opening_is_the_plain_difference() -> None:
    assert secs(chicago(2025, 10, 6, 9, 0), chicago(2025, 10, 6, 10, 30)) == 1.5 * HOUR


def test_saturday_lead_called_monday_0830_waited_thirty_minutes() -> None:
    saturday = chicago(2025, 10, 4, 10, 0)
    monday = chicago(2025, 10, 6, 8, 30)
    assert secs(saturday, monday) == 1800.0
    assert (monday - saturday).total_seconds() == 46.5 * HOUR  # the wall clock says otherwise


def test_overnight_gap_counts_evening_and_morning_only() -> None:
    # in at 16:30 on Tuesday, called back at 08:15 on Wednesday: 30 + 15 minutes
    assert secs(chicago(2025, 10, 7, 16, 30), chicago(2025, 10, 8, 8, 15)) == 45 * 60.0


def test_before_opening_to_after_closing_is_the_whole_day() -> None:
    assert secs(chicago(2025, 10, 6, 6, 0), chicago(2025, 10, 6, 20, 0)) == 9 * HOUR


def test_both_ends_in_one_closed_stretch_is_zero() -> None:
    assert secs(chicago(2025, 10, 10, 18, 0), chicago(2025, 10, 11, 12, 0)) == 0.0
    same = chicago(2025, 10, 6, 9, 0)
    assert secs(same, same) == 0.0


def test_a_whole_week() -> None:
    assert secs(chicago(2025, 10, 6, 0, 0), chicago(2025, 10, 13, 0, 0)) == 45 * HOUR


def test_any_time_zone_of_the_arguments_is_the_same_instant() -> None:
    start = chicago(2025, 10, 6, 9, 0)
    end = chicago(2025, 10, 6, 11, 0)
    tokyo = ZoneInfo("Asia/Tokyo")
    assert secs(start.astimezone(tokyo), end.astimezone(tokyo)) == 2 * HOUR


# --------------------------------------------------------------------------- holidays


def test_a_holiday_is_closed_all_day() -> None:
    wednesday, friday = chicago(2025, 11, 26, 16, 0), chicago(2025, 11, 28, 9, 0)
    assert secs(wednesday, friday) == 11 * HOUR  # 1 h + Thursday's 9 h + 1 h
    thanksgiving = office(holidays=("2025-11-27",))
    assert secs(wednesday, friday, thanksgiving) == 2 * HOUR


# --------------------------------------------------------------------------- daylight saving time


def test_weekend_of_spring_forward_with_weekday_hours() -> None:
    friday = chicago(2025, 3, 7, 16, 0)  # CST, UTC-6
    monday = chicago(2025, 3, 10, 9, 0)  # CDT, UTC-5
    assert secs(friday, monday) == 2 * HOUR
    assert (monday - friday).total_seconds() == 64 * HOUR  # 65 on the clock face, one hour skipped


def test_weekend_of_fall_back_with_weekday_hours() -> None:
    friday = chicago(2025, 10, 31, 16, 0)  # CDT
    monday = chicago(2025, 11, 3, 9, 0)  # CST
    assert secs(friday, monday) == 2 * HOUR
    assert (monday - friday).total_seconds() == 66 * HOUR


def test_a_whole_day_of_hours_is_23_hours_in_spring_and_25_in_autumn() -> None:
    always = office(business_hours={"sun": ("00:00", "24:00")})
    assert secs(chicago(2025, 3, 9, 0, 0), chicago(2025, 3, 10, 0, 0), always) == 23 * HOUR
    assert secs(chicago(2025, 11, 2, 0, 0), chicago(2025, 11, 3, 0, 0), always) == 25 * HOUR
    assert secs(chicago(2025, 3, 16, 0, 0), chicago(2025, 3, 17, 0, 0), always) == 24 * HOUR


def test_hours_that_span_the_change_itself() -> None:
    # 01:00-04:00 on spring-forward Sunday: 02:00-03:00 does not exist
    spring = office(business_hours={"sun": ("01:00", "04:00")})
    assert secs(chicago(2025, 3, 8, 12, 0), chicago(2025, 3, 10, 12, 0), spring) == 2 * HOUR
    # 01:00-03:00 on fall-back Sunday: 01:00-02:00 happens twice
    autumn = office(business_hours={"sun": ("01:00", "03:00")})
    assert secs(chicago(2025, 11, 1, 12, 0), chicago(2025, 11, 3, 12, 0), autumn) == 3 * HOUR


def test_an_opening_at_a_time_that_does_not_exist_starts_an_hour_later() -> None:
    # 02:30 does not exist on 9 March 2025: read with the offset before the change (03:30 CDT)
    late = office(business_hours={"sun": ("02:30", "05:00")})
    assert secs(chicago(2025, 3, 9, 0, 0), chicago(2025, 3, 9, 12, 0), late) == 1.5 * HOUR


def test_against_a_minute_by_minute_count_across_spring_forward() -> None:
    """Whole-minute intervals over 1-20 March 2025 agree with counting each real minute
    whose Chicago wall-clock time lies in the hours (independent of the interval maths)."""
    location = office(holidays=("2025-03-12",))
    hours = {i: WEEKDAYS_8_TO_5.get(d) for i, d in enumerate(("mon", "tue", "wed", "thu", "fri", "sat", "sun"))}
    base = datetime(2025, 3, 1, 6, 0, tzinfo=UTC)
    rng = random.Random(20250309)
    for _ in range(40):
        start = base + timedelta(minutes=rng.randrange(0, 19 * 24 * 60))
        end = start + timedelta(minutes=rng.randrange(0, 3 * 24 * 60))
        brute = 0
        t = start
        while t < end:
            local = t.astimezone(CHICAGO)
            span = hours[local.weekday()]
            if span and local.date() != date(2025, 3, 12) and span[0] <= local.strftime("%H:%M") < span[1]:
                brute += 60
            t += timedelta(minutes=1)
        assert secs(start, end, location) == brute, (start, end)


# --------------------------------------------------------------------------- overnight openings


def test_an_overnight_opening_belongs_to_the_day_it_opens() -> None:
    service = office(business_hours={"mon": ("22:00", "06:00")})
    assert secs(chicago(2025, 10, 6, 21, 0), chicago(2025, 10, 7, 7, 0), service) == 8 * HOUR
    # Sunday night is closed: no opening starts on Sunday
    assert secs(chicago(2025, 10, 5, 21, 0), chicago(2025, 10, 6, 7, 0), service) == 0.0
    cal = BusinessCalendar(service)
    assert cal.is_open(chicago(2025, 10, 7, 5, 59)) and not cal.is_open(chicago(2025, 10, 7, 6, 0))


def test_overlapping_openings_count_once() -> None:
    hours = {"mon": ("08:00", "02:00"), "tue": ("00:00", "24:00")}
    loc = office(business_hours=hours)
    assert secs(chicago(2025, 10, 6, 0, 0), chicago(2025, 10, 8, 0, 0), loc) == (16 + 24) * HOUR


# --------------------------------------------------------------------------- no hours, caching


def test_a_location_without_hours_counts_wall_clock_time() -> None:
    bare = Location(name="main", timezone="America/Chicago")
    start, end = chicago(2025, 10, 4, 10, 0), chicago(2025, 10, 6, 8, 30)
    assert secs(start, end, bare) == (end - start).total_seconds()
    assert not BusinessCalendar(bare).has_hours and BusinessCalendar(bare).is_open(start)


def test_questions_in_any_order_give_the_same_answers() -> None:
    cal = BusinessCalendar(office())
    late = cal.seconds_between(chicago(2025, 12, 1, 9, 0), chicago(2025, 12, 2, 9, 0))
    early = cal.seconds_between(chicago(2025, 1, 6, 9, 0), chicago(2025, 1, 7, 9, 0))
    middle = cal.seconds_between(chicago(2025, 6, 2, 9, 0), chicago(2025, 6, 3, 9, 0))
    assert late == early == middle == 9 * HOUR
    assert calendar_for(office()) is calendar_for(office())


# --------------------------------------------------------------------------- bad input


def test_naive_or_reversed_times_are_refused() -> None:
    with pytest.raises(ValueError, match="start: naive"):
        secs(datetime(2025, 10, 6, 9, 0), chicago(2025, 10, 6, 10, 0))
    with pytest.raises(ValueError, match="end: before start"):
        secs(chicago(2025, 10, 6, 10, 0), chicago(2025, 10, 6, 9, 0))


@pytest.mark.parametrize(
    ("hours", "holidays", "message"),
    [
        ({"mon": ("8am", "5pm")}, (), r"business_hours\.mon: expected a local time HH:MM"),
        ({"mon": ("08:00", "25:00")}, (), r"business_hours\.mon: expected a local time HH:MM"),
        ({"xyz": ("08:00", "17:00")}, (), r"unknown weekday 'xyz'; known: mon, tue, wed, thu, fri, sat, sun"),
        ({"tue": ("09:00", "09:00")}, (), r"business_hours\.tue: closes when it opens"),
        ({"wed": ("24:00", "09:00")}, (), r"business_hours\.wed: the opening time must be before 24:00"),
        ({"thu": ("09:00",)}, (), r"business_hours\.thu: expected \[\"HH:MM\", \"HH:MM\"\]"),
        ({}, ("27/11/2025",), r"practice\.locations\[downtown\]\.holidays: expected ISO dates"),
    ],
)
def test_bad_hours_name_the_field(hours: dict[str, tuple[str, ...]], holidays: tuple[str, ...], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BusinessCalendar(office(business_hours=hours, holidays=holidays))
