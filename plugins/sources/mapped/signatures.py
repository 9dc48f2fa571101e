"""Signed webhooks of a mapped source: the ``[sources.<name>.signature]`` table and the
check of a payload against it.

Reference: ``docs/sources/mapped.md``, "signed webhooks".  The building blocks (reading
and decoding the header, the HMAC, the constant-time comparison) are the connector kit's
(:mod:`carecrm.core.ingest.kit`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

import attrs

from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest import kit as kit
from carecrm.core.model.domain import RawPayload
from carecrm.plugins.sources.mapped.options import OptionReader

__all__ = ["SIGNATURE_SCHEMES", "SignatureRule", "signature_rule", "verify_signature"]

#: ``scheme`` option → :data:`carecrm.core.ingest.kit.HMAC_ALGORITHMS` name.
SIGNATURE_SCHEMES: dict[str, str] = {
    "hmac-sha256": "sha256",
    "hmac-sha1": "sha1",
}
_SIGNED_PARTS = re.compile(r"\{(body|timestamp|url)\}")
_SIGNATURE_OPTIONS: frozenset[str] = frozenset(
    {
        "scheme",
        "header",
        "encoding",
        "prefix",
        "signed_payload",
        "timestamp_header",
        "timestamp_unit",
        "max_age_seconds",
    }
)


@attrs.frozen
class SignatureRule:
    """The ``[sources.<name>.signature]`` table: how the vendor signs its webhooks.

    :ivar scheme: ``hmac-sha256`` or ``hmac-sha1``.
    :ivar header: the header carrying the signature.
    :ivar encoding: ``hex`` or ``base64`` (of the raw digest).
    :ivar prefix: stripped from the header value (``sha256=``).
    :ivar parts: the signed string as literal and placeholder parts (``{body}``,
        ``{timestamp}``, ``{url}``).
    :ivar timestamp_header: the header carrying the signing time, or None.
    :ivar timestamp_unit: ``s`` or ``ms`` (Webflow's ``x-webflow-timestamp`` is ms).
    :ivar max_age_seconds: reject signatures older (or further in the future) than this,
        measured against the payload's ``received_at``; None means no limit.
    """

    scheme: str
    header: str
    encoding: str
    prefix: str
    parts: tuple[tuple[str, str], ...]
    timestamp_header: str | None
    timestamp_unit: str
    max_age_seconds: float | None


def signature_rule(source: str, table: Any) -> SignatureRule | None:
    """The signature rule of the ``[sources.<source>.signature]`` table, or None without one.

    :raises ConfigError: naming the key at fault (unknown, missing, of the wrong type or
        value; a ``signed_payload`` with another placeholder; ``{timestamp}`` or
        ``max_age_seconds`` without ``timestamp_header``).
    """
    if table is None:
        return None
    reader = OptionReader(source, {})
    if not isinstance(table, Mapping):
        raise reader.error("signature", "must be a table")
    sub = OptionReader(source, table, prefix="signature.")
    error = sub.error
    unknown = sorted(set(table) - _SIGNATURE_OPTIONS)
    if unknown:
        raise error(unknown[0], f"unknown; known: {', '.join(sorted(_SIGNATURE_OPTIONS))}")
    for required in ("scheme", "header"):
        if not table.get(required):
            raise error(required, "is required")
    scheme = sub.text("scheme", choices=SIGNATURE_SCHEMES) or ""
    header = sub.text("header") or ""
    encoding = sub.text("encoding", "hex", choices=("hex", "base64")) or "hex"
    prefix = sub.text("prefix", "") or ""
    template = sub.text("signed_payload", "{body}") or "{body}"
    timestamp_header = sub.text("timestamp_header")
    unit = sub.text("timestamp_unit", "s", choices=("s", "ms")) or "s"
    parts: list[tuple[str, str]] = []
    position = 0
    for match in _SIGNED_PARTS.finditer(template):
        if match.start() > position:
            parts.append(("text", template[position : match.start()]))
        parts.append(("part", match.group(1)))
        position = match.end()
    if position < len(template):
        parts.append(("text", template[position:]))
    if any(kind == "text" and ("{" in t or "}" in t) for kind, t in parts):
        raise error("signed_payload", "placeholders are {body}, {timestamp} and {url}")
    max_age = table.get("max_age_seconds")
    if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age <= 0):
        raise error("max_age_seconds", "must be a positive number of seconds")
    uses_timestamp = any(p == ("part", "timestamp") for p in parts)
    if (uses_timestamp or max_age is not None) and not timestamp_header:
        raise error("timestamp_header", "is required with {timestamp} or max_age_seconds")
    return SignatureRule(
        scheme=scheme,
        header=header,
        encoding=encoding,
        prefix=prefix,
        parts=tuple(parts),
        timestamp_header=timestamp_header,
        timestamp_unit=unit,
        max_age_seconds=None if max_age is None else float(max_age),
    )


def verify_signature(source: str, rule: SignatureRule, payload: RawPayload, secret: str) -> None:
    """Check the vendor's HMAC signature of a payload by ``rule``.

    The digest (HMAC-SHA256 or HMAC-SHA1 keyed with ``secret``, UTF-8) is computed over
    the configured ``signed_payload`` (default the raw body bytes; Webflow:
    ``"{timestamp}:{body}"`` with ``x-webflow-timestamp`` in milliseconds,
    https://developers.webflow.com/data/docs/working-with-webhooks; Typeform: the body,
    base64 with ``sha256=``, https://www.typeform.com/developers/webhooks/secure-your-webhooks/)
    and compared in constant time (:func:`carecrm.core.ingest.kit.signatures_match`).

    :param source: the source's name, for errors.
    :param payload: the payload as received (headers looked up case-insensitively).
    :param secret: the ``secret`` of ``[sources.<name>]``.
    :raises ValidationFailed: ``(source, "payload", <header name>, reason)`` when the
        signature or timestamp header is missing, malformed, wrong or too old.
    """

    def fail(header: str, reason: str) -> ValidationFailed:
        return ValidationFailed(source, "payload", header, reason)

    encoding: Literal["hex", "base64"] = "hex" if rule.encoding == "hex" else "base64"
    given = kit.signature_from_header(payload, source=source, header=rule.header, encoding=encoding, prefix=rule.prefix)

    timestamp = ""
    if rule.timestamp_header:
        stamp = payload.header(rule.timestamp_header)
        if stamp is None or not stamp.strip():
            raise fail(rule.timestamp_header, "timestamp header is missing")
        timestamp = stamp.strip()
        if not (timestamp.isascii() and timestamp.isdigit()):
            raise fail(rule.timestamp_header, "timestamp is not a whole number")
        if rule.max_age_seconds is not None:
            seconds = int(timestamp) / (1000 if rule.timestamp_unit == "ms" else 1)
            kit.require_fresh(
                seconds, payload, source=source, field=rule.timestamp_header, max_age_seconds=rule.max_age_seconds
            )

    try:
        # a URL Python read from non-UTF-8 bytes holds surrogate escapes: give back its bytes
        url = (payload.url or "").encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        raise fail("url", "the request URL is not valid text (a lone surrogate)") from None
    values = {"body": payload.body, "timestamp": timestamp.encode(), "url": url}
    message = b"".join(values[t] if kind == "part" else t.encode() for kind, t in rule.parts)
    expected = kit.hmac_digest(secret, message, SIGNATURE_SCHEMES[rule.scheme])
    if not kit.signatures_match(expected, given):
        raise fail(rule.header, "signature does not match")
