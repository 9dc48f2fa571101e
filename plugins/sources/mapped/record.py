"""The record builder of a mapped source: one record of a payload → one lead event, or the
:class:`~carecrm.core.ingest.connectors.Rejected` value that says which field could not be used.

Rules applied here, and where they come from:

* identity hints are passed raw (emails as sent, phones as sent or as the digits of a JSON
  number); the core normalizes and matches them;
* only mapped fields are kept; the names of the other answers go to ``dropped_fields``
  (:mod:`~carecrm.plugins.sources.mapped.minimization`);
* consent comes only from explicitly configured checkboxes (``docs/vocabulary.md``, "Consent");
* each interaction and consent signal has an idempotency key made from the vendor's record
  id (else a keyed digest of the record's canonical JSON) and the event type
  (``docs/vocabulary.md``, "Idempotency keys");
* no email or phone is kept in clear in a key, a record ref or an attribute: a value that
  looks like one is hashed with the blind-index key (:mod:`~carecrm.plugins.sources.mapped.keys`);
* times are aware UTC; naive local times are read in the location's zone (``docs/vocabulary.md``,
  "Time").
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

import jmespath.exceptions

from carecrm.core.ingest import kit as kit
from carecrm.core.ingest.connectors import Rejected
from carecrm.core.ingest.kit import BadValue
from carecrm.core.model.domain import ConsentSignal, InteractionDraft, LeadEvent, RawPayload, Touchpoint
from carecrm.plugins.sources.mapped import keys, values
from carecrm.plugins.sources.mapped.options import EXTRA_FIELDS, TOUCHPOINT_FIELDS
from carecrm.plugins.sources.mapped.selectors import Selector

if TYPE_CHECKING:
    from carecrm.plugins.sources.mapped.connector import MappedConnector

__all__ = ["RecordBuilder"]


class _Refusal(Exception):
    """Ends the building of one record early: ``field`` cannot be used, for ``reason``.

    Private to this module: :meth:`RecordBuilder.build` turns it into a :class:`Rejected`
    value, so nothing outside sees an exception for a refused record."""

    def __init__(self, field: str, reason: str) -> None:
        super().__init__(field, reason)
        self.field = field
        self.reason = reason


class RecordBuilder:
    """Builds the lead event of one record of a payload.

    :param conn: the connector, whose compiled options say where each value is.
    :param index: the record's position in the payload (its ref until its id is known).
    :param record: the record, a decoded JSON value (a dict of form fields for forms).
    :param payload: the payload it came from (its receive time is the fallback time).
    """

    def __init__(self, conn: MappedConnector, index: int, record: Any, payload: RawPayload) -> None:
        self.conn = conn
        self.record = record
        self.payload = payload
        #: The record's ref in refusals: ``#<index>``, then the vendor's record id once read.
        self.ref = f"#{index}"
        #: (selector, result) of every selector evaluated on the answers, for minimization.
        self.results: list[tuple[Selector, Any]] = []

    def build(self) -> LeadEvent | Rejected | None:
        """The record's lead event; a :class:`Rejected` naming the field at fault when a
        value cannot be used (a selector that does not apply, a bad time, a phone that is
        an object); None when ``only_if`` skips the record."""
        try:
            return self._event()
        except _Refusal as refusal:
            return Rejected(self.ref, refusal.field, refusal.reason)

    # ------------------------------------------------------------------ reading values

    def get(self, selector: Selector, field: str, track: bool = True) -> Any:
        """The selector's value on this record (tracked for minimization unless ``track``
        is False).  A selector that does not apply to this record refuses it."""
        try:
            value = selector.search(self.record)
        except jmespath.exceptions.JMESPathTypeError as exc:
            reason = f"selector does not apply to this record ({exc.function_name}() got {exc.actual_type})"
            raise _Refusal(field, reason) from None
        except jmespath.exceptions.JMESPathError:
            raise _Refusal(field, "selector does not apply to this record") from None
        if track and selector.touches_answers:
            self.results.append((selector, value))
        return value

    def convert(self, field: str, value: Any, how: Callable[[Any], Any]) -> Any:
        """``how(value)``; a :class:`BadValue` refuses the record naming ``field``."""
        try:
            return how(value)
        except BadValue as bad:
            raise _Refusal(field, bad.reason) from None

    # ------------------------------------------------------------------ the event

    def _event(self) -> LeadEvent | None:
        conn, record = self.conn, self.record
        if not isinstance(record, dict):
            raise _Refusal("record", "a record must be a JSON object")
        get, convert = self.get, self.convert

        if conn.only_if is not None and not values.truthy(get(conn.only_if, "only_if", False)):
            return None

        record_id = None
        if conn.record_id is not None:
            record_id = convert("record_id", get(conn.record_id, "record_id"), kit.identifier)
            if record_id is not None:
                # an id that looks like an email or phone is hashed, never kept in clear
                # (it makes the key, external_record_id and every refusal's ref)
                record_id = keys.protect(record_id, conn.record_digest)
                self.ref = record_id
        person_id = None
        if conn.person_id is not None:
            person_id = convert("person_id", get(conn.person_id, "person_id"), kit.identifier)
            if person_id is not None:
                person_id = keys.protect(person_id, conn.record_digest)

        occurred_at, approximate = self._occurred_at()

        found: dict[str, Any] = dict(conn.literals)
        unreadable: list[str] = []
        for field, selector in conn.fields.items():
            raw = get(selector, field)
            if field == "email":
                found[field] = convert(field, raw, lambda v: values.many(v, kit.single_text))
            elif field == "phone":
                found[field] = convert(field, raw, lambda v: values.many(v, values.phone))
            elif field == "body":
                found[field] = values.body_text(raw)
            elif field == "date_of_birth":
                # an optional field (off unless the practice collects it): a value that is
                # not a date is dropped and counted, never a reason to lose the lead
                try:
                    found[field] = values.date_value(raw)
                except BadValue:
                    found[field] = None
                    unreadable.append(field)
            elif field in values.NAME_FIELDS:
                found[field] = convert(field, raw, lambda v: values.name_text(values.same_values(v)))
            else:
                found[field] = convert(field, raw, lambda v: kit.single_text(values.same_values(v)))

        touch: dict[str, str | None] = {k: found.pop(k) for k in list(found) if k in TOUCHPOINT_FIELDS}
        for field, selector in conn.touchpoint.items():
            option = f"touchpoint.{field}"
            touch[field] = convert(option, get(selector, option), lambda v: kit.single_text(values.same_values(v)))
        landing, landing_params = values.clean_url(touch.get("landing_page"))
        referrer, _ = values.clean_url(touch.get("referrer"))
        touch["landing_page"], touch["referrer"] = landing, referrer
        for field, value in landing_params.items():
            if touch.get(field) is None:
                touch[field] = value
        # the touchpoint is stored in clear: campaign texts that look like an email or
        # phone (a utm_campaign=<email> from a mail merge) are hashed
        for field in keys.CLEAR_TOUCHPOINT_TEXTS:
            text = touch.get(field)
            if text is not None:
                touch[field] = keys.protect(text, conn.record_digest)
        touchpoint = Touchpoint(**touch)

        attributes: dict[str, Any] = {}
        for key, selector in conn.attributes.items():
            value = get(selector, f"attributes.{key}")
            if isinstance(value, str):
                # attributes are stored in clear: an email or phone is hashed
                value = keys.protect(value, conn.record_digest)
            if not kit.is_blank(value):
                attributes[key] = value
        if record_id is not None:
            attributes["external_record_id"] = record_id
        if approximate:
            attributes["occurred_at_source"] = "received"

        key_base = record_id if record_id is not None else "digest:" + conn.record_digest(kit.canonical_json(record))
        idempotency_key = f"{conn.kind}:{key_base}"
        consents = tuple(self._consents(occurred_at, touchpoint, idempotency_key))

        dropped, others = conn.answers.unmapped(record, self.results)
        dropped = (*dropped, *unreadable)
        body = found.pop("body", None)
        if conn.answers.keep_other and others:
            body = json.dumps({"inquiry": body, "other_answers": others}, ensure_ascii=False, default=str)

        interaction = InteractionDraft(
            kind=conn.kind,
            occurred_at=occurred_at,
            idempotency_key=idempotency_key,
            channel=conn.channel,
            direction=conn.direction,
            location=conn.location,
            body=body,
            attributes=attributes,
            touchpoint=touchpoint,
        )
        extra = {k: found.pop(k) for k in list(found) if k in EXTRA_FIELDS and found[k] is not None}
        return LeadEvent(
            source=conn.name,
            record_ref=self.ref,
            emails=found.pop("email", ()),
            phones=found.pop("phone", ()),
            first_name=found.get("first_name"),
            last_name=found.get("last_name"),
            full_name=found.get("full_name"),
            name_confidence=conn.name_confidence,
            postal_code=found.get("postal_code"),
            city=found.get("city"),
            region=found.get("region"),
            location=conn.location,
            service_interest=found.get("service_interest"),
            external_ids=((conn.name, person_id),) if person_id is not None else (),
            touchpoint=touchpoint,
            interactions=(interaction,),
            consents=consents,
            extra=extra,
            dropped_fields=dropped,
        )

    def _occurred_at(self) -> tuple[datetime, bool]:
        """The record's time (UTC) and whether it is the receive time instead."""
        conn = self.conn
        value = None if conn.occurred_at is None else self.get(conn.occurred_at, "occurred_at")
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if kit.is_blank(value):
            if conn.occurred_at_fallback == "received":
                return self.payload.received_at, True
            raise _Refusal("occurred_at", "time is missing")
        return self.convert(
            "occurred_at", value, lambda v: values.parse_time(v, conn.time_format, conn.time_zone)
        ), False

    def _consents(self, occurred_at: datetime, touchpoint: Touchpoint, key_base: str) -> Iterator[ConsentSignal]:
        """Consent signals of the checked, configured consent checkboxes (status granted)."""
        conn = self.conn
        for rule in conn.consent:
            field = f"consent[{rule.index}]"
            is_checked = functools.partial(values.checked, checked_values=rule.checked_values)
            if not self.convert(field, self.get(rule.selector, field), is_checked):
                continue
            evidence: dict[str, Any] = {
                "method": "web_form_checkbox",
                "source": conn.name,
                "text": rule.text,
                "field": rule.selector.text,
            }
            if rule.version is not None:
                evidence["version"] = rule.version
            if touchpoint.form_id is not None:
                evidence["form_id"] = touchpoint.form_id
            if touchpoint.landing_page is not None:
                evidence["page"] = touchpoint.landing_page
            if rule.ip is not None:
                ip = self.convert(f"{field}.ip", self.get(rule.ip, f"{field}.ip"), kit.single_text)
                if ip is not None:
                    evidence["ip"] = ip
            yield ConsentSignal(
                contact_point_kind=rule.contact_point,
                channel=rule.channel,
                purpose=rule.purpose,
                status="granted",
                occurred_at=occurred_at,
                idempotency_key=f"{key_base}:consent:{rule.contact_point}:{rule.channel}:{rule.purpose}",
                evidence=evidence,
            )
