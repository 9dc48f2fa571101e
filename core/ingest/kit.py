"""The connector kit: helpers that every source connector needs, written once.

A connector (:class:`carecrm.core.ingest.connectors.SourceConnector`) reads vendors' payloads;
most of them need the same small pieces, which live here so that each one has a single
definition, a documented origin and its own tests:

* **text coercion** — :func:`text` (lenient: "a usable string or None"), :func:`single_text`
  (strict: one text value or a :class:`BadValue`), :func:`identifier` (a vendor id that makes
  an idempotency key, never cleaned), :func:`flag` (booleans sent as text), :func:`is_blank`;
* **canonical JSON** — :func:`canonical_json`, the bytes digested into idempotency keys for
  records that carry no vendor id;
* **signatures** — :func:`signature_from_header` (read and decode a signature header),
  :func:`hmac_digest` and :func:`signatures_match` (constant-time comparison);
* **URLs and UTM parameters** — :data:`URL_PARAMETERS`, :func:`url_parameters` and
  :func:`without_query` (a landing page or referrer stored without what may identify a
  person);
* **vendors' test events** — :data:`TEST_ATTRIBUTE` (``attributes["test"] = True`` on an
  interaction the vendor sent as a test or sample: stored and shown, kept out of every
  figure; :mod:`carecrm.core.analytics.vendor_tests`);
* **personal data in free-form fields** — :func:`personal_field_name`, :func:`plain_value`
  and :data:`EMAIL_IN_TEXT` (which of a sender's custom fields may be kept).

Nothing here logs, and no error repeats the value it refuses (HIPAA 45 CFR 164.502(b), the
minimum-necessary standard, applied to error output): a reason says what is wrong in words.
The module depends only on :mod:`carecrm.core.errors`, :mod:`carecrm.core.model.domain` and
:mod:`carecrm.core.model.text`, so it can move with the connector contract.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import math
import re
import urllib.parse
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Literal

from carecrm.core.errors import ValidationFailed
from carecrm.core.model.text import text_problem

if TYPE_CHECKING:
    from carecrm.core.model.domain import RawPayload

__all__ = [
    "DEFAULT_MAX_AGE_SECONDS",
    "EMAIL_IN_TEXT",
    "FALSE_WORDS",
    "HMAC_ALGORITHMS",
    "PERSONAL_NAME_PARTS",
    "PERSON_WORDS",
    "PLAIN_VALUE_MAX",
    "TRUE_WORDS",
    "URL_PARAMETERS",
    "BadValue",
    "canonical_json",
    "flag",
    "hmac_digest",
    "identifier",
    "is_blank",
    "personal_field_name",
    "plain_value",
    "practice_e164",
    "practice_numbers",
    "redacted_text",
    "require_fresh",
    "signature_from_header",
    "signatures_match",
    "single_text",
    "text",
    "url_parameters",
    "without_query",
]


class BadValue(ValueError):
    """A value from a payload cannot be used.

    Raised by the strict coercions (:func:`single_text`, :func:`identifier`); a connector
    turns it into a :class:`~carecrm.core.ingest.connectors.Rejected` naming the record and the
    field.

    :ivar reason: what is wrong, in words; never the value itself.
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --------------------------------------------------------------------------- text coercion


def is_blank(value: Any) -> bool:
    """True for None and for a string of white space only (JSON ``null``, an empty form
    field)."""
    return value is None or (isinstance(value, str) and not value.strip())


def text(value: Any) -> str | None:
    """A usable string, leniently: a string with its surrounding white space removed, an
    integer (not a boolean) as its exact digits, and None for everything else (blank text,
    ``null``, booleans, floats, lists, objects).

    For vendors whose documented fields are strings or integers, where a value of another
    type means "not sent" (CallRail's call object, https://apidocs.callrail.com/#calls;
    SendGrid's event properties,
    https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event).
    """
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return None


def single_text(value: Any) -> str | None:
    """One text value, strictly: a string exactly as sent (blank → None), an integer as its
    digits, a whole float as its digits, and a one-element list unwrapped (form tools send
    every answer as a list: Unbounce's ``data.json``, Jotform's checkboxes).

    :raises BadValue: for a list of several values, a boolean, a float with a fraction or an
        object: a selector that picks such a value is misconfigured, and guessing would
        store the wrong text.
    """
    if isinstance(value, list):
        if not value:
            return None
        if len(value) > 1:
            raise BadValue(f"expected one value, got a list of {len(value)}")
        return single_text(value[0])
    if is_blank(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise BadValue("expected text, got a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        raise BadValue("expected text, got a number with a fraction")
    raise BadValue("expected text, got an object")


def identifier(value: Any) -> str | None:
    """A vendor's record or person id as text: a string stripped, an integer as its exact
    digits, a one-element list unwrapped; None when blank.

    An id is never cleaned: it makes the idempotency key (``docs/vocabulary.md``, "Idempotency keys"),
    and an altered id would make a re-delivery look new.  So an id holding a lone surrogate,
    a NUL or another control character (:func:`carecrm.core.model.text.text_problem`) is refused.

    :raises BadValue: for such an id, or one that is neither a string nor an integer.
    """
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if is_blank(value):
        return None
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise BadValue(f"an id that {problem}")
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise BadValue("an id must be a string or an integer")


#: Texts :func:`flag` reads as true by default (compared after ``strip().lower()``).
TRUE_WORDS: frozenset[str] = frozenset({"true", "1", "yes", "y", "t"})
#: Texts :func:`flag` reads as false by default.
FALSE_WORDS: frozenset[str] = frozenset({"false", "0", "no", "n", "f"})

#: The interaction attribute a connector sets to ``True`` (the boolean, nothing else) on
#: an event the vendor sent as a test or sample: Google Ads' ``is_test``, a form listed in
#: Meta's ``test_form_ids``, LinkedIn's test leads, Mailgun's test webhooks.  The event is
#: stored and shown on the timeline like any other, and kept out of the pipeline report,
#: lead scores, attribution and segments (:mod:`carecrm.core.analytics.vendor_tests`)::
#:
#:     if kit.flag(data.get("is_test")):
#:         attributes[kit.TEST_ATTRIBUTE] = True
TEST_ATTRIBUTE = "test"


def flag(
    value: Any, *, true_words: frozenset[str] = TRUE_WORDS, false_words: frozenset[str] = FALSE_WORDS
) -> bool | None:
    """A boolean sent as JSON, as a number (non-zero is true) or as text; None when unknown.

    Vendors send flags as strings: CallRail's legacy ``answered=true`` (form parameters are
    text, https://support.callrail.com/hc/en-us/articles/201211133-Webhooks), SendGrid's
    ``tls`` as ``0``/``1``.  ``true_words`` / ``false_words`` are lowercase texts.
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        word = value.strip().lower()
        if word in true_words:
            return True
        if word in false_words:
            return False
    return None


# --------------------------------------------------------------------------- canonical JSON


def canonical_json(value: Any) -> bytes:
    """A JSON value's canonical bytes: keys sorted, compact separators (``,`` and ``:``),
    non-ASCII characters as themselves, UTF-8; values JSON cannot hold become their
    ``str()``.

    Used to digest a record that carries no vendor id into its idempotency key
    (:meth:`carecrm.core.ingest.connectors.SourceConnector.record_digest`), so the same record
    always gives the same key.  It is carecrm's own form, not RFC 8785 (JCS): numbers are
    written as Python writes them.  **It must never change**: stored idempotency keys were
    made with it.  A lone surrogate (JSON allows ``"\\ud83d"``) is kept as its
    ``surrogatepass`` bytes, so such a record still gives one stable digest instead of an
    error; the core then refuses or cleans the text itself (:mod:`carecrm.core.model.text`).
    """
    dumped = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return dumped.encode("utf-8", "surrogatepass")


# --------------------------------------------------------------------------- signatures

#: HMAC digest algorithms by name (RFC 2104 HMAC over FIPS 180-4 SHA-2 / SHA-1), the ones
#: vendors use: SHA-256 (Typeform, Webflow, Meta, Calendly) and SHA-1 (CallRail, Twilio,
#: Intercom's ``X-Hub-Signature``).
HMAC_ALGORITHMS: Mapping[str, Callable[..., Any]] = {
    "sha256": hashlib.sha256,
    "sha1": hashlib.sha1,
}


def signature_from_header(
    payload: RawPayload,
    *,
    source: str,
    header: str,
    encoding: Literal["base64", "hex"] = "base64",
    prefix: str = "",
) -> bytes:
    """The raw signature bytes a vendor sent in ``header``.

    The header is looked up case-insensitively (HTTP field names are, RFC 9110 §5.1), its
    value stripped, ``prefix`` (``sha256=`` for Typeform and Meta) removed, then decoded:
    ``base64`` strictly (RFC 4648 §4, no stray characters) or ``hex`` (either case).

    :param payload: the payload as received.
    :param source: the source's name, for the error.
    :raises ValidationFailed: ``(source, "payload", header, reason)`` when the header is
        missing or blank, lacks ``prefix``, or is not ``encoding``.
    """
    given = (payload.header(header) or "").strip()
    if not given:
        raise ValidationFailed(source, "payload", header, "signature header is missing")
    if prefix:
        if not given.startswith(prefix):
            raise ValidationFailed(source, "payload", header, "signature lacks the expected prefix")
        given = given[len(prefix) :]
    try:
        if encoding == "hex":
            return bytes.fromhex(given)
        return base64.b64decode(given, validate=True)
    except (ValueError, binascii.Error):
        raise ValidationFailed(source, "payload", header, f"signature is not {encoding}") from None


def hmac_digest(secret: str, message: bytes, algorithm: str) -> bytes:
    """The HMAC (RFC 2104) of ``message`` keyed with the UTF-8 bytes of ``secret``.

    :param algorithm: a key of :data:`HMAC_ALGORITHMS` (``sha256``, ``sha1``).
    :raises KeyError: for another algorithm (a connector's bug, not the payload's fault).
    """
    return hmac.new(secret.encode("utf-8"), message, HMAC_ALGORITHMS[algorithm]).digest()


def signatures_match(expected: bytes, given: bytes) -> bool:
    """Whether two signatures are equal, in constant time (:func:`hmac.compare_digest`), so
    that the time taken tells an attacker nothing about how much of a forged signature was
    right."""
    return hmac.compare_digest(expected, given)


#: How far a signed timestamp may lie from the receive time, in seconds, unless a source
#: configures its own (``max_age_seconds``): 5 minutes, the window SendGrid, Webflow,
#: HubSpot (v3), Calendly and Mailgun recommend against replayed requests.
DEFAULT_MAX_AGE_SECONDS = 300.0


def require_fresh(
    signed_at: float,
    payload: RawPayload,
    *,
    source: str,
    field: str,
    max_age_seconds: float | None = DEFAULT_MAX_AGE_SECONDS,
) -> None:
    """Refuse a signature whose signed timestamp is more than ``max_age_seconds`` from
    the payload's receive time, either way (a replayed request, or a clock far off).

    :param signed_at: the signed timestamp, in seconds since the Unix epoch (UTC); a
        vendor that signs milliseconds (Webflow) divides by 1,000 first.
    :param payload: the payload as received (its ``received_at``).
    :param source: the source's name, for the error.
    :param field: the header or body field that holds the timestamp, for the error.
    :param max_age_seconds: the window; None turns the check off (a source configured
        so: an operator's import of old files goes through ``--no-verify`` instead).
    :raises ValidationFailed: ``(source, "payload", field, reason)`` outside the window.
    """
    if max_age_seconds is None:
        return
    age = payload.received_at.timestamp() - signed_at
    if not age == age or abs(age) > max_age_seconds:  # NaN as well
        raise ValidationFailed(
            source,
            "payload",
            field,
            f"signature timestamp is more than {max_age_seconds:g} s from receipt (a replay, or a clock far off)",
        )


# --------------------------------------------------------------------------- practice numbers


def practice_e164(raw: str | None, region: str) -> str | None:
    """One of the practice's own numbers (a tracking number, a business line) in E.164,
    read in ``region`` (ISO 3166-1 alpha-2) when it has no ``+``; None when it is empty or
    not a possible number (a practice's config, not a patient's data: nothing to report)."""
    if not raw:
        return None
    from carecrm.core.identity.normalize import IdentityError, normalize_phone

    try:
        return normalize_phone(raw, region)[0]
    except IdentityError:
        return None


def practice_numbers(practice: Any) -> tuple[dict[str, tuple[str, str | None]], dict[str, str]]:
    """The practice's call-tracking and business numbers, for connectors that see which
    number a patient called or texted (CallRail, Twilio).

    :param practice: a :class:`carecrm.core.model.domain.Practice`.
    :returns: ``(tracking, lines)``: E.164 tracking number -> (location name, campaign or
        None), from each location's ``tracking_numbers``; E.164 business line -> location
        name, from each location's ``phones``.  The first location that lists a number wins.
    """
    tracking: dict[str, tuple[str, str | None]] = {}
    lines: dict[str, str] = {}
    for loc in practice.locations:
        for number, campaign in loc.tracking_numbers.items():
            e164 = practice_e164(number, loc.region)
            if e164 is not None:
                tracking.setdefault(e164, (loc.name, campaign or None))
        for number in loc.phones:
            e164 = practice_e164(number, loc.region)
            if e164 is not None:
                lines.setdefault(e164, loc.name)
    return tracking, lines


def redacted_text(value: Any, limit: int = 300) -> str | None:
    """A vendor's free text about a delivery (an SMTP response, a bounce reason) with
    every email address replaced by ``[email]`` (:data:`EMAIL_IN_TEXT`), shortened to
    ``limit`` characters; None for no text."""
    text_value = text(value)
    if text_value is None:
        return None
    return EMAIL_IN_TEXT.sub("[email]", text_value)[:limit]


# --------------------------------------------------------------------------- URLs

#: URL query parameter → :class:`carecrm.core.model.domain.Touchpoint` field: Google Analytics'
#: UTM parameters (https://support.google.com/analytics/answer/10917952) and the ad
#: platforms' click ids: ``gclid`` (Google Ads auto-tagging), ``fbclid`` (Meta), ``msclkid``
#: (Microsoft Advertising).
URL_PARAMETERS: dict[str, str] = {
    "utm_source": "source",
    "utm_medium": "medium",
    "utm_campaign": "campaign",
    "utm_term": "term",
    "utm_content": "content",
    "gclid": "gclid",
    "fbclid": "fbclid",
    "msclkid": "msclkid",
}


def without_query(url: str) -> str:
    """The URL without its query string, its fragment and any user info, with the host in
    lowercase (RFC 3986 §3: ``scheme://[userinfo@]host[:port]/path?query#fragment``; host
    names are case-insensitive, §3.2.2).

    Query strings and fragments can carry tokens or personal data (``?email=``), and user
    info is a credential, so a landing page or referrer is stored without them.  A URL that
    :func:`urllib.parse.urlsplit` cannot read (a broken IPv6 host) is cut at its first
    ``?`` or ``#`` instead, and loses anything before an ``@`` in its authority.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        head = url.split("?", 1)[0].split("#", 1)[0]
        scheme, sep, rest = head.partition("//")
        if not sep:
            return head
        authority, slash, path = rest.partition("/")
        return f"{scheme}//{authority.rpartition('@')[2]}{slash}{path}"
    host = parts.netloc.rpartition("@")[2]
    return urllib.parse.urlunsplit((parts.scheme, host.lower(), parts.path, "", ""))


def url_parameters(url: str) -> dict[str, str]:
    """Touchpoint fields from a URL's UTM parameters and click ids (:data:`URL_PARAMETERS`).

    Parameter names are compared case-insensitively (``UTM_Source`` is read); values are
    stripped, blank ones skipped, and the first of a repeated parameter wins.  An
    unreadable URL gives no parameters.
    """
    try:
        query = urllib.parse.urlsplit(url).query
    except ValueError:
        return {}
    out: dict[str, str] = {}
    for name, value in urllib.parse.parse_qsl(query, keep_blank_values=False):
        field = URL_PARAMETERS.get(name.lower())
        if field is not None and value.strip() and field not in out:
            out[field] = value.strip()
    return out


# --------------------------------------------------------------------------- personal data in free-form fields

#: Name parts of custom arguments that suggest personal data; such arguments are dropped.
PERSONAL_NAME_PARTS: frozenset[str] = frozenset(
    {
        "email",
        "mail",
        "phone",
        "tel",
        "mobile",
        "cell",
        "sms",
        "firstname",
        "lastname",
        "fullname",
        "surname",
        "username",
        "ip",
        "ipaddress",
        "useragent",
        "ua",
        "address",
        "street",
        "city",
        "zip",
        "zipcode",
        "postal",
        "postcode",
        "dob",
        "birthday",
        "birthdate",
        "birth",
        "ssn",
        "sex",
        "gender",
        "diagnosis",
        "insurance",
        "mrn",
    }
)

#: Words that make ``name`` in a custom argument's name a person's name.
PERSON_WORDS: frozenset[str] = frozenset(
    {
        "first",
        "last",
        "full",
        "given",
        "family",
        "middle",
        "sur",
        "maiden",
        "nick",
        "display",
        "patient",
        "contact",
        "recipient",
        "customer",
        "user",
        "lead",
        "person",
        "client",
        "member",
    }
)

#: An email address inside a text (an SMTP reply, a header); replaced by ``[email]``.
EMAIL_IN_TEXT = re.compile(r"[^\s<>@\"'(),;:]+@[^\s<>@\"'(),;:]+")
_PHONE_VALUE = re.compile(r"^\+\d{7,15}$|^\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}$")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
#: The longest text :func:`plain_value` accepts.
PLAIN_VALUE_MAX = 300


def personal_field_name(key: str) -> bool:
    """True when the name of a sender's free-form field (SendGrid custom arguments, Mailgun
    ``user-variables``, Postmark ``Metadata``, SES ``X-Metadata``) suggests personal data
    (``patientEmail``, ``first_name``); ``campaign_name`` or ``template_name`` name no
    person.  Moved here from the SendGrid connector so every email connector drops the same
    fields."""
    parts = [p for p in re.split(r"[^a-z0-9]+", _CAMEL.sub("_", key).lower()) if p]
    if "".join(parts) in PERSONAL_NAME_PARTS:
        return True
    for part in parts:
        if part == "name":
            if len(parts) == 1 or any(p in PERSON_WORDS for p in parts):
                return True
        elif part in PERSONAL_NAME_PARTS:
            return True
    return False


def plain_value(value: Any) -> bool:
    """True for a short scalar that does not look like an email address or a phone."""
    if isinstance(value, bool) or value is None:
        return value is not None
    if isinstance(value, int | float):
        return not isinstance(value, float) or math.isfinite(value)
    if isinstance(value, str):
        stripped = value.strip()
        return (
            len(stripped) <= PLAIN_VALUE_MAX and not EMAIL_IN_TEXT.search(stripped) and not _PHONE_VALUE.match(stripped)
        )
    return False
