"""The options of a mapped source: the attrs class cattrs structures, the vocabularies
each option may name, and the reader that checks values and names the option at fault.

The reference of every option is ``docs/sources/mapped.md``; the rules behind them are in
``docs/vocabulary.md`` ("Data collected by default", "Consent").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import attrs
import jmespath
import jmespath.exceptions

from carecrm.core.errors import ConfigError
from carecrm.core.model.vocab import CHANNELS
from carecrm.plugins.sources.mapped.selectors import (
    Selector,
    SelectorProblem,
    compile_selector,
    jmespath_problem,
    key_path,
)

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
#: on: ``docs/vocabulary.md``, "Data collected by default").
EXTRA_FIELDS: frozenset[str] = frozenset({"street_address", "date_of_birth", "sex"})

#: Touchpoint fields a ``[sources.<name>.touchpoint]`` table may map (the attributes of
#: :class:`carecrm.core.model.domain.Touchpoint` except the derived ``channel_group``).
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

#: Contact-point kinds a consent rule may name (``docs/vocabulary.md``, "Consent").
CONTACT_POINT_KINDS: frozenset[str] = frozenset({"email", "phone"})

TIME_FORMATS: tuple[str, ...] = ("iso8601", "epoch_s", "epoch_ms")

_CONSENT_OPTIONS: frozenset[str] = frozenset(
    {"field", "contact_point", "channel", "purpose", "text", "version", "checked_values", "ip"}
)


@attrs.frozen(kw_only=True)
class MappedOptions:
    """The ``[sources.<name>]`` options of a mapped source (reference:
    ``docs/sources/mapped.md``).  Types are checked when the table is structured; the
    connector then checks values (choices, JMESPath, locations, time zones), naming the
    source and the option.  Selectors are JMESPath expressions (strings).

    Every option defaults to None, meaning "not given": the ``preset`` (a shipped mapping,
    :mod:`carecrm.plugins.sources.mapped.presets`) fills those first, then
    :data:`OPTION_DEFAULTS` the rest (:func:`resolve_options`).

    ``consent`` (an array of ``[[sources.<name>.consent]]`` tables, or one table) and
    ``signature`` (a table) are checked by the connector, key by key.
    """

    preset: str | None = None
    format: str | None = None
    json_strings: tuple[str, ...] | None = None
    records: str | None = None
    only_if: str | None = None
    record_id: str | None = None
    person_id: str | None = None
    kind: str | None = None
    channel: str | None = None
    direction: str | None = None
    occurred_at: str | None = None
    occurred_at_fallback: str | None = None
    time_format: str | None = None
    time_zone: str | None = None
    location: str | None = None
    name_confidence: str | None = None
    answers: str | None = None
    answer_key: str | None = None
    keep_other_answers: bool | None = None
    fields: dict[str, str] | None = None
    literals: dict[str, str] | None = None
    touchpoint: dict[str, str] | None = None
    attributes: dict[str, str] | None = None
    consent: Any = None
    signature: dict[str, Any] | None = None


#: The value of each option that neither the table nor its preset gives.
OPTION_DEFAULTS: Mapping[str, Any] = {
    "json_strings": (),
    "kind": "form.submitted",
    "channel": "web",
    "direction": "inbound",
    "time_format": "iso8601",
    "name_confidence": "high",
    "answers": "@",
    "keep_other_answers": False,
    "fields": {},
    "literals": {},
    "touchpoint": {},
    "attributes": {},
    "consent": [],
}

#: Options that are tables: a preset's table is merged key by key with the source's.
TABLE_OPTIONS: frozenset[str] = frozenset({"fields", "literals", "touchpoint", "attributes", "signature"})


def resolve_options(own: MappedOptions, preset: MappedOptions | None) -> MappedOptions:
    """The options a source runs with: its own table over its preset, then the defaults.

    An option the source gives replaces the preset's; a table option (``fields``,
    ``touchpoint``, ``attributes``, ``literals``, ``signature``) is merged key by key, and a
    key set to ``""`` removes the preset's key (``fields.phone = ""``: map no phone).  The
    ``consent`` array is replaced whole.

    :param own: the source's structured ``[sources.<name>]`` table.
    :param preset: the preset's options, or None.
    :returns: options with no None left but those that are optional.
    """
    merged: dict[str, Any] = {}
    for field in attrs.fields(MappedOptions):
        name = field.name
        mine = getattr(own, name)
        base = None if preset is None else getattr(preset, name)
        if name in TABLE_OPTIONS and mine is not None and base is not None:
            # "" removes the preset's key; "" for a key the preset lacks stays (and is
            # refused as an empty selector, so a misspelt key is not silently ignored)
            value: Any = {k: v for k, v in {**base, **mine}.items() if not (v == "" and k in base)}
        else:
            value = mine if mine is not None else base
        if value is None:
            value = OPTION_DEFAULTS.get(name)
        merged[name] = value
    return MappedOptions(**merged)


#: The top-level options of a mapped source.
_OPTIONS: frozenset[str] = frozenset(field.name for field in attrs.fields(MappedOptions))


@attrs.frozen
class ConsentRule:
    """One ``[[sources.<name>.consent]]`` entry: a checkbox that grants consent.

    :ivar selector: where the checkbox value is.
    :ivar contact_point: ``email`` or ``phone``: the consent belongs to the record's
        first address of that kind (``docs/vocabulary.md``, "Consent": keyed by contact point).
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


class OptionReader:
    """Reads and checks option values; every complaint is a :class:`ConfigError` naming the
    source and the option (``source 'typeform': option 'fields.email': ...``).

    :param source: the source's name.
    :param options: a table to read keys from (:meth:`text`).
    :param prefix: put before option names in messages (``signature.``).
    """

    def __init__(self, source: str, options: Mapping[str, Any], prefix: str = "") -> None:
        self.source = source
        self.options = options
        self.prefix = prefix

    def error(self, option: str, reason: str) -> ConfigError:
        """The error for ``option`` (returned, for the caller to raise)."""
        return ConfigError(f"source {self.source!r}: option {self.prefix + option!r}: {reason}")

    def text(self, key: str, default: str | None = None, choices: Iterable[str] | None = None) -> str | None:
        """The string at ``key`` of the table (``default`` when absent), checked as
        :meth:`check_text` does."""
        value = self.options.get(key, default)
        return self.check_text(key, value, choices)

    def check_text(self, option: str, value: Any, choices: Iterable[str] | None = None) -> str | None:
        """``value`` when it is None or a string (one of ``choices`` when given).

        :raises ConfigError: otherwise, listing the choices.
        """
        if value is None:
            return None
        if not isinstance(value, str):
            raise self.error(option, "must be a string")
        if choices is not None:
            allowed = sorted(choices)
            if value not in allowed:
                raise self.error(option, f"must be one of {', '.join(allowed)}")
        return value

    def selector(self, option: str, text: Any, answers_key: str | None = None) -> Selector:
        """The compiled selector of ``option``.

        :raises ConfigError: when it is not a valid selector (the reason of
            :func:`~carecrm.plugins.sources.mapped.selectors.compile_selector`).
        """
        try:
            return compile_selector(option, text, answers_key)
        except SelectorProblem as problem:
            raise self.error(option, problem.reason) from None

    def answers_path(self, text: str) -> tuple[str, ...]:
        """The key path of the ``answers`` option: ``@`` or a dotted path of plain keys.

        :raises ConfigError: for any other expression.
        """
        try:
            ast = jmespath.compile(text).parsed
        except jmespath.exceptions.JMESPathError as exc:
            raise self.error("answers", f"invalid JMESPath: {jmespath_problem(exc)}") from None
        keys = key_path(ast)
        if keys is None:
            raise self.error("answers", "must be @ or a path of keys such as form_response.answers")
        return keys

    def consent_rules(self, entries: Any, sel: Callable[[str, Any], Selector]) -> Iterator[ConsentRule]:
        """The ``[[sources.<name>.consent]]`` entries (an array of tables, or one table),
        checked key by key; ``sel`` compiles a selector option.

        :raises ConfigError: naming the entry and the key at fault.
        """
        reader = self
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
