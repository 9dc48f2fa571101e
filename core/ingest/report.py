"""What an ingest run reports: the counts, and the records quarantined with their reasons
(source, record and field, never a value)."""

from __future__ import annotations

import uuid
import warnings

import attrs

from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.model.domain import LeadEvent
from carecrm.core.model.text import printable


def _printable(value: object) -> str:
    return printable(None if value is None else str(value), limit=120)


def _printable_opt(value: object) -> str | None:
    return None if value is None else printable(str(value), limit=200)


def _printable_reason(value: object) -> str:
    return printable(str(value), limit=1000)


@attrs.define
class Quarantined:
    """A record that was not accepted: where it came from and why (no personal data).

    :ivar source: the source's name; ``record``: the vendor's record id or ``#<index>``;
        ``field``: the field (or the step) at fault; ``reason``: why, never the value.
        All four are made printable (:func:`carecrm.core.model.text.printable`): a record id that
        holds a control character or a lone surrogate is shown escaped.
    :ivar inbox_id: the inbox entry of the payload, when it came through the inbox.
    :ivar payload: where the payload came from (the file it was read from), when known.
    :ivar index: the record's position among the items the connector read from that
        payload (0-based, as in ``#<index>`` refs), when the record is one of several;
        None for a refusal of the whole payload.
    :ivar cause: the exception that made the record fail, when it was not a refusal by
        rule (for ``--debug`` tracebacks; never shown otherwise, it may quote the value).
    """

    source: str = attrs.field(converter=_printable)
    record: str = attrs.field(converter=_printable)
    field: str = attrs.field(converter=_printable)
    reason: str = attrs.field(converter=_printable_reason)
    inbox_id: uuid.UUID | None = None
    payload: str | None = attrs.field(default=None, converter=_printable_opt)
    cause: BaseException | None = attrs.field(default=None, repr=False, eq=False)
    index: int | None = None

    def message(self, *, with_payload: bool = True) -> str:
        """``source: payload P: record R (#I in the payload): field 'F': reason`` (without
        ``payload P`` when it is unknown or ``with_payload`` is False: the inbox's clear
        reason column leaves the file name out, since the inbox entry is the payload and a
        file name can name the person; it is kept in the encrypted payload and shown by
        ``carecrm inbox show``).  The record's index within the payload is added when the
        record is named by the vendor's id (a ``#I`` ref is the index already)."""
        where = f"payload {self.payload}: " if with_payload and self.payload else ""
        at = f" (#{self.index} in the payload)" if self.index is not None and self.record != f"#{self.index}" else ""
        return f"{self.source}: {where}record {self.record}{at}: field {self.field!r}: {self.reason}"


def parsed_item(
    source: str, item: LeadEvent | Rejected | ValidationFailed, inbox_id: uuid.UUID | None
) -> LeadEvent | Quarantined:
    """What the ingest side makes of one item a connector's ``parse`` yielded: the lead
    event itself, or the quarantine entry of a refused record.

    A :class:`~carecrm.core.ingest.connectors.Rejected` ``(ref, field, reason)`` becomes
    ``Quarantined(source, ref, field, reason)``, ``source`` being the connector's name.  A
    :class:`ValidationFailed` yielded in its place (the form before :class:`Rejected`) gives
    the same entry from its own source, with a :class:`DeprecationWarning`.  Anything else
    is passed on as a lead event (and refused by
    :meth:`~carecrm.core.ingest.prepare.LeadPreparer.prepare` if it is not one).

    :param source: the source's name (``connector.name``).
    :param inbox_id: the inbox entry of the payload the item came from, when known.
    """
    if isinstance(item, Rejected):
        return Quarantined(source, item.ref, item.field, item.reason, inbox_id)
    if isinstance(item, ValidationFailed):
        warnings.warn(
            f"source {source!r}: a connector's parse() yielded a ValidationFailed for one record; "
            "yield carecrm.core.Rejected(ref, field, reason) instead (ValidationFailed values are deprecated)",
            DeprecationWarning,
            stacklevel=2,
        )
        return Quarantined(item.source, item.record, item.field, item.reason, inbox_id)
    return item


@attrs.define
class IngestReport:
    """What an ingest run did.

    :ivar payloads: payloads received; ``duplicate_payloads``: identical re-deliveries;
        ``empty_payloads``: payloads with no lead record (a vendor's other event types);
        ``purged_payloads``: processed payloads past the inbox retention, deleted.
    :ivar records: lead events seen; ``accepted``: events that stored something new;
        ``duplicates``: events whose every interaction was stored already.
    :ivar contacts_created, interactions_added: counts of new rows.
    :ivar interactions_removed: interactions deleted to be derived again (``inbox reprocess``).
    :ivar pending: payloads waiting on a fetch (pointer-only vendors).
    :ivar quarantined: records not accepted, with their reasons.
    :ivar warnings: identities dropped as invalid while the record still went in.
    :ivar dropped_fields: fields the connector dropped for data minimization, by name.
    :ivar review_pairs: pairs sent to review (possible duplicates / household members).
    """

    payloads: int = 0
    duplicate_payloads: int = 0
    empty_payloads: int = 0
    purged_payloads: int = 0
    records: int = 0
    accepted: int = 0
    duplicates: int = 0
    pending: int = 0
    contacts_created: int = 0
    interactions_added: int = 0
    interactions_removed: int = 0
    review_pairs: int = 0
    quarantined: list[Quarantined] = attrs.Factory(list)
    warnings: list[str] = attrs.Factory(list)
    dropped_fields: dict[str, int] = attrs.Factory(dict)
    contact_ids: list[uuid.UUID] = attrs.Factory(list)

    def merge(self, other: IngestReport) -> None:
        """Add another report's counts to this one."""
        for f in attrs.fields(IngestReport):
            a, b = getattr(self, f.name), getattr(other, f.name)
            if isinstance(a, int):
                setattr(self, f.name, a + b)
            elif isinstance(a, list):
                a.extend(b)
            elif isinstance(a, dict):
                for k, v in b.items():
                    a[k] = a.get(k, 0) + v
