"""The domain model: attrs value objects that know nothing about storage.

Personal fields (names, emails, phones, address, date of birth, free text) are declared
``repr=False`` so they never reach a traceback, a log line or a repr (HIPAA 45 CFR
164.502(b), minimum necessary).  Every datetime is timezone-aware UTC truncated to
milliseconds (:func:`carecrm.core.model.timeutil.to_utc_ms` is the converter).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import date, datetime
from typing import Any

import attrs

from carecrm.core.model.ids import new_id
from carecrm.core.model.timeutil import to_utc_ms, utcnow


def _utc(value: datetime) -> datetime:
    return to_utc_ms(value)


def _utc_opt(value: datetime | None) -> datetime | None:
    return None if value is None else to_utc_ms(value)


def _tuple(value: Any) -> tuple[Any, ...]:
    return tuple(value) if value is not None else ()


def _dict(value: Mapping[str, Any] | None) -> dict[str, Any]:
    return dict(value) if value else {}


# --------------------------------------------------------------------------- people


@attrs.frozen(kw_only=True)
class Actor:
    """Who is acting: a person's or a system's name, and the role they act in.

    Roles (``admin``, ``coordinator``, ``marketer``, ``analyst``) decide what is shown
    and allowed; the CLI's ``--as NAME[:ROLE]`` is a label, not authentication.
    """

    name: str
    role: str = "admin"

    @classmethod
    def parse(cls, text: str) -> Actor:
        """Parse ``NAME`` or ``NAME:ROLE``.  :raises ValueError: on an empty name."""
        name, _, role = text.partition(":")
        if not name.strip():
            raise ValueError("actor name is empty")
        return cls(name=name.strip(), role=(role.strip() or "admin"))

    def __str__(self) -> str:
        return f"{self.name}:{self.role}"


SYSTEM = Actor(name="carecrm", role="system")


@attrs.frozen(kw_only=True)
class Touchpoint:
    """Where a contact came from: the marketing source of an interaction.

    Fields follow Google Analytics' UTM parameters (utm_source, utm_medium,
    utm_campaign, utm_term, utm_content) plus click ids (``gclid`` Google Ads,
    ``fbclid`` Meta, ``msclkid`` Microsoft Ads), ad and form ids, the landing page and
    the referrer.  ``channel_group`` is derived from these by the practice's rules
    (``docs/vocabulary.md``, "Marketing channel groups").  Empty strings are stored as None.
    """

    channel_group: str | None = None
    source: str | None = None
    medium: str | None = None
    campaign: str | None = None
    term: str | None = None
    content: str | None = None
    gclid: str | None = None
    fbclid: str | None = None
    msclkid: str | None = None
    ad_id: str | None = None
    form_id: str | None = None
    landing_page: str | None = None
    referrer: str | None = None

    def is_empty(self) -> bool:
        """True when no field is set."""
        return all(v is None for v in attrs.astuple(self))


@attrs.frozen(kw_only=True)
class Identity:
    """One way to recognise a person: ``kind`` is ``email``, ``phone`` or ``external:<system>``.

    ``value`` is normalized (email lowercased, phone E.164, external id as given);
    ``display`` keeps what the person typed.  ``valid`` is phonenumbers' validity flag
    for phones (fictional 555-01xx numbers are possible but not valid).
    """

    kind: str
    value: str = attrs.field(repr=False)
    display: str | None = attrs.field(default=None, repr=False)
    valid: bool | None = None
    verified: bool = False
    source: str | None = None


@attrs.frozen(kw_only=True)
class Contact:
    """A person on record: a lead, a patient, or anyone in between.

    Personal fields are plain Python values here and ciphertext in storage.
    ``stage`` is the lifecycle stage in ``pipeline``; ``service_interest`` a service-line
    code; ``postal_code`` is kept in full inside the encrypted part and only its prefix in
    clear for segmenting.
    """

    id: uuid.UUID = attrs.Factory(new_id)
    created_at: datetime = attrs.field(factory=utcnow, converter=_utc)
    updated_at: datetime = attrs.field(factory=utcnow, converter=_utc)
    version: int = 1
    status: str = "active"
    first_name: str | None = attrs.field(default=None, repr=False)
    last_name: str | None = attrs.field(default=None, repr=False)
    name_confidence: str | None = None
    street_address: str | None = attrs.field(default=None, repr=False)
    postal_code: str | None = attrs.field(default=None, repr=False)
    city: str | None = None
    region: str | None = None
    country: str | None = None
    date_of_birth: date | None = attrs.field(default=None, repr=False)
    sex: str | None = attrs.field(default=None, repr=False)
    pipeline: str = "default"
    stage: str = "new_lead"
    stage_changed_at: datetime | None = attrs.field(default=None, converter=_utc_opt)
    service_interest: str | None = None
    location: str | None = None
    owner: str | None = None
    score: float | None = None
    first_source: str | None = None
    identities: tuple[Identity, ...] = attrs.field(default=(), converter=_tuple)

    @property
    def full_name(self) -> str | None:
        """First and last name joined by a space, or None when neither is known."""
        parts = [p for p in (self.first_name, self.last_name) if p]
        return " ".join(parts) if parts else None

    def emails(self) -> list[str]:
        """Normalized email addresses, oldest first."""
        return [i.value for i in self.identities if i.kind == "email"]

    def phones(self) -> list[str]:
        """E.164 phone numbers, oldest first."""
        return [i.value for i in self.identities if i.kind == "phone"]


# --------------------------------------------------------------------------- timeline


@attrs.frozen(kw_only=True)
class Interaction:
    """One event on a person's timeline (kind vocabulary: :mod:`carecrm.core.model.vocab`).

    ``body`` is free text (inquiry text, message body, form answers as JSON text):
    encrypted at rest.  ``attributes`` is clear JSON without personal data
    (appointment type, ``machine_open``, bounce type, durations in seconds).
    """

    id: uuid.UUID = attrs.Factory(new_id)
    contact_id: uuid.UUID
    kind: str
    occurred_at: datetime = attrs.field(converter=_utc)
    recorded_at: datetime = attrs.field(factory=utcnow, converter=_utc)
    source: str
    idempotency_key: str
    channel: str | None = None
    direction: str | None = None
    location: str | None = None
    touchpoint: Touchpoint = attrs.Factory(Touchpoint)
    attributes: dict[str, Any] = attrs.field(factory=dict, converter=_dict)
    body: str | None = attrs.field(default=None, repr=False)
    actor: str | None = None
    inbox_id: uuid.UUID | None = None


@attrs.frozen(kw_only=True)
class StageChange:
    """One move of a contact between lifecycle stages, with who, when and why."""

    id: uuid.UUID = attrs.Factory(new_id)
    contact_id: uuid.UUID
    pipeline: str = "default"
    from_stage: str | None
    to_stage: str
    changed_at: datetime = attrs.field(factory=utcnow, converter=_utc)
    actor: str | None = None
    reason: str | None = None
    implied_by: uuid.UUID | None = None


@attrs.frozen(kw_only=True)
class Appointment:
    """An appointment known to a booking tool or the EHR.

    ``type``: ``consult``, ``treatment`` or ``follow_up``; ``status``: ``requested``,
    ``booked``, ``rescheduled``, ``canceled``, ``attended``, ``no_show``.
    """

    id: uuid.UUID = attrs.Factory(new_id)
    contact_id: uuid.UUID
    source: str
    external_id: str
    type: str | None = None
    status: str = "booked"
    location: str | None = None
    provider: str | None = None
    starts_at: datetime | None = attrs.field(default=None, converter=_utc_opt)
    ends_at: datetime | None = attrs.field(default=None, converter=_utc_opt)
    created_at: datetime = attrs.field(factory=utcnow, converter=_utc)
    updated_at: datetime = attrs.field(factory=utcnow, converter=_utc)


@attrs.frozen(kw_only=True)
class ConsentEvent:
    """One consent-ledger event for a contact point × channel × purpose.

    ``contact_point`` is the normalized email or E.164 phone (TCPA consent belongs to a
    number, 47 CFR 64.1200(a)(2)); ``status``: ``granted``, ``revoked`` or
    ``pending_confirmation``; ``evidence``: form text and version, checkbox, keyword
    reply, recording reference (encrypted at rest); ``regime``: regime evidence such as
    HIPAA authorization elements (45 CFR 164.508(c)).
    """

    id: uuid.UUID = attrs.Factory(new_id)
    contact_id: uuid.UUID | None
    contact_point_kind: str
    contact_point: str = attrs.field(repr=False)
    channel: str
    purpose: str
    status: str
    occurred_at: datetime = attrs.field(converter=_utc)
    recorded_at: datetime = attrs.field(factory=utcnow, converter=_utc)
    source: str
    idempotency_key: str
    evidence: dict[str, Any] = attrs.field(factory=dict, converter=_dict, repr=False)
    regime: dict[str, Any] = attrs.field(factory=dict, converter=_dict)
    expires_at: datetime | None = attrs.field(default=None, converter=_utc_opt)


@attrs.frozen(kw_only=True)
class Note:
    """A coordinator's free-text note about a contact (encrypted at rest)."""

    id: uuid.UUID = attrs.Factory(new_id)
    contact_id: uuid.UUID
    created_at: datetime = attrs.field(factory=utcnow, converter=_utc)
    author: str | None = None
    text: str = attrs.field(repr=False)


@attrs.frozen(kw_only=True)
class Task:
    """A to-do about a contact: ``due_at`` UTC; ``status`` ``open`` or ``done``."""

    id: uuid.UUID = attrs.Factory(new_id)
    contact_id: uuid.UUID
    created_at: datetime = attrs.field(factory=utcnow, converter=_utc)
    created_by: str | None = None
    assignee: str | None = None
    due_at: datetime | None = attrs.field(default=None, converter=_utc_opt)
    status: str = "open"
    completed_at: datetime | None = attrs.field(default=None, converter=_utc_opt)
    completed_by: str | None = None
    text: str | None = attrs.field(default=None, repr=False)


# --------------------------------------------------------------------------- practice


@attrs.frozen(kw_only=True)
class Location:
    """A practice location: its IANA time zone (local times are read and shown in it),
    business hours per weekday (``{"mon": ["08:00", "17:00"], ...}``), holidays
    (ISO dates), its phone and tracking numbers (E.164; a tracking number maps to a
    campaign) and its region (ISO 3166 code used to parse local phone numbers)."""

    name: str
    timezone: str = "UTC"
    region: str = "US"
    business_hours: dict[str, tuple[str, str]] = attrs.Factory(dict)
    holidays: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    phones: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    tracking_numbers: dict[str, str] = attrs.Factory(dict)
    address: str | None = None


@attrs.frozen(kw_only=True)
class Provider:
    """A clinician who sees patients at one or more locations."""

    name: str
    locations: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
    service_lines: tuple[str, ...] = attrs.field(default=(), converter=_tuple)


@attrs.frozen(kw_only=True)
class Practice:
    """The practice this CRM serves: locations, providers, service lines, regime.

    ``regime`` is ``US`` (HIPAA, TCPA, CAN-SPAM) or ``UK``/``EU`` (GDPR, PECR).
    """

    name: str = "Practice"
    regime: str = "US"
    locations: tuple[Location, ...] = attrs.field(default=(Location(name="main"),), converter=_tuple)
    providers: tuple[Provider, ...] = attrs.field(default=(), converter=_tuple)
    service_lines: tuple[str, ...] = attrs.field(default=(), converter=_tuple)

    @property
    def default_location(self) -> Location:
        """The first location listed."""
        return self.locations[0]

    def location(self, name: str | None) -> Location:
        """The location of this name, or the default one when ``name`` is None.

        :raises KeyError: if no location has that name.
        """
        if name is None:
            return self.default_location
        for loc in self.locations:
            if loc.name == name:
                return loc
        raise KeyError(name)


# --------------------------------------------------------------------------- ingest


@attrs.frozen(kw_only=True)
class RawPayload:
    """A payload exactly as a vendor sent it: the bytes plus how they arrived.

    ``headers`` keys are compared case-insensitively (use :meth:`header`); ``url`` is the
    request URL (some vendors sign it); ``received_at`` UTC.
    """

    body: bytes = attrs.field(repr=False)
    content_type: str = "application/json"
    headers: dict[str, str] = attrs.field(factory=dict, converter=_dict, repr=False)
    url: str | None = attrs.field(default=None, repr=False)
    received_at: datetime = attrs.field(factory=utcnow, converter=_utc)
    origin: str | None = None

    def header(self, name: str) -> str | None:
        """A header's value, looked up case-insensitively, or None."""
        lower = name.lower()
        for key, value in self.headers.items():
            if key.lower() == lower:
                return value
        return None


@attrs.frozen(kw_only=True)
class InteractionDraft:
    """An interaction as a connector emits it, before a contact is known.

    ``idempotency_key`` is built from the vendor's event id with the event type (and
    subtype), time and recipient (``docs/vocabulary.md``, "Idempotency keys").
    """

    kind: str
    occurred_at: datetime = attrs.field(converter=_utc)
    idempotency_key: str
    channel: str | None = None
    direction: str | None = None
    location: str | None = None
    body: str | None = attrs.field(default=None, repr=False)
    attributes: dict[str, Any] = attrs.field(factory=dict, converter=_dict)
    touchpoint: Touchpoint | None = None
    appointment: Appointment | None = None


@attrs.frozen(kw_only=True)
class ConsentSignal:
    """A consent event as a connector emits it.

    ``contact_point`` is the raw email or phone it concerns; None means the event's first
    identity of ``contact_point_kind``.
    """

    contact_point_kind: str
    channel: str
    purpose: str
    status: str
    occurred_at: datetime = attrs.field(converter=_utc)
    idempotency_key: str
    contact_point: str | None = attrs.field(default=None, repr=False)
    evidence: dict[str, Any] = attrs.field(factory=dict, converter=_dict, repr=False)
    regime: dict[str, Any] = attrs.field(factory=dict, converter=_dict)
    expires_at: datetime | None = attrs.field(default=None, converter=_utc_opt)


@attrs.frozen(kw_only=True)
class LeadEvent:
    """What a source connector emits for one record of a payload.

    Identity hints are raw (the core normalizes them); ``record_ref`` names the record
    in error messages (the vendor's id, never personal data); ``name_confidence`` is
    ``low`` for caller-ID text, generated chat names and vendor placeholders, which
    never count as disagreeing with a known name and never overwrite it.
    ``external_ids`` are (system, id) pairs such as ``("typeform", token)``.
    ``region`` is the ISO 3166 country the record itself gives for parsing phones.
    ``extra`` holds optional personal fields (``date_of_birth``, ``sex``,
    ``street_address``) that the practice's data-minimization settings may drop.
    """

    source: str
    record_ref: str
    emails: tuple[str, ...] = attrs.field(default=(), converter=_tuple, repr=False)
    phones: tuple[str, ...] = attrs.field(default=(), converter=_tuple, repr=False)
    first_name: str | None = attrs.field(default=None, repr=False)
    last_name: str | None = attrs.field(default=None, repr=False)
    full_name: str | None = attrs.field(default=None, repr=False)
    name_confidence: str = "high"
    postal_code: str | None = attrs.field(default=None, repr=False)
    city: str | None = None
    region: str | None = None
    location: str | None = None
    service_interest: str | None = None
    external_ids: tuple[tuple[str, str], ...] = attrs.field(default=(), converter=_tuple)
    touchpoint: Touchpoint = attrs.Factory(Touchpoint)
    interactions: tuple[InteractionDraft, ...] = attrs.field(default=(), converter=_tuple)
    consents: tuple[ConsentSignal, ...] = attrs.field(default=(), converter=_tuple)
    extra: dict[str, Any] = attrs.field(factory=dict, converter=_dict, repr=False)
    dropped_fields: tuple[str, ...] = attrs.field(default=(), converter=_tuple)
