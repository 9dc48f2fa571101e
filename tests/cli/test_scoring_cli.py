"""``carecrm score top|show|recompute``: tables, JSON, options and errors, on a practice
made by ``carecrm init`` (America/Chicago) and filled through the facade."""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli
from carecrm.cli.output import format_local
from carecrm.core import CareCRM, InteractionDraft, LeadEvent
from carecrm.core.model.domain import Actor
from carecrm.core.model.timeutil import isoformat_z, utcnow

ACTOR = Actor.parse("tester:admin")

#: Ana's call back: her latest touch (a fixed time of day, read in America/Chicago).
CALL = (utcnow() - timedelta(days=2)).replace(hour=15, minute=30, second=0, microsecond=0)
CALL_LOCAL = format_local(CALL, "America/Chicago")


class Practice:
    def __init__(self, root: Path) -> None:
        self.root = root
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

    def app(self) -> CareCRM:
        return CareCRM.from_config(self.config, load_entrypoints=False)


def _lead(email: str, phone: str, name: str, *drafts: tuple[str, datetime, dict[str, Any]]) -> LeadEvent:
    first, last = name.split()
    return LeadEvent(
        source="web",
        record_ref=email,
        emails=(email,),
        phones=(phone,),
        first_name=first,
        last_name=last,
        interactions=tuple(
            InteractionDraft(kind=kind, occurred_at=when, idempotency_key=f"{email}:{i}", attributes=attrs)
            for i, (kind, when, attrs) in enumerate(drafts)
        ),
    )


@pytest.fixture
def practice(tmp_path: Path) -> Practice:
    root = tmp_path / "practice"
    result = CliRunner().invoke(
        cli, ["init", "--dir", str(root), "--timezone", "America/Chicago"], env={"CARECRM_LOAD_PLUGINS": ""}
    )
    assert result.exit_code == 0, result.output
    p = Practice(root)
    now = utcnow()
    with p.app() as app:
        app.ingest(
            [
                _lead(
                    "ana@example.com",
                    "+13125550142",
                    "Ana Placeholder",
                    ("form.submitted", now - timedelta(days=190), {}),
                    ("email.opened", now - timedelta(days=150), {"machine_open": True}),
                    ("email.opened", now - timedelta(days=120), {"machine_open": False}),
                    ("call.completed", CALL, {}),
                ),
                _lead("ben@example.com", "+13125550143", "Ben Example", ("form.submitted", now, {})),
                _lead("cy@example.com", "+13125550144", "Cy Sample", ("email.clicked", now - timedelta(days=1), {})),
            ],
            actor=ACTOR,
        )
    return p


def test_score_top_lists_who_to_call_first(practice: Practice) -> None:
    out = practice.ok("score", "top")
    assert "Who to call first" in out
    assert out.index("Ana") < out.index("Ben Example") < out.index("Cy Sample")  # highest first
    assert "+13125550142" in out and "new_lead" in out
    assert CALL_LOCAL in out  # Ana's last touch, in the location's time zone


def test_score_top_json_limit_and_stage(practice: Practice) -> None:
    rows = practice.json("score", "top", "--limit", "2")
    assert [r["rank"] for r in rows] == [1, 2]
    assert [r["name"] for r in rows] == ["Ana Placeholder", "Ben Example"]
    assert rows[0]["phones"] == ["+13125550142"] and rows[0]["emails"] == ["ana@example.com"]
    assert rows[0]["score"] > rows[1]["score"] == 10
    assert rows[0]["last_touch"] == isoformat_z(CALL)
    assert rows[0]["computed_at"].endswith("Z")
    practice.ok("stage", "set", "ben@example.com", "contacted")
    assert [r["name"] for r in practice.json("score", "top", "--stage", "contacted")] == ["Ben Example"]
    assert practice.json("score", "top", "--stage", "booked_patient") == []
    assert "Who to call first: none" in practice.ok("score", "top", "--stage", "booked_patient")


def test_score_show_explains_each_reason(practice: Practice) -> None:
    out = practice.ok("score", "show", "ana@example.com")
    assert "Ana Placeholder" in out and "(points)" in out
    assert "form.submitted (first time)" in out and "10" in out
    assert "call.completed" in out and CALL_LOCAL in out
    assert len([line for line in out.splitlines() if "email.opened" in line]) == 1  # not the machine open
    doc = practice.json("score", "show", "+1 312 555 0142")
    assert doc["contact"]["full_name"] == "Ana Placeholder"
    score = doc["score"]
    assert score["model"] == "points" and score["computed_at"].endswith("Z")
    assert [r["kind"] for r in score["reasons"]] == ["form.submitted", "email.opened", "call.completed"]
    assert set(score["reasons"][0]) == {"rule", "kind", "points", "interaction_id", "occurred_at"}
    assert score["score"] == pytest.approx(sum(r["points"] for r in score["reasons"]), abs=0.02)


def test_score_recompute_reports_the_count(practice: Practice) -> None:
    assert practice.ok("score", "recompute").strip() == "rescored 3 contacts with the points model"
    assert practice.json("score", "recompute") == {"model": "points", "rescored": 3}


def test_score_errors_exit_2_with_a_clear_message(practice: Practice) -> None:
    result = practice.run("score", "show", "nobody@example.com")
    assert result.exit_code == 2 and "not found" in result.stderr
    result = practice.run("score", "top", "--stage", "hot")
    assert result.exit_code == 2 and "unknown stage 'hot'; known: new_lead" in result.stderr
    result = practice.run("score", "top", "--limit", "0")
    assert result.exit_code == 2
    with practice.config.open("a", encoding="utf-8") as f:
        f.write('\n[scoring]\nmodel = "ml"\n')
    result = practice.run("score", "top")
    assert result.exit_code == 2 and "unknown scoring model 'ml'; known: points" in result.stderr


def test_bad_rules_in_config_exit_2_naming_the_field(practice: Practice) -> None:
    with practice.config.open("a", encoding="utf-8") as f:
        f.write('\n[[scoring.rules]]\nkind = "form.submitted"\npoints = "ten"\n')
    result = practice.run("score", "recompute")
    assert result.exit_code == 2
    assert "scoring.rules[0].points: must be a number" in result.stderr
