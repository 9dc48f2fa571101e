"""Tests of the ``carecrm`` command line, run in-process with click's CliRunner on a
practice made by ``carecrm init`` in a temporary folder (SQLite).

Third-party plugins are never loaded (``CARECRM_LOAD_PLUGINS`` is empty).  Payloads of
the vendor corpus are used when it is found (``$CARECRM_TEST_CORPUS``, else
``../shared/corpus`` beside the clone); those tests skip otherwise, and the run's summary
counts them.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import stat
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from carecrm.cli import docgen
from carecrm.cli.commands.setup import example_names
from carecrm.cli.main import cli, create_cli
from carecrm.cli.output import format_duration, format_local, format_utc
from carecrm.cli.payloads import expand_paths, guess_content_type, parse_header, sniff_content_type
from carecrm.core.plugins.hookspecs import hookimpl
from carecrm.core.plugins.manager import build_plugin_manager
from carecrm.core.testing.resources import corpus_dir, needs_corpus, skip_without_corpus

REPO = Path(__file__).resolve().parents[2]
CORPUS = corpus_dir(REPO)
TYPEFORM_FILE = CORPUS / "typeform" / "form_response_example.json"
JOTFORM_FILE = CORPUS / "jotform" / "submission_multipart.txt"
TYPEFORM_EXAMPLE = REPO / "plugins" / "sources" / "examples" / "typeform.toml"

needs_typeform = needs_corpus(CORPUS, TYPEFORM_FILE)

BUILTIN_PLUGINS = (
    "carecrm.storage_backends.sql",
    "carecrm.plugins.identity_exact",
    "carecrm.plugins.sources.mapped",
)

# a source that verifies Typeform's signature (the documented example ships with it off)
SIGNED_SOURCE = """
[sources.signed_form]
connector = "mapped"
secret = "$env:CLI_TEST_FORM_SECRET"
format = "json"
record_id = "form_response.token"
kind = "form.submitted"
channel = "web"
occurred_at = "form_response.submitted_at"
time_format = "iso8601"

[sources.signed_form.fields]
email = "form_response.answers[?field.type=='email'] | [0].email"

[sources.signed_form.signature]
scheme = "hmac-sha256"
header = "Typeform-Signature"
encoding = "base64"
prefix = "sha256="
"""


# --------------------------------------------------------------------------- fixtures


class Practice:
    """A practice made by ``carecrm init`` in a temporary folder, and a runner for it."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "carecrm.toml"
        self.runner = CliRunner()

    def env(self, **extra: str) -> dict[str, str]:
        return {"CARECRM_CONFIG": str(self.config), "CARECRM_LOAD_PLUGINS": "", "NO_COLOR": "1", **extra}

    def run(self, *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Result:
        """Run ``carecrm ARGS`` against this practice (exceptions are kept, not raised)."""
        return self.runner.invoke(cli, list(args), input=input, env=self.env(**(env or {})))

    def ok(self, *args: str, input: str | bytes | None = None, env: dict[str, str] | None = None) -> Result:
        """Run and require exit status 0."""
        result = self.run(*args, input=input, env=env)
        assert result.exit_code == 0, (result.output, result.exception)
        return result

    def json(self, *args: str) -> Any:
        """Run with ``--json`` appended and parse stdout."""
        return json.loads(self.ok(*args, "--json").stdout)

    def add_contact(self, *args: str) -> str:
        """``contacts add ARGS --json``; returns the contact id."""
        return str(self.json("contacts", "add", *args)["contact"]["id"])


def run_init(root: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["init", "--dir", str(root), *args], env={"CARECRM_LOAD_PLUGINS": ""})


@pytest.fixture
def practice(tmp_path: Path) -> Practice:
    root = tmp_path / "practice"
    result = run_init(root, "--practice-name", "Lakeside Dermatology", "--timezone", "America/Chicago")
    assert result.exit_code == 0, result.output
    return Practice(root)


@pytest.fixture
def typeform_practice(tmp_path: Path) -> Practice:
    skip_without_corpus(CORPUS, TYPEFORM_FILE)
    root = tmp_path / "practice"
    result = run_init(root, "--timezone", "America/Chicago", "--source-example", "typeform")
    assert result.exit_code == 0, result.output
    return Practice(root)


def all_command_paths() -> list[list[str]]:
    root = create_cli(plugin_manager_factory=None)
    ctx = click.Context(root, info_name="carecrm", **root.context_settings)
    return [c.command_path.split()[1:] for _, c in docgen.walk(root, ctx)]


# --------------------------------------------------------------------------- help and docs


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda p: " ".join(p) or "carecrm")
def test_help_of_every_command(path: list[str], tmp_path: Path) -> None:
    # no config here: --help must never need one
    result = CliRunner().invoke(
        cli, [*path, "--help"], env={"CARECRM_CONFIG": str(tmp_path / "absent.toml"), "CARECRM_LOAD_PLUGINS": ""}
    )
    assert result.exit_code == 0, result.output
    assert "Usage: carecrm" in result.output
    assert not (tmp_path / "absent.toml").exists()


def test_every_command_is_covered_by_help_test() -> None:
    paths = {" ".join(p) for p in all_command_paths()}
    for expected in (
        "init",
        "ingest",
        "inbox list",
        "inbox show",
        "inbox retry",
        "inbox discard",
        "contacts add",
        "contacts find",
        "contacts show",
        "timeline",
        "note add",
        "stage set",
        "stage list",
        "pipeline",
        "plugins",
        "storage check",
        "storage upgrade",
        "audit verify",
        "audit log",
        "sources list",
        "sources example",
    ):
        assert expected in paths


def test_docs_cli_md_is_generated_from_the_commands() -> None:
    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == docgen.generate(), "docs/cli.md is stale: run `python -m carecrm.cli.docgen > docs/cli.md`"


def test_python_dash_m_runs_the_cli() -> None:
    env = {**os.environ, "CARECRM_LOAD_PLUGINS": ""}
    out = subprocess.run(
        [sys.executable, "-m", "carecrm.cli", "--help"], capture_output=True, text=True, env=env, check=True
    )
    assert "Usage: carecrm" in out.stdout and "timeline" in out.stdout


# --------------------------------------------------------------------------- init


def test_init_writes_config_key_file_and_schema(tmp_path: Path) -> None:
    root = tmp_path / "new"
    result = run_init(root, "--practice-name", 'Dr. "Quote" Clinic', "--timezone", "Europe/London", "--region", "gb")
    assert result.exit_code == 0, result.output
    config, keys = root / "carecrm.toml", root / "carecrm.keys"
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    doc = tomllib.loads(config.read_text(encoding="utf-8"))
    assert doc["storage"]["url"] == "sqlite:///carecrm.db"
    assert doc["keys"]["file"] == "carecrm.keys"
    assert doc["practice"]["name"] == 'Dr. "Quote" Clinic'
    assert doc["practice"]["locations"] == [{"name": "main", "timezone": "Europe/London", "region": "GB"}]
    assert "# [sources.website]" in config.read_text(encoding="utf-8")
    assert (root / "carecrm.db").is_file()
    check = Practice(root).json("storage", "check")
    assert check["schema_version"] == check["expected_schema_version"]


def test_init_refuses_to_overwrite(practice: Practice) -> None:
    before = practice.config.read_bytes(), (practice.root / "carecrm.keys").read_bytes()
    result = run_init(practice.root)
    assert result.exit_code == 2
    assert "exists already" in result.stderr and "refusing to overwrite" in result.stderr
    assert "Traceback" not in result.output
    assert (practice.config.read_bytes(), (practice.root / "carecrm.keys").read_bytes()) == before


def test_init_refuses_an_existing_key_file(tmp_path: Path) -> None:
    tmp_path.joinpath("carecrm.keys").write_text("{}")
    result = run_init(tmp_path)
    assert result.exit_code == 2 and "carecrm.keys exists already" in result.stderr
    assert not (tmp_path / "carecrm.toml").exists()


def test_init_rejects_unknown_time_zone_and_writes_nothing(tmp_path: Path) -> None:
    result = run_init(tmp_path / "x", "--timezone", "Mars/Olympus")
    assert result.exit_code == 2 and "unknown IANA time zone" in result.stderr
    assert not (tmp_path / "x").exists()


def test_init_rejects_unknown_storage_scheme_and_writes_nothing(tmp_path: Path) -> None:
    result = run_init(tmp_path, "--storage", "nosuchdb://localhost/x")
    assert result.exit_code == 2 and "known:" in result.stderr and "sqlite" in result.stderr
    assert not (tmp_path / "carecrm.toml").exists() and not (tmp_path / "carecrm.keys").exists()


@pytest.mark.skipif(not TYPEFORM_EXAMPLE.is_file(), reason="plugins/sources/examples/typeform.toml not written yet")
def test_init_appends_a_source_example(tmp_path: Path) -> None:
    result = run_init(tmp_path, "--source-example", "typeform")
    assert result.exit_code == 0, result.output
    doc = tomllib.loads((tmp_path / "carecrm.toml").read_text(encoding="utf-8"))
    assert doc["sources"]["typeform"]["connector"] == "mapped"
    assert "added source 'typeform'" in result.output
    listed = Practice(tmp_path).json("sources", "list")
    assert {"name": "typeform", "connector": "mapped"}.items() <= listed[0].items()


def test_init_unknown_source_example_lists_known(tmp_path: Path) -> None:
    result = run_init(tmp_path, "--source-example", "nosuchvendor")
    assert result.exit_code == 2
    assert "no source example 'nosuchvendor'" in result.stderr
    for name in example_names():
        assert name in result.stderr
    assert not (tmp_path / "carecrm.toml").exists()


def test_init_source_example_from_a_file(tmp_path: Path) -> None:
    example = tmp_path / "mine.toml"
    example.write_text(
        '[sources.mine]\nconnector = "mapped"\nsecret = "$env:CLI_TEST_UNSET_SECRET"\noccurred_at = "at"\n'
        '[sources.mine.signature]\nscheme = "hmac-sha256"\nheader = "X-Signature"\n'
    )
    result = run_init(tmp_path / "p", "--source-example", str(example))
    assert result.exit_code == 0, result.output
    assert "CLI_TEST_UNSET_SECRET is not set" in result.output
    doc = tomllib.loads((tmp_path / "p" / "carecrm.toml").read_text(encoding="utf-8"))
    assert doc["sources"]["mine"]["secret"] == "$env:CLI_TEST_UNSET_SECRET"


def test_init_refuses_a_source_example_that_would_not_start(tmp_path: Path) -> None:
    example = tmp_path / "mine.toml"
    example.write_text('[sources.mine]\nconnector = "mapped"\nkind = "form.submited"\noccurred_at = "at"\n')
    result = run_init(tmp_path / "p", "--source-example", str(example))
    assert result.exit_code == 2
    assert "source 'mine': option 'kind': unknown interaction kind 'form.submited'" in result.stderr
    assert not (tmp_path / "p" / "carecrm.toml").exists()


def test_sources_example_prints_the_file() -> None:
    if not TYPEFORM_EXAMPLE.is_file():
        pytest.skip("plugins/sources/examples/typeform.toml not written yet")
    result = CliRunner().invoke(cli, ["sources", "example", "typeform"])
    assert result.exit_code == 0
    assert result.stdout == TYPEFORM_EXAMPLE.read_text(encoding="utf-8")


# --------------------------------------------------------------------------- configuration errors


def test_missing_config_is_a_clean_error(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["pipeline"], env={"CARECRM_CONFIG": str(tmp_path / "none.toml"), "CARECRM_LOAD_PLUGINS": ""}
    )
    assert result.exit_code == 2
    assert result.stderr.startswith("error: no config file at") and "carecrm init" in result.stderr
    assert "Traceback" not in result.output


def test_wrong_key_file_is_a_clean_error(practice: Practice, tmp_path: Path) -> None:
    from carecrm.core.privacy.crypto import KeyRing

    other = tmp_path / "other.keys"
    KeyRing.generate().write_file(other)
    result = practice.run("pipeline", env={"CARECRM_KEY_FILE": str(other)})
    assert result.exit_code == 2
    assert "keys do not match" in result.stderr and "Traceback" not in result.output


def test_config_option_overrides_environment(practice: Practice, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli,
        ["--config", str(practice.config), "stage", "list", "--json"],
        env={"CARECRM_CONFIG": str(tmp_path / "none.toml"), "CARECRM_LOAD_PLUGINS": ""},
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["initial"] == "new_lead"


def test_bad_actor_is_a_usage_error(practice: Practice) -> None:
    result = practice.run("--as", ":coordinator", "pipeline")
    assert result.exit_code == 2 and "NAME:ROLE" in result.output


# --------------------------------------------------------------------------- contacts


def test_contacts_add_then_find_by_phone_in_another_format(practice: Practice) -> None:
    cid = practice.add_contact(
        "--first-name", "Ana", "--last-name", "Ruiz", "--phone", "+1 (312) 555-0142", "--email", "Ana.Ruiz@Example.com"
    )
    found = practice.json("contacts", "find", "--phone", "312.555.0142")
    assert [c["id"] for c in found] == [cid]
    assert found[0]["first_name"] == "Ana"
    phones = [i for i in found[0]["identities"] if i["kind"] == "phone"]
    assert phones[0]["value"] == "+13125550142"

    human = practice.ok("contacts", "find", "--phone", "312.555.0142").stdout
    # tables show the short id (the id's last 8 hex digits); --full-ids the whole one
    assert cid.replace("-", "")[-8:] in human and "Ana Ruiz" in human
    assert cid in practice.ok("--full-ids", "contacts", "find", "--phone", "312.555.0142").stdout
    by_name = practice.json("contacts", "find", "--name", "RUIZ")
    assert [c["id"] for c in by_name] == [cid]
    by_email = practice.json("contacts", "find", "--email", "ana.ruiz@example.com")
    assert [c["id"] for c in by_email] == [cid]


def test_contacts_add_twice_matches_the_same_person(practice: Practice) -> None:
    first = practice.json("contacts", "add", "--first-name", "Ana", "--phone", "312-555-0142")
    again = practice.json("contacts", "add", "--first-name", "Ana", "--phone", "(312) 555-0142")
    assert first["created"] is True and again["created"] is False
    assert first["contact"]["id"] == again["contact"]["id"]


def test_contacts_add_needs_an_email_or_phone(practice: Practice) -> None:
    result = practice.run("contacts", "add", "--first-name", "Ana")
    assert result.exit_code == 2 and "--email or --phone" in result.output


def test_contacts_add_rejects_unknown_location(practice: Practice) -> None:
    result = practice.run("contacts", "add", "--phone", "3125550142", "--location", "moon")
    assert result.exit_code == 2 and "known: main" in result.output


def test_contacts_add_invalid_phone_names_the_field_not_the_value(practice: Practice) -> None:
    result = practice.run("contacts", "add", "--phone", "12")
    assert result.exit_code == 2
    assert "phone" in result.stderr and "12" not in result.stderr.replace("2026", "")
    assert "Traceback" not in result.output


def test_contacts_find_needs_a_criterion(practice: Practice) -> None:
    result = practice.run("contacts", "find")
    assert result.exit_code == 2 and "--email, --phone or --name" in result.output


def test_contacts_find_nothing(practice: Practice) -> None:
    assert practice.json("contacts", "find", "--email", "nobody@example.com") == []
    assert "Contacts: none" in practice.ok("contacts", "find", "--email", "nobody@example.com").stdout


def test_unknown_contact_is_not_found_without_echoing_the_reference(practice: Practice) -> None:
    result = practice.run("timeline", "someone.private@example.com")
    assert result.exit_code == 2
    assert "not found" in result.stderr
    assert "someone.private" not in result.stderr


def test_contacts_show(practice: Practice) -> None:
    cid = practice.add_contact("--first-name", "Ana", "--last-name", "Ruiz", "--phone", "+13125550142")
    practice.ok("note", "add", cid, "Prefers a call after 5pm [urgent]")
    practice.ok("stage", "set", cid, "contacted")
    shown = practice.json("contacts", "show", "+1 312 555 0142")
    assert shown["contact"]["id"] == cid and shown["contact"]["stage"] == "contacted"
    assert [h["to_stage"] for h in shown["stage_history"]][-1] == "contacted"
    assert [n["text"] for n in shown["notes"]] == ["Prefers a call after 5pm [urgent]"]
    assert shown["review"] == []
    human = practice.ok("contacts", "show", cid).stdout
    for part in ("Identities", "+13125550142", "Stage history", "contacted", "Notes", "[urgent]", "under review"):
        assert part in human


def test_household_members_are_listed_for_review(practice: Practice) -> None:
    a = practice.add_contact("--first-name", "Ana", "--last-name", "Ruiz", "--phone", "+13125550142")
    b = practice.add_contact("--first-name", "Carlos", "--last-name", "Ruiz", "--phone", "+13125550142")
    assert a != b
    shown = practice.json("contacts", "show", a)
    assert [r["contact_id"] for r in shown["review"]] == [b]
    result = practice.run("timeline", "+13125550142")
    assert result.exit_code == 2 and a in result.stderr and b in result.stderr


# --------------------------------------------------------------------------- timeline, notes, stages


def test_timeline_json_shape(practice: Practice) -> None:
    cid = practice.add_contact("--first-name", "Ana", "--email", "ana@example.com")
    practice.ok("note", "add", "ana@example.com", "first call done")
    practice.ok("stage", "set", "ana@example.com", "contacted")
    doc = practice.json("timeline", "ana@example.com")
    assert set(doc) >= {"contact", "interactions"}
    contact = doc["contact"]
    assert contact["id"] == cid and contact["first_name"] == "Ana" and contact["stage"] == "contacted"
    assert [i["value"] for i in contact["identities"]] == ["ana@example.com"]
    kinds = [i["kind"] for i in doc["interactions"]]
    assert kinds == ["note.added", "stage.changed"]
    for item in doc["interactions"]:
        assert {"kind", "occurred_at", "channel", "source", "campaign", "direction", "channel_group"} <= set(item)
        assert {"touchpoint", "attributes", "body"} <= set(item)
        assert item["occurred_at"].endswith("Z") and "T" in item["occurred_at"]
    times = [i["occurred_at"] for i in doc["interactions"]]
    assert times == sorted(times)
    assert doc["interactions"][0]["body"] == "first call done"
    assert doc["interactions"][1]["attributes"]["to_stage"] == "contacted"
    assert doc["has_more"] is False


def test_timeline_limit(practice: Practice) -> None:
    practice.add_contact("--email", "ana@example.com")
    for n in range(3):
        practice.ok("note", "add", "ana@example.com", f"note {n}")
    doc = practice.json("timeline", "ana@example.com", "--limit", "2")
    assert len(doc["interactions"]) == 2 and doc["has_more"] is True
    assert "raise --limit" in practice.ok("timeline", "ana@example.com", "--limit", "2").stdout


def test_note_add_shows_on_timeline(practice: Practice) -> None:
    practice.add_contact("--first-name", "Ana", "--phone", "+13125550142")
    result = practice.ok("note", "add", "312.555.0142", "Call after 5pm")
    assert result.stdout.startswith("note ")
    human = practice.ok("timeline", "312-555-0142").stdout
    assert "note.added" in human and "Call after 5pm" in human
    assert "CST" in human or "CDT" in human  # local time of the practice's location


def test_note_add_refuses_empty_text(practice: Practice) -> None:
    practice.add_contact("--phone", "+13125550142")
    result = practice.run("note", "add", "+13125550142", "   ")
    assert result.exit_code == 2 and "empty" in result.stderr


def test_stage_set_valid_and_invalid(practice: Practice) -> None:
    cid = practice.add_contact("--first-name", "Ana", "--phone", "+13125550142")
    result = practice.ok("stage", "set", cid, "consult_scheduled", "--reason", "booked by phone")
    assert "new_lead → consult_scheduled" in result.stdout

    refused = practice.run("stage", "set", cid, "new_lead")
    assert refused.exit_code == 2
    assert "allowed next stages" in refused.stderr
    for allowed in ("consult_attended", "booked_patient", "no_show", "lost"):
        assert allowed in refused.stderr
    assert "Traceback" not in refused.output
    assert practice.json("contacts", "show", cid)["contact"]["stage"] == "consult_scheduled"


def test_stage_set_unknown_stage_and_lost_without_reason(practice: Practice) -> None:
    cid = practice.add_contact("--phone", "+13125550142")
    unknown = practice.run("stage", "set", cid, "bogus")
    assert unknown.exit_code == 2 and "unknown stage 'bogus'" in unknown.stderr
    lost = practice.run("stage", "set", cid, "lost")
    assert lost.exit_code == 2 and "--reason" in lost.stderr
    practice.ok("stage", "set", cid, "lost", "--reason", "price")


def test_stage_list(practice: Practice) -> None:
    doc = practice.json("stage", "list")
    stages = {s["stage"]: s for s in doc["stages"]}
    assert doc["initial"] == "new_lead"
    assert "new_lead" not in stages["no_show"]["allowed_next"]
    assert stages["lost"]["kind"] == "side"


def test_pipeline_json(practice: Practice) -> None:
    a = practice.add_contact("--phone", "+13125550142")
    practice.add_contact("--phone", "+13125550143")
    practice.ok("stage", "set", a, "contacted")
    rows = {r["stage"]: r for r in practice.json("pipeline")}
    assert rows["new_lead"]["count"] == 1 and rows["contacted"]["count"] == 1
    booked = rows["booked_patient"]
    assert {k: booked[k] for k in ("stage", "count", "median_seconds", "median")} == {
        "stage": "booked_patient",
        "count": 0,
        "median_seconds": None,
        "median": None,
    }
    assert (booked["speed_to_lead_median_seconds"], booked["awaiting_first_response"]) == (None, 0)
    assert isinstance(rows["contacted"]["median_seconds"], (int, float))
    human = practice.ok("pipeline").stdout
    assert "median time in stage" in human and "total: 2 contacts" in human


def test_actor_is_recorded(practice: Practice) -> None:
    cid = practice.add_contact("--phone", "+13125550142")
    practice.ok("--as", "alice:coordinator", "stage", "set", cid, "contacted")
    practice.ok("note", "add", cid, "by the env actor", env={"CARECRM_ACTOR": "bob:marketer"})
    history = practice.json("contacts", "show", cid)["stage_history"]
    assert history[-1]["actor"] == "alice"
    log = practice.json("audit", "log", "--contact", cid, "--limit", "100")
    actions = {(e["actor"], e["role"], e["action"]) for e in log}
    assert ("alice", "coordinator", "stage.set") in actions
    assert ("bob", "marketer", "note.add") in actions
    assert all("hash" not in e for e in log)
    assert practice.json("audit", "verify")["ok"] is True
    assert "audit chain intact" in practice.ok("audit", "verify").stdout


def test_one_read_or_one_change_writes_one_audit_entry(practice: Practice) -> None:
    cid = practice.add_contact("--phone", "+13125550142")

    def entries() -> list[dict[str, Any]]:
        return list(practice.json("audit", "log", "--contact", cid, "--limit", "1000"))

    before = len(entries())
    practice.ok("--as", "alice:coordinator", "contacts", "show", cid)
    shown = entries()[before:]
    # one contact read (no notes, no tasks to read): not the same read twice
    assert [(e["actor"], e["action"], e["purpose"]) for e in shown] == [("alice", "contact.read", "view")]
    before = len(entries())
    practice.ok("--as", "alice:coordinator", "stage", "set", "+13125550142", "contacted")
    moved = entries()[before:]
    assert [(e["actor"], e["role"], e["action"]) for e in moved] == [("alice", "coordinator", "stage.set")]
    assert practice.json("audit", "verify")["ok"] is True


# --------------------------------------------------------------------------- plugins and storage


def test_plugins_json_lists_the_built_ins(practice: Practice) -> None:
    rows = {r["name"]: r for r in practice.json("plugins")}
    for name in BUILTIN_PLUGINS:
        assert rows[name]["origin"] == "built-in"
        assert rows[name]["enabled"] is True
    assert "storage" in rows["carecrm.storage_backends.sql"]["families"]
    assert "source:mapped" in rows["carecrm.plugins.sources.mapped"]["components"]
    assert "carecrm.plugins.identity_exact" in practice.ok("plugins").stdout


def test_plugins_without_a_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["plugins", "--json"], env={"CARECRM_LOAD_PLUGINS": ""})
    assert result.exit_code == 0, result.output
    assert {r["name"] for r in json.loads(result.stdout)} >= set(BUILTIN_PLUGINS)
    assert "no carecrm.toml here" in result.stderr


def test_storage_check_and_upgrade(practice: Practice) -> None:
    info = practice.json("storage", "check")
    assert info["ok"] is True
    assert info["schema_version"] == info["expected_schema_version"]
    assert "advice" not in info
    assert "schema version" in practice.ok("storage", "check").stdout
    assert practice.ok("storage", "upgrade").exit_code == 0


def test_storage_check_on_an_empty_database(practice: Practice, tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    result = practice.run("storage", "check", "--json", env={"CARECRM_STORAGE_URL": f"sqlite:///{empty}"})
    assert result.exit_code == 2
    assert "storage upgrade" in json.loads(result.stdout)["advice"]
    upgraded = practice.run("storage", "upgrade", env={"CARECRM_STORAGE_URL": f"sqlite:///{empty}"})
    assert upgraded.exit_code == 0 and "applied" in upgraded.stdout


class _CommandsPlugin:
    """A plugin adding one command, trying to replace a built-in, and one that breaks."""

    @hookimpl
    def carecrm_register_commands(self, cli: click.Group) -> None:
        @click.command("hello")
        def hello() -> None:
            """Say hello from a plugin."""
            click.echo("hello from a plugin")

        @click.command("init")
        def fake_init() -> None:
            """Not the real init."""

        cli.add_command(hello)
        cli.add_command(fake_init)


class _BrokenPlugin:
    @hookimpl
    def carecrm_register_commands(self, cli: click.Group) -> None:
        raise RuntimeError("broken")


def test_hook_carecrm_register_commands() -> None:
    """Plugin commands are added once, lazily; a plugin cannot replace a built-in one and a
    broken plugin does not break the command line."""
    calls: list[int] = []

    def factory() -> Any:
        calls.append(1)
        return build_plugin_manager(load_entrypoints=False, extra_plugins=[_CommandsPlugin(), _BrokenPlugin()])

    group = create_cli(plugin_manager_factory=factory)
    runner = CliRunner()
    result = runner.invoke(group, ["--help"])
    assert result.exit_code == 0 and "hello" in result.stdout
    assert "tried to replace the built-in command 'init'" in result.stderr
    assert "failed to add its commands (RuntimeError)" in result.stderr
    assert runner.invoke(group, ["hello"]).stdout == "hello from a plugin\n"
    assert "Create a practice" in runner.invoke(group, ["init", "--help"]).stdout
    assert calls == [1]


def test_built_in_commands_do_not_load_plugins() -> None:
    def factory() -> Any:
        raise AssertionError("plugins loaded")

    group = create_cli(plugin_manager_factory=factory)
    assert CliRunner().invoke(group, ["timeline", "--help"]).exit_code == 0


# --------------------------------------------------------------------------- ingest and inbox


def test_ingest_unknown_source_lists_known(practice: Practice, tmp_path: Path) -> None:
    payload = tmp_path / "p.json"
    payload.write_text("{}")
    result = practice.run("ingest", "nosuchsource", str(payload))
    assert result.exit_code == 2
    assert "unknown source 'nosuchsource'" in result.stderr and "known:" in result.stderr
    assert practice.json("inbox", "list") == []


def test_ingest_missing_file_is_a_usage_error(practice: Practice, tmp_path: Path) -> None:
    result = practice.run("ingest", "typeform", str(tmp_path / "missing.json"))
    assert result.exit_code == 2 and "no such file or folder" in result.output


def test_ingest_bad_header_is_a_usage_error(practice: Practice, tmp_path: Path) -> None:
    payload = tmp_path / "p.json"
    payload.write_text("{}")
    result = practice.run("ingest", "typeform", str(payload), "--header", "no-colon")
    assert result.exit_code == 2 and "NAME:VALUE" in result.output


@needs_typeform
def test_ingest_typeform_then_timeline(typeform_practice: Practice) -> None:
    p = typeform_practice
    result = p.ok("ingest", "typeform", str(TYPEFORM_FILE))
    assert "Ingest summary" in result.stdout
    doc = p.json("timeline", "jane.placeholder@example.com")
    assert doc["contact"]["first_name"] == "Jane"
    [item] = doc["interactions"]
    assert item["kind"] == "form.submitted"
    assert item["occurred_at"] == "2018-01-18T18:17:02.000Z"
    assert item["source"] == "typeform" and item["channel"] == "web"
    assert item["campaign"] is None
    assert item["touchpoint"]["form_id"] == "lT4Z3j"
    human = p.ok("timeline", "jane.placeholder@example.com").stdout
    assert "form.submitted" in human and "2018-01-18 18:17:02Z" in human and "2018-01-18 12:17:02 CST" in human


@needs_typeform
def test_ingest_twice_changes_nothing(typeform_practice: Practice) -> None:
    p = typeform_practice
    first = p.json("ingest", "typeform", str(TYPEFORM_FILE))
    assert first["accepted"] == 1 and first["contacts_created"] == 1 and first["interactions_added"] == 1
    assert first["quarantined"] == []
    second = p.json("ingest", "typeform", str(TYPEFORM_FILE))
    assert second["contacts_created"] == 0 and second["interactions_added"] == 0 and second["accepted"] == 0
    assert second["duplicate_payloads"] + second["duplicates"] == 1
    assert len(p.json("timeline", "jane.placeholder@example.com")["interactions"]) == 1


@needs_typeform
def test_ingest_same_event_in_other_bytes_is_a_duplicate(typeform_practice: Practice, tmp_path: Path) -> None:
    p = typeform_practice
    p.ok("ingest", "typeform", str(TYPEFORM_FILE))
    reformatted = tmp_path / "again.json"
    reformatted.write_text(json.dumps(json.loads(TYPEFORM_FILE.read_bytes())))  # same event, other bytes
    second = p.json("ingest", "typeform", str(reformatted))
    assert second["duplicates"] == 1 and second["interactions_added"] == 0


@needs_typeform
def test_ingest_non_json_is_quarantined_then_retried_or_discarded(typeform_practice: Practice, tmp_path: Path) -> None:
    p = typeform_practice
    bad = tmp_path / "bad.json"
    bad.write_text("this is not JSON")
    result = p.run("ingest", "typeform", str(bad))
    assert result.exit_code == 1
    assert "Quarantined" in result.stdout
    assert "typeform" in result.stdout and "'body'" in result.stdout and "not valid JSON" in result.stdout

    bad_json = tmp_path / "bad2.json"
    bad_json.write_text("[1, 2")
    as_json = p.run("ingest", "typeform", str(bad_json), "--json")
    assert as_json.exit_code == 1
    [q] = json.loads(as_json.stdout)["quarantined"]
    assert q["source"] == "typeform" and q["field"] == "body" and "not valid JSON" in q["reason"]

    entries = p.json("inbox", "list", "--status", "quarantined")
    assert [e["source"] for e in entries] == ["typeform", "typeform"]
    assert all("not valid JSON" in e["reason"] for e in entries)
    assert entries[0]["id"] == q["inbox_id"]  # newest first
    listed = p.ok("inbox", "list").stdout
    assert "quarantined" in listed

    shown = p.ok("inbox", "show", q["inbox_id"]).stdout
    assert "[1, 2" in shown
    detail = p.json("inbox", "show", q["inbox_id"])
    assert detail["payload"]["body"] == "[1, 2" and detail["entry"]["status"] == "quarantined"
    assert detail["payload"]["content_type"] == "application/json"

    retry = p.run("inbox", "retry", q["inbox_id"])
    assert retry.exit_code == 1

    p.ok("inbox", "discard", q["inbox_id"], "--reason", "test junk")
    [gone] = p.json("inbox", "list", "--status", "discarded")
    assert gone["reason"] == "test junk"
    assert p.run("inbox", "retry", q["inbox_id"]).exit_code == 2


def test_inbox_unknown_id(practice: Practice) -> None:
    result = practice.run("inbox", "show", "00000000-0000-0000-0000-000000000000")
    assert result.exit_code == 2 and "not found" in result.stderr
    assert practice.run("inbox", "show", "not-a-uuid").exit_code == 2


@needs_typeform
def test_ingest_stdin_and_folder(typeform_practice: Practice, tmp_path: Path) -> None:
    p = typeform_practice
    from_stdin = p.run("ingest", "typeform", "-", "--json", input=TYPEFORM_FILE.read_bytes())
    assert from_stdin.exit_code == 0, from_stdin.output
    assert json.loads(from_stdin.stdout)["interactions_added"] == 1

    folder = tmp_path / "batch"
    (folder / "sub").mkdir(parents=True)
    doc = json.loads(TYPEFORM_FILE.read_bytes())
    for n, sub in ((1, ""), (2, "sub")):
        doc["form_response"]["token"] = f"token-{n}"
        (folder / sub / f"{n}.json").write_text(json.dumps(doc))
    (folder / ".hidden.json").write_text("not json")
    report = p.json("ingest", "typeform", str(folder))
    assert report["payloads"] == 2 and report["interactions_added"] == 2 and report["quarantined"] == []
    assert len(p.json("timeline", "jane.placeholder@example.com")["interactions"]) == 3


@needs_typeform
def test_ingest_verifies_a_signed_payload_with_header(typeform_practice: Practice) -> None:
    p = typeform_practice
    with p.config.open("a", encoding="utf-8") as fh:
        fh.write(SIGNED_SOURCE)
    secret = "cli-test-secret"
    body = TYPEFORM_FILE.read_bytes()
    good = "sha256=" + base64.b64encode(hmac.new(secret.encode(), body, hashlib.sha256).digest()).decode()
    env = {"CLI_TEST_FORM_SECRET": secret}

    forged = p.run("ingest", "signed_form", str(TYPEFORM_FILE), "--header", "Typeform-Signature: sha256=AAAA", env=env)
    assert forged.exit_code == 1 and "Typeform-Signature" in forged.stdout
    missing = p.run("ingest", "signed_form", str(TYPEFORM_FILE), env=env)
    assert missing.exit_code == 1

    ok = p.run(
        "ingest", "signed_form", str(TYPEFORM_FILE), "--header", f"Typeform-Signature: {good}", "--json", env=env
    )
    assert ok.exit_code == 0, ok.output
    assert json.loads(ok.stdout)["interactions_added"] == 1

    unset = p.run("ingest", "signed_form", str(TYPEFORM_FILE))
    assert unset.exit_code == 2 and "CLI_TEST_FORM_SECRET" in unset.stderr


# --------------------------------------------------------------------------- helpers


def test_guess_content_type() -> None:
    assert guess_content_type("a.json", b"whatever") == "application/json"
    assert guess_content_type("a.JSON", b"") == "application/json"
    assert guess_content_type("x.form.txt", b"{}") == "application/x-www-form-urlencoded"
    assert guess_content_type("x.query.txt", b"a=1") == "application/x-www-form-urlencoded"
    assert guess_content_type("x.txt", b"a=1&b=two+words&c=%2B1\n") == "application/x-www-form-urlencoded"
    assert guess_content_type("x.txt", b"just some words") == "application/octet-stream"
    assert guess_content_type("x.raw", b' {"a": 1}\n') == "application/json"
    assert guess_content_type("x.raw", b"{not json") == "application/octet-stream"
    assert guess_content_type("x.bin", b"\xff\xfe") == "application/octet-stream"
    assert guess_content_type("msg.hl7", b"MSH|") == "x-application/hl7-v2+er7"
    multipart = b'--XyZ\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--XyZ--\r\n'
    assert sniff_content_type(multipart) == "multipart/form-data; boundary=XyZ"


@needs_corpus(CORPUS, JOTFORM_FILE)
def test_guess_content_type_of_a_real_multipart_capture() -> None:
    ctype = guess_content_type(JOTFORM_FILE.name, JOTFORM_FILE.read_bytes())
    assert ctype == "multipart/form-data; boundary=------------------------J1JNT4vbVO4FCC1qLG4HSv"


def test_parse_header() -> None:
    assert parse_header("Typeform-Signature: sha256=abc:def") == ("Typeform-Signature", "sha256=abc:def")
    for bad in ("nocolon", ": value"):
        with pytest.raises(ValueError):
            parse_header(bad)


def test_expand_paths(tmp_path: Path) -> None:
    (tmp_path / "b").mkdir()
    (tmp_path / ".git").mkdir()
    for name in ("b/2.json", "a.json", "c.json", ".hidden", ".git/x"):
        (tmp_path / name).write_text("{}")
    assert expand_paths([str(tmp_path)]) == [str(tmp_path / n) for n in ("a.json", "b/2.json", "c.json")]
    assert expand_paths(["-", str(tmp_path / "a.json")]) == ["-", str(tmp_path / "a.json")]
    with pytest.raises(FileNotFoundError):
        expand_paths([str(tmp_path / "missing")])


def test_a_folder_gives_its_payloads_not_the_notes_beside_them(tmp_path: Path) -> None:
    """A corpus-style folder: payloads beside ``*.expected.md`` notes, a ``*.meta.json``, a
    README and a contract-kit ``*.expected.json``; only the payloads are read, and a note
    named on the command line is read as given (issue 8, item 9)."""
    names = (
        "sms_inbound.form.txt",
        "twilio.expected.md",
        "twilio.meta.json",
        "README.md",
        "case.expected.json",
        "event.json",
        "NOTES.markdown",
    )
    for name in names:
        (tmp_path / name).write_text("{}")
    assert expand_paths([str(tmp_path)]) == [str(tmp_path / n) for n in ("event.json", "sms_inbound.form.txt")]
    assert expand_paths([str(tmp_path / "twilio.meta.json")]) == [str(tmp_path / "twilio.meta.json")]


def test_formatting_helpers() -> None:
    from datetime import UTC, datetime

    assert [format_duration(s) for s in (None, 5, 120, 3600, 3 * 3600 + 1200, 86400 * 4 + 3 * 3600, 86400)] == [
        "—",
        "5s",
        "2m",
        "1h",
        "3h 20m",
        "4d 3h",
        "1d",
    ]
    moment = datetime(2018, 1, 18, 18, 17, 2, tzinfo=UTC)
    assert format_utc(moment) == "2018-01-18 18:17:02Z"
    assert format_local(moment, "America/Chicago") == "2018-01-18 12:17:02 CST"


def _walk_names(factory: Callable[[], click.Group]) -> list[str]:
    group = factory()
    return group.list_commands(click.Context(group, **group.context_settings))


def test_help_lists_built_ins_in_order() -> None:
    names = _walk_names(lambda: create_cli(plugin_manager_factory=None))
    assert names[:3] == ["init", "sources", "ingest"]
