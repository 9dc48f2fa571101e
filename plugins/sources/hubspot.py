"""The HubSpot webhook source connector (``connector = "hubspot"``).

HubSpot's Webhooks API POSTs a JSON **array** of up to 100 change notifications, each
with ids only: ``eventId`` (unique per subscription), ``subscriptionId``, ``portalId``
(the HubSpot account), ``appId``, ``occurredAt`` (Unix **milliseconds**),
``subscriptionType`` (``contact.creation``, ``contact.propertyChange``, ...),
``attemptNumber`` (0 the first try; retries repeat the ``eventId``), ``objectId`` (the
contact id), ``changeSource``, ``changeFlag``.

A ``contact.creation`` notification is a :class:`~carecrm.core.ingest.pointers.Pointer`:
the inbox keeps it ``pending`` (never an empty contact from the notification alone) until
the contact object read from the CRM API (``GET /crm/v3/objects/contacts/{objectId}``:
``id``, ``createdAt``, ``properties.email``, ``firstname``, ``lastname``, ``phone``,
``mobilephone``, ``zip``, ``city``, ``hs_analytics_source``,
``hs_analytics_source_data_1``/``_2``, ``hs_analytics_first_url``) completes it (``carecrm
inbox complete ID FILE``) as a ``crm.contact_created`` interaction keyed by (portal,
contact), so retries and re-deliveries collapse.  Other subscription types are not read
yet (the payload is kept ``ignored``; ``contact.privacyDeletion`` erasure belongs to the
privacy work).

Vendor documentation used:

* webhooks, the notification fields, batching and retries:
  https://developers.hubspot.com/docs/api/webhooks
* request validation v3 (``X-HubSpot-Signature-v3``: base64 HMAC-SHA256, keyed with the
  app's client secret, of method + URI + body + ``X-HubSpot-Request-Timestamp``; the URI
  with some percent-escapes decoded; reject timestamps older than 5 minutes):
  https://developers.hubspot.com/docs/api/webhooks/validating-requests
* the contact object and its default properties:
  https://developers.hubspot.com/docs/api/crm/contacts
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs

from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.ingest.pointers import CompletesPointers, Pointer
from carecrm.core.model import vocab
from carecrm.core.model.domain import InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

__all__ = ["HubSpotConnector", "HubSpotOptions", "carecrm_register_sources"]

SIGNATURE_HEADER = "X-HubSpot-Signature-v3"
TIMESTAMP_HEADER = "X-HubSpot-Request-Timestamp"
#: The interaction kind of a contact created in HubSpot (registered with the plugin).
KIND = "crm.contact_created"

#: Percent-escapes HubSpot decodes in the URI before signing (its validation guide).
URI_ESCAPES: dict[str, str] = {
    "%3A": ":",
    "%2F": "/",
    "%3F": "?",
    "%40": "@",
    "%21": "!",
    "%24": "$",
    "%27": "'",
    "%28": "(",
    "%29": ")",
    "%2A": "*",
    "%2C": ",",
    "%3B": ";",
}

#: HubSpot's "original source" (``hs_analytics_source``) → marketing channel group.
SOURCE_GROUPS: dict[str, str] = {
    "ORGANIC_SEARCH": "organic_search",
    "PAID_SEARCH": "paid_search",
    "EMAIL_MARKETING": "email",
    "SOCIAL_MEDIA": "organic_social",
    "PAID_SOCIAL": "paid_social",
    "DIRECT_TRAFFIC": "direct",
    "OTHER_CAMPAIGNS": "other",
    "OFFLINE": "other",
}

PROPERTIES = (
    "email,firstname,lastname,phone,mobilephone,zip,city,hs_analytics_source,"
    "hs_analytics_source_data_1,hs_analytics_source_data_2,hs_analytics_first_url"
)


@attrs.frozen(kw_only=True)
class HubSpotOptions:
    """The ``[sources.<name>]`` options of a HubSpot source.

    :ivar max_age_seconds: how far ``X-HubSpot-Request-Timestamp`` may be from receipt
        (default 300, HubSpot's 5 minutes; ``None`` turns the check off).
    """

    max_age_seconds: float | None = kit.DEFAULT_MAX_AGE_SECONDS


class HubSpotConnector(CompletesPointers, SourceConnector):
    """Reads HubSpot webhook notifications (``contact.creation`` kept pending) and
    completes them from CRM contact objects.

    :param name: the source's name in config (``hubspot``); its ``secret`` is the app's
        client secret.
    :param options: :class:`HubSpotOptions`.
    :param settings: the practice's settings.
    """

    connector_id: ClassVar[str] = "hubspot"
    description: ClassVar[str] = (
        "HubSpot webhooks (signature v3; contact.creation kept pending, completed from the CRM contact object)"
    )
    formats: ClassVar[tuple[str, ...]] = (
        "webhook notifications (JSON array; contact.creation pointer, pending)",
        "CRM contact object (JSON, properties)",
    )
    signed = True
    options_type = HubSpotOptions

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check ``X-HubSpot-Signature-v3``: base64 HMAC-SHA256, keyed with the client
        secret, of ``POST`` + the request URI (HubSpot's escapes decoded) + the raw body +
        the ``X-HubSpot-Request-Timestamp`` text; then that the timestamp (milliseconds)
        is within ``max_age_seconds`` of receipt.

        :raises ValidationFailed: naming the header or ``url`` that is missing or wrong,
            or the timestamp header when it is stale.
        """
        signature = kit.signature_from_header(payload, source=self.name, header=SIGNATURE_HEADER, encoding="base64")
        stamp = (payload.header(TIMESTAMP_HEADER) or "").strip()
        if not stamp.isdigit():
            raise ValidationFailed(self.name, "payload", TIMESTAMP_HEADER, "missing or not Unix milliseconds")
        if not payload.url:
            raise ValidationFailed(self.name, "payload", "url", "missing: the request URL is signed (ingest --url)")
        uri = payload.url
        for escape, char in URI_ESCAPES.items():
            uri = uri.replace(escape, char).replace(escape.lower(), char)
        message = b"POST" + uri.encode("utf-8") + payload.body + stamp.encode("ascii")
        if not kit.signatures_match(kit.hmac_digest(secret, message, "sha256"), signature):
            raise ValidationFailed(
                self.name, "payload", SIGNATURE_HEADER, "signature does not match the request (wrong client secret?)"
            )
        kit.require_fresh(
            int(stamp) / 1000,
            payload,
            source=self.name,
            field=TIMESTAMP_HEADER,
            max_age_seconds=self.options.max_age_seconds,
        )

    def _json(self, payload: RawPayload, what: str) -> Any:
        try:
            return json.loads(payload.body.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ValidationFailed(self.name, "payload", what, "not UTF-8 text") from None
        except json.JSONDecodeError:
            raise ValidationFailed(self.name, "payload", what, "not JSON") from None

    def _creations(self, payload: RawPayload) -> Iterator[tuple[str, Mapping[str, Any] | None, Mapping[str, Any]]]:
        """``(ref, None or the (portal, contact) key parts, notification)`` of each
        ``contact.creation`` notification."""
        data = self._json(payload, "body")
        items = data if isinstance(data, list) else [data]
        if not items or not all(isinstance(i, dict) for i in items):
            raise ValidationFailed(self.name, "payload", "body", "not a JSON array of notifications")
        for index, item in enumerate(items):
            if item.get("subscriptionType") != "contact.creation":
                continue
            try:
                portal = kit.identifier(item.get("portalId"))
                contact = kit.identifier(item.get("objectId"))
            except kit.BadValue:
                portal = contact = None
            if portal is None or contact is None:
                yield f"#{index}", None, item
            else:
                yield f"{portal}/{contact}", {"portal": portal, "contact": contact}, item

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected | Pointer]:  # type: ignore[override]
        """A :class:`Pointer` per ``contact.creation`` notification (every item of the
        batch), a :class:`Rejected` for one without ``portalId`` or ``objectId``; other
        subscription types yield nothing.

        :raises ValidationFailed: when the body is not a JSON array (or object) of
            notifications.
        """
        for ref, ids, _item in self._creations(payload):
            if ids is None:
                yield Rejected(ref, "objectId", "missing or not an id (with portalId)")
                continue
            yield Pointer(
                ref=ref,
                fetch=f"CRM API GET /crm/v3/objects/contacts/{ids['contact']}?properties=... (portal {ids['portal']})",
                key=f"{KIND}:{ids['portal']}:{ids['contact']}",
            )

    def complete(self, pointer_payload: RawPayload, fetched: Sequence[RawPayload]) -> Iterator[LeadEvent | Rejected]:
        """The contacts the notifications point to, from CRM contact objects in
        ``fetched`` (one object, or a batch read's ``results[]``), matched by ``id``.

        Yields a :class:`Rejected` for a contact the notifications do not point to.

        :raises ValidationFailed: when a fetched body is not JSON or not a contact object.
        """
        wanted = {ids["contact"]: (ids, item) for _ref, ids, item in self._creations(pointer_payload) if ids}
        for payload in fetched:
            data = self._json(payload, "fetched")
            objs = data.get("results") if isinstance(data, dict) and "results" in data else [data]
            if not isinstance(objs, list) or not all(isinstance(o, dict) and "properties" in o for o in objs):
                raise ValidationFailed(self.name, "payload", "fetched", "not a HubSpot contact object")
            for index, obj in enumerate(objs):
                try:
                    contact = kit.identifier(obj.get("id"))
                except kit.BadValue:
                    contact = None
                if contact is None or contact not in wanted:
                    yield Rejected((contact or f"#{index}")[:64], "id", "not a contact these notifications point to")
                    continue
                ids, item = wanted[contact]
                yield self._contact(obj, ids, item)

    def _contact(self, obj: Mapping[str, Any], ids: Mapping[str, str], item: Mapping[str, Any]) -> LeadEvent | Rejected:
        ref = f"{ids['portal']}/{ids['contact']}"[:64]
        props = obj.get("properties")
        props = props if isinstance(props, dict) else {}

        def prop(name: str) -> str | None:
            return kit.text(props.get(name))

        occurred_at = _millis(item.get("occurredAt")) or _iso(kit.text(obj.get("createdAt")))
        if occurred_at is None:
            return Rejected(ref, "occurredAt", "missing or not Unix milliseconds")
        original = (prop("hs_analytics_source") or "").upper()
        attributes: dict[str, Any] = {
            "portal_id": ids["portal"],
            "external_record_id": ids["contact"],
        }
        for name in ("changeSource", "changeFlag", "subscriptionId", "eventId"):
            value = kit.text(item.get(name))
            if value:
                attributes[name] = value[:64]
        if original:
            attributes["original_source"] = original[:64]
        for name in ("hs_analytics_source_data_1", "hs_analytics_source_data_2"):
            value = prop(name)
            if value:
                attributes[name] = value[:300]
        first_url = prop("hs_analytics_first_url")
        fields: dict[str, str | None] = {}
        if first_url:
            fields.update(kit.url_parameters(first_url))
            fields["landing_page"] = kit.without_query(first_url)[:300]
        touchpoint = Touchpoint(channel_group=SOURCE_GROUPS.get(original), **fields)
        draft = InteractionDraft(
            kind=KIND,
            occurred_at=occurred_at,
            idempotency_key=f"{KIND}:{ids['portal']}:{ids['contact']}",
            direction="inbound",
            attributes=attributes,
        )
        return LeadEvent(
            source=self.name,
            record_ref=ref,
            emails=tuple(v for v in (prop("email"),) if v),
            phones=tuple(v for v in (prop("phone"), prop("mobilephone")) if v),
            first_name=prop("firstname"),
            last_name=prop("lastname"),
            postal_code=prop("zip"),
            city=prop("city"),
            external_ids=((self.name, f"{ids['portal']}/{ids['contact']}"),),
            touchpoint=touchpoint,
            interactions=(draft,),
        )


def _millis(value: Any) -> datetime | None:
    """Unix milliseconds as an aware UTC time (seconds would give a year ~50,000)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


def _iso(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return value.astimezone(UTC) if value.tzinfo is not None else None


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`HubSpotConnector` as the ``hubspot`` source connector, and its
    ``crm.contact_created`` interaction kind.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    vocab.register_kind(KIND)
    register(HubSpotConnector)
