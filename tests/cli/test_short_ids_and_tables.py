"""Short ids in tables and wherever an id is taken, tables that fit 80-120 columns, and the
timeline's view of a person's own message (issue 7, item 12).

Run in-process with click's CliRunner on a practice made by ``carecrm init`` (SQLite);
``COLUMNS`` sets the width of the tables (output is not a terminal here).
"""

from __future__ import annotations

import json
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli
from carecrm.core.model.short_ids import SHORT_LENGTH, AmbiguousId, id_suffix, one_match, short_id

PHONE = "+1 312 555 0142"
MESSAGE = (
    "Hi, I've had stubborn acne on my cheeks and jawline since last year and over-the-counter "
    "products haven't helped. What treatments do you offer, and is a consult covered? "
    "Evenings after 5pm are best for a call."
)


class Practice:
    """A practice made by ``carecrm init --source-example webflow`` in a temporary folder."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.runner = CliRunner()

    def run(self, *args: str, columns: int = 100) -> Result:
        env = {
            "CARECRM_CONFIG": str(self.root / "carecrm.toml"),
            "CARECRM_LOAD_PLUGINS": "",
            "NO_COLOR": "1",
            "COLUMNS": str(columns),
        }
        return self.runner.invoke(cli, ["--as", "carla:coordinator", *args], env=env)

    def ok(self, *args: str, columns: int = 100) -> str:
        result = self.run(*args, columns=columns)
        assert result.exit_code == 0, (result.output, result.exception)
        return result.stdout

    def json(self, *args: str) -> Any:
        return json.loads(self.ok(*args, "--json"))

    def add(self, first: str, last: str, phone: str, email: str) -> str:
        doc = self.json(
            "contacts", "add", "--first-name", first, "--last-name", last, "--phone", phone, "--email", email
        )
        return str(doc["contact"]["id"])


@pytest.fixture
def practice(tmp_path: Path) -> Practice:
    root = tmp_path / "practice"
    result = CliRunner().invoke(
        cli,
        ["init", "--dir", str(root), "--timezone", "America/Chicago", "--source-example", "webflow"],
        env={"CARECRM_LOAD_PLUGINS": ""},
    )
    assert result.exit_code == 0, result.output
    return Practice(root)


def webflow_payload(tmp_path: Path, *, email: str = "maria.placeholder@example.com") -> Path:
    """A Webflow form submission (the shape of Webflow's documented example) carrying
    the person's message and Webflow's technical ids (site id, form id)."""
    doc = {
        "triggerType": "form_submission",
        "payload": {
            "name": "Acne treatment consult request",
            "siteId": "65427cf400e02b306eaa049c",
            "data": {
                "First Name": "Maria",
                "Last Name": "Placeholder",
                "email": email,
                "Phone Number": "(312) 555-0142",
                "Message": MESSAGE,
            },
            "submittedAt": "2026-04-15T02:37:00.000Z",
            "id": "6321ca84df3949bfc6752327",
            "formId": "65429eadebe8a9f3a30f62d0",
        },
    }
    path = tmp_path / "webflow.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def every_id_ends_with(tail: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every new UUIDv7 end with the 32 bits ``tail`` (its front stays time-ordered)."""
    import uuid6

    real = uuid6.uuid7
    monkeypatch.setattr(uuid6, "uuid7", lambda: uuid.UUID(int=(real().int & ~0xFFFFFFFF) | tail))


def short(cid: str) -> str:
    return cid.replace("-", "")[-SHORT_LENGTH:]


def lines_fit(out: str, width: int) -> None:
    too_wide = [line for line in out.splitlines() if len(line.rstrip()) > width]
    assert not too_wide, f"lines wider than {width} columns:\n" + "\n".join(too_wide)


# --------------------------------------------------------------------------- short ids


def test_short_id_is_the_random_end_of_the_id() -> None:
    a = uuid.UUID("01a23bf5-f261-76f2-b703-7ca693a635aa")
    assert short_id(a) == short_id(str(a)) == "93a635aa"
    assert id_suffix("93A635AA") == "93a635aa"
    assert id_suffix("b703-7ca693a635aa") == "b7037ca693a635aa"
    for not_short in ("93a635a", "not-an-id", "ana@example.com", a.hex):
        assert id_suffix(not_short) is None
    # ids of the same millisecond share their front, not their end
    b = uuid.UUID("01a23bf5-f261-76f2-8c11-0f2b44d0e1c7")
    assert one_match("contact", short_id(b), [a, b]) == b
    with pytest.raises(AmbiguousId) as err:
        one_match("contact", "35aa", [a, uuid.UUID(int=a.int ^ (1 << 100))])
    assert str(a) in str(err.value) and "give more of its digits" in str(err.value)


def test_tables_show_short_ids_and_every_command_takes_them(practice: Practice) -> None:
    cid = practice.add("Ana", "Ruiz", PHONE, "ana.ruiz@example.com")
    sid = short(cid)

    found = practice.ok("contacts", "find", "--phone", "312.555.0142")
    assert sid in found and cid not in found
    assert cid in practice.ok("--full-ids", "contacts", "find", "--phone", "312.555.0142")

    assert practice.json("contacts", "show", sid)["contact"]["id"] == cid
    assert practice.json("contacts", "show", sid.upper())["contact"]["id"] == cid
    assert practice.json("timeline", cid.replace("-", "")[-16:])["contact"]["id"] == cid
    assert "new_lead → contacted" in practice.ok("stage", "set", sid, "contacted")
    practice.ok("note", "add", sid, "Called back, left a voicemail")
    practice.ok("task", "add", sid, "Call again", "--due", "+1d")

    tasks = practice.ok("task", "list")
    [task] = practice.json("task", "list")
    assert short(task["id"]) in tasks and task["id"] not in tasks
    assert "done" in practice.ok("task", "done", short(task["id"]))

    audit = practice.ok("audit", "log", "--contact", sid, "--limit", "5")
    assert sid in audit and cid not in audit
    by_full = practice.json("audit", "log", "--contact", cid, "--limit", "5")
    assert by_full == practice.json("audit", "log", "--contact", sid, "--limit", "5")


def test_inbox_ids_short_in_the_list_and_accepted(practice: Practice, tmp_path: Path) -> None:
    practice.ok("ingest", "webflow", str(webflow_payload(tmp_path)))
    [entry] = practice.json("inbox", "list")
    listed = practice.ok("inbox", "list")
    assert short(entry["id"]) in listed and entry["id"] not in listed
    shown = practice.json("inbox", "show", short(entry["id"]))
    assert shown["entry"]["id"] == entry["id"]


def test_unknown_or_malformed_short_ids_are_usage_errors(practice: Practice) -> None:
    practice.add("Ana", "Ruiz", PHONE, "ana.ruiz@example.com")
    missing = practice.run("timeline", "abcdef12")
    assert missing.exit_code == 2 and "no contact has an id ending in 'abcdef12'" in missing.stderr
    assert practice.run("task", "done", "abcdef12").exit_code == 2
    bad = practice.run("inbox", "show", "not-an-id")
    assert bad.exit_code == 2 and "Traceback" not in bad.output


def test_digits_only_are_a_phone_first_then_a_short_id(practice: Practice, monkeypatch: pytest.MonkeyPatch) -> None:
    every_id_ends_with(0x31255501, monkeypatch)
    cid = practice.add("Ana", "Ruiz", PHONE, "ana.ruiz@example.com")
    assert short(cid) == "31255501"
    # 3125550142 is her phone; 31255501 (8 digits) is no US phone number: her short id
    assert practice.json("timeline", "3125550142")["contact"]["id"] == cid
    assert practice.json("timeline", "31255501")["contact"]["id"] == cid


def test_a_short_id_shared_by_two_contacts_asks_for_more(practice: Practice, monkeypatch: pytest.MonkeyPatch) -> None:
    every_id_ends_with(0xABCDEF12, monkeypatch)
    a = practice.add("Ana", "Ruiz", PHONE, "ana.ruiz@example.com")
    b = practice.add("Carlos", "Sample", "+1 312 555 0199", "carlos.sample@example.com")
    assert short(a) == short(b) == "abcdef12"
    result = practice.run("contacts", "show", "abcdef12")
    assert result.exit_code == 2
    assert "names 2 contact records" in result.stderr and a in result.stderr and b in result.stderr
    for personal in ("Ana", "Ruiz", "Carlos", "555", "example.com"):
        assert personal not in result.stderr
    # more digits, or the whole id, settle it
    assert practice.json("contacts", "show", a.replace("-", "")[-12:])["contact"]["id"] == a
    assert practice.json("contacts", "show", b)["contact"]["id"] == b


# --------------------------------------------------------------------------- widths


def test_the_widest_tables_fit_100_columns_without_breaking_stages_or_phones(
    practice: Practice, tmp_path: Path
) -> None:
    practice.ok("ingest", "webflow", str(webflow_payload(tmp_path)))
    others = [
        practice.add("Maximiliana", "Featherstonehaugh-Worthington", "+1 312 555 0143", "maximiliana.f@example.com"),
        practice.add("Bartholomew", "Okonkwo-Vasquez", "+1 312 555 0144", "bartholomew.ov@example.com"),
    ]
    for cid in others:
        practice.ok("stage", "set", cid, "consult_scheduled")
        practice.ok("task", "add", cid, "Send the new-patient forms and the history questionnaire", "--due", "+2d")
    practice.ok("score", "recompute")

    outputs = {
        "contacts find": practice.ok("contacts", "find", "--phone", "312 555 0143"),
        "task list": practice.ok("task", "list", "--all"),
        "score top": practice.ok("score", "top"),
        "pipeline": practice.ok("pipeline"),
        "timeline": practice.ok("timeline", "maria.placeholder@example.com", "--verbose"),
        "segment preview": practice.ok("segment", "preview", "--stage", "consult_scheduled"),
        "inbox list": practice.ok("inbox", "list"),
        "audit log": practice.ok("audit", "log", "--limit", "30"),
    }
    for name, out in outputs.items():
        lines_fit(out, 100)
        assert "consult_scheduled" in out or name in ("timeline", "inbox list", "audit log"), name
    assert "+1 312 555 0143" in outputs["contacts find"]  # as typed
    assert "+13125550143" in outputs["score top"]  # E.164
    for name, out in outputs.items():
        for stage in ("consult_scheduled", "new_lead"):
            # a stage broken over two lines leaves its head or its tail alone on a line
            whole = out.count(stage)
            assert out.count(stage[:-3]) == whole == out.count(stage[3:]), (name, stage, out)


# --------------------------------------------------------------------------- timeline


def test_timeline_shows_the_message_whole_and_technical_attributes_only_verbose(
    practice: Practice, tmp_path: Path
) -> None:
    practice.ok("ingest", "webflow", str(webflow_payload(tmp_path)))
    wide = practice.ok("timeline", "(312) 555-0142", columns=400)
    assert MESSAGE in wide  # whole, on one line when the terminal is wide enough
    assert "form_name=Acne treatment consult request" in wide
    assert "site_id" not in wide and "65427cf400e02b306eaa049c" not in wide
    assert "external_record_id" not in wide

    narrow = practice.ok("timeline", "(312) 555-0142", columns=80)
    lines_fit(narrow, 80)
    assert "…" not in narrow
    words = " ".join(re.sub(r"[│┃]", " ", narrow).split())
    for word in MESSAGE.split():
        assert word in words

    verbose = practice.ok("timeline", "(312) 555-0142", "--verbose", columns=400)
    assert "site_id=65427cf400e02b306eaa049c" in verbose
    assert "external_record_id=6321ca84df3949bfc6752327" in verbose
    assert MESSAGE in verbose
    doc = practice.json("timeline", "(312) 555-0142")
    [item] = doc["interactions"]
    assert item["attributes"]["site_id"] == "65427cf400e02b306eaa049c" and item["body"] == MESSAGE
    assert short(doc["contact"]["id"]) in wide and doc["contact"]["id"] in verbose
