"""Pointer-only vendors: a webhook that names a record instead of carrying it.

Meta Lead Ads' page ``leadgen`` webhook and HubSpot's ``contact.creation`` notification
carry ids only; the lead itself must be read from the vendor's API.  Their connectors'
:meth:`~carecrm.core.ingest.connectors.SourceConnector.parse` yields a :class:`Pointer`
for each record named, and the inbox keeps the payload as ``pending`` with what must be
fetched (``carecrm inbox list --status pending``).  The fetched API object (from a
:class:`Fetcher`, an HTTP client with the practice's token, or from a file: ``carecrm
inbox complete ID FILE``) completes the entry through the connector's
:meth:`CompletesPointers.complete`, which yields the lead events.

A pointer is done when the interaction its completion yields is stored: the pointer
carries that interaction's idempotency key (:attr:`Pointer.key`), so a re-delivered
notification of a lead already completed is processed at once, and an entry naming
several leads stays pending until each is completed.
"""

from __future__ import annotations

import abc
from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import attrs

from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import LeadEvent, RawPayload

__all__ = ["CompletesPointers", "Fetcher", "Pointer"]


def _text(value: str) -> str:
    if not isinstance(value, str) or not value:
        raise TypeError("Pointer: ref, fetch and key are non-empty strings")
    return value


@attrs.frozen
class Pointer:
    """One record a pointer payload names, to be fetched from the vendor's API.

    Every part is shown and stored in clear (the inbox entry's reason), so it holds vendor
    ids only, never personal data.

    :param ref: the vendor's id of the record (Meta's ``leadgen_id`` ``"123123123123"``,
        HubSpot's ``"4737818/123"`` portal and contact id).
    :param fetch: what to fetch, in words an operator can act on (``"Graph API GET
        /123123123123 (lead: field_data, custom_disclaimer_responses)"``).
    :param key: the idempotency key of the interaction that completing the pointer
        yields (the pointer is done once that interaction is stored).
    :raises TypeError: when a part is not a non-empty string.
    """

    ref: str = attrs.field(converter=_text)
    fetch: str = attrs.field(converter=_text)
    key: str = attrs.field(converter=_text)


@runtime_checkable
class Fetcher(Protocol):
    """Reads the record a :class:`Pointer` names from the vendor's API.

    An implementation is an HTTP client holding the practice's access token (Meta's page
    token, HubSpot's private-app token); none ships yet, and tests never call a network.
    """

    def fetch(self, source: str, pointer: Pointer) -> RawPayload:
        """The vendor's API response for ``pointer`` (the body as the API returned it).

        :param source: the source's name in config (``meta_lead_ads``).
        :raises CareCRMError: when the record cannot be read (the entry stays pending).
        """
        ...


class CompletesPointers(abc.ABC):
    """Mixin of a :class:`~carecrm.core.ingest.connectors.SourceConnector` whose ``parse``
    yields :class:`Pointer` items: it completes them from the fetched API objects."""

    def pointers(self, payload: RawPayload) -> list[Pointer]:
        """The pointers of a stored pointer payload (its ``parse`` again, pointers only).

        :raises ValidationFailed: when the payload cannot be read.
        """
        parse = getattr(self, "parse")  # noqa: B009 - provided by SourceConnector
        return [item for item in parse(payload) if isinstance(item, Pointer)]

    @abc.abstractmethod
    def complete(self, pointer_payload: RawPayload, fetched: Sequence[RawPayload]) -> Iterator[LeadEvent | Rejected]:
        """The lead events of the records ``pointer_payload`` names, from the vendor's API
        objects in ``fetched`` (one or more responses; several may concern one record,
        such as Meta's lead and its ``custom_disclaimer_responses`` read separately).

        Yield a :class:`~carecrm.core.ingest.connectors.Rejected` for a fetched object that
        cannot be accepted (one the payload does not point to, one without an identity).

        :raises ValidationFailed: when a fetched body cannot be read at all.
        """
