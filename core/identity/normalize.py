"""Identity normalization and the name rules of exact matching (``docs/vocabulary.md``,
"Identities and matching").

* Email: trimmed, checked by email-validator (``check_deliverability=False``: no DNS)
  and lowercased whole, local part included, for matching; the display form keeps what
  the person typed.
* Phone: parsed by phonenumbers in the location's region (or the record's own country),
  accepted when it is a *possible* number (``IS_POSSIBLE``; a local-only number such as
  ``555-0142`` is refused: it has no area code), stored as E.164 with phonenumbers'
  validity flag (fictional 555 numbers are possible but often not valid).
* Names: a blind index of the normalized full name and of the family name (case and
  accents folded) for exact look-up.  Low-confidence names (caller-ID/CNAM text,
  generated chat visitor names, vendors' placeholders) never count as disagreeing.

Normalizing is the costliest CPU step of ingest (measured on the reference VM: phonenumbers
~66k/s, email-validator ~41k/s per core), so results are cached per process.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import phonenumbers

from carecrm.core.model.text import text_problem


class IdentityError(ValueError):
    """A raw email or phone cannot be normalized; the message never contains the value."""


@lru_cache(maxsize=65536)
def normalize_email(raw: str, *, allow_test_domains: bool = False) -> str:
    """Normalize an email address for matching.

    :param raw: what the person typed.
    :param allow_test_domains: accept addresses at the ``test`` top-level domain (RFC
        6761 §6.2 reserves it for testing; email-validator refuses it with the other
        special-use names unless ``test_environment``): for a practice's test
        installation only (``[ingest] allow_test_domains``).
    :returns: the address checked by email-validator and lowercased whole.
    :raises IdentityError: if email-validator refuses it (the reason in words: no @-sign,
        a special-use or reserved domain, an invalid domain), or it holds a lone
        surrogate, a NUL or a control character (the reason, never the value).
    """
    text = raw.strip()
    if not text:
        raise IdentityError("empty email address")
    problem = text_problem(text)
    if problem is not None:
        raise IdentityError(f"not a valid email address ({problem})")
    import email_validator  # imported on first use: a phone look-up never needs it

    try:
        result = email_validator.validate_email(text, check_deliverability=False, test_environment=allow_test_domains)
    except email_validator.EmailNotValidError as exc:
        raise IdentityError(_email_reason(exc)) from None
    return str(result.normalized).lower()


def _email_reason(exc: Exception) -> str:
    # email-validator's messages may quote parts of the address: keep only a class.
    msg = str(exc)
    if "special-use or reserved" in msg:
        # RFC 6761 / RFC 2606 names (test, localhost, invalid, local, onion, arpa): no mail
        # can reach them; a test installation may allow "test" ([ingest] allow_test_domains)
        return "the domain is a special-use or reserved name (RFC 6761): no mail can be delivered there"
    if "must have an @-sign" in msg:
        return "not an email address (no @-sign)"
    if "domain" in msg.lower():
        return "the domain part is not valid"
    return "not a valid email address"


@lru_cache(maxsize=65536)
def normalize_phone(raw: str, region: str = "US") -> tuple[str, bool]:
    """Normalize a phone number to E.164.

    :param raw: the number as sent (``(312) 555-0142``, ``+13125550142``, ``15550000000``).
    :param region: ISO 3166-1 alpha-2 region used when the number has no ``+`` prefix.
    :returns: ``(e164, valid)`` where ``valid`` is phonenumbers' ``is_valid_number``.
    :raises IdentityError: if it cannot be parsed or is not a possible number, or it
        holds a lone surrogate, a NUL or a control character (phonenumbers would skip
        them and accept what remains: a corrupted value is not a number the person gave).
    """
    text = raw.strip()
    if not text:
        raise IdentityError("empty phone number")
    problem = text_problem(text)
    if problem is not None:
        raise IdentityError(f"not a phone number ({problem})")
    try:
        number = phonenumbers.parse(text, region.upper() if region else None)
    except phonenumbers.NumberParseException:
        raise IdentityError("not a phone number") from None
    reason = phonenumbers.is_possible_number_with_reason(number)
    if reason != phonenumbers.ValidationResult.IS_POSSIBLE:
        raise IdentityError("not a possible phone number (too short, too long or no area code)")
    e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
    return e164, bool(phonenumbers.is_valid_number(number))


_PUNCT = re.compile(r"[^\w\s'-]+", re.UNICODE)
_SPACE = re.compile(r"\s+")


@lru_cache(maxsize=65536)
def normalize_name(text: str | None) -> str | None:
    """Fold a name for exact look-up: accents removed, case folded, punctuation dropped,
    white space collapsed (``"  José  O'Neil "`` → ``"jose o'neil"``); None if empty."""
    if not text:
        return None
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    folded = _SPACE.sub(" ", _PUNCT.sub(" ", stripped.casefold())).strip()
    return folded or None


# Caller-ID (CNAM) and placeholder texts that name no person.
_LOW_CONFIDENCE_EXACT = frozenset(
    {
        "skype caller",
        "wireless caller",
        "unknown",
        "unknown caller",
        "unavailable",
        "private",
        "private caller",
        "anonymous",
        "restricted",
        "no caller id",
        "toll free call",
        "cell phone",
        "guest",
        "visitor",
        "lead",
        "customer",
        "firstname lastname",
        "first name last name",
        "first last",
        "test test",
        "john doe",
        "jane doe",
        "n a",
        "na",
        # carriers and services that CNAM shows instead of a name
        "t-mobile",
        "tmobile",
        "verizon",
        "verizon wireless",
        "at t",
        "att",
        "sprint",
        "metropcs",
        "metro pcs",
        "cricket",
        "cricket wireless",
        "boost mobile",
        "us cellular",
        "google voice",
        "voip caller",
        "caller",
        "mobile",
        "cellular",
        "landline",
        "spam risk",
        "scam likely",
        "potential spam",
        "telemarketer",
    }
)
_LOW_CONFIDENCE_PATTERNS = (
    re.compile(r"^(visitor|guest|user|lead)[ #-]?\d+$"),  # generated chat visitor names
    re.compile(r"^[a-z .'-]+ [a-z]{2}$"),  # CNAM "CHICAGO IL": a city and a state code
    re.compile(r"^\+?\d[\d ()-]*$"),  # a number given as a name
    re.compile(r"^[a-z]{0,2}\d{6,}$"),  # an account or device id (V123456789)
)
_US_STATES = frozenset(
    "al ak az ar ca co ct de fl ga hi id il in ia ks ky la me md ma mi mn ms mo mt ne nv nh nj "
    "nm ny nc nd oh ok or pa ri sc sd tn tx ut vt va wa wv wi wy dc pr".split()
)


@lru_cache(maxsize=65536)
def is_low_confidence_name(text: str | None) -> bool:
    """True for text that does not reliably name a person.

    Caller-ID/CNAM strings (``SKYPE CALLER``, ``WIRELESS CALLER``, a city and state such
    as ``CHICAGO IL``), generated chat visitor names (``Visitor 8812``), vendors'
    placeholders (``FirstName LastName``) and digits.  Empty text is low confidence.
    """
    norm = normalize_name(text)
    if norm is None:
        return True
    if norm in _LOW_CONFIDENCE_EXACT:
        return True
    for i, pattern in enumerate(_LOW_CONFIDENCE_PATTERNS):
        if pattern.match(norm):
            if i == 1:  # city + state only when the tail is a real state code
                return norm.rsplit(" ", 1)[1] in _US_STATES
            return True
    return False


def _first_token(name: str | None) -> str | None:
    norm = normalize_name(name)
    return norm.split(" ")[0] if norm else None


def names_clearly_disagree(
    first_a: str | None,
    first_b: str | None,
    *,
    confident_a: bool = True,
    confident_b: bool = True,
) -> bool:
    """Whether two given names clearly belong to different people.

    Used by exact matching: a shared email or phone joins the contact unless the names
    clearly disagree (a mother and daughter sharing a phone).  Names disagree only when
    both are confident and known and neither first name is the other or its initial or
    prefix (``M`` ~ ``Maria``, ``Chris`` ~ ``Christopher``).  Family names are not
    compared: they change with marriage while the email stays.
    """
    if not (confident_a and confident_b):
        return False
    a, b = _first_token(first_a), _first_token(first_b)
    if not a or not b:
        return False
    a, b = a.rstrip("."), b.rstrip(".")
    return not (a == b or a.startswith(b) or b.startswith(a))


def split_full_name(full: str | None) -> tuple[str | None, str | None]:
    """Split ``"Maria Placeholder"`` into (``"Maria"``, ``"Placeholder"``); one word is a
    first name; ``"Placeholder, Maria"`` (family name first, as in HL7/FHIR) is understood."""
    if not full or not full.strip():
        return None, None
    text = _SPACE.sub(" ", full.strip())
    if "," in text:
        family, _, given = text.partition(",")
        return (given.strip() or None), (family.strip() or None)
    parts = text.split(" ")
    if len(parts) == 1:
        return parts[0], None
    return " ".join(parts[:-1]), parts[-1]


def normalize_city(text: str | None) -> str | None:
    """The stored form of a city: white space collapsed and title case (``"  SAINT  louis"`` →
    ``"Saint Louis"``), so that segments match however a form tool or the EHR cased it.
    None for an empty value."""
    if text is None:
        return None
    folded = _SPACE.sub(" ", text.strip())
    return folded.title() if folded else None
