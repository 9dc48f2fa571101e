"""The Twilio Messaging and Voice webhook source connector (``connector = "twilio"``).

Twilio calls a practice's endpoint with ``application/x-www-form-urlencoded`` parameters
(or, for a webhook set to GET, the same parameters in the URL's query string); every
value is a string.  One connector reads every format a practice's Twilio numbers send:

* **an inbound message** (SMS, MMS, WhatsApp): ``MessageSid``, ``From`` (the person),
  ``To`` (the practice's number), ``Body`` (absent from an MMS without text), ``NumMedia``
  with ``MediaUrl<n>`` / ``MediaContentType<n>``, ``OptOutType`` (Advanced Opt-Out), and
  the numbers' registration area (``FromCity`` ...), which is not the person's address;
  WhatsApp numbers carry a ``whatsapp:`` prefix:
  https://www.twilio.com/docs/messaging/guides/webhook-request;
* **a message status callback** for a message the practice sent: ``MessageSid``,
  ``MessageStatus`` (``queued`` ... ``sent``, ``delivered``, ``read``, ``undelivered``,
  ``failed``), ``ErrorCode``; the person is ``To``:
  https://www.twilio.com/docs/messaging/guides/track-outbound-message-status;
  error 21610 ("Attempt to send to unsubscribed recipient") means the recipient replied
  STOP to that sender: https://www.twilio.com/docs/api/errors/21610;
* **a voice status callback** and a ``<Record>`` action: ``CallSid``, ``CallStatus``,
  ``Direction`` (``inbound``: the person is ``From``; ``outbound-api``/``outbound-dial``:
  the person is ``To``), ``CallDuration`` (seconds; ``Duration`` is billed minutes),
  ``AnsweredBy``, ``Timestamp`` (RFC 2822), ``SequenceNumber``, ``RecordingSid``,
  ``RecordingUrl``, ``RecordingDuration``:
  https://www.twilio.com/docs/voice/api/call-resource#statuscallback and
  https://www.twilio.com/docs/voice/twiml/record#attributes-action-parameters.

Mapping:

==========================================  =====================  ==============================
Twilio webhook                              interaction kind       consent signal (the number)
==========================================  =====================  ==============================
inbound message                             sms.received           STOP ... revoked, START granted
inbound message, free-text "stop texting"   sms.received           revoked, flagged for review
status sent / delivered, read               sms.sent / delivered   (none)
status failed, undelivered                  sms.failed             error 21610: revoked
queued, accepting, sending, scheduled       (nothing)
call completed                              call.completed         (none)
call completed, ``AnsweredBy`` machine      call.voicemail
call busy, no-answer, failed, canceled      call.missed
call initiated, ringing, in-progress        (nothing: progress)
recording finished (``RecordingSid``)       call.voicemail
==========================================  =====================  ==============================

WhatsApp messages have the channel ``whatsapp`` (a consent signal for WhatsApp is its own);
SMS and MMS ``sms``; calls ``phone``.

Consent (TCPA, 47 CFR 64.1200(a)(10) and (a)(12): a called party may revoke consent by
any reasonable means, and a reply of "stop", "quit", "end", "revoke", "opt out", "cancel"
or "unsubscribe" revokes it; CTIA's Messaging Principles keywords): an inbound message
whose whole text (trimmed, any case) is STOP, STOPALL, UNSUBSCRIBE, CANCEL, END or QUIT,
or whose ``OptOutType`` is STOP, revokes ``marketing`` on that channel for that number;
START or UNSTOP (``OptOutType`` START) grants it again; HELP changes nothing.  A longer
text that asks the same in words ("stop texting me", "please don't text") is a revocation
by reasonable means: it is honoured at once (consent status ``revoked``, as the FCC's
2024 order on revocation requires and ``decisions.md`` settles) and flagged for a person
to read: the interaction gets the attribute ``consent_review = "revocation_requested"``
(a coordinator who reads that it meant something else records a new grant).
A status callback with error 21610 is Twilio's own record that the number opted out: a
revocation of SMS ``marketing`` for that number.

Privacy: media and recording links (photos of insurance cards, voicemails) go into the
encrypted ``body`` only, never into the clear attributes; the numbers' registration area
(``FromCity``, ``CallerZip`` ...) is dropped and counted in ``dropped_fields``.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs

from carecrm.core.errors import ValidationFailed
from carecrm.core.identity.normalize import IdentityError, normalize_phone
from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.model.domain import ConsentSignal, InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

__all__ = [
    "OPT_IN_KEYWORDS",
    "OPT_OUT_KEYWORDS",
    "TwilioConnector",
    "TwilioOptions",
    "carecrm_register_sources",
    "twilio_signature",
]

#: Header of Twilio's request signature (base64 HMAC-SHA1).
SIGNATURE_HEADER = "X-Twilio-Signature"

#: Whole-message keywords that revoke consent (Twilio's default opt-out keywords,
#: https://help.twilio.com/articles/223134027; 47 CFR 64.1200(a)(12)).
OPT_OUT_KEYWORDS: frozenset[str] = frozenset({"STOP", "STOPALL", "UNSUBSCRIBE", "CANCEL", "END", "QUIT"})
#: Whole-message keywords that grant it again.  Twilio also lifts its block on ``YES``; a
#: bare "yes" answers too many other questions ("can you come Tuesday?") to count as the
#: prior express written consent marketing texts need, so it is not read as a grant.
OPT_IN_KEYWORDS: frozenset[str] = frozenset({"START", "UNSTOP"})
#: Whole-message keywords that ask for help and change nothing.
HELP_KEYWORDS: frozenset[str] = frozenset({"HELP", "INFO"})

#: Twilio error "Attempt to send to unsubscribed recipient".
UNSUBSCRIBED_ERROR = "21610"

#: Free-text requests to stop texting (a reasonable means of revocation), matched on the
#: lowercased text with apostrophes folded.
_REVOCATION_PHRASES: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"\b(stop|quit|cease|end)\s+(texting|txting|messaging|sending|contacting|the\s+texts|these\s+texts)\b",
        r"\b(stop|no\s+more)\s+(texts?|txts?|messages?|sms)\b",
        r"\b(do\s*not|dont|don't|never)\s+(text|txt|message|sms|contact)\b",
        r"\b(unsubscribe|opt\s*-?\s*out|revoke|remove)\s+me\b",
        r"\btake\s+me\s+off\b",
        r"^\s*(stop|stopall|unsubscribe|optout|revoke)\b",
        r"\b(unsubscribe|opt\s*-?\s*out)\b",
    )
)
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})
_KEYWORD_PUNCTUATION = " \t\r\n.!?,;:\"'()"
_BROKEN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_SID = re.compile(r"^[A-Za-z]{2}[A-Za-z0-9]{1,62}$")

#: Message statuses → interaction kind (statuses before the message left Twilio: none).
MESSAGE_STATUS_KINDS: Mapping[str, str | None] = {
    "accepted": None,
    "scheduled": None,
    "queued": None,
    "sending": None,
    "canceled": None,
    "sent": "sms.sent",
    "delivered": "sms.delivered",
    "read": "sms.delivered",
    "undelivered": "sms.failed",
    "failed": "sms.failed",
    "receiving": None,
}

#: Call statuses → interaction kind (progress events: none).
CALL_STATUS_KINDS: Mapping[str, str | None] = {
    "queued": None,
    "initiated": None,
    "ringing": None,
    "in-progress": None,
    "answered": None,
    "completed": "call.completed",
    "busy": "call.missed",
    "no-answer": "call.missed",
    "failed": "call.missed",
    "canceled": "call.missed",
}

#: The registration area of a number (Twilio's number geolocation), per side.
_GEO_SUFFIXES: tuple[str, ...] = ("City", "State", "Zip", "Country")
_MAX_TEXT = 300


@attrs.frozen(kw_only=True)
class TwilioOptions:
    """The ``[sources.<name>]`` options of a Twilio source.

    :ivar webhook_url: the URL exactly as configured in the Twilio console (scheme, host,
        path, query), used to check signatures of payloads that arrive without their
        request URL (a file given to ``carecrm ingest`` without ``--url``); None: the
        payload's own URL only.
    """

    webhook_url: str | None = None


class TwilioConnector(SourceConnector):
    """Parses Twilio Messaging (SMS, MMS, WhatsApp) and Voice webhooks, form-encoded.

    :param name: the source's name in config (``twilio``).
    :param options: ``webhook_url`` (:class:`TwilioOptions`).
    :param settings: the practice's settings (tracking numbers → location and campaign).
    :raises ConfigError: on an unknown or malformed option (naming it).
    """

    connector_id: ClassVar[str] = "twilio"
    description: ClassVar[str] = (
        "Twilio SMS/MMS/WhatsApp and Voice webhooks (signed HMAC-SHA1; sms.*, call.*, STOP/START consent)"
    )
    formats: ClassVar[tuple[str, ...]] = (
        "sms/mms inbound (form)",
        "whatsapp inbound (form)",
        "message status callback (form)",
        "voice status callback (form)",
        "voice recording action (form or GET query)",
    )
    signed = True

    options_type = TwilioOptions

    def __init__(self, *legacy: Any, name: str | None = None, options: Any = None, settings: Any = None) -> None:
        super().__init__(*legacy, name=name, options=options, settings=settings)
        opts: TwilioOptions = self.options
        self.webhook_url = opts.webhook_url
        practice = self.practice
        self.region = practice.default_location.region
        self._tracking, self._lines = kit.practice_numbers(practice)

    # ------------------------------------------------------------------ signature

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check ``X-Twilio-Signature``: the base64 HMAC-SHA1, keyed with the account's
        Auth Token (``secret``), of the full request URL followed, for a form-encoded POST,
        by every parameter's name immediately followed by its value, sorted by name
        (https://www.twilio.com/docs/usage/security#validating-requests).  A JSON body is
        signed through the URL's ``bodySHA256`` parameter (the hex SHA-256 of the body);
        a GET request through its URL alone.  The URL is the payload's, else the
        ``webhook_url`` option; it is tried as given and with its default port (``:443``,
        ``:80``) added or removed, as Twilio's own validators do.

        :raises ValidationFailed: naming ``X-Twilio-Signature`` when the signature is
            missing, not base64 or wrong, or ``url`` when no request URL is known.
        """
        given = kit.signature_from_header(payload, source=self.name, header=SIGNATURE_HEADER, encoding="base64")
        url = payload.url or self.webhook_url
        if not url:
            raise ValidationFailed(
                self.name,
                "payload",
                "url",
                "the request URL is unknown and Twilio signs it (pass --url, or set the webhook_url option)",
            )
        for candidate in _url_variants(url):
            expected = twilio_signature(secret, candidate, self._signed_params(payload, candidate))
            if kit.signatures_match(expected, given):
                return
        raise ValidationFailed(
            self.name,
            "payload",
            SIGNATURE_HEADER,
            "signature does not match the URL and parameters (wrong auth token?)",
        )

    def _signed_params(self, payload: RawPayload, url: str) -> list[tuple[str, str]]:
        """The POST parameters that the signature covers: none for a GET or a JSON body
        (whose ``bodySHA256`` must then match the body)."""
        query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(url).query, keep_blank_values=True))
        if "bodySHA256" in query:
            import hashlib

            if not kit.signatures_match(
                hashlib.sha256(payload.body).hexdigest().encode(), query["bodySHA256"].lower().encode()
            ):
                raise ValidationFailed(
                    self.name, "payload", "bodySHA256", "the body's SHA-256 does not match the URL's"
                )
            return []
        text = self._text(payload)
        if not text.strip():
            return []
        return self._pairs(text)

    # ------------------------------------------------------------------ parsing

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """One lead event per webhook (none for progress callbacks: a message still
        queued, a call still ringing).

        :raises ValidationFailed: when the body is not UTF-8 form parameters (a broken
            percent-escape, JSON) or is neither a Messaging nor a Voice webhook.
        """
        params = self._params(payload)
        if kit.text(params.get("CallSid")) and not kit.text(params.get("MessageSid") or params.get("SmsSid")):
            yield from self._call(params, payload)
        elif kit.text(params.get("MessageSid")) or kit.text(params.get("SmsSid")):
            status = (kit.text(params.get("MessageStatus")) or "").lower()
            if status and status != "received":
                yield from self._status(params, payload, status)
            else:
                yield self._inbound(params, payload)
        else:
            raise ValidationFailed(
                self.name, "payload", "MessageSid", "neither a Messaging nor a Voice webhook (no MessageSid or CallSid)"
            )

    def _text(self, payload: RawPayload) -> str:
        try:
            return payload.body.decode("utf-8-sig")
        except UnicodeDecodeError:
            raise ValidationFailed(self.name, "payload", "body", "not UTF-8 text") from None

    def _pairs(self, text: str) -> list[tuple[str, str]]:
        """Form parameters in order, blank values kept, duplicates kept."""
        stripped = text.strip()
        if stripped.startswith(("{", "[")):
            raise ValidationFailed(self.name, "payload", "body", "JSON, not Twilio's form parameters")
        if _BROKEN_ESCAPE.search(stripped):
            raise ValidationFailed(self.name, "payload", "body", "a broken percent-escape in the form parameters")
        try:
            return urllib.parse.parse_qsl(stripped, keep_blank_values=True, strict_parsing=True, errors="strict")
        except (ValueError, UnicodeDecodeError):
            raise ValidationFailed(self.name, "payload", "body", "not form parameters (name=value&...)") from None

    def _params(self, payload: RawPayload) -> dict[str, str]:
        """The webhook's parameters: the form body, else (a GET webhook) the URL's query;
        the first of a repeated name wins."""
        text = self._text(payload)
        pairs = self._pairs(text) if text.strip() else []
        if not pairs and payload.url:
            query = urllib.parse.urlsplit(payload.url).query
            pairs = self._pairs(query) if query else []
        if not pairs:
            raise ValidationFailed(self.name, "payload", "body", "empty: no form parameters")
        params: dict[str, str] = {}
        for key, value in pairs:
            params.setdefault(key.strip(), value)
        return params

    # ------------------------------------------------------------------ messages

    def _inbound(self, params: Mapping[str, str], payload: RawPayload) -> LeadEvent | Rejected:
        """An inbound SMS, MMS or WhatsApp message from the person (``From``)."""
        sid = _sid(params.get("MessageSid") or params.get("SmsSid"))
        if sid is None:
            return Rejected("#0", "MessageSid", "not a Twilio message id")
        person = self._person(params, "From", sid)
        if isinstance(person, Rejected):
            return person
        phone, channel, region = person
        practice_line = _strip_channel(params.get("To"))
        location, campaign = self._line(practice_line)
        occurred_at = payload.received_at  # Twilio's message webhook carries no time

        text = params.get("Body")  # absent (not blank) from an MMS without text
        media = _media(params)
        attributes: dict[str, Any] = {"message_sid": sid, "media_count": len(media), "has_text": bool(text)}
        segments = _int(params.get("NumSegments"))
        if segments is not None:
            attributes["segments"] = segments
        types = [t for _, t in media if t]
        if types:
            attributes["media_content_types"] = types
        if practice_line:
            attributes["practice_number"] = practice_line
        # the text, then one line per attachment link (links can show PHI: encrypted body)
        body_parts = ([text] if text else []) + [f"media: {url}" for url, _ in media if url]
        body = "\n".join(body_parts) if body_parts else ("" if text is not None else None)

        # the channel is part of the key: a WhatsApp and an SMS message are never one event
        key = f"sms.received:{channel}:{sid}"
        consents: list[ConsentSignal] = []
        signal = _keyword_signal(text, params.get("OptOutType"))
        if signal is not None:
            status, method, keyword = signal
            attributes["consent_keyword"] = keyword.lower()
            if method == "free_text_reply":
                attributes["consent_review"] = "revocation_requested"
            consents.append(
                ConsentSignal(
                    contact_point_kind="phone",
                    channel=channel,
                    purpose="marketing",
                    status=status,
                    occurred_at=occurred_at,
                    idempotency_key=f"{key}:consent:{channel}:marketing:{status}",
                    evidence={
                        "method": method,
                        "source": self.name,
                        "vendor": "twilio",
                        "message_sid": sid,
                        **({"keyword": keyword} if method == "keyword_reply" else {"requested": "revoked"}),
                    },
                )
            )
        elif text is not None and text.strip().upper().strip(_KEYWORD_PUNCTUATION) in HELP_KEYWORDS:
            attributes["consent_keyword"] = "help"

        draft = InteractionDraft(
            kind="sms.received",
            occurred_at=occurred_at,
            idempotency_key=key,
            channel=channel,
            direction="inbound",
            location=location,
            body=body,
            attributes=attributes,
        )
        return LeadEvent(
            source=self.name,
            record_ref=sid,
            phones=(phone,),
            name_confidence="low",
            region=region,
            location=location,
            touchpoint=Touchpoint(campaign=campaign),
            interactions=(draft,),
            consents=tuple(consents),
            dropped_fields=_geo_dropped(params, ("From",)),
        )

    def _status(self, params: Mapping[str, str], payload: RawPayload, status: str) -> Iterator[LeadEvent | Rejected]:
        """A status callback of a message the practice sent to the person (``To``)."""
        sid = _sid(params.get("MessageSid") or params.get("SmsSid"))
        if sid is None:
            yield Rejected("#0", "MessageSid", "not a Twilio message id")
            return
        if status not in MESSAGE_STATUS_KINDS:
            yield Rejected(sid, "MessageStatus", "not a Twilio message status")
            return
        kind = MESSAGE_STATUS_KINDS[status]
        error = kit.text(params.get("ErrorCode"))
        if kind is None and error != UNSUBSCRIBED_ERROR:
            return
        person = self._person(params, "To", sid)
        if isinstance(person, Rejected):
            yield person
            return
        phone, channel, region = person
        practice_line = _strip_channel(params.get("From"))
        location, _ = self._line(practice_line)
        occurred_at = payload.received_at
        key = f"{kind or 'sms.status'}:{sid}:{status}:{error or ''}"
        attributes: dict[str, Any] = {"message_sid": sid, "message_status": status}
        if error:
            attributes["error_code"] = error[:16]
        if practice_line:
            attributes["practice_number"] = practice_line
        interactions: list[InteractionDraft] = []
        if kind is not None:
            interactions.append(
                InteractionDraft(
                    kind=kind,
                    occurred_at=occurred_at,
                    idempotency_key=key,
                    channel=channel,
                    direction="outbound",
                    location=location,
                    attributes=attributes,
                )
            )
        consents: list[ConsentSignal] = []
        if error == UNSUBSCRIBED_ERROR:
            # Twilio refuses to send to a number that replied STOP: the carrier-level opt-out
            # is the person's revocation (47 CFR 64.1200(a)(10)), recorded for that number
            consents.append(
                ConsentSignal(
                    contact_point_kind="phone",
                    channel=channel,
                    purpose="marketing",
                    status="revoked",
                    occurred_at=occurred_at,
                    idempotency_key=f"twilio.21610:{sid}:consent:{channel}:marketing",
                    evidence={
                        "method": "carrier_opt_out",
                        "source": self.name,
                        "vendor": "twilio",
                        "error_code": UNSUBSCRIBED_ERROR,
                        "message_sid": sid,
                    },
                )
            )
        yield LeadEvent(
            source=self.name,
            record_ref=sid,
            phones=(phone,),
            name_confidence="low",
            region=region,
            location=location,
            interactions=tuple(interactions),
            consents=tuple(consents),
            dropped_fields=_geo_dropped(params, ("To",)),
        )

    # ------------------------------------------------------------------ calls

    def _call(self, params: Mapping[str, str], payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """A voice status callback or a recording action of one call."""
        sid = _sid(params.get("CallSid"))
        if sid is None:
            yield Rejected("#0", "CallSid", "not a Twilio call id")
            return
        direction_text = (kit.text(params.get("Direction")) or "inbound").lower()
        outbound = direction_text.startswith("outbound")
        status = (kit.text(params.get("CallStatus")) or "").lower()
        recording = _sid(params.get("RecordingSid"))
        answered_by = kit.text(params.get("AnsweredBy"))
        if recording is not None:
            kind: str | None = "call.voicemail"
        elif status not in CALL_STATUS_KINDS:
            yield Rejected(sid, "CallStatus", "missing or not a Twilio call status")
            return
        else:
            kind = CALL_STATUS_KINDS[status]
            if kind == "call.completed" and answered_by and answered_by.lower().startswith(("machine", "fax")):
                kind = "call.voicemail"
        if kind is None:
            return
        person_field = "To" if outbound else "From"
        if not kit.text(params.get(person_field)):
            person_field = "Called" if outbound else "Caller"
        person = self._person(params, person_field, sid)
        if isinstance(person, Rejected):
            yield person
            return
        phone, _, region = person
        practice_field = ("From", "Caller") if outbound else ("To", "Called")
        practice_line = _strip_channel(params.get(practice_field[0]) or params.get(practice_field[1]))
        location, campaign = self._line(practice_line)

        occurred_at = payload.received_at
        stamp = kit.text(params.get("Timestamp"))
        if stamp is not None:
            parsed = _rfc2822(stamp)
            if parsed is None:
                yield Rejected(sid, "Timestamp", "not an RFC 2822 date and time")
                return
            occurred_at = parsed

        attributes: dict[str, Any] = {
            "call_sid": sid,
            "call_status": status or None,
            "answered": kind == "call.completed",
        }
        duration = _int(params.get("CallDuration"))
        if duration is not None:
            attributes["duration_seconds"] = duration
        if answered_by:
            attributes["answered_by"] = answered_by[:32]
        sequence = _int(params.get("SequenceNumber"))
        if sequence is not None:
            attributes["sequence_number"] = sequence
        callback = kit.text(params.get("CallbackSource"))
        if callback:
            attributes["callback_source"] = callback[:64]
        if practice_line:
            attributes["practice_number"] = practice_line
        body = None
        if recording is not None:
            attributes["recording_sid"] = recording
            length = _int(params.get("RecordingDuration"))
            if length is not None:
                attributes["recording_duration_seconds"] = length
            url = kit.text(params.get("RecordingUrl"))
            if url:
                body = f"recording: {url}"  # a voicemail can hold PHI: encrypted body only
            key = f"call.voicemail:{sid}:{recording}"
        else:
            key = f"{kind}:{sid}:{status}:{'' if sequence is None else sequence}"
        draft = InteractionDraft(
            kind=kind,
            occurred_at=occurred_at,
            idempotency_key=key,
            channel="phone",
            direction="outbound" if outbound else "inbound",
            location=location,
            body=body,
            attributes=attributes,
        )
        sides = ("To", "Called") if outbound else ("From", "Caller")
        yield LeadEvent(
            source=self.name,
            record_ref=sid,
            phones=(phone,),
            name_confidence="low",
            region=region,
            location=location,
            touchpoint=Touchpoint() if outbound else Touchpoint(campaign=campaign),
            interactions=(draft,),
            dropped_fields=_geo_dropped(params, sides),
        )

    # ------------------------------------------------------------------ parts

    def _person(self, params: Mapping[str, str], field: str, ref: str) -> tuple[str, str, str | None] | Rejected:
        """The person's number in E.164, the channel (``whatsapp`` for a ``whatsapp:``
        address, else ``sms``) and the number's country when Twilio gives it."""
        raw = kit.text(params.get(field))
        if raw is None:
            return Rejected(ref, field, "missing")
        channel = "sms"
        if raw.lower().startswith("whatsapp:"):
            channel, raw = "whatsapp", raw.split(":", 1)[1].strip()
        elif ":" in raw:
            return Rejected(ref, field, "not a phone number (an address of another channel)")
        country = kit.text(params.get(f"{field}Country"))
        region = country.upper() if country and len(country) == 2 and country.isalpha() else None
        if any(c.isalpha() for c in raw):
            return Rejected(ref, field, "not a phone number (an alphanumeric sender)")
        try:
            e164, _ = normalize_phone(raw, region or self.region)
        except IdentityError:
            return Rejected(ref, field, "not a phone number (a short code, or too short or long)")
        return e164, channel, region

    def _line(self, number: str | None) -> tuple[str | None, str | None]:
        """The location and campaign of the practice's number (a tracking number first)."""
        e164 = kit.practice_e164(number, self.region)
        if e164 is None:
            return None, None
        if e164 in self._tracking:
            return self._tracking[e164]
        return self._lines.get(e164), None


# --------------------------------------------------------------------------- helpers


def twilio_signature(secret: str, url: str, params: list[tuple[str, str]] | Mapping[str, str]) -> bytes:
    """The raw HMAC-SHA1 Twilio computes for a request: ``url`` followed by each parameter
    name immediately followed by its value, names sorted, a repeated name's values sorted
    (https://www.twilio.com/docs/usage/security#validating-requests; twilio-python's
    ``RequestValidator.compute_signature``).

    :param secret: the account's Auth Token.
    :param url: the full request URL as Twilio called it.
    :param params: the POST parameters (pairs, duplicates allowed, or a mapping); empty
        for a GET or a JSON body.
    :returns: the 20 digest bytes (base64 them for the header).
    """
    pairs = list(params.items()) if isinstance(params, Mapping) else list(params)
    values: dict[str, list[str]] = {}
    for name, value in pairs:
        values.setdefault(name, []).append(value)
    signed = url + "".join(name + value for name in sorted(values) for value in sorted(values[name]))
    return kit.hmac_digest(secret, signed.encode("utf-8"), "sha1")


def _url_variants(url: str) -> list[str]:
    """The URL as given, then with its scheme's default port added or removed."""
    out = [url]
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return out
    default = {"https": 443, "http": 80}.get(parts.scheme.lower())
    if default is None or not parts.hostname:
        return out
    userinfo, _, _ = parts.netloc.rpartition("@")
    prefix = f"{userinfo}@" if userinfo else ""
    host = parts.netloc.rpartition("@")[2]
    if port is None:
        netloc = f"{prefix}{host}:{default}"
    elif port == default:
        netloc = prefix + host.rsplit(":", 1)[0]
    else:
        return out
    out.append(urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment)))
    return out


def _keyword_signal(text: str | None, opt_out_type: str | None) -> tuple[str, str, str] | None:
    """``(status, method, keyword)`` of an inbound message's consent meaning, or None.

    ``OptOutType`` (Twilio Advanced Opt-Out) wins; then the whole text as a keyword; then
    a free-text request to stop, which a person must confirm.
    """
    declared = (kit.text(opt_out_type) or "").upper()
    if declared == "STOP":
        return "revoked", "keyword_reply", declared
    if declared == "START":
        return "granted", "keyword_reply", declared
    if declared == "HELP" or text is None:
        return None
    word = text.strip().upper()
    if word in OPT_OUT_KEYWORDS:
        return "revoked", "keyword_reply", word
    if word in OPT_IN_KEYWORDS:
        return "granted", "keyword_reply", word
    bare = word.strip(_KEYWORD_PUNCTUATION)
    if bare in OPT_OUT_KEYWORDS:  # "Stop." / "STOP!": the keyword all the same
        return "revoked", "keyword_reply", bare
    if bare in HELP_KEYWORDS or bare in OPT_IN_KEYWORDS:  # a grant must be the bare keyword
        return None
    folded = " ".join(text.translate(_APOSTROPHES).lower().split())
    if any(p.search(folded) for p in _REVOCATION_PHRASES):
        return "revoked", "free_text_reply", "free_text"
    return None


def _media(params: Mapping[str, str]) -> list[tuple[str | None, str | None]]:
    """``(MediaUrl<n>, MediaContentType<n>)`` for each attachment (``NumMedia`` of them,
    or as many as are listed when ``NumMedia`` is missing)."""
    count = _int(params.get("NumMedia"))
    if count is None:
        count = sum(1 for k in params if k.startswith("MediaUrl"))
    count = max(0, min(count, 10))  # Twilio delivers at most 10 media per message
    return [(kit.text(params.get(f"MediaUrl{i}")), kit.text(params.get(f"MediaContentType{i}"))) for i in range(count)]


def _geo_dropped(params: Mapping[str, str], sides: tuple[str, ...]) -> tuple[str, ...]:
    """Names of the person's number-area fields that were sent (never stored)."""
    out = []
    for side in sides:
        for suffix in _GEO_SUFFIXES:
            name = side + suffix
            if suffix != "Country" and kit.text(params.get(name)) is not None:
                out.append(name)
    return tuple(out)


def _sid(value: Any) -> str | None:
    """A Twilio resource id (two letters and hex: ``SM…``, ``CA…``, ``RE…``), or None."""
    text = kit.text(value)
    if text is None or not _SID.match(text):
        return None
    return text


def _strip_channel(value: Any) -> str | None:
    """A practice number without a channel prefix (``whatsapp:+1…`` → ``+1…``)."""
    text = kit.text(value)
    if text is None:
        return None
    return text.split(":", 1)[1].strip() if ":" in text else text


def _int(value: Any) -> int | None:
    """A non-negative whole number sent as text (``"49"``), or None."""
    text = kit.text(value)
    if text is None or not text.isdigit():
        return None
    return int(text)


def _rfc2822(text: str) -> datetime | None:
    """An RFC 2822 date (``Sun, 25 Mar 2018 09:53:19 +0000``) as aware UTC, or None."""
    from email.utils import parsedate_to_datetime

    try:
        value = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if value.tzinfo is None:  # "-0000": UTC by RFC 2822 §3.3
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`TwilioConnector` as the ``twilio`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(TwilioConnector)
