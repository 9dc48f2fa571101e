"""Text and JSON values from outside: what is refused, what is cleaned, what is printed.

Vendors' payloads, files and command lines carry text that Python can hold but a
database, a JSON encoder or a terminal cannot: lone UTF-16 surrogates (half an emoji,
``"\\ud83d"``, which JSON allows and UTF-8 forbids; also what Python makes of the bytes of
a non-UTF-8 file name or argument), NUL characters (PostgreSQL refuses them in text and
JSON; C code truncates at them), other control characters, integers wider than 64 bits
(MongoDB cannot store them), ``1e999`` (read as infinity, which JSON cannot write back) and
values nested deeper than a document may be.  The rules, one per kind of field:

* **Refused** (:func:`checked_text`): text that identifies a person or a record: names,
  external ids, idempotency keys, kinds and channels.  Altering a name silently would
  address a patient by a name they never gave and break look-up by name; altering an id
  breaks idempotency.  A lone surrogate, a NUL or another control character refuses the
  value (the record is quarantined naming the field); tab, line breaks and the Unicode
  line/paragraph separators in a name are folded into one space (names pasted from a
  spreadsheet), since they carry no letter.
* **Cleaned** (:func:`cleaned_text`, :func:`cleaned_json`): free text and vendors'
  technical values: the inquiry text, touchpoint (UTM) values, interaction attributes and
  consent evidence.  Losing a patient's message because of half an emoji loses a lead;
  each character that cannot be stored becomes U+FFFD (the replacement character), so
  that a reader sees that something was there, and tab and line breaks are kept.  In JSON
  values integers outside 64 bits become their exact decimal text, non-finite numbers
  become null, and a value nested deeper than :data:`MAX_DEPTH` is refused (the caller
  drops that attribute with a warning).
* **Printed** (:func:`printable`): what goes into messages, logs and the inbox's clear
  reason column (record refs, field names, file names): every character that is not
  safely printable is shown as a ``\\uXXXX`` escape, and the text is shortened.

Nothing here ever puts the offending value into an error message.
"""

from __future__ import annotations

import math
import re
from typing import Any

#: How deeply a cleaned JSON value may nest (MongoDB allows 100 levels per document and
#: attributes sit two levels down; real vendors' attributes nest a few levels).
MAX_DEPTH = 32

_INT64 = 2**63
_SURROGATE = re.compile("[\ud800-\udfff]")
# C0 controls but tab, LF and CR; DEL; C1 controls
_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_BAD_IN_FREE_TEXT = re.compile("[\ud800-\udfff\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")
_NAME_SPACE = re.compile("[\t\n\r\u2028\u2029\x85]+")
# not printable in a message: controls, surrogates, line/paragraph separators, bidi controls
_UNPRINTABLE = re.compile("[\x00-\x1f\x7f-\x9f\ud800-\udfff\u2028\u2029\u202a-\u202e\u2066-\u2069\ufeff]")


class InvalidText(ValueError):
    """A value cannot be stored; ``reason`` says why in words, never quoting the value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be stored as it is, or None when it can.

    :returns: ``"contains a lone surrogate (broken Unicode)"``, ``"contains a NUL
        character"``, ``"contains a control character"`` or None.  Tab, LF and CR are fine.
    """
    if _BAD_IN_FREE_TEXT.search(text) is None:
        return None  # one pass for the usual, clean text
    if _SURROGATE.search(text):
        return "contains a lone surrogate (broken Unicode)"
    if "\x00" in text:
        return "contains a NUL character"
    if _CONTROL.search(text):
        return "contains a control character"
    return None


def checked_text(text: str, *, fold_space: bool = False) -> str:
    """``text`` unchanged when it can be stored, for fields that are refused, not cleaned.

    :param fold_space: fold tab, line breaks and the Unicode line/paragraph separators
        into one space first (names).
    :returns: the text (folded when asked).
    :raises InvalidText: for a lone surrogate, a NUL or another control character.
    """
    if fold_space:
        text = _NAME_SPACE.sub(" ", text)
    problem = text_problem(text)
    if problem is not None:
        raise InvalidText(problem)
    return text


def cleaned_text(text: str) -> str:
    """``text`` with every character that cannot be stored replaced by U+FFFD: lone
    surrogates, NUL and control characters other than tab, LF and CR."""
    if _BAD_IN_FREE_TEXT.search(text) is None:
        return text
    return _BAD_IN_FREE_TEXT.sub("\ufffd", text)


def cleaned_json(value: Any, *, depth: int = 0) -> Any:
    """A JSON-like value (dicts, lists, strings, numbers, booleans, None) that every
    backend can store: strings and keys through :func:`cleaned_text`, integers outside
    the signed 64-bit range as their decimal text, NaN and infinities as None.  Values of
    other types (dates, ...) are returned as they are, and so is a value that needs no
    change (the same object).

    :raises InvalidText: when the value nests deeper than :data:`MAX_DEPTH`.
    """
    if depth > MAX_DEPTH:
        raise InvalidText(f"nested deeper than {MAX_DEPTH} levels")
    if isinstance(value, str):
        return cleaned_text(value)
    if isinstance(value, bool) or value is None:
        return value
    if isinstance(value, int):
        return value if -_INT64 <= value < _INT64 else str(value)
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        items = [
            (cleaned_text(k) if isinstance(k, str) else k, cleaned_json(v, depth=depth + 1)) for k, v in value.items()
        ]
        if all(k2 is k and v2 is v for (k2, v2), (k, v) in zip(items, value.items(), strict=True)):
            return value
        return dict(items)
    if isinstance(value, list | tuple):
        out = [cleaned_json(v, depth=depth + 1) for v in value]
        if isinstance(value, list) and all(a is b for a, b in zip(out, value, strict=True)):
            return value
        return out
    return value


def storable_as_is(texts: list[str]) -> bool:
    """True when no text of ``texts`` holds a character that :func:`checked_text` refuses
    or :func:`cleaned_text` replaces (one pass over them all: the fast path of screening
    a clean record)."""
    return _BAD_IN_FREE_TEXT.search("".join(texts)) is None


def folds(texts: list[str]) -> bool:
    """True when :func:`checked_text` with ``fold_space`` would change any of ``texts``."""
    return _NAME_SPACE.search("".join(texts)) is not None


def json_as_is(value: Any, texts: list[str], *, depth: int = 0) -> bool:
    """True when :func:`cleaned_json` would return ``value`` itself (no change, no error),
    provided the strings it collects into ``texts`` (keys and values) are
    :func:`storable_as_is`; False when it would change or refuse something (then call
    :func:`cleaned_json`)."""
    if depth > MAX_DEPTH:
        return False
    if isinstance(value, str):
        texts.append(value)
        return True
    if isinstance(value, bool) or value is None:
        return True
    if isinstance(value, int):
        return -_INT64 <= value < _INT64
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str):
                texts.append(key)
            if not json_as_is(item, texts, depth=depth + 1):
                return False
        return True
    if isinstance(value, tuple):
        return False  # cleaned_json returns a list for a tuple
    if isinstance(value, list):
        return all(json_as_is(item, texts, depth=depth + 1) for item in value)
    return True


def printable(text: str | None, *, limit: int = 80) -> str:
    """``text`` safe to print in a message, a log line or a clear column: characters that
    are not safely printable (controls, lone surrogates, line separators, bidirectional
    controls) as ``\\uXXXX`` escapes, then shortened to ``limit`` characters with ``…``.
    None gives ``""``."""
    if not text:
        return ""
    out = _UNPRINTABLE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return out if len(out) <= limit else out[: limit - 1] + "…"
