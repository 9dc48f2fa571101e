"""The Intercom webhook source connector (``connector = "intercom"``).

Intercom POSTs a JSON ``notification_event`` envelope for each subscribed topic: ``id``
(``notif_…``, the same on every retry; ``delivery_attempts`` counts them), ``topic``,
``created_at`` (Unix seconds) and ``data.item``, a contact or a conversation object
(https://developers.intercom.com/docs/references/webhooks/webhook-models).  Both the
current (2.x) models (``contact`` with ``role``; a conversation's ``source`` and
``contacts.contacts[]``) and the 1.x ones (``user`` / ``lead`` objects; a conversation's
``user`` and ``conversation_message``) are read.

Mapping:

==================================================  ========================  ==============
Intercom topic                                      interaction kind          identity
==================================================  ========================  ==============
``contact.lead.created``, ``contact.user.created``,  chat.started              the contact
``contact.created``, ``contact.lead.signed_up``,
``user.created`` (1.x)
other ``contact.*`` / ``user.*`` (updated, tags)    (none: identity, consent)  the contact
``conversation.user.created``                       chat.started              the visitor
``conversation.user.replied``                       chat.message_received     the visitor
``conversation.admin.*``, ``conversation.operator.*`` (nothing: staff side)
``ping``                                            (nothing)
==================================================  ========================  ==============

An Intercom contact is created when a visitor engages the Messenger (a conversation, or
an email given to the bot), so ``contact.*.created`` is recorded as ``chat.started`` with
the attribute ``topic``; the channel is ``chat``.  The conversation id is the thread key
(attribute ``conversation_id``): later replies go on the same thread.

Identity: email (an empty string is no email), phone, name, and the external ids
``("intercom", <contact or user id>)`` and ``("intercom_external_id", <the website's own
user id>)``.  A name Intercom generated for an anonymous visitor ("Rose Poodle from St.
John's": two capitalised words, "from", a place) names nobody: it is not passed on
(counted in ``dropped_fields``) and the event's name confidence is low.

Consent (CAN-SPAM 15 U.S.C. 7704(a)(4): an email opt-out is honoured; TCPA 47 CFR
64.1200(a)(10): a revoked text consent likewise): ``unsubscribed_from_emails`` true and
``marked_email_as_spam`` true revoke email ``marketing`` for the contact's address;
``unsubscribed_from_sms`` true revokes SMS ``marketing`` for its phone; ``sms_consent``
true (and not unsubscribed) grants it, with Intercom's flag as evidence.  A false flag is
no event at all ("not unsubscribed" is not a grant).  ``has_hard_bounced`` marks the
address undeliverable (attribute ``email_hard_bounced``), never an opt-out.

Message bodies are HTML: stored as plain text, in the encrypted ``body`` only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs

from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.model.domain import ConsentSignal, InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

__all__ = ["IntercomConnector", "IntercomOptions", "carecrm_register_sources", "html_text", "is_generated_name"]

#: Header of Intercom's signature: ``sha1=`` + lowercase hex HMAC-SHA1 of the raw body,
#: keyed with the app's client secret
#: (https://developers.intercom.com/docs/references/webhooks/webhook-models#signed-notifications).
SIGNATURE_HEADER = "X-Hub-Signature"

#: Contact topics that record the first contact (an interaction); other contact topics
#: update the identity and consent only.
CREATED_TOPICS: frozenset[str] = frozenset(
    {"contact.created", "contact.lead.created", "contact.user.created", "contact.lead.signed_up", "user.created"}
)
#: Conversation topics by kind (the person's side only).
CONVERSATION_KINDS: Mapping[str, str] = {
    "conversation.user.created": "chat.started",
    "conversation.user.replied": "chat.message_received",
}

#: Intercom's generated visitor names: "<Word> <Word> from <Place>".
_GENERATED_NAME = re.compile(r"^[A-Z][a-z]+ [A-Z][a-z]+ from \S.*$")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_MAX_TEXT = 300
_MAX_EPOCH = 253402300799


@attrs.frozen(kw_only=True)
class IntercomOptions:
    """The ``[sources.<name>]`` options of an Intercom source.

    :ivar keep_generated_names: pass Intercom's generated visitor names on (as
        low-confidence names) instead of dropping them (default false).
    """

    keep_generated_names: bool = False


class IntercomConnector(SourceConnector):
    """Parses Intercom ``notification_event`` webhooks (contacts and conversations).

    :param name: the source's name in config (``intercom``).
    :param options: ``keep_generated_names`` (:class:`IntercomOptions`).
    :param settings: the practice's settings.
    :raises ConfigError: on an unknown or malformed option (naming it).
    """

    connector_id: ClassVar[str] = "intercom"
    description: ClassVar[str] = (
        "Intercom webhooks (signed X-Hub-Signature SHA1; contacts and conversations, chat.* interactions)"
    )
    formats: ClassVar[tuple[str, ...]] = (
        "contact topics (json, 2.x contact and 1.x user/lead)",
        "conversation topics (json, 2.x and 1.x)",
    )
    signed = True

    options_type = IntercomOptions

    def __init__(self, *legacy: Any, name: str | None = None, options: Any = None, settings: Any = None) -> None:
        super().__init__(*legacy, name=name, options=options, settings=settings)
        opts: IntercomOptions = self.options
        self.keep_generated_names = opts.keep_generated_names

    # ------------------------------------------------------------------ signature

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check ``X-Hub-Signature``: ``sha1=`` followed by the hex HMAC-SHA1 of the raw
        body keyed with the app's client secret (``secret``).

        :raises ValidationFailed: naming ``X-Hub-Signature`` when it is missing, lacks
            ``sha1=``, is not hex or does not match.
        """
        given = kit.signature_from_header(
            payload, source=self.name, header=SIGNATURE_HEADER, encoding="hex", prefix="sha1="
        )
        if not kit.signatures_match(kit.hmac_digest(secret, payload.body, "sha1"), given):
            raise ValidationFailed(
                self.name, "payload", SIGNATURE_HEADER, "signature does not match the body (wrong client secret?)"
            )

    # ------------------------------------------------------------------ parsing

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """One lead event per notification (none for ``ping`` and staff-side topics).

        :raises ValidationFailed: when the body is not a JSON notification envelope with
            a ``topic`` and a ``data.item`` object.
        """
        try:
            data = json.loads(payload.body.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ValidationFailed(self.name, "payload", "body", "not UTF-8 text") from None
        except json.JSONDecodeError:
            raise ValidationFailed(self.name, "payload", "body", "not JSON") from None
        if not isinstance(data, dict):
            raise ValidationFailed(self.name, "payload", "body", "not a JSON notification object")
        topic = kit.text(data.get("topic"))
        if topic is None:
            raise ValidationFailed(self.name, "payload", "topic", "missing")
        topic = topic.lower()
        if topic == "ping":
            return
        inner = data.get("data")
        item = inner.get("item") if isinstance(inner, dict) else None
        if not isinstance(item, dict):
            raise ValidationFailed(self.name, "payload", "data.item", "missing or not an object")
        envelope_id = kit.text(data.get("id"))
        if envelope_id is not None and not _ID.match(envelope_id):
            envelope_id = None
        sent_at = _time(data.get("created_at"))
        if topic.startswith(("contact.", "user.")):
            yield self._contact(topic, envelope_id, sent_at, item, payload)
        elif topic in CONVERSATION_KINDS:
            yield self._conversation(topic, envelope_id, sent_at, item, payload)
        # other topics (conversation.admin.*, company.*, visitor.*): nothing to record

    # ------------------------------------------------------------------ contacts

    def _contact(
        self,
        topic: str,
        envelope_id: str | None,
        sent_at: datetime | None,
        item: Mapping[str, Any],
        payload: RawPayload,
    ) -> LeadEvent | Rejected:
        contact_id = _id(item.get("id"))
        ref = contact_id or envelope_id or "#0"
        if contact_id is None:
            return Rejected(ref, "data.item.id", "missing or not an Intercom id")
        occurred_at = _time(item.get("created_at")) if topic in CREATED_TOPICS else None
        occurred_at = occurred_at or sent_at or payload.received_at
        email = kit.text(item.get("email"))
        phone = kit.text(item.get("phone"))
        full_name, dropped, confidence = self._name(item.get("name"))
        role = kit.text(item.get("role")) or kit.text(item.get("type"))
        attributes: dict[str, Any] = {"topic": topic, "intercom_contact_id": contact_id}
        if role:
            attributes["role"] = role[:32]
        if kit.flag(item.get("has_hard_bounced")) is True:
            attributes["email_hard_bounced"] = True
        event_key = envelope_id or f"{contact_id}:{int(occurred_at.timestamp())}"
        interactions: list[InteractionDraft] = []
        if topic in CREATED_TOPICS:
            interactions.append(
                InteractionDraft(
                    kind="chat.started",
                    occurred_at=occurred_at,
                    idempotency_key=f"chat.started:{topic}:{contact_id}",
                    channel="chat",
                    direction="inbound",
                    attributes=attributes,
                )
            )
        consents = self._consents(item, event_key, occurred_at, email is not None, phone is not None)
        return LeadEvent(
            source=self.name,
            record_ref=ref,
            emails=(email,) if email else (),
            phones=(phone,) if phone else (),
            full_name=full_name,
            name_confidence=confidence,
            external_ids=_external_ids(contact_id, item),
            touchpoint=_touchpoint(item),
            interactions=tuple(interactions),
            consents=consents,
            dropped_fields=dropped,
        )

    def _consents(
        self, item: Mapping[str, Any], key: str, at: datetime, has_email: bool, has_phone: bool
    ) -> tuple[ConsentSignal, ...]:
        """The consent signals of a contact's flags (true flags only)."""
        out: list[ConsentSignal] = []

        def signal(kind: str, channel: str, status: str, flag: str) -> None:
            out.append(
                ConsentSignal(
                    contact_point_kind=kind,
                    channel=channel,
                    purpose="marketing",
                    status=status,
                    occurred_at=at,
                    idempotency_key=f"intercom:{key}:consent:{channel}:marketing:{flag}",
                    evidence={"method": "vendor_flag", "source": self.name, "vendor": "intercom", "flag": flag},
                )
            )

        if has_email:
            if kit.flag(item.get("marked_email_as_spam")) is True:
                signal("email", "email", "revoked", "marked_email_as_spam")
            elif kit.flag(item.get("unsubscribed_from_emails")) is True:
                signal("email", "email", "revoked", "unsubscribed_from_emails")
        if has_phone:
            if kit.flag(item.get("unsubscribed_from_sms")) is True:
                signal("phone", "sms", "revoked", "unsubscribed_from_sms")
            elif kit.flag(item.get("sms_consent")) is True:
                signal("phone", "sms", "granted", "sms_consent")
        return tuple(out)

    # ------------------------------------------------------------------ conversations

    def _conversation(
        self,
        topic: str,
        envelope_id: str | None,
        sent_at: datetime | None,
        item: Mapping[str, Any],
        payload: RawPayload,
    ) -> LeadEvent | Rejected:
        conversation_id = _id(item.get("id"))
        ref = conversation_id or envelope_id or "#0"
        if conversation_id is None:
            return Rejected(ref, "data.item.id", "missing or not an Intercom id")
        kind = CONVERSATION_KINDS[topic]
        person = _conversation_person(item)
        if person is None:
            return Rejected(ref, "data.item.user", "no contact on the conversation")
        person_id = _id(person.get("id"))
        if person_id is None:
            return Rejected(ref, "data.item.user.id", "missing or not an Intercom id")
        message, part_id, part_at = _message(item, kind)
        occurred_at = part_at or _time(item.get("created_at")) or sent_at or payload.received_at
        email = kit.text(person.get("email"))
        phone = kit.text(person.get("phone"))
        full_name, dropped, confidence = self._name(person.get("name"))
        attributes: dict[str, Any] = {
            "topic": topic,
            "conversation_id": conversation_id,
            "intercom_contact_id": person_id,
        }
        role = kit.text(person.get("type")) or kit.text(person.get("role"))
        if role:
            attributes["role"] = role[:32]
        assignee = item.get("assignee")
        if isinstance(assignee, dict):
            assignee_type = kit.text(assignee.get("type"))
            if assignee_type:
                attributes["assigned"] = assignee_type != "nobody_admin"
        if part_id:
            attributes["part_id"] = part_id
        key_part = part_id or envelope_id or str(int(occurred_at.timestamp()))
        key = f"{kind}:{conversation_id}" if kind == "chat.started" else f"{kind}:{conversation_id}:{key_part}"
        draft = InteractionDraft(
            kind=kind,
            occurred_at=occurred_at,
            idempotency_key=key,
            channel="chat",
            direction="inbound",
            body=message,
            attributes=attributes,
        )
        return LeadEvent(
            source=self.name,
            record_ref=ref,
            emails=(email,) if email else (),
            phones=(phone,) if phone else (),
            full_name=full_name,
            name_confidence=confidence,
            external_ids=_external_ids(person_id, person),
            interactions=(draft,),
            dropped_fields=dropped,
        )

    def _name(self, value: Any) -> tuple[str | None, tuple[str, ...], str]:
        """The person's name, the names dropped (``("name",)`` for a generated one,
        unless ``keep_generated_names``) and the name confidence (low for a generated
        name, kept or not)."""
        name = kit.text(value)
        if name is None:
            return None, (), "high"
        name = html_text(name) or None
        if name is not None and is_generated_name(name):
            if self.keep_generated_names:
                return name, (), "low"
            return None, ("name",), "low"
        return name, (), "high"


# --------------------------------------------------------------------------- helpers


def is_generated_name(name: str) -> bool:
    """Whether ``name`` has the form of Intercom's generated visitor names ("Rose Poodle
    from St. John's"): two capitalised words, ``from`` and a place."""
    return bool(_GENERATED_NAME.match(name.strip()))


def html_text(value: str) -> str:
    """The text of an HTML fragment: tags removed, a paragraph or line break as a line
    break, character references decoded, runs of spaces folded.  Intercom message bodies
    are HTML (``<p>Hello everyone!</p>``)."""
    from html.parser import HTMLParser

    parts: list[str] = []

    class _Text(HTMLParser):
        def handle_starttag(self, tag: str, attrs: Any) -> None:
            if tag in ("br", "p", "div", "li"):
                parts.append("\n")

        def handle_data(self, data: str) -> None:
            parts.append(data)

    parser = _Text(convert_charrefs=True)
    parser.feed(value)
    parser.close()
    lines = [" ".join(line.split()) for line in "".join(parts).splitlines()]
    return "\n".join(line for line in lines if line)


def _conversation_person(item: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The visitor of a conversation: 1.x ``user``; 2.x the first of
    ``contacts.contacts[]`` merged with the ``source.author`` (which has the email)."""
    user = item.get("user")
    if isinstance(user, dict):
        return user
    contacts = item.get("contacts")
    listed = contacts.get("contacts") if isinstance(contacts, dict) else None
    first = listed[0] if isinstance(listed, list) and listed and isinstance(listed[0], dict) else None
    source = item.get("source")
    author = source.get("author") if isinstance(source, dict) else None
    if first is None:
        return author if isinstance(author, dict) and kit.text(author.get("type")) != "admin" else None
    merged = dict(first)
    if isinstance(author, dict) and kit.text(author.get("id")) == kit.text(first.get("id")):
        for name in ("email", "name", "phone"):
            merged.setdefault(name, author.get(name))
    return merged


def _message(item: Mapping[str, Any], kind: str) -> tuple[str | None, str | None, datetime | None]:
    """The person's message as text, its part id and time: the opening message (2.x
    ``source``, 1.x ``conversation_message``) for a new conversation, the last
    conversation part for a reply."""
    if kind == "chat.message_received":
        parts = item.get("conversation_parts")
        listed = parts.get("conversation_parts") if isinstance(parts, dict) else None
        if isinstance(listed, list) and listed and isinstance(listed[-1], dict):
            last = listed[-1]
            body = kit.text(last.get("body"))
            return (html_text(body) if body else None), _id(last.get("id")), _time(last.get("created_at"))
    opening = item.get("source") if isinstance(item.get("source"), dict) else item.get("conversation_message")
    if isinstance(opening, dict):
        body = kit.text(opening.get("body"))
        return (html_text(body) if body else None), None, None
    return None, None, None


def _external_ids(intercom_id: str, item: Mapping[str, Any]) -> tuple[tuple[str, str], ...]:
    """``("intercom", id)`` and the website's own user id when given (2.x
    ``external_id``, 1.x ``user_id``)."""
    out = [("intercom", intercom_id)]
    own = _id(item.get("external_id")) or _id(item.get("user_id"))
    if own is not None:
        out.append(("intercom_external_id", own))
    return tuple(out)


def _touchpoint(item: Mapping[str, Any]) -> Touchpoint:
    """The contact's UTM parameters and referrer (without its query); nulls stay None."""
    fields: dict[str, str | None] = {}
    for param, field in kit.URL_PARAMETERS.items():
        value = kit.text(item.get(param))
        if value:
            fields[field] = value[:_MAX_TEXT]
    referrer = kit.text(item.get("referrer"))
    if referrer:
        fields["referrer"] = kit.without_query(referrer)[:_MAX_TEXT]
    return Touchpoint(**fields)


def _id(value: Any) -> str | None:
    """An Intercom id (a hex string, or a number sent as text or as a JSON number)."""
    text = kit.text(value)
    if text is None or not _ID.match(text):
        return None
    return text


def _time(value: Any) -> datetime | None:
    """Unix seconds (a number or its text) or an ISO 8601 date-time with an offset, as
    aware UTC; None when missing or unreadable.  Intercom mixes both in one payload."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int | float):
        if not 0 < value <= _MAX_EPOCH:
            return None
        return datetime.fromtimestamp(value, UTC)
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
        if parsed.tzinfo is None or parsed.utcoffset() is None:
            return None
        return parsed.astimezone(UTC)
    return None


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`IntercomConnector` as the ``intercom`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(IntercomConnector)
