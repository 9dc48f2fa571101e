"""The actor on every call (issue 7, item 3): the app holds no actor and no per-call state;
each facade call that reads or changes personal data names its caller, and one app serves
several callers at once."""

from __future__ import annotations

import inspect
import threading
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from carecrm.core import CareCRM, InteractionDraft, LeadEvent, hookimpl
from carecrm.core.errors import DuplicateError
from carecrm.core.events import types as ev
from carecrm.core.model.domain import Actor

SETUP = Actor.parse("setup:admin")
ALICE = Actor.parse("alice:coordinator")
BOB = Actor.parse("bob:frontdesk")
T0 = datetime(2025, 10, 6, 14, 0, tzinfo=UTC)

#: Facade methods that read or change personal data: ``actor`` keyword-only, required.
PERSONAL = (
    "add_contact add_note add_task assign complete_task find_contacts get_contact inbox_discard inbox_retry "
    "inbox_show ingest ingest_payloads log_interaction migrate_to notes resolve score_explain score_top "
    "segment_delete segment_preview segment_save segment_show set_stage tasks timeline"
).split()


def lead(ref: str, email: str, kind: str = "form.submitted", at: datetime = T0) -> LeadEvent:
    return LeadEvent(
        source="typeform",
        record_ref=ref,
        emails=(email,),
        first_name="Ann",
        interactions=(InteractionDraft(kind=kind, occurred_at=at, idempotency_key=f"{ref}:{kind}", channel="web"),),
    )


def test_the_app_holds_no_actor_and_every_personal_call_takes_one(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    assert not hasattr(app, "actor")
    with pytest.raises(TypeError):
        CareCRM(app.settings, actor=ALICE, load_entrypoints=False)  # type: ignore[call-arg]
    for name in PERSONAL:
        param = inspect.signature(getattr(app, name)).parameters.get("actor")
        assert param is not None, name
        assert param.kind is inspect.Parameter.KEYWORD_ONLY and param.default is inspect.Parameter.empty, name
    for name in ("_dispatching", "_deferred", "_rescore_pending"):
        assert not hasattr(app, name), name
    with pytest.raises(TypeError, match="actor"):
        app.ingest([lead("x", "x@example.com")])  # type: ignore[call-arg]


def test_ingest_names_the_calling_actor_in_its_audit_entry_and_stage_history(
    make_app: Callable[..., CareCRM],
) -> None:
    app = make_app()
    cid = app.ingest([lead("a", "ann@example.com")], actor=ALICE).contact_ids[0]
    app.ingest([lead("b", "ann@example.com", "appointment.booked", T0 + timedelta(days=1))], actor=BOB)
    ingests = [e for e in app.audit_log(limit=100) if e.action == "ingest"]
    assert [(e.actor, e.role) for e in ingests] == [("alice", "coordinator"), ("bob", "frontdesk")]
    history = app.stage_history(cid)
    assert history[0].actor == "alice"  # entered the pipeline by alice's ingest
    timeline = app.timeline(cid, actor=BOB)
    assert [i.actor for i in timeline.interactions] == ["alice", "bob"]


def test_set_stage_writes_one_entry_in_the_changes_own_transaction(
    make_app: Callable[..., CareCRM], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app(scoring={"live": False})  # no rescoring units of work after the commits
    cid = app.ingest([lead("a", "ann@example.com")], actor=SETUP).contact_ids[0]
    before = len(app.audit_log(limit=1000))
    real = app.storage.unit_of_work
    opened: list[int] = []

    def counting() -> Any:
        # the outbox relay's own bookkeeping (cursor and lease) is not the change's
        callers = {f.frame.f_globals.get("__name__") for f in inspect.stack(0)[1:4]}
        if "carecrm.core.events.outbox" not in callers:
            opened.append(1)
        return real()

    monkeypatch.setattr(app.storage, "unit_of_work", counting)
    app.set_stage("ann@example.com", "contacted", actor=ALICE)
    app.add_note(cid, "called back", actor=ALICE)
    monkeypatch.undo()
    assert len(opened) == 2  # one unit of work per change: no separate audited read
    new = app.audit_log(limit=1000)[before:]
    assert [(e.action, e.actor, e.contact_id) for e in new] == [("stage.set", "alice", cid), ("note.add", "alice", cid)]
    ok, _, problem = app.verify_audit_chain()
    assert ok, problem


# --------------------------------------------------------------------------- one app, many callers


def _concurrent_actors(app: CareCRM, rounds: int) -> None:
    """Four threads (two as alice, two as bob) read and write through one app at once,
    each on its own contact; then every audit entry must name the actor who caused it and
    every write must be there."""
    seeds = {
        (actor.name, n): app.ingest(
            [lead(f"seed-{actor.name}-{n}", f"{actor.name}{n}@example.com")], actor=SETUP
        ).contact_ids[0]
        for actor in (ALICE, BOB)
        for n in range(2)
    }
    owner = {cid: name for (name, _), cid in seeds.items()}
    before = len(app.audit_log(limit=100_000))
    errors: list[BaseException] = []
    start = threading.Barrier(len(seeds))

    def work(actor: Actor, n: int) -> None:
        cid = seeds[(actor.name, n)]
        email = f"{actor.name}{n}@example.com"
        try:
            start.wait()
            for i in range(rounds):
                assert app.timeline(cid, actor=actor).contact.id == cid
                assert [c.id for c in app.find_contacts(email=email, actor=actor)] == [cid]
                app.add_note(cid, f"note {i}", actor=actor)
                app.set_stage(cid, "nurture" if i % 2 == 0 else "contacted", actor=actor)
                ref = f"{actor.name}-{n}-{i}"
                report = app.ingest([lead(ref, f"new-{ref}@example.com")], actor=actor)
                for q in report.quarantined:
                    if "DuplicateError" in q.reason and "audit" in q.reason:
                        raise DuplicateError(q.reason)
                assert report.contacts_created == 1, report.quarantined
        except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a, n)) for a in (ALICE, BOB) for n in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    entries = app.audit_log(limit=100_000)[before:]
    # whatever was written names the right actor
    for e in entries:
        if e.contact_id in owner:
            assert e.actor == owner[e.contact_id], (e.action, e.actor)
            assert e.role == ("coordinator" if e.actor == "alice" else "frontdesk")
    others = [e for e in errors if not isinstance(e, DuplicateError)]
    if others:
        raise others[0]
    if errors:
        raise errors[0]  # the audit append race (issue 7, item 7): an expected failure until it is fixed
    # and everything is there
    per = Counter((e.actor, e.action, e.contact_id) for e in entries)
    for (name, _), cid in seeds.items():
        for action in ("timeline.read", "contact.read", "note.add", "stage.set"):
            assert per[(name, action, cid)] == rounds, (name, action)
        assert len(app.notes(cid, actor=SETUP)) == rounds
        moves = [c for c in app.stage_history(cid) if c.actor == name]
        assert len(moves) == rounds
    ingests = Counter(e.actor for e in entries if e.action == "ingest")
    assert ingests == {"alice": 2 * rounds, "bob": 2 * rounds}
    assert app.counts()["contacts"] == len(seeds) * (1 + rounds)
    ok, _, problem = app.verify_audit_chain()
    assert ok, problem


def test_one_app_serves_two_actors_from_several_threads_on_sqlite(make_app: Callable[..., CareCRM]) -> None:
    _concurrent_actors(make_app(), rounds=4)


@pytest.mark.postgres
def test_one_app_serves_two_actors_from_several_threads_on_postgresql(
    make_app: Callable[..., CareCRM], postgres_url: str
) -> None:
    app = make_app(url=postgres_url)
    _concurrent_actors(app, rounds=4)


class Deferring:
    """Defers work per delivering thread; thread A's delivery waits until released."""

    def __init__(self) -> None:
        self.ran: dict[str, list[str]] = {"A": [], "B": []}
        self.inside = threading.Event()
        self.release = threading.Event()

    @hookimpl
    def carecrm_track_event(self, event: ev.Event, app: CareCRM) -> None:
        me = threading.current_thread().name
        app.after_dispatch(f"work-{me}", lambda: self.ran[me].append(me))
        if me == "A":
            self.inside.set()
            self.release.wait(10)


def test_dispatch_state_belongs_to_the_call(make_app: Callable[..., CareCRM]) -> None:
    """Work deferred during one thread's delivery runs at the end of that delivery, never
    in another thread's (the old ``_dispatching`` flag on the app mixed them)."""
    base = make_app()
    plugin = Deferring()
    app = CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[plugin])
    event = ev.ContactCreated(at=T0, contact_id=uuid.uuid4(), source=None)
    a = threading.Thread(target=app.dispatch, args=([event],), name="A")
    a.start()
    assert plugin.inside.wait(10)
    b = threading.Thread(target=app.dispatch, args=([event],), name="B")
    b.start()
    b.join(10)
    assert plugin.ran == {"A": [], "B": ["B"]}  # B's work ran when B's delivery ended
    plugin.release.set()
    a.join(10)
    assert plugin.ran == {"A": ["A"], "B": ["B"]}
