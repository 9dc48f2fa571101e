"""Time helpers: every datetime in carecrm is timezone-aware UTC, truncated to milliseconds.

Milliseconds because BSON dates (MongoDB) hold no finer precision, so every backend
round-trips the same value (``docs/vocabulary.md``, "Time").
"""

from __future__ import annotations

from datetime import UTC, datetime

UTC = UTC


def to_utc_ms(value: datetime) -> datetime:
    """Return ``value`` converted to UTC and truncated to whole milliseconds.

    :param value: a timezone-aware datetime.
    :raises ValueError: if ``value`` is naive (carries no time zone): a naive time is
        ambiguous and is never guessed to be UTC inside the core.
    """
    if value.tzinfo is UTC and not value.microsecond % 1000:
        return value  # already normalized (the usual case inside the core)
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("naive datetime: carecrm needs timezone-aware datetimes")
    value = value.astimezone(UTC)
    return value.replace(microsecond=(value.microsecond // 1000) * 1000, tzinfo=UTC)


def stored_utc(value: datetime, what: str = "datetime") -> datetime:
    """``value`` as a backend stores it: UTC, truncated to whole milliseconds.

    Every storage backend calls this on each datetime it is given (the one check of the
    storage contract's time rule, so backends never write their own).  A value already
    normalized by the core (UTC, whole milliseconds) is returned as it is, cheaply.

    :param value: a timezone-aware datetime.
    :param what: what the value is (a column or field name), named in the error.
    :raises ValueError: if ``value`` is naive; the message names ``what``, never the value.
    """
    if value.tzinfo is UTC and not value.microsecond % 1000:
        return value
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{what}: naive datetime refused; carecrm stores timezone-aware UTC only")
    return to_utc_ms(value)


def utcnow() -> datetime:
    """The current time, UTC, truncated to milliseconds."""
    return to_utc_ms(datetime.now(UTC))


def from_naive_utc(value: datetime) -> datetime:
    """Attach UTC to a naive datetime read back from a database that stores naive UTC.

    Backends call this in one place when reading; an aware value is converted to UTC.
    """
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def isoformat_z(value: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a ``Z`` suffix (``2018-01-18T18:17:02.000Z``)."""
    # isoformat truncates to the millisecond, as to_utc_ms does; "+00:00" becomes "Z"
    return to_utc_ms(value).isoformat(timespec="milliseconds")[:-6] + "Z"
