"""``carecrm segment``: preview, save, list, show and delete through the command line, on a
Chicago practice made by ``carecrm init``, with the clock of the segment use cases fixed."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli
from carecrm.core import CareCRM, InteractionDraft, LeadEvent
from carecrm.core.model.domain import Actor

ACTOR = Actor.parse("tester:admin")

#: Saturday 15 June 2024, 12:00 CDT.
NOW = datetime(2024, 6, 15, 17, 0, tzinfo=UTC)


class Practice:
    """A practice made by ``carecrm init`` and a runner for it."""

    def __init__(self, root: Path) -> None:
        self.config = root / "carecrm.toml"
        self.runner = CliRunner()

    def run(self, *args: str) -> Result:
        env = {"CARECRM_CONFIG": str(self.config), "CARECRM_LOAD_PLUGINS": "", "NO_COLOR": "1"}
        return self.runner.invoke(cli, list(args), env=env)

    def ok(self, *args: str) -> Result:
        result = self.run(*args)
        assert result.exit_code == 0, (result.output, result.exception)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json").stdout)

    def usage_error(self, *args: str) -> str:
        result = self.run(*args)
        assert result.exit_code == 2, (result.output, result.exception)
        return result.stderr


def _lead(ref: str, service: str, city: str, *opens: datetime) -> LeadEvent:
    return LeadEvent(
        source="test",
        record_ref=ref,
        emails=(f"{ref}@example.com",),
        first_name="Pat",
        last_name=ref.capitalize(),
        service_interest=service,
        city=city,
        postal_code="60614",
        interactions=tuple(
            InteractionDraft(kind="email.opened", occurred_at=at, idempotency_key=f"{ref}:{at.isoformat()}")
            for at in opens
        ),
    )


@pytest.fixture
def practice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Practice:
    root = tmp_path / "practice"
    result = CliRunner().invoke(
        cli,
        ["init", "--dir", str(root), "--timezone", "America/Chicago"],
        env={"CARECRM_LOAD_PLUGINS": ""},
    )
    assert result.exit_code == 0, result.output
    with CareCRM.from_config(root / "carecrm.toml", load_entrypoints=False) as app:
        report = app.ingest(
            [
                _lead(
                    "maria",
                    "acne",
                    "Chicago",
                    datetime(2024, 4, 2, 13, tzinfo=UTC),
                    datetime(2024, 5, 7, 13, tzinfo=UTC),
                ),
                _lead("ben", "acne", "Evanston", datetime(2024, 1, 5, 13, tzinfo=UTC)),
                _lead("cora", "botox", "Chicago", datetime(2024, 6, 1, 13, tzinfo=UTC)),
                _lead("dev", "acne", "Chicago"),
            ],
            actor=ACTOR,
        )
        assert not report.quarantined
    monkeypatch.setattr("carecrm.core.analytics.segments_service.utcnow", lambda: NOW)
    return Practice(root)


def test_preview_had_email_opened_within_90_days(practice: Practice) -> None:
    flags = ("--stage", "new_lead", "--service-interest", "acne", "--city", "Chicago", "--had", "email.opened:90")
    out = practice.ok("segment", "preview", *flags).stdout
    assert out.startswith(
        "1 contact match: stage new_lead; service interest acne; city Chicago; had email.opened within 90 days "
        "(as of 2024-06-15 17:00:00Z)"
    )
    assert "Pat Maria" in out and "Pat Dev" not in out
    doc = practice.json("segment", "preview", *flags)
    assert (doc["count"], doc["shown"], doc["at"]) == (1, 1, "2024-06-15T17:00:00.000Z")
    assert doc["contacts"][0]["name"] == "Pat Maria"
    assert doc["contacts"][0]["city"] == "Chicago"
    # the window began at local midnight 90 days before today in Chicago (CDT, UTC-5)
    assert doc["criteria"]["all"][-1] == {
        "had": {"kinds": ["email.opened"], "since": "2024-03-17T05:00:00.000Z", "until": None}
    }


def test_preview_repeated_flags_limit_and_count_only(practice: Practice) -> None:
    doc = practice.json("segment", "preview", "--city", "Chicago", "--city", "Evanston", "--limit", "2")
    assert (doc["count"], doc["shown"]) == (4, 2)
    out = practice.ok("segment", "preview", "--city", "Chicago", "--city", "Evanston", "--limit", "2").stdout
    assert "(showing the first 2; raise --limit to see more)" in out
    doc = practice.json("segment", "preview", "--had", "email.opened,email.clicked:7", "--limit", "0")
    assert (doc["count"], doc["contacts"]) == (0, [])
    assert practice.ok("segment", "preview", "--service-interest", "mohs").stdout.startswith("0 contacts match")
    assert practice.json("segment", "preview", "--postal-prefix", "606")["count"] == 4
    assert practice.json("segment", "preview", "--score-min", "1000")["count"] == 0


def test_unknown_values_are_usage_errors_listing_the_known_ones(practice: Practice) -> None:
    err = practice.usage_error("segment", "preview", "--stage", "lead")
    assert "unknown stage 'lead'; known:" in err and "new_lead" in err
    err = practice.usage_error("segment", "preview", "--had", "email.open:30")
    assert "unknown interaction kind 'email.open'; known:" in err and "email.opened" in err
    err = practice.usage_error("segment", "preview", "--location", "harbor")
    assert "unknown location 'harbor'; known: main" in err
    err = practice.usage_error("segment", "preview", "--had", "email.opened")
    assert "expected KIND:DAYS" in err
    err = practice.usage_error("segment", "preview", "--had", "email.opened:-3")
    assert "expected KIND:DAYS" in err
    err = practice.usage_error("segment", "preview", "--score-min", "9", "--score-max", "1")
    assert "'score_min': above score_max" in err
    err = practice.usage_error("segment", "preview", "--postal-prefix", "60614")
    assert "'postal_prefix'" in err and "60614" not in err
    assert "No such option" in practice.usage_error("segment", "preview", "--colour", "red")


def test_save_list_show_delete(practice: Practice) -> None:
    out = practice.ok("segment", "save", "acne-openers", "--service-interest", "acne", "--had", "email.opened:90")
    assert out.stdout.strip() == "segment 'acne-openers' saved: service interest acne; had email.opened within 90 days"
    err = practice.usage_error("segment", "save", "acne-openers", "--city", "Chicago")
    assert "exists" in err and "--replace" in err
    practice.ok("segment", "save", "chicago", "--city", "Chicago")
    rows = practice.json("segment", "list")
    assert [r["name"] for r in rows] == ["acne-openers", "chicago"]
    assert rows[0]["spec"] == {"service_interest": ["acne"], "had": [{"kinds": ["email.opened"], "within_days": 90}]}
    assert rows[0]["builder"] == "basic"
    assert "acne-openers" in practice.ok("segment", "list").stdout
    doc = practice.json("segment", "show", "acne-openers")
    assert doc["segment"]["name"] == "acne-openers"
    assert [c["name"] for c in doc["contacts"]] == ["Pat Maria"]
    out = practice.ok("segment", "show", "acne-openers").stdout
    assert "Segment acne-openers" in out and "1 contact match" in out
    practice.ok("segment", "save", "acne-openers", "--city", "Evanston", "--replace")
    assert practice.json("segment", "show", "acne-openers")["count"] == 1
    assert practice.ok("segment", "delete", "acne-openers").stdout.strip() == "segment 'acne-openers' deleted"
    assert "not found" in practice.usage_error("segment", "show", "acne-openers")
    assert "not found" in practice.usage_error("segment", "delete", "acne-openers")
    assert [r["name"] for r in practice.json("segment", "list")] == ["chicago"]
