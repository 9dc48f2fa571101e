"""The Mailgun event webhook source connector (``connector = "mailgun"``).

Mailgun POSTs one JSON object per event: ``{"signature": {...}, "event-data": {...}}``.
The ``event-data`` is one delivery or engagement event about one recipient; this connector
turns it into one :class:`~carecrm.core.model.domain.LeadEvent` whose only identity is the
recipient's email, with an interaction of the ``email.*`` vocabulary (the SendGrid
connector's, :mod:`carecrm.plugins.sources.sendgrid`) and, for unsubscribes and spam
complaints, a consent signal.

Vendor documentation used:

* Tracking messages and the webhook event types (accepted, delivered, failed with
  ``severity`` temporary/permanent, opened, clicked, unsubscribed, complained, stored):
  https://documentation.mailgun.com/docs/mailgun/user-manual/tracking-messages/
* Securing webhooks (the ``signature`` block: ``timestamp``, a random 50-character
  ``token``, ``signature`` = hex HMAC-SHA256 of ``timestamp + token`` keyed with the HTTP
  webhook signing key; reject stale timestamps and cache tokens against replays):
  https://documentation.mailgun.com/docs/mailgun/user-manual/webhooks/securing-webhooks

Mapping (the configuration reference is ``docs/sources/mailgun.md``):

=================================  ==================  ======================================
Mailgun ``event``                  interaction kind    consent signal
=================================  ==================  ======================================
accepted                           email.sent
delivered                          email.delivered
failed, ``severity`` temporary     email.deferred      (Mailgun retries)
failed, ``severity`` permanent     email.bounced       none: ``undeliverable`` true, not opted out
failed, ``reason`` suppress-*      email.dropped       (Mailgun refused to send)
opened                             email.opened
clicked                            email.clicked       (attribute ``url`` without its query)
complained                         email.complained    email ``marketing`` revoked
unsubscribed                       email.unsubscribed  email ``marketing`` revoked
=================================  ==================  ======================================

CAN-SPAM (15 U.S.C. 7704(a)(3)-(4)): an unsubscribe is an opt-out of commercial email from
the sender, so it revokes purpose ``marketing`` on the email channel for that address only
(appointment reminders and other channels are untouched); a spam complaint is treated as
the same opt-out.  A bounce only marks the address undeliverable (an attribute of the
``email.bounced`` interaction), never an opt-out.

Privacy: the recipient's ``ip``, the ``user-agent`` and the city and region of
``geolocation`` are never kept (their names are counted in ``dropped_fields``); SMTP texts
keep no email address; ``user-variables`` whose name or value looks like personal data are
dropped (:func:`carecrm.core.ingest.kit.personal_field_name`); idempotency keys hold a keyed
digest of the recipient, never the address.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs

from carecrm.core.errors import ConfigError, ValidationFailed
from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.model.domain import ConsentSignal, InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

__all__ = ["MailgunConnector", "MailgunOptions", "carecrm_register_sources"]

log = logging.getLogger("carecrm.sources.mailgun")

#: Mailgun event name → interaction kind; ``failed`` is refined by severity and reason.
KINDS: dict[str, str | None] = {
    "accepted": "email.sent",
    "delivered": "email.delivered",
    "failed": "email.bounced",
    "opened": "email.opened",
    "clicked": "email.clicked",
    "complained": "email.complained",
    "unsubscribed": "email.unsubscribed",
    "stored": None,  # an inbound message stored by a route: no recipient of the practice's email
}

#: The body field holding the signature block, for errors.
SIGNATURE_FIELD = "signature"
#: How many tokens the replay cache holds at most (the oldest go first).
TOKEN_CACHE_SIZE = 100_000

_EVENT_ID = re.compile(r"^[A-Za-z0-9_=+/.:-]{1,100}$")
_TOKEN = re.compile(r"^[0-9A-Za-z]{20,200}$")
_MAX_TEXT = 300
_MAX_EPOCH = 253402300799
#: Fields about the recipient's device and network that are never stored.
_PERSONAL: tuple[str, ...] = ("ip", "client-info.user-agent", "geolocation.city", "geolocation.region")


@attrs.frozen(kw_only=True)
class MailgunOptions:
    """The ``[sources.<name>]`` options of a Mailgun source.

    :ivar max_age_seconds: refuse a signature whose ``timestamp`` is further than this many
        seconds from the payload's ``received_at`` (default 300, Mailgun's advice); None
        turns the window off (an operator's import of old files uses ``--no-verify``).
    :ivar ignore_events: Mailgun event names to skip (``["accepted"]``).
    """

    max_age_seconds: float | None = kit.DEFAULT_MAX_AGE_SECONDS
    ignore_events: tuple[str, ...] = ()


class MailgunConnector(SourceConnector):
    """Parses Mailgun webhook events (one JSON object with ``signature`` and ``event-data``).

    :param name: the source's name in config (``mailgun``).
    :param options: :class:`MailgunOptions`.
    :param settings: the practice's settings.
    :raises ConfigError: on an unknown or malformed option (naming it).

    Replays: Mailgun's signature covers only ``timestamp + token``, not the event, so a
    captured signature block could be sent again with another ``event-data``.  The
    connector remembers, for every token it verified, a digest of the request's
    ``event-data`` (in memory, per connector instance: the app keeps one per source for
    its lifetime); the same token with another ``event-data`` is refused as a replay, the
    same token with the same event (a retry of a stored payload) is not.  Entries older
    than the freshness window are forgotten, because :func:`kit.require_fresh` refuses
    those tokens anyway.  The memory is per process: several receiver processes behind a
    load balancer each keep their own (see ``docs/sources/mailgun.md``).
    """

    connector_id: ClassVar[str] = "mailgun"
    description: ClassVar[str] = (
        "Mailgun event webhooks (signed HMAC-SHA256 in the body; email.* interactions, unsubscribes)"
    )
    formats: ClassVar[tuple[str, ...]] = ("event webhook (JSON: signature + event-data)",)
    signed = True

    options_type = MailgunOptions

    def __init__(self, *legacy: Any, name: str | None = None, options: Any = None, settings: Any = None) -> None:
        super().__init__(*legacy, name=name, options=options, settings=settings)
        opts: MailgunOptions = self.options
        max_age = opts.max_age_seconds
        if max_age is not None and (not math.isfinite(max_age) or max_age <= 0):
            raise ConfigError(f"source {self.name!r}: option 'max_age_seconds' must be a positive number of seconds")
        self.max_age_seconds: float | None = max_age
        self.ignore_events = frozenset(e.strip().lower() for e in opts.ignore_events)
        bad = sorted(self.ignore_events - set(KINDS))
        if bad:
            raise ConfigError(
                f"source {self.name!r}: option 'ignore_events': unknown event {bad[0]!r}; "
                f"known: {', '.join(sorted(KINDS))}"
            )
        self._tokens: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ signature

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check the body's ``signature`` block: ``signature`` must be the lowercase hex
        HMAC-SHA256 (:func:`kit.hmac_digest`) of ``timestamp`` immediately followed by
        ``token``, keyed with the webhook signing key ``secret``; ``timestamp`` (Unix
        seconds) must lie within ``max_age_seconds`` of receipt; and the ``token`` must not
        have come with another event before (a replay).

        :raises ValidationFailed: field ``signature`` (or ``signature.timestamp`` /
            ``signature.token``) when the block is missing, malformed, wrong, stale or
            replayed; field ``body`` when the body is not JSON.
        """
        data = _load(self.name, payload)
        block = data.get("signature")
        if not isinstance(block, dict):
            raise ValidationFailed(self.name, "payload", SIGNATURE_FIELD, "signature block is missing")
        timestamp = block.get("timestamp")
        token = block.get("token")
        given = block.get("signature")
        if isinstance(timestamp, int) and not isinstance(timestamp, bool):
            timestamp = str(timestamp)
        if not isinstance(timestamp, str) or not timestamp.strip().isdigit():
            raise ValidationFailed(self.name, "payload", "signature.timestamp", "missing or not Unix seconds")
        if not isinstance(token, str) or not _TOKEN.match(token):
            raise ValidationFailed(self.name, "payload", "signature.token", "missing or not a Mailgun token")
        if not isinstance(given, str) or not given.strip():
            raise ValidationFailed(self.name, "payload", SIGNATURE_FIELD, "signature is missing")
        try:
            signature = bytes.fromhex(given.strip())
        except ValueError:
            raise ValidationFailed(self.name, "payload", SIGNATURE_FIELD, "signature is not hex") from None
        expected = kit.hmac_digest(secret.strip(), (timestamp.strip() + token).encode("ascii"), "sha256")
        if not kit.signatures_match(expected, signature):
            raise ValidationFailed(
                self.name, "payload", SIGNATURE_FIELD, "signature does not match timestamp and token (wrong key?)"
            )
        signed_at = int(timestamp.strip())
        kit.require_fresh(
            signed_at, payload, source=self.name, field="signature.timestamp", max_age_seconds=self.max_age_seconds
        )
        self._remember(token, signed_at, data.get("event-data"), payload)

    def _remember(self, token: str, signed_at: float, event_data: Any, payload: RawPayload) -> None:
        """Record ``token`` with a digest of its event; refuse it with another event."""
        digest = hashlib.sha256(kit.canonical_json(event_data)).digest()
        now = payload.received_at.timestamp()
        with self._lock:
            if self.max_age_seconds is not None:
                horizon = now - 2 * self.max_age_seconds
                while self._tokens:
                    first = next(iter(self._tokens.values()))
                    if first[0] >= horizon:
                        break
                    self._tokens.popitem(last=False)
            seen = self._tokens.get(token)
            if seen is not None and seen[1] != digest:
                raise ValidationFailed(
                    self.name, "payload", "signature.token", "token already used by another request (a replay)"
                )
            self._tokens[token] = (signed_at, digest)
            self._tokens.move_to_end(token)
            while len(self._tokens) > TOKEN_CACHE_SIZE:
                self._tokens.popitem(last=False)

    # ------------------------------------------------------------------ parsing

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """The lead event of the body's ``event-data`` (nothing for ``stored`` events, for
        event types this connector does not know and for ``ignore_events``).

        :raises ValidationFailed: field ``body`` when the body is not a JSON object, field
            ``event-data`` when it has none.
        """
        data = _load(self.name, payload)
        event_data = data.get("event-data")
        if not isinstance(event_data, dict):
            raise ValidationFailed(self.name, "payload", "event-data", "missing or not an object")
        yield from self._event(event_data)

    def _event(self, ev: Mapping[str, Any]) -> Iterator[LeadEvent | Rejected]:
        raw_event = ev.get("event")
        if not isinstance(raw_event, str) or not raw_event.strip():
            yield Rejected("#0", "event-data.event", "missing")
            return
        event = raw_event.strip().lower()
        if event not in KINDS:
            if re.match(r"^[a-z_-]{1,40}$", event):
                log.info("%s: Mailgun event type %r is not mapped; skipped", self.name, event)
            return
        if KINDS[event] is None or event in self.ignore_events:
            return
        event_id = kit.text(ev.get("id"))
        record = event_id if event_id is not None and _EVENT_ID.match(event_id) else "#0"
        email = kit.text(ev.get("recipient"))
        if email is None:
            yield Rejected(record, "event-data.recipient", "missing")
            return
        occurred_at = _epoch(ev.get("timestamp"))
        if occurred_at is None:
            yield Rejected(record, "event-data.timestamp", "not a Unix time in seconds")
            return
        severity = (kit.text(ev.get("severity")) or "").lower()
        reason = (kit.text(ev.get("reason")) or "").lower()
        kind = KINDS[event]
        if event == "failed":
            if reason.startswith("suppress"):
                kind = "email.dropped"
            elif severity != "permanent":
                kind = "email.deferred"
        assert kind is not None
        recipient = self.record_digest(email.lower().encode("utf-8"))[:32]
        key_id = record if record != "#0" else "h" + self.record_digest(kit.canonical_json(ev))[:32]
        stamp = int(occurred_at.timestamp() * 1000)
        key = f"{event}:{severity[:20]}:{key_id}:{stamp}:{recipient}"
        attributes, dropped = self._attributes(ev, event, kind, severity, reason, event_id)
        consents: tuple[ConsentSignal, ...] = ()
        if event in ("complained", "unsubscribed"):
            consents = (self._revocation(event, key, occurred_at, event_id),)
        yield LeadEvent(
            source=self.name,
            record_ref=record,
            emails=(email,),
            name_confidence="low",
            touchpoint=self._touchpoint(ev, event),
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
            dropped_fields=dropped,
        )

    # ------------------------------------------------------------------ parts

    def _attributes(
        self, ev: Mapping[str, Any], event: str, kind: str, severity: str, reason: str, event_id: str | None
    ) -> tuple[dict[str, Any], tuple[str, ...]]:
        """Clear attributes (no personal data) and the names of the fields dropped."""
        attributes: dict[str, Any] = {"event": event}
        if event_id is not None and _EVENT_ID.match(event_id):
            attributes["event_id"] = event_id
        message = ev.get("message")
        headers = message.get("headers") if isinstance(message, dict) else None
        if isinstance(headers, dict):
            message_id = kit.text(headers.get("message-id"))
            if message_id:
                attributes["message_id"] = message_id[:_MAX_TEXT]
        tags = _strings(ev.get("tags"))
        if tags:
            attributes["tags"] = tags
        campaigns = _campaigns(ev.get("campaigns"))
        if campaigns:
            attributes["campaigns"] = campaigns
        dropped: list[str] = []
        variables = ev.get("user-variables")
        if isinstance(variables, dict):
            kept: dict[str, Any] = {}
            for name, value in variables.items():
                name = str(name)[:64]
                if kit.personal_field_name(name) or not kit.plain_value(value):
                    dropped.append(f"user-variables.{name}")
                else:
                    kept[name] = value
            if kept:
                attributes["user_variables"] = kept
        status = ev.get("delivery-status")
        if isinstance(status, dict):
            code = status.get("code")
            if isinstance(code, int) and not isinstance(code, bool):
                attributes["smtp_code"] = code
            attempt = status.get("attempt-no")
            if isinstance(attempt, int) and not isinstance(attempt, bool):
                attributes["attempt"] = attempt
            if kind != "email.delivered":
                text = kit.redacted_text(status.get("description"), _MAX_TEXT) or kit.redacted_text(
                    status.get("message"), _MAX_TEXT
                )
                if text:
                    attributes["response"] = text
            tls = kit.flag(status.get("tls"))
            if tls is not None:
                attributes["tls"] = tls
        if event == "failed":
            attributes["severity"] = severity or "unknown"
            if reason:
                attributes["reason"] = reason[:64]
        if kind == "email.bounced":
            attributes["bounce_type"] = "bounce"
            attributes["permanent"] = True
            attributes["undeliverable"] = True  # a bounce is not an opt-out
        if event == "clicked":
            url = kit.text(ev.get("url"))
            if url:
                attributes["url"] = kit.without_query(url)
        if event in ("complained", "unsubscribed"):
            attributes["scope"] = "global"
        flags = ev.get("flags")
        if isinstance(flags, dict) and kit.flag(flags.get("is-test-mode")) is True:
            attributes["test"] = True
        geo = ev.get("geolocation")
        if isinstance(geo, dict):
            country = kit.text(geo.get("country"))
            if country and len(country) <= 3:
                attributes["country"] = country
        client = ev.get("client-info")
        if isinstance(client, dict):
            for src, dst in (
                ("device-type", "device_type"),
                ("client-type", "client_type"),
                ("client-name", "client_name"),
                ("client-os", "client_os"),
            ):
                value = kit.text(client.get(src))
                if value:
                    attributes[dst] = value[:64]
        for path in _PERSONAL:
            head, _, tail = path.partition(".")
            value = ev.get(head)
            if tail:
                value = value.get(tail) if isinstance(value, dict) else None
            if value not in (None, ""):
                dropped.append(path)
        return attributes, tuple(dropped)

    def _touchpoint(self, ev: Mapping[str, Any], event: str) -> Touchpoint:
        """Source ``mailgun``, medium ``email``, campaign = the first campaign's name (else
        the first tag); on a click, the link's UTM parameters and landing page."""
        fields: dict[str, str | None] = {"source": "mailgun", "medium": "email"}
        campaigns = _campaigns(ev.get("campaigns"))
        tags = _strings(ev.get("tags"))
        fields["campaign"] = (campaigns[0] if campaigns else None) or (tags[0] if tags else None)
        if event == "clicked":
            url = kit.text(ev.get("url"))
            if url:
                fields.update(kit.url_parameters(url))
                fields["landing_page"] = kit.without_query(url)
        return Touchpoint(**{k: (v or None) for k, v in fields.items()})

    def _revocation(self, event: str, key: str, occurred_at: datetime, event_id: str | None) -> ConsentSignal:
        """Email marketing revoked for the recipient (CAN-SPAM 15 U.S.C. 7704(a)(4))."""
        evidence: dict[str, Any] = {
            "method": "spam_complaint" if event == "complained" else "unsubscribe_link",
            "source": self.name,
            "vendor": "mailgun",
            "event": event,
        }
        if event_id is not None and _EVENT_ID.match(event_id):
            evidence["event_id"] = event_id
        return ConsentSignal(
            contact_point_kind="email",
            channel="email",
            purpose="marketing",
            status="revoked",
            occurred_at=occurred_at,
            idempotency_key=f"{key}:consent",
            evidence=evidence,
        )


# --------------------------------------------------------------------------- helpers


def _load(source: str, payload: RawPayload) -> dict[str, Any]:
    """The body as a JSON object (a UTF-8 byte-order mark is skipped)."""
    try:
        data = json.loads(payload.body.decode("utf-8-sig"))
    except UnicodeDecodeError:
        raise ValidationFailed(source, "payload", "body", "not UTF-8 text") from None
    except (json.JSONDecodeError, RecursionError):
        raise ValidationFailed(source, "payload", "body", "not JSON") from None
    if not isinstance(data, dict):
        raise ValidationFailed(source, "payload", "body", "not a JSON object")
    return data


def _epoch(value: Any) -> datetime | None:
    """Unix seconds with a fraction (Mailgun sends ``1521472262.908181``) as aware UTC."""
    if isinstance(value, bool):
        return None
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            return None
    if not isinstance(value, int | float) or not math.isfinite(value) or value < 0 or value > _MAX_EPOCH:
        return None
    return datetime.fromtimestamp(value, UTC)


def _strings(value: Any) -> list[str]:
    """A list of short strings (``tags``)."""
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list):
        return []
    return [v.strip()[:_MAX_TEXT] for v in value if isinstance(v, str) and v.strip()]


def _campaigns(value: Any) -> list[str]:
    """Campaign names (else ids) from ``campaigns`` (a list of ``{"id", "name"}``)."""
    if not isinstance(value, list):
        return []
    out: list[str] = []
    for item in value:
        if isinstance(item, dict):
            name = kit.text(item.get("name")) or kit.text(item.get("id"))
            if name:
                out.append(name[:_MAX_TEXT])
        elif isinstance(item, str) and item.strip():
            out.append(item.strip()[:_MAX_TEXT])
    return out


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`MailgunConnector` as the ``mailgun`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(MailgunConnector)
