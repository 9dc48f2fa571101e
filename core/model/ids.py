"""Identifiers: time-sortable UUIDv7 (RFC 9562 §5.7) from the maintained ``uuid6`` package."""

from __future__ import annotations

import uuid
from types import ModuleType

#: The ``uuid6`` module, imported on the first call of :func:`new_id`.
_uuid6: ModuleType | None = None


def new_id() -> uuid.UUID:
    """A new UUIDv7 as a plain :class:`uuid.UUID` (48-bit Unix-ms timestamp, then random bits).

    Its string and byte order follow creation time, so keyset pagination by id is time order.
    ``uuid6`` is imported on the first call (it reads package metadata when imported,
    which a read-only command such as a look-up need not pay for).
    """
    global _uuid6
    if _uuid6 is None:
        import uuid6

        _uuid6 = uuid6
    return uuid.UUID(int=_uuid6.uuid7().int)


def parse_id(text: str) -> uuid.UUID:
    """Parse a UUID given as text (with or without hyphens).

    :raises ValueError: if ``text`` is not a UUID.
    """
    return uuid.UUID(text.strip())
