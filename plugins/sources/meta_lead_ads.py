"""The Meta (Facebook / Instagram) Lead Ads source connector (``connector = "meta_lead_ads"``).

Meta delivers a lead in two steps, and both are read:

1. the **page webhook** (``object: "page"``, ``entry[].changes[]`` with ``field:
   "leadgen"``) carries ids only: ``leadgen_id``, ``page_id``, ``form_id``, ``ad_id``,
   ``adgroup_id``, ``created_time`` (Unix seconds).  Each change is a
   :class:`~carecrm.core.ingest.pointers.Pointer`: the inbox keeps the payload ``pending``
   with the Graph API read each lead needs; one POST can carry several entries and
   several changes, and every one is a lead (changes of other fields are ignored);
2. the **Graph API lead object** (``GET /<LEADGEN_ID>``: ``id``, ``created_time`` as
   ``2015-02-28T08:49:14+0000``, ``ad_id``, ``form_id``, ``field_data[{name, values[]}]``,
   and, read with ``fields=custom_disclaimer_responses`` or in the same call,
   ``custom_disclaimer_responses[{checkbox_key, is_checked}]``) completes it
   (:meth:`MetaLeadAdsConnector.complete`; ``carecrm inbox complete ID FILE...``).  A
   lead object, or a bulk read ``GET /<FORM_ID>/leads`` (``data[]``), can also be
   ingested directly.

Vendor documentation used:

* webhooks for leadgen (the notification, retries):
  https://developers.facebook.com/docs/graph-api/webhooks/getting-started/webhooks-for-leadgen
* payload signing (``X-Hub-Signature-256: sha256=`` + hex HMAC-SHA256 of the raw body
  keyed with the app secret):
  https://developers.facebook.com/docs/graph-api/webhooks/getting-started#validate-payloads
* retrieving leads (the lead object, ``field_data``, ``custom_disclaimer_responses``, the
  bulk read): https://developers.facebook.com/docs/marketing-api/guides/lead-ads/retrieving/

Rules (the corpus notes): ids are read exactly (JSON numbers or strings, never floats; the
number ``123123123123`` and the string ``"123123123123"`` are the same lead); the lead id
is the idempotency key, so Meta's retries collapse; ``values`` is always a list (the
first value for a scalar question, all values for multi-select); custom questions keep
their own names and go into the encrypted body; ``platform: "ig"`` means Instagram;
``is_checked`` is a string, ``"1"`` checked and ``""`` not (``"0"`` is not checked
either); a checkbox's meaning (channel, purpose, the disclosure text) is the form's
configuration, given per ``checkbox_key`` in the ``disclaimers`` option; an unchecked box
records nothing (no consent is not a revocation).
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
from carecrm.core.model.domain import ConsentSignal, InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

__all__ = ["Disclaimer", "MetaLeadAdsConnector", "MetaLeadAdsOptions", "carecrm_register_sources"]

#: Header of the payload signature: ``sha256=`` + hex HMAC-SHA256 of the raw body.
SIGNATURE_HEADER = "X-Hub-Signature-256"

#: The Graph API fields a lead read asks for.
LEAD_FIELDS = (
    "id,created_time,ad_id,ad_name,adset_id,adset_name,campaign_id,campaign_name,form_id,"
    "platform,is_organic,field_data,custom_disclaimer_responses"
)

#: Standard lead-form questions (``field_data[].name``) → what carecrm keeps them as.
EMAIL_FIELDS = ("email", "work_email")
PHONE_FIELDS = ("phone_number", "phone", "work_phone_number")
POSTAL_FIELDS = ("zip_code", "post_code", "postal_code", "zip")

#: Consent channels → the kind of contact point their consent belongs to.
CHANNEL_POINTS: dict[str, str] = {"sms": "phone", "phone": "phone", "whatsapp": "phone", "email": "email"}

_MAX_TEXT = 300
_KIND = "ad_lead.submitted"


@attrs.frozen(kw_only=True)
class Disclaimer:
    """What one custom-disclaimer checkbox of the practice's lead form means.

    :ivar channel: ``sms``, ``phone``, ``whatsapp`` or ``email``: the consent belongs to
        the lead's phone number or email address accordingly.
    :ivar purpose: the consent purpose (``marketing``, ``appointment_reminders``, ...).
    :ivar text: the checkbox's disclosure text as the form shows it (kept as evidence).
    :ivar version: the form's version or date of that text, if known.
    """

    channel: str
    text: str
    purpose: str = "marketing"
    version: str | None = None


@attrs.frozen(kw_only=True)
class MetaLeadAdsOptions:
    """The ``[sources.<name>]`` options of a Meta Lead Ads source.

    :ivar disclaimers: ``checkbox_key`` (``optional_1``) → its :class:`Disclaimer`; a
        checked box without one is kept on the interaction (``consent_checkboxes``) but
        records no consent.
    :ivar test_form_ids: forms whose leads are test leads (Meta's Lead Ads Testing Tool
        makes leads that look real): their interactions get ``test: true``.
    :ivar graph_api_version: the Graph API version named in what to fetch.
    """

    disclaimers: dict[str, Disclaimer] = attrs.Factory(dict)
    test_form_ids: tuple[str, ...] = ()
    graph_api_version: str = "v24.0"


class MetaLeadAdsConnector(CompletesPointers, SourceConnector):
    """Reads Meta Lead Ads page webhooks (pointers, pending) and Graph API lead objects.

    :param name: the source's name in config (``meta_lead_ads``).
    :param options: :class:`MetaLeadAdsOptions`.
    :param settings: the practice's settings.
    :raises ConfigError: on an unknown or malformed option (naming it).
    """

    connector_id: ClassVar[str] = "meta_lead_ads"
    description: ClassVar[str] = (
        "Meta (Facebook/Instagram) Lead Ads: leadgen webhooks kept pending, completed from the "
        "Graph API lead object (ad_lead.submitted, consent checkboxes)"
    )
    formats: ClassVar[tuple[str, ...]] = (
        "page leadgen webhook (JSON pointer, pending)",
        "Graph API lead object (JSON, field_data)",
        "Graph API bulk leads (JSON, data[])",
        "custom_disclaimer_responses (JSON, with a lead)",
    )
    signed = True
    options_type = MetaLeadAdsOptions

    # ------------------------------------------------------------------ signature

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check ``X-Hub-Signature-256``: ``sha256=`` + the lowercase hex HMAC-SHA256 of
        the raw body keyed with the app secret (``secret``).

        :raises ValidationFailed: naming the header when it is missing, malformed or wrong.
        """
        given = kit.signature_from_header(
            payload, source=self.name, header=SIGNATURE_HEADER, encoding="hex", prefix="sha256="
        )
        if not kit.signatures_match(kit.hmac_digest(secret, payload.body, "sha256"), given):
            raise ValidationFailed(
                self.name, "payload", SIGNATURE_HEADER, "signature does not match the body (wrong app secret?)"
            )

    # ------------------------------------------------------------------ parsing

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected | Pointer]:  # type: ignore[override]
        """A :class:`Pointer` per ``leadgen`` change of a page webhook; a lead event per
        lead object (one, or ``data[]`` of a bulk read); a :class:`Rejected` for a change
        without a ``leadgen_id`` or a lead that cannot be read.

        :raises ValidationFailed: when the body is not JSON, or neither a page webhook nor
            a lead object.
        """
        data = self._json(payload, "body")
        if isinstance(data, dict) and "entry" in data:
            yield from self._pointers(data)
            return
        for index, obj in enumerate(_lead_objects(data, self.name)):
            yield self._lead(obj, index, {})

    def _json(self, payload: RawPayload, what: str) -> Any:
        try:
            return json.loads(payload.body.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ValidationFailed(self.name, "payload", what, "not UTF-8 text") from None
        except json.JSONDecodeError:
            raise ValidationFailed(self.name, "payload", what, "not JSON") from None

    def _changes(self, data: Mapping[str, Any]) -> Iterator[tuple[str, str | None, Mapping[str, Any]]]:
        """``(ref, leadgen id or None, change value)`` of each ``leadgen`` change."""
        if data.get("object") != "page":
            raise ValidationFailed(self.name, "payload", "object", "not a page webhook (expected object 'page')")
        entries = data.get("entry")
        if not isinstance(entries, list):
            raise ValidationFailed(self.name, "payload", "entry", "not a list")
        index = 0
        for entry in entries:
            changes = entry.get("changes") if isinstance(entry, dict) else None
            for change in changes if isinstance(changes, list) else ():
                if not isinstance(change, dict) or change.get("field") != "leadgen":
                    continue
                value = change.get("value")
                value = value if isinstance(value, dict) else {}
                try:
                    lead_id = kit.identifier(value.get("leadgen_id"))
                except kit.BadValue:
                    lead_id = None
                yield (lead_id or f"#{index}"), lead_id, value
                index += 1

    def _pointers(self, data: Mapping[str, Any]) -> Iterator[Pointer | Rejected]:
        for ref, lead_id, _value in self._changes(data):
            if lead_id is None:
                yield Rejected(ref, "leadgen_id", "missing or not an id")
                continue
            version = self.options.graph_api_version
            yield Pointer(
                ref=lead_id,
                fetch=f"Graph API GET /{version}/{lead_id}?fields=field_data,custom_disclaimer_responses,...",
                key=f"{_KIND}:{lead_id}",
            )

    # ------------------------------------------------------------------ completion

    def complete(self, pointer_payload: RawPayload, fetched: Sequence[RawPayload]) -> Iterator[LeadEvent | Rejected]:
        """The leads a page webhook points to, from the Graph API responses in
        ``fetched``: lead objects, bulk reads and ``custom_disclaimer_responses`` reads,
        merged by lead ``id``.  The webhook supplies what the lead object lacks
        (``created_time``, ``page_id``, ``form_id``, ``ad_id``, ``adgroup_id``).

        Yields a :class:`Rejected` for an object of a lead the webhook does not point to,
        and for a lead whose ``field_data`` was not fetched.

        :raises ValidationFailed: when a fetched body is not JSON or not a lead object.
        """
        context = {
            lead_id: value for _ref, lead_id, value in self._changes(self._json(pointer_payload, "body")) if lead_id
        }
        merged: dict[str, dict[str, Any]] = {}
        for payload in fetched:
            for obj in _lead_objects(self._json(payload, "fetched"), self.name):
                try:
                    lead_id = kit.identifier(obj.get("id"))
                except kit.BadValue:
                    lead_id = None
                if lead_id is None:
                    raise ValidationFailed(self.name, "payload", "id", "a fetched lead object has no id")
                merged.setdefault(lead_id, {}).update(obj)
        for index, (lead_id, obj) in enumerate(merged.items()):
            if lead_id not in context:
                yield Rejected(lead_id[:64], "id", "not a lead this webhook points to")
            elif "field_data" not in obj:
                yield Rejected(
                    lead_id[:64], "field_data", "missing: fetch the lead object, not only its consent responses"
                )
            else:
                yield self._lead(obj, index, context[lead_id])

    # ------------------------------------------------------------------ the lead

    def _lead(self, obj: Mapping[str, Any], index: int, hint: Mapping[str, Any]) -> LeadEvent | Rejected:
        try:
            lead_id = kit.identifier(obj.get("id"))
        except kit.BadValue:
            lead_id = None
        ref = lead_id[:64] if lead_id else f"#{index}"
        if lead_id is None:
            return Rejected(ref, "id", "missing or not an id")
        fields = obj.get("field_data")
        if fields is None and "custom_disclaimer_responses" in obj:
            return Rejected(ref, "field_data", "missing: consent responses alone name no contact point")
        if not isinstance(fields, list):
            return Rejected(ref, "field_data", "missing or not a list")
        answers: dict[str, list[str]] = {}
        for item in fields:
            if not isinstance(item, dict) or not isinstance(item.get("name"), str):
                return Rejected(ref, "field_data", "an entry without a name")
            values = item.get("values")
            values = values if isinstance(values, list) else [values]
            answers.setdefault(item["name"].strip().lower(), []).extend(v for v in map(kit.text, values) if v)
        occurred_at = _graph_time(obj.get("created_time")) or _epoch(hint.get("created_time"))
        if occurred_at is None:
            return Rejected(ref, "created_time", "missing or not a date and time")

        def first(names: Sequence[str]) -> str | None:
            return next((answers[n][0] for n in names if answers.get(n)), None)

        emails = tuple(v for n in EMAIL_FIELDS for v in answers.get(n, ())[:1])
        phones = tuple(v for n in PHONE_FIELDS for v in answers.get(n, ())[:1])
        standard = {"full_name", "first_name", "last_name", "city", *EMAIL_FIELDS, *PHONE_FIELDS, *POSTAL_FIELDS}
        custom = {n: vs for n, vs in answers.items() if n not in standard}

        ids = {
            name: _id(obj.get(name)) or _id(hint.get(name)) for name in ("page_id", "form_id", "ad_id", "campaign_id")
        }
        ids["adset_id"] = _id(obj.get("adset_id")) or _id(hint.get("adgroup_id"))
        platform = (kit.text(obj.get("platform")) or "").lower()
        attributes: dict[str, Any] = {
            "external_record_id": lead_id,
            "platform": "instagram" if platform == "ig" else "facebook",
        }
        attributes.update({k: v for k, v in ids.items() if v})
        organic = kit.flag(obj.get("is_organic"))
        if organic is not None:
            attributes["is_organic"] = organic
        if custom:
            attributes["questions"] = sorted(custom)
        full_name = first(("full_name",))
        if (ids["form_id"] and ids["form_id"] in self.options.test_form_ids) or (
            full_name and full_name.lower().startswith("<test lead")
        ):
            attributes["test"] = True

        consents, boxes, dropped = self._consents(lead_id, obj, occurred_at, ids["form_id"], emails, phones)
        if boxes:
            attributes["consent_checkboxes"] = boxes
        body = "\n".join(f"{n}: {', '.join(vs)}" for n, vs in custom.items() if vs) or None
        draft = InteractionDraft(
            kind=_KIND,
            occurred_at=occurred_at,
            idempotency_key=f"{_KIND}:{lead_id}"[:255],
            channel="ad_platform",
            direction="inbound",
            body=body,
            attributes=attributes,
        )
        touchpoint = Touchpoint(
            channel_group="paid_social" if organic is not True else "organic_social",
            source=attributes["platform"],
            medium="paid_social" if organic is not True else "social",
            campaign=(kit.text(obj.get("campaign_name")) or "")[:_MAX_TEXT] or None,
            content=(kit.text(obj.get("ad_name")) or "")[:_MAX_TEXT] or None,
            ad_id=ids["ad_id"],
            form_id=ids["form_id"],
        )
        return LeadEvent(
            source=self.name,
            record_ref=ref,
            emails=emails,
            phones=phones,
            full_name=full_name,
            first_name=first(("first_name",)),
            last_name=first(("last_name",)),
            postal_code=first(POSTAL_FIELDS),
            city=first(("city",)),
            external_ids=((self.name, lead_id),),
            touchpoint=touchpoint,
            interactions=(draft,),
            consents=consents,
            dropped_fields=dropped,
        )

    def _consents(
        self,
        lead_id: str,
        obj: Mapping[str, Any],
        occurred_at: datetime,
        form_id: str | None,
        emails: Sequence[str],
        phones: Sequence[str],
    ) -> tuple[tuple[ConsentSignal, ...], dict[str, bool], tuple[str, ...]]:
        """Consent signals of the checked custom-disclaimer boxes the ``disclaimers``
        option maps, each for the lead's contact point of its channel (consent belongs to a
        phone number or an address: TCPA 47 CFR 64.1200(a)(2) and (f)(9), prior express
        written consent is an agreement signed for that number with its disclosure, kept
        here as evidence).  An unchecked box records nothing.  Also every box's state, and
        the boxes dropped (checked, mapped, but the lead has no contact point for them)."""
        responses = obj.get("custom_disclaimer_responses")
        if isinstance(responses, dict):  # the Graph API may wrap edges in {"data": [...]}
            responses = responses.get("data")
        signals: list[ConsentSignal] = []
        boxes: dict[str, bool] = {}
        dropped: list[str] = []
        for item in responses if isinstance(responses, list) else ():
            if not isinstance(item, dict):
                continue
            key = kit.text(item.get("checkbox_key"))
            if key is None:
                continue
            checked = item.get("is_checked") in ("1", 1, True)  # a string: "1" checked, "" not
            boxes[key[:64]] = checked
            meaning = self.options.disclaimers.get(key)
            if not checked or meaning is None:
                continue
            point_kind = CHANNEL_POINTS.get(meaning.channel)
            points = phones if point_kind == "phone" else emails if point_kind == "email" else ()
            if not points:
                dropped.append(f"custom_disclaimer_responses.{key[:64]}")
                continue
            evidence: dict[str, Any] = {
                "method": "lead_form_checkbox",
                "vendor": "meta",
                "source": self.name,
                "lead_id": lead_id,
                "checkbox_key": key,
                "text": meaning.text,
            }
            if meaning.version:
                evidence["text_version"] = meaning.version
            if form_id:
                evidence["form_id"] = form_id
            signals.append(
                ConsentSignal(
                    contact_point_kind=point_kind or "email",
                    contact_point=points[0],
                    channel=meaning.channel,
                    purpose=meaning.purpose,
                    status="granted",
                    occurred_at=occurred_at,
                    idempotency_key=f"consent:{lead_id}:{key}:{meaning.channel}:{meaning.purpose}"[:255],
                    evidence=evidence,
                )
            )
        return tuple(signals), boxes, tuple(dropped)


# --------------------------------------------------------------------------- helpers


def _lead_objects(data: Any, source: str) -> list[dict[str, Any]]:
    """The lead objects of a Graph API response: one object, or a bulk read's ``data[]``."""
    if isinstance(data, dict) and isinstance(data.get("data"), list) and "id" not in data:
        items: list[Any] = data["data"]
    else:
        items = [data]
    if not items or not all(isinstance(i, dict) and "id" in i for i in items):
        raise ValidationFailed(source, "payload", "body", "neither a page webhook nor a Graph API lead object")
    return items


def _id(value: Any) -> str | None:
    try:
        found = kit.identifier(value)
    except kit.BadValue:
        return None
    return found[:64] if found else None


def _graph_time(value: Any) -> datetime | None:
    """A Graph API time, ``2015-02-28T08:49:14+0000`` (an offset without a colon)."""
    text = kit.text(value)
    if text is None:
        return None
    for fmt in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(text, fmt).astimezone(UTC)
        except ValueError:
            continue
    return None


def _epoch(value: Any) -> datetime | None:
    """Unix seconds (the webhook's ``created_time``) as an aware UTC time."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value, UTC)
    except (OverflowError, OSError, ValueError):
        return None


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`MetaLeadAdsConnector` as the ``meta_lead_ads`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(MetaLeadAdsConnector)
