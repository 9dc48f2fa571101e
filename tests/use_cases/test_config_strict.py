"""Strict configuration: unknown sections and keys are errors naming the known ones; the
sections the core reads have typed places in Settings; shipped configs still load."""

from __future__ import annotations

import tomllib
import warnings
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import pytest

from carecrm.core import CareCRM, ConfigError, LeadEvent, RawPayload, SourceConnector, ValidationFailed, hookimpl
from carecrm.core.config import SECTIONS, settings_from_dict
from carecrm.core.model.domain import Practice, Touchpoint

REPO = Path(__file__).resolve().parents[2]
BASE: dict[str, Any] = {"storage": {"url": "sqlite:///x.db"}}


def _load(**sections: Any) -> Any:
    return settings_from_dict({**BASE, **sections}, base_dir=Path("/tmp"))


def test_a_misspelt_section_is_an_error_listing_the_known_ones() -> None:
    with pytest.raises(ConfigError, match=r"unknown section \[scorng\]; known: practice, storage, .*scoring"):
        _load(scorng={"model": "points"})


@pytest.mark.parametrize(
    ("sections", "message"),
    [
        ({"practice": {"nam": "X"}}, r"\[practice\] has no key 'nam'; known: name, regime"),
        ({"practice": {"locations": [{"name": "a", "timezon": "UTC"}]}}, r"practice\.locations\[0\].*'timezon'"),
        ({"practice": {"providers": [{"name": "Dr", "location": ["a"]}]}}, r"practice\.providers\[0\].*'location'"),
        ({"keys": {"files": "k"}}, r"\[keys\] has no key 'files'; known: file"),
        ({"ingest": {"batchsize": 3}}, r"\[ingest\] has no key 'batchsize'; known: batch_size"),
        ({"pipeline": {"stage": ["a"]}}, r"\[pipeline\] has no key 'stage'; known: name, stages"),
        ({"channel_groups": {"rule": []}}, r"\[channel_groups\] has no key 'rule'; known: rules"),
        ({"channel_groups": {"rules": [{"mediums": ["x"], "group": "g"}]}}, r"rules\[0\]\] has no key 'mediums'"),
        ({"channel_groups": {"rules": [{"medium": ["x"]}]}}, r"rules\[0\]\.group is required"),
        ({"attribution": {"model": {}}}, r"\[attribution\] has no key 'model'; known: models"),
        ({"plugins": {"enable": "x"}}, r"\[plugins\] has no key 'enable'; known: enabled"),
        ({"segments": {"builder": 3}}, r"segments\.builder"),
        ({"scoring": {"live": "yes"}}, r"scoring\.live: must be true or false"),
    ],
)
def test_an_unknown_key_in_a_known_section_is_an_error(sections: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(**sections)


def test_sections_have_typed_places_in_settings() -> None:
    rules = [{"source": ["dr-lee"], "group": "referral_physician"}]
    settings = _load(
        scoring={"model": "points", "live": False, "rules": []},
        attribution={"models": {"linear": {}}},
        segments={"builder": "basic"},
        channel_groups={"rules": rules},
    )
    assert (settings.scoring.model, settings.scoring.live, settings.scoring.options) == ("points", False, {"rules": []})
    assert settings.attribution.models == {"linear": {}}
    assert settings.segments.builder == "basic" and settings.segments.options == {}
    assert settings.channel_groups.rules == tuple(rules)
    assert _load().channel_groups.as_config() is None


def test_channel_group_rules_come_from_settings(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(channel_groups={"rules": [{"source": ["dr-lee"], "group": "referral_physician"}]})
    assert app.classify_touchpoint(Touchpoint(source="dr-lee")).channel_group == "referral_physician"
    assert make_app().classify_touchpoint(Touchpoint(source="google", medium="cpc")).channel_group == "paid_search"


def test_options_of_components_are_typed_and_strict(make_app: Callable[..., CareCRM]) -> None:
    with pytest.raises(ConfigError, match=r"scoring\.threshold: unknown option 'threshold' of scoring model 'points'"):
        make_app(scoring={"threshold": 50})
    with pytest.raises(ConfigError, match=r"unknown option 'color' of segment builder 'basic'.*known: \(none"):
        make_app(segments={"color": "red"}).segment_builder()
    # a configured source's options are checked when the app starts
    with pytest.raises(ConfigError) as info:
        make_app(sources={"sg": {"connector": "sendgrid", "max_age_seconds": "ten"}})
    message = str(info.value)
    assert "sources.sg.max_age_seconds" in message and "carecrm.plugins.sources.sendgrid" in message
    assert "must be a number" in message
    with pytest.raises(ConfigError, match=r"unknown option 'max_age'.*known: max_age_seconds, ignore_events"):
        make_app(sources={"sg": {"connector": "sendgrid", "max_age": 10}})


def test_shipped_configs_still_load(tmp_path: Path) -> None:
    docs_config = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    block = docs_config.split("```toml", 1)[1].split("```", 1)[0]
    settings_from_dict(tomllib.loads(block), base_dir=tmp_path)
    for example in sorted((REPO / "plugins" / "sources" / "examples").glob("*.toml")):
        settings_from_dict({**BASE, **tomllib.loads(example.read_text(encoding="utf-8"))}, base_dir=tmp_path)


def test_every_section_is_documented() -> None:
    text = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    for section in SECTIONS:
        assert f"`{section}." in text or f"[{section}" in text, section


class _OldStyle(SourceConnector):
    """A third-party connector written for the old positional convention."""

    connector_id = "oldstyle"

    def __init__(self, name: str, options: Mapping[str, Any], practice: Practice) -> None:
        super().__init__(name, options, practice)
        self.flag = self.options.get("flag", False)

    def parse(self, payload: RawPayload) -> Iterable[LeadEvent | ValidationFailed]:
        return ()


def test_an_old_style_component_still_works_with_a_deprecation_warning(make_app: Callable[..., CareCRM]) -> None:
    class Plugin:
        @hookimpl
        def carecrm_register_sources(self, register: Any) -> None:
            register(_OldStyle)

    base = make_app()
    # the oldstyle connector is only registered in this app (a configured source's
    # connector must be installed when an app starts)
    doc = {
        **base.settings.raw,
        "sources": {"legacy": {"connector": "oldstyle", "flag": True}},
        "storage": {"url": base.settings.storage_url},
    }
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")  # the start-up check builds the connector
        app = CareCRM(settings_from_dict(doc), keys=base.keys, load_entrypoints=False, extra_plugins=[Plugin()])
    connector = app.connector("legacy")
    assert isinstance(connector, _OldStyle) and connector.flag is True
    assert any(issubclass(w.category, DeprecationWarning) for w in caught)
    app.close()


def test_a_misspelt_source_option_lists_secret_among_the_known_ones(make_app: Callable[..., CareCRM]) -> None:
    """A source table's ``secret`` and ``connector`` are every source's keys: the message for
    a misspelt option names them beside the connector's own options (a new user wrote
    ``secrat``, and the message listed only ``webhook_url``)."""
    with pytest.raises(ConfigError, match=r"unknown option 'secrat'.*known: .*for every source: connector, secret"):
        make_app(sources={"twilio": {"secrat": "abc"}})
