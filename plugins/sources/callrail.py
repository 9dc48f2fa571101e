"""The CallRail call-tracking webhook source connector (``connector = "callrail"``).

CallRail calls a practice's endpoint after each tracked phone call.  Two formats exist and
both are read, told apart by content type and body:

* **v3 JSON** (post-call and call-modified webhooks): the call object of CallRail API v3
  as the POST body: ``customer_phone_number``, ``customer_name``, ``start_time`` (ISO 8601
  with offset), ``duration``, ``answered``, ``voicemail``, ``first_call``, ``direction``,
  ``tracking_phone_number``, ``business_phone_number``, ``source``/``source_name``,
  ``campaign``, ``utm_*``, ``gclid``/``fbclid``/``msclkid``, ``landing_page_url``,
  ``referring_url``/``referrer_domain``, ``resource_id`` (``id`` in older payloads),
  ``recording``, ``transcription``, ``note``;
* **legacy (v1) parameters**, form-encoded in the body or in the request URL's query
  string: ``callernum``, ``callername``, ``datetime`` (no zone: the CallRail company's
  local time), ``duration``, ``answered``, ``first_call``, ``id``, ``trackingnum``,
  ``destinationnum``, ``callsource``, ``utm_*``, ``gclid``, ``landingpage``, ``referrer``,
  ``referrermedium``, ``recording``, ``transcription``.

Vendor documentation used:

* webhooks overview (pre-call, post-call, call-modified; JSON body, query string data
  deprecated; legacy parameter example):
  https://support.callrail.com/hc/en-us/articles/201211133-Webhooks
* webhook security (a per-company secret token; the ``Signature`` header is a base64
  HMAC-SHA1 of the raw request body) and the fields each webhook carries:
  https://support.callrail.com/hc/en-us/articles/5711246459149-Webhooks and
  https://apidocs.callrail.com/#webhooks
* the call object (field names and types): https://apidocs.callrail.com/#calls
  ("Retrieving a Single Call");
* ``id`` → ``resource_id`` change:
  https://support.callrail.com/hc/en-us/articles/4403032268557-Webhooks-Integration-Updates

Rules (``docs/vocabulary.md`` and the vendor corpus notes): the caller number is the identity, passed raw
(the core normalizes it in the location's region); the caller-ID name (CNAM) is always
``name_confidence="low"`` and a CNAM placeholder (``SKYPE CALLER``, ``WIRELESS CALLER``, a
city and state) is not passed on at all; the caller's city, state, zip and country are the
number's geolocation, not the person's address, and are dropped (counted in
``dropped_fields``); the recording link and any transcription, summary or note go into the
encrypted ``body`` only; empty UTM strings are None.
"""

from __future__ import annotations

import json
import math
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs

from carecrm.core.errors import ConfigError, ValidationFailed
from carecrm.core.identity.normalize import is_low_confidence_name
from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.model.domain import InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

__all__ = ["CallRailConnector", "carecrm_register_sources"]

#: Header of the v3 webhook signature (base64 HMAC-SHA1 of the raw body).
SIGNATURE_HEADER = "Signature"

#: Legacy parameter → v3 field, for the values both formats carry.
LEGACY_FIELDS: dict[str, str] = {
    "callernum": "customer_phone_number",
    "callername": "customer_name",
    "datetime": "start_time",
    "duration": "duration",
    "answered": "answered",
    "voicemail": "voicemail",
    "first_call": "first_call",
    "id": "id",
    "trackingnum": "tracking_phone_number",
    "destinationnum": "business_phone_number",
    "callsource": "source",
    "landingpage": "landing_page_url",
    "referrer": "referrer",
    "referrermedium": "referrer_medium",
    "recording": "recording",
    "transcription": "transcription",
    "utm_source": "utm_source",
    "utm_medium": "utm_medium",
    "utm_campaign": "utm_campaign",
    "utm_term": "utm_term",
    "utm_content": "utm_content",
    "gclid": "gclid",
    "fbclid": "fbclid",
    "msclkid": "msclkid",
    "keywords": "keywords",
}

#: Number geolocation (CallRail looks the caller's number up): never put on the contact.
#: Legacy names first, then v3 names.
GEOLOCATION_FIELDS: tuple[str, ...] = (
    "callercity",
    "callerstate",
    "callerzip",
    "callercountry",
    "customer_city",
    "customer_state",
    "customer_country",
    "formatted_customer_location",
)

#: Other personal fields CallRail may send that carecrm never keeps (the web visitor's IP
#: address and third-party visitor ids).
OTHER_DROPPED_FIELDS: tuple[str, ...] = ("ip", "kissmetrics_id")

_MAX_TEXT = 300


@attrs.frozen(kw_only=True)
class CallRailOptions:
    """The ``[sources.<name>]`` options of a CallRail source.

    :ivar time_zone: the IANA zone of the CallRail company, in which legacy ``datetime``
        values are read; None: the practice's default location's zone.
    :ivar verify_signature: check the v3 ``Signature`` header with the source's
        ``secret`` (default false: legacy webhooks are unsigned).
    """

    time_zone: str | None = None
    verify_signature: bool = False


class CallRailConnector(SourceConnector):
    """Parses CallRail post-call / call-modified webhooks (v3 JSON or legacy parameters).

    :param name: the source's name in config (``callrail``).
    :param options: ``time_zone`` (IANA zone of the CallRail company, in which legacy
        ``datetime`` values are read; default: the practice's default location's zone) and
        ``verify_signature`` (check the v3 ``Signature`` header with the configured
        ``secret``, the company's webhook signing token; default false, since legacy
        webhooks are unsigned).
    :param practice: the practice (time zone, tracking numbers → location and campaign).
    :raises ConfigError: on an unknown or malformed option (naming it).
    """

    connector_id: ClassVar[str] = "callrail"
    description: ClassVar[str] = "CallRail call tracking webhooks (v3 JSON and legacy parameters; call.* interactions)"
    formats: ClassVar[tuple[str, ...]] = ("v3 call webhook (JSON)", "legacy v1 post-call (form or query string)")
    signed = False

    options_type = CallRailOptions

    def __init__(self, *legacy: Any, name: str | None = None, options: Any = None, settings: Any = None) -> None:
        super().__init__(*legacy, name=name, options=options, settings=settings)
        practice = self.practice
        opts: CallRailOptions = self.options
        zone = opts.time_zone or practice.default_location.timezone
        try:
            self.time_zone = ZoneInfo(zone)
        except (ZoneInfoNotFoundError, ValueError):
            raise ConfigError(f"source {self.name!r}: option 'time_zone': unknown IANA time zone {zone!r}") from None
        verify = opts.verify_signature
        self.verify_signature = verify
        # `signed` is a class-level fact for most vendors; CallRail signs only v3 webhooks,
        # so whether this source demands a secret is per-source configuration
        self.signed = verify
        self.region = practice.default_location.region
        # E.164 tracking number → (location, campaign); E.164 practice line → location
        self._tracking, self._lines = kit.practice_numbers(practice)

    # ------------------------------------------------------------------ signature

    def verify(self, payload: RawPayload, secret: str) -> None:
        """With ``verify_signature = true``: check the ``Signature`` header, a base64
        HMAC-SHA1 of the raw body keyed with the company's signing token (``secret``).
        Without it (legacy webhooks are unsigned) nothing is checked.

        :raises ValidationFailed: naming the ``Signature`` header when it is missing,
            malformed or wrong.
        """
        if not self.verify_signature:
            return
        signature = kit.signature_from_header(payload, source=self.name, header=SIGNATURE_HEADER, encoding="base64")
        if not kit.signatures_match(kit.hmac_digest(secret, payload.body, "sha1"), signature):
            raise ValidationFailed(
                self.name, "payload", SIGNATURE_HEADER, "signature does not match the body (wrong signing token?)"
            )

    # ------------------------------------------------------------------ parsing

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """One lead event per call; a :class:`Rejected` for a call without a caller number
        or a readable start time.

        :raises ValidationFailed: when the body can be read as neither JSON nor
            parameters (the payload is quarantined whole).
        """
        for index, (call, legacy) in enumerate(self._calls(payload)):
            yield self._call(index, call, legacy)

    def _calls(self, payload: RawPayload) -> list[tuple[dict[str, Any], bool]]:
        """The calls of a payload, each with whether it came in legacy parameters."""
        try:
            text = payload.body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationFailed(self.name, "payload", "body", "not UTF-8 text") from None
        media = payload.content_type.split(";", 1)[0].strip().lower()
        stripped = text.strip()
        if stripped.startswith(("{", "[")):
            try:
                data = json.loads(stripped)
            except json.JSONDecodeError:
                raise ValidationFailed(self.name, "payload", "body", "not JSON") from None
            if isinstance(data, dict) and isinstance(data.get("call"), dict):
                data = data["call"]
            items = data if isinstance(data, list) else [data]
            if not items or not all(isinstance(item, dict) for item in items):
                raise ValidationFailed(self.name, "payload", "body", "not a JSON call object")
            calls: list[tuple[dict[str, Any], bool]] = []
            for item in items:
                legacy = "callernum" in item and "customer_phone_number" not in item
                calls.append((_from_legacy(item) if legacy else dict(item), legacy))
            return calls
        if stripped and "=" not in stripped:
            reason = "not JSON" if "json" in media else "neither JSON nor form parameters"
            raise ValidationFailed(self.name, "payload", "body", reason)
        params: dict[str, str] = {}
        for source in (stripped, urllib.parse.urlsplit(payload.url or "").query):
            for key, value in urllib.parse.parse_qsl(source, keep_blank_values=True):
                params.setdefault(key.strip().lower(), value)
        if not params:
            raise ValidationFailed(self.name, "payload", "body", "empty: no JSON body and no parameters")
        return [(_from_legacy(params), True)]

    def _call(self, index: int, call: Mapping[str, Any], legacy: bool) -> LeadEvent | Rejected:
        call_id = kit.text(call.get("resource_id")) or kit.text(call.get("id"))
        record = call_id[:64] if call_id else f"#{index}"
        caller = kit.text(call.get("customer_phone_number"))
        if caller is None:
            return Rejected(record, "callernum", "missing")
        occurred_at = self._start_time(call, legacy)
        if occurred_at is None:
            field = "datetime" if legacy else "start_time"
            return Rejected(record, field, "missing or not a date and time")

        answered = kit.flag(call.get("answered"))
        voicemail = kit.flag(call.get("voicemail"))
        call_type = (kit.text(call.get("call_type")) or "").lower()
        if voicemail is None and call_type in ("voicemail", "voicemail_transcription"):
            voicemail = True
        if answered is None and call_type in ("answered", "answered_outbound"):
            answered = True
        if voicemail:
            kind = "call.voicemail"
        elif answered:
            kind = "call.completed"
        else:
            kind = "call.missed"
        direction = (kit.text(call.get("direction")) or "inbound").lower()
        if direction not in ("inbound", "outbound"):
            direction = "inbound"

        tracking = kit.practice_e164(kit.text(call.get("tracking_phone_number")), self.region)
        line = kit.practice_e164(kit.text(call.get("business_phone_number")), self.region)
        location: str | None = None
        tracked_campaign: str | None = None
        if tracking is not None and tracking in self._tracking:
            location, tracked_campaign = self._tracking[tracking]
        elif line is not None and line in self._lines:
            location = self._lines[line]

        attributes: dict[str, Any] = {}
        duration = _seconds(call.get("duration"))
        if duration is not None:
            attributes["duration_seconds"] = duration
        attributes["answered"] = bool(answered)
        if voicemail is not None:
            attributes["voicemail"] = voicemail
        first_call = kit.flag(call.get("first_call"))
        if first_call is not None:
            attributes["first_call"] = first_call
        if call_id:
            attributes["external_record_id"] = call_id[:64]
        if tracking is not None:
            attributes["tracking_number"] = tracking
        if line is not None:
            attributes["destination_number"] = line
        callsource = kit.text(call.get("source"))
        if callsource:
            attributes["callsource"] = callsource[:_MAX_TEXT]
        for name in ("source_name", "referrer_medium", "lead_status", "call_type"):
            value = kit.text(call.get(name))
            if value:
                attributes[name] = value[:_MAX_TEXT]
        recording = kit.text(call.get("recording")) or kit.text(call.get("recording_player"))
        attributes["recording_available"] = recording is not None
        attributes["format"] = "legacy" if legacy else "v3"

        body_parts: list[str] = []
        if recording is not None:
            body_parts.append(f"recording: {recording}")
        for name in ("transcription", "call_summary", "note"):
            value = kit.text(call.get(name))
            if value:
                body_parts.append(f"{name}: {value}")

        key_id = call_id or "h" + self.record_digest(kit.canonical_json(call))[:32]
        draft = InteractionDraft(
            kind=kind,
            occurred_at=occurred_at,
            idempotency_key=f"{kind}:{key_id}"[:255],
            channel="phone",
            direction=direction,
            location=location,
            body="\n".join(body_parts) or None,
            attributes=attributes,
        )

        dropped: list[str] = []
        for name in GEOLOCATION_FIELDS + OTHER_DROPPED_FIELDS:
            if kit.text(call.get(name)) is not None:
                dropped.append(name)
        full_name = kit.text(call.get("customer_name"))
        if full_name is not None and is_low_confidence_name(full_name):
            # caller-ID placeholders ("SKYPE CALLER", a city and state) name nobody
            dropped.append("callername" if legacy else "customer_name")
            full_name = None

        return LeadEvent(
            source=self.name,
            record_ref=record,
            phones=(caller,),
            full_name=full_name,
            name_confidence="low",
            location=location,
            touchpoint=self._touchpoint(call, tracked_campaign),
            interactions=(draft,),
            dropped_fields=tuple(dropped),
        )

    # ------------------------------------------------------------------ parts

    def _start_time(self, call: Mapping[str, Any], legacy: bool) -> datetime | None:
        """When the call started, aware.  A time without an offset (legacy ``datetime``)
        is the CallRail company's local time: read in the payload's own
        ``company_time_zone`` (v3) when it names a valid zone, else in ``time_zone``."""
        zone: ZoneInfo = self.time_zone
        company_zone = None if legacy else kit.text(call.get("company_time_zone"))
        if company_zone:
            try:
                zone = ZoneInfo(company_zone)
            except (ZoneInfoNotFoundError, ValueError):
                zone = self.time_zone
        for name in ("start_time", "created_at"):
            text = kit.text(call.get(name))
            if text is None:
                continue
            try:
                value = datetime.fromisoformat(text)
            except ValueError:
                return None
            if value.tzinfo is None or value.utcoffset() is None:
                value = value.replace(tzinfo=zone)
            return value
        return None

    def _touchpoint(self, call: Mapping[str, Any], tracked_campaign: str | None) -> Touchpoint:
        """UTM parameters and click ids (empty strings are None; those of the landing page's
        query fill what the payload leaves empty), the landing page and referrer without
        their query strings, and the campaign: ``utm_campaign``, else CallRail's
        ``campaign``, else the practice's campaign of the tracking number."""
        fields: dict[str, str | None] = {}
        for param, field in kit.URL_PARAMETERS.items():
            fields[field] = kit.text(call.get(param))
        landing = kit.text(call.get("landing_page_url"))
        if landing:
            for field, value in kit.url_parameters(landing).items():
                if not fields.get(field):
                    fields[field] = value
            fields["landing_page"] = kit.without_query(landing)
        referrer = (
            kit.text(call.get("referring_url"))
            or kit.text(call.get("referrer"))
            or kit.text(call.get("referrer_domain"))
        )
        if referrer:
            fields["referrer"] = kit.without_query(referrer)
        if not fields.get("campaign"):
            fields["campaign"] = kit.text(call.get("campaign")) or tracked_campaign
        if not fields.get("term"):
            fields["term"] = kit.text(call.get("keywords"))
        return Touchpoint(**{k: (v[:_MAX_TEXT] if v else None) for k, v in fields.items()})


# --------------------------------------------------------------------------- helpers


def _from_legacy(params: Mapping[str, Any]) -> dict[str, Any]:
    """Legacy parameters under their v3 names; unmapped parameters keep their names."""
    call: dict[str, Any] = {}
    for key, value in params.items():
        call.setdefault(LEGACY_FIELDS.get(key, key), value)
    return call


def _seconds(value: Any) -> int | None:
    """A duration in whole seconds from a number or its text (``"247"``)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int):
        return value if value >= 0 else None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if isinstance(value, float) and math.isfinite(value) and value >= 0:
        return int(value)
    return None


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`CallRailConnector` as the ``callrail`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(CallRailConnector)
