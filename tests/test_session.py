"""The actor on every call (issue 7, item 3): the app holds no actor and no per-call state;
each facade call that reads or changes personal data names its caller, and one app serves
several callers at once."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from carecrm.core import CareCRM, InteractionDraft, LeadEvent
from carecrm.core.models import Actor

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
