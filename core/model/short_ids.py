"""Short ids: the last hex digits of a UUID, shown in tables and accepted wherever an id is.

carecrm's ids are UUIDv7 (:mod:`carecrm.core.model.ids`): 48 bits of Unix milliseconds, then
random bits.  Ids made in the same millisecond (one ingest batch on two processes, or the
same minute for the first 8 hex digits) share their *front*, so a prefix in the manner of
git's short SHA would not tell them apart.  The *tail* is random: the short form is the
last :data:`SHORT_LENGTH` hex digits (``01a23bf5-f261-76f2-b703-7ca693a635aa`` →
``93a635aa``: 32 random bits).  In a practice of n records of one kind, a given short id
names two records with probability about n / 2³² (one in 430,000 for 10,000 contacts);
then the look-up says so and asks for more digits, up to the whole id.

Any suffix of at least :data:`SHORT_LENGTH` hex digits is accepted (hyphens ignored, case
ignored), so a longer tail copied from ``--full-ids`` output works too.  Resolving a
suffix reads ids only, never personal data.  It pages through the ids of that kind (the
storage contract has no suffix index), which is quick for a practice's tens of
thousands of records.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING

from carecrm.core.errors import CareCRMError, NotFound

if TYPE_CHECKING:
    from carecrm.core.storage.contract import UnitOfWork

#: Hex digits of the short form shown in tables.
SHORT_LENGTH = 8

_HEX = re.compile(r"[0-9a-f]+")


class AmbiguousId(CareCRMError):
    """A short id names several records of one kind.

    The message lists their whole ids (ids are not personal data) and asks for more digits.

    :param kind: what was looked up (``"contact"``, ``"task"``, ``"inbox entry"``).
    :param suffix: the hex digits given.
    :param matches: the ids that end with them.
    """

    def __init__(self, kind: str, suffix: str, matches: Iterable[uuid.UUID]) -> None:
        self.kind = kind
        self.suffix = suffix
        self.matches = sorted(matches)
        listed = ", ".join(str(m) for m in self.matches)
        super().__init__(
            f"the short id {suffix!r} names {len(self.matches)} {kind} records: "
            f"give more of its digits or the whole id (one of {listed})"
        )


def short_id(value: uuid.UUID | str) -> str:
    """The short form of an id: its last :data:`SHORT_LENGTH` hex digits, lower case.

    :param value: a :class:`uuid.UUID` or its text.
    :raises ValueError: if ``value`` is text that is not a UUID.
    """
    hex_digits = value.hex if isinstance(value, uuid.UUID) else uuid.UUID(str(value)).hex
    return hex_digits[-SHORT_LENGTH:]


def id_suffix(text: str) -> str | None:
    """The hex digits of ``text`` if it can be a short id, else None.

    A short id is :data:`SHORT_LENGTH` to 31 hex digits (32 would be a whole UUID),
    hyphens ignored, case ignored: ``93A635AA``, ``b703-7ca693a635aa``.

    :returns: the digits, lower case and without hyphens; None otherwise.
    """
    digits = text.strip().lower().replace("-", "")
    if SHORT_LENGTH <= len(digits) < 32 and _HEX.fullmatch(digits):
        return digits
    return None


def looks_like_phone(suffix: str) -> bool:
    """True when a short id's digits are all decimal (``31255501``): such text may be a
    phone number too, which a REF reads first."""
    return suffix.isdigit()


def matching(ids: Iterable[uuid.UUID], suffix: str) -> list[uuid.UUID]:
    """The ids among ``ids`` whose hex digits end with ``suffix`` (as from :func:`id_suffix`)."""
    return [i for i in ids if i.hex.endswith(suffix)]


def one_match(kind: str, suffix: str, ids: Iterable[uuid.UUID]) -> uuid.UUID:
    """The one id among ``ids`` that ends with ``suffix``.

    :param kind: what is looked up, for messages (``"contact"``, ``"task"``).
    :raises NotFound: if none does (the message quotes the short id, which is not personal).
    :raises AmbiguousId: if several do.
    """
    found = matching(ids, suffix)
    if not found:
        raise NotFound(f"no {kind} has an id ending in {suffix!r}")
    if len(found) > 1:
        raise AmbiguousId(kind, suffix, found)
    return found[0]


#: The kinds of record with short ids, and how messages name them.
KINDS: dict[str, str] = {"contact": "contact", "task": "task", "inbox": "inbox entry"}


def ids_of(uow: UnitOfWork, kind: str) -> Iterator[uuid.UUID]:
    """Every id of one kind of record, read page by page through the storage contract
    (ids only: nothing is decrypted, so nothing is audited).

    :param kind: ``"contact"`` (active contacts: merged and erased ones are never
        selected), ``"task"`` or ``"inbox"`` (one of :data:`KINDS`).
    :raises ValueError: for another kind.
    """
    if kind == "contact":
        from carecrm.core.analytics.criteria import And
        from carecrm.core.storage.capabilities import queries

        after: uuid.UUID | None = None
        while True:
            page = queries(uow).select_ids(And(), limit=1000, after=after)
            yield from page
            if len(page) < 1000:
                return
            after = page[-1]
    elif kind == "task":
        yield from (r.id for r in uow.tasks.list())
    elif kind == "inbox":
        yield from (r.id for r in uow.inbox.list(limit=max(1, uow.inbox.count())))
    else:
        raise ValueError(f"no short ids for {kind!r}; known: {', '.join(KINDS)}")


def resolve(uow: UnitOfWork, kind: str, suffix: str) -> uuid.UUID:
    """The one id of ``kind`` that ends with ``suffix`` (as from :func:`id_suffix`).

    :raises ValueError: for an unknown kind.
    :raises NotFound: if none does.
    :raises AmbiguousId: if several do.
    """
    if kind not in KINDS:
        raise ValueError(f"no short ids for {kind!r}; known: {', '.join(KINDS)}")
    return one_match(KINDS[kind], suffix, ids_of(uow, kind))
