"""The Twilio SendGrid Event Webhook source connector (``connector = "sendgrid"``).

SendGrid POSTs batches of email events (delivery and engagement) as a JSON array; every
element is one event about one recipient.  This connector turns each element into one
:class:`~carecrm.core.model.domain.LeadEvent` with the recipient's email as its only identity
(SendGrid events carry no name or phone), an interaction of the ``email.*`` vocabulary
and, for unsubscribes and spam complaints, a consent signal.

Vendor documentation used:

* Event Webhook reference (event types, properties, ``category`` string or array, custom
  arguments, ``sg_event_id`` for deduplication, bounce ``type`` bounce/blocked):
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/event
  (formerly https://sendgrid.com/docs/for-developers/tracking-events/event/; source
  github.com/sendgrid/docs ``content/docs/for-developers/tracking-events/event.md``);
* Signed Event Webhook (ECDSA P-256 over timestamp + raw body, headers
  ``X-Twilio-Email-Event-Webhook-Signature`` / ``-Timestamp``, base64 DER public key):
  https://www.twilio.com/docs/sendgrid/for-developers/tracking-events/getting-started-event-webhook-security-features
  with the test vector of github.com/sendgrid/sendgrid-python
  ``test/unit/test_eventwebhook.py``;
* ``sg_machine_open`` (Apple Mail Privacy Protection pre-fetched opens) and
  ``bounce_classification``: the same reference's open and bounce properties.

Mapping (the configuration reference is ``docs/sources/sendgrid.md``):

============================  =====================  ==========================================
SendGrid ``event``            interaction kind       consent signal
============================  =====================  ==========================================
processed                     email.sent
deferred                      email.deferred
delivered                     email.delivered
open                          email.opened           (attribute ``machine_open``)
click                         email.clicked          (attribute ``url`` without its query)
bounce, ``type`` bounce       email.bounced          (``bounce_type`` bounce, permanent)
bounce, ``type`` blocked      email.bounced          (``bounce_type`` blocked, temporary)
dropped                       email.dropped
spamreport                    email.complained       email ``marketing`` revoked
unsubscribe                   email.unsubscribed     email ``marketing`` revoked
group_unsubscribe             email.unsubscribed     email ``marketing:group:<asm_group_id>`` revoked
group_resubscribe             (none)                 email ``marketing:group:<asm_group_id>`` granted
============================  =====================  ==========================================

Privacy rules applied here: the recipient's ``ip`` and ``useragent`` are never kept (their
names are counted in ``dropped_fields``); SMTP texts (``reason``, ``response``) are kept
only with every email address in them replaced by ``[email]``; custom arguments whose name
or value looks like personal data are dropped; idempotency keys hold a keyed digest of the
recipient, never the address (``docs/vocabulary.md``, "Idempotency keys").
"""

from __future__ import annotations

import base64
import binascii
import functools
import json
import logging
import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key, load_pem_public_key

from carecrm.core.errors import ConfigError, ValidationFailed
from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.model.domain import ConsentSignal, InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

__all__ = ["SendGridConnector", "carecrm_register_sources"]

log = logging.getLogger("carecrm.sources.sendgrid")

#: Header carrying the base64 DER ECDSA signature.
SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
#: Header carrying the signing time (Unix seconds, decimal text); it is signed too.
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"

#: SendGrid event → carecrm interaction kind (``group_resubscribe`` has none: it is a
#: consent event only).
KINDS: dict[str, str | None] = {
    "processed": "email.sent",
    "deferred": "email.deferred",
    "delivered": "email.delivered",
    "open": "email.opened",
    "click": "email.clicked",
    "bounce": "email.bounced",
    "dropped": "email.dropped",
    "spamreport": "email.complained",
    "unsubscribe": "email.unsubscribed",
    "group_unsubscribe": "email.unsubscribed",
    "group_resubscribe": None,
}

#: Spellings of event names seen in SendGrid's prose and older payloads.
_EVENT_ALIASES: dict[str, str] = {
    "spam_report": "spamreport",
    "spam report": "spamreport",
    "group unsubscribe": "group_unsubscribe",
    "group resubscribe": "group_resubscribe",
    "groupunsubscribe": "group_unsubscribe",
    "groupresubscribe": "group_resubscribe",
    "opened": "open",
    "clicked": "click",
    "bounced": "bounce",
}

#: Properties SendGrid documents; everything else at the top level of an event is a
#: custom argument (``unique_args`` / ``custom_args``, flattened into the event).
KNOWN_PROPERTIES: frozenset[str] = frozenset(
    {
        "email",
        "timestamp",
        "event",
        "smtp-id",
        "useragent",
        "ip",
        "sg_event_id",
        "sg_message_id",
        "reason",
        "status",
        "response",
        "tls",
        "url",
        "url_offset",
        "attempt",
        "category",
        "type",
        "asm_group_id",
        "bounce_classification",
        "sg_machine_open",
        "sg_content_type",
        "sg_template_id",
        "sg_template_name",
        "sg_user_id",
        "marketing_campaign_id",
        "marketing_campaign_name",
        "marketing_campaign_version",
        "marketing_campaign_split_id",
        "singlesend_id",
        "singlesend_name",
        "template_id",
        "template_version_id",
        "template_name",
        "newsletter",
        "pool",
        "post_type",
        "cert_err",
        "send_at",
        "mc_stats",
        "phase_id",
        "unique_args",
        "custom_args",
    }
)

#: Properties about the recipient's device and network: never stored
#: (``docs/vocabulary.md``, "Data collected by default"); their names are counted in ``dropped_fields``.
PERSONAL_PROPERTIES: tuple[str, ...] = ("ip", "useragent")

#: Known properties copied to attributes as they are (ids and names of the sender's own
#: campaigns and templates; SendGrid warns that these never hold personal data).
_PASSTHROUGH: tuple[str, ...] = (
    "bounce_classification",
    "marketing_campaign_id",
    "marketing_campaign_name",
    "marketing_campaign_version",
    "marketing_campaign_split_id",
    "singlesend_id",
    "singlesend_name",
    "sg_template_id",
    "sg_template_name",
    "template_id",
    "template_version_id",
    "template_name",
)

#: Attribute names this connector sets itself; a custom argument of the same name is
#: dropped rather than overwrite them.
_OWN_ATTRIBUTES: frozenset[str] = frozenset(
    {
        "event",
        "sg_event_id",
        "message_id",
        "categories",
        "machine_open",
        "url",
        "bounce_type",
        "permanent",
        "reason",
        "smtp_status",
        "response",
        "attempt",
        "asm_group_id",
        "scope",
        "tls",
        *_PASSTHROUGH,
    }
)

_EVENT_ID = re.compile(r"^[A-Za-z0-9_=+/.:-]{1,100}$")
_EVENT_NAME = re.compile(r"^[a-z][a-z_ ]{0,39}$")
_MAX_TEXT = 300
_TRUE_WORDS = frozenset({"true", "1", "yes"})
_FALSE_WORDS = frozenset({"false", "0", "no"})
#: Latest accepted event time (year 9999); later or negative ``timestamp`` values are
#: refused rather than guessed.
_MAX_EPOCH = 253402300799


@attrs.frozen(kw_only=True)
class SendGridOptions:
    """The ``[sources.<name>]`` options of a SendGrid source.

    :ivar max_age_seconds: refuse signatures whose timestamp is more than this from the
        payload's ``received_at`` (a positive number of seconds; default
        :data:`carecrm.core.ingest.kit.DEFAULT_MAX_AGE_SECONDS`, 5 minutes, against
        replayed requests).  Old files an operator imports by hand go in with
        ``--no-verify``, which the inbox records.
    :ivar ignore_events: SendGrid event names to skip (``["processed", "deferred"]``).
    :ivar keep_custom_args: keep the sender's ``custom_args`` as attributes (default true).
    """

    max_age_seconds: float | None = kit.DEFAULT_MAX_AGE_SECONDS
    ignore_events: tuple[str, ...] = ()
    keep_custom_args: bool = True


class SendGridConnector(SourceConnector):
    """Parses SendGrid Event Webhook batches (a JSON array of events).

    :param name: the source's name in config (``sendgrid``).
    :param options: ``max_age_seconds`` (refuse signatures whose timestamp is more than
        this from the payload's ``received_at``; default 5 minutes), ``ignore_events`` (SendGrid event names to skip,
        such as ``["processed", "deferred"]``) and ``keep_custom_args`` (default true).
    :param practice: the practice.
    :raises ConfigError: on an unknown or malformed option (naming it).
    """

    connector_id: ClassVar[str] = "sendgrid"
    description: ClassVar[str] = "Twilio SendGrid Event Webhook (signed ECDSA; email.* interactions, unsubscribes)"
    formats: ClassVar[tuple[str, ...]] = ("event webhook batch (JSON array)", "signed event webhook (ECDSA)")
    signed = True

    options_type = SendGridOptions

    def __init__(self, *legacy: Any, name: str | None = None, options: Any = None, settings: Any = None) -> None:
        super().__init__(*legacy, name=name, options=options, settings=settings)
        opts: SendGridOptions = self.options
        max_age = opts.max_age_seconds
        if max_age is not None and (not math.isfinite(max_age) or max_age <= 0):
            raise ConfigError(f"source {self.name!r}: option 'max_age_seconds' must be a positive number of seconds")
        self.max_age_seconds: float | None = max_age
        self.ignore_events: frozenset[str] = frozenset(_event_name(e) for e in opts.ignore_events)
        bad = sorted(self.ignore_events - set(KINDS))
        if bad:
            raise ConfigError(
                f"source {self.name!r}: option 'ignore_events': unknown event {bad[0]!r}; "
                f"known: {', '.join(sorted(KINDS))}"
            )
        self.keep_custom_args = opts.keep_custom_args

    # ------------------------------------------------------------------ signature

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check the Signed Event Webhook signature: ECDSA P-256 with SHA-256 over the
        ``X-Twilio-Email-Event-Webhook-Timestamp`` header value immediately followed by
        the raw body bytes (a trailing CRLF included), signature base64 DER in
        ``X-Twilio-Email-Event-Webhook-Signature``; ``secret`` is the account's
        verification key (base64 DER SubjectPublicKeyInfo, or PEM).

        :raises ValidationFailed: naming the signature header when the signature or its
            timestamp is missing, malformed, stale (``max_age_seconds``) or wrong, or
            when the configured key is not an EC P-256 public key.
        """

        def fail(reason: str) -> ValidationFailed:
            return ValidationFailed(self.name, "payload", SIGNATURE_HEADER, reason)

        signature = kit.signature_from_header(payload, source=self.name, header=SIGNATURE_HEADER, encoding="base64")
        timestamp = (payload.header(TIMESTAMP_HEADER) or "").strip()
        if not timestamp:
            raise fail(f"timestamp header {TIMESTAMP_HEADER} missing")
        if not timestamp.isdigit():
            raise fail(f"timestamp header {TIMESTAMP_HEADER} is not Unix seconds")
        try:
            key = _public_key(secret)
        except ValueError as exc:
            raise fail(f"the configured secret is not a usable verification key ({exc})") from None
        try:
            key.verify(signature, timestamp.encode("ascii") + payload.body, ec.ECDSA(hashes.SHA256()))
        except (InvalidSignature, ValueError):
            raise fail("signature does not match the body (wrong key, or a body altered or re-serialised)") from None
        kit.require_fresh(
            int(timestamp), payload, source=self.name, field=TIMESTAMP_HEADER, max_age_seconds=self.max_age_seconds
        )

    # ------------------------------------------------------------------ parsing

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """One lead event per element of the batch.

        :raises ValidationFailed: when the body is not JSON or not an array of events
            (the payload is quarantined whole); an element that cannot be accepted (no
            email, bad timestamp) is yielded as a :class:`Rejected` while the
            others still go in.
        """
        try:
            data = json.loads(payload.body.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ValidationFailed(self.name, "payload", "body", "not UTF-8 text") from None
        except json.JSONDecodeError:
            raise ValidationFailed(self.name, "payload", "body", "not JSON") from None
        if isinstance(data, dict):  # SendGrid always sends an array; accept a lone event too
            data = [data]
        if not isinstance(data, list):
            raise ValidationFailed(self.name, "payload", "body", "not a JSON array of events")
        for index, element in enumerate(data):
            yield from self._event(index, element)

    def _event(self, index: int, element: Any) -> Iterable[LeadEvent | Rejected]:
        position = f"#{index}"
        if not isinstance(element, dict):
            return [Rejected(position, "event", "not a JSON object")]
        raw_event = element.get("event")
        if not isinstance(raw_event, str) or not raw_event.strip():
            return [Rejected(position, "event", "missing")]
        event = _event_name(raw_event)
        if event not in KINDS:
            # account events (account_status_change) and types added after this connector
            # concern no recipient; the name is vendor vocabulary, logged only when it
            # looks like one
            if _EVENT_NAME.match(event):
                log.info("%s: %s: SendGrid event type %r is not mapped; skipped", self.name, position, event)
            return []
        if event in self.ignore_events:
            return []
        event_id = element.get("sg_event_id")
        event_id = event_id.strip() if isinstance(event_id, str) and event_id.strip() else None
        record = event_id if event_id is not None and _EVENT_ID.match(event_id) else position

        email = element.get("email")
        if not isinstance(email, str) or not email.strip():
            return [Rejected(record, "email", "missing")]
        occurred_at = _epoch(element.get("timestamp"))
        if occurred_at is None:
            return [Rejected(record, "timestamp", "not a Unix time in seconds")]
        group = _group_id(element.get("asm_group_id"))
        if group is None and event in ("group_unsubscribe", "group_resubscribe"):
            return [Rejected(record, "asm_group_id", "missing or not an id")]

        bounce_type = kit.text(element.get("type")) if event == "bounce" else None
        recipient = self.record_digest(email.strip().lower().encode("utf-8"))[:32]
        vendor_id = event_id if event_id is not None and _EVENT_ID.match(event_id) else None
        # no usable vendor id: a digest of the event's own content stands in for it
        key_id = vendor_id or "h" + self.record_digest(kit.canonical_json(element))[:32]
        stamp = int(occurred_at.timestamp())
        key = f"{event}:{(bounce_type or '').lower()[:20]}:{key_id}:{stamp}:{recipient}"

        attributes, dropped = self._attributes(element, event, bounce_type, group)
        touchpoint = self._touchpoint(element, event)
        kind = KINDS[event]
        interactions: list[InteractionDraft] = []
        if kind is not None:
            interactions.append(
                InteractionDraft(
                    kind=kind,
                    occurred_at=occurred_at,
                    idempotency_key=key,
                    channel="email",
                    direction="outbound",
                    attributes=attributes,
                )
            )
        consents = self._consents(event, key, occurred_at, group, vendor_id)
        return [
            LeadEvent(
                source=self.name,
                record_ref=record,
                emails=(email.strip(),),
                name_confidence="low",
                touchpoint=touchpoint,
                interactions=interactions,
                consents=consents,
                dropped_fields=dropped,
            )
        ]

    # ------------------------------------------------------------------ parts

    def _attributes(
        self, element: Mapping[str, Any], event: str, bounce_type: str | None, group: int | None
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Clear attributes of the interaction (no personal data) and the names of the
        properties dropped for data minimization."""
        attributes: dict[str, Any] = {"event": event}
        dropped: list[str] = [p for p in PERSONAL_PROPERTIES if element.get(p) not in (None, "")]
        event_id = element.get("sg_event_id")
        if isinstance(event_id, str) and _EVENT_ID.match(event_id.strip()):
            attributes["sg_event_id"] = event_id.strip()
        message_id = element.get("sg_message_id")
        if isinstance(message_id, str) and message_id.strip():
            # the part before ".filter…" is shared by every event of one message
            attributes["message_id"] = message_id.strip().split(".filter", 1)[0][:_MAX_TEXT]
        categories = _categories(element.get("category"))
        if categories:
            attributes["categories"] = categories
        if event == "open":
            attributes["machine_open"] = _flag(element.get("sg_machine_open")) is True
        if event == "click":
            url = kit.text(element.get("url"))
            if url:
                attributes["url"] = kit.without_query(url)
        if event == "bounce":
            kind = (bounce_type or "bounce").lower()
            attributes["bounce_type"] = kind
            attributes["permanent"] = kind == "bounce"
        if event in ("bounce", "dropped"):
            reason = kit.redacted_text(element.get("reason"), _MAX_TEXT)
            if reason:
                attributes["reason"] = reason
            status = kit.text(element.get("status"))
            if status:
                attributes["smtp_status"] = status[:32]
        if event == "deferred":
            response = kit.redacted_text(element.get("response"), _MAX_TEXT)
            if response:
                attributes["response"] = response
            attempt = _int(element.get("attempt"))
            if attempt is not None:
                attributes["attempt"] = attempt
        if event == "spamreport":
            attributes["scope"] = "global"
        elif event == "unsubscribe":
            attributes["scope"] = "global"
        elif event == "group_unsubscribe":
            attributes["scope"] = "group"
        if group is not None:
            attributes["asm_group_id"] = group
        tls = _flag(element.get("tls"))
        if tls is not None:
            attributes["tls"] = tls
        for name in _PASSTHROUGH:
            value = element.get(name)
            if isinstance(value, str | int | float) and not isinstance(value, bool) and value != "":
                attributes[name] = value[:_MAX_TEXT] if isinstance(value, str) else value
        if self.keep_custom_args:
            dropped.extend(self._custom_args(element, attributes))
        return attributes, tuple(dropped)

    def _custom_args(self, element: Mapping[str, Any], attributes: dict[str, Any]) -> list[str]:
        """Copy custom arguments (unknown top-level keys) into ``attributes``; returns the
        names of those dropped because their name or value looks like personal data."""
        dropped: list[str] = []
        pairs: list[tuple[str, Any]] = []
        for key, value in element.items():
            if key in ("unique_args", "custom_args") and isinstance(value, dict):
                pairs.extend((str(k), v) for k, v in value.items())
            elif key not in KNOWN_PROPERTIES:
                pairs.append((str(key), value))
        for key, value in pairs:
            if key in _OWN_ATTRIBUTES or key in KNOWN_PROPERTIES:
                continue
            if kit.personal_field_name(key) or not kit.plain_value(value):
                dropped.append(key[:64])
                continue
            attributes[key[:64]] = value
        return dropped

    def _touchpoint(self, element: Mapping[str, Any], event: str) -> Touchpoint:
        """Medium ``email`` and source ``sendgrid`` (the channel-group rules' email source),
        the first category (else the Marketing Campaigns / Single Send name) as campaign,
        and for a click the UTM parameters and click ids of the link."""
        fields: dict[str, str | None] = {"source": "sendgrid", "medium": "email"}
        categories = _categories(element.get("category"))
        campaign = categories[0] if categories else None
        if campaign is None:
            for name in ("marketing_campaign_name", "singlesend_name"):
                campaign = kit.text(element.get(name))
                if campaign:
                    break
        fields["campaign"] = campaign or None
        if event == "click":
            url = kit.text(element.get("url"))
            if url:
                fields.update(kit.url_parameters(url))
                fields["landing_page"] = kit.without_query(url)
        return Touchpoint(**{k: (v or None) for k, v in fields.items()})

    def _consents(
        self, event: str, key: str, occurred_at: datetime, group: int | None, event_id: str | None
    ) -> tuple[ConsentSignal, ...]:
        """The consent signal of an unsubscribe, group (un/re)subscribe or spam report."""
        if event in ("spamreport", "unsubscribe"):
            purpose, status = "marketing", "revoked"
        elif event == "group_unsubscribe":
            purpose, status = f"marketing:group:{group}", "revoked"
        elif event == "group_resubscribe":
            purpose, status = f"marketing:group:{group}", "granted"
        else:
            return ()
        method = {
            "spamreport": "spam_complaint",
            "unsubscribe": "unsubscribe_link",
            "group_unsubscribe": "subscription_preferences",
            "group_resubscribe": "subscription_preferences",
        }[event]
        evidence: dict[str, Any] = {"method": method, "source": self.name, "vendor": "sendgrid", "event": event}
        if event_id is not None:
            evidence["sg_event_id"] = event_id
        if group is not None:
            evidence["asm_group_id"] = group
        return (
            ConsentSignal(
                contact_point_kind="email",
                channel="email",
                purpose=purpose,
                status=status,
                occurred_at=occurred_at,
                idempotency_key=f"{key}:consent",
                evidence=evidence,
            ),
        )


# --------------------------------------------------------------------------- helpers


@functools.lru_cache(maxsize=16)
def _public_key(secret: str) -> ec.EllipticCurvePublicKey:
    """The verification key from its base64 DER (SendGrid's UI and API form) or PEM text.

    :raises ValueError: with a reason that never repeats the key.
    """
    text = secret.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = load_pem_public_key(text.encode("ascii"))
        else:
            key = load_der_public_key(base64.b64decode("".join(text.split()), validate=True))
    except (binascii.Error, ValueError, UnsupportedAlgorithm):
        raise ValueError("expected SendGrid's base64 DER public key") from None
    if not isinstance(key, ec.EllipticCurvePublicKey) or not isinstance(key.curve, ec.SECP256R1):
        raise ValueError("not an EC P-256 public key")
    return key


def _event_name(raw: str) -> str:
    name = raw.strip().lower()
    return _EVENT_ALIASES.get(name, name)


def _epoch(value: Any) -> datetime | None:
    """Unix seconds (an integer, or its decimal text) as aware UTC; None when unusable."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, float) and math.isfinite(value):
        value = int(value)
    if not isinstance(value, int) or value < 0 or value > _MAX_EPOCH:
        return None
    return datetime.fromtimestamp(value, UTC)


def _group_id(value: Any) -> int | None:
    """An unsubscribe group id (SendGrid sends an integer; accept its decimal text)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value.strip())
    return None


def _int(value: Any) -> int | None:
    """An integer sent as a number or as text (``attempt`` is the string ``"5"``)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value.strip())
    return None


def _flag(value: Any) -> bool | None:
    """A boolean sent as JSON, as ``0``/``1`` or as ``"true"``/``"false"``/``"yes"``/``"no"``
    (SendGrid documents ``tls`` and ``sg_machine_open`` as numbers or booleans; these words
    are the ones this connector has always read, fewer than the kit's default)."""
    return kit.flag(value, true_words=_TRUE_WORDS, false_words=_FALSE_WORDS)


def _categories(value: Any) -> list[str]:
    """``category`` as a list: SendGrid returns a string or an array, as it was sent."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [c.strip()[:_MAX_TEXT] for c in value if isinstance(c, str) and c.strip()]


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`SendGridConnector` as the ``sendgrid`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(SendGridConnector)
