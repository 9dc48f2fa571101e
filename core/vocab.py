"""Settled vocabularies (decisions.md): interaction kinds, channels, channel groups,
conversion steps.  Plugins may add interaction kinds with :func:`register_kind`."""

from __future__ import annotations

import re

#: Built-in interaction kinds, dotted ``noun.event`` (decisions.md, "Interaction kinds").
INTERACTION_KINDS: frozenset[str] = frozenset(
    """
    form.submitted ad_lead.submitted chat.started chat.message_received chat.offline_message
    call.completed call.missed call.voicemail sms.received sms.sent sms.delivered sms.failed
    email.sent email.delivered email.deferred email.dropped email.opened email.clicked
    email.bounced email.complained email.unsubscribed
    appointment.requested appointment.booked appointment.rescheduled appointment.canceled
    appointment.reminded appointment.attended appointment.no_show
    treatment.accepted treatment.performed payment.received referral.received review.requested
    page.viewed ad.clicked note.added task.created task.completed walk_in.visited event.attended
    stage.changed consent.changed contacts.merged
    """.split()
)

#: How an interaction happened.
CHANNELS: frozenset[str] = frozenset(
    "web chat phone sms whatsapp email mail in_person ad_platform ehr referral".split()
)

#: Marketing channel groups that attribution credits (decisions.md).
CHANNEL_GROUPS: tuple[str, ...] = (
    "paid_search",
    "paid_social",
    "organic_search",
    "organic_social",
    "email",
    "referral_patient",
    "referral_physician",
    "local_listing",
    "display",
    "direct",
    "other",
)

#: Steps of the conversion ladder, in order.
CONVERSION_STEPS: tuple[str, ...] = (
    "lead",
    "consult_scheduled",
    "consult_attended",
    "booked_patient",
    "revenue",
    "returning_patient",
)

#: Kinds whose direction is inbound: a person reached out (speed-to-lead starts here).
INBOUND_KINDS: frozenset[str] = frozenset(
    {
        "form.submitted",
        "ad_lead.submitted",
        "chat.started",
        "chat.message_received",
        "chat.offline_message",
        "sms.received",
        "referral.received",
        "walk_in.visited",
    }
)

_KIND_RE = re.compile(r"^[a-z][a-z0-9_]*\.[a-z][a-z0-9_]*$")
_extra_kinds: set[str] = set()


def register_kind(kind: str) -> None:
    """Add a plugin's interaction kind to the vocabulary.

    :param kind: a dotted ``noun.event`` name in lowercase (``survey.completed``).
    :raises ValueError: if the name is not of that form.
    """
    if not _KIND_RE.match(kind):
        raise ValueError(f"interaction kind {kind!r} is not a dotted noun.event name")
    _extra_kinds.add(kind)


def is_known_kind(kind: str) -> bool:
    """True for a built-in kind or one a plugin registered."""
    return kind in INTERACTION_KINDS or kind in _extra_kinds


def known_kinds() -> list[str]:
    """Every known interaction kind (built-in and registered by plugins), sorted."""
    return sorted(INTERACTION_KINDS | _extra_kinds)


def is_valid_kind_name(kind: str) -> bool:
    """True when ``kind`` has the dotted ``noun.event`` form."""
    return bool(_KIND_RE.match(kind))
