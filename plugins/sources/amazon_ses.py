"""The Amazon SES (through Amazon SNS) source connector (``connector = "amazon_ses"``).

Amazon SES publishes email events to an SNS topic; SNS POSTs each one to the receiver as a
JSON **envelope** (``Type``, ``MessageId``, ``TopicArn``, ``Timestamp``, ``Signature``,
``SigningCertURL`` …) whose ``Message`` is the SES event serialised as a JSON **string**.
This connector reads the envelope, then the event inside it, and yields one
:class:`~carecrm.core.model.domain.LeadEvent` per recipient the event concerns (only the
bounced or complained recipients, not every ``mail.destination``), with an interaction of
the ``email.*`` vocabulary (the SendGrid connector's) and, for complaints and
list-management unsubscribes, a consent signal.

Vendor documentation used:

* SNS HTTP(S) message format and signature verification (the canonical string of
  ``Name\\nvalue\\n`` pairs, SignatureVersion 1 = RSA SHA1, 2 = RSA SHA256, the
  certificate at ``SigningCertURL``):
  https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html and
  https://docs.aws.amazon.com/sns/latest/dg/http-subscription-confirmation-json.html;
* SES notification contents (``notificationType`` Bounce / Complaint / Delivery):
  https://docs.aws.amazon.com/ses/latest/dg/notification-contents.html and the examples at
  https://docs.aws.amazon.com/ses/latest/dg/notification-examples.html;
* SES event publishing contents (``eventType`` Send, Reject, Bounce, Complaint, Delivery,
  Open, Click, DeliveryDelay, Subscription):
  https://docs.aws.amazon.com/ses/latest/dg/event-publishing-retrieving-sns-contents.html.

``SubscriptionConfirmation`` and ``UnsubscribeConfirmation`` envelopes are recognised and
never ingested as leads: they yield nothing (the inbox records the payload ``ignored``) and
the confirmation is left to the operator (visiting ``SubscribeURL`` confirms the topic;
this connector does no I/O).

Consent (CAN-SPAM, 15 U.S.C. 7704(a)(3)-(4)): a complaint (other than feedback type
``not-spam``) revokes purpose ``marketing`` on the email channel for the complaining
address only; an SES subscription-management "unsubscribe all" revokes the same, a topic
opt-out or opt-in changes ``marketing:topic:<name>``; a bounce, permanent or not, only marks
the address undeliverable (``undeliverable`` attribute), never an opt-out.
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.model.domain import ConsentSignal, InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from cryptography.x509 import Certificate

__all__ = ["AmazonSesConnector", "carecrm_register_sources", "signing_string"]

log = logging.getLogger("carecrm.sources.amazon_ses")

#: SES event type → interaction kind.
KINDS: dict[str, str | None] = {
    "Send": "email.sent",
    "Reject": "email.dropped",
    "Delivery": "email.delivered",
    "DeliveryDelay": "email.deferred",
    "Bounce": "email.bounced",
    "Complaint": "email.complained",
    "Open": "email.opened",
    "Click": "email.clicked",
    "Subscription": "email.unsubscribed",
    "RenderingFailure": None,  # a template error: no email left SES
}

#: The envelope fields signed, in order, per SNS message type (absent ``Subject`` skipped).
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    "Notification": ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    "SubscriptionConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
    "UnsubscribeConfirmation": ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type"),
}
#: ``SigningCertURL`` hosts accepted: ``sns.<region>.amazonaws.com`` only.
CERT_HOST = re.compile(r"^sns\.[a-z]{2}(?:-[a-z]+)+-\d\.amazonaws\.com$")

_ID = re.compile(r"^[A-Za-z0-9_.:+/=-]{1,120}$")
_WORD = re.compile(r"^[A-Za-z]{1,40}$")
_MAX_TEXT = 300


def signing_string(envelope: Mapping[str, Any]) -> bytes:
    """The canonical string SNS signs: for each signed field of the envelope's ``Type``
    (:data:`SIGNED_FIELDS`, in that order), ``Name\\nvalue\\n``; ``Subject`` only when
    present.  https://docs.aws.amazon.com/sns/latest/dg/sns-verify-signature-of-message.html

    :raises KeyError: for an envelope ``Type`` SNS does not sign this way.
    """
    parts: list[str] = []
    for name in SIGNED_FIELDS[str(envelope.get("Type"))]:
        value = envelope.get(name)
        if value is None and name == "Subject":
            continue
        parts.append(f"{name}\n{'' if value is None else value}\n")
    return "".join(parts).encode("utf-8")


class AmazonSesConnector(SourceConnector):
    """Parses SNS envelopes of Amazon SES events.

    The ``secret`` is the PEM text of the SNS signing certificate (one or several
    certificates concatenated: the one at the envelope's ``SigningCertURL``, which SNS
    rotates); :meth:`verify` never fetches a certificate.

    :param name: the source's name in config (``amazon_ses``).
    :param options: none.
    :param settings: the practice's settings.
    """

    connector_id: ClassVar[str] = "amazon_ses"
    description: ClassVar[str] = "Amazon SES events through SNS (RSA-signed envelopes; bounces, complaints, opens)"
    formats: ClassVar[tuple[str, ...]] = (
        "SNS Notification envelope of an SES notification (notificationType) or event (eventType)",
        "SNS SubscriptionConfirmation / UnsubscribeConfirmation (recognised, ignored)",
    )
    signed = True

    # ------------------------------------------------------------------ signature

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check the SNS signature: ``SigningCertURL`` must be an ``https`` URL on an
        ``sns.<region>.amazonaws.com`` host (others are refused before anything else), and
        ``Signature`` (base64) must be the RSA PKCS #1 v1.5 signature, SHA1 for
        ``SignatureVersion`` 1 or SHA256 for 2, of :func:`signing_string`, by one of the
        certificates in ``secret`` (PEM).

        :raises ValidationFailed: field ``SigningCertURL``, ``SignatureVersion``,
            ``Signature`` or ``Type`` naming what is wrong; field ``body`` when the
            envelope is not a JSON object.
        """
        from cryptography.exceptions import InvalidSignature
        from cryptography.hazmat.primitives import hashes
        from cryptography.hazmat.primitives.asymmetric import padding, rsa

        envelope = _envelope(self.name, payload)

        def fail(field: str, reason: str) -> ValidationFailed:
            return ValidationFailed(self.name, "payload", field, reason)

        url = envelope.get("SigningCertURL")
        if not isinstance(url, str) or not url.strip():
            raise fail("SigningCertURL", "missing")
        try:
            parts = urllib.parse.urlsplit(url.strip())
            port = parts.port
        except ValueError:
            raise fail("SigningCertURL", "not a URL") from None
        host = parts.hostname or ""
        if (
            parts.scheme != "https"
            or "@" in parts.netloc
            or port not in (None, 443)
            or not CERT_HOST.match(host)
            or not parts.path.endswith(".pem")
        ):
            raise fail("SigningCertURL", "not an https .pem URL on an sns.<region>.amazonaws.com host")
        version = str(envelope.get("SignatureVersion") or "").strip()
        algorithm: hashes.HashAlgorithm
        if version == "1":
            algorithm = hashes.SHA1()  # noqa: S303 - SNS SignatureVersion 1 is RSA-SHA1
        elif version == "2":
            algorithm = hashes.SHA256()
        else:
            raise fail("SignatureVersion", "not 1 (SHA1) or 2 (SHA256)")
        if envelope.get("Type") not in SIGNED_FIELDS:
            raise fail("Type", "not an SNS message type")
        given = envelope.get("Signature")
        try:
            signature = base64.b64decode(str(given or ""), validate=True)
        except (binascii.Error, ValueError):
            raise fail("Signature", "not base64") from None
        if not signature:
            raise fail("Signature", "missing")
        try:
            certificates = _certificates(secret)
        except ValueError:
            raise fail("Signature", "the configured secret is not a PEM certificate") from None
        message = signing_string(envelope)
        for certificate in certificates:
            key = certificate.public_key()
            if not isinstance(key, rsa.RSAPublicKey):
                continue
            try:
                key.verify(signature, message, padding.PKCS1v15(), algorithm)
            except InvalidSignature:
                continue
            return
        raise fail("Signature", "signature does not match the envelope (wrong certificate, or altered)")

    # ------------------------------------------------------------------ parsing

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """One lead event per recipient of the SES event in the envelope; nothing for a
        ``SubscriptionConfirmation`` / ``UnsubscribeConfirmation`` envelope.

        :raises ValidationFailed: field ``body`` when the envelope is not a JSON object,
            ``Type`` when it is no SNS message type, ``Message`` when the message is not a
            JSON object, ``notificationType`` when the SES event has no type.
        """
        envelope = _envelope(self.name, payload)
        kind = envelope.get("Type") or payload.header("x-amz-sns-message-type")
        if kind in ("SubscriptionConfirmation", "UnsubscribeConfirmation"):
            log.info("%s: SNS %s recognised; not a lead (confirm the topic subscription in AWS)", self.name, kind)
            return
        if kind != "Notification":
            raise ValidationFailed(self.name, "payload", "Type", "not an SNS Notification")
        raw = envelope.get("Message")
        try:
            message = json.loads(raw) if isinstance(raw, str) else None
        except (json.JSONDecodeError, RecursionError):
            message = None
        if not isinstance(message, dict):
            raise ValidationFailed(self.name, "payload", "Message", "not a JSON object in a string")
        event = kit.text(message.get("eventType")) or kit.text(message.get("notificationType"))
        if event is None:
            raise ValidationFailed(self.name, "payload", "notificationType", "missing (and no eventType)")
        if event not in KINDS:
            if _WORD.match(event):
                log.info("%s: SES event type %r is not mapped; skipped", self.name, event)
            return
        if KINDS[event] is None:
            return
        yield from self._events(event, message, envelope)

    def _events(
        self, event: str, msg: Mapping[str, Any], envelope: Mapping[str, Any]
    ) -> Iterator[LeadEvent | Rejected]:
        mail = msg.get("mail") if isinstance(msg.get("mail"), dict) else {}
        assert isinstance(mail, dict)
        section_name = {"DeliveryDelay": "deliveryDelay"}.get(event, event[:1].lower() + event[1:])
        section = msg.get(section_name)
        section = section if isinstance(section, dict) else {}
        sns_id = kit.text(envelope.get("MessageId"))
        mail_id = kit.text(mail.get("messageId"))
        feedback_id = kit.text(section.get("feedbackId"))
        ref = next((v for v in (feedback_id, mail_id, sns_id) if v and _ID.match(v)), "#0")

        recipients: list[tuple[str, Mapping[str, Any]]]
        if event == "Bounce":
            recipients = _recipients(section.get("bouncedRecipients"))
        elif event == "Complaint":
            recipients = _recipients(section.get("complainedRecipients"))
        elif event == "DeliveryDelay":
            recipients = _recipients(section.get("delayedRecipients"))
        elif event == "Delivery":
            recipients = [(r, {}) for r in _strings(section.get("recipients"))]
        else:
            recipients = [(r, {}) for r in _strings(mail.get("destination"))]
            if event in ("Open", "Click", "Subscription") and len(recipients) > 1:
                # the event names no recipient of a message sent to several: crediting all
                # of them would be wrong
                log.info("%s: SES %s of a message to several recipients; skipped", self.name, event)
                return
        if not recipients:
            yield Rejected(ref, f"{section_name}.recipients", "no recipient")
            return

        time_text = section.get("timestamp") or (mail.get("timestamp") if event in ("Send", "Reject") else None)
        occurred_at = _iso(time_text)
        delivery_time = False
        if occurred_at is None:
            occurred_at = _iso(envelope.get("Timestamp"))
            delivery_time = True
        if occurred_at is None:
            yield Rejected(ref, f"{section_name}.timestamp", "missing or not an ISO 8601 time")
            return

        common: dict[str, Any] = {"event": event}
        for name, value in (("message_id", mail_id), ("feedback_id", feedback_id), ("sns_message_id", sns_id)):
            if value and _ID.match(value):
                common[name] = value
        if delivery_time:
            common["time_is_delivery"] = True  # no event time: the SNS delivery time stands in
        tags = mail.get("tags")
        if isinstance(tags, dict):
            kept = {
                str(k)[:64]: [str(v)[:_MAX_TEXT] for v in vs if kit.plain_value(v)]
                for k, vs in tags.items()
                if isinstance(vs, list) and not str(k).startswith("ses:") and not kit.personal_field_name(str(k))
            }
            if kept:
                common["tags"] = kept
        subtype = ""
        consent: tuple[str, str, str] | None = None  # (purpose, status, method)
        kind = KINDS[event]
        link = kit.text(section.get("link")) if event == "Click" else None
        if event == "Bounce":
            bounce_type = kit.text(section.get("bounceType")) or "Undetermined"
            sub = kit.text(section.get("bounceSubType"))
            subtype = bounce_type
            common.update(bounce_type=bounce_type, permanent=bounce_type == "Permanent")
            common["undeliverable"] = bounce_type == "Permanent"  # never an opt-out
            if sub:
                common["bounce_subtype"] = sub[:40]
        elif event == "Complaint":
            feedback = (kit.text(section.get("complaintFeedbackType")) or "").lower()
            subtype = feedback
            if feedback and _ID.match(feedback):
                common["feedback_type"] = feedback
            if feedback != "not-spam":
                consent = ("marketing", "revoked", "spam_complaint")
                common["scope"] = "global"
        elif event == "Click" and link:
            common["url"] = kit.without_query(link)
        elif event == "Subscription":
            prefs = section.get("newTopicPreferences")
            prefs = prefs if isinstance(prefs, dict) else {}
            if kit.flag(prefs.get("unsubscribeAll")) is True:
                consent = ("marketing", "revoked", "unsubscribe_link")
                common["scope"] = "global"
                subtype = "all"
            else:
                topics = prefs.get("topicSubscriptionStatus")
                changes = [
                    (kit.text(t.get("topicName")), kit.text(t.get("subscriptionStatus")))
                    for t in (topics if isinstance(topics, list) else [])
                    if isinstance(t, dict)
                ]
                yield from self._topic_events(ref, recipients[0][0], changes, occurred_at, common)
                return

        for index, (email, detail) in enumerate(recipients):
            attributes = dict(common)
            status = kit.text(detail.get("status"))
            if status:
                attributes["smtp_status"] = status[:32]
            diagnostic = kit.text(detail.get("diagnosticCode"))
            if diagnostic:
                attributes["reason"] = kit.EMAIL_IN_TEXT.sub("[email]", diagnostic)[:_MAX_TEXT]
            recipient = self.record_digest(email.lower().encode("utf-8"))[:32]
            key_id = ref if ref != "#0" else "h" + self.record_digest(kit.canonical_json(msg))[:32]
            key = f"{event}:{subtype[:20]}:{key_id}:{int(occurred_at.timestamp() * 1000)}:{recipient}"
            consents: tuple[ConsentSignal, ...] = ()
            if consent is not None:
                consents = (self._consent(email, consent, occurred_at, f"{key}:consent", attributes),)
            assert kind is not None
            yield LeadEvent(
                source=self.name,
                record_ref=ref if len(recipients) == 1 else f"{ref}#{index}",
                emails=(email,),
                name_confidence="low",
                touchpoint=self._touchpoint(link),
                interactions=(
                    InteractionDraft(
                        kind=kind,
                        occurred_at=occurred_at,
                        idempotency_key=key,
                        channel="email",
                        direction="outbound",
                        attributes=attributes,
                    ),
                ),
                consents=consents,
            )

    def _topic_events(
        self,
        ref: str,
        email: str,
        changes: list[tuple[str | None, str | None]],
        occurred_at: datetime,
        common: Mapping[str, Any],
    ) -> Iterator[LeadEvent]:
        """Consent signals of SES subscription-management topic changes."""
        recipient = self.record_digest(email.lower().encode("utf-8"))[:32]
        signals: list[ConsentSignal] = []
        for topic, status in changes:
            if not topic or not _ID.match(topic) or status not in ("OptIn", "OptOut"):
                continue
            key = f"Subscription:{topic}:{status}:{ref}:{int(occurred_at.timestamp() * 1000)}:{recipient}"
            state = "granted" if status == "OptIn" else "revoked"
            signals.append(
                self._consent(
                    email, (f"marketing:topic:{topic}", state, "subscription_preferences"), occurred_at, key, common
                )
            )
        if signals:
            yield LeadEvent(
                source=self.name,
                record_ref=ref,
                emails=(email,),
                name_confidence="low",
                touchpoint=self._touchpoint(None),
                consents=tuple(signals),
            )

    def _consent(
        self, email: str, consent: tuple[str, str, str], at: datetime, key: str, attributes: Mapping[str, Any]
    ) -> ConsentSignal:
        """One consent signal for one address (CAN-SPAM 15 U.S.C. 7704(a)(4))."""
        evidence: dict[str, Any] = {
            "method": consent[2],
            "source": self.name,
            "vendor": "amazon_ses",
            "event": attributes.get("event"),
        }
        for name in ("message_id", "feedback_id", "feedback_type", "sns_message_id"):
            if name in attributes:
                evidence[name] = attributes[name]
        return ConsentSignal(
            contact_point_kind="email",
            contact_point=email,
            channel="email",
            purpose=consent[0],
            status=consent[1],
            occurred_at=at,
            idempotency_key=key,
            evidence=evidence,
        )

    @staticmethod
    def _touchpoint(link: str | None) -> Touchpoint:
        """Source ``amazon_ses``, medium ``email``; on a click, the link's UTM parameters
        and the link without its query as landing page."""
        fields: dict[str, str | None] = {"source": "amazon_ses", "medium": "email"}
        if link:
            fields.update(kit.url_parameters(link))
            fields["landing_page"] = kit.without_query(link)
        return Touchpoint(**fields)


# --------------------------------------------------------------------------- helpers


def _envelope(source: str, payload: RawPayload) -> dict[str, Any]:
    """The SNS envelope (SNS posts JSON as ``text/plain``; a byte-order mark is skipped)."""
    try:
        data = json.loads(payload.body.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ValidationFailed(source, "payload", "body", "not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError):
        raise ValidationFailed(source, "payload", "body", "not JSON") from None
    if not isinstance(data, dict):
        raise ValidationFailed(source, "payload", "body", "not a JSON object (an SNS envelope)")
    return data


@functools.lru_cache(maxsize=8)
def _certificates(secret: str) -> tuple[Certificate, ...]:
    """The PEM certificates in ``secret``.

    :raises ValueError: when there is none (the reason never repeats the secret).
    """
    from cryptography.x509 import load_pem_x509_certificates

    try:
        found = tuple(load_pem_x509_certificates(secret.strip().encode("ascii")))
    except (ValueError, UnicodeEncodeError):
        raise ValueError("not PEM certificates") from None
    if not found:
        raise ValueError("not PEM certificates")
    return found


def _recipients(value: Any) -> list[tuple[str, Mapping[str, Any]]]:
    """``[{"emailAddress": …, …}]`` as (address, detail) pairs."""
    out: list[tuple[str, Mapping[str, Any]]] = []
    for item in value if isinstance(value, list) else []:
        if isinstance(item, dict):
            email = kit.text(item.get("emailAddress"))
            if email:
                out.append((email, item))
    return out


def _strings(value: Any) -> list[str]:
    return [v.strip() for v in value if isinstance(v, str) and v.strip()] if isinstance(value, list) else []


def _iso(value: Any) -> datetime | None:
    """An ISO 8601 time with a zone (``2016-01-27T14:59:44.101Z``) as aware UTC, else None."""
    text = kit.text(value)
    if text is None:
        return None
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`AmazonSesConnector` as the ``amazon_ses`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(AmazonSesConnector)
