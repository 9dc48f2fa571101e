"""Decoding a mapped source's payload: JSON, form encoding or multipart form data.

Each decoder refuses the payload as a whole (:class:`ValidationFailed` naming the source,
``payload`` and the field) when it cannot be read; records are picked from the decoded
value afterwards.
"""

from __future__ import annotations

import email.parser
import email.policy
import json
import urllib.parse
from collections.abc import Iterable, Mapping
from typing import Any

from carecrm.core.errors import ValidationFailed
from carecrm.core.model.domain import RawPayload

__all__ = ["decode", "media_type"]

_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")


def decode(source: str, payload: RawPayload, fmt: str | None, json_strings: tuple[str, ...]) -> Any:
    """The payload as Python data: a JSON value, or a dict of form fields.

    :param source: the source's name, for errors.
    :param fmt: the ``format`` option (``json`` or ``form``); None: the content type decides
        (form encoding or multipart → ``form``, anything else → ``json``).
    :param json_strings: form fields whose values are JSON text, decoded in place
        (Unbounce's ``data.json``).
    :raises ValidationFailed: ``(source, "payload", "body" or the JSON string's key,
        reason)`` when the payload cannot be read so.
    """
    media, params = media_type(payload.content_type)
    fmt = fmt or ("form" if media in _FORM_TYPES else "json")
    if not payload.body.strip():
        raise ValidationFailed(source, "payload", "body", "empty body")
    if fmt == "json":
        data = _decode_json(source, payload.body, "body")
    elif media == "multipart/form-data":
        data = _decode_multipart(source, payload.body, payload.content_type, params)
    else:
        data = _decode_urlencoded(source, payload.body, params.get("charset", "utf-8"))
    if json_strings and isinstance(data, dict):
        for key in json_strings:
            value = data.get(key)
            if isinstance(value, str):
                data[key] = _decode_json(source, value.encode("utf-8"), key)
    return data


def _no_constants(_name: str) -> Any:
    raise ValueError("NaN and Infinity are not JSON")


#: One decoder for every payload (``json.loads`` with an option builds a new one per call).
_JSON = json.JSONDecoder(parse_constant=_no_constants)


def _decode_json(source: str, raw: bytes, field: str) -> Any:
    """JSON (RFC 8259); ``NaN`` and ``Infinity``, which Python would accept, are refused.
    The bytes are read as ``json.loads`` reads them (UTF-8, -16 or -32 by RFC 8259's
    detection, a UTF-8 byte-order mark skipped)."""
    try:
        return _JSON.decode(raw.decode(json.detect_encoding(raw), "surrogatepass"))
    except json.JSONDecodeError as exc:
        reason = f"not valid JSON ({exc.msg}: line {exc.lineno} column {exc.colno})"
    except (UnicodeDecodeError, ValueError):
        reason = "not valid JSON"
    raise ValidationFailed(source, "payload", field, reason)


def _decode_urlencoded(source: str, raw: bytes, charset: str) -> dict[str, Any]:
    """``application/x-www-form-urlencoded``: single values as strings, repeated keys
    as lists (WHATWG URL standard, "application/x-www-form-urlencoded parsing").

    Empty segments (``a=1&&b=2``, a trailing ``&``) and a trailing line break are
    ignored like browsers do; a segment without ``=`` (a JSON or text body) is refused.
    A byte-order mark at the start (some exporters write one) is skipped.
    """
    try:
        text = raw.decode(charset).rstrip("\r\n")
        # a UTF-8 byte-order mark is not part of the first field's name (else "\ufeffid"
        # would be dropped as an unknown field and the record id lost)
        text = text.removeprefix("\ufeff")
        segments = [segment for segment in text.split("&") if segment]
        if any("=" not in segment for segment in segments):
            raise ValidationFailed(source, "payload", "body", "not form encoding (a field lacks '=')")
        pairs = urllib.parse.parse_qsl("&".join(segments), keep_blank_values=True, encoding=charset, errors="strict")
    except (UnicodeDecodeError, LookupError):
        raise ValidationFailed(source, "payload", "body", f"not {charset} form encoding") from None
    return _collect(pairs)


def _decode_multipart(source: str, raw: bytes, content_type: str, params: Mapping[str, str]) -> dict[str, Any]:
    """``multipart/form-data`` (RFC 7578), read with the stdlib ``email`` parser.

    File parts are kept as ``None`` (their name only): uploads (ID documents) are
    never read (jotform expected.md).  LF and CRLF line endings are both accepted.
    """
    if not params.get("boundary"):
        raise ValidationFailed(source, "payload", "body", "multipart content type without a boundary")
    header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + raw)
    if not message.is_multipart() or any(
        type(d).__name__ in ("StartBoundaryNotFoundDefect", "NoBoundaryInMultipartDefect") for d in message.defects
    ):
        raise ValidationFailed(source, "payload", "body", "not multipart/form-data with that boundary")
    pairs: list[tuple[str, Any]] = []
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if not isinstance(name, str):
            continue
        if part.get_filename() is not None:
            pairs.append((name, None))
            continue
        data = part.get_payload(decode=True)
        charset = part.get_content_charset() or "utf-8"
        try:
            pairs.append((name, data.decode(charset).removeprefix("\ufeff") if isinstance(data, bytes) else ""))
        except (UnicodeDecodeError, LookupError):
            raise ValidationFailed(source, "payload", name, f"part is not {charset} text") from None
    return _collect(pairs)


def media_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type into the lowercase media type and its parameters."""
    media, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for item in rest.split(";"):
        key, sep, val = item.partition("=")
        if sep:
            params[key.strip().lower()] = val.strip().strip('"')
    return media.strip().lower(), params


def _collect(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Form fields as a dict: a single value as is, a repeated key as a list."""
    out: dict[str, Any] = {}
    repeated: set[str] = set()
    for key, value in pairs:
        if key in repeated:
            out[key].append(value)
        elif key in out:
            out[key] = [out[key], value]
            repeated.add(key)
        else:
            out[key] = value
    return out
