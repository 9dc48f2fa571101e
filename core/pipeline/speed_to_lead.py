"""Speed to lead (:class:`SpeedToLead`): the time from a lead's first inbound interaction to
the practice's first outbound call, SMS or email at or after it, counted in the business
hours of the contact's location (:func:`carecrm.core.pipeline.business_hours.business_seconds_between`),
from clear timeline fields only (nothing is decrypted, so nothing is audited).  Which kinds
count is :data:`SPEED_TO_LEAD_INBOUND_KINDS` and :data:`SPEED_TO_LEAD_OUTBOUND_KINDS`
(``docs/coordination.md``).
"""

from __future__ import annotations

import statistics
import uuid
from collections.abc import Iterator, Mapping
from datetime import datetime

import attrs

from carecrm.core.config import Settings
from carecrm.core.model.records import ContactRecord
from carecrm.core.model.vocab import INBOUND_KINDS
from carecrm.core.pipeline.business_hours import business_seconds_between, location_named
from carecrm.core.storage.capabilities import queries
from carecrm.core.storage.contract import StorageBackend, UnitOfWork

#: Inbound kinds that start the speed-to-lead clock (with ``direction`` ``inbound``): a
#: person reached out (a form, a chat, a text, a call even when missed, a referral, a
#: requested appointment).  A walk-in is answered in person, so it starts no clock.
SPEED_TO_LEAD_INBOUND_KINDS: frozenset[str] = (INBOUND_KINDS - {"walk_in.visited"}) | {
    "call.completed",
    "call.missed",
    "call.voicemail",
    "appointment.requested",
}

#: Outbound kinds that stop it (with ``direction`` ``outbound``): a call attempt (answered,
#: missed or a voicemail left), a text, an email sent (``email.delivered`` too, for email
#: platforms whose webhook sends no "processed" event).
SPEED_TO_LEAD_OUTBOUND_KINDS: frozenset[str] = frozenset(
    {"call.completed", "call.missed", "call.voicemail", "sms.sent", "sms.delivered", "email.sent", "email.delivered"}
)


@attrs.frozen(kw_only=True)
class FirstResponse:
    """A lead's speed to lead, explained.

    ``first_inbound_at`` / ``first_outbound_at``: UTC (the latter None while nobody has
    answered); ``business_seconds``: open seconds of ``location`` between them (None while
    unanswered; wall-clock seconds when the location has no business hours);
    ``wall_clock_seconds``: elapsed seconds (None while unanswered).
    """

    contact_id: uuid.UUID
    location: str
    first_inbound_at: datetime
    first_outbound_at: datetime | None = None
    business_seconds: float | None = None
    wall_clock_seconds: float | None = None


@attrs.frozen(kw_only=True)
class SpeedToLeadSummary:
    """Speed to lead over a group of contacts.

    ``median_seconds``: median business seconds of those answered (None when none was);
    ``measured``: how many were answered; ``awaiting``: how many reached out and were not
    answered yet.
    """

    median_seconds: float | None = None
    measured: int = 0
    awaiting: int = 0

    @classmethod
    def of(cls, values: list[float | None]) -> SpeedToLeadSummary:
        """The summary of per-contact values (None: awaiting a first response)."""
        answered = [v for v in values if v is not None]
        return cls(
            median_seconds=statistics.median(answered) if answered else None,
            measured=len(answered),
            awaiting=len(values) - len(answered),
        )


class SpeedToLead:
    """The speed-to-lead figures of one practice: per contact, per group of contacts read
    in a caller's unit of work (the pipeline report), and summarized.

    Holds no state of its own: the facade builds it per use.

    :param storage: the backend (contacts and their timelines' clear fields).
    :param settings: the practice's locations (time zones, business hours) and pipeline
        (its stages, for :meth:`speed_to_lead_summary`).
    """

    def __init__(self, *, storage: StorageBackend, settings: Settings) -> None:
        self.storage = storage
        self.settings = settings

    def first_response(self, contact_id: uuid.UUID) -> FirstResponse | None:
        """A contact's first inbound interaction, the practice's first outbound answer at or
        after it, and the time between them in business and wall-clock seconds.

        Read from clear timeline fields (kinds, directions, times): nothing is decrypted,
        so nothing is audited.

        :returns: None when the contact never reached out (no inbound interaction of
            :data:`SPEED_TO_LEAD_INBOUND_KINDS`).
        :raises NotFound: if the contact does not exist.
        """
        with self.storage.unit_of_work() as uow:
            rec = uow.contacts.get(contact_id)
            rows = queries(uow).first_responses(
                inbound_kinds=sorted(SPEED_TO_LEAD_INBOUND_KINDS),
                outbound_kinds=sorted(SPEED_TO_LEAD_OUTBOUND_KINDS),
                contact_ids=[rec.id],
            )
        if not rows:
            return None
        row = rows[0]
        location = location_named(self.settings.practice, rec.location)
        if row.first_outbound_at is None:
            return FirstResponse(contact_id=rec.id, location=location.name, first_inbound_at=row.first_inbound_at)
        return FirstResponse(
            contact_id=rec.id,
            location=location.name,
            first_inbound_at=row.first_inbound_at,
            first_outbound_at=row.first_outbound_at,
            business_seconds=business_seconds_between(row.first_inbound_at, row.first_outbound_at, location),
            wall_clock_seconds=(row.first_outbound_at - row.first_inbound_at).total_seconds(),
        )

    def speed_to_lead(self, contact_id: uuid.UUID) -> float | None:
        """Seconds of business hours (of the contact's location) from the contact's first
        inbound interaction to the first outbound call, SMS or email at or after it.

        :returns: seconds, or None when the contact never reached out or nobody answered yet.
        :raises NotFound: if the contact does not exist.
        """
        first = self.first_response(contact_id)
        return None if first is None else first.business_seconds

    def speed_to_lead_values(
        self, uow: UnitOfWork, locations: Mapping[uuid.UUID, str | None]
    ) -> dict[uuid.UUID, float | None]:
        """Speed to lead of the contacts in ``locations`` (contact id → its location name)
        that reached out, in one query inside ``uow``: business seconds, or None while
        awaiting a first response.  Contacts that never reached out are left out."""
        rows = queries(uow).first_responses(
            inbound_kinds=sorted(SPEED_TO_LEAD_INBOUND_KINDS),
            outbound_kinds=sorted(SPEED_TO_LEAD_OUTBOUND_KINDS),
        )
        out: dict[uuid.UUID, float | None] = {}
        for row in rows:
            if row.contact_id not in locations:
                continue
            if row.first_outbound_at is None:
                out[row.contact_id] = None
                continue
            location = location_named(self.settings.practice, locations[row.contact_id])
            out[row.contact_id] = business_seconds_between(row.first_inbound_at, row.first_outbound_at, location)
        return out

    def speed_to_lead_summary(self, *, stage: str | None = None) -> SpeedToLeadSummary:
        """Median speed to lead (business seconds) of the active contacts that reached out
        and were answered, with how many were answered and how many are still waiting.

        :param stage: only contacts now in this stage.
        :raises ValueError: for a stage the pipeline does not have (listing them).
        """
        stages = self.settings.pipeline.all_stages
        if stage is not None and stage not in stages:
            raise ValueError(f"stage: unknown stage {stage!r}; known: {', '.join(stages)}")
        with self.storage.unit_of_work() as uow:
            locations = {rec.id: rec.location for rec in _active_contacts(uow, stage)}
            values = self.speed_to_lead_values(uow, locations)
        return SpeedToLeadSummary.of(list(values.values()))


def _active_contacts(uow: UnitOfWork, stage: str | None = None) -> Iterator[ContactRecord]:
    """Every active contact (of ``stage`` when given), a page of 1,000 at a time."""
    after = None
    while True:
        page = uow.contacts.list(stage=stage, after=after, limit=1000)
        if not page:
            return
        yield from page
        after = page[-1].id


__all__ = [
    "SPEED_TO_LEAD_INBOUND_KINDS",
    "SPEED_TO_LEAD_OUTBOUND_KINDS",
    "FirstResponse",
    "SpeedToLead",
    "SpeedToLeadSummary",
]
