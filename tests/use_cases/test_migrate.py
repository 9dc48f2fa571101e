"""`carecrm storage migrate-to URL`: the demo practice copied SQLite → MongoDB (mongomock)
→ a new SQLite file, and SQLite → PostgreSQL, through the CLI; everything stored must
come across unchanged and the copy must work with the same key file."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli
from carecrm.core import CareCRM
from carecrm.core.errors import MigrationError, UnknownComponentError
from carecrm.core.model.domain import Actor, ConsentSignal, LeadEvent
from carecrm.core.storage.contract import RECORD_KINDS

ACTOR = Actor.parse("tester:admin")

MARIA_PHONE = "(312) 555-0142"
MARIA_EMAIL = "maria.placeholder@example.com"


class Practice:
    """The demo folder, and CLI commands run in it against a chosen storage URL."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runner = CliRunner()

    def run(self, *args: str, url: str | None = None) -> Result:
        env = {"CARECRM_CONFIG": str(self.root / "carecrm.toml"), "NO_COLOR": "1", "CARECRM_ACTOR": "carla:coordinator"}
        if url is not None:
            env["CARECRM_STORAGE_URL"] = url
        return self.runner.invoke(cli, list(args), env=env)

    def json(self, *args: str, url: str | None = None) -> Any:
        result = self.run(*args, "--json", url=url)
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads(result.stdout)

    def app(self, url: str | None = None) -> CareCRM:
        """The practice's app, on ``url`` when given (as ``CARECRM_STORAGE_URL`` does)."""
        with pytest.MonkeyPatch.context() as mp:
            if url is not None:
                mp.setenv("CARECRM_STORAGE_URL", url)
            return CareCRM.from_config(self.root / "carecrm.toml", load_entrypoints=False)


@pytest.fixture
def practice(tmp_path: Path) -> Practice:
    root = tmp_path / "practice"
    result = CliRunner().invoke(cli, ["demo", "--dir", str(root)], env={"NO_COLOR": "1"})
    assert result.exit_code == 0, (result.output, result.exception)
    done = Practice(root)
    # the demo records no consent: Maria grants email marketing, with evidence (encrypted)
    signal = ConsentSignal(
        contact_point_kind="email",
        channel="email",
        purpose="marketing",
        status="granted",
        idempotency_key="consent:migrate-test",
        occurred_at=datetime(2026, 4, 2, 15, 0, tzinfo=UTC),
        evidence={"text": "Yes, send me offers"},
    )
    with done.app() as app:
        report = app.ingest(
            [LeadEvent(source="typeform", record_ref="consent-1", emails=(MARIA_EMAIL,), consents=(signal,))],
            actor=ACTOR,
        )
    assert not report.quarantined and not report.warnings, report
    return done


@pytest.fixture
def mongomock_url() -> Iterator[str]:
    from carecrm.storage_backends.mongo.backend import forget_mock

    name = f"migrate-{os.getpid()}-{id(object())}"
    yield f"mongomock://{name}"
    forget_mock(name)


def _stored(app: CareCRM, url: str) -> dict[str, list[Any]]:
    """Every stored record of every kind at ``url``, as stored (ciphertext included)."""
    backend = app.open_backend(url, {})
    try:
        with backend.unit_of_work() as uow:
            return {kind: list(uow.export_records(kind)) for kind in RECORD_KINDS}
    finally:
        backend.close()


def _views(practice: Practice, url: str | None) -> dict[str, Any]:
    """What people see (decrypted) about the demo practice at ``url``."""
    timeline = practice.json("timeline", MARIA_PHONE, "--limit", "500", url=url)
    shown = practice.json("contacts", "show", MARIA_EMAIL, url=url)
    with practice.app(url) as app:
        contact = app.resolve(MARIA_EMAIL, actor=ACTOR)
        with app.storage.unit_of_work() as uow:
            consents = uow.consents.for_contact(contact.id)
        history = app.stage_history(contact.id)
    return {
        "interactions": timeline["interactions"],
        "contact": timeline["contact"],
        "stage_history": shown["stage_history"],
        "stages": [(s.from_stage, s.to_stage, s.changed_at) for s in history],
        "consents": consents,
        "counts": practice.json("storage", "check", url=url)["counts"],
        "tasks": practice.json("task", "list", "--all", url=url),
    }


def test_sqlite_to_mongodb_and_back(practice: Practice, mongomock_url: str, tmp_path: Path) -> None:
    with practice.app() as app:
        source_url = app.settings.storage_url
    before = _stored(practice.app(), source_url)
    assert before["contacts"] and before["interactions"] and before["audit_log"]

    # SQLite → MongoDB: every kind copied, counts equal, nothing changed on the way
    moved = practice.json("storage", "migrate-to", mongomock_url)
    assert moved["ok"] is True and set(moved["counts"]) == set(RECORD_KINDS)
    for kind, pair in moved["counts"].items():
        assert pair["source"] == pair["target"], kind
    assert moved["counts"]["contacts"]["target"] == 1
    source_now = _stored(practice.app(), source_url)  # the source now logs the migration too
    in_mongo = _stored(practice.app(), mongomock_url)
    assert in_mongo == source_now
    assert len(source_now["audit_log"]) == len(before["audit_log"]) + 1
    assert source_now["audit_log"][-1].action == "storage.migrate_to"

    # the same key file opens the copy, and the audit chain verifies there
    verified = practice.json("audit", "verify", url=mongomock_url)
    assert verified["ok"] is True and verified["entries_checked"] == len(source_now["audit_log"])

    original = _views(practice, None)
    assert original["consents"] and len(original["stage_history"]) >= 3
    assert any("stubborn acne" in (i.get("body") or "") for i in original["interactions"])
    assert _views(practice, mongomock_url) == original

    # MongoDB → a new SQLite file: identical again
    back_url = f"sqlite:///{tmp_path / 'back.db'}"
    back = practice.json("storage", "migrate-to", back_url, url=mongomock_url)
    assert all(pair["source"] == pair["target"] for pair in back["counts"].values())
    assert _stored(practice.app(), back_url)["interactions"] == in_mongo["interactions"]
    assert _views(practice, back_url) == _views(practice, None)
    assert practice.json("audit", "verify", url=back_url)["ok"] is True


def test_a_non_empty_target_is_refused(practice: Practice, tmp_path: Path) -> None:
    target = f"sqlite:///{tmp_path / 'copy.db'}"
    first = practice.run("storage", "migrate-to", target)
    assert first.exit_code == 0, first.output
    assert "every count matches" in first.stdout and "contacts" in first.stdout
    with practice.app() as app:
        before = _stored(app, target)
    again = practice.run("storage", "migrate-to", target)
    assert again.exit_code == 2
    assert "not empty" in again.output and "contacts: 1" in again.output
    with practice.app() as app:
        assert _stored(app, target) == before  # nothing written to it
        source_url = app.settings.storage_url
        # the practice's own database is not empty either
        with pytest.raises(MigrationError, match="not empty"):
            app.migrate_to(source_url, actor=ACTOR)


def test_bad_arguments(practice: Practice, tmp_path: Path) -> None:
    bad = practice.run("storage", "migrate-to", "ftp://somewhere/db")
    assert bad.exit_code == 2 and "ftp" in bad.output and "sqlite" in bad.output
    with practice.app() as app:
        with pytest.raises(ValueError, match="batch"):
            app.migrate_to(f"sqlite:///{tmp_path / 'x.db'}", batch=0, actor=ACTOR)
        with app.storage.unit_of_work() as uow:
            with pytest.raises(UnknownComponentError, match="contacts"):
                uow.count_records("patients")


def test_small_batches_report_progress(practice: Practice, mongomock_url: str) -> None:
    seen: list[tuple[str, int]] = []
    with practice.app() as app:
        counts = app.migrate_to(mongomock_url, progress=lambda kind, n: seen.append((kind, n)), batch=2, actor=ACTOR)
    assert all(s == t for s, t in counts.values())
    interactions = [n for kind, n in seen if kind == "interactions"]
    assert interactions == sorted(interactions) and interactions[-1] == counts["interactions"][0]
    assert len(interactions) >= counts["interactions"][0] // 2


@pytest.mark.postgres
def test_sqlite_to_postgresql(practice: Practice, postgres_url: str) -> None:
    moved = practice.json("storage", "migrate-to", postgres_url)
    assert all(pair["source"] == pair["target"] for pair in moved["counts"].values())
    with practice.app() as app:
        assert _stored(app, postgres_url) == _stored(app, app.settings.storage_url)
    assert practice.json("audit", "verify", url=postgres_url)["ok"] is True
    assert _views(practice, postgres_url) == _views(practice, None)
