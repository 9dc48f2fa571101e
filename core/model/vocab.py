"""The vocabularies every part of carecrm shares: interaction kinds, channels, marketing
channel groups, conversion steps, consent purposes and statuses.  ``docs/vocabulary.md``
is generated from these tables (``python -m carecrm.core.model.vocabdocs``), so each entry
carries its meaning.  Plugins may add interaction kinds with :func:`register_kind` and
consent purposes of their own (a purpose is free text to the ledger)."""

from __future__ import annotations

import re
from collections.abc import Mapping

#: Built-in interaction kinds, dotted ``noun.event``, each with what it records.
#: Direction, the appointment type and ``machine_open`` are attributes, not kinds.
KIND_MEANINGS: Mapping[str, str] = {
    "form.submitted": "a person sent a web form (contact, booking request, landing page)",
    "ad_lead.submitted": "a person sent an ad platform's lead form (Meta, Google, LinkedIn lead ads)",
    "chat.started": "a live-chat or chatbot conversation began",
    "chat.message_received": "a message from the person in a chat",
    "chat.offline_message": "a message left in the chat widget while nobody was online",
    "call.completed": "a phone call that was answered (inbound or outbound: the direction says which)",
    "call.missed": "a phone call nobody answered",
    "call.voicemail": "a phone call that ended in a voicemail",
    "sms.received": "a text message from the person",
    "sms.sent": "a text message from the practice",
    "sms.delivered": "the carrier reported a text from the practice delivered",
    "sms.failed": "a text from the practice could not be delivered",
    "email.sent": "an email from the practice was handed to the email platform",
    "email.delivered": "the receiving server accepted an email from the practice",
    "email.deferred": "the receiving server delayed an email; the platform retries",
    "email.dropped": "the email platform refused to send (a suppressed or invalid address)",
    "email.opened": "an email was opened (attribute machine_open: opened by software, not a person)",
    "email.clicked": "a link in an email was clicked",
    "email.bounced": "the receiving server refused an email",
    "email.complained": "the person marked an email as spam",
    "email.unsubscribed": "the person unsubscribed from emails",
    "appointment.requested": "the person asked for an appointment not yet confirmed",
    "appointment.booked": "an appointment was booked (attribute appointment_type: consult, treatment, follow_up)",
    "appointment.rescheduled": "a booked appointment moved to another time",
    "appointment.canceled": "a booked appointment was canceled",
    "appointment.reminded": "the practice sent an appointment reminder",
    "appointment.attended": "the person came to the appointment",
    "appointment.no_show": "the person did not come to the appointment",
    "treatment.accepted": "the person accepted a treatment plan or quote",
    "treatment.performed": "a treatment was performed",
    "payment.received": "the practice received a payment (the revenue step)",
    "referral.received": "a referral arrived (from a patient or a physician)",
    "review.requested": "the practice asked the person for a review",
    "page.viewed": "a page of the practice's website was viewed",
    "ad.clicked": "an ad was clicked",
    "note.added": "a coordinator wrote a note (carecrm note add)",
    "task.created": "a coordinator's task about the person was created (carecrm task add)",
    "task.completed": "that task was done (carecrm task done)",
    "walk_in.visited": "the person walked in without an appointment",
    "event.attended": "the person came to a practice event (open day, seminar)",
    "stage.changed": "system: the person's lifecycle stage changed",
    "consent.changed": "system: a consent was granted or revoked",
    "contacts.merged": "system: two contacts were merged into one",
}
INTERACTION_KINDS: frozenset[str] = frozenset(KIND_MEANINGS)

#: How an interaction happened, with its meaning.
CHANNEL_MEANINGS: Mapping[str, str] = {
    "web": "the practice's website: forms, pages, booking widgets",
    "chat": "live chat or a chatbot",
    "phone": "a voice call",
    "sms": "a text message (SMS or MMS)",
    "whatsapp": "a WhatsApp message",
    "email": "an email",
    "mail": "a letter or postcard",
    "in_person": "face to face at the practice or an event",
    "ad_platform": "on an ad platform itself (an ad's lead form, a click)",
    "ehr": "recorded by the EHR or practice-management system",
    "referral": "passed on by a referrer (a patient or a physician)",
}
CHANNELS: frozenset[str] = frozenset(CHANNEL_MEANINGS)

#: Marketing channel groups that attribution credits (``--by channel_group``), in order,
#: with their meaning; derived from a touchpoint by :mod:`carecrm.core.model.channels`.
CHANNEL_GROUP_MEANINGS: Mapping[str, str] = {
    "paid_search": "search ads (a gclid or msclkid, or a search engine with a paid medium)",
    "paid_social": "social-media ads (a social source with a paid medium, or an fbclid with one)",
    "organic_search": "unpaid search results",
    "organic_social": "unpaid social-media posts and profiles",
    "email": "email campaigns and newsletters",
    "referral_patient": "word of mouth: a patient referred the person",
    "referral_physician": "another physician or provider referred the person",
    "local_listing": "local listings and directories (Google Business Profile, Yelp, Healthgrades, Zocdoc)",
    "display": "display and programmatic banner ads",
    "direct": "no source, medium, campaign or click id at all",
    "other": "a source that no rule recognizes",
}
CHANNEL_GROUPS: tuple[str, ...] = tuple(CHANNEL_GROUP_MEANINGS)

#: Steps of the conversion ladder, in order, with the event that reaches each.
CONVERSION_STEP_MEANINGS: Mapping[str, str] = {
    "lead": "the person's first inquiry",
    "consult_scheduled": "a consultation was booked",
    "consult_attended": "the person came to the consultation",
    "booked_patient": "the person booked or accepted treatment: became a patient",
    "revenue": "a payment was received",
    "returning_patient": "the person booked a new treatment after completing one",
}
CONVERSION_STEPS: tuple[str, ...] = tuple(CONVERSION_STEP_MEANINGS)

#: Built-in consent purposes (what a person agrees to be contacted for); plugins and
#: vendors may use others (SendGrid's ``marketing:group:<id>`` for one unsubscribe group).
CONSENT_PURPOSES: Mapping[str, str] = {
    "marketing": "promotions, newsletters, offers",
    "appointment_reminders": "reminders of the person's own appointments",
    "care_coordination": "messages about the person's own care (results ready, forms to fill in)",
    "surveys": "satisfaction and feedback surveys",
    "reviews": "requests to review the practice",
}

#: Statuses of a consent-ledger event.
CONSENT_STATUSES: Mapping[str, str] = {
    "granted": "the person agreed (a checked box, a keyword reply, a signed form)",
    "revoked": "the person withdrew it (an unsubscribe, a spam report, a STOP or any reasonable request)",
    "pending_confirmation": "asked for, awaiting confirmation (double opt-in)",
}

#: The channel a kind's noun implies when nobody says otherwise (``carecrm log``); nouns
#: not listed imply none.
CHANNEL_OF_NOUN: Mapping[str, str] = {
    "call": "phone",
    "sms": "sms",
    "email": "email",
    "chat": "chat",
    "form": "web",
    "page": "web",
    "ad_lead": "ad_platform",
    "ad": "ad_platform",
    "walk_in": "in_person",
    "event": "in_person",
    "referral": "referral",
}

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

#: Kinds whose direction is fixed by what they are (calls need it given; others have none).
DIRECTION_OF_KIND: Mapping[str, str] = {
    **{kind: "inbound" for kind in INBOUND_KINDS},
    **{kind: "outbound" for kind in ("sms.sent", "sms.delivered", "sms.failed", "review.requested")},
    **{kind: "outbound" for kind in INTERACTION_KINDS if kind.startswith("email.")},
    "appointment.reminded": "outbound",
}

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
