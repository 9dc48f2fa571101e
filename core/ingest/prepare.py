"""The prepare stage of ingest: screen a lead event's text and normalize its identities.

Runs before anything is read from the database: text that cannot be stored is refused or
cleaned field by field (rules in :mod:`carecrm.core.model.text`), emails and phones are
normalized (E.164 through phonenumbers, addresses through email-validator) and their blind
indexes computed, so matching and the write see only values that can be stored.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Sequence
from typing import Any

import attrs

from carecrm.core.config import Settings
from carecrm.core.errors import ValidationFailed
from carecrm.core.identity.normalize import (
    IdentityError,
    is_low_confidence_name,
    normalize_email,
    normalize_phone,
    split_full_name,
)
from carecrm.core.ingest.report import IngestReport
from carecrm.core.model.domain import Identity, LeadEvent, Touchpoint
from carecrm.core.model.text import (
    InvalidText,
    checked_text,
    cleaned_json,
    cleaned_text,
    folds,
    json_as_is,
    printable,
    storable_as_is,
)
from carecrm.core.model.vocab import is_valid_kind_name
from carecrm.core.privacy.mapping import RecordMapper

#: A touchpoint's field names, for the screen's no-change fast path.
_TOUCHPOINT_FIELDS = tuple(f.name for f in attrs.fields(Touchpoint))


@attrs.define
class PreparedLead:
    """A lead event screened and with normalized identities, ready to match: its identities
    (E.164 phones, normalized emails, external ids), their (kind, blind index) ``keys`` in
    the same order, the name split and judged, the service-interest code."""

    event: LeadEvent
    inbox_id: uuid.UUID | None
    identities: list[Identity]
    keys: list[tuple[str, str]]
    first_name: str | None
    last_name: str | None
    confident: bool
    service_interest: str | None = None


class LeadPreparer:
    """Screens and normalizes lead events for one app's settings (see the module docstring).

    :param settings: the practice's settings (``collect``, ``practice`` locations and
        service lines).
    :param mapper: computes the identities' blind indexes.
    """

    def __init__(self, settings: Settings, mapper: RecordMapper) -> None:
        self.settings = settings
        self.mapper = mapper

    def prepare(self, event: LeadEvent, index: int, report: IngestReport, inbox_id: uuid.UUID | None) -> PreparedLead:
        """Normalize a lead event's identities and check its interactions.

        Text is screened first, field by field (:meth:`screen`): a name, id or key that
        cannot be stored refuses the record; optional place fields are dropped with a
        warning; free text, touchpoint values and attributes are cleaned.

        :raises ValidationFailed: when no usable identity remains, an interaction is
            malformed or a refused field holds text that cannot be stored (naming the field).
        """
        settings = self.settings
        collect = settings.collect
        record = printable(event.record_ref, limit=120) or f"#{index}"
        event = self.screen(event, record, report)
        region = (
            event.region
            or settings.practice.location(
                event.location if event.location in {loc.name for loc in settings.practice.locations} else None
            ).region
        )
        identities: list[Identity] = []
        seen: set[tuple[str, str]] = set()
        for system, ext_id in event.external_ids:
            if ext_id is None or str(ext_id).strip() == "":
                continue
            kind = f"external:{system}"
            value = str(ext_id).strip()
            if (kind, value) not in seen:
                seen.add((kind, value))
                identities.append(Identity(kind=kind, value=value, source=event.source, verified=True))
        if collect.get("email", True):
            for i, raw in enumerate(event.emails):
                if raw is None or str(raw).strip() == "":
                    continue
                try:
                    value = normalize_email(str(raw), allow_test_domains=settings.allow_test_domains)
                except IdentityError as exc:
                    report.warnings.append(f"{event.source}: record {record}: field 'email[{i}]': {exc}; dropped")
                    continue
                if ("email", value) not in seen:
                    seen.add(("email", value))
                    identities.append(
                        Identity(kind="email", value=value, display=str(raw).strip(), source=event.source)
                    )
        if collect.get("phone", True):
            for i, raw in enumerate(event.phones):
                if raw is None or str(raw).strip() == "":
                    continue
                try:
                    e164, valid = normalize_phone(str(raw), region)
                except IdentityError as exc:
                    report.warnings.append(f"{event.source}: record {record}: field 'phone[{i}]': {exc}; dropped")
                    continue
                if ("phone", e164) not in seen:
                    seen.add(("phone", e164))
                    identities.append(
                        Identity(
                            kind="phone",
                            value=e164,
                            display=str(raw).strip(),
                            valid=valid,
                            source=event.source,
                        )
                    )
        if not identities:
            raise ValidationFailed(
                event.source,
                record,
                "identity",
                "no usable email, phone or external id; a record needs at least one",
            )
        for j, draft in enumerate(event.interactions):
            if not is_valid_kind_name(draft.kind):
                raise ValidationFailed(event.source, record, f"interactions[{j}].kind", "not a dotted noun.event kind")
            if not draft.idempotency_key:
                raise ValidationFailed(event.source, record, f"interactions[{j}].idempotency_key", "missing")
        first, last = event.first_name, event.last_name
        if not (first or last) and event.full_name:
            first, last = split_full_name(event.full_name)
        if not collect.get("name", True):
            first = last = None
        confident = event.name_confidence != "low" and not is_low_confidence_name(
            " ".join(p for p in (first, last) if p) or None
        )
        mapper = self.mapper
        keys = [(i.kind, mapper.identity_bidx(i.kind, i.value)) for i in identities]
        for name in event.dropped_fields:
            report.dropped_fields[name] = report.dropped_fields.get(name, 0) + 1
        interest = None
        if event.service_interest and collect.get("service_interest", True):
            interest = service_interest_code(event.service_interest, settings.practice.service_lines)
            if interest is None:
                report.warnings.append(
                    f"{event.source}: record {record}: field 'service_interest': not a configured service line "
                    "(free text is never stored in clear); dropped"
                )
        return PreparedLead(event, inbox_id, identities, keys, first, last, confident, interest)

    def screen(self, event: LeadEvent, record: str, report: IngestReport) -> LeadEvent:
        """The lead event with its text refused or cleaned field by field, so that every
        value that reaches matching, the mapper and the database can be stored (the rules
        are :mod:`carecrm.core.model.text`'s):

        * **refused**, the record is quarantined naming the field: ``first_name``,
          ``last_name`` and ``full_name`` (tab and line breaks fold to a space; a lone
          surrogate, NUL or other control character refuses: a silently altered name would
          address a patient by a name they never gave), ``source``, ``location``,
          ``external_ids.<system>``, and each interaction's and consent signal's kind,
          idempotency key, channel, direction, location, purpose and status;
        * **dropped with a warning**, the record still goes in: ``postal_code``, ``city``,
          ``region`` and the optional ``street_address`` and ``sex`` (place fields are
          optional; a corrupted one is worth less than the lead), and any attribute or
          consent evidence entry nested deeper than :data:`carecrm.core.model.text.MAX_DEPTH`;
          emails and phones that cannot be stored are invalid identities, dropped with a
          warning by normalization (:mod:`carecrm.core.identity.normalize`) like any invalid address;
        * **cleaned**, each bad character becomes U+FFFD: the inquiry text (``body``),
          touchpoint values, interaction attributes and consent evidence (the patient's
          message and the campaign are kept), where integers wider than 64 bits become
          their decimal text and non-finite numbers null.

        :param record: the record's printable name for messages.
        :returns: ``event`` itself when nothing needed a change, else a cleaned copy.
        :raises ValidationFailed: for a refused field (the reason, never the value).
        """
        if _clean_at_a_glance(event):
            return event  # the usual case: nothing to refuse, drop or clean
        source = event.source

        def refuse(field: str, value: Any, *, fold: bool = False) -> Any:
            if not isinstance(value, str):
                return value
            try:
                return checked_text(value, fold_space=fold)
            except InvalidText as exc:
                raise ValidationFailed(source, record, field, exc.reason) from None

        def optional(field: str, value: Any) -> Any:
            if not isinstance(value, str):
                return value
            try:
                return checked_text(value)
            except InvalidText as exc:
                report.warnings.append(f"{printable(source)}: record {record}: field {field!r}: {exc.reason}; dropped")
                return None

        def json_fields(field: str, values: dict[str, Any]) -> dict[str, Any]:
            out: dict[str, Any] = {}
            changed = False
            for key, value in values.items():
                clean_key = cleaned_text(key) if isinstance(key, str) else key
                try:
                    out[clean_key] = clean = cleaned_json(value, depth=1)
                except InvalidText as exc:
                    name = f"{field}.{printable(str(key), limit=60)}"
                    report.warnings.append(
                        f"{printable(source)}: record {record}: field {name!r}: {exc.reason}; dropped"
                    )
                    changed = True
                    continue
                changed = changed or clean is not value or clean_key is not key
            return out if changed else values

        def touchpoint(tp: Touchpoint | None) -> Touchpoint | None:
            if tp is None:
                return None
            if all(
                not isinstance(value, str) or cleaned_text(value) is value
                for value in map(tp.__getattribute__, _TOUCHPOINT_FIELDS)
            ):
                return tp  # the usual case: nothing to clean, no copy
            fields = attrs.asdict(tp, recurse=False)
            clean = {k: cleaned_text(v) if isinstance(v, str) else v for k, v in fields.items()}
            return tp if all(clean[k] is fields[k] for k in fields) else Touchpoint(**clean)

        refuse("source", source)
        changes: dict[str, Any] = {}
        for name in ("first_name", "last_name", "full_name"):
            value = getattr(event, name)
            checked = refuse(name, value, fold=True)
            if checked is not value:
                changes[name] = checked
        refuse("location", event.location)
        for system, ext_id in event.external_ids:
            refuse(f"external_ids.{printable(str(system), limit=40)}", system)
            refuse(f"external_ids.{printable(str(system), limit=40)}", ext_id)
        for name in ("postal_code", "city", "region"):
            value = getattr(event, name)
            checked = optional(name, value)
            if checked is not value:
                changes[name] = checked
        if event.extra:
            extra = {k: optional(k, v) if k in ("street_address", "sex") else v for k, v in event.extra.items()}
            if any(extra[k] is not event.extra[k] for k in extra):
                changes["extra"] = {k: v for k, v in extra.items() if v is not None}
        tp = touchpoint(event.touchpoint)
        if tp is not event.touchpoint:
            changes["touchpoint"] = tp
        drafts = []
        for j, draft in enumerate(event.interactions):
            for name in ("kind", "idempotency_key", "channel", "direction", "location"):
                refuse(f"interactions[{j}].{name}", getattr(draft, name))
            body = cleaned_text(draft.body) if isinstance(draft.body, str) else draft.body
            attributes = json_fields(f"interactions[{j}].attributes", draft.attributes)
            draft_tp = touchpoint(draft.touchpoint)
            if body is not draft.body or attributes is not draft.attributes or draft_tp is not draft.touchpoint:
                draft = attrs.evolve(draft, body=body, attributes=attributes, touchpoint=draft_tp)
            drafts.append(draft)
        if any(a is not b for a, b in zip(drafts, event.interactions, strict=True)):
            changes["interactions"] = tuple(drafts)
        signals = []
        for k, sig in enumerate(event.consents):
            for name in ("contact_point_kind", "channel", "purpose", "status", "idempotency_key"):
                refuse(f"consents[{k}].{name}", getattr(sig, name))
            evidence = json_fields(f"consents[{k}].evidence", sig.evidence)
            regime = json_fields(f"consents[{k}].regime", sig.regime)
            if evidence is not sig.evidence or regime is not sig.regime:
                sig = attrs.evolve(sig, evidence=evidence, regime=regime)
            signals.append(sig)
        if any(a is not b for a, b in zip(signals, event.consents, strict=True)):
            changes["consents"] = tuple(signals)
        dropped = tuple(printable(str(name), limit=80) for name in event.dropped_fields)
        if dropped != event.dropped_fields:
            changes["dropped_fields"] = dropped
        return attrs.evolve(event, **changes) if changes else event


def _clean_at_a_glance(event: LeadEvent) -> bool:
    """True when :meth:`LeadPreparer.screen` would return ``event`` itself with no warning:
    every text it screens is storable as it is, no name needs folding, every JSON value is
    kept as it is and every dropped field's name prints as it is.  One pass over the
    record's texts instead of one check per field (a test checks the two agree)."""
    texts: list[str] = []
    add = texts.append

    def strs(*values: Any) -> None:
        for value in values:
            if isinstance(value, str):
                add(value)

    def touch(tp: Touchpoint | None) -> None:
        if tp is not None:
            strs(*map(tp.__getattribute__, _TOUCHPOINT_FIELDS))

    names = [n for n in (event.first_name, event.last_name, event.full_name) if isinstance(n, str)]
    if folds(names):
        return False
    strs(event.source, event.location, event.postal_code, event.city, event.region, *names)
    for system, ext_id in event.external_ids:
        strs(system, ext_id)
    if event.extra:
        strs(event.extra.get("street_address"), event.extra.get("sex"))
    touch(event.touchpoint)
    for draft in event.interactions:
        strs(draft.kind, draft.idempotency_key, draft.channel, draft.direction, draft.location, draft.body)
        if not json_as_is(draft.attributes, texts):
            return False
        touch(draft.touchpoint)
    for sig in event.consents:
        strs(sig.contact_point_kind, sig.channel, sig.purpose, sig.status, sig.idempotency_key)
        if not (json_as_is(sig.evidence, texts) and json_as_is(sig.regime, texts)):
            return False
    if any(printable(str(name), limit=80) != name for name in event.dropped_fields):
        return False
    return storable_as_is(texts)


_CODE = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")


def service_interest_code(raw: str, service_lines: Sequence[str]) -> str | None:
    """The service-line code for a raw service interest, or None.

    Service interest is stored in clear for segmenting, so only a code may be kept: one
    of the practice's ``service_lines`` (matched case-insensitively, spaces as ``_``), or,
    when the practice lists none, a short lowercase code (``acne``, ``mohs_surgery``).
    Free text ("I think I have skin cancer") is health information and is never stored in
    clear (HIPAA 45 CFR 164.514(b)): it is dropped with a warning.
    """
    text = raw.strip().casefold().replace(" ", "_")
    if service_lines:
        for line in service_lines:
            if line.casefold().replace(" ", "_") == text:
                return line
        return None
    return text if _CODE.match(text) else None


def is_reason_code(text: str) -> bool:
    """True for a short code such as ``too_expensive`` (kept in clear for reports)."""
    return bool(_CODE.match(text))
