"""Settings: ``carecrm.toml`` plus environment overrides for secrets.

Where the file is found: ``--config PATH``, else ``CARECRM_CONFIG``, else
``./carecrm.toml``.  Relative paths inside it (the SQLite file, the key file) are read
relative to the file's folder.  Environment overrides: ``CARECRM_STORAGE_URL``,
``CARECRM_KEYS`` (the key JSON itself) and ``CARECRM_KEY_FILE``.  A value written
``"$env:NAME"`` or ``"$file:PATH"`` is read from that variable or file (secrets stay out
of the file).

The full reference is ``docs/configuration.md``.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
import phonenumbers

from carecrm.core.errors import ConfigError
from carecrm.core.model.domain import Location, Practice, Provider, Touchpoint
from carecrm.core.pipeline.stages import PipelineConfig

CONFIG_NAME = "carecrm.toml"

#: Fields a practice collects unless it turns them off, and those off unless turned on
#: (``docs/vocabulary.md``, "Data collected by default"; HIPAA minimum necessary, 45 CFR 164.502(b)).
COLLECT_DEFAULTS: dict[str, bool] = {
    "name": True,
    "email": True,
    "phone": True,
    "postal_code": True,
    "city": True,
    "service_interest": True,
    "inquiry_text": True,
    "consent": True,
    "touchpoint": True,
    "date_of_birth": False,
    "sex": False,
    "insurance": False,
    "street_address": False,
    "other_answers": False,
}


def resolve_secret(value: Any, *, what: str) -> str | None:
    """Resolve ``"$env:NAME"`` / ``"$file:PATH"`` references; other strings pass through.

    :raises ConfigError: naming ``what`` when the variable is unset or the file unreadable.
    """
    if value is None:
        return None
    text = str(value)
    if text.startswith("$env:"):
        name = text[5:]
        if name not in os.environ:
            raise ConfigError(f"{what}: environment variable {name} is not set")
        return os.environ[name]
    if text.startswith("$file:"):
        path = Path(text[6:]).expanduser()
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(f"{what}: cannot read {path}: {exc.strerror}") from None
    return text


@attrs.frozen(kw_only=True)
class SourceSettings:
    """One ``[sources.<name>]`` table: the connector it uses, its secret, its options."""

    name: str
    connector: str
    secret: str | None = attrs.field(default=None, repr=False)
    options: dict[str, Any] = attrs.Factory(dict)


#: The top-level sections of ``carecrm.toml``; any other is a ConfigError.
SECTIONS: tuple[str, ...] = (
    "practice",
    "storage",
    "keys",
    "ingest",
    "collect",
    "pipeline",
    "channel_groups",
    "scoring",
    "attribution",
    "segments",
    "plugins",
    "sources",
)
_PRACTICE_KEYS = ("name", "regime", "locations", "providers", "service_lines")
_LOCATION_KEYS = (
    "name",
    "timezone",
    "region",
    "business_hours",
    "holidays",
    "phones",
    "tracking_numbers",
    "address",
)
_PROVIDER_KEYS = ("name", "locations", "service_lines")
_KEYS_KEYS = ("file",)
#: ``[ingest] max_payload_bytes`` by default: 1 MiB.
MAX_PAYLOAD_BYTES = 1_048_576
_INGEST_KEYS = ("batch_size", "inbox_retention_days", "allow_test_domains", "max_payload_bytes")
_PIPELINE_KEYS = ("name", "stages", "side_stages", "transitions")
_CHANNEL_GROUP_KEYS = ("rules",)
_ATTRIBUTION_KEYS = ("models",)
#: What a ``[[channel_groups.rules]]`` table may hold: ``group``, ``has`` and a
#: condition on any touchpoint field.
_RULE_KEYS: tuple[str, ...] = ("group", "has", *(f.name for f in attrs.fields(Touchpoint)))


@attrs.frozen(kw_only=True)
class ScoringSettings:
    """The ``[scoring]`` table.

    :ivar model: the scoring model's name (default ``points``).
    :ivar live: rescore contacts as committed events arrive (default true).
    :ivar options: the rest of the table: the model's own options, structured into the
        model's ``options_type`` when the model is built (unknown keys are an error then).
    """

    model: str = "points"
    live: bool = True
    options: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class AttributionSettings:
    """The ``[attribution]`` table.

    :ivar models: ``[attribution.models.<model_id>]`` tables by model id, each structured
        into that model's ``options_type`` when it is built.
    """

    models: dict[str, dict[str, Any]] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class SegmentsSettings:
    """The ``[segments]`` table.

    :ivar builder: the segment builder of specs (default ``basic``).
    :ivar options: the rest of the table, structured into the builder's ``options_type``.
    """

    builder: str = "basic"
    options: dict[str, Any] = attrs.Factory(dict)


@attrs.frozen(kw_only=True)
class ChannelGroupSettings:
    """The ``[channel_groups]`` table.

    :ivar rules: the practice's ordered ``[[channel_groups.rules]]`` (each a table of
        conditions and the ``group`` it yields), or None for the built-in rules
        (:data:`carecrm.core.model.channels.DEFAULT_RULES`).
    """

    rules: tuple[dict[str, Any], ...] | None = None

    def as_config(self) -> dict[str, Any] | None:
        """The table :func:`carecrm.core.model.channels.classify` takes (None: the defaults)."""
        return None if self.rules is None else {"rules": [dict(r) for r in self.rules]}


@attrs.frozen(kw_only=True)
class Settings:
    """Everything read from ``carecrm.toml`` (immutable).

    :ivar path: the config file, or None for settings built in code.
    :ivar base_dir: the folder relative paths are read from.
    :ivar storage_url: the database URL (``sqlite:///carecrm.db`` is the embedded default).
    :ivar batch_size: lead events written per unit of work during ingest.
    :ivar inbox_retention_days: days processed payloads stay in the inbox.
    :ivar allow_test_domains: accept email addresses at the ``test`` TLD (a test installation).
    :ivar max_payload_bytes: the largest payload body ingested, in bytes (a larger one is
        quarantined unread and its body not stored).
    :ivar scoring: ``[scoring]``; :ivar attribution: ``[attribution]``;
        :ivar segments: ``[segments]``; :ivar channel_groups: ``[channel_groups]``.
    """

    path: Path | None = None
    base_dir: Path = attrs.Factory(Path.cwd)
    practice: Practice = attrs.Factory(Practice)
    storage_url: str = "sqlite:///carecrm.db"
    storage_options: dict[str, Any] = attrs.Factory(dict)
    key_file: Path | None = None
    keys_json: str | None = attrs.field(default=None, repr=False)
    pipeline: PipelineConfig = attrs.Factory(PipelineConfig.default)
    sources: dict[str, SourceSettings] = attrs.Factory(dict)
    collect: dict[str, bool] = attrs.Factory(lambda: dict(COLLECT_DEFAULTS))
    batch_size: int = 500
    inbox_retention_days: int = 30
    #: ``[ingest] allow_test_domains``: accept email addresses at the ``test`` TLD (RFC
    #: 6761), for a test installation; off for a practice's real data.
    allow_test_domains: bool = False
    #: ``[ingest] max_payload_bytes``: the largest payload body ingested, in bytes (default
    #: 1 MiB); a larger one is quarantined unread, its body not stored.
    max_payload_bytes: int = MAX_PAYLOAD_BYTES
    enabled_plugins: tuple[str, ...] | None = None
    plugin_options: dict[str, dict[str, Any]] = attrs.Factory(dict)
    scoring: ScoringSettings = attrs.Factory(ScoringSettings)
    attribution: AttributionSettings = attrs.Factory(AttributionSettings)
    segments: SegmentsSettings = attrs.Factory(SegmentsSettings)
    channel_groups: ChannelGroupSettings = attrs.Factory(ChannelGroupSettings)
    #: The parsed document as read, for tools that rebuild settings from it; the core
    #: reads the typed fields above, never this.
    raw: dict[str, Any] = attrs.field(factory=dict, repr=False)


def find_config(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The config file to use: ``explicit``, ``CARECRM_CONFIG``, else ``./carecrm.toml``."""
    if explicit:
        return Path(explicit)
    env = os.environ.get("CARECRM_CONFIG")
    if env:
        return Path(env)
    return Path.cwd() / CONFIG_NAME


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: [{key}] must be a table")
    return value


def check_keys(table: dict[str, Any], known: tuple[str, ...], *, where: str, section: str) -> None:
    """Refuse a key ``table`` does not know.

    :param section: the table's dotted name (``practice.locations[0]``).
    :raises ConfigError: ``<where>: [<section>] has no key '<key>'; known: ...`` for the
        first unknown key (sorted).
    """
    unknown = sorted(set(table) - set(known))
    if unknown:
        raise ConfigError(f"{where}: [{section}] has no key {unknown[0]!r}; known: {', '.join(known)}")


def _location(raw: Any, i: int) -> Location:
    if not isinstance(raw, dict) or "name" not in raw:
        raise ConfigError(f"practice.locations[{i}] needs a name")
    check_keys(raw, _LOCATION_KEYS, where="config", section=f"practice.locations[{i}]")
    tz = str(raw.get("timezone", "UTC"))
    try:
        ZoneInfo(tz)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"practice.locations[{i}].timezone: unknown IANA time zone {tz!r}") from None
    region = str(raw.get("region", "US")).upper()
    if region not in phonenumbers.SUPPORTED_REGIONS:
        raise ConfigError(
            f"practice.locations[{i}].region: {region!r} is not an ISO 3166 region phonenumbers knows (e.g. US, GB, CA)"
        )
    hours = {str(k).lower()[:3]: (str(v[0]), str(v[1])) for k, v in dict(raw.get("business_hours", {})).items()}
    return Location(
        name=str(raw["name"]),
        timezone=tz,
        region=region,
        business_hours=hours,
        holidays=tuple(str(h) for h in raw.get("holidays", ())),
        phones=tuple(str(p) for p in raw.get("phones", ())),
        tracking_numbers={str(k): str(v) for k, v in dict(raw.get("tracking_numbers", {})).items()},
        address=raw.get("address"),
    )


def settings_from_dict(doc: dict[str, Any], *, path: Path | None = None, base_dir: Path | None = None) -> Settings:
    """Build :class:`Settings` from a parsed TOML document (plus the environment).

    :raises ConfigError: naming the key at fault.
    """
    where = str(path) if path else "config"
    base = base_dir or (path.parent if path else Path.cwd())
    unknown_sections = sorted(set(doc) - set(SECTIONS))
    if unknown_sections:
        raise ConfigError(f"{where}: unknown section [{unknown_sections[0]}]; known: {', '.join(SECTIONS)}")
    practice_raw = _table(doc, "practice", where)
    check_keys(practice_raw, _PRACTICE_KEYS, where=where, section="practice")
    locations = tuple(_location(x, i) for i, x in enumerate(practice_raw.get("locations", []))) or (
        Location(name="main"),
    )
    for i, p in enumerate(practice_raw.get("providers", [])):
        if not isinstance(p, dict) or "name" not in p:
            raise ConfigError(f"{where}: practice.providers[{i}] needs a name")
        check_keys(p, _PROVIDER_KEYS, where=where, section=f"practice.providers[{i}]")
    providers = tuple(
        Provider(
            name=str(p["name"]),
            locations=tuple(p.get("locations", ())),
            service_lines=tuple(p.get("service_lines", ())),
        )
        for p in practice_raw.get("providers", [])
    )
    regime = str(practice_raw.get("regime", "US")).upper()
    if regime not in ("US", "UK", "EU"):
        raise ConfigError(f"{where}: practice.regime must be US, UK or EU")
    practice = Practice(
        name=str(practice_raw.get("name", "Practice")),
        regime=regime,
        locations=locations,
        providers=providers,
        service_lines=tuple(str(s) for s in practice_raw.get("service_lines", ())),
    )

    storage = _table(doc, "storage", where)
    url = os.environ.get("CARECRM_STORAGE_URL") or resolve_secret(storage.get("url"), what="storage.url")
    if not url:
        raise ConfigError(f"{where}: [storage] url is required (e.g. sqlite:///carecrm.db)")
    url = _anchor_sqlite(url, base)

    keys = _table(doc, "keys", where)
    check_keys(keys, _KEYS_KEYS, where=where, section="keys")
    key_file_text = os.environ.get("CARECRM_KEY_FILE") or keys.get("file")
    key_file = (
        (base / key_file_text)
        if key_file_text and not Path(key_file_text).is_absolute()
        else (Path(key_file_text) if key_file_text else None)
    )

    sources: dict[str, SourceSettings] = {}
    for name, table in _table(doc, "sources", where).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: [sources.{name}] must be a table")
        opts = dict(table)
        connector = str(opts.pop("connector", name))
        secret = opts.pop("secret", None)
        sources[name] = SourceSettings(name=name, connector=connector, secret=secret, options=opts)

    collect = dict(COLLECT_DEFAULTS)
    for key, value in _table(doc, "collect", where).items():
        if key not in COLLECT_DEFAULTS:
            raise ConfigError(f"{where}: [collect] {key!r} is not a field; known: {', '.join(COLLECT_DEFAULTS)}")
        collect[key] = bool(value)

    ingest = _table(doc, "ingest", where)
    check_keys(ingest, _INGEST_KEYS, where=where, section="ingest")
    plugins = _table(doc, "plugins", where)
    enabled = plugins.get("enabled")
    if enabled is not None and (not isinstance(enabled, list) or not all(isinstance(n, str) for n in enabled)):
        raise ConfigError(f"{where}: plugins.enabled must be an array of plugin names")
    for key, value in plugins.items():
        if key != "enabled" and not isinstance(value, dict):
            raise ConfigError(
                f"{where}: [plugins] has no key {key!r}; known: enabled, and one [plugins.<name>] table per plugin"
            )
    pipeline_table = _table(doc, "pipeline", where)
    check_keys(pipeline_table, _PIPELINE_KEYS, where=where, section="pipeline")
    pipeline = PipelineConfig.from_dict(pipeline_table, where=where)
    return Settings(
        path=path,
        base_dir=base,
        practice=practice,
        storage_url=url,
        storage_options={k: v for k, v in storage.items() if k != "url"},
        key_file=key_file,
        keys_json=os.environ.get("CARECRM_KEYS"),
        pipeline=pipeline,
        sources=sources,
        collect=collect,
        batch_size=int(ingest.get("batch_size", 500)),
        inbox_retention_days=int(ingest.get("inbox_retention_days", 30)),
        allow_test_domains=_flag(ingest, "allow_test_domains", where=where),
        max_payload_bytes=_positive(ingest, "max_payload_bytes", MAX_PAYLOAD_BYTES, where=where),
        enabled_plugins=tuple(enabled) if enabled is not None else None,
        plugin_options={k: v for k, v in plugins.items() if isinstance(v, dict)},
        scoring=_scoring(doc),
        attribution=_attribution(doc, where),
        segments=_segments(doc, where),
        channel_groups=_channel_groups(doc, where),
        raw=doc,
    )


def _flag(table: dict[str, Any], key: str, *, where: str) -> bool:
    """A true/false key of ``table`` (default false).  :raises ConfigError: for another type."""
    value = table.get(key, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}: [ingest] {key} must be true or false")
    return value


def _positive(table: dict[str, Any], key: str, default: int, *, where: str) -> int:
    """A positive whole number of ``table`` (``default`` when absent).

    :raises ConfigError: for another type or a number below 1."""
    value = table.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{where}: [ingest] {key} must be a whole number of at least 1")
    return value


def _scoring(doc: dict[str, Any]) -> ScoringSettings:
    from carecrm.core.analytics.scoring import scoring_config

    model, live, options = scoring_config(doc)
    return ScoringSettings(model=model, live=live, options=options)


def _attribution(doc: dict[str, Any], where: str) -> AttributionSettings:
    table = _table(doc, "attribution", where)
    check_keys(table, _ATTRIBUTION_KEYS, where=where, section="attribution")
    models = table.get("models", {})
    if not isinstance(models, dict):
        raise ConfigError(f"{where}: [attribution.models] must be a table of [attribution.models.<model_id>] tables")
    for name, options in models.items():
        if not isinstance(options, dict):
            raise ConfigError(f"[attribution.models.{name}] must be a table")
    return AttributionSettings(models={str(k): dict(v) for k, v in models.items()})


def _segments(doc: dict[str, Any], where: str) -> SegmentsSettings:
    if "segments" in doc and not isinstance(doc["segments"], dict):
        raise ConfigError("[segments] must be a table")
    table = dict(doc.get("segments", {}))
    builder = table.pop("builder", "basic")
    if not isinstance(builder, str) or not builder.strip():
        raise ConfigError(f'{where}: segments.builder must be the name of a segment builder, e.g. "basic"')
    return SegmentsSettings(builder=builder.strip(), options=table)


def _channel_groups(doc: dict[str, Any], where: str) -> ChannelGroupSettings:
    table = _table(doc, "channel_groups", where)
    check_keys(table, _CHANNEL_GROUP_KEYS, where=where, section="channel_groups")
    rules = table.get("rules")
    if rules is None or rules == []:
        return ChannelGroupSettings()
    if not isinstance(rules, list):
        raise ConfigError(f"{where}: channel_groups.rules must be an array of tables ([[channel_groups.rules]])")
    for i, rule in enumerate(rules):
        if not isinstance(rule, dict):
            raise ConfigError(f"{where}: channel_groups.rules[{i}] must be a table")
        check_keys(rule, _RULE_KEYS, where=where, section=f"channel_groups.rules[{i}]")
        if not isinstance(rule.get("group"), str) or not rule["group"]:
            raise ConfigError(f"{where}: channel_groups.rules[{i}].group is required (the channel group it yields)")
    return ChannelGroupSettings(rules=tuple(dict(r) for r in rules))


def _anchor_sqlite(url: str, base: Path) -> str:
    """Make a relative SQLite path (``sqlite:///carecrm.db``) relative to ``base``."""
    for prefix in ("sqlite:///", "sqlite+pysqlite:///"):
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            if rest and rest != ":memory:" and not rest.startswith("/"):
                return prefix + str((base / rest).resolve())
    return url


def load_settings(path: str | os.PathLike[str] | None = None) -> Settings:
    """Read and validate the config file.

    :raises ConfigError: if the file is missing (saying how to create one), is not valid
        TOML (with the line), or holds a wrong value.
    """
    p = find_config(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"no config file at {p}: run `carecrm init` or pass --config") from None
    except OSError as exc:
        raise ConfigError(f"cannot read {p}: {exc.strerror}") from None
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p} is not valid TOML: {exc}") from None
    return settings_from_dict(doc, path=p.resolve(), base_dir=p.resolve().parent)
