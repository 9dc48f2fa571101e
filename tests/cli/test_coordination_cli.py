"""The coordinator's commands: ``task add/list/done``, ``contacts assign``, ``log call/sms/email``,
and speed to lead in ``contacts show`` and ``pipeline`` (click's CliRunner, in-process, on
a practice made by ``carecrm init`` with weekday business hours in America/Chicago)."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli

HOURS_LINE = '# business_hours = { mon = ["08:00", "17:00"], tue = ["08:00", "17:00"] }'
WEEKDAY_HOURS = (
    'business_hours = { mon = ["08:00", "17:00"], tue = ["08:00", "17:00"], wed = ["08:00", "17:00"], '
    'thu = ["08:00", "17:00"], fri = ["08:00", "17:00"] }'
)


class Practice:
    """A practice made by ``carecrm init`` and a runner acting as ``carla:coordinator``."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "carecrm.toml"
        self.runner = CliRunner()

    def run(self, *args: str, actor: str = "carla:coordinator") -> Result:
        env = {"CARECRM_CONFIG": str(self.config), "CARECRM_LOAD_PLUGINS": "", "NO_COLOR": "1"}
        return self.runner.invoke(cli, ["--as", actor, *args], env=env)

    def ok(self, *args: str, actor: str = "carla:coordinator") -> str:
        result = self.run(*args, actor=actor)
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout

    def json(self, *args: str, actor: str = "carla:coordinator") -> Any:
        return json.loads(self.ok(*args, "--json", actor=actor))

    def usage_error(self, *args: str) -> str:
        result = self.run(*args)
        assert result.exit_code == 2, (result.output, result.exception)
        return result.output


@pytest.fixture
def practice(tmp_path: Path) -> Practice:
    root = tmp_path / "practice"
    result = CliRunner().invoke(
        cli,
        ["init", "--dir", str(root), "--practice-name", "Lakeside Dermatology", "--timezone", "America/Chicago"],
        env={"CARECRM_LOAD_PLUGINS": ""},
    )
    assert result.exit_code == 0, result.output
    config = root / "carecrm.toml"
    text = config.read_text()
    assert HOURS_LINE in text
    config.write_text(text.replace(HOURS_LINE, WEEKDAY_HOURS))
    return Practice(root)


def add_contact(practice: Practice, phone: str, first: str = "Maria") -> str:
    doc = practice.json("contacts", "add", "--first-name", first, "--last-name", "Placeholder", "--phone", phone)
    return str(doc["contact"]["id"])


# --------------------------------------------------------------------------- tasks


def test_task_add_list_mine_overdue_done(practice: Practice) -> None:
    maria = add_contact(practice, "+13125550142")
    ben = add_contact(practice, "+13125550143", first="Ben")
    out = practice.ok("task", "add", maria, "Call back about the consult", "--due", "2030-01-07 09:00")
    assert "due 2030-01-07 09:00:00 CST" in out and "assigned to carla" in out
    mine = practice.json("task", "add", ben, "Send the forms", "--due", "+1d")
    late = practice.json("task", "add", "(312) 555-0143", "Overdue call", "--due", "-2h", "--assign", "bob")
    assert mine["assignee"] == "carla" and late["assignee"] == "bob" and late["overdue"] is True

    rows = practice.json("task", "list")
    assert [r["text"] for r in rows] == ["Overdue call", "Send the forms", "Call back about the consult"]
    assert rows[0]["contact"] == {
        "id": ben,
        "full_name": "Ben Placeholder",
        "stage": "new_lead",
        "owner": None,
        "location": "main",
    }
    assert rows[2]["due_at"] == "2030-01-07T15:00:00.000Z"
    # --mine is the acting --as name
    assert [r["text"] for r in practice.json("task", "list", "--mine")] == [
        "Send the forms",
        "Call back about the consult",
    ]
    assert [r["text"] for r in practice.json("task", "list", "--mine", actor="bob")] == ["Overdue call"]
    assert [r["text"] for r in practice.json("task", "list", "--assignee", "bob")] == ["Overdue call"]
    assert [r["text"] for r in practice.json("task", "list", "--overdue")] == ["Overdue call"]
    assert [r["text"] for r in practice.json("task", "list", "--contact", maria)] == ["Call back about the consult"]

    human = practice.ok("task", "list")
    assert "Open tasks" in human and "Ben" in human and "overdue" in human and "2030-01-07 09:00 CST" in human
    assert "Open tasks of carla" in practice.ok("task", "list", "--mine")

    assert f"task {late['id']} done (by bob)" in practice.ok("task", "done", late["id"], actor="bob")
    assert practice.json("task", "list", "--overdue") == []
    everything = practice.json("task", "list", "--all")
    assert {r["status"] for r in everything} == {"open", "done"} and len(everything) == 3
    done = next(r for r in everything if r["id"] == late["id"])
    assert done["completed_by"] == "bob" and done["overdue"] is False
    assert "already done" in practice.usage_error("task", "done", late["id"])

    kinds = [i["kind"] for i in practice.json("timeline", ben)["interactions"]]
    assert kinds == ["task.created", "task.created", "task.completed"]


def test_task_bad_input_exits_2(practice: Practice) -> None:
    maria = add_contact(practice, "+13125550142")
    assert "due: not a time" in practice.usage_error("task", "add", maria, "Call", "--due", "someday")
    assert "Missing option '--due'" in practice.usage_error("task", "add", maria, "Call")
    assert "text: the task text is empty" in practice.usage_error("task", "add", maria, " ", "--due", "+1h")
    assert "not found" in practice.usage_error("task", "add", "+13125550199", "Call", "--due", "+1h")
    assert "task id: not a task id" in practice.usage_error("task", "done", "42")
    assert "not found" in practice.usage_error("task", "done", "0191f3a0-0000-7000-8000-000000000000")
    assert "--mine or --assignee" in practice.usage_error("task", "list", "--mine", "--assignee", "bob")
    assert "leave out --all" in practice.usage_error("task", "list", "--overdue", "--all")


# --------------------------------------------------------------------------- assignment


def test_contacts_assign(practice: Practice) -> None:
    maria = add_contact(practice, "+13125550142")
    assert practice.json("contacts", "assign", maria, "carla") == {"contact_id": maria, "owner": "carla"}
    assert practice.json("contacts", "show", maria)["contact"]["owner"] == "carla"
    assert "owner: carla" not in practice.ok("contacts", "assign", maria, "bob")
    assert practice.json("contacts", "show", maria)["contact"]["owner"] == "bob"
    assert f"contact {maria}: owner (none)" in practice.ok("contacts", "assign", maria, "--clear")
    assert "give NAME or --clear" in practice.usage_error("contacts", "assign", maria)
    assert "give NAME or --clear" in practice.usage_error("contacts", "assign", maria, "bob", "--clear")
    log = practice.json("audit", "log", "--contact", maria, "--limit", "100")
    assert [e["details"] for e in log if e["action"] == "contact.assign"] == [
        {"from": None, "to": "carla"},
        {"from": "carla", "to": "bob"},
        {"from": "bob", "to": None},
    ]


# --------------------------------------------------------------------------- logging and speed to lead


def test_log_call_and_speed_to_lead_in_show_and_pipeline(practice: Practice) -> None:
    maria = add_contact(practice, "+13125550142")
    waiting = add_contact(practice, "+13125550143", first="Ben")
    # she called in on Saturday; carla called back on Monday at 08:30 (Chicago)
    practice.ok("log", "call", maria, "--outcome", "missed", "--direction", "inbound", "--at", "2025-10-04 10:00")
    practice.ok("log", "call", waiting, "--outcome", "voicemail", "--direction", "inbound", "--at", "2025-10-06 09:00")
    out = practice.ok(
        "log", "call", maria, "--outcome", "completed", "--note", "booked the consult", "--at", "2025-10-06 08:30"
    )
    assert "call.completed (outbound) logged" in out and "2025-10-06 08:30:00 CDT" in out

    show = practice.json("contacts", "show", maria)
    assert show["speed_to_lead_seconds"] == 1800.0
    assert show["speed_to_lead"]["first_inbound_at"] == "2025-10-04T15:00:00.000Z"
    assert show["speed_to_lead"]["first_outbound_at"] == "2025-10-06T13:30:00.000Z"
    assert show["speed_to_lead"]["wall_clock_seconds"] == 46.5 * 3600
    human = practice.ok("contacts", "show", maria)
    assert "speed to lead" in human and "30m of business hours" in human
    waiting_show = practice.json("contacts", "show", waiting)
    assert waiting_show["speed_to_lead_seconds"] is None
    assert waiting_show["speed_to_lead"]["first_outbound_at"] is None
    assert "awaiting a first response since 2025-10-06 09:00:00 CDT" in practice.ok("contacts", "show", waiting)

    rows = {r["stage"]: r for r in practice.json("pipeline")}
    new = rows["new_lead"]
    assert new["count"] == 2 and new["speed_to_lead_median_seconds"] == 1800.0
    assert new["speed_to_lead_median"] == "30m" and new["speed_to_lead_measured"] == 1
    assert new["awaiting_first_response"] == 1
    pipeline = practice.ok("pipeline")
    assert "median speed to lead" in pipeline and "total: 2 contacts" in pipeline
    assert "speed to lead (business hours): median 30m over 1 answered leads; 1 awaiting a first response" in pipeline


def test_log_sms_and_email_count_as_answers(practice: Practice) -> None:
    maria = add_contact(practice, "+13125550142")
    practice.ok("log", "call", maria, "--outcome", "completed", "--direction", "inbound", "--at", "2025-10-06 16:00")
    practice.ok("log", "email", maria, "--note", "the prep sheet", "--at", "2025-10-07 08:30")
    practice.ok("log", "sms", maria, "--at", "2025-10-07 09:00")
    assert practice.json("contacts", "show", maria)["speed_to_lead_seconds"] == 1.5 * 3600
    items = practice.json("timeline", maria)["interactions"]
    assert [(i["kind"], i["channel"], i["direction"]) for i in items] == [
        ("call.completed", "phone", "inbound"),
        ("email.sent", "email", "outbound"),
        ("sms.sent", "sms", "outbound"),
    ]
    assert items[1]["body"] == "the prep sheet"


def test_log_bad_input_exits_2(practice: Practice) -> None:
    maria = add_contact(practice, "+13125550142")
    assert "Invalid value for '--outcome'" in practice.usage_error("log", "call", maria, "--outcome", "dropped")
    tomorrow = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%d %H:%M")
    assert "occurred_at: in the future" in practice.usage_error("log", "sms", maria, "--at", tomorrow)
    assert "occurred_at: not a time" in practice.usage_error("log", "sms", maria, "--at", "yesterday-ish")


def test_contacts_show_lists_open_tasks(practice: Practice) -> None:
    maria = add_contact(practice, "+13125550142")
    practice.ok("task", "add", maria, "Send the acne questionnaire", "--due", "tomorrow 09:00")
    doc = practice.json("contacts", "show", maria)
    assert [t["text"] for t in doc["tasks"]] == ["Send the acne questionnaire"]
    assert doc["speed_to_lead"] is None and doc["speed_to_lead_seconds"] is None
    human = practice.ok("contacts", "show", maria)
    assert "Open tasks" in human and "Send the acne questionnaire" in human and "never reached out" in human
