"""Reading payload files for ``carecrm ingest``: paths, content types, headers.

A saved webhook body is ingested exactly as a live one would be: its bytes, the content
type the vendor would have sent, and (with ``--header`` / ``--url``) the request headers
and URL so a signed body can be verified.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from carecrm.core.model.domain import RawPayload


JSON = "application/json"
FORM = "application/x-www-form-urlencoded"
OCTET = "application/octet-stream"

#: Content types by file-name ending (longest ending wins).
SUFFIX_TYPES: dict[str, str] = {
    ".json": JSON,
    ".ndjson": "application/x-ndjson",
    ".jsonl": "application/x-ndjson",
    ".form.txt": FORM,
    ".form": FORM,
    ".query.txt": FORM,
    ".csv": "text/csv",
    ".xml": "application/xml",
    ".hl7": "x-application/hl7-v2+er7",
    ".vcf": "text/vcard",
    ".eml": "message/rfc822",
}

_FORM_LINE = re.compile(r"^[^=&\s]+=[^&\s]*(?:&[^=&\s]*=?[^&\s]*)*$")
_MULTIPART_FIRST = re.compile(rb"^--([^\r\n]{1,70})\r?\n")


def guess_content_type(name: str, body: bytes) -> str:
    """The content type a vendor would have sent with ``body``.

    By the file name first (``.json`` → JSON, ``.form.txt`` / ``.query.txt`` → form
    encoding, ``.csv``, ``.xml``, ``.hl7``, ``.vcf``); otherwise (``.txt``, ``.raw``, no
    extension, stdin) by looking at the bytes: a body that starts with a multipart
    boundary line followed by ``Content-Disposition: form-data`` is
    ``multipart/form-data`` with that boundary; one JSON document is JSON; one line of
    ``key=value&...`` pairs is form encoding; anything else is
    ``application/octet-stream``.
    """
    lower = name.lower()
    for suffix in sorted(SUFFIX_TYPES, key=len, reverse=True):
        if lower.endswith(suffix):
            return SUFFIX_TYPES[suffix]
    return sniff_content_type(body)


def sniff_content_type(body: bytes) -> str:
    """The content type of ``body`` judged from the bytes alone (see
    :func:`guess_content_type`)."""
    m = _MULTIPART_FIRST.match(body)
    if m and b"content-disposition: form-data" in body[:4096].lower():
        boundary = m.group(1).decode("latin-1").strip()
        return (
            f'multipart/form-data; boundary="{boundary}"'
            if " " in boundary
            else (f"multipart/form-data; boundary={boundary}")
        )
    stripped = body.strip()
    if stripped[:1] in (b"{", b"["):
        try:
            json.loads(stripped)
        except ValueError:
            pass
        else:
            return JSON
    try:
        line = stripped.decode("ascii")
    except UnicodeDecodeError:
        return OCTET
    if line and "\n" not in line and _FORM_LINE.match(line):
        return FORM
    return OCTET


def parse_header(value: str) -> tuple[str, str]:
    """``NAME:VALUE`` → ``(NAME, VALUE)`` (surrounding spaces trimmed).

    :raises ValueError: when there is no colon or the name is empty.
    """
    name, sep, rest = value.partition(":")
    if not sep or not name.strip():
        raise ValueError("expected NAME:VALUE, e.g. 'Typeform-Signature: sha256=...'")
    return name.strip(), rest.strip()


#: File-name endings that are notes and metadata kept beside saved payloads, never
#: payloads: Markdown and text notes, the corpus's ``*.meta.json`` and the contract
#: kit's ``*.expected.json``.  A folder's files with these endings are skipped; a file
#: named on the command line is read whatever its name.
NOT_PAYLOADS: tuple[str, ...] = (".md", ".markdown", ".rst", ".meta.json", ".expected.json")


def is_note(name: str) -> bool:
    """True for a file a folder's expansion skips (:data:`NOT_PAYLOADS`, or ``README``)."""
    lower = Path(name).name.lower()
    return lower.endswith(NOT_PAYLOADS) or lower.startswith("readme")


def expand_paths(paths: Sequence[str]) -> list[str]:
    """Files to read, in order: a file as given, a folder as every payload file inside it
    (recursively, sorted by path; hidden files and folders, and notes and metadata
    beside the payloads (:func:`is_note`) skipped), ``-`` as stdin.

    :raises FileNotFoundError: naming a path that does not exist.
    """
    out: list[str] = []
    for p in paths:
        if p == "-":
            out.append(p)
            continue
        path = Path(p)
        if path.is_dir():
            found = sorted(
                f
                for f in path.rglob("*")
                if f.is_file()
                and not any(part.startswith(".") for part in f.relative_to(path).parts)
                and not is_note(f.name)
            )
            out.extend(str(f) for f in found)
        elif path.exists():
            out.append(p)
        else:
            raise FileNotFoundError(p)
    return out


def read_payloads(
    files: Iterable[str],
    *,
    stdin: bytes | None,
    content_type: str | None,
    headers: dict[str, str],
    url: str | None,
) -> Iterator[RawPayload]:
    """One :class:`RawPayload` per file (``-`` is ``stdin``), read lazily so a large
    folder is never held in memory at once.

    :param content_type: the type for every file, or None to guess each one.
    :returns: payloads whose ``origin`` is the file's path as given (``stdin`` for ``-``),
        named in the messages of quarantined records.
    """
    from carecrm.core.model.domain import RawPayload

    for name in files:
        body = (stdin or b"") if name == "-" else Path(name).read_bytes()
        ctype = content_type or guess_content_type("" if name == "-" else name, body)
        origin = "stdin" if name == "-" else name
        yield RawPayload(body=body, content_type=ctype, headers=dict(headers), url=url, origin=origin)
