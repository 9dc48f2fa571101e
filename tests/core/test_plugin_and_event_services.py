"""The plugins-and-components service and the live-events service work with their
collaborators alone, without a CareCRM facade; and the facade stays a composition root
that no other module of the core imports."""

from __future__ import annotations

import ast
import threading
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest

from carecrm.core import hookimpl, settings_from_dict
from carecrm.core.config import Settings
from carecrm.core.errors import ConfigError, UnknownComponentError
from carecrm.core.events import types as ev
from carecrm.core.events.live import LiveEvents
from carecrm.core.events.outbox import publish
from carecrm.core.model.timeutil import utcnow
from carecrm.core.plugins.components import Components
from carecrm.core.plugins.manager import build_plugin_manager
from carecrm.core.plugins.registries import Registries
from carecrm.core.storage.contract import StorageBackend

CORE = Path(__file__).resolve().parents[2] / "core"
PRACTICE: dict[str, Any] = {
    "practice": {
        "name": "Lakeside Dermatology",
        "service_lines": ["acne", "botox"],
        "locations": [{"name": "downtown", "timezone": "America/Chicago", "region": "US"}],
    }
}


@attrs.frozen(kw_only=True)
class _Options:
    threshold: int = 1


class _OptionsPlugin:
    def __init__(self) -> None:
        self.__name__ = "thresholds"  # pluggy names a plugin by its __name__

    @hookimpl
    def carecrm_register_options(self, register: Any) -> None:
        register(_Options)


def _settings(tmp_path: Path, **sections: Any) -> Settings:
    doc = {**PRACTICE, "storage": {"url": f"sqlite:///{tmp_path / 'crm.db'}"}, **sections}
    return settings_from_dict(doc, base_dir=tmp_path)


def _components(settings: Settings, digests: list[bytes]) -> Components:
    pm = build_plugin_manager(load_entrypoints=False, extra_plugins=[_OptionsPlugin()])
    registries = Registries()
    components = Components(pm=pm, settings=settings, registries=registries, digest=_recording(digests))
    components.check_enabled_plugins()
    registries.collect_from(pm)
    components.check_options()
    return components


def _recording(digests: list[bytes]) -> Any:
    def digest(data: bytes) -> str:
        digests.append(data)
        return "keyed"

    return digest


def test_components_build_a_connector_once_and_bind_the_digest_lazily(tmp_path: Path) -> None:
    digests: list[bytes] = []
    settings = _settings(tmp_path, sources={"forms": {"connector": "mapped", "occurred_at": "at"}})
    components = _components(settings, digests)
    connector = components.connector("sendgrid")
    assert components.connector("sendgrid") is connector
    assert digests == []  # building a connector loads no keys
    assert connector.record_digest(b"abc") == "keyed" and digests == [b"abc"]
    assert components.source_secret("sendgrid") is None


def test_concurrent_callers_share_one_connector(tmp_path: Path) -> None:
    components = _components(_settings(tmp_path), [])
    got: list[object] = []
    barrier = threading.Barrier(8)

    def ask() -> None:
        barrier.wait()
        got.append(components.connector("callrail"))

    threads = [threading.Thread(target=ask) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(got) == 8 and all(c is got[0] for c in got)


def test_an_unknown_source_lists_the_known_ones(tmp_path: Path) -> None:
    components = _components(_settings(tmp_path), [])
    with pytest.raises(UnknownComponentError) as caught:
        components.connector("nosuch")
    assert caught.value.family == "source"
    assert "sendgrid" in caught.value.known and "callrail" in caught.value.known
    assert "mapped" not in caught.value.known  # needs a [sources.<name>] table


def test_components_structure_plugin_options_and_list_plugins(tmp_path: Path) -> None:
    components = _components(_settings(tmp_path, plugins={"thresholds": {"threshold": 3}}), [])
    assert components.plugin_options("thresholds") == _Options(threshold=3)
    assert components.plugin_options("thresholds") is components.plugin_options("thresholds")
    assert components.plugin_options("other") == {}
    names = {info.name for info in components.plugins_info()}
    assert "thresholds" in names and "carecrm.plugins.sources.sendgrid" in names
    assert components.plugin_enabled("carecrm.plugins.sources.sendgrid")
    with pytest.raises(ConfigError, match="plugins.thresholds.treshold"):
        _components(_settings(tmp_path, plugins={"thresholds": {"treshold": 3}}), [])


def test_components_refuse_an_enabled_plugin_that_is_not_installed(tmp_path: Path) -> None:
    settings = _settings(tmp_path, plugins={"enabled": ["not-installed"]})
    with pytest.raises(UnknownComponentError, match="not-installed"):
        _components(settings, [])


class _Recorder:
    def __init__(self) -> None:
        self.seen: list[tuple[ev.Event, object]] = []

    @hookimpl
    def carecrm_track_event(self, event: ev.Event, app: object) -> None:
        self.seen.append((event, app))


def test_live_events_deliver_the_outbox_to_a_hook_implementation(carecrm_sqlite_backend: StorageBackend) -> None:
    recorder = _Recorder()
    pm = build_plugin_manager(load_entrypoints=False, extra_plugins=[recorder])
    facade = object()
    live = LiveEvents(pm=pm, app=facade, storage=lambda: carecrm_sqlite_backend)
    event = ev.ContactCreated(at=utcnow(), contact_id=uuid.uuid4(), source="sendgrid")
    with carecrm_sqlite_backend.unit_of_work() as uow:
        published = publish(uow, [event])
        uow.commit()
    assert live.pending_events() == 1
    report = live.deliver_events([published])
    assert recorder.seen == [(event, facade)]  # the hooks' app is the object given, untouched
    assert report.delivered == 1 and live.pending_events() == 0
    live.deliver_events()
    assert len(recorder.seen) == 1  # delivered once

    flushed: list[list[Any]] = []
    live.collect_after_dispatch("k", 1, flushed.append)  # outside a dispatch: at once
    assert flushed == [[1]]


def test_the_facade_is_a_composition_root_no_core_module_imports() -> None:
    from carecrm.core import CareCRM

    assert CareCRM.__bases__ == (object,)
    facade_module = "carecrm.core.app"
    # the hook specifications name the facade as the type of every hook's ``app`` argument
    # (``from carecrm.core import CareCRM`` under TYPE_CHECKING); nothing else names it
    hook_contract = {"plugins/hookspecs.py"}
    importers: set[str] = set()
    for path in CORE.rglob("*.py"):
        rel = path.relative_to(CORE).as_posix()
        if rel in {"app.py", "__init__.py"}:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import) and any(a.name == facade_module for a in node.names):
                importers.add(rel)
            elif isinstance(node, ast.ImportFrom) and node.module is not None:
                names = {a.name for a in node.names}
                if node.module == facade_module or (node.module == "carecrm.core" and names & {"app", "CareCRM"}):
                    importers.add(rel)
    assert importers <= hook_contract, sorted(importers - hook_contract)
