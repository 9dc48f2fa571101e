"""Every hook has a docstring, a documented section and a ``test_hook_<name>`` test; and
each hook works as a plugin author would use it."""

from __future__ import annotations

import inspect
import logging
import re
import uuid
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from carecrm.core import (
    CareCRM,
    ConfigError,
    InteractionDraft,
    LeadEvent,
    PluginError,
    RawPayload,
    Rejected,
    SourceConnector,
    UnknownComponentError,
    hookimpl,
)
from carecrm.core.analytics.attribution import AttributionModel
from carecrm.core.analytics.scoring import ScoringModel
from carecrm.core.analytics.segments_service import SegmentBuilder
from carecrm.core.config import settings_from_dict
from carecrm.core.events import types as ev
from carecrm.core.identity.matching import MatchResult
from carecrm.core.model.domain import Actor
from carecrm.core.plugins import hookspecs
from carecrm.core.plugins.hookdocs import render

ACTOR = Actor.parse("tester:admin")

REPO = Path(__file__).resolve().parents[2]


def _lead(ref: str, email: str, name: str = "Maria") -> LeadEvent:
    return LeadEvent(
        source="web",
        record_ref=ref,
        emails=(email,),
        first_name=name,
        interactions=(
            InteractionDraft(
                kind="form.submitted",
                occurred_at=datetime(2026, 4, 2, 15, tzinfo=UTC),
                idempotency_key=f"form.submitted:{ref}",
                channel="web",
            ),
        ),
    )


def test_every_hook_has_docstring_docs_and_test() -> None:
    names = hookspecs.hook_names()
    assert names, "no hooks found"
    tests_text = "\n".join(p.read_text() for p in (REPO / "tests").rglob("test_*.py"))
    docs = (REPO / "docs" / "plugin_hooks.md").read_text()
    for name in names:
        doc = inspect.getdoc(getattr(hookspecs, name))
        assert doc and ":param" in doc and ":returns:" in doc, f"{name} lacks a full docstring"
        assert f"## `{name}`" in docs, f"{name} is not in docs/plugin_hooks.md"
        assert re.search(rf"def test_hook_{name}\b", tests_text), f"{name} has no test_hook_{name} test"


def test_hook_reference_is_generated_from_the_code() -> None:
    assert (REPO / "docs" / "plugin_hooks.md").read_text() == render(), (
        "docs/plugin_hooks.md is stale: run python -m carecrm.core.plugins.hookdocs > docs/plugin_hooks.md"
    )


def test_hook_carecrm_register_storage_backends(make_app: Callable[..., CareCRM], tmp_path: Path) -> None:
    opened: list[str] = []

    class Plugin:
        @hookimpl
        def carecrm_register_storage_backends(self, register: Any) -> None:
            def factory(url: str, options: dict[str, Any]) -> Any:
                opened.append(url)
                entry = app.storage_backends.get("sql")
                return entry.factory("sqlite:///" + url.split("://", 1)[1], options)

            register("wrapped-sqlite", ["wrapsqlite"], factory)

    app = make_app()
    app2 = CareCRM(app.settings, keys=app.keys, load_entrypoints=False, extra_plugins=[Plugin()])
    backend = app2.open_backend(f"wrapsqlite://{tmp_path / 'other.db'}")
    backend.create_schema()
    assert backend.schema_version() is not None and opened
    backend.close()
    assert "wrapped-sqlite" in app2.storage_backends.names()
    with pytest.raises(UnknownComponentError, match="known: .*sqlite"):
        app2.open_backend("oracle://x")

    class Clash:
        @hookimpl
        def carecrm_register_storage_backends(self, register: Any) -> None:
            register("again", ["sqlite"], lambda url, options: None)

    with pytest.raises(PluginError, match="registered twice"):
        CareCRM(app.settings, keys=app.keys, load_entrypoints=False, extra_plugins=[Clash()])


class _LineConnector(SourceConnector):
    """A test connector: one lead per line, ``email,name``."""

    connector_id = "lines"

    def parse(self, payload: RawPayload) -> Iterable[LeadEvent | Rejected]:
        for i, line in enumerate(payload.body.decode().splitlines()):
            if "," not in line:
                yield Rejected(f"line {i + 1}", "line", "expected email,name")
                continue
            email, name = line.split(",", 1)
            yield _lead(f"{self.name}-{i}", email, name)


def test_hook_carecrm_register_sources(make_app: Callable[..., CareCRM]) -> None:
    class Plugin:
        @hookimpl
        def carecrm_register_sources(self, register: Any) -> None:
            register(_LineConnector)

    base = make_app()
    app = CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[Plugin()])
    assert "lines" in app.sources.names()
    report = app.ingest_payloads(
        "lines",
        [RawPayload(body=b"a@example.com,Ann\nbroken\nb@example.com,Bo\n", content_type="text/plain")],
        actor=ACTOR,
    )
    assert report.contacts_created == 2
    assert [q.field for q in report.quarantined] == ["line"]
    assert "broken" not in report.quarantined[0].message()
    app.close()


_BASES: dict[str, type] = {
    "carecrm_register_scoring_models": ScoringModel,
    "carecrm_register_attribution_models": AttributionModel,
    "carecrm_register_segment_builders": SegmentBuilder,
}


@pytest.mark.parametrize(
    ("hook", "attr", "registry"),
    [
        ("carecrm_register_scoring_models", "model_id", "scoring_models"),
        ("carecrm_register_attribution_models", "model_id", "attribution_models"),
        ("carecrm_register_segment_builders", "builder_id", "segment_builders"),
    ],
)
def test_component_registration(make_app: Callable[..., CareCRM], hook: str, attr: str, registry: str) -> None:
    component = type("Component", (_BASES[hook],), {attr: "test-component"})
    plugin = type("Plugin", (), {hook: hookimpl(lambda self, register: register(component))})()
    base = make_app()
    app = CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[plugin])
    assert getattr(app, registry).get("test-component") is component
    with pytest.raises(UnknownComponentError, match="test-component"):
        getattr(app, registry).get("nope")
    twice = type("Plugin2", (), {hook: hookimpl(lambda self, register: register(component))})()
    with pytest.raises(PluginError, match="registered twice"):
        CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[plugin, twice])


@pytest.mark.parametrize("hook", [*_BASES, "carecrm_register_sources"])
def test_a_registered_class_must_subclass_the_contract(make_app: Callable[..., CareCRM], hook: str) -> None:
    attrs_ = {"model_id": "duck", "builder_id": "duck", "connector_id": "duck"}
    duck = type("Duck", (), attrs_)
    plugin = type("Plugin", (), {hook: hookimpl(lambda self, register: register(duck))})()
    base = make_app()
    expected = _BASES.get(hook, SourceConnector)
    with pytest.raises(PluginError) as info:
        CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[plugin])
    message = str(info.value)
    assert "Duck" in message and f"{expected.__module__}.{expected.__qualname__}" in message
    assert message.startswith("plugin ")


def test_a_storage_factory_must_be_callable(make_app: Callable[..., CareCRM]) -> None:
    class Plugin:
        @hookimpl
        def carecrm_register_storage_backends(self, register: Any) -> None:
            register("broken", ["broken"], "not a factory")

    base = make_app()
    with pytest.raises(PluginError, match="not callable"):
        CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[Plugin()])


def test_hook_carecrm_register_scoring_models(make_app: Callable[..., CareCRM]) -> None:
    test_component_registration(make_app, "carecrm_register_scoring_models", "model_id", "scoring_models")


def test_hook_carecrm_register_attribution_models(make_app: Callable[..., CareCRM]) -> None:
    test_component_registration(make_app, "carecrm_register_attribution_models", "model_id", "attribution_models")


def test_hook_carecrm_register_segment_builders(make_app: Callable[..., CareCRM]) -> None:
    test_component_registration(make_app, "carecrm_register_segment_builders", "builder_id", "segment_builders")


@attrs.frozen(kw_only=True)
class _ThresholdOptions:
    threshold: int = 1
    labels: tuple[str, ...] = ()


def test_hook_carecrm_register_options(make_app: Callable[..., CareCRM]) -> None:
    seen: list[Any] = []

    class Plugin:
        def __init__(self) -> None:
            self.__name__ = "thresholds"  # pluggy names a plugin by its __name__

        @hookimpl
        def carecrm_register_options(self, register: Any) -> None:
            register(_ThresholdOptions)

        @hookimpl
        def carecrm_configure(self, app: CareCRM) -> None:
            seen.append(app.plugin_options("thresholds"))

    base = make_app()

    def build(table: dict[str, Any]) -> CareCRM:
        doc = {**base.settings.raw, "plugins": {"thresholds": table}}
        settings = settings_from_dict(doc, base_dir=base.settings.base_dir)
        return CareCRM(settings, keys=base.keys, load_entrypoints=False, extra_plugins=[Plugin()])

    app = build({"threshold": 3, "labels": ["hot"]})
    assert seen[-1] == _ThresholdOptions(threshold=3, labels=("hot",))
    assert app.plugin_options("thresholds") is seen[-1]
    unknown = r"plugins\.thresholds\.treshold: unknown option 'treshold' of plugin thresholds; known: threshold, labels"
    with pytest.raises(ConfigError, match=unknown):
        build({"treshold": 3})
    wrong = r"plugins\.thresholds\.threshold: option 'threshold' of plugin thresholds must be a whole number"
    with pytest.raises(ConfigError, match=wrong):
        build({"threshold": "3"})
    # a plugin that declares no options class still gets its table as a dict (deprecated)
    assert make_app(plugins={"other": {"x": 1}}).plugin_options("other") == {"x": 1}


def test_hook_carecrm_configure(make_app: Callable[..., CareCRM]) -> None:
    seen: list[Any] = []

    class Plugin:
        @hookimpl
        def carecrm_configure(self, app: CareCRM) -> None:
            seen.append((app, app.plugin_options("myplugin")))

    base = make_app(plugins={"myplugin": {"threshold": 3}})
    app = CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[Plugin()])
    assert seen == [(app, {"threshold": 3})]


def test_hook_carecrm_track_event(make_app: Callable[..., CareCRM], caplog: pytest.LogCaptureFixture) -> None:
    received: list[ev.Event] = []

    class Recorder:
        @hookimpl
        def carecrm_track_event(self, event: ev.Event) -> None:
            received.append(event)

    class Broken:
        @hookimpl
        def carecrm_track_event(self, event: ev.Event, app: CareCRM) -> None:
            raise RuntimeError("boom")

    base = make_app()
    app = CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[Recorder(), Broken()])
    with caplog.at_level(logging.ERROR, logger="carecrm"):
        report = app.ingest([_lead("r1", "maria.placeholder@example.com")], actor=ACTOR)
    assert report.contacts_created == 1
    kinds = [type(e).__name__ for e in received]
    # live scoring (carecrm.plugins.scoring.live) rescored the contact once the batch was delivered
    assert kinds == ["ContactCreated", "InteractionRecorded", "ScoreChanged"]
    assert "Broken" in caplog.text or "boom" in caplog.text
    # the broken plugin undid nothing
    assert app.counts()["interactions"] == 1
    # events carry no personal data
    assert "maria" not in repr(received).lower()
    app.set_stage(report.contact_ids[0], "contacted", actor=ACTOR)
    assert isinstance(received[-1], ev.StageChanged) and received[-1].to_stage == "contacted"
    app.close()


def test_hook_carecrm_match_contact(make_app: Callable[..., CareCRM]) -> None:
    base = make_app()
    first = base.ingest([_lead("r1", "maria.placeholder@example.com")], actor=ACTOR)
    target = first.contact_ids[0]

    class AlwaysSame:
        @hookimpl
        def carecrm_match_contact(self, candidate: Any, uow: Any, app: CareCRM) -> MatchResult:
            return MatchResult(contact_id=target, rule="test")

    class Abstains:
        calls = 0

        @hookimpl(tryfirst=True)
        def carecrm_match_contact(self, candidate: Any) -> None:
            Abstains.calls += 1
            return None

    app = CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[AlwaysSame(), Abstains()])
    report = app.ingest([_lead("r2", "someone.else@example.com", "Zed")], actor=ACTOR)
    assert report.contacts_created == 0 and report.contact_ids == [target]
    assert Abstains.calls == 1
    # without the plugin the exact matcher makes a new contact for the unknown email
    report = base.ingest([_lead("r3", "third.person@example.com", "Ty")], actor=ACTOR)
    assert report.contacts_created == 1 and report.contact_ids[0] != target
    assert isinstance(target, uuid.UUID)
    app.close()


# --------------------------------------------------------------------------- through pluggy


def test_a_wrapper_of_a_registration_hook_runs_around_each_plugin(make_app: Callable[..., CareCRM]) -> None:
    calls: list[str] = []

    class Plugin:
        @hookimpl
        def carecrm_register_sources(self, register: Any) -> None:
            calls.append("plugin")
            register(_LineConnector)

    class Wrapper:
        @hookimpl(wrapper=True)
        def carecrm_register_sources(self, register: Any) -> Any:
            calls.append("before")
            result = yield
            calls.append("after")
            return result

    base = make_app()
    plugin = Plugin()
    app = CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[plugin, Wrapper()])
    implementers = [p for _, p in app.pm.list_name_plugin() if hasattr(p, "carecrm_register_sources")]
    # the wrapper ran once around each other plugin's own call (the built-ins and ours)
    assert calls.count("before") == calls.count("after") == len(implementers) - 1
    i = calls.index("plugin")
    assert calls[i - 1 : i + 2] == ["before", "plugin", "after"]
    # and owners are still attributed one by one
    assert app.sources.owner("lines") == app.pm.get_name(plugin)
    assert app.sources.owner("mapped") == "carecrm.plugins.sources.mapped"
    app.close()


def test_a_wrapper_sees_each_plugins_own_register(make_app: Callable[..., CareCRM]) -> None:
    owners: list[str] = []

    class Wrapper:
        @hookimpl(wrapper=True)
        def carecrm_register_scoring_models(self, register: Any) -> Any:
            result = yield
            owners.append(getattr(register, "__qualname__", ""))
            return result

    base = make_app()
    app = CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[Wrapper()])
    assert owners, "the wrapper never ran"
    assert app.scoring_models.owner("points") == "carecrm.plugins.scoring.points"
    app.close()


def test_tracing_shows_registration_hook_calls(
    make_app: Callable[..., CareCRM], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    base = make_app()
    monkeypatch.setenv("CARECRM_TRACE_PLUGINS", "1")
    with caplog.at_level(logging.DEBUG, logger="carecrm.plugins"):
        app = CareCRM(base.settings, keys=base.keys, load_entrypoints=False)
    traced = caplog.text
    for hook in (
        "carecrm_register_storage_backends",
        "carecrm_register_sources",
        "carecrm_register_scoring_models",
        "carecrm_register_attribution_models",
        "carecrm_register_segment_builders",
        "carecrm_configure",
    ):
        assert hook in traced, f"{hook} not traced"
    app.close()


def test_plugins_listing_still_attributes_components(make_app: Callable[..., CareCRM]) -> None:
    info = {p.name: p for p in make_app().plugins_info()}
    assert info["carecrm.plugins.sources.mapped"].components == (
        "source:mapped",
        *(f"source:{preset}" for preset in ("jotform", "typeform", "unbounce", "webflow")),
    )
    assert info["carecrm.storage_backends.sql"].components[0].startswith("storage:")
    assert set(info["carecrm.plugins.attribution.basic"].components) >= {"attribution:first_touch"}
