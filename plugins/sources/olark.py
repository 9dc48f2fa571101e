"""The Olark live-chat transcript webhook source connector (``connector = "olark"``).

Olark POSTs ``application/x-www-form-urlencoded`` with one parameter, ``data``, whose
value is a JSON ``Conversation`` document (https://www.olark.com/help/webhooks): ``id``
(the conversation), ``items[]`` (``kind`` ``MessageToVisitor`` from an operator,
``MessageToOperator`` from the visitor, ``OfflineMessage`` left while nobody was online;
``timestamp`` as Unix seconds in a string with a fraction, ``"1307116657.1"``),
``visitor`` (``id``, a stable browser id; ``fullName``, ``emailAddress``, ``phoneNumber``,
``countryCode``; ``conversationBeginPage``; ``chat_feedback``; ``customFields``; the
geo-IP ``city``/``region``/``country`` and ``ip``), ``operators`` (staff), ``groups`` and
``tags``.  Olark does not sign its webhooks: protect the endpoint with a secret URL.

Mapping:

=====================================  ======================  ==========================
Olark conversation                     interaction kind        when
=====================================  ======================  ==========================
operator and visitor messages          chat.started            the first message's time
only ``OfflineMessage`` items          chat.offline_message    the first message's time
=====================================  ======================  ==========================

Channel ``chat``, direction inbound, idempotency key ``<kind>:<conversation id>``.  The
whole transcript goes into the encrypted ``body``, a line per message (``visitor:`` or
``practice:``; operators are never named), then the feedback comment.  Attributes (clear):
``conversation_id``, ``message_count``, ``visitor_message_count``, ``last_message_at``,
``tags``, ``groups`` (names, for routing), ``chat_feedback`` (the numeric ratings) and
``custom_fields`` (short plain values that look like no email address or phone).

Identity comes from ``visitor`` only, never from ``operators`` (staff) or an item's
``nickname``: email, full name, phone (read in ``countryCode``'s region; ``country`` is
free text with vendor typos), and the external id ``("olark_visitor", id)``.  A browser
id is shared by everyone using one computer (a family, a clinic's kiosk), so it is only
a hint: the core's matching sends two different people with one browser to review.  The
visitor's IP address, browser, operating system, employer and geo-IP place are not kept
(their names are counted in ``dropped_fields``).  The begin page is the landing page
(without its query), with its UTM parameters.  Olark sends no consent.
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any, ClassVar

import attrs

from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.model.domain import InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

__all__ = ["OlarkConnector", "OlarkOptions", "carecrm_register_sources"]

#: Visitor fields never kept (device, network, geo-IP and employer), by Olark's names.
DROPPED_VISITOR_FIELDS: tuple[str, ...] = (
    "ip",
    "browser",
    "operatingSystem",
    "city",
    "region",
    "country",
    "organization",
)

_BROKEN_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_EMAIL_OR_PHONE = re.compile(r"@|^\+\d{7,15}$|^\(?\d{3}\)?[\s.-]\d{3}[\s.-]\d{4}$")
_MAX_TEXT = 300
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@attrs.frozen(kw_only=True)
class OlarkOptions:
    """The ``[sources.<name>]`` options of an Olark source: none yet (an unknown option
    is refused at config load)."""


class OlarkConnector(SourceConnector):
    """Parses Olark transcript webhooks (form-encoded ``data`` holding the JSON
    conversation; a bare JSON body is read too).

    :param name: the source's name in config (``olark``).
    :param options: none.
    :param settings: the practice's settings (the default region for phones).
    """

    connector_id: ClassVar[str] = "olark"
    description: ClassVar[str] = "Olark live-chat transcript webhooks (unsigned; chat.started, chat.offline_message)"
    formats: ClassVar[tuple[str, ...]] = (
        "conversation transcript (form data=JSON)",
        "offline message (form data=JSON)",
    )
    signed = False

    options_type = OlarkOptions

    # ------------------------------------------------------------------ parsing

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """One lead event per conversation.

        :raises ValidationFailed: when the body is not form parameters with a ``data``
            parameter holding a JSON object (nor such an object itself).
        """
        yield self._conversation(self._document(payload))

    def _document(self, payload: RawPayload) -> Mapping[str, Any]:
        try:
            text = payload.body.decode("utf-8-sig").strip()
        except UnicodeDecodeError:
            raise ValidationFailed(self.name, "payload", "body", "not UTF-8 text") from None
        if not text.startswith("{"):
            if _BROKEN_ESCAPE.search(text):
                raise ValidationFailed(self.name, "payload", "body", "a broken percent-escape in the form parameters")
            try:
                pairs = urllib.parse.parse_qsl(text, keep_blank_values=True, strict_parsing=True, errors="strict")
            except (ValueError, UnicodeDecodeError):
                raise ValidationFailed(self.name, "payload", "body", "not form parameters (data=...)") from None
            found = [value for key, value in pairs if key.strip() == "data"]
            if not found:
                raise ValidationFailed(self.name, "payload", "data", "missing")
            text = found[0]
        try:
            document = json.loads(text)
        except json.JSONDecodeError:
            raise ValidationFailed(self.name, "payload", "data", "not JSON") from None
        if not isinstance(document, dict):
            raise ValidationFailed(self.name, "payload", "data", "not a JSON conversation object")
        return document

    def _conversation(self, doc: Mapping[str, Any]) -> LeadEvent | Rejected:
        conversation_id = kit.text(doc.get("id"))
        if conversation_id is None or not _ID.match(conversation_id):
            return Rejected("#0", "id", "missing or not an Olark conversation id")
        ref = conversation_id
        visitor = doc.get("visitor")
        if not isinstance(visitor, dict):
            return Rejected(ref, "visitor", "missing or not an object")
        raw_items = doc.get("items")
        items = [i for i in raw_items if isinstance(i, dict)] if isinstance(raw_items, list) else []
        if not items:
            return Rejected(ref, "items", "no messages")
        times: list[datetime] = []
        lines: list[str] = []
        visitor_messages = 0
        offline_only = True
        for index, item in enumerate(items):
            item_kind = kit.text(item.get("kind")) or ""
            at = _epoch(item.get("timestamp"))
            if at is None:
                return Rejected(ref, f"items[{index}].timestamp", "not Unix seconds")
            times.append(at)
            if item_kind != "OfflineMessage":
                offline_only = False
            speaker = "practice" if item_kind == "MessageToVisitor" else "visitor"
            if speaker == "visitor":
                visitor_messages += 1
            body = kit.text(item.get("body"))
            if body:
                lines.append(f"{speaker}: {body}")
        kind = "chat.offline_message" if offline_only else "chat.started"

        attributes: dict[str, Any] = {
            "conversation_id": conversation_id,
            "message_count": len(items),
            "visitor_message_count": visitor_messages,
            "last_message_at": max(times).isoformat().replace("+00:00", "Z"),
        }
        tags = doc.get("tags")
        if isinstance(tags, list):
            names = [t.strip()[:64] for t in tags if isinstance(t, str) and t.strip()]
            if names:
                attributes["tags"] = names
        groups = doc.get("groups")
        if isinstance(groups, list):
            group_names = [kit.text(g.get("name")) for g in groups if isinstance(g, dict)]
            kept = [n[:_MAX_TEXT] for n in group_names if n]
            if kept:
                attributes["groups"] = kept
        feedback = visitor.get("chat_feedback")
        if isinstance(feedback, dict):
            ratings = {
                str(k)[:64]: v
                for k, v in feedback.items()
                if isinstance(v, int | float) and not isinstance(v, bool) and k != "comments"
            }
            if ratings:
                attributes["chat_feedback"] = ratings
            comment = kit.text(feedback.get("comments"))
            if comment:
                lines.append(f"feedback: {comment}")  # free text: encrypted body only
        custom = _custom_fields(visitor.get("customFields"))
        if custom:
            attributes["custom_fields"] = custom

        country = kit.text(visitor.get("countryCode"))
        region = country.upper() if country and len(country) == 2 and country.isalpha() else None
        email = kit.text(visitor.get("emailAddress"))
        phone = kit.text(visitor.get("phoneNumber"))
        full_name = kit.text(visitor.get("fullName"))
        visitor_id = kit.text(visitor.get("id"))
        external = (("olark_visitor", visitor_id),) if visitor_id and _ID.match(visitor_id) else ()
        dropped = tuple(f"visitor.{n}" for n in DROPPED_VISITOR_FIELDS if not kit.is_blank(visitor.get(n)))

        draft = InteractionDraft(
            kind=kind,
            occurred_at=min(times),
            idempotency_key=f"{kind}:{conversation_id}",
            channel="chat",
            direction="inbound",
            body="\n".join(lines) or None,
            attributes=attributes,
        )
        return LeadEvent(
            source=self.name,
            record_ref=ref,
            emails=(email,) if email else (),
            phones=(phone,) if phone else (),
            full_name=full_name,
            region=region,
            external_ids=external,
            touchpoint=_touchpoint(kit.text(visitor.get("conversationBeginPage"))),
            interactions=(draft,),
            dropped_fields=dropped,
        )


# --------------------------------------------------------------------------- helpers


def _epoch(value: Any) -> datetime | None:
    """Unix seconds, a number or its text with a fraction (``"1307116657.1"``), as aware
    UTC, exact to the microsecond (read as a decimal, not a float); None when unusable."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        seconds = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not seconds.is_finite() or not 0 < seconds < 253402300800:
        return None
    whole = int(seconds)
    micros = int((seconds - whole) * 1_000_000)
    return _EPOCH + timedelta(seconds=whole, microseconds=micros)


def _custom_fields(value: Any) -> dict[str, Any]:
    """The practice's custom fields with short plain values that look like no email
    address or phone number."""
    if not isinstance(value, dict):
        return {}
    out: dict[str, Any] = {}
    for key, item in value.items():
        if isinstance(item, bool) or not isinstance(item, str | int | float):
            continue
        if isinstance(item, str) and (len(item) > _MAX_TEXT or _EMAIL_OR_PHONE.search(item.strip())):
            continue
        out[str(key)[:64]] = item
    return out


def _touchpoint(page: str | None) -> Touchpoint:
    """The page where the chat began as the landing page, with its UTM parameters."""
    if not page:
        return Touchpoint()
    fields: dict[str, str | None] = dict(kit.url_parameters(page))
    fields["landing_page"] = kit.without_query(page)[:_MAX_TEXT]
    return Touchpoint(**fields)


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`OlarkConnector` as the ``olark`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(OlarkConnector)
