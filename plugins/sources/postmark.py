"""The Postmark webhook source connector (``connector = "postmark"``).

Postmark POSTs one JSON object per event, discriminated by ``RecordType``: ``Bounce``,
``SpamComplaint``, ``Delivery``, ``Open``, ``Click`` and ``SubscriptionChange``.  This
connector turns each into one :class:`~carecrm.core.model.domain.LeadEvent` whose only
identity is the recipient's email (``Email`` on bounces and complaints, ``Recipient`` on
the others), with an interaction of the ``email.*`` vocabulary (the SendGrid
connector's) and, for unsubscribes and spam complaints, a consent signal.

Vendor documentation used: the webhooks overview and the per-type pages
(https://postmarkapp.com/developer/webhooks/webhooks-overview, ``bounce-webhook``,
``open-tracking-webhook``, ``click-webhook``, ``delivery-webhook``,
``spam-complaint-webhook``, ``subscription-change-webhook``) and the bounce types of
https://postmarkapp.com/developer/api/bounce-api#bounce-types.

Postmark does not sign webhooks.  It protects them with HTTP Basic credentials in the
webhook URL (``https://user:password@host/path``, sent as an ``Authorization: Basic``
header) and publishes the IP addresses it sends from: with a ``secret`` (``user:password``)
configured, :meth:`PostmarkConnector.verify` requires those credentials; an IP allow-list
belongs in front of the receiver (a reverse proxy or firewall), not in this connector,
which never sees the client address.

Consent (CAN-SPAM, 15 U.S.C. 7704(a)(3)-(4)): an unsubscribe (a ``SubscriptionChange``
with ``SuppressSending`` true and ``SuppressionReason`` ``ManualSuppression``, or a bounce of
type ``Unsubscribe``) revokes purpose ``marketing`` on the email channel for that address
only, whichever message stream it came from (the stream is evidence); a spam complaint
revokes the same; a hard bounce only marks the address undeliverable; an auto-responder
(out-of-office) reply is a delivered email, never an opt-out.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import Any, ClassVar

from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.model.domain import ConsentSignal, InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

__all__ = ["PostmarkConnector", "carecrm_register_sources"]

log = logging.getLogger("carecrm.sources.postmark")

#: ``RecordType`` → (the recipient field, the time field).
RECORD_TYPES: dict[str, tuple[str, str]] = {
    "Bounce": ("Email", "BouncedAt"),
    "SpamComplaint": ("Email", "BouncedAt"),
    "Delivery": ("Recipient", "DeliveredAt"),
    "Open": ("Recipient", "ReceivedAt"),
    "Click": ("Recipient", "ReceivedAt"),
    "SubscriptionChange": ("Recipient", "ChangedAt"),
}

#: Bounce ``Type`` → (interaction kind, permanent, undeliverable, consent method or None).
#: Postmark's bounce types: https://postmarkapp.com/developer/api/bounce-api#bounce-types
BOUNCE_TYPES: dict[str, tuple[str, bool, bool, str | None]] = {
    "HardBounce": ("email.bounced", True, True, None),
    "BadEmailAddress": ("email.bounced", True, True, None),
    "Transient": ("email.bounced", False, False, None),
    "SoftBounce": ("email.bounced", False, False, None),
    "DnsError": ("email.bounced", False, False, None),
    "Blocked": ("email.bounced", False, False, None),
    "DMARCPolicy": ("email.bounced", False, False, None),
    "SpamNotification": ("email.bounced", False, False, None),  # a filter, not the person
    "ManuallyDeactivated": ("email.dropped", False, False, None),
    "AutoResponder": ("email.delivered", False, False, None),  # out-of-office: never an opt-out
    "Unsubscribe": ("email.unsubscribed", False, False, "unsubscribe_request"),
    "SpamComplaint": ("email.complained", False, False, "spam_complaint"),
}
_OTHER_BOUNCE = ("email.bounced", False, False, None)

_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_WORD = re.compile(r"^[A-Za-z]{1,40}$")
_MAX_TEXT = 300
_PERSONAL = ("Geo.IP", "Geo.City", "Geo.Region", "Geo.Zip", "Geo.Coords", "UserAgent")


class PostmarkConnector(SourceConnector):
    """Parses Postmark webhooks (one JSON object, ``RecordType`` says which).

    With a ``secret`` configured (``user:password``, the Basic credentials put in the
    webhook URL in Postmark), :meth:`verify` requires them.

    :param name: the source's name in config (``postmark``).
    :param options: none.
    :param settings: the practice's settings.
    """

    connector_id: ClassVar[str] = "postmark"
    description: ClassVar[str] = "Postmark webhooks (basic auth; bounces, opens, clicks, subscription changes)"
    formats: ClassVar[tuple[str, ...]] = (
        "webhook (JSON: Bounce, SpamComplaint, Delivery, Open, Click, SubscriptionChange)",
    )
    signed = False

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Require the HTTP Basic credentials ``secret`` (``user:password``): from the
        ``Authorization: Basic`` header, else from the user info of the request URL;
        compared in constant time (:func:`kit.signatures_match`).

        :raises ValidationFailed: field ``Authorization`` when there are no credentials,
            they cannot be read, or they differ.
        """

        def fail(reason: str) -> ValidationFailed:
            return ValidationFailed(self.name, "payload", "Authorization", reason)

        given: str | None = None
        header = (payload.header("Authorization") or "").strip()
        if header:
            scheme, _, value = header.partition(" ")
            if scheme.lower() != "basic" or not value.strip():
                raise fail("not HTTP Basic credentials")
            try:
                given = base64.b64decode(value.strip(), validate=True).decode("utf-8")
            except (binascii.Error, ValueError):
                raise fail("Basic credentials that are not base64 UTF-8") from None
        elif payload.url:
            try:
                parts = urllib.parse.urlsplit(payload.url)
            except ValueError:
                raise fail("the request URL cannot be read") from None
            if parts.username is not None:
                given = urllib.parse.unquote(parts.username) + ":" + urllib.parse.unquote(parts.password or "")
        if given is None:
            raise fail("no Basic credentials in the Authorization header or the URL")
        if not kit.signatures_match(secret.strip().encode("utf-8"), given.encode("utf-8")):
            raise fail("the Basic credentials do not match the secret")

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """The lead event of one webhook (nothing for unknown record types and for a
        re-activation the recipient did not ask for).

        :raises ValidationFailed: field ``body`` when the body is not a JSON object; field
            ``RecordType`` when it has none.
        """
        try:
            data = json.loads(payload.body.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ValidationFailed(self.name, "payload", "body", "not UTF-8 text") from None
        except (json.JSONDecodeError, RecursionError):
            raise ValidationFailed(self.name, "payload", "body", "not JSON") from None
        if not isinstance(data, dict):
            raise ValidationFailed(self.name, "payload", "body", "not a JSON object")
        record_type = kit.text(data.get("RecordType"))
        if record_type is None:
            raise ValidationFailed(self.name, "payload", "RecordType", "missing")
        if record_type not in RECORD_TYPES:
            if _WORD.match(record_type):
                log.info("%s: Postmark RecordType %r is not mapped; skipped", self.name, record_type)
            return
        event = self._event(record_type, data)
        if event is not None:
            yield event

    def _event(self, record_type: str, d: Mapping[str, Any]) -> LeadEvent | Rejected | None:
        email_field, time_field = RECORD_TYPES[record_type]
        vendor_id = kit.text(d.get("ID"))
        message_id = kit.text(d.get("MessageID"))
        ref = next((v for v in (vendor_id, message_id) if v and _ID.match(v)), "#0")
        email = kit.text(d.get(email_field))
        if email is None:
            return Rejected(ref, email_field, "missing")
        occurred_at = _iso(d.get(time_field))
        if occurred_at is None:
            return Rejected(ref, time_field, "missing or not an ISO 8601 time with a zone")

        attributes: dict[str, Any] = {"event": record_type}
        if message_id and _ID.match(message_id):
            attributes["message_id"] = message_id
        if vendor_id and _ID.match(vendor_id):
            attributes["postmark_id"] = vendor_id
        tag = kit.text(d.get("Tag"))
        if tag:
            attributes["tag"] = tag[:_MAX_TEXT]
        stream = kit.text(d.get("MessageStream"))
        if stream:
            attributes["message_stream"] = stream[:64]
        subtype = ""
        kind: str | None
        consent: tuple[str, str] | None = None  # (status, method)
        if record_type in ("Bounce", "SpamComplaint"):
            subtype = kit.text(d.get("Type")) or ("SpamComplaint" if record_type == "SpamComplaint" else "Unknown")
            kind, permanent, undeliverable, method = BOUNCE_TYPES.get(subtype, _OTHER_BOUNCE)
            attributes["bounce_type"] = subtype[:40]
            if kind == "email.bounced":
                attributes["permanent"] = permanent
                attributes["undeliverable"] = undeliverable  # a bounce is never an opt-out
            if subtype == "AutoResponder":
                attributes["auto_reply"] = True
            if kit.flag(d.get("Inactive")) is True:
                attributes["suppressed"] = True  # Postmark stopped sending to the address
            if kit.flag(d.get("CanActivate")) is not None:
                attributes["can_activate"] = kit.flag(d.get("CanActivate"))
            details = kit.text(d.get("Details"))
            if details:
                attributes["reason"] = kit.EMAIL_IN_TEXT.sub("[email]", details)[:_MAX_TEXT]
            if method is not None:
                consent = ("revoked", method)
        elif record_type == "Delivery":
            kind = "email.delivered"
        elif record_type == "Open":
            kind = "email.opened"
            first = kit.flag(d.get("FirstOpen"))
            if first is not None:
                attributes["first_open"] = first
            seconds = d.get("ReadSeconds")
            if isinstance(seconds, int) and not isinstance(seconds, bool):
                attributes["read_seconds"] = seconds
        elif record_type == "Click":
            kind = "email.clicked"
            url = kit.text(d.get("OriginalLink"))
            if url:
                attributes["url"] = kit.without_query(url)
            where = kit.text(d.get("ClickLocation"))
            if where:
                attributes["click_location"] = where[:20]
        else:  # SubscriptionChange
            suppress = kit.flag(d.get("SuppressSending"))
            reason = kit.text(d.get("SuppressionReason")) or ""
            origin = kit.text(d.get("Origin")) or ""
            attributes["suppress_sending"] = suppress is True
            if reason and _WORD.match(reason):
                attributes["suppression_reason"] = reason
            if origin and _WORD.match(origin):
                attributes["origin"] = origin
            subtype = f"{'on' if suppress else 'off'}:{reason[:30]}"
            if suppress is not True:
                if origin != "Recipient":
                    return None  # the practice re-activated the address: no consent of the person
                kind, consent = None, ("granted", "resubscribe")
            elif reason == "HardBounce":
                kind = "email.bounced"
                attributes.update(bounce_type="HardBounce", permanent=True, undeliverable=True)
            elif reason == "SpamComplaint":
                kind, consent = "email.complained", ("revoked", "spam_complaint")
            else:  # ManualSuppression: the recipient unsubscribed, or the practice did for them
                method = "unsubscribe_link" if origin == "Recipient" else "suppressed_by_practice"
                kind, consent = "email.unsubscribed", ("revoked", method)
                attributes["scope"] = "global"
        if kind in ("email.unsubscribed", "email.complained"):
            attributes.setdefault("scope", "global")

        dropped: list[str] = []
        self._device(d, attributes, dropped)
        metadata = d.get("Metadata")
        if isinstance(metadata, dict):
            kept: dict[str, Any] = {}
            for name, value in metadata.items():
                name = str(name)[:64]
                if kit.personal_field_name(name) or not kit.plain_value(value):
                    dropped.append(f"Metadata.{name}")
                else:
                    kept[name] = value
            if kept:
                attributes["metadata"] = kept

        recipient = self.record_digest(email.lower().encode("utf-8"))[:32]
        key_id = vendor_id or message_id
        if not key_id or not _ID.match(key_id):
            key_id = "h" + self.record_digest(kit.canonical_json(d))[:32]
        stamp = int(occurred_at.timestamp() * 1000)
        key = f"{record_type}:{subtype[:40]}:{key_id}:{stamp}:{recipient}"
        interactions: tuple[InteractionDraft, ...] = ()
        if kind is not None:
            interactions = (
                InteractionDraft(
                    kind=kind,
                    occurred_at=occurred_at,
                    idempotency_key=key,
                    channel="email",
                    direction="outbound",
                    attributes=attributes,
                ),
            )
        consents: tuple[ConsentSignal, ...] = ()
        if consent is not None:
            evidence: dict[str, Any] = {
                "method": consent[1],
                "source": self.name,
                "vendor": "postmark",
                "event": record_type,
            }
            for name in ("message_stream", "suppression_reason", "origin", "bounce_type", "message_id"):
                if name in attributes:
                    evidence[name] = attributes[name]
            consents = (
                ConsentSignal(
                    contact_point_kind="email",
                    contact_point=email,
                    channel="email",
                    purpose="marketing",
                    status=consent[0],
                    occurred_at=occurred_at,
                    idempotency_key=f"{key}:consent",
                    evidence=evidence,
                ),
            )
        url = kit.text(d.get("OriginalLink")) if record_type == "Click" else None
        fields: dict[str, str | None] = {"source": "postmark", "medium": "email", "campaign": tag}
        if url:
            fields.update(kit.url_parameters(url))
            fields["landing_page"] = kit.without_query(url)
        return LeadEvent(
            source=self.name,
            record_ref=ref,
            emails=(email,),
            name_confidence="low",
            touchpoint=Touchpoint(**{k: (v or None) for k, v in fields.items()}),
            interactions=interactions,
            consents=consents,
            dropped_fields=tuple(dropped),
        )

    @staticmethod
    def _device(d: Mapping[str, Any], attributes: dict[str, Any], dropped: list[str]) -> None:
        """Keep the client family, platform and country; drop IP, user agent and place."""
        client = d.get("Client")
        if isinstance(client, dict):
            family = kit.text(client.get("Family"))
            if family:
                attributes["client_family"] = family[:64]
        os_ = d.get("OS")
        if isinstance(os_, dict):
            family = kit.text(os_.get("Family"))
            if family:
                attributes["os_family"] = family[:64]
        platform = kit.text(d.get("Platform"))
        if platform:
            attributes["platform"] = platform[:32]
        geo = d.get("Geo")
        if isinstance(geo, dict):
            country = kit.text(geo.get("CountryISOCode"))
            if country and len(country) <= 3:
                attributes["country"] = country
        for path in _PERSONAL:
            head, _, tail = path.partition(".")
            value = d.get(head)
            if tail:
                value = value.get(tail) if isinstance(value, dict) else None
            if value not in (None, ""):
                dropped.append(path)


def _iso(value: Any) -> datetime | None:
    """An ISO 8601 time with a zone (``2016-04-27T16:28:50.3963933-04:00``: Python 3.11's
    :meth:`datetime.fromisoformat` reads the 7-digit fraction, truncating it to
    microseconds) as aware UTC; None without a zone or when unreadable."""
    text = kit.text(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return None
    return parsed


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`PostmarkConnector` as the ``postmark`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(PostmarkConnector)
