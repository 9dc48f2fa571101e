"""``carecrm attribute``: tables, JSON, options and errors, on a practice made by
``carecrm init`` (America/Chicago) and filled through the facade."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli
from carecrm.core import CareCRM, InteractionDraft, LeadEvent, Touchpoint
from carecrm.core.model.domain import Actor
from carecrm.core.model.timeutil import utcnow

ACTOR = Actor.parse("tester:admin")


class Practice:
    def __init__(self, root: Path) -> None:
        self.config = root / "carecrm.toml"

    def run(self, *args: str) -> Result:
        env = {"CARECRM_CONFIG": str(self.config), "CARECRM_LOAD_PLUGINS": "", "NO_COLOR": "1"}
        return CliRunner().invoke(cli, list(args), env=env)

    def ok(self, *args: str) -> str:
        result = self.run(*args)
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))


def _lead(email: str, n: int, kind: str, when: datetime, tp: Touchpoint | None) -> LeadEvent:
    draft = InteractionDraft(kind=kind, occurred_at=when, idempotency_key=f"k{n}", touchpoint=tp)
    return LeadEvent(source="test", record_ref=f"r{n}", emails=(email,), interactions=(draft,))


@pytest.fixture
def practice(tmp_path: Path) -> Practice:
    root = tmp_path / "practice"
    result = CliRunner().invoke(
        cli,
        ["init", "--dir", str(root), "--timezone", "America/Chicago"],
        env={"CARECRM_LOAD_PLUGINS": ""},
    )
    assert result.exit_code == 0, result.output
    app = CareCRM.from_config(root / "carecrm.toml", load_entrypoints=False)
    now = utcnow()
    google = Touchpoint(source="google", medium="cpc", campaign="spring-acne")
    with app:
        app.ingest(
            [
                _lead("ana@example.com", 1, "form.submitted", now - timedelta(days=200), google),
                _lead("ana@example.com", 2, "call.completed", now - timedelta(days=30), None),
                _lead("ben@example.com", 3, "form.submitted", now - timedelta(days=9), google),
                _lead("old@example.com", 4, "form.submitted", now - timedelta(days=500), google),
                # Mar 1 2026, 01:00 in Chicago; never booked
                _lead("march@example.com", 5, "chat.started", datetime(2026, 3, 1, 7, tzinfo=UTC), None),
            ],
            actor=ACTOR,
        )
        for email in ("ana@example.com", "ben@example.com", "old@example.com"):
            app.set_stage(email, "booked_patient", actor=ACTOR)
    return Practice(root)


def test_table_by_channel_group(practice: Practice) -> None:
    out = practice.ok("attribute", "--model", "linear")
    assert "Attribution: linear by channel_group, step booked_patient, lookback 365 days" in out
    assert "paid_search" in out and "1.50" in out and "75.0%" in out
    assert "direct" in out and "0.50" in out and "25.0%" in out
    assert "conversions: 3 (2 credited over 3 touches, 1 with no touch in the 365-day window)" in out
    assert "@example.com" not in out


def test_json_report(practice: Practice) -> None:
    report = practice.json("attribute", "--model", "last_touch", "--by", "campaign")
    assert report["model"] == "last_touch" and report["by"] == "campaign" and report["step"] == "booked_patient"
    assert report["rows"] == [
        {"key": "(not set)", "credit": 1.0, "share": 0.5, "conversions": 1},
        {"key": "spring-acne", "credit": 1.0, "share": 0.5, "conversions": 1},
    ]
    assert (report["conversions"], report["conversions_touched"], report["conversions_without_touch"]) == (3, 2, 1)
    assert report["lookback_days"] == 365 and report["since"] is None and report["until"] is None


def test_defaults_are_first_touch_by_channel_group(practice: Practice) -> None:
    report = practice.json("attribute")
    assert (report["model"], report["by"]) == ("first_touch", "channel_group")
    assert {r["key"]: r["credit"] for r in report["rows"]} == {"paid_search": 2.0}


def test_lookback_step_since_and_until(practice: Practice) -> None:
    wide = practice.json("attribute", "--by", "source", "--lookback", "600")
    assert {r["key"]: r["credit"] for r in wide["rows"]} == {"google": 3.0}
    lead = practice.json("attribute", "--step", "lead", "--since", "2026-03-01", "--until", "2026-03-01")
    assert lead["conversions"] == 1 and lead["rows"][0]["key"] == "direct"
    assert lead["since"] == "2026-03-01T06:00:00.000Z" and lead["until"] == "2026-03-02T06:00:00.000Z"
    # a date and time without offset is read in the practice's time zone
    on_time = practice.json("attribute", "--step", "lead", "--since", "2026-03-01T01:00", "--until", "2026-03-01")
    later = practice.json("attribute", "--step", "lead", "--since", "2026-03-01T01:00:01", "--until", "2026-03-01")
    assert (on_time["conversions"], later["conversions"]) == (1, 0)
    out = practice.ok("attribute", "--step", "lead", "--since", "2026-02-01", "--until", "2026-03-31")
    assert "conversions from 2026-02-01 00:00:00 CST to before 2026-04-01 00:00:00 CDT" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--model", "u_shaped"], "unknown attribution model 'u_shaped'; known: first_touch, last_non_direct"),
        (["--step", "booked"], "unknown conversion step 'booked'; known: booked_patient, consult_attended"),
        (["--by", "medium"], "'medium' is not one of 'channel_group', 'source', 'campaign'"),
        (["--lookback", "0"], "lookback_days: must be a whole number of days from 1 to 3650"),
        (["--since", "last tuesday"], "Invalid value for --since: expected an ISO date (2025-03-01)"),
        (["--since", "2026-03-02", "--until", "2026-03-01"], "since: must be before until"),
    ],
)
def test_bad_input_exits_2_with_the_reason(practice: Practice, args: list[str], message: str) -> None:
    result = practice.run("attribute", *args)
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_an_empty_practice(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    assert CliRunner().invoke(cli, ["init", "--dir", str(root)], env={"CARECRM_LOAD_PLUGINS": ""}).exit_code == 0
    out = Practice(root).ok("attribute")
    assert "none" in out and "conversions: 0 (0 credited over 0 touches" in out
