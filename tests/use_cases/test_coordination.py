"""Coordinator basics through the public API (:class:`carecrm.core.CareCRM`): tasks,
assignment, logged calls and speed to lead (business hours of the contact's location)."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest

from carecrm.core import CareCRM, InteractionDraft, LeadEvent, UnknownComponentError
from carecrm.core.errors import ConflictError, NotFound
from carecrm.core.events import types as ev
from carecrm.core.model.domain import Actor
from carecrm.core.plugins.hookspecs import hookimpl

ACTOR = Actor.parse("tester:admin")
CARLA = Actor.parse("carla:coordinator")
LEAD = Actor.parse("lead:admin")

CHICAGO = ZoneInfo("America/Chicago")
WEEKDAYS = {d: ["08:00", "17:00"] for d in ("mon", "tue", "wed", "thu", "fri")}


def chicago(*args: int) -> datetime:
    return datetime(*args, tzinfo=CHICAGO).astimezone(UTC)


#: Saturday 4 October 2025, 10:00 in Chicago: a web form comes in.
SATURDAY = chicago(2025, 10, 4, 10, 0)
#: Monday 6 October 2025, 08:30 in Chicago: the coordinator calls back.
MONDAY_0830 = chicago(2025, 10, 6, 8, 30)


def inquiry(ref: str, *, phone: str, when: datetime = SATURDAY, location: str | None = None, **extra: Any) -> LeadEvent:
    return LeadEvent(
        source="web",
        record_ref=ref,
        phones=(phone,),
        first_name="Maria",
        last_name=f"Placeholder-{ref}",
        location=location,
        interactions=(
            InteractionDraft(
                kind="form.submitted", occurred_at=when, idempotency_key=f"form:{ref}", channel="web", body="acne"
            ),
            *extra.get("more", ()),
        ),
    )


def new_lead(app: CareCRM, ref: str = "a", phone: str = "+13125550142", **kwargs: Any) -> uuid.UUID:
    report = app.ingest([inquiry(ref, phone=phone, **kwargs)], actor=ACTOR)
    return report.contact_ids[0]


class Recorder:
    """A live-event plugin that keeps what it is told."""

    def __init__(self) -> None:
        self.events: list[ev.Event] = []

    @hookimpl
    def carecrm_track_event(self, event: ev.Event) -> None:
        self.events.append(event)


def audit_actions(app: CareCRM, contact_id: uuid.UUID) -> list[str]:
    return [e.action for e in app.audit_log(limit=500, contact_id=contact_id)]


# --------------------------------------------------------------------------- tasks


def test_add_task_stores_encrypted_text_and_appears_on_the_timeline(
    make_app: Callable[..., CareCRM], tmp_path: Path
) -> None:
    app = make_app()
    cid = new_lead(app)
    recorder = Recorder()
    app.pm.register(recorder)
    due = datetime(2030, 1, 7, 15, 0, tzinfo=UTC)
    task = app.add_task(cid, "Send the acne history questionnaire", due=due, actor=CARLA)
    assert (task.contact_id, task.assignee, task.created_by, task.status) == (cid, "carla", "carla", "open")
    assert task.due_at == due and task.text == "Send the acne history questionnaire"
    created = [i for i in app.timeline(cid, actor=CARLA).interactions if i.kind == "task.created"]
    assert len(created) == 1
    assert created[0].attributes == {"task_id": str(task.id), "assignee": "carla", "due_at": "2030-01-07T15:00:00Z"}
    assert created[0].body == "Send the acne history questionnaire" and created[0].actor == "carla"
    assert "task.add" in audit_actions(app, cid)
    assert [(type(e).__name__, getattr(e, "kind", None)) for e in recorder.events] == [
        ("InteractionRecorded", "task.created")
    ]
    app.close()
    raw = (tmp_path / "carecrm.db").read_bytes()
    assert b"questionnaire" not in raw  # the text is ciphertext at rest


def test_due_text_is_read_in_the_location_time_zone(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = new_lead(app)
    task = app.add_task(cid, "Call back", due="2030-01-07 09:00", assignee="bob", actor=ACTOR)
    assert task.due_at == datetime(2030, 1, 7, 15, 0, tzinfo=UTC)  # 09:00 CST
    assert task.assignee == "bob"
    soon = app.add_task(cid, "Text the prep sheet", due="+2h", actor=ACTOR)
    assert soon.due_at is not None and timedelta(hours=1, minutes=59) < soon.due_at - datetime.now(UTC) <= timedelta(
        hours=2
    )
    with pytest.raises(ValueError, match="^due: not a time"):
        app.add_task(cid, "Call back", due="whenever", actor=ACTOR)
    with pytest.raises(ValueError, match="^due: naive datetime"):
        app.add_task(cid, "Call back", due=datetime(2030, 1, 7, 9, 0), actor=ACTOR)


def test_task_list_filters_and_order(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    a = new_lead(app, "a", "+13125550142")
    b = new_lead(app, "b", "+13125550143")
    now = datetime(2030, 1, 7, 18, 0, tzinfo=UTC)
    late = app.add_task(a, "Overdue call", due=now - timedelta(hours=3), actor=CARLA)
    later = app.add_task(b, "Next week", due=now + timedelta(days=7), assignee="bob", actor=CARLA)
    undated = app.add_task(b, "Whenever", assignee="bob", actor=CARLA)
    rows = app.tasks(now=now, actor=CARLA)
    assert [t.id for t, _ in rows] == [late.id, later.id, undated.id]  # by due time, none last
    task, person = rows[0]
    assert (person.id, person.full_name, person.stage) == (a, "Maria Placeholder-a", "new_lead")
    assert task.text == "Overdue call"
    assert [t.id for t, _ in app.tasks(assignee="bob", actor=CARLA)] == [later.id, undated.id]
    assert [t.id for t, _ in app.tasks(assignee="carla", now=now, actor=CARLA)] == [late.id]
    assert [t.id for t, _ in app.tasks(overdue=True, now=now, actor=CARLA)] == [late.id]
    assert [t.id for t, _ in app.tasks(contact="+1 312 555 0143", actor=CARLA)] == [later.id, undated.id]
    assert app.tasks(assignee="nobody", actor=CARLA) == []
    # each contact shown is one audited read
    assert "tasks.read" in audit_actions(app, a) and "tasks.read" in audit_actions(app, b)


def test_complete_task(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = new_lead(app)
    task = app.add_task(cid, "Call back", due="+1d", actor=CARLA)
    done = app.complete_task(str(task.id), actor=CARLA)
    assert (done.status, done.completed_by, done.text) == ("done", "carla", "Call back")
    assert done.completed_at is not None
    assert app.tasks(actor=CARLA) == []
    assert [t.id for t, _ in app.tasks(status="done", actor=CARLA)] == [task.id]
    assert [t.status for t, _ in app.tasks(status=None, actor=CARLA)] == ["done"]
    kinds = [i.kind for i in app.timeline(cid, actor=CARLA).interactions]
    assert kinds[-2:] == ["task.created", "task.completed"]
    assert "task.complete" in audit_actions(app, cid)
    with pytest.raises(ValueError, match="already done"):
        app.complete_task(task.id, actor=CARLA)


def test_task_bad_input_names_the_field(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = new_lead(app)
    with pytest.raises(ValueError, match="^text: the task text is empty"):
        app.add_task(cid, "   ", actor=ACTOR)
    with pytest.raises(ValueError, match="^text: longer than 4000"):
        app.add_task(cid, "x" * 4001, actor=ACTOR)
    with pytest.raises(ValueError, match="^assignee: empty name"):
        app.add_task(cid, "Call back", assignee=" ", actor=ACTOR)
    with pytest.raises(ValueError, match="^assignee: control characters"):
        app.add_task(cid, "Call back", assignee="bob\nalice", actor=ACTOR)
    with pytest.raises(NotFound):
        app.add_task(uuid.uuid4(), "Call back", actor=ACTOR)
    with pytest.raises(ValueError, match="^status: unknown task status 'closed'; known: open, done"):
        app.tasks(status="closed", actor=ACTOR)
    with pytest.raises(ValueError, match="^overdue: only open tasks"):
        app.tasks(overdue=True, status="done", actor=ACTOR)
    with pytest.raises(ValueError, match="^task id: not a task id"):
        app.complete_task("42", actor=ACTOR)
    with pytest.raises(NotFound):
        app.complete_task(uuid.uuid4(), actor=ACTOR)


# --------------------------------------------------------------------------- assignment


def test_assign_sets_the_clear_owner_and_audits_it(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = new_lead(app)
    before = len(app.timeline(cid, actor=LEAD).interactions)
    contact = app.assign("+13125550142", "carla", actor=LEAD)
    assert contact.owner == "carla" and contact.id == cid
    assert app.get_contact(cid, actor=LEAD).owner == "carla"
    assert app.get_contact(cid, actor=LEAD).version == contact.version
    entries = [e for e in app.audit_log(limit=500, contact_id=cid) if e.action == "contact.assign"]
    assert [e.details for e in entries] == [{"from": None, "to": "carla"}]
    # the same owner again changes nothing and records nothing
    app.assign(cid, "carla", actor=LEAD)
    app.assign(cid, "bob", actor=LEAD)
    app.assign(cid, None, actor=LEAD)
    entries = [e.details for e in app.audit_log(limit=500, contact_id=cid) if e.action == "contact.assign"]
    assert entries == [{"from": None, "to": "carla"}, {"from": "carla", "to": "bob"}, {"from": "bob", "to": None}]
    assert app.get_contact(cid, actor=LEAD).owner is None
    # not an interaction with the person: the timeline is unchanged
    assert len(app.timeline(cid, actor=LEAD).interactions) == before
    with pytest.raises(ValueError, match="^owner: longer than 100"):
        app.assign(cid, "x" * 101, actor=LEAD)


def test_assign_retries_when_another_writer_got_in_first(
    make_app: Callable[..., CareCRM], monkeypatch: pytest.MonkeyPatch
) -> None:
    app = make_app()
    cid = new_lead(app)
    real_unit_of_work = app.storage.unit_of_work
    lost: list[int] = []

    class Contacts:
        """The contacts of a unit of work whose first update loses the optimistic race."""

        def __init__(self, inner: Any) -> None:
            self.inner = inner

        def update(self, record: Any) -> Any:
            if not lost:
                lost.append(record.version)
                raise ConflictError("the stored version moved on")
            return self.inner.update(record)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    class Unit:
        def __init__(self) -> None:
            self.inner = real_unit_of_work()

        def __enter__(self) -> Unit:
            self.inner.__enter__()
            return self

        def __exit__(self, *exc: Any) -> Any:
            return self.inner.__exit__(*exc)

        @property
        def contacts(self) -> Contacts:
            return Contacts(self.inner.contacts)

        def __getattr__(self, name: str) -> Any:
            return getattr(self.inner, name)

    monkeypatch.setattr(app.storage, "unit_of_work", Unit)
    contact = app.assign(cid, "carla", actor=ACTOR)
    monkeypatch.undo()
    assert lost and contact.owner == "carla" and app.get_contact(cid, actor=ACTOR).owner == "carla"
    assigned = [e.details for e in app.audit_log(limit=500, contact_id=cid) if e.action == "contact.assign"]
    assert assigned == [{"from": None, "to": "carla"}]  # the lost attempt left nothing behind


# --------------------------------------------------------------------------- logged interactions


def test_log_a_call_derives_the_channel(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = new_lead(app)
    recorder = Recorder()
    app.pm.register(recorder)
    call = app.log_interaction(cid, kind="call.completed", direction="outbound", body="booked the consult", actor=CARLA)
    assert (call.channel, call.direction, call.source, call.actor) == ("phone", "outbound", "carecrm", "carla")
    assert app.timeline(cid, actor=CARLA).interactions[-1].body == "booked the consult"
    assert [e.kind for e in recorder.events if isinstance(e, ev.InteractionRecorded)] == ["call.completed"]
    text = app.log_interaction(cid, kind="sms.sent", occurred_at="-20m", actor=CARLA)
    assert (text.channel, text.direction) == ("sms", "outbound")
    assert timedelta(minutes=19) < datetime.now(UTC) - text.occurred_at < timedelta(minutes=21)
    walk_in = app.log_interaction(cid, kind="walk_in.visited", actor=CARLA)
    assert (walk_in.channel, walk_in.direction) == ("in_person", "inbound")
    assert "interaction.log" in audit_actions(app, cid)


def test_a_logged_booking_moves_the_stage_like_an_ingested_one(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    recorder = Recorder()
    app.pm.register(recorder)
    cid = new_lead(app)
    app.log_interaction(cid, kind="appointment.booked", attributes={"appointment_type": "consult"}, actor=ACTOR)
    assert app.get_contact(cid, actor=ACTOR).stage == "consult_scheduled"
    history = app.stage_history(cid)
    assert history[-1].to_stage == "consult_scheduled" and history[-1].implied_by is not None
    assert any(isinstance(e, ev.StageChanged) and e.to_stage == "consult_scheduled" for e in recorder.events)
    # a no-show logged for a booked patient does not move her backwards
    app.set_stage(cid, "booked_patient", actor=ACTOR)
    app.log_interaction(cid, kind="appointment.attended", attributes={"appointment_type": "consult"}, actor=ACTOR)
    assert app.get_contact(cid, actor=ACTOR).stage == "booked_patient"


def test_log_interaction_bad_input(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = new_lead(app)
    with pytest.raises(UnknownComponentError, match="unknown interaction kind 'call.dropped'; known: .*call.completed"):
        app.log_interaction(cid, kind="call.dropped", direction="outbound", actor=ACTOR)
    with pytest.raises(UnknownComponentError, match="unknown channel 'pigeon'; known: ad_platform, chat, ehr, email"):
        app.log_interaction(cid, kind="event.attended", channel="pigeon", actor=ACTOR)
    with pytest.raises(ValueError, match="^kind: note.added is recorded by add_note"):
        app.log_interaction(cid, kind="note.added", actor=ACTOR)
    with pytest.raises(ValueError, match="^direction: say whether the call was inbound or outbound"):
        app.log_interaction(cid, kind="call.missed", actor=ACTOR)
    with pytest.raises(ValueError, match="^direction: sms.sent is always outbound"):
        app.log_interaction(cid, kind="sms.sent", direction="inbound", actor=ACTOR)
    with pytest.raises(ValueError, match="^direction: expected inbound or outbound"):
        app.log_interaction(cid, kind="call.missed", direction="sideways", actor=ACTOR)
    with pytest.raises(ValueError, match="^occurred_at: in the future"):
        app.log_interaction(cid, kind="sms.sent", occurred_at="+1h", actor=ACTOR)
    with pytest.raises(ValueError, match="^attributes.note: longer than 100"):
        app.log_interaction(cid, kind="sms.sent", attributes={"note": "x" * 101}, actor=ACTOR)
    with pytest.raises(ValueError, match="^attributes.who: expected a string"):
        app.log_interaction(cid, kind="sms.sent", attributes={"who": ["a"]}, actor=ACTOR)


# --------------------------------------------------------------------------- speed to lead


def test_saturday_lead_called_monday_0830_has_thirty_minutes(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = new_lead(app)
    assert app.speed_to_lead(cid) is None  # nobody answered yet
    first = app.first_response(cid)
    assert first is not None and (first.first_inbound_at, first.first_outbound_at) == (SATURDAY, None)
    app.log_interaction(cid, kind="call.missed", direction="outbound", occurred_at=MONDAY_0830, actor=ACTOR)
    app.log_interaction(
        cid, kind="call.completed", direction="outbound", occurred_at=MONDAY_0830 + timedelta(hours=1), actor=ACTOR
    )
    assert app.speed_to_lead(cid) == 1800.0  # the first attempt counts, even unanswered
    first = app.first_response(cid)
    assert first is not None
    assert (first.first_outbound_at, first.location) == (MONDAY_0830, "downtown")
    assert first.wall_clock_seconds == (MONDAY_0830 - SATURDAY).total_seconds()


def test_what_counts_as_an_answer(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    # a nurture email sent before the inquiry is no answer to it; an opened email is the
    # person's action; the inbound call back is not an answer either
    earlier = InteractionDraft(
        kind="email.sent",
        occurred_at=SATURDAY - timedelta(days=30),
        idempotency_key="nurture-1",
        channel="email",
        direction="outbound",
    )
    opened = InteractionDraft(
        kind="email.opened",
        occurred_at=SATURDAY + timedelta(hours=1),
        idempotency_key="open-1",
        channel="email",
        direction="outbound",
    )
    cid = new_lead(app, more=(earlier, opened))
    app.log_interaction(
        cid, kind="call.completed", direction="inbound", occurred_at=chicago(2025, 10, 6, 9, 0), actor=ACTOR
    )
    assert app.speed_to_lead(cid) is None
    # an email sent by the email platform is (Tuesday 08:00: one business day)
    app.ingest(
        [
            LeadEvent(
                source="sendgrid",
                record_ref="sg-1",
                phones=("+13125550142",),
                name_confidence="low",
                interactions=(
                    InteractionDraft(
                        kind="email.sent",
                        occurred_at=chicago(2025, 10, 7, 8, 0),
                        idempotency_key="sg-1",
                        channel="email",
                        direction="outbound",
                    ),
                ),
            )
        ],
        actor=ACTOR,
    )
    assert app.speed_to_lead(cid) == 9 * 3600.0


def test_a_contact_who_never_reached_out_has_no_speed_to_lead(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    contact = app.add_contact(first_name="Walk", last_name="In", phones=["+13125550199"], actor=ACTOR)
    app.log_interaction(contact.id, kind="sms.sent", actor=ACTOR)
    assert app.first_response(contact.id) is None and app.speed_to_lead(contact.id) is None
    with pytest.raises(NotFound):
        app.speed_to_lead(uuid.uuid4())


def test_the_location_of_the_contact_decides_the_hours(make_app: Callable[..., CareCRM]) -> None:
    practice = {
        "name": "Lakeside Dermatology",
        "locations": [
            {"name": "downtown", "timezone": "America/Chicago", "business_hours": WEEKDAYS},
            {"name": "harbor", "timezone": "America/New_York", "business_hours": WEEKDAYS},
            {"name": "online", "timezone": "America/Chicago"},
        ],
    }
    app = make_app(practice=practice)
    chi = new_lead(app, "chi", "+13125550142")
    ny = new_lead(app, "ny", "+12125550143", location="harbor")
    web = new_lead(app, "web", "+13125550144", location="online")
    for cid in (chi, ny, web):
        app.log_interaction(cid, kind="call.completed", direction="outbound", occurred_at=MONDAY_0830, actor=ACTOR)
    assert app.speed_to_lead(chi) == 1800.0  # 08:30 in Chicago
    assert app.speed_to_lead(ny) == 5400.0  # 09:30 in New York
    assert app.speed_to_lead(web) == (MONDAY_0830 - SATURDAY).total_seconds()  # no hours: wall clock


def test_pipeline_report_and_summary_show_the_median(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    fast = new_lead(app, "fast", "+13125550142")
    slow = new_lead(app, "slow", "+13125550143")
    new_lead(app, "waiting", "+13125550144")
    contacted = new_lead(app, "contacted", "+13125550145")
    app.log_interaction(fast, kind="sms.sent", occurred_at=MONDAY_0830, actor=ACTOR)  # 30 min
    # 2 h 30 min
    app.log_interaction(slow, kind="email.sent", occurred_at=MONDAY_0830 + timedelta(hours=2), actor=ACTOR)
    app.log_interaction(
        contacted,
        kind="call.completed",
        direction="outbound",
        occurred_at=MONDAY_0830 + timedelta(hours=8),
        actor=ACTOR,
    )
    app.set_stage(contacted, "contacted", actor=ACTOR)
    rows = {r.stage: r for r in app.pipeline_report()}
    new = rows["new_lead"]
    assert new.count == 3
    assert (new.speed_to_lead.median_seconds, new.speed_to_lead.measured, new.speed_to_lead.awaiting) == (
        5400.0,
        2,
        1,
    )
    assert rows["contacted"].speed_to_lead.median_seconds == 8.5 * 3600  # 08:30 + 8 h = 16:30 Monday
    assert rows["booked_patient"].speed_to_lead.median_seconds is None
    overall = app.speed_to_lead_summary()
    assert (overall.median_seconds, overall.measured, overall.awaiting) == (2.5 * 3600, 3, 1)
    assert app.speed_to_lead_summary(stage="contacted").measured == 1
    with pytest.raises(ValueError, match="^stage: unknown stage 'hot'; known: new_lead"):
        app.speed_to_lead_summary(stage="hot")


def test_the_actor_is_whoever_the_caller_acts_as(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    cid = new_lead(app)
    dana = Actor.parse("dana:coordinator")
    assert app.add_task(cid, "Call back", actor=dana).assignee == "dana"
