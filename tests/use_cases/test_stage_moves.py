"""One stage-move path for every cause (issue 7, item 10): a person's move, an ingested
interaction's implied move and a logged interaction's implied move each write the stage
history, a ``stage.changed`` timeline entry and a ``StageChanged`` event; a history gives
the same stage whether it arrives in one lead event or in several."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from carecrm.core import CareCRM, InteractionDraft, LeadEvent, hookimpl
from carecrm.core.events import types as ev
from carecrm.core.model.domain import Actor

ACTOR = Actor.parse("carla:coordinator")
T0 = datetime(2026, 4, 1, 15, 0, tzinfo=UTC)

#: A patient's whole treatment history: the inquiry, the consult, a first treatment
#: accepted and performed, then a second treatment booked months later.
HISTORY: list[tuple[str, dict[str, Any]]] = [
    ("form.submitted", {}),
    ("appointment.booked", {"appointment_type": "consult"}),
    ("appointment.attended", {"appointment_type": "consult"}),
    ("treatment.accepted", {}),
    ("treatment.performed", {}),
    ("appointment.booked", {"appointment_type": "treatment"}),
]


class Recorder:
    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    @hookimpl
    def carecrm_track_event(self, event: ev.Event) -> None:
        self.events.append(event)


def _drafts(steps: list[tuple[str, dict[str, Any]]], start: int = 0) -> tuple[InteractionDraft, ...]:
    return tuple(
        InteractionDraft(
            kind=kind,
            occurred_at=T0 + timedelta(days=10 * (start + i)),
            idempotency_key=f"h{start + i}",
            channel="web" if kind == "form.submitted" else None,
            attributes=attrs,
        )
        for i, (kind, attrs) in enumerate(steps)
    )


def _lead(drafts: tuple[InteractionDraft, ...]) -> LeadEvent:
    return LeadEvent(source="booking", record_ref="r", emails=("maria@example.com",), interactions=drafts)


def _app(make_app: Callable[..., CareCRM], recorder: Recorder) -> CareCRM:
    base = make_app(scoring={"live": False})
    return CareCRM(base.settings, keys=base.keys, load_entrypoints=False, extra_plugins=[recorder])


def _moves(app: CareCRM, cid: Any) -> list[tuple[str | None, str]]:
    return [(c.from_stage, c.to_stage) for c in app.stage_history(cid)]


def _entries(app: CareCRM, cid: Any) -> list[tuple[str, str]]:
    timeline = app.timeline(cid, actor=ACTOR)
    return [
        (i.attributes["from_stage"], i.attributes["to_stage"])
        for i in timeline.interactions
        if i.kind == "stage.changed"
    ]


def test_a_history_gives_the_same_stage_in_one_lead_event_as_in_several(make_app: Callable[..., CareCRM]) -> None:
    one_rec, many_rec = Recorder(), Recorder()
    one = _app(make_app, one_rec)
    cid = one.ingest([_lead(_drafts(HISTORY))], actor=ACTOR).contact_ids[0]
    many = _app(lambda **kw: make_app(url=f"sqlite:///{one.settings.base_dir / 'other.db'}", **kw), many_rec)
    many_cid = None
    for i, step in enumerate(HISTORY):
        many_cid = many.ingest([_lead(_drafts([step], start=i))], actor=ACTOR).contact_ids[0]
    assert many_cid is not None
    assert one.get_contact(cid, actor=ACTOR).stage == "returning_patient"
    assert many.get_contact(many_cid, actor=ACTOR).stage == "returning_patient"
    assert _moves(one, cid) == _moves(many, many_cid)
    assert _moves(one, cid)[-1] == ("booked_patient", "returning_patient")
    # every move, implied or not, is on the timeline and fired as an event
    assert _entries(one, cid) == [m for m in _moves(one, cid) if m[0] is not None]
    fired = [(e.from_stage, e.to_stage) for e in one_rec.events if isinstance(e, ev.StageChanged)]
    assert fired == _entries(one, cid)
    assert all(e.implied_by is not None for e in one_rec.events if isinstance(e, ev.StageChanged))


@pytest.mark.parametrize("cause", ["person", "ingest", "logged"])
def test_every_cause_of_a_move_writes_history_entry_and_event(make_app: Callable[..., CareCRM], cause: str) -> None:
    recorder = Recorder()
    app = _app(make_app, recorder)
    cid = app.ingest([_lead(_drafts(HISTORY[:1]))], actor=ACTOR).contact_ids[0]
    booked = {"appointment_type": "consult"}
    if cause == "person":
        app.set_stage(cid, "consult_scheduled", actor=ACTOR, reason="booked_by_phone")
    elif cause == "ingest":
        app.ingest([_lead(_drafts([("appointment.booked", booked)], start=1))], actor=ACTOR)
    else:
        app.log_interaction(cid, actor=ACTOR, kind="appointment.booked", attributes=booked)
    assert app.get_contact(cid, actor=ACTOR).stage == "consult_scheduled"
    history = app.stage_history(cid)
    assert [(c.from_stage, c.to_stage) for c in history][-1] == ("new_lead", "consult_scheduled")
    assert _entries(app, cid) == [("new_lead", "consult_scheduled")]
    moved = [e for e in recorder.events if isinstance(e, ev.StageChanged)]
    assert [(e.from_stage, e.to_stage, e.actor) for e in moved] == [("new_lead", "consult_scheduled", "carla")]
    assert (moved[0].implied_by is None) == (cause == "person") == (history[-1].implied_by is None)
