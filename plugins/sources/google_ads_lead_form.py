"""The Google Ads lead form webhook source connector (``connector = "google_ads_lead_form"``).

Google Ads POSTs each lead of a lead form asset as JSON: ``lead_id``, ``api_version``,
``form_id``, ``campaign_id``, ``adgroup_id``, ``creative_id`` (JSON numbers up to 11
digits), ``gcl_id`` (the Google click id), ``is_test``, ``google_key`` (the shared key
typed into the Google Ads UI), optionally ``lead_submit_time`` and ``asset_id``, and
``user_column_data[{column_id, string_value, column_name?}]``.

Vendor documentation used:

* the webhook and its fields, the "Send test data" button and the key:
  https://developers.google.com/google-ads/webhook/docs/implementation
* the column ids (``FULL_NAME``, ``EMAIL``, ``WORK_EMAIL``, ``PHONE_NUMBER``, ...):
  https://developers.google.com/google-ads/webhook/docs/overview

Rules (the corpus notes): there is no HMAC; :meth:`GoogleAdsLeadFormConnector.verify`
compares ``google_key`` with the configured key in constant time; answers are read by
``column_id`` (``column_name`` is a display label and may be missing); ``WORK_EMAIL`` is
an email like ``EMAIL``; other columns (custom questions such as ``SERVICE``, company and
job title) go into the encrypted body under their ids; ``lead_id`` is the idempotency key
(Google retries); a lead without ``lead_submit_time`` is dated by its receipt; a test
lead (``is_test: true``, sent by "Send test data") is marked ``test: true`` on its
interaction, so reports leave it out; the payload carries no consent (the form's privacy
policy link is not marketing consent), so none is recorded.
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
from carecrm.core.model.domain import InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.core.plugins.hookspecs import hookimpl

__all__ = ["GoogleAdsLeadFormConnector", "carecrm_register_sources"]

#: The body field holding the shared key.
KEY_FIELD = "google_key"

#: How a stored payload's key looks: never the key itself, a keyed digest of it.
REDACTED_PREFIX = "carecrm-redacted:"

_KEY_RE = re.compile(r'("google_key"\s*:\s*)"((?:[^"\\]|\\.)*)"')

EMAIL_COLUMNS = ("EMAIL", "WORK_EMAIL")
PHONE_COLUMNS = ("PHONE_NUMBER", "WORK_PHONE")
_NAME_COLUMNS = ("FULL_NAME", "FIRST_NAME", "LAST_NAME")
_PLACE_COLUMNS = ("POSTAL_CODE", "CITY", "REGION", "COUNTRY")
_KIND = "ad_lead.submitted"
_IDS = ("form_id", "campaign_id", "adgroup_id", "creative_id", "asset_id")


class GoogleAdsLeadFormConnector(SourceConnector):
    """Reads Google Ads lead form webhooks (``ad_lead.submitted``; test leads marked test).

    :param name: the source's name in config (``google_ads_lead_form``); its ``secret``
        is the key typed into the Google Ads UI.
    :param options: none.
    :param settings: the practice's settings.
    """

    connector_id: ClassVar[str] = "google_ads_lead_form"
    description: ClassVar[str] = "Google Ads lead form webhooks (google_key checked; ad_lead.submitted)"
    formats: ClassVar[tuple[str, ...]] = ("lead form webhook (JSON, user_column_data)",)
    signed = True

    def _json(self, payload: RawPayload) -> dict[str, Any]:
        try:
            data = json.loads(payload.body.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise ValidationFailed(self.name, "payload", "body", "not UTF-8 text") from None
        except json.JSONDecodeError:
            raise ValidationFailed(self.name, "payload", "body", "not JSON") from None
        if not isinstance(data, dict):
            raise ValidationFailed(self.name, "payload", "body", "not a JSON lead object")
        return data

    def redact(self, payload: RawPayload) -> RawPayload:
        """The payload as the inbox stores it: the ``google_key`` value replaced by
        ``carecrm-redacted:`` + its keyed digest (:meth:`record_digest`), the rest of the
        body byte for byte, so the key is never stored or shown (``inbox show``) and a
        stored payload can still be verified (:meth:`verify`).  Whatever value is sent
        is digested, one that already looks redacted too, so a sender cannot forge one."""
        text = payload.body.decode("utf-8", errors="surrogateescape")

        def digest(match: re.Match[str]) -> str:
            hashed = self.record_digest(match.group(2).encode("utf-8", "surrogatepass"))
            return f'{match.group(1)}"{REDACTED_PREFIX}{hashed}"'

        redacted, n = _KEY_RE.subn(digest, text)
        if not n:
            return payload
        return attrs.evolve(payload, body=redacted.encode("utf-8", errors="surrogateescape"))

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Compare the body's ``google_key`` with the configured key (``secret``) in
        constant time (Google signs nothing; the key is its authentication); a stored
        payload's redacted key (:meth:`redact`) is compared with the key's digest.

        :raises ValidationFailed: naming ``google_key`` when it is missing or wrong, or
            ``body`` when the body is not a JSON object.
        """
        given = self._json(payload).get(KEY_FIELD)
        if not isinstance(given, str) or not given:
            raise ValidationFailed(self.name, "payload", KEY_FIELD, "missing")
        expected = secret
        if given.startswith(REDACTED_PREFIX):
            expected = REDACTED_PREFIX + self.record_digest(json.dumps(secret)[1:-1].encode("utf-8"))
        if not kit.signatures_match(expected.encode("utf-8"), given.encode("utf-8")):
            raise ValidationFailed(self.name, "payload", KEY_FIELD, "does not match the configured key")

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """One lead event; a :class:`Rejected` for a lead without a ``lead_id`` or with an
        unreadable ``lead_submit_time``.

        :raises ValidationFailed: when the body is not a JSON object or
            ``user_column_data`` is not a list.
        """
        yield self._lead(self._json(payload), payload)

    def _lead(self, data: Mapping[str, Any], payload: RawPayload) -> LeadEvent | Rejected:
        try:
            lead_id = kit.identifier(data.get("lead_id"))
        except kit.BadValue:
            lead_id = None
        if lead_id is None:
            return Rejected("#0", "lead_id", "missing or not an id")
        ref = lead_id[:64]
        columns = data.get("user_column_data", [])
        if not isinstance(columns, list):
            raise ValidationFailed(self.name, "payload", "user_column_data", "not a list")
        answers: dict[str, str] = {}
        for index, col in enumerate(columns):
            if not isinstance(col, dict):
                return Rejected(ref, f"user_column_data[{index}]", "not an object")
            column = kit.text(col.get("column_id"))
            value = kit.text(col.get("string_value"))
            if column is None:
                return Rejected(ref, f"user_column_data[{index}].column_id", "missing")
            if value is not None:
                answers.setdefault(column.upper(), value)
        occurred_at = payload.received_at
        submitted = kit.text(data.get("lead_submit_time"))
        if submitted is not None:
            try:
                parsed = datetime.fromisoformat(submitted.replace("Z", "+00:00"))
            except ValueError:
                return Rejected(ref, "lead_submit_time", "not an ISO 8601 date and time")
            if parsed.tzinfo is None:
                return Rejected(ref, "lead_submit_time", "has no UTC offset")
            occurred_at = parsed.astimezone(UTC)

        attributes: dict[str, Any] = {"external_record_id": lead_id[:255], "received_time": submitted is None}
        for name in _IDS:
            try:
                found = kit.identifier(data.get(name))
            except kit.BadValue:
                found = None
            if found:
                attributes[name] = found[:64]
        version = kit.text(data.get("api_version"))
        if version:
            attributes["api_version"] = version[:16]
        if kit.flag(data.get("is_test")):
            attributes["test"] = True
        known = {*EMAIL_COLUMNS, *PHONE_COLUMNS, *_NAME_COLUMNS, *_PLACE_COLUMNS}
        other = {k: v for k, v in answers.items() if k not in known}
        if other:
            attributes["questions"] = sorted(other)
        draft = InteractionDraft(
            kind=_KIND,
            occurred_at=occurred_at,
            idempotency_key=f"{_KIND}:{lead_id}"[:255],
            channel="ad_platform",
            direction="inbound",
            body="\n".join(f"{k}: {v}" for k, v in other.items()) or None,
            attributes=attributes,
        )
        gclid = kit.text(data.get("gcl_id"))
        touchpoint = Touchpoint(
            channel_group="paid_search",
            source="google_ads",
            gclid=gclid[:300] if gclid else None,
            ad_id=attributes.get("creative_id"),
            form_id=attributes.get("form_id"),
        )
        return LeadEvent(
            source=self.name,
            record_ref=ref,
            emails=tuple(answers[c] for c in EMAIL_COLUMNS if c in answers),
            phones=tuple(answers[c] for c in PHONE_COLUMNS if c in answers),
            full_name=answers.get("FULL_NAME"),
            first_name=answers.get("FIRST_NAME"),
            last_name=answers.get("LAST_NAME"),
            postal_code=answers.get("POSTAL_CODE"),
            city=answers.get("CITY"),
            external_ids=((self.name, lead_id[:255]),),
            touchpoint=touchpoint,
            interactions=(draft,),
        )


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`GoogleAdsLeadFormConnector` as the ``google_ads_lead_form`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(GoogleAdsLeadFormConnector)
