"""The mapped source connector class (``connector = "mapped"``): compiles the options once,
then verifies and parses payloads with the parts of this package (decoding, the record
builder, signatures).  The package's docstring (:mod:`carecrm.plugins.sources.mapped`)
says what the connector does and the rules it applies.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any, ClassVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jmespath.exceptions

from carecrm.core.errors import ConfigError, ValidationFailed
from carecrm.core.ingest.connectors import Rejected, SourceConnector
from carecrm.core.model.domain import LeadEvent, RawPayload
from carecrm.core.model.vocab import CHANNELS, is_known_kind, is_valid_kind_name, known_kinds
from carecrm.core.plugins.hookspecs import hookimpl
from carecrm.plugins.sources.mapped.decoding import decode
from carecrm.plugins.sources.mapped.keys import contact_selector_problems
from carecrm.plugins.sources.mapped.minimization import Answers
from carecrm.plugins.sources.mapped.options import (
    PERSON_FIELDS,
    TIME_FORMATS,
    TOUCHPOINT_FIELDS,
    MappedOptions,
    OptionReader,
    resolve_options,
)
from carecrm.plugins.sources.mapped.presets import PRESETS, Preset, preset_options
from carecrm.plugins.sources.mapped.record import RecordBuilder
from carecrm.plugins.sources.mapped.selectors import Selector, compile_selector
from carecrm.plugins.sources.mapped.signatures import signature_rule, verify_signature

__all__ = ["PRESET_CONNECTORS", "MappedConnector", "MappingProblems", "carecrm_register_sources", "preset_connector"]

#: Stands for a selector that did not compile while the other options are still checked.
_PLACEHOLDER = compile_selector("(placeholder)", "@")


class MappingProblems(ConfigError):
    """Every problem of one mapped source's options, found in one pass.

    :param problems: one :class:`ConfigError` per problem, each naming the source, the
        option and the known values (``source 'gravity': option 'kind': unknown interaction
        kind 'form.submited'; known: ...``).
    :ivar problems: the messages, one per problem, for ``carecrm sources check``.
    """

    def __init__(self, problems: list[ConfigError]) -> None:
        self.problems: tuple[str, ...] = tuple(str(p) for p in problems)
        super().__init__("\n".join(self.problems))


class MappedConnector(SourceConnector):
    """Maps any form tool's JSON or form-encoded webhook to lead events by configuration.

    :param name: the source's name (``typeform``): the ``source`` of the interactions and
        the system of person external ids.
    :param options: the ``[sources.<name>]`` table minus ``connector`` and ``secret``;
        reference in ``docs/sources/mapped.md``.
    :param settings: the practice's settings; the practice gives the default time zone (its
        location's).
    :raises MappingProblems: (a :class:`ConfigError`) listing every problem found, each
        naming the source, the option and the known values: an unknown option, a wrong
        type or value, an invalid JMESPath expression, an unknown function, an interaction
        ``kind`` outside the vocabulary (built-in or registered by a plugin with
        :func:`carecrm.core.model.vocab.register_kind`), an unknown location or time zone,
        a ``record_id``, ``person_id`` or attribute that selects the email or phone
        (:func:`~carecrm.plugins.sources.mapped.keys.contact_selector_problems`).  Every
        selector is compiled here, once; the core builds every configured source when the
        app starts (:meth:`carecrm.core.plugins.components.Components.check_options`).
    """

    connector_id = "mapped"
    description = "Any form tool's JSON or form-encoded webhook, mapped with JMESPath in config"
    formats: ClassVar[tuple[str, ...]] = ("JSON", "form-encoded", "multipart/form-data (by configuration)")
    signed = False
    #: The preset a subclass stands for (:func:`preset_connectors`); None for ``mapped``.
    preset_name: ClassVar[str | None] = None

    options_type = MappedOptions

    def __init__(self, *legacy: Any, name: str | None = None, options: Any = None, settings: Any = None) -> None:
        super().__init__(*legacy, name=name, options=options, settings=settings)
        own: MappedOptions = self.options
        reader = OptionReader(self.name, {})
        preset = own.preset
        if self.preset_name is not None:
            if preset is not None and preset != self.preset_name:
                raise reader.error(
                    "preset",
                    f'connector {self.connector_id!r} is the {self.preset_name!r} preset; use connector = "mapped" '
                    "to name another preset",
                )
            preset = self.preset_name
        #: The preset the options start from, or None.
        self.preset: str | None = preset
        opts = resolve_options(own, None if preset is None else preset_options(self.name, preset))
        #: The options the source runs with (its table over its preset, then the defaults).
        self.options = opts
        practice = self.practice

        #: Every problem found while checking the options (option, reason), raised together
        #: at the end so ``carecrm sources check`` lists them all.
        problems: list[ConfigError] = []
        try:
            self.format = reader.check_text("format", opts.format, choices=("json", "form"))
            self.json_strings: tuple[str, ...] = tuple(opts.json_strings or ())

            self.answers_path = reader.answers_path(opts.answers or "@")
            answers_key = self.answers_path[-1] if self.answers_path else None

            def sel(option: str, text: Any) -> Selector:
                try:
                    return reader.selector(option, text, answers_key)
                except ConfigError as exc:
                    problems.append(exc)
                    return _PLACEHOLDER

            def optional(key: str) -> Selector | None:
                text = getattr(opts, key)
                return None if text is None else sel(key, text)

            self.records = optional("records")
            self.only_if = optional("only_if")
            self.record_id = optional("record_id")
            self.person_id = optional("person_id")
            self.answer_key = optional("answer_key")

            kind = opts.kind or "form.submitted"
            json_strings = opts.json_strings or ()
            if not all(isinstance(key, str) for key in json_strings):
                raise reader.error("json_strings", "must be a list of field names")
            if not isinstance(kind, str) or not is_valid_kind_name(kind):
                problems.append(reader.error("kind", "must be a dotted noun.event name such as form.submitted"))
            elif not is_known_kind(kind):
                problems.append(
                    reader.error(
                        "kind",
                        f"unknown interaction kind {kind!r} (a plugin may register others); known: "
                        + ", ".join(known_kinds()),
                    )
                )
            self.kind = kind
            self.channel = reader.check_text("channel", opts.channel, choices=CHANNELS)
            self.direction = reader.check_text("direction", opts.direction, choices=("inbound", "outbound"))
            self.name_confidence = reader.check_text("name_confidence", opts.name_confidence, ("high", "low")) or "high"

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
                problems.append(reader.error("time_zone", "unknown IANA time zone"))
                self.time_zone = ZoneInfo("UTC")

            self.time_format = opts.time_format or "iso8601"
            if self.time_format not in TIME_FORMATS and "%" not in self.time_format:
                problems.append(
                    reader.error("time_format", "must be iso8601, epoch_s, epoch_ms or a strptime pattern containing %")
                )
            self.occurred_at = optional("occurred_at")
            self.occurred_at_fallback = reader.check_text(
                "occurred_at_fallback", opts.occurred_at_fallback, choices=("received",)
            )
            if self.occurred_at is None and self.occurred_at_fallback is None:
                problems.append(
                    reader.error(
                        "occurred_at",
                        'is required (or set occurred_at_fallback = "received" for vendors that send no time)',
                    )
                )

            self.keep_other_answers = bool(opts.keep_other_answers)
            fields = opts.fields or {}
            touchpoint = opts.touchpoint or {}
            literals = opts.literals or {}
            attributes = opts.attributes or {}

            self.fields: dict[str, Selector] = {}
            for key, text in fields.items():
                if key not in PERSON_FIELDS:
                    problems.append(reader.error(f"fields.{key}", f"unknown field; known: {', '.join(PERSON_FIELDS)}"))
                    continue
                self.fields[key] = sel(f"fields.{key}", text)
            self.touchpoint: dict[str, Selector] = {}
            for key, text in touchpoint.items():
                if key not in TOUCHPOINT_FIELDS:
                    problems.append(
                        reader.error(
                            f"touchpoint.{key}", f"unknown touchpoint field; known: {', '.join(TOUCHPOINT_FIELDS)}"
                        )
                    )
                    continue
                self.touchpoint[key] = sel(f"touchpoint.{key}", text)
            self.literals: dict[str, str] = {}
            for key, value in literals.items():
                option = f"literals.{key}"
                if key not in PERSON_FIELDS and key not in TOUCHPOINT_FIELDS:
                    raise reader.error(option, "not a person or touchpoint field")
                if key in self.fields or key in self.touchpoint:
                    raise reader.error(option, "is also mapped by a selector; keep one")
                if key in ("email", "phone", "date_of_birth"):
                    raise reader.error(option, "a constant email, phone or date of birth makes no sense")
                literal = reader.check_text(option, value)
                if literal is not None and literal.strip():
                    self.literals[key] = literal
            self.attributes: dict[str, Selector] = {
                key: sel(f"attributes.{key}", text) for key, text in attributes.items()
            }
            if "external_record_id" in self.attributes or "occurred_at_source" in self.attributes:
                raise reader.error("attributes", "external_record_id and occurred_at_source are set by the connector")

            self.consent = tuple(reader.consent_rules(opts.consent, sel))
            self.signature = signature_rule(self.name, opts.signature)
            #: Where the answers are, for the count of unmapped answers.
            self.answers = Answers(self.answers_path, self.answer_key, self.keep_other_answers)
            #: True when the source's own table configures a ``signature``: a secret is then
            #: required.  A preset's signature table is checked whenever a secret is set, and
            #: its vendor may send unsigned webhooks (``presets`` module docstring).
            self.signed = own.signature is not None

        except MappingProblems as exc:  # a preset or nested check with problems of its own
            problems.extend(ConfigError(p) for p in exc.problems)
            raise MappingProblems(problems) from None
        except ConfigError as exc:  # a problem the rest of the checks depend on
            problems.append(exc)
            raise MappingProblems(problems) from None

        # item 7 of issue 8: no email or phone in a key or a clear column (keys module)
        keyed: dict[str, Selector | None] = {"record_id": self.record_id, "person_id": self.person_id}
        keyed.update({f"attributes.{key}": selector for key, selector in self.attributes.items()})
        keyed.update({f"touchpoint.{key}": selector for key, selector in self.touchpoint.items()})
        keyed = {option: selector for option, selector in keyed.items() if selector is not _PLACEHOLDER}
        compiled = {key: selector for key, selector in self.fields.items() if selector is not _PLACEHOLDER}
        for option, reason in contact_selector_problems(keyed, compiled):
            problems.append(reader.error(option, reason))
        if problems:
            raise MappingProblems(problems)

    def check_source_settings(self, *, has_secret: bool) -> None:
        """The start-up check of what the options alone cannot tell
        (:meth:`carecrm.core.plugins.components.Components.source_problems`).

        :param has_secret: whether ``[sources.<name>]`` gives a ``secret``.
        :raises ConfigError: when a secret is configured but neither the table nor its
            preset has a ``signature`` table: the secret would never be checked, and every
            payload would be quarantined when it arrives.
        """
        if has_secret and self.signature is None:
            raise OptionReader(self.name, {}).error(
                "secret", f"is configured but there is no [sources.{self.name}.signature] table to check it with"
            )

    # ------------------------------------------------------------------ verify

    def verify(self, payload: RawPayload, secret: str) -> None:
        """Check the vendor's HMAC signature by the ``signature`` table
        (:func:`~carecrm.plugins.sources.mapped.signatures.verify_signature`: HMAC-SHA256 or
        -SHA1 of the configured ``signed_payload``, compared in constant time).

        :param payload: the payload as received (headers looked up case-insensitively).
        :param secret: the ``secret`` of ``[sources.<name>]``.
        :raises ValidationFailed: ``(source, "payload", <header name>, reason)`` when the
            signature or timestamp header is missing, malformed, wrong or too old.
        :raises ConfigError: when a secret is configured but no ``signature`` table:
            a signature would otherwise never be checked.
        """
        if self.signature is None:
            raise ConfigError(
                f"source {self.name!r}: a secret is configured but no [sources.{self.name}.signature] table"
            )
        verify_signature(self.name, self.signature, payload, secret)

    # ------------------------------------------------------------------ parse

    def parse(self, payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """Parse one payload into one :class:`LeadEvent` per record.

        :param payload: JSON, form-encoded or multipart bytes (the ``format`` option or
            else the content type decides).
        :returns: an iterator of lead events, and of :class:`Rejected` values for records
            that cannot be accepted (bad time, bad phone, a selector that does not apply);
            the other records still go in.
        :raises ValidationFailed: ``(source, "payload", "body", reason)`` when the payload
            as a whole cannot be read (not JSON, not form encoding, ``records`` not a
            list) or a ``json_strings`` value is not JSON (field = that key).
        """
        data = decode(self.name, payload, self.format, self.json_strings)
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

    def _events(self, records: Iterable[Any], payload: RawPayload) -> Iterator[LeadEvent | Rejected]:
        """One lead event (or :class:`Rejected`) per record: a record that fails in any other
        way is refused too (its field ``record``, the exception's type as the reason, never
        its text), so a poison record never costs the payload's other records."""
        for index, record in enumerate(records):
            try:
                item = RecordBuilder(self, index, record, payload).build()
            except Exception as exc:  # noqa: BLE001 - one record's failure never stops the payload
                yield Rejected(f"#{index}", "record", f"cannot be read ({type(exc).__name__})")
                continue
            if item is not None:
                yield item


def preset_connector(preset: Preset) -> type[MappedConnector]:
    """The connector class of a preset: a :class:`MappedConnector` whose ``connector_id``
    is the preset's name, so ``carecrm ingest <preset> FILE`` works with no table and a
    ``[sources.<name>]`` table with ``connector = "<preset>"`` overrides the preset."""
    class_name = preset.name.title().replace("_", "") + "Connector"
    namespace: dict[str, Any] = {
        "__doc__": f"{preset.description}.\n\nThe {preset.name!r} preset of the mapped connector "
        f"(:mod:`carecrm.plugins.sources.mapped.presets`); vendor doc: {preset.doc}",
        "__module__": __name__,
        "__qualname__": class_name,
        "connector_id": preset.name,
        "description": preset.description,
        "formats": preset.formats,
        "preset_name": preset.name,
    }
    return type(class_name, (MappedConnector,), namespace)


#: One connector class per shipped preset, by name.
PRESET_CONNECTORS: dict[str, type[MappedConnector]] = {name: preset_connector(p) for name, p in PRESETS.items()}


@hookimpl
def carecrm_register_sources(register: Callable[..., None]) -> None:
    """Register :class:`MappedConnector` as the ``mapped`` source connector, and each
    shipped preset (:data:`PRESET_CONNECTORS`: ``jotform``, ``typeform``, ``unbounce``,
    ``webflow``) under its own name.

    :param register: the registry callback of the ``carecrm_register_sources`` hook.
    :returns: nothing.
    """
    register(MappedConnector)
    for cls in PRESET_CONNECTORS.values():
        register(cls)
