"""No personal data in keys: the checks that keep emails and phones out of the places a
mapped source stores or shows in clear.

The vendor's record id (``record_id``) goes into the interaction's idempotency key, its
``external_record_id`` attribute and the ``record_ref`` of every quarantine reason; the
``person_id`` into the person's external identity; ``attributes`` and the touchpoint are
stored in clear.
Quarantine reasons and clear columns must never hold personal data (HIPAA 45 CFR
164.502(b), the minimum-necessary standard; ``docs/vocabulary.md``, "Idempotency keys").
Two defences:

* at config load, :func:`contact_selector_problems` refuses a key selector that is
  *statically* an email or phone: it selects the same value as ``fields.email`` or
  ``fields.phone`` (the same JMESPath, however quoted; ``record_id``, ``person_id``,
  ``attributes.*``, ``touchpoint.*``), or, for ``record_id`` and
  ``person_id``, a key whose name says email or phone (``contact.email``, ``q5_phone``);
* at run time, :func:`protect` replaces a record id, person id, attribute text or
  touchpoint text (:data:`CLEAR_TOUCHPOINT_TEXTS`) that *looks like* an email
  (:func:`looks_like_email`) or a phone (:func:`looks_like_phone`) by
  ``hashed:<hex>``, the keyed digest of the connector
  (:meth:`~carecrm.core.ingest.connectors.SourceConnector.record_digest`: HMAC-SHA256
  under the practice's blind-index key), so the same value always gives the same key (a
  re-delivery still collapses) and nobody can read it or test guessed values against it.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping

from carecrm.plugins.sources.mapped.selectors import Selector

__all__ = [
    "CLEAR_TOUCHPOINT_TEXTS",
    "CONTACT_FIELDS",
    "HASHED_PREFIX",
    "contact_selector_problems",
    "looks_like_email",
    "looks_like_phone",
    "protect",
]

#: The person fields whose values are contact points (never keys or clear columns).
CONTACT_FIELDS: tuple[str, ...] = ("email", "phone")
#: Touchpoint texts typed by people (campaign names, UTM values), checked at run time; the
#: landing page and referrer lose their query string instead, and click ids are opaque.
CLEAR_TOUCHPOINT_TEXTS: tuple[str, ...] = ("source", "medium", "campaign", "term", "content")
#: What a hashed key value starts with.
HASHED_PREFIX = "hashed:"

_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
#: Phone punctuation: a value of digits and only these, with 7 to 15 digits, is a phone
#: when it has a ``+`` or some punctuation (a bare digit string is an id: vendors number
#: records, Jotform's ``submissionID`` is 19 digits, Gravity Forms' ``id`` a few).
_PHONE_CHARS_RE = re.compile(r"^\+?[\d\s().\-/]+$")
#: A date (``2025-01-31``, ``01/31/2025``) has the characters of a phone but is not one.
_DATE_RE = re.compile(r"^(\d{4}[-/.]\d{1,2}[-/.]\d{1,2}|\d{1,2}[-/.]\d{1,2}[-/.]\d{4})$")
_CONTACT_NAME_RE = re.compile(
    r"(?:^|[^a-z])(e-?mail|phone|phonenumber|mobile|cell|tel|telephone|sms|whatsapp)(?:[^a-z]|$)", re.IGNORECASE
)


def looks_like_email(value: str) -> bool:
    """True when ``value`` has the shape of an email address (``local@domain.tld``)."""
    return bool(_EMAIL_RE.match(value.strip()))


def looks_like_phone(value: str) -> bool:
    """True when ``value`` has the shape of a phone number: only digits and phone
    punctuation (``+ ( ) - . /`` and spaces), 7 to 15 digits (E.164's maximum), and a
    leading ``+`` or some punctuation; not a date.  A bare digit string is read as an id."""
    text = value.strip()
    if not _PHONE_CHARS_RE.match(text) or _DATE_RE.match(text):
        return False
    digits = sum(ch.isdigit() for ch in text)
    if not 7 <= digits <= 15:
        return False
    return text.startswith("+") or digits != len(text)


def protect(value: str, digest: Callable[[bytes], str]) -> str:
    """``value``, or ``hashed:<hex>`` when it looks like an email or a phone.

    :param value: a record id, person id or attribute text.
    :param digest: the connector's keyed digest (``record_digest``).
    :returns: the text to store and show.
    """
    if looks_like_email(value) or looks_like_phone(value):
        return HASHED_PREFIX + digest(b"key-value\x1f" + value.encode("utf-8"))
    return value


def _names_contact(selector: Selector) -> bool:
    """True when a plain key path's last key names an email or a phone."""
    keys = selector.keys
    return bool(keys) and keys is not None and bool(_CONTACT_NAME_RE.search(keys[-1]))


def contact_selector_problems(
    keyed: Mapping[str, Selector | None], fields: Mapping[str, Selector]
) -> Iterator[tuple[str, str]]:
    """``(option, reason)`` for each selector of ``keyed`` that is statically an email or
    phone.

    :param keyed: option name → selector of the values stored or shown in clear
        (``record_id``, ``person_id``, ``attributes.<name>``); None entries are skipped.
    :param fields: the ``fields`` selectors (``fields.email``, ``fields.phone`` compared).
    """
    contacts = {name: fields[name] for name in CONTACT_FIELDS if name in fields}
    for option, selector in keyed.items():
        if selector is None:
            continue
        same = [name for name, other in contacts.items() if other.parsed.parsed == selector.parsed.parsed]
        if same:
            yield (
                option,
                f"selects the same value as fields.{same[0]}: an email or phone must not be a key or a clear "
                "value (it would be stored and shown in clear); map the vendor's own id instead",
            )
        elif option in ("record_id", "person_id") and _names_contact(selector):
            yield (
                option,
                "selects a key named like an email or phone: an email or phone must not be a key (it would be "
                "stored and shown in clear); map the vendor's own id instead",
            )
