"""Live events go through pluggy's hook callers (issue 7, item 8): wrappers see them,
tracing shows them, and one plugin's failure never stops another nor undoes the commit."""

from __future__ import annotations

import logging
from collections.abc import Callable, Generator
from typing import Any

import pytest

from carecrm.core import CareCRM, InteractionDraft, LeadEvent, hookimpl
from carecrm.core.events import types as ev
from carecrm.core.model.domain import Actor
from carecrm.core.model.timeutil import utcnow

ACTOR = Actor.parse("tester:admin")


class Recorder:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    @hookimpl
    def carecrm_track_event(self, event: ev.Event) -> None:
        self.events.append(event)


class Wrapper:
    """A new-style wrapper: sees each event once, around every plugin's delivery."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    @hookimpl(wrapper=True)
    def carecrm_track_event(self, event: ev.Event, app: CareCRM) -> Generator[None, Any, Any]:
        self.events.append(event)
        return (yield)


class OldWrapper:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    @hookimpl(hookwrapper=True)
    def carecrm_track_event(self, event: ev.Event) -> Generator[None, Any, None]:
        self.events.append(event)
        yield


class Boom:
    @hookimpl
    def carecrm_track_event(self, event: ev.Event) -> None:
        raise RuntimeError("boom")


def _lead(ref: str) -> LeadEvent:
    return LeadEvent(
        source="typeform",
        record_ref=ref,
        emails=(f"{ref}@example.com",),
        interactions=(
            InteractionDraft(kind="form.submitted", occurred_at=utcnow(), idempotency_key=f"{ref}:f", channel="web"),
        ),
    )


def _app(make_app: Callable[..., CareCRM], *plugins: object) -> CareCRM:
    base = make_app()
    return CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=list(plugins))


def test_a_wrapper_receives_every_event_once(make_app: Callable[..., CareCRM]) -> None:
    recorder, wrapper, old = Recorder(), Wrapper(), OldWrapper()
    app = _app(make_app, recorder, wrapper, old)
    app.ingest([_lead("a"), _lead("b")], actor=ACTOR)
    kinds = [type(e).__name__ for e in recorder.events]
    assert kinds.count("ContactCreated") == 2 and kinds.count("InteractionRecorded") == 2
    assert wrapper.events == recorder.events  # once each, in order, although two plugins (and scoring) listen
    assert old.events == recorder.events


def test_a_failing_plugin_stops_no_other_and_undoes_nothing(
    make_app: Callable[..., CareCRM], caplog: pytest.LogCaptureFixture
) -> None:
    first, last = Recorder(), Recorder()
    wrapper = Wrapper()
    boom = Boom()
    # pluggy calls the last registered first: Boom runs between the two recorders
    app = _app(make_app, first, wrapper, boom, last)
    with caplog.at_level(logging.ERROR, logger="carecrm"):
        report = app.ingest([_lead("a")], actor=ACTOR)
    assert report.contacts_created == 1 and app.counts()["contacts"] == 1
    # ContactCreated, InteractionRecorded, then the rescore's ScoreChanged
    assert [type(e).__name__ for e in first.events] == ["ContactCreated", "InteractionRecorded", "ScoreChanged"]
    assert last.events == first.events and wrapper.events == first.events
    name = app.pm.get_name(boom)
    failures = [r for r in caplog.records if "failed in carecrm_track_event" in r.getMessage()]
    assert len(failures) == len(first.events) and all(name in r.getMessage() for r in failures)
    assert all("example.com" not in r.getMessage() for r in caplog.records)


def test_tracing_shows_live_events(
    make_app: Callable[..., CareCRM], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CARECRM_TRACE_PLUGINS", "1")
    recorder = Recorder()
    app = _app(make_app, recorder)
    with caplog.at_level(logging.DEBUG, logger="carecrm.plugins"):
        app.ingest([_lead("a")], actor=ACTOR)
    traced = [r.getMessage() for r in caplog.records if r.name == "carecrm.plugins"]
    # one traced call per event and listening plugin (the recorder and live scoring)
    assert sum("carecrm_track_event [hook]" in line for line in traced) == 2 * len(recorder.events) > 0
