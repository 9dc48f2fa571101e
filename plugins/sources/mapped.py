"""The generic mapped source connector (``connector = "mapped"``).

One connector class serves every form tool that POSTs a JSON, form-encoded
(``application/x-www-form-urlencoded``) or multipart (``multipart/form-data``) webhook:
Typeform, Webflow, Unbounce, Jotform and the like.  A practice describes, per source in
``carecrm.toml``, where each value lives in the vendor's payload with JMESPath selectors
(https://jmespath.org/specification.html); the option reference, with complete Typeform
and Webflow mappings, is ``docs/sources/mapped.md``.

The connector follows the source-connector contract (:mod:`carecrm.core.connectors`): it
emits *raw* identity hints and never normalizes emails, parses phones or matches people
(the core does).  Rules it applies, and where they come from:

* only mapped fields are kept; the names (never the values) of the other answers are
  listed in :attr:`LeadEvent.dropped_fields` (decisions.md, "Data minimization defaults");
* consent comes only from explicitly configured fields (decisions.md, "Consent"; the
  Typeform ``legal`` answer is a data-sharing acknowledgement, not marketing consent);
* each interaction and consent signal carries an idempotency key built from the vendor's
  record id and the event type (decisions.md, "Idempotency key");
* times are timezone-aware UTC; naive local times are read in the location's time zone
  (decisions.md, "Time");
* error messages name the source, the record and the field, never the value
  (:class:`carecrm.core.errors.ValidationFailed`, HIPAA 45 CFR 164.502(b)).
"""

from __future__ import annotations

import base64
import binascii
import email.parser
import email.policy
import functools
import hashlib
import hmac
import json
import re
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Mapping
from datetime import UTC, date, datetime, timedelta
from decimal import ROUND_FLOOR, Decimal, InvalidOperation
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import jmespath
import jmespath.exceptions
import jmespath.functions
import jmespath.parser

from carecrm.core.connectors import SourceConnector
from carecrm.core.errors import ConfigError, ValidationFailed
from carecrm.core.hookspecs import hookimpl
from carecrm.core.models import (
    ConsentSignal,
    InteractionDraft,
    LeadEvent,
    RawPayload,
    Touchpoint,
)
from carecrm.core.text import text_problem
from carecrm.core.timeutil import to_utc_ms
from carecrm.core.vocab import CHANNELS, is_valid_kind_name
from carecrm.plugins.sources.urls import URL_PARAMETERS

__all__ = ["MappedConnector", "carecrm_register_sources"]

#: Person fields a ``[sources.<name>.fields]`` table may map.
PERSON_FIELDS: tuple[str, ...] = (
    "email",
    "phone",
    "first_name",
    "last_name",
    "full_name",
    "postal_code",
    "city",
    "region",
    "service_interest",
    "body",
    "street_address",
    "date_of_birth",
    "sex",
)

#: Person fields that go to :attr:`LeadEvent.extra` (off unless the practice turns them
#: on: decisions.md, "Data minimization defaults").
EXTRA_FIELDS: frozenset[str] = frozenset({"street_address", "date_of_birth", "sex"})

#: Touchpoint fields a ``[sources.<name>.touchpoint]`` table may map (the attributes of
#: :class:`carecrm.core.models.Touchpoint` except the derived ``channel_group``).
TOUCHPOINT_FIELDS: tuple[str, ...] = (
    "source",
    "medium",
    "campaign",
    "term",
    "content",
    "gclid",
    "fbclid",
    "msclkid",
    "ad_id",
    "form_id",
    "landing_page",
    "referrer",
)

#: Checkbox values read as "checked" (HTML checkboxes send ``on`` by default; form tools
#: send ``true``/``yes``/``1`` or a JSON boolean).  Compared case-insensitively.
CHECKED_VALUES: frozenset[str] = frozenset({"true", "yes", "y", "on", "1", "checked"})
#: Checkbox values read as "not checked".
UNCHECKED_VALUES: frozenset[str] = frozenset({"false", "no", "n", "off", "0", "unchecked", ""})

#: Contact-point kinds a consent rule may name (decisions.md, "Consent").
CONTACT_POINT_KINDS: frozenset[str] = frozenset({"email", "phone"})

TIME_FORMATS: tuple[str, ...] = ("iso8601", "epoch_s", "epoch_ms")
SIGNATURE_SCHEMES: dict[str, Callable[..., Any]] = {
    "hmac-sha256": hashlib.sha256,
    "hmac-sha1": hashlib.sha1,
}
_SIGNED_PARTS = re.compile(r"\{(body|timestamp|url)\}")
_ISO_HAS_TIME = re.compile(r"^\d{4}-?\d{2}-?\d{2}[Tt ]\d{2}")
_DECIMAL_TEXT = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?$")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_FORM_TYPES = ("application/x-www-form-urlencoded", "multipart/form-data")

_CONSENT_OPTIONS: frozenset[str] = frozenset(
    {"field", "contact_point", "channel", "purpose", "text", "version", "checked_values", "ip"}
)
_SIGNATURE_OPTIONS: frozenset[str] = frozenset(
    {
        "scheme",
        "header",
        "encoding",
        "prefix",
        "signed_payload",
        "timestamp_header",
        "timestamp_unit",
        "max_age_seconds",
    }
)


# --------------------------------------------------------------------------- selectors


@attrs.frozen
class Selector:
    """One compiled JMESPath selector of the config.

    :ivar option: where it was configured (``fields.email``), used in error messages.
    :ivar text: the expression as written.
    :ivar touches_answers: False when the expression provably cannot read the answers
        container (so it is skipped when working out which answers were mapped).
    :ivar keys: for a plain path of keys (``payload.data."First Name"``), the keys: such
        a selector is evaluated by direct look-ups (the hot path), with JMESPath's
        semantics (a missing key or a non-object gives None).
    """

    option: str
    text: str
    parsed: jmespath.parser.ParsedResult = attrs.field(repr=False)
    touches_answers: bool = True
    keys: tuple[str, ...] | None = None

    def search(self, value: Any) -> Any:
        """Evaluate the selector on ``value`` (a record).

        :raises jmespath.exceptions.JMESPathError: when the expression cannot be applied
            to this record (for example ``join()`` over a missing answer).
        """
        if self.keys is not None:
            for key in self.keys:
                if not isinstance(value, dict):
                    return None
                value = value.get(key)
            return value
        return self.parsed.search(value)


def _ast_nodes(node: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every node of a JMESPath AST, depth first."""
    stack = [node]
    while stack:
        current = stack.pop()
        yield current
        stack.extend(child for child in current.get("children", ()) if isinstance(child, Mapping))


def _check_functions(ast: Mapping[str, Any]) -> str | None:
    """Return why the functions called in ``ast`` are wrong, or None when they are fine.

    JMESPath only reports unknown functions and wrong arities when an expression runs;
    checking at start-up turns a typo in config into a :class:`ConfigError`.
    """
    table = jmespath.functions.Functions.FUNCTION_TABLE
    for node in _ast_nodes(ast):
        if node.get("type") != "function_expression":
            continue
        name = node["value"]
        if name not in table:
            return f"unknown JMESPath function {name}()"
        signature = table[name]["signature"]
        count = len(node.get("children", ()))
        variadic = bool(signature) and bool(signature[-1].get("variadic"))
        if (variadic and count < len(signature)) or (not variadic and count != len(signature)):
            return f"wrong number of arguments to {name}()"
    return None


# --------------------------------------------------------------------------- config parts


@attrs.frozen
class ConsentRule:
    """One ``[[sources.<name>.consent]]`` entry: a checkbox that grants consent.

    :ivar selector: where the checkbox value is.
    :ivar contact_point: ``email`` or ``phone``: the consent belongs to the record's
        first address of that kind (decisions.md, "Consent": keyed by contact point).
    :ivar channel: the channel consented to (``email``, ``sms``, ``phone``, ...).
    :ivar purpose: what for (``marketing``, ``appointment_reminders``, ...).
    :ivar text: the consent wording shown next to the checkbox (evidence).
    :ivar version: the wording's version (evidence), or None.
    :ivar checked_values: lowercase texts read as checked, besides JSON ``true``.
    :ivar ip: where the submitter's IP address is (evidence), or None.
    """

    index: int
    selector: Selector
    contact_point: str
    channel: str
    purpose: str
    text: str = attrs.field(repr=False)
    version: str | None
    checked_values: frozenset[str]
    ip: Selector | None


@attrs.frozen
class SignatureRule:
    """The ``[sources.<name>.signature]`` table: how the vendor signs its webhooks.

    :ivar scheme: ``hmac-sha256`` or ``hmac-sha1``.
    :ivar header: the header carrying the signature.
    :ivar encoding: ``hex`` or ``base64`` (of the raw digest).
    :ivar prefix: stripped from the header value (``sha256=``).
    :ivar parts: the signed string as literal and placeholder parts (``{body}``,
        ``{timestamp}``, ``{url}``).
    :ivar timestamp_header: the header carrying the signing time, or None.
    :ivar timestamp_unit: ``s`` or ``ms`` (Webflow's ``x-webflow-timestamp`` is ms).
    :ivar max_age_seconds: reject signatures older (or further in the future) than this,
        measured against the payload's ``received_at``; None means no limit.
    """

    scheme: str
    header: str
    encoding: str
    prefix: str
    parts: tuple[tuple[str, str], ...]
    timestamp_header: str | None
    timestamp_unit: str
    max_age_seconds: float | None


class _Options:
    """Reads and checks the options table; every complaint is a :class:`ConfigError`
    naming the source and the option."""

    def __init__(self, source: str, options: Mapping[str, Any], prefix: str = "") -> None:
        self.source = source
        self.options = options
        self.prefix = prefix

    def error(self, option: str, reason: str) -> ConfigError:
        return ConfigError(f"source {self.source!r}: option {self.prefix + option!r}: {reason}")

    def text(self, key: str, default: str | None = None, choices: Iterable[str] | None = None) -> str | None:
        value = self.options.get(key, default)
        return self.check_text(key, value, choices)

    def check_text(self, option: str, value: Any, choices: Iterable[str] | None = None) -> str | None:
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(option, "must be a string")
        if choices is not None:
            allowed = sorted(choices)
            if value not in allowed:
                raise self.error(option, f"must be one of {', '.join(allowed)}")
        return value

    def table(self, key: str) -> Mapping[str, Any]:
        value = self.options.get(key, {})
        if not isinstance(value, Mapping):
            raise self.error(key, "must be a table")
        return value

    def selector(self, option: str, text: Any, answers_key: str | None = None) -> Selector:
        if not isinstance(text, str) or not text.strip():
            raise self.error(option, "must be a non-empty JMESPath expression (a string)")
        try:
            parsed = jmespath.compile(text)
        except jmespath.exceptions.JMESPathError as exc:
            raise self.error(option, f"invalid JMESPath: {exc}") from None
        problem = _check_functions(parsed.parsed)
        if problem:
            raise self.error(option, problem)
        touches = _may_touch(parsed.parsed, answers_key)
        return Selector(option, text, parsed, touches, _key_path(parsed.parsed))


def _may_touch(ast: Mapping[str, Any], answers_key: str | None) -> bool:
    """Whether an expression may read the answers container named ``answers_key``.

    Conservative: True when the expression names that key, projects over an object's
    values (``*``) or calls a function that reads whole objects.  ``answers_key`` None
    means the answers container is the record itself: every expression may read it.
    """
    if answers_key is None:
        return True
    for node in _ast_nodes(ast):
        kind = node.get("type")
        if kind == "field" and node.get("value") == answers_key:
            return True
        if kind == "value_projection":
            return True
        if kind == "function_expression" and node.get("value") in {"values", "keys", "merge", "to_array"}:
            return True
    return False


def _key_path(ast: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The keys of an expression that is a plain path of keys (``a.b."c d"``), ``()`` for
    ``@``, None for anything else."""
    if ast["type"] in ("current", "identity"):
        return ()
    if ast["type"] == "field":
        return (ast["value"],)
    if ast["type"] == "subexpression":
        keys: tuple[str, ...] = ()
        for child in ast["children"]:
            part = _key_path(child)
            if part is None:
                return None
            keys += part
        return keys
    return None


def _answers_path(reader: _Options, text: str) -> tuple[str, ...]:
    """The key path of the ``answers`` option: ``@`` or a dotted path of plain keys."""
    try:
        ast = jmespath.compile(text).parsed
    except jmespath.exceptions.JMESPathError as exc:
        raise reader.error("answers", f"invalid JMESPath: {exc}") from None
    keys = _key_path(ast)
    if keys is None:
        raise reader.error("answers", "must be @ or a path of keys such as form_response.answers")
    return keys


# --------------------------------------------------------------------------- value coercion


class _Bad(Exception):
    """A value cannot be used; ``reason`` never repeats the value."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str | None:
    """A single text value: strings as sent (blank → None), integers as their digits, a
    one-element list (form tools send every answer as a list) unwrapped."""
    if isinstance(value, list):
        if not value:
            return None
        if len(value) > 1:
            raise _Bad(f"expected one value, got a list of {len(value)}")
        return _text(value[0])
    if _blank(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise _Bad("expected text, got a boolean")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value.is_integer():
            return str(int(value))
        raise _Bad("expected text, got a number with a fraction")
    raise _Bad("expected text, got an object")


def _phone(value: Any) -> str | None:
    """A phone exactly as sent: strings unchanged; a JSON integer as its exact digits
    (Webflow sends ``15550000000`` as a number, webflow.expected.md); a JSON float only
    when it is a whole number below 2**53 (so exactly representable)."""
    if _blank(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        raise _Bad("expected a phone number, got a boolean")
    if isinstance(value, int):
        if value < 0:
            raise _Bad("expected a phone number, got a negative number")
        return str(value)
    if isinstance(value, float):
        if value.is_integer() and 0 <= value < 2**53:
            return str(int(value))
        raise _Bad("expected a phone number, got a number with a fraction")
    raise _Bad("expected a phone number, got an object")


def _many(value: Any, one: Callable[[Any], str | None]) -> tuple[str, ...]:
    """Zero or more values (emails, phones): a list gives several."""
    items = value if isinstance(value, list) else [value]
    out = []
    for item in items:
        if isinstance(item, list):
            raise _Bad("expected a value or a list of values, got nested lists")
        got = one(item)
        if got is not None and got not in out:
            out.append(got)
    return tuple(out)


def _body(value: Any) -> str | None:
    """Inquiry text: a string as sent, a list of strings one per line, else JSON text."""
    if _blank(value):
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        text = "\n".join(v for v in value if v.strip())
        return text or None
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _checked(value: Any, checked: frozenset[str]) -> bool:
    """Whether a checkbox value means "checked".

    :raises _Bad: for a value that is neither a known checked nor unchecked value (a
        misconfigured selector must not silently grant or hide consent).
    """
    if isinstance(value, list):
        if not value:
            return False
        if len(value) == 1:
            return _checked(value[0], checked)
        raise _Bad("a consent checkbox gave several values")
    if value is None or value is False:
        return False
    if value is True:
        return True
    if isinstance(value, int | float):
        if value in (0, 1):
            return bool(value)
        raise _Bad("a consent checkbox gave a number other than 0 or 1")
    if isinstance(value, str):
        folded = value.strip().casefold()
        if folded in checked:
            return True
        if folded in UNCHECKED_VALUES:
            return False
        raise _Bad("a consent checkbox gave a value that is neither checked nor unchecked")
    raise _Bad("a consent checkbox gave an object")


def _clean_url(url: str | None) -> tuple[str | None, dict[str, str]]:
    """Split a landing-page or referrer URL into the URL without query, fragment or user
    info (query strings can carry personal data such as ``?email=``) and its UTM / click-id
    parameters.  An unparseable URL gives ``(None, {})``."""
    if url is None:
        return None, {}
    try:
        parts = urllib.parse.urlsplit(url)
        query = urllib.parse.parse_qs(parts.query, keep_blank_values=False)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return None, {}
    if port is not None:
        host = f"{host}:{port}"
    params = {URL_PARAMETERS[k]: v[0] for k, v in query.items() if k in URL_PARAMETERS and v[0].strip()}
    return urllib.parse.urlunsplit((parts.scheme, host, parts.path, "", "")) or None, params


def _scalar_leaves(value: Any, values: set[tuple[type, Any]], ids: set[int]) -> None:
    """Collect the scalar leaves (with their type) and container ids under ``value``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            ids.add(id(item))
            stack.extend(item.values())
        elif isinstance(item, list):
            ids.add(id(item))
            stack.extend(item)
        elif item is not None:
            values.add((type(item), item))


# --------------------------------------------------------------------------- connector


@attrs.frozen(kw_only=True)
class MappedOptions:
    """The ``[sources.<name>]`` options of a mapped source (reference:
    ``docs/sources/mapped.md``).  Types are checked when the table is structured; the
    connector then checks values (choices, JMESPath, locations, time zones), naming the
    source and the option.  Selectors are JMESPath expressions (strings).

    ``consent`` (an array of ``[[sources.<name>.consent]]`` tables, or one table) and
    ``signature`` (a table) are checked by the connector, key by key.
    """

    format: str | None = None
    json_strings: tuple[str, ...] = ()
    records: str | None = None
    only_if: str | None = None
    record_id: str | None = None
    person_id: str | None = None
    kind: str = "form.submitted"
    channel: str = "web"
    direction: str = "inbound"
    occurred_at: str | None = None
    occurred_at_fallback: str | None = None
    time_format: str = "iso8601"
    time_zone: str | None = None
    location: str | None = None
    name_confidence: str = "high"
    answers: str = "@"
    answer_key: str | None = None
    keep_other_answers: bool = False
    fields: dict[str, str] = attrs.Factory(dict)
    literals: dict[str, str] = attrs.Factory(dict)
    touchpoint: dict[str, str] = attrs.Factory(dict)
    attributes: dict[str, str] = attrs.Factory(dict)
    consent: Any = attrs.Factory(list)
    signature: dict[str, Any] | None = None


#: The top-level options of a mapped source.
_OPTIONS: frozenset[str] = frozenset(field.name for field in attrs.fields(MappedOptions))


class MappedConnector(SourceConnector):
    """Maps any form tool's JSON or form-encoded webhook to lead events by configuration.

    :param name: the source's name (``typeform``): the ``source`` of the interactions and
        the system of person external ids.
    :param options: the ``[sources.<name>]`` table minus ``connector`` and ``secret``;
        reference in ``docs/sources/mapped.md``.
    :param practice: the practice; gives the default time zone (its location's).
    :raises ConfigError: naming the source and the option, for an unknown option, a
        wrong type or value, an invalid JMESPath expression, an unknown function or
        location or time zone.  Every selector is compiled here, once.
    """

    connector_id = "mapped"
    description = "Any form tool's JSON or form-encoded webhook, mapped with JMESPath in config"
    signed = False

    options_type = MappedOptions

    def __init__(self, *legacy: Any, name: str | None = None, options: Any = None, settings: Any = None) -> None:
        super().__init__(*legacy, name=name, options=options, settings=settings)
        opts: MappedOptions = self.options
        practice = self.practice
        reader = _Options(self.name, {})

        self.format = reader.check_text("format", opts.format, choices=("json", "form"))
        self.json_strings: tuple[str, ...] = opts.json_strings

        self.answers_path = _answers_path(reader, opts.answers or "@")
        answers_key = self.answers_path[-1] if self.answers_path else None

        def sel(option: str, text: Any) -> Selector:
            return reader.selector(option, text, answers_key)

        def optional(key: str) -> Selector | None:
            text = getattr(opts, key)
            return None if text is None else sel(key, text)

        self.records = optional("records")
        self.only_if = optional("only_if")
        self.record_id = optional("record_id")
        self.person_id = optional("person_id")
        self.answer_key = optional("answer_key")

        kind = opts.kind or "form.submitted"
        if not is_valid_kind_name(kind):
            raise reader.error("kind", "must be a dotted noun.event name such as form.submitted")
        self.kind = kind
        self.channel = reader.check_text("channel", opts.channel, choices=CHANNELS)
        self.direction = reader.check_text("direction", opts.direction, choices=("inbound", "outbound"))
        self.name_confidence = reader.check_text("name_confidence", opts.name_confidence, choices=("high", "low"))

        self.location = opts.location
        try:
            location = practice.location(self.location)
        except KeyError:
            known = ", ".join(loc.name for loc in practice.locations)
            raise reader.error("location", f"no such location in the practice; known: {known}") from None
        zone_name = opts.time_zone or location.timezone
        try:
            self.time_zone = ZoneInfo(zone_name)
        except (ZoneInfoNotFoundError, ValueError):
            raise reader.error("time_zone", "unknown IANA time zone") from None

        self.time_format = opts.time_format or "iso8601"
        if self.time_format not in TIME_FORMATS and "%" not in self.time_format:
            raise reader.error("time_format", "must be iso8601, epoch_s, epoch_ms or a strptime pattern containing %")
        self.occurred_at = optional("occurred_at")
        self.occurred_at_fallback = reader.check_text(
            "occurred_at_fallback", opts.occurred_at_fallback, choices=("received",)
        )
        if self.occurred_at is None and self.occurred_at_fallback is None:
            raise reader.error(
                "occurred_at", 'is required (or set occurred_at_fallback = "received" for vendors that send no time)'
            )

        self.keep_other_answers = opts.keep_other_answers

        self.fields: dict[str, Selector] = {}
        for key, text in opts.fields.items():
            if key not in PERSON_FIELDS:
                raise reader.error(f"fields.{key}", f"unknown field; known: {', '.join(PERSON_FIELDS)}")
            self.fields[key] = sel(f"fields.{key}", text)
        self.touchpoint: dict[str, Selector] = {}
        for key, text in opts.touchpoint.items():
            if key not in TOUCHPOINT_FIELDS:
                raise reader.error(
                    f"touchpoint.{key}", f"unknown touchpoint field; known: {', '.join(TOUCHPOINT_FIELDS)}"
                )
            self.touchpoint[key] = sel(f"touchpoint.{key}", text)
        self.literals: dict[str, str] = {}
        for key, value in opts.literals.items():
            option = f"literals.{key}"
            if key not in PERSON_FIELDS and key not in TOUCHPOINT_FIELDS:
                raise reader.error(option, "not a person or touchpoint field")
            if key in self.fields or key in self.touchpoint:
                raise reader.error(option, "is also mapped by a selector; keep one")
            if key in ("email", "phone", "date_of_birth"):
                raise reader.error(option, "a constant email, phone or date of birth makes no sense")
            text = reader.check_text(option, value)
            if text is not None and text.strip():
                self.literals[key] = text
        self.attributes: dict[str, Selector] = {
            key: sel(f"attributes.{key}", text) for key, text in opts.attributes.items()
        }
        if "external_record_id" in self.attributes or "occurred_at_source" in self.attributes:
            raise reader.error("attributes", "external_record_id and occurred_at_source are set by the connector")

        self.consent = tuple(self._consent_rules(reader, sel))
        self.signature = self._signature_rule(reader)
        #: True when a ``signature`` table is configured: :meth:`verify` then checks it.
        self.signed = self.signature is not None  # type: ignore[misc]

    # ------------------------------------------------------------------ config helpers

    def _consent_rules(self, reader: _Options, sel: Callable[[str, Any], Selector]) -> Iterator[ConsentRule]:
        entries = self.options.consent
        if isinstance(entries, Mapping):
            entries = [entries]
        if not isinstance(entries, list):
            raise reader.error("consent", "must be an array of tables ([[sources.<name>.consent]])")
        for index, entry in enumerate(entries):
            where = f"consent[{index}]"
            if not isinstance(entry, Mapping):
                raise reader.error(where, "must be a table")
            unknown = sorted(set(entry) - _CONSENT_OPTIONS)
            if unknown:
                known = ", ".join(sorted(_CONSENT_OPTIONS))
                raise reader.error(f"{where}.{unknown[0]}", f"unknown; known: {known}")
            for required in ("field", "contact_point", "channel", "purpose", "text"):
                if not entry.get(required):
                    raise reader.error(f"{where}.{required}", "is required")
            checked = entry.get("checked_values")
            if checked is None:
                checked_values = CHECKED_VALUES
            elif isinstance(checked, list) and all(isinstance(v, str) for v in checked):
                checked_values = CHECKED_VALUES | {v.strip().casefold() for v in checked}
            else:
                raise reader.error(f"{where}.checked_values", "must be a list of strings")
            yield ConsentRule(
                index=index,
                selector=sel(f"{where}.field", entry["field"]),
                contact_point=reader.check_text(f"{where}.contact_point", entry["contact_point"], CONTACT_POINT_KINDS)
                or "",
                channel=reader.check_text(f"{where}.channel", entry["channel"], CHANNELS) or "",
                purpose=reader.check_text(f"{where}.purpose", entry["purpose"]) or "",
                text=reader.check_text(f"{where}.text", entry["text"]) or "",
                version=reader.check_text(f"{where}.version", entry.get("version")),
                checked_values=checked_values,
                ip=None if entry.get("ip") is None else sel(f"{where}.ip", entry["ip"]),
            )

    def _signature_rule(self, reader: _Options) -> SignatureRule | None:
        table = self.options.signature
        if table is None:
            return None
        if not isinstance(table, Mapping):
            raise reader.error("signature", "must be a table")
        sub = _Options(self.name, table, prefix="signature.")
        error = sub.error
        unknown = sorted(set(table) - _SIGNATURE_OPTIONS)
        if unknown:
            raise error(unknown[0], f"unknown; known: {', '.join(sorted(_SIGNATURE_OPTIONS))}")
        for required in ("scheme", "header"):
            if not table.get(required):
                raise error(required, "is required")
        scheme = sub.text("scheme", choices=SIGNATURE_SCHEMES) or ""
        header = sub.text("header") or ""
        encoding = sub.text("encoding", "hex", choices=("hex", "base64")) or "hex"
        prefix = sub.text("prefix", "") or ""
        template = sub.text("signed_payload", "{body}") or "{body}"
        timestamp_header = sub.text("timestamp_header")
        unit = sub.text("timestamp_unit", "s", choices=("s", "ms")) or "s"
        parts: list[tuple[str, str]] = []
        position = 0
        for match in _SIGNED_PARTS.finditer(template):
            if match.start() > position:
                parts.append(("text", template[position : match.start()]))
            parts.append(("part", match.group(1)))
            position = match.end()
        if position < len(template):
            parts.append(("text", template[position:]))
        if any(kind == "text" and ("{" in t or "}" in t) for kind, t in parts):
            raise error("signed_payload", "placeholders are {body}, {timestamp} and {url}")
        max_age = table.get("max_age_seconds")
        if max_age is not None and (isinstance(max_age, bool) or not isinstance(max_age, int | float) or max_age <= 0):
            raise error("max_age_seconds", "must be a positive number of seconds")
        uses_timestamp = any(p == ("part", "timestamp") for p in parts)
        if (uses_timestamp or max_age is not None) and not timestamp_header:
            raise error("timestamp_header", "is required with {timestamp} or max_age_seconds")
        return SignatureRule(
            scheme=scheme,
            header=header,
            encoding=encoding,
            prefix=prefix,
            parts=tuple(parts),
            timestamp_header=timestamp_header,
            timestamp_unit=unit,
            max_age_seconds=None if max_age is None else float(max_age),
        )

    # ------------------------------------------------------------------ verify

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check the vendor's HMAC signature of the raw body.

        The digest (HMAC-SHA256 or HMAC-SHA1 keyed with ``secret``, UTF-8) is computed
        over the configured ``signed_payload`` (default the raw body bytes; Webflow:
        ``"{timestamp}:{body}"`` with ``x-webflow-timestamp`` in milliseconds,
        https://developers.webflow.com/data/docs/working-with-webhooks; Typeform: the
        body, base64 with ``sha256=``, https://www.typeform.com/developers/webhooks/secure-your-webhooks/)
        and compared in constant time (:func:`hmac.compare_digest`).

        :param payload: the payload as received (headers looked up case-insensitively).
        :param secret: the ``secret`` of ``[sources.<name>]``.
        :raises ValidationFailed: ``(source, "payload", <header name>, reason)`` when the
            signature or timestamp header is missing, malformed, wrong or too old.
        :raises ConfigError: when a secret is configured but no ``signature`` table:
            a signature would otherwise never be checked.
        """
        rule = self.signature
        if rule is None:
            raise ConfigError(
                f"source {self.name!r}: a secret is configured but no [sources.{self.name}.signature] table"
            )

        def fail(header: str, reason: str) -> ValidationFailed:
            return ValidationFailed(self.name, "payload", header, reason)

        given = payload.header(rule.header)
        if given is None or not given.strip():
            raise fail(rule.header, "signature header is missing")
        given = given.strip()
        if rule.prefix:
            if not given.startswith(rule.prefix):
                raise fail(rule.header, "signature lacks the expected prefix")
            given = given[len(rule.prefix) :]
        try:
            if rule.encoding == "hex":
                given_digest = bytes.fromhex(given)
            else:
                given_digest = base64.b64decode(given, validate=True)
        except (ValueError, binascii.Error):
            raise fail(rule.header, f"signature is not {rule.encoding}") from None

        timestamp = ""
        if rule.timestamp_header:
            stamp = payload.header(rule.timestamp_header)
            if stamp is None or not stamp.strip():
                raise fail(rule.timestamp_header, "timestamp header is missing")
            timestamp = stamp.strip()
            if not (timestamp.isascii() and timestamp.isdigit()):
                raise fail(rule.timestamp_header, "timestamp is not a whole number")
            if rule.max_age_seconds is not None:
                seconds = int(timestamp) / (1000 if rule.timestamp_unit == "ms" else 1)
                age = payload.received_at.timestamp() - seconds
                if abs(age) > rule.max_age_seconds:
                    raise fail(rule.timestamp_header, "signature is older than max_age_seconds (or in the future)")

        try:
            # a URL Python read from non-UTF-8 bytes holds surrogate escapes: give back its bytes
            url = (payload.url or "").encode("utf-8", "surrogateescape")
        except UnicodeEncodeError:
            raise fail("url", "the request URL is not valid text (a lone surrogate)") from None
        values = {"body": payload.body, "timestamp": timestamp.encode(), "url": url}
        message = b"".join(values[t] if kind == "part" else t.encode() for kind, t in rule.parts)
        expected = hmac.new(secret.encode(), message, SIGNATURE_SCHEMES[rule.scheme]).digest()
        if not hmac.compare_digest(expected, given_digest):
            raise fail(rule.header, "signature does not match")

    # ------------------------------------------------------------------ parse

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | ValidationFailed]:
        """Parse one payload into one :class:`LeadEvent` per record.

        :param payload: JSON, form-encoded or multipart bytes (the ``format`` option or
            else the content type decides).
        :returns: an iterator of lead events, and of :class:`ValidationFailed` for
            records that cannot be accepted (bad time, bad phone, a selector that does
            not apply); the other records still go in.
        :raises ValidationFailed: ``(source, "payload", "body", reason)`` when the payload
            as a whole cannot be read (not JSON, not form encoding, ``records`` not a
            list) or a ``json_strings`` value is not JSON (field = that key).
        """
        data = self._decode(payload)
        records: Iterable[Any] = [data]
        if self.records is not None:
            try:
                selected = self.records.search(data)
            except jmespath.exceptions.JMESPathError:
                selected = None
            if not isinstance(selected, list):
                raise ValidationFailed(self.name, "payload", "body", "the records selector did not give a list")
            records = selected
        return self._events(records, payload)

    def _events(self, records: Iterable[Any], payload: RawPayload) -> Iterator[LeadEvent | ValidationFailed]:
        """One lead event (or refusal) per record: a record that fails in any other way is
        refused too (its field ``record``, the exception's type as the reason, never its
        text), so a poison record never costs the payload's other records."""
        for index, record in enumerate(records):
            try:
                event = self._record(index, record, payload)
            except ValidationFailed as exc:
                yield exc
                continue
            except Exception as exc:  # noqa: BLE001 - one record's failure never stops the payload
                yield ValidationFailed(self.name, f"#{index}", "record", f"cannot be read ({type(exc).__name__})")
                continue
            if event is not None:
                yield event

    # ------------------------------------------------------------------ decoding

    def _decode(self, payload: RawPayload) -> Any:
        """The payload as Python data (JSON value, or a dict of form fields)."""
        media, params = _content_type(payload.content_type)
        fmt = self.format or ("form" if media in _FORM_TYPES else "json")
        if not payload.body.strip():
            raise ValidationFailed(self.name, "payload", "body", "empty body")
        if fmt == "json":
            data = self._decode_json(payload.body, "body")
        elif media == "multipart/form-data":
            data = self._decode_multipart(payload.body, payload.content_type, params)
        else:
            data = self._decode_urlencoded(payload.body, params.get("charset", "utf-8"))
        if self.json_strings and isinstance(data, dict):
            for key in self.json_strings:
                value = data.get(key)
                if isinstance(value, str):
                    data[key] = self._decode_json(value.encode("utf-8"), key)
        return data

    def _decode_json(self, raw: bytes, field: str) -> Any:
        def no_constants(_name: str) -> Any:
            raise ValueError("NaN and Infinity are not JSON")

        try:
            return json.loads(raw, parse_constant=no_constants)
        except json.JSONDecodeError as exc:
            reason = f"not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno})"
        except (UnicodeDecodeError, ValueError):
            reason = "not valid JSON"
        raise ValidationFailed(self.name, "payload", field, reason)

    def _decode_urlencoded(self, raw: bytes, charset: str) -> dict[str, Any]:
        """``application/x-www-form-urlencoded``: single values as strings, repeated keys
        as lists (WHATWG URL standard, "application/x-www-form-urlencoded parsing").

        Empty segments (``a=1&&b=2``, a trailing ``&``) and a trailing line break are
        ignored like browsers do; a segment without ``=`` (a JSON or text body) is refused.
        """
        try:
            text = raw.decode(charset).rstrip("\r\n")
            segments = [segment for segment in text.split("&") if segment]
            if any("=" not in segment for segment in segments):
                raise ValidationFailed(self.name, "payload", "body", "not form encoding (a field lacks '=')")
            pairs = urllib.parse.parse_qsl(
                "&".join(segments), keep_blank_values=True, encoding=charset, errors="strict"
            )
        except (UnicodeDecodeError, LookupError):
            raise ValidationFailed(self.name, "payload", "body", f"not {charset} form encoding") from None
        return _collect(pairs)

    def _decode_multipart(self, raw: bytes, content_type: str, params: Mapping[str, str]) -> dict[str, Any]:
        """``multipart/form-data`` (RFC 7578), read with the stdlib ``email`` parser.

        File parts are kept as ``None`` (their name only): uploads (ID documents) are
        never read (jotform expected.md).  LF and CRLF line endings are both accepted.
        """
        if not params.get("boundary"):
            raise ValidationFailed(self.name, "payload", "body", "multipart content type without a boundary")
        header = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode("latin-1", "replace")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + raw)
        if not message.is_multipart() or any(
            type(d).__name__ in ("StartBoundaryNotFoundDefect", "NoBoundaryInMultipartDefect") for d in message.defects
        ):
            raise ValidationFailed(self.name, "payload", "body", "not multipart/form-data with that boundary")
        pairs: list[tuple[str, Any]] = []
        for part in message.iter_parts():
            name = part.get_param("name", header="content-disposition")
            if not isinstance(name, str):
                continue
            if part.get_filename() is not None:
                pairs.append((name, None))
                continue
            data = part.get_payload(decode=True)
            charset = part.get_content_charset() or "utf-8"
            try:
                pairs.append((name, data.decode(charset) if isinstance(data, bytes) else ""))
            except (UnicodeDecodeError, LookupError):
                raise ValidationFailed(self.name, "payload", name, f"part is not {charset} text") from None
        return _collect(pairs)

    # ------------------------------------------------------------------ one record

    def _record(self, index: int, record: Any, payload: RawPayload) -> LeadEvent | None:
        """Build the lead event of one record, or None when ``only_if`` skips it.

        :raises ValidationFailed: naming the record and the field at fault.
        """
        ref = f"#{index}"
        if not isinstance(record, dict):
            raise ValidationFailed(self.name, ref, "record", "a record must be a JSON object")
        results: list[tuple[Selector, Any]] = []

        def get(selector: Selector, field: str, track: bool = True) -> Any:
            try:
                value = selector.search(record)
            except jmespath.exceptions.JMESPathTypeError as exc:
                reason = f"selector does not apply to this record ({exc.function_name}() got {exc.actual_type})"
                raise ValidationFailed(self.name, ref, field, reason) from None
            except jmespath.exceptions.JMESPathError:
                reason = "selector does not apply to this record"
                raise ValidationFailed(self.name, ref, field, reason) from None
            if track and selector.touches_answers:
                results.append((selector, value))
            return value

        def convert(field: str, value: Any, how: Callable[[Any], Any]) -> Any:
            try:
                return how(value)
            except _Bad as bad:
                raise ValidationFailed(self.name, ref, field, bad.reason) from None

        if self.only_if is not None and not _truthy(get(self.only_if, "only_if", False)):
            return None

        record_id = None
        if self.record_id is not None:
            record_id = convert("record_id", get(self.record_id, "record_id"), _identifier)
            if record_id is not None:
                ref = record_id
        person_id = None
        if self.person_id is not None:
            person_id = convert("person_id", get(self.person_id, "person_id"), _identifier)

        occurred_at, approximate = self._occurred_at(ref, payload, get)

        values: dict[str, Any] = dict(self.literals)
        unreadable: list[str] = []
        for field, selector in self.fields.items():
            raw = get(selector, field)
            if field == "email":
                values[field] = convert(field, raw, lambda v: _many(v, _text))
            elif field == "phone":
                values[field] = convert(field, raw, lambda v: _many(v, _phone))
            elif field == "body":
                values[field] = _body(raw)
            elif field == "date_of_birth":
                # an optional field (off unless the practice collects it): a value that is
                # not a date is dropped and counted, never a reason to lose the lead
                try:
                    values[field] = convert(field, raw, _date)
                except ValidationFailed:
                    values[field] = None
                    unreadable.append(field)
            else:
                values[field] = convert(field, raw, _text)

        touch: dict[str, str | None] = {k: values.pop(k) for k in list(values) if k in TOUCHPOINT_FIELDS}
        for field, selector in self.touchpoint.items():
            touch[field] = convert(f"touchpoint.{field}", get(selector, f"touchpoint.{field}"), _text)
        landing, landing_params = _clean_url(touch.get("landing_page"))
        referrer, _ = _clean_url(touch.get("referrer"))
        touch["landing_page"], touch["referrer"] = landing, referrer
        for field, value in landing_params.items():
            if touch.get(field) is None:
                touch[field] = value
        touchpoint = Touchpoint(**touch)

        attributes: dict[str, Any] = {}
        for key, selector in self.attributes.items():
            value = get(selector, f"attributes.{key}")
            if not _blank(value):
                attributes[key] = value
        if record_id is not None:
            attributes["external_record_id"] = record_id
        if approximate:
            attributes["occurred_at_source"] = "received"

        key_base = record_id if record_id is not None else "digest:" + self.record_digest(_canonical(record))
        idempotency_key = f"{self.kind}:{key_base}"
        consents = tuple(self._consents(occurred_at, touchpoint, idempotency_key, get, convert))

        dropped, others = self._unmapped(record, results)
        dropped = (*dropped, *unreadable)
        body = values.pop("body", None)
        if self.keep_other_answers and others:
            body = json.dumps({"inquiry": body, "other_answers": others}, ensure_ascii=False, default=str)

        interaction = InteractionDraft(
            kind=self.kind,
            occurred_at=occurred_at,
            idempotency_key=idempotency_key,
            channel=self.channel,
            direction=self.direction,
            location=self.location,
            body=body,
            attributes=attributes,
            touchpoint=touchpoint,
        )
        extra = {k: values.pop(k) for k in list(values) if k in EXTRA_FIELDS and values[k] is not None}
        return LeadEvent(
            source=self.name,
            record_ref=ref,
            emails=values.pop("email", ()),
            phones=values.pop("phone", ()),
            first_name=values.get("first_name"),
            last_name=values.get("last_name"),
            full_name=values.get("full_name"),
            name_confidence=self.name_confidence,
            postal_code=values.get("postal_code"),
            city=values.get("city"),
            region=values.get("region"),
            location=self.location,
            service_interest=values.get("service_interest"),
            external_ids=((self.name, person_id),) if person_id is not None else (),
            touchpoint=touchpoint,
            interactions=(interaction,),
            consents=consents,
            extra=extra,
            dropped_fields=dropped,
        )

    def _occurred_at(self, ref: str, payload: RawPayload, get: Callable[[Selector, str], Any]) -> tuple[datetime, bool]:
        """The record's time (UTC) and whether it is the receive time instead."""
        value = None if self.occurred_at is None else get(self.occurred_at, "occurred_at")
        if isinstance(value, list) and len(value) == 1:
            value = value[0]
        if _blank(value):
            if self.occurred_at_fallback == "received":
                return payload.received_at, True
            raise ValidationFailed(self.name, ref, "occurred_at", "time is missing")
        try:
            return self._parse_time(value), False
        except _Bad as bad:
            raise ValidationFailed(self.name, ref, "occurred_at", bad.reason) from None

    def _parse_time(self, value: Any) -> datetime:
        """Read a time by ``time_format``; naive times are read in ``time_zone`` (fold 0:
        the earlier of an ambiguous autumn hour).  :raises _Bad: without the value."""
        fmt = self.time_format
        if fmt in ("epoch_s", "epoch_ms"):
            if isinstance(value, bool):
                raise _Bad("expected an epoch number, got a boolean")
            if isinstance(value, int):
                number = Decimal(value)
            elif isinstance(value, float):
                number = Decimal(repr(value))
            elif isinstance(value, str) and _DECIMAL_TEXT.match(value.strip()):
                number = Decimal(value.strip())
            else:
                raise _Bad(f"expected a number of {'milliseconds' if fmt == 'epoch_ms' else 'seconds'}")
            try:
                scaled = number * (1000 if fmt == "epoch_ms" else 1_000_000)
                micros = int(scaled.to_integral_value(ROUND_FLOOR))
                return to_utc_ms(_EPOCH + timedelta(microseconds=micros))
            except (OverflowError, InvalidOperation, ValueError):
                raise _Bad("epoch time out of range") from None
        if not isinstance(value, str):
            raise _Bad("expected a date-time text")
        text = value.strip()
        try:
            if fmt == "iso8601":
                if not _ISO_HAS_TIME.match(text):
                    raise _Bad("not an ISO 8601 date-time (a date without a time of day is not a timestamp)")
                parsed = datetime.fromisoformat(text)
            else:
                parsed = datetime.strptime(text, fmt)
        except ValueError:
            raise _Bad(f"does not match time_format {fmt}") from None
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=self.time_zone)
        try:
            return to_utc_ms(parsed)
        except (OverflowError, ValueError):
            raise _Bad("time out of range") from None

    def _consents(
        self,
        occurred_at: datetime,
        touchpoint: Touchpoint,
        key_base: str,
        get: Callable[[Selector, str], Any],
        convert: Callable[[str, Any, Callable[[Any], Any]], Any],
    ) -> Iterator[ConsentSignal]:
        """Consent signals of the checked, configured consent checkboxes (status granted)."""
        for rule in self.consent:
            field = f"consent[{rule.index}]"
            if not convert(field, get(rule.selector, field), functools.partial(_checked, checked=rule.checked_values)):
                continue
            evidence: dict[str, Any] = {
                "method": "web_form_checkbox",
                "source": self.name,
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
                ip = convert(f"{field}.ip", get(rule.ip, f"{field}.ip"), _text)
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

    # ------------------------------------------------------------------ minimization

    def _unmapped(
        self, record: dict[str, Any], results: list[tuple[Selector, Any]]
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        """Names of the answers no mapped selector used, and those answers by name.

        An answer counts as used when removing it from the answers container changes the
        result of a mapped selector.  Candidates are first narrowed to the answers that
        contain the selector's result (cheap), then checked by leaving each one out; only
        a derived result (``join()``, ``length()``) is checked against every answer.
        """
        parent: dict[str, Any] | None = None
        container: Any = record
        for key in self.answers_path:
            if not isinstance(container, dict):
                return (), {}
            parent, container = container, container.get(key)
        if isinstance(container, dict):
            names = list(container)
            answers = list(container.values())
        elif isinstance(container, list):
            answers = container
            names = [self._answer_name(i, a) for i, a in enumerate(container)]
        else:
            return (), {}
        if not answers:
            return (), {}

        def without(i: int) -> Any:
            if isinstance(container, dict):
                return {k: v for k, v in container.items() if k != names[i]}
            return container[:i] + container[i + 1 :]

        def changed(selector: Selector, result: Any, i: int) -> bool:
            replacement = without(i)
            target = replacement
            if parent is not None:
                parent[self.answers_path[-1]] = replacement
                target = record
            try:
                return bool(selector.search(target) != result)
            except jmespath.exceptions.JMESPathError:
                return True
            finally:
                if parent is not None:
                    parent[self.answers_path[-1]] = container

        used: set[int] = set()
        pending: list[tuple[Selector, Any]] = []
        if isinstance(container, dict):
            # fast path: a plain key path into the answers object names its answer directly
            depth = len(self.answers_path)
            position = {name: i for i, name in enumerate(names)}
            for selector, result in results:
                if result is None:
                    continue
                keys = selector.keys
                if keys is not None and len(keys) == depth + 1 and keys[:depth] == tuple(self.answers_path):
                    if keys[depth] in position:
                        used.add(position[keys[depth]])
                    continue
                pending.append((selector, result))
        else:
            pending = list(results)
        if not pending:
            return self._leftovers(names, answers, used)

        leaves: list[tuple[set[tuple[type, Any]], set[int]]] = []
        for answer in answers:
            scalars: set[tuple[type, Any]] = set()
            ids: set[int] = set()
            _scalar_leaves(answer, scalars, ids)
            leaves.append((scalars, ids))

        for selector, result in pending:
            if result is None:
                continue
            r_scalars: set[tuple[type, Any]] = set()
            r_ids: set[int] = set()
            _scalar_leaves(result, r_scalars, r_ids)
            candidates = [
                i for i, (scalars, ids) in enumerate(leaves) if i not in used and (r_ids & ids or r_scalars & scalars)
            ]
            hits = [i for i in candidates if changed(selector, result, i)]
            if not hits:
                hits = [
                    i
                    for i in range(len(answers))
                    if i not in used and i not in candidates and changed(selector, result, i)
                ]
            used.update(hits)

        return self._leftovers(names, answers, used)

    def _leftovers(
        self, names: list[Any], answers: list[Any], used: set[int]
    ) -> tuple[tuple[str, ...], dict[str, Any]]:
        """The names of the answers not in ``used`` (each once) and, with
        ``keep_other_answers``, those answers by name."""
        dropped: list[str] = []
        others: dict[str, Any] = {}
        for i, name in enumerate(names):
            if i in used:
                continue
            if name not in dropped:
                dropped.append(name)
            if self.keep_other_answers:
                others[name] = answers[i]
        return tuple(dropped), others

    def _answer_name(self, index: int, answer: Any) -> str:
        """The name of a list answer: ``answer_key`` on it, else ``#<index>``."""
        if self.answer_key is not None:
            try:
                name = self.answer_key.search(answer)
            except jmespath.exceptions.JMESPathError:
                name = None
            if isinstance(name, str) and name:
                return name
            if isinstance(name, int) and not isinstance(name, bool):
                return str(name)
        return f"#{index}"


# --------------------------------------------------------------------------- helpers


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    """Split a Content-Type into the lowercase media type and its parameters."""
    media, _, rest = value.partition(";")
    params: dict[str, str] = {}
    for item in rest.split(";"):
        key, sep, val = item.partition("=")
        if sep:
            params[key.strip().lower()] = val.strip().strip('"')
    return media.strip().lower(), params


def _collect(pairs: Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Form fields as a dict: a single value as is, a repeated key as a list."""
    out: dict[str, Any] = {}
    repeated: set[str] = set()
    for key, value in pairs:
        if key in repeated:
            out[key].append(value)
        elif key in out:
            out[key] = [out[key], value]
            repeated.add(key)
        else:
            out[key] = value
    return out


def _identifier(value: Any) -> str | None:
    """A vendor id as text: strings as sent, integers as their exact digits.

    An id is never cleaned (it makes the idempotency key: an altered id would make a
    re-delivery look new): one holding a lone surrogate, a NUL or another control
    character is refused.
    """
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if _blank(value):
        return None
    if isinstance(value, str):
        problem = text_problem(value)
        if problem is not None:
            raise _Bad(f"an id that {problem}")
        return value.strip()
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    raise _Bad("an id must be a string or an integer")


def _date(value: Any) -> date | None:
    """A calendar date (``YYYY-MM-DD``) such as a date of birth; never a timestamp."""
    text = _text(value)
    if text is None:
        return None
    try:
        return date.fromisoformat(text.strip())
    except ValueError:
        raise _Bad("not a YYYY-MM-DD date") from None


def _truthy(value: Any) -> bool:
    """JMESPath truthiness: false, null, empty string, list and object are false."""
    return not (value is None or value is False or value in ("", [], {}))


def _canonical(record: Any) -> bytes:
    """The record's canonical JSON (sorted keys, compact separators), UTF-8."""
    text = json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str)
    return text.encode("utf-8", "surrogatepass")  # a lone surrogate still gives one stable digest


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`MappedConnector` as the ``mapped`` source connector.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(MappedConnector)
