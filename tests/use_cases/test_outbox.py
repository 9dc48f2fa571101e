"""Live events are durable (issue 7, item 8): written to the outbox with the change,
delivered from it in commit order, and nothing is lost when a process dies between its
commit and the delivery."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Callable, Generator, Sequence
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from carecrm.cli.main import cli
from carecrm.core import CareCRM, InteractionDraft, LeadEvent, hookimpl
from carecrm.core.events import types as ev
from carecrm.core.events.outbox import LIVE_SUBSCRIBER, Cursor, OutboxRelay, cursor_key
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
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    @hookimpl(wrapper=True)
    def carecrm_track_event(self, event: ev.Event, app: CareCRM) -> Generator[None, Any, Any]:
        self.events.append(event)
        return (yield)


def _lead(ref: str) -> LeadEvent:
    return LeadEvent(
        source="typeform",
        record_ref=ref,
        emails=(f"{ref}@example.com",),
        interactions=(
            InteractionDraft(kind="form.submitted", occurred_at=utcnow(), idempotency_key=f"{ref}:f", channel="web"),
        ),
    )


def _with(app: CareCRM, *plugins: object) -> CareCRM:
    """Another app (another process, as far as the data goes) on ``app``'s database."""
    return CareCRM(app.settings, keys=app.keys, load_entrypoints=False, extra_plugins=list(plugins))


def _outbox(app: CareCRM) -> list[Any]:
    with app.storage.unit_of_work() as uow:
        return list(uow.export_records("outbox"))


def _kinds(events: Sequence[ev.Event]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_events_are_written_with_the_change_and_delivered_once(make_app: Callable[..., CareCRM]) -> None:
    recorder = Recorder()
    app = _with(make_app(), recorder)
    cid = app.ingest([_lead("a")], actor=ACTOR).contact_ids[0]
    app.set_stage(cid, "contacted", actor=ACTOR)
    stored = _outbox(app)
    assert [r.seq for r in stored] == list(range(1, len(stored) + 1))
    assert [r.kind for r in stored] == _kinds(recorder.events)
    assert _kinds(recorder.events)[:2] == ["ContactCreated", "InteractionRecorded"]
    assert "StageChanged" in _kinds(recorder.events)
    # the stored data is ids, kinds and times: never the person's address
    assert all("example.com" not in repr(r.data) for r in stored)
    assert app.pending_events() == 0
    assert app.deliver_events().delivered == 0  # nothing twice
    assert len(recorder.events) == len(stored)


def test_events_written_during_a_delivery_follow_it_from_memory(
    make_app: Callable[..., CareCRM], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live rescoring writes ``ScoreChanged`` while the relay delivers an ingest batch's
    events; the relay's next page is those events, taken from memory (nothing read back),
    and every event is delivered once, in seq order."""
    from carecrm.core.events import outbox

    recorder = Recorder()
    app = _with(make_app(), recorder)
    read: list[Any] = []
    real = outbox._Page.of.__func__  # type: ignore[attr-defined]

    def counted(cls: type[Any], records: Sequence[Any], position: int) -> Any:
        read.extend(records)
        return real(cls, records, position)

    monkeypatch.setattr(outbox._Page, "of", classmethod(counted))
    app.ingest([_lead("a"), _lead("b")], actor=ACTOR)
    assert _kinds(recorder.events).count("ScoreChanged") == 2
    assert read == []
    assert [r.kind for r in _outbox(app)] == _kinds(recorder.events)
    assert app.pending_events() == 0


def test_a_crash_between_commit_and_dispatch_loses_no_event(make_app: Callable[..., CareCRM]) -> None:
    """The process commits the lead, then dies before delivering: the next process to
    deliver (any write, or ``deliver_events``) hands the events over, once."""
    first = make_app(scoring={"live": False})
    dead = Recorder()
    crashing = _with(first, dead)
    crashing.deliver_events = lambda *published: None  # type: ignore[method-assign, assignment, return-value]
    cid = crashing.ingest([_lead("a")], actor=ACTOR).contact_ids[0]
    assert dead.events == []  # the process "died" right after its commit
    recorder = Recorder()
    later = _with(first, recorder)
    assert later.pending_events() == 2
    report = later.deliver_events()
    assert report.delivered == 2 and not report.busy
    assert _kinds(recorder.events) == ["ContactCreated", "InteractionRecorded"]
    assert isinstance(recorder.events[1], ev.InteractionRecorded) and recorder.events[1].contact_id == cid
    assert later.pending_events() == 0


def test_a_killed_process_leaves_its_events_to_the_next_one(tmp_path: Path) -> None:
    """A real crash: a ``carecrm`` process killed (``os._exit``) between its commit and
    the delivery; ``carecrm events deliver`` in the next process delivers what it left."""
    folder = tmp_path / "practice"
    result = CliRunner().invoke(cli, ["init", "--dir", str(folder), "--timezone", "America/Chicago"])
    assert result.exit_code == 0, result.output
    config = folder / "carecrm.toml"
    script = textwrap.dedent(
        f"""
        import os
        from carecrm.core import CareCRM, InteractionDraft, LeadEvent
        from carecrm.core.model.domain import Actor
        from carecrm.core.model.timeutil import utcnow

        CareCRM.deliver_events = lambda self, *published: os._exit(3)   # dies after the commit
        app = CareCRM.from_config({str(config)!r}, load_entrypoints=False)
        app.ingest([LeadEvent(source="typeform", record_ref="r1", emails=("ann@example.com",),
                              interactions=(InteractionDraft(kind="form.submitted", occurred_at=utcnow(),
                                                             idempotency_key="r1:f", channel="web"),))],
                   actor=Actor.parse("loader:admin"))
        """
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARECRM_")}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 3, proc.stderr[-3000:]
    runner = CliRunner(env={"CARECRM_CONFIG": str(config), "CARECRM_ACTOR": "ops:admin"})
    pending = runner.invoke(cli, ["events", "pending"])
    assert pending.exit_code == 0, pending.output
    assert "2" in pending.output
    recorder = Recorder()
    app = CareCRM.from_config(config, load_entrypoints=False, extra_plugins=[recorder])
    try:
        assert app.deliver_events().delivered >= 2
        assert _kinds(recorder.events)[:2] == ["ContactCreated", "InteractionRecorded"]
    finally:
        app.close()
    again = runner.invoke(cli, ["events", "pending"])
    assert again.exit_code == 0 and "0" in again.output


def test_a_wrapper_receives_events_from_the_outbox(make_app: Callable[..., CareCRM]) -> None:
    first = make_app(scoring={"live": False})
    crashing = _with(first)
    crashing.deliver_events = lambda *published: None  # type: ignore[method-assign, assignment, return-value]
    crashing.ingest([_lead("a"), _lead("b")], actor=ACTOR)
    recorder, wrapper = Recorder(), Wrapper()
    later = _with(first, recorder, wrapper)
    later.deliver_events()
    assert len(recorder.events) == 4 and wrapper.events == recorder.events


def test_a_failing_delivery_is_not_acknowledged(make_app: Callable[..., CareCRM]) -> None:
    """If the subscriber itself raises (not one plugin: those are logged), the page stays
    pending and the lease is released, so the next run delivers it again."""
    app = make_app(scoring={"live": False})
    quiet = _with(app)
    quiet.deliver_events = lambda *published: None  # type: ignore[method-assign, assignment, return-value]
    quiet.ingest([_lead("a")], actor=ACTOR)
    calls: list[int] = []

    def broken(events: Sequence[ev.Event]) -> None:
        calls.append(len(events))
        raise OSError("the worker's queue is down")

    with pytest.raises(OSError):
        OutboxRelay(app.storage, "worker", broken).run()
    got: list[ev.Event] = []
    report = OutboxRelay(app.storage, "worker", got.extend).run()
    assert report.delivered == 2 and _kinds(got) == ["ContactCreated", "InteractionRecorded"]
    assert calls == [2]


def test_each_subscriber_has_its_own_cursor(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(scoring={"live": False})
    app.ingest([_lead("a")], actor=ACTOR)
    worker: list[ev.Event] = []
    assert OutboxRelay(app.storage, "worker", worker.extend).run().delivered == 2
    app.ingest([_lead("b")], actor=ACTOR)
    assert OutboxRelay(app.storage, "worker", worker.extend).run().delivered == 2
    assert _kinds(worker) == ["ContactCreated", "InteractionRecorded"] * 2
    assert app.pending_events() == 0  # the live subscriber got them at each commit
    with app.storage.unit_of_work() as uow:
        assert Cursor.parse(uow.meta.get(cursor_key("worker"))).position == 4
        assert Cursor.parse(uow.meta.get(cursor_key(LIVE_SUBSCRIBER))).position == 4


def test_a_lease_held_by_another_relay_is_respected_until_it_expires(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(scoring={"live": False})
    app.ingest([_lead("a")], actor=ACTOR)
    now = [1_000_000.0]
    with app.storage.unit_of_work() as uow:
        uow.meta.set(cursor_key("worker"), Cursor(0, "someone-else", now[0] + 60).text())
        uow.commit()
    got: list[ev.Event] = []
    relay = OutboxRelay(app.storage, "worker", got.extend, clock=lambda: now[0])
    assert relay.run().busy and got == []
    now[0] += 61  # that process died: its lease ran out
    assert relay.run().delivered == 2 and len(got) == 2


def test_two_threads_delivering_at_once_deliver_each_event_once(make_app: Callable[..., CareCRM]) -> None:
    app = make_app(scoring={"live": False})
    quiet = _with(app)
    quiet.deliver_events = lambda *published: None  # type: ignore[method-assign, assignment, return-value]
    quiet.ingest([_lead(f"p{i}") for i in range(300)], actor=ACTOR)
    got: list[ev.Event] = []
    lock = threading.Lock()

    def collect(events: Sequence[ev.Event]) -> None:
        with lock:
            got.extend(events)

    def run() -> None:
        while OutboxRelay(app.storage, "worker", collect, page=50).run().busy:
            pass

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(got) == 600
    assert len({(type(e).__name__, getattr(e, "contact_id", None)) for e in got}) == 600


def test_prune_keeps_what_a_subscriber_has_not_had(make_app: Callable[..., CareCRM]) -> None:
    from datetime import timedelta

    app = make_app(scoring={"live": False})
    app.ingest([_lead("a")], actor=ACTOR)
    assert app.prune_events(older_than=timedelta(days=30)) == 0  # too recent
    assert app.prune_events(older_than=timedelta(0)) == 2  # delivered to the live subscriber
    assert _outbox(app) == []
    app.ingest([_lead("b")], actor=ACTOR)
    assert [r.seq for r in _outbox(app)] == [3, 4]  # numbering goes on after a prune


def test_a_stale_in_memory_hint_is_never_delivered(make_app: Callable[..., CareCRM]) -> None:
    """What a writer hands the relay from memory is delivered only when it is exactly what
    follows the cursor up to the committed head: a hint from a unit that rolled back (its
    numbers not committed, or taken since by another writer) is ignored and the outbox read."""
    from carecrm.core.events.outbox import Published

    app = make_app(scoring={"live": False})
    app.ingest([_lead("a")], actor=ACTOR)
    got: list[ev.Event] = []
    relay = OutboxRelay(app.storage, "worker", got.extend)
    relay.run()
    assert len(got) == 2
    ghost = ev.ContactCreated(at=utcnow(), contact_id=uuid.uuid4(), source="rolled-back")
    assert relay.run([Published(first=3, last=3, events=(ghost,))]).delivered == 0  # head is 2
    app.ingest([_lead("b")], actor=ACTOR)  # seqs 3 and 4 now belong to b's events
    report = relay.run([Published(first=3, last=3, events=(ghost,))])
    assert report.delivered == 2 and ghost not in got
    assert _kinds(got[2:]) == ["ContactCreated", "InteractionRecorded"]
