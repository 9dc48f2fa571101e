"""Identifiers: time-sortable UUIDv7 (RFC 9562 §5.7) from the maintained ``uuid6`` package."""

from __future__ import annotations

import uuid

import uuid6


def new_id() -> uuid.UUID:
    """A new UUIDv7 as a plain :class:`uuid.UUID` (48-bit Unix-ms timestamp, then random bits).

    Its string and byte order follow creation time, so keyset pagination by id is time order.
    """
    return uuid.UUID(int=uuid6.uuid7().int)


def parse_id(text: str) -> uuid.UUID:
    """Parse a UUID given as text (with or without hyphens).

    :raises ValueError: if ``text`` is not a UUID.
    """
    return uuid.UUID(text.strip())
