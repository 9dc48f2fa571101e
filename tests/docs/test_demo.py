"""The worked example end to end through the CLI (`carecrm demo`), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli


class Demo:
    """A demo folder and a runner for commands inside it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runner = CliRunner()

    def run(self, *args: str) -> Result:
        env = {"CARECRM_CONFIG": str(self.root / "carecrm.toml"), "NO_COLOR": "1", "CARECRM_ACTOR": "carla:coordinator"}
        return self.runner.invoke(cli, list(args), env=env)

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads(result.stdout)


def _tell_the_story(tmp_path: Path, storage: str | None) -> Demo:
    root = tmp_path / "carecrm-demo"
    args = ["demo", "--dir", str(root)] + (["--storage", storage] if storage else [])
    result = CliRunner().invoke(cli, args, env={"NO_COLOR": "1"})
    assert result.exit_code == 0, (result.output, result.exception)
    out = result.output
    assert "Maria Placeholder" in out and "spring-acne: 1.00" in out
    assert "stubborn acne" in out  # the original inquiry's text, decrypted for the coordinator
    return Demo(root)


def _check_the_story(demo: Demo) -> None:
    # the contact found by the phone as she called from it, one timeline
    timeline = demo.json("timeline", "(312) 555-0142")
    kinds = [i["kind"] for i in timeline["interactions"]]
    assert kinds.count("form.submitted") == 1 and kinds.count("email.opened") == 2 and "call.completed" in kinds
    form = next(i for i in timeline["interactions"] if i["kind"] == "form.submitted")
    assert form["campaign"] == "spring-acne" and "stubborn acne" in form["body"]
    assert form["touchpoint"]["gclid"] and form["touchpoint"]["source"] == "google"
    assert form["touchpoint"]["medium"] == "cpc" and form["channel_group"] == "paid_search"
    call = next(i for i in timeline["interactions"] if i["kind"] == "call.completed")
    assert call["occurred_at"].endswith("Z") and call["source"] == "callrail"
    # CallRail's caller ID did not split the call off or rename her
    contact = timeline["contact"]
    assert (contact["first_name"], contact["last_name"]) == ("Maria", "Placeholder")
    assert len(demo.json("contacts", "find", "--phone", "+13125550142")) == 1
    assert contact["stage"] == "booked_patient"
    # the consult was booked with a task, then attended, then treatment booked
    stages = [s["to_stage"] for s in demo.json("contacts", "show", "maria.placeholder@example.com")["stage_history"]]
    assert stages[-3:] == ["consult_scheduled", "consult_attended", "booked_patient"]
    tasks = demo.json("task", "list", "--all")
    assert len(tasks) == 1
    # first-touch attribution by campaign credits spring-acne
    report = demo.json("attribute", "--model", "first_touch", "--by", "campaign", "--lookback", "800")
    rows = {r["key"]: r["credit"] for r in report["rows"]}
    assert rows == {"spring-acne": pytest.approx(1.0)}


def test_the_story_on_sqlite(tmp_path: Path) -> None:
    demo = _tell_the_story(tmp_path, None)
    _check_the_story(demo)
    # a second run refuses to clobber the folder unless asked
    again = CliRunner().invoke(cli, ["demo", "--dir", str(demo.root)])
    assert again.exit_code == 2 and "--force" in again.output
    forced = CliRunner().invoke(cli, ["demo", "--dir", str(demo.root), "--force"])
    assert forced.exit_code == 0, forced.output


@pytest.mark.postgres
def test_the_story_on_postgresql(tmp_path: Path, postgres_url: str) -> None:
    demo = _tell_the_story(tmp_path, postgres_url)
    _check_the_story(demo)


@pytest.fixture
def mongomock_url() -> Iterator[str]:
    """A fresh in-process MongoDB (mongomock) for one story, dropped afterwards."""
    from carecrm.storage_backends.mongo.backend import forget_mock

    name = f"demo-{os.getpid()}-{id(object())}"
    yield f"mongomock://{name}"
    forget_mock(name)


def test_the_story_on_mongodb_mongomock(tmp_path: Path, mongomock_url: str) -> None:
    """The same story on the MongoDB backend: every CLI command runs in this process, so
    each sees the data of the ones before through the shared mongomock client."""
    demo = _tell_the_story(tmp_path, mongomock_url)
    _check_the_story(demo)
    info = demo.json("storage", "check")
    assert (info["backend"], info["schema_current"], info["indexes"]["ok"]) == ("mongo", True, True)
    assert info["counts"]["contacts"] == 1 and info["counts"]["interactions"] >= 8
    assert "advice" not in info
