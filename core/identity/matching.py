"""Contact matching: the shapes passed to and returned by ``carecrm_match_contact``."""

from __future__ import annotations

import uuid

import attrs


@attrs.frozen(kw_only=True)
class MatchCandidate:
    """A lead event's identities, normalized and blind-indexed, for matching.

    :ivar identity_keys: ``(kind, blind index)`` pairs, strongest first (external ids,
        then emails, then phones).
    :ivar first_name: the given name (plain text, never logged); ``name_confident`` is
        False for caller-ID text, generated chat names and placeholders.
    :ivar name_bidx: blind index of the folded full name (None when unknown).
    :ivar source: the source the event came from.
    """

    identity_keys: tuple[tuple[str, str], ...]
    first_name: str | None = attrs.field(default=None, repr=False)
    last_name: str | None = attrs.field(default=None, repr=False)
    name_confident: bool = True
    name_bidx: str | None = attrs.field(default=None, repr=False)
    source: str = ""


@attrs.frozen(kw_only=True)
class MatchResult:
    """The answer of a matcher.

    :ivar contact_id: the stored contact the event joins, or None for a new contact.
    :ivar review: ``(contact_id or None, reason)`` pairs to send to review with the
        resulting contact (None stands for the new contact about to be made).
    :ivar rule: which rule decided (``email``, ``phone``, ``external``, ``new``,
        ``names_disagree``), for the audit trail.
    """

    contact_id: uuid.UUID | None
    review: tuple[tuple[uuid.UUID, str], ...] = ()
    rule: str = "new"
