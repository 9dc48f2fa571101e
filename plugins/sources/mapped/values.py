"""Value coercions of a mapped source: phones, lists of values, inquiry text, checkboxes,
dates and times, landing pages.

Each raises :class:`~carecrm.core.ingest.kit.BadValue` with a reason that never repeats
the value; the record builder turns it into a :class:`~carecrm.core.ingest.connectors.Rejected`
naming the field.  Plain text and ids are the kit's (:func:`~carecrm.core.ingest.kit.single_text`,
:func:`~carecrm.core.ingest.kit.identifier`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta, tzinfo
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any

from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.kit import BadValue
from carecrm.core.model.timeutil import to_utc_ms
from carecrm.plugins.sources.mapped.options import UNCHECKED_VALUES

__all__ = [
    "NAME_FIELDS",
    "body_text",
    "checked",
    "clean_url",
    "date_value",
    "many",
    "name_text",
    "parse_time",
    "phone",
    "same_values",
    "truthy",
]

#: Person fields holding a name: HTML is stripped from them (:func:`name_text`).
NAME_FIELDS: frozenset[str] = frozenset({"first_name", "last_name", "full_name"})
_TAG = re.compile(r"<[^<>]*>")

_ISO_HAS_TIME = re.compile(r"^\d{4}-?\d{2}-?\d{2}[Tt ]\d{2}")
_DECIMAL_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def phone(value: Any) -> str | None:
    """A phone exactly as sent: strings unchanged; a JSON integer as its exact digits
    (Webflow sends ``15550000000`` as a number, webflow.expected.md); a JSON float only
    when it is a whole number below 2**53 (so exactly representable)."""
    if kit.is_blank(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise BadValue("expected a phone number, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise BadValue("expected a phone number, got a negative number")
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and 0 <= value < 2**53:
            return str(int(value))
        raise BadValue("expected a phone number, got a number with a fraction")
    raise BadValue("expected a phone number, got an object")


def same_values(value: Any) -> Any:
    """A repeated form field (``first_name=Jane&first_name=Jane``: a list of equal values,
    as a form with a duplicated field sends) as its one value; other values unchanged, so
    a list of different values is still refused by :func:`~carecrm.core.ingest.kit.single_text`."""
    if isinstance(value, list) and len(value) > 1:
        first = value[0]
        if all(type(item) is type(first) and item == first for item in value[1:]):
            return first
    return value


def name_text(value: Any) -> str | None:
    """A name as text with HTML taken out: tags removed (``<b>Jane</b>`` → ``Jane``),
    character references read (``&amp;`` → ``&``), runs of white space made one space.
    Form tools pass what was typed, and a rich-text field or a pasted signature carries
    markup that must not reach a name (issue 8, "HTML stripped from names").

    :raises BadValue: as :func:`~carecrm.core.ingest.kit.single_text`.
    """
    text = kit.single_text(value)
    if text is None or ("<" not in text and "&" not in text):
        return text
    import html

    cleaned = " ".join(html.unescape(_TAG.sub(" ", text)).split())
    cleaned = " ".join(_TAG.sub(" ", cleaned).split())  # tags that were escaped as &lt;b&gt;
    return cleaned or None


def many(value: Any, one: Callable[[Any], str | None]) -> tuple[str, ...]:
    """Zero or more values (emails, phones): a list gives several."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, list):
            raise BadValue("expected a value or a list of values, got nested lists")
        got = one(item)
        if got is not None and got not in out:
            out.append(got)
    return tuple(out)


def body_text(value: Any) -> str | None:
    """Inquiry text: a string as sent, a list of strings one per line, else JSON text."""
    if kit.is_blank(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = "\n".join(v for v in value if v.strip())
        return text or None
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def checked(value: Any, checked_values: frozenset[str]) -> bool:
    """Whether a checkbox value means "checked".

    :raises BadValue: for a value that is neither a known checked nor unchecked value (a
        misconfigured selector must not silently grant or hide consent).
    """
    if isinstance(value, list):
        if not value:
            return False
        if len(value) == 1:
            return checked(value[0], checked_values)
        raise BadValue("a consent checkbox gave several values")
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, int | float):
        if value in (0, 1):
            return bool(value)
        raise BadValue("a consent checkbox gave a number other than 0 or 1")
    if isinstance(value, str):
        folded = value.strip().casefold()
        if folded in checked_values:
            return True
        if folded in UNCHECKED_VALUES:
            return False
        raise BadValue("a consent checkbox gave a value that is neither checked nor unchecked")
    raise BadValue("a consent checkbox gave an object")


def clean_url(url: str | None) -> tuple[str | None, dict[str, str]]:
    """A landing-page or referrer URL without query, fragment or user info (query strings
    can carry personal data such as ``?email=``), and its UTM / click-id parameters
    (:func:`carecrm.core.ingest.kit.without_query`, :func:`~carecrm.core.ingest.kit.url_parameters`)."""
    if url is None:
        return None, {}
    return kit.without_query(url) or None, kit.url_parameters(url)


def date_value(value: Any) -> date | None:
    """A calendar date (``YYYY-MM-DD``) such as a date of birth; never a timestamp."""
    text = kit.single_text(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise BadValue("not a YYYY-MM-DD date") from None


def truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, empty string, list and object are false."""
    return not (value is None or value is False or value in ("", [], {}))


def parse_time(value: Any, fmt: str, zone: tzinfo) -> datetime:
    """Read a time by the ``time_format`` option ``fmt``, as aware UTC with millisecond
    precision (``docs/vocabulary.md``, "Time").

    ``iso8601`` (``datetime.fromisoformat``, a date-time: a date alone is not a timestamp),
    ``epoch_s`` / ``epoch_ms`` (a number, or its decimal text, read exactly with
    :class:`~decimal.Decimal`), or a :meth:`datetime.strptime` pattern.  A naive time is
    read in ``zone`` (fold 0: the earlier of an ambiguous autumn hour).

    :raises BadValue: naming the expected form, never the value.
    """
    if fmt in ("epoch_s", "epoch_ms"):
        if isinstance(value, bool):
            raise BadValue("expected an epoch number, got a boolean")
        if isinstance(value, int):
            number = Decimal(value)
        elif isinstance(value, float):
            number = Decimal(repr(value))
        elif isinstance(value, str) and _DECIMAL_TEXT.match(value.strip()):
            number = Decimal(value.strip())
        else:
            raise BadValue(f"expected a number of {'milliseconds' if fmt == 'epoch_ms' else 'seconds'}")
        try:
            scaled = number * (1000 if fmt == "epoch_ms" else 1_000_000)
            micros = int(scaled.to_integral_value(ROUND_FLOOR))
            return to_utc_ms(_EPOCH + timedelta(microseconds=micros))
        except (OverflowError, InvalidOperation, ValueError):
            raise BadValue("epoch time out of range") from None
    if not isinstance(value, str):
        raise BadValue("expected a date-time text")
    text = value.strip()
    try:
        if fmt == "iso8601":
            if not _ISO_HAS_TIME.match(text):
                raise BadValue("not an ISO 8601 date-time (a date without a time of day is not a timestamp)")
            parsed = datetime.fromisoformat(text)
        else:
            parsed = datetime.strptime(text, fmt)
    except ValueError:
        raise BadValue(f"does not match time_format {fmt}") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=zone)
    try:
        return to_utc_ms(parsed)
    except (OverflowError, ValueError):
        raise BadValue("time out of range") from None
