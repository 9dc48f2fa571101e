"""Two ``carecrm ingest`` processes at once against one practice lose nothing (issue 7).

An operator splits a folder of Typeform payloads over two processes, or runs two over the
same folder, or two sources deliver the same people at the same moment.  On SQLite (one
writer at a time), PostgreSQL and MariaDB each case ends with exact counts: one contact
per person, one interaction per distinct form, one inbox row per payload, every payload
``processed``, nothing quarantined, and an audit chain that verifies.  The payloads are
made here in Typeform's ``form_response`` shape (the shipped ``typeform`` mapping), so the
test needs no corpus.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from carecrm.cli.main import cli
from carecrm.core import CareCRM

PEOPLE = 800


def typeform_payload(token: str, person: int) -> dict[str, Any]:
    """A Typeform ``form_response`` webhook body for person ``person`` (response ``token``)."""
    return {
        "event_id": f"ev-{token}",
        "event_type": "form_response",
        "form_response": {
            "form_id": "lT4Z3j",
            "token": token,
            "landed_at": "2026-11-02T15:58:00Z",
            "submitted_at": "2026-11-02T16:00:00Z",
            "hidden": {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "fall-acne"},
            "definition": {"id": "lT4Z3j", "title": "Book a consult"},
            "answers": [
                {"type": "text", "text": f"Pat{person:04d}", "field": {"id": "JwWggjAKtOkA", "type": "short_text"}},
                {"type": "email", "email": f"pat{person:04d}@example.com", "field": {"id": "e1", "type": "email"}},
                {
                    "type": "phone_number",
                    "phone_number": f"+1312555{person:04d}",
                    "field": {"id": "p1", "type": "phone_number"},
                },
            ],
        },
    }


def write_folder(folder: Path, tokens_people: list[tuple[str, int]]) -> Path:
    """One payload file per (token, person) in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    for token, person in tokens_people:
        (folder / f"{token}.json").write_text(json.dumps(typeform_payload(token, person)))
    return folder


def practice(tmp_path: Path, url: str) -> Path:
    """``carecrm init`` of a practice on ``url`` with the shipped Typeform mapping and small
    batches (so the two processes' units of work interleave); returns carecrm.toml."""
    folder = tmp_path / "practice"
    result = CliRunner().invoke(
        cli,
        [
            "init", "--dir", str(folder), "--storage", url, "--timezone", "America/Chicago",
            "--source-example", "typeform",
        ],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    config = folder / "carecrm.toml"
    config.write_text(config.read_text() + "\n[ingest]\nbatch_size = 20\n")
    return config


def run_two(config: Path, first: Path, second: Path) -> None:
    """Start ``carecrm ingest typeform`` over ``first`` and over ``second`` at once and wait
    for both: each exits 0 and prints no traceback."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CARECRM_")}
    env["CARECRM_CONFIG"] = str(config)
    env["CARECRM_ACTOR"] = "loader:admin"
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "carecrm.cli", "ingest", "typeform", str(folder), "--json"],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for folder in (first, second)
    ]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, (proc.returncode, out[-2000:], err[-4000:])
        assert "Traceback" not in err, err[-4000:]


def check(config: Path, *, contacts: int, forms: int, payloads: int) -> None:
    """Exact counts, every payload processed, and an audit chain that verifies."""
    app = CareCRM.from_config(config, load_entrypoints=False)
    try:
        counts = app.counts()
        assert counts["contacts"] == contacts
        assert counts["interactions"] == forms
        assert counts["inbox"] == payloads
        statuses = [item.status for item in app.inbox_list(limit=payloads + 10)]
        assert statuses.count("processed") == payloads, {s: statuses.count(s) for s in set(statuses)}
        assert app.review_pairs() == []
        ok, entries, problem = app.verify_audit_chain()
        assert ok, problem
        assert entries > 0
        # the outbox: one event per change, numbered without a gap or a repeat, all delivered
        with app.storage.unit_of_work() as uow:
            outbox = list(uow.export_records("outbox"))
        assert [r.seq for r in outbox] == list(range(1, len(outbox) + 1))
        kinds = [r.kind for r in outbox]
        assert kinds.count("ContactCreated") == contacts
        assert kinds.count("InteractionRecorded") == forms
        assert app.pending_events() == 0
    finally:
        app.close()


@pytest.fixture(params=["sqlite", "postgres", "mariadb"])
def practice_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database URL on each backend that serves several processes."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'practice' / 'carecrm.db'}"
    else:
        yield request.getfixturevalue(f"{request.param}_url")


def test_halves_of_a_folder_at_once(practice_url: str, tmp_path: Path) -> None:
    """Two processes over the two halves of one folder: every lead once."""
    config = practice(tmp_path, practice_url)
    people = [(f"tok{p:04d}", p) for p in range(PEOPLE)]
    first = write_folder(tmp_path / "a", people[::2])
    second = write_folder(tmp_path / "b", people[1::2])
    run_two(config, first, second)
    check(config, contacts=PEOPLE, forms=PEOPLE, payloads=PEOPLE)


def test_the_same_folder_twice_at_once(practice_url: str, tmp_path: Path) -> None:
    """Two processes over the same folder (a re-run started too early): one inbox row per
    payload, both processes agree that it is processed, nothing doubles."""
    config = practice(tmp_path, practice_url)
    folder = write_folder(tmp_path / "same", [(f"tok{p:04d}", p) for p in range(PEOPLE)])
    run_two(config, folder, folder)
    check(config, contacts=PEOPLE, forms=PEOPLE, payloads=PEOPLE)


def test_the_same_people_from_two_deliveries_at_once(practice_url: str, tmp_path: Path) -> None:
    """The same people in two different forms each, ingested by two processes at once:
    one contact per person (matching holds the blind indexes it matches on), two forms."""
    config = practice(tmp_path, practice_url)
    people = PEOPLE // 2
    first = write_folder(tmp_path / "one", [(f"one{p:04d}", p) for p in range(people)])
    second = write_folder(tmp_path / "two", [(f"two{p:04d}", p) for p in range(people)])
    run_two(config, first, second)
    check(config, contacts=people, forms=2 * people, payloads=2 * people)
