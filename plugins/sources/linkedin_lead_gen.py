"""The LinkedIn Lead Sync source connector (``connector = "linkedin_lead_gen"``).

LinkedIn's lead notification webhook (``type: "LEAD_ACTION"``) names a lead form response
by URN and carries no personal data: ``leadGenFormResponse``
(``urn:li:leadGenFormResponse:1a2b3c-4``), ``leadGenForm``
(``urn:li:versionedLeadGenForm:(urn:li:leadGenForm:1, 1)``, form id and version),
``owner`` (``sponsoredAccount`` or ``organization``), ``associatedEntity``
(``sponsoredCreative`` or ``event``), ``leadType`` (``SPONSORED``, ``EVENT``, ``COMPANY``,
``ORGANIZATION_PRODUCT``), ``leadAction`` (``CREATED``, ``DELETED``) and ``occurredAt``
(Unix **milliseconds**).

* ``CREATED`` is a :class:`~carecrm.core.ingest.pointers.Pointer`: the inbox keeps it
  ``pending`` until the lead form response (``GET /rest/leadFormResponses/{id}``:
  ``formResponse.answers[{questionId, answerDetails.textQuestionAnswer.answer}]``,
  ``formResponse.consentResponses[{consentId, accepted}]``, ``testLead``,
  ``submittedAt``, ``leadMetadata.sponsoredLeadMetadata.campaign``) completes it
  (``carecrm inbox complete ID FILE``).  Which question is the email or the phone is the
  form's definition: the ``questions`` option maps ``questionId`` → ``email``,
  ``phone``, ``first_name``, ``last_name``, ``full_name``, ``postal_code``, ``city`` (any
  other name keeps the answer, encrypted, under that name); a lead form object fetched
  with the response (``content.questions[{questionId, predefinedField}]``) maps its
  predefined fields too.
* ``DELETED`` (the member withdrew, or LinkedIn deleted the lead) removes nothing stored
  silently: it is recorded as an ``ad_lead.deleted`` interaction of the contact with that
  response (a tombstone contact known by the URN alone when the lead was never
  completed), flagged ``action_required`` so a person deletes or anonymises what was
  fetched (LinkedIn's data-use terms oblige it).

Vendor documentation used:

* Lead Sync, lead notifications and their validation and signature (``X-LI-Signature``:
  hex HMAC-SHA256, keyed with the app's client secret, of ``"hmacsha256=" + body``):
  https://learn.microsoft.com/en-us/linkedin/marketing/lead-sync/leadsync
* the lead form response and lead form schemas:
  https://learn.microsoft.com/en-us/linkedin/marketing/lead-sync/lead-sync-schema
"""

from __future__ import annotations

import json
import re
import urllib.parse
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs

from carecrm.core.errors import ValidationFailed
from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.ingest.pointers import CompletesPointers, Pointer
from carecrm.core.model import vocab
from carecrm.core.model.domain import ConsentSignal, InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl
from carecrm.plugins.sources.meta_lead_ads import CHANNEL_POINTS, Disclaimer

__all__ = ["LinkedInLeadGenConnector", "LinkedInOptions", "carecrm_register_sources"]

#: Header of the signature: hex HMAC-SHA256 of ``"hmacsha256=" + body``.
SIGNATURE_HEADER = "X-LI-Signature"
#: The interaction kind of a deletion notice (registered with the plugin).
DELETED_KIND = "ad_lead.deleted"
_KIND = "ad_lead.submitted"
_RESPONSE_URN = "urn:li:leadGenFormResponse:"
_FORM_RE = re.compile(r"urn:li:leadGenForm:(\d+)\s*,\s*(\d+)\s*\)")

#: LinkedIn's predefined lead form fields → the answer's meaning here.
PREDEFINED: dict[str, str] = {
    "FIRST_NAME": "first_name",
    "LAST_NAME": "last_name",
    "EMAIL": "email",
    "WORK_EMAIL": "email",
    "PHONE_NUMBER": "phone",
    "WORK_PHONE_NUMBER": "phone",
    "POSTAL_CODE": "postal_code",
    "ZIP_CODE": "postal_code",
    "CITY": "city",
}
_STANDARD = frozenset({"email", "phone", "first_name", "last_name", "full_name", "postal_code", "city"})


@attrs.frozen(kw_only=True)
class LinkedInOptions:
    """The ``[sources.<name>]`` options of a LinkedIn Lead Sync source.

    :ivar questions: ``questionId`` (as text) → ``email``, ``phone``, ``first_name``,
        ``last_name``, ``full_name``, ``postal_code``, ``city`` or a name of your own.
    :ivar consents: ``consentId`` (as text) → its
        :class:`~carecrm.plugins.sources.meta_lead_ads.Disclaimer` (channel, purpose,
        the checkbox's text); an accepted consent without one records nothing.
    """

    questions: dict[str, str] = attrs.Factory(dict)
    consents: dict[str, Disclaimer] = attrs.Factory(dict)


class LinkedInLeadGenConnector(CompletesPointers, SourceConnector):
    """Reads LinkedIn Lead Sync notifications (created: pending; deleted: recorded).

    :param name: the source's name in config (``linkedin_lead_gen``); its ``secret`` is
        the app's client secret.
    :param options: :class:`LinkedInOptions`.
    :param settings: the practice's settings.
    """

    connector_id: ClassVar[str] = "linkedin_lead_gen"
    description: ClassVar[str] = (
        "LinkedIn Lead Sync notifications (X-LI-Signature; created kept pending and completed from the "
        "lead form response; deleted recorded as ad_lead.deleted)"
    )
    formats: ClassVar[tuple[str, ...]] = (
        "lead notification CREATED (JSON pointer, pending)",
        "lead notification DELETED (JSON)",
        "lead form response (JSON, formResponse)",
    )
    signed = True
    options_type = LinkedInOptions

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check ``X-LI-Signature``: the hex HMAC-SHA256 of ``"hmacsha256=" + body``
        keyed with the client secret (a header value that itself starts with
        ``hmacsha256=`` is read after it).

        :raises ValidationFailed: naming the header when it is missing, not hex or wrong.
        """
        given = (payload.header(SIGNATURE_HEADER) or "").strip()
        prefix = "hmacsha256=" if given.lower().startswith("hmacsha256=") else ""
        signature = kit.signature_from_header(
            payload, source=self.name, header=SIGNATURE_HEADER, encoding="hex", prefix=prefix
        )
        expected = kit.hmac_digest(secret, b"hmacsha256=" + payload.body, "sha256")
        if not kit.signatures_match(expected, signature):
            raise ValidationFailed(
                self.name, "payload", SIGNATURE_HEADER, "signature does not match the body (wrong client secret?)"
            )

    # ------------------------------------------------------------------ parsing

    def _json(self, payload: RawPayload, what: str) -> Any:
        try:
            return json.loads(payload.body.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ValidationFailed(self.name, "payload", what, "not UTF-8 text") from None
        except json.JSONDecodeError:
            raise ValidationFailed(self.name, "payload", what, "not JSON") from None

    def _notices(self, payload: RawPayload) -> list[dict[str, Any]]:
        data = self._json(payload, "body")
        items = data if isinstance(data, list) else [data]
        if not items or not all(isinstance(i, dict) for i in items):
            raise ValidationFailed(self.name, "payload", "body", "not a lead notification object")
        return items

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected | Pointer]:  # type: ignore[override]
        """A :class:`Pointer` per ``CREATED`` notice, an ``ad_lead.deleted`` lead event per
        ``DELETED`` notice, a lead event per lead form response ingested directly, and a
        :class:`Rejected` for a notice without a response URN or a readable
        ``occurredAt``.  Notices of another ``type`` or action are skipped.

        :raises ValidationFailed: when the body is not a JSON object or list of objects.
        """
        for index, item in enumerate(self._notices(payload)):
            if "formResponse" in item:
                yield self._lead(item, index, {})
                continue
            if item.get("type") != "LEAD_ACTION":
                continue
            urn = kit.text(item.get("leadGenFormResponse"))
            ref = urn[:64] if urn else f"#{index}"
            if urn is None or not urn.startswith(_RESPONSE_URN):
                yield Rejected(ref, "leadGenFormResponse", "missing or not a leadGenFormResponse URN")
                continue
            action = (kit.text(item.get("leadAction")) or "").upper()
            if action == "CREATED":
                yield Pointer(
                    ref=urn,
                    fetch=f"GET /rest/leadFormResponses/{urllib.parse.quote(urn, safe='')} (LinkedIn-Version header)",
                    key=f"{_KIND}:{urn}"[:255],
                )
            elif action == "DELETED":
                yield self._deleted(item, urn, ref)

    def _context(self, item: Mapping[str, Any]) -> dict[str, Any]:
        """The notice's clear attributes: lead type, form id and version, owner, entity."""
        out: dict[str, Any] = {}
        lead_type = kit.text(item.get("leadType"))
        if lead_type:
            out["lead_type"] = lead_type[:40]
        form = kit.text(item.get("leadGenForm")) or kit.text(item.get("versionedLeadGenFormUrn"))
        match = _FORM_RE.search(form or "")
        if match:  # "urn:li:versionedLeadGenForm:(urn:li:leadGenForm:1, 1)": a space, parentheses
            out["form_id"], out["form_version"] = match.group(1), match.group(2)
        for part, name in (("owner", "owner"), ("associatedEntity", "associated_entity")):
            value = item.get(part)
            if isinstance(value, dict):
                for key, urn in value.items():
                    text = kit.text(urn)
                    if text:
                        out[name] = text[:120]
                        out[f"{name}_type"] = str(key)[:40]
                        break
        return out

    def _deleted(self, item: Mapping[str, Any], urn: str, ref: str) -> LeadEvent | Rejected:
        occurred_at = _millis(item.get("occurredAt"))
        if occurred_at is None:
            return Rejected(ref, "occurredAt", "missing or not Unix milliseconds")
        attributes = {
            **self._context(item),
            "lead_action": "DELETED",
            "external_record_id": urn[:255],
            "action_required": "delete or anonymise the lead's data fetched from LinkedIn",
        }
        draft = InteractionDraft(
            kind=DELETED_KIND,
            occurred_at=occurred_at,
            idempotency_key=f"{DELETED_KIND}:{urn}"[:255],
            channel="ad_platform",
            direction="inbound",
            attributes=attributes,
        )
        return LeadEvent(
            source=self.name,
            record_ref=ref,
            external_ids=((self.name, urn[:255]),),
            interactions=(draft,),
        )

    # ------------------------------------------------------------------ completion

    def complete(self, pointer_payload: RawPayload, fetched: Sequence[RawPayload]) -> Iterator[LeadEvent | Rejected]:
        """The leads the notices point to, from lead form responses in ``fetched`` (a lead
        form object among them adds its ``predefinedField`` question mapping).

        Yields a :class:`Rejected` for a response the notices do not point to.

        :raises ValidationFailed: when a fetched body is not JSON.
        """
        notices = {
            kit.text(n.get("leadGenFormResponse")): n
            for n in self._notices(pointer_payload)
            if (kit.text(n.get("leadAction")) or "").upper() == "CREATED"
        }
        responses: list[dict[str, Any]] = []
        questions: dict[str, str] = {}
        for payload in fetched:
            data = self._json(payload, "fetched")
            for obj in data if isinstance(data, list) else [data]:
                if not isinstance(obj, dict):
                    raise ValidationFailed(self.name, "payload", "fetched", "not a JSON object")
                content = obj.get("content")
                if isinstance(content, dict) and isinstance(content.get("questions"), list):
                    questions.update(_form_questions(content["questions"]))
                elif "formResponse" in obj:
                    responses.append(obj)
                else:
                    raise ValidationFailed(
                        self.name, "payload", "fetched", "neither a lead form response nor a lead form"
                    )
        for index, obj in enumerate(responses):
            urn = _response_urn(obj)
            if urn is None or urn not in notices:
                yield Rejected((urn or f"#{index}")[:64], "id", "not a lead response these notices point to")
                continue
            yield self._lead(obj, index, notices[urn], questions)

    def _lead(
        self,
        obj: Mapping[str, Any],
        index: int,
        notice: Mapping[str, Any],
        form_questions: Mapping[str, str] | None = None,
    ) -> LeadEvent | Rejected:
        urn = _response_urn(obj)
        ref = urn[:64] if urn else f"#{index}"
        if urn is None:
            return Rejected(ref, "id", "missing")
        response = obj.get("formResponse")
        if not isinstance(response, dict):
            return Rejected(ref, "formResponse", "not an object")
        meaning = {**(form_questions or {}), **self.options.questions}
        answers: dict[str, str] = {}
        for item in response.get("answers") or ():
            if not isinstance(item, dict):
                continue
            qid = kit.text(item.get("questionId"))
            details = item.get("answerDetails")
            text_answer = details.get("textQuestionAnswer") if isinstance(details, dict) else None
            answer = kit.text(text_answer.get("answer")) if isinstance(text_answer, dict) else None
            if qid is None or answer is None:
                continue
            answers.setdefault(meaning.get(qid, f"question_{qid}"), answer)
        occurred_at = _millis(obj.get("submittedAt")) or _millis(notice.get("occurredAt"))
        if occurred_at is None:
            return Rejected(ref, "submittedAt", "missing or not Unix milliseconds")
        attributes: dict[str, Any] = {
            **self._context(notice),
            **self._context(obj),
            "external_record_id": urn[:255],
        }
        metadata = obj.get("leadMetadata")
        sponsored = metadata.get("sponsoredLeadMetadata") if isinstance(metadata, dict) else None
        campaign = kit.text(sponsored.get("campaign")) if isinstance(sponsored, dict) else None
        if campaign:
            attributes["campaign_urn"] = campaign[:120]
        if kit.flag(obj.get("testLead")):
            attributes["test"] = True
        custom = {k: v for k, v in answers.items() if k not in _STANDARD}
        if custom:
            attributes["questions"] = sorted(custom)
        emails = (answers["email"],) if "email" in answers else ()
        phones = (answers["phone"],) if "phone" in answers else ()
        consents: list[ConsentSignal] = []
        for item in response.get("consentResponses") or ():
            if not isinstance(item, dict) or item.get("accepted") is not True:
                continue  # not accepted: no consent recorded (not a revocation)
            cid = kit.text(item.get("consentId"))
            disclaimer = self.options.consents.get(cid or "")
            if cid is None or disclaimer is None:
                continue
            point_kind = CHANNEL_POINTS.get(disclaimer.channel)
            points = phones if point_kind == "phone" else emails if point_kind == "email" else ()
            if not points:
                continue
            consents.append(
                ConsentSignal(
                    contact_point_kind=point_kind or "email",
                    contact_point=points[0],
                    channel=disclaimer.channel,
                    purpose=disclaimer.purpose,
                    status="granted",
                    occurred_at=occurred_at,
                    idempotency_key=f"consent:{urn}:{cid}:{disclaimer.channel}:{disclaimer.purpose}"[:255],
                    evidence={
                        "method": "lead_form_checkbox",
                        "vendor": "linkedin",
                        "source": self.name,
                        "consent_id": cid,
                        "text": disclaimer.text,
                        **({"text_version": disclaimer.version} if disclaimer.version else {}),
                    },
                )
            )
        paid = (attributes.get("lead_type") or "SPONSORED") == "SPONSORED"
        draft = InteractionDraft(
            kind=_KIND,
            occurred_at=occurred_at,
            idempotency_key=f"{_KIND}:{urn}"[:255],
            channel="ad_platform",
            direction="inbound",
            body="\n".join(f"{k}: {v}" for k, v in custom.items()) or None,
            attributes=attributes,
        )
        return LeadEvent(
            source=self.name,
            record_ref=ref,
            emails=emails,
            phones=phones,
            first_name=answers.get("first_name"),
            last_name=answers.get("last_name"),
            full_name=answers.get("full_name"),
            postal_code=answers.get("postal_code"),
            city=answers.get("city"),
            external_ids=((self.name, urn[:255]),),
            touchpoint=Touchpoint(
                channel_group="paid_social" if paid else "organic_social",
                source="linkedin",
                form_id=attributes.get("form_id"),
                ad_id=attributes.get("associated_entity") if paid else None,
            ),
            interactions=(draft,),
            consents=tuple(consents),
        )


# --------------------------------------------------------------------------- helpers


def _response_urn(obj: Mapping[str, Any]) -> str | None:
    """A lead form response's URN from its ``id`` (plain or a URN)."""
    try:
        found = kit.identifier(obj.get("id")) or kit.identifier(obj.get("leadGenFormResponse"))
    except kit.BadValue:
        return None
    if found is None:
        return None
    return found if found.startswith(_RESPONSE_URN) else _RESPONSE_URN + found


def _form_questions(questions: list[Any]) -> dict[str, str]:
    """``questionId`` → meaning from a lead form's ``content.questions`` (its
    ``predefinedField``, else ``name``)."""
    out: dict[str, str] = {}
    for q in questions:
        if not isinstance(q, dict):
            continue
        qid = kit.text(q.get("questionId"))
        field = kit.text(q.get("predefinedField"))
        name = PREDEFINED.get(field.upper()) if field else None
        label = name or (kit.text(q.get("name")) or "").lower() or None
        if qid and label:
            out[qid] = label[:64]
    return out


def _millis(value: Any) -> datetime | None:
    """Unix milliseconds as an aware UTC time."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    try:
        return datetime.fromtimestamp(value / 1000, UTC)
    except (OverflowError, OSError, ValueError):
        return None


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`LinkedInLeadGenConnector` as the ``linkedin_lead_gen`` source
    connector, and its ``ad_lead.deleted`` interaction kind.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    vocab.register_kind(DELETED_KIND)
    register(LinkedInLeadGenConnector)
