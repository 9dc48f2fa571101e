"""Operating the inbox from the command line (issue 8, items 3, 6 and 9 and the size
limit): the ingest summary names the file and the record's index, ``inbox show`` shows
the file, unverified imports are recorded, oversized bodies are refused, and
``inbox reprocess`` re-derives what a payload produced.

The source is a mapped one written here (no corpus needed): a payload is
``{"leads": [{"id", "at", "email", "name"}, ...]}``, optionally signed with
``X-Sig: <hex HMAC-SHA256 of the body>``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli

SECRET = "test-secret-for-inbox-ops"
SOURCE_TOML = """
[sources.webform]
connector = "mapped"
records = "leads"
record_id = "id"
kind = "form.submitted"
channel = "web"
occurred_at = "at"
fields = { email = "email", first_name = "name" }
"""
SIGNED_TOML = """
[sources.signedform]
connector = "mapped"
secret = "$env:CARECRM_TEST_INBOX_OPS_SECRET"
records = "leads"
record_id = "id"
kind = "form.submitted"
channel = "web"
occurred_at = "at"
fields = { email = "email", first_name = "name" }
signature = { scheme = "hmac-sha256", header = "X-Sig", encoding = "hex" }
"""


class Practice:
    """A practice made by ``carecrm init`` with the two sources above."""

    def __init__(self, root: Path, extra: str = "") -> None:
        init = CliRunner().invoke(cli, ["init", "--dir", str(root)], env={"CARECRM_LOAD_PLUGINS": ""})
        assert init.exit_code == 0, init.output
        self.root = root
        self.config = root / "carecrm.toml"
        with self.config.open("a") as f:
            f.write(SOURCE_TOML + SIGNED_TOML + extra)

    def run(self, *args: str) -> Result:
        env = {
            "CARECRM_CONFIG": str(self.config),
            "CARECRM_LOAD_PLUGINS": "",
            "NO_COLOR": "1",
            "COLUMNS": "250",
            "CARECRM_TEST_INBOX_OPS_SECRET": SECRET,
        }
        return CliRunner().invoke(cli, list(args), env=env)

    def json(self, *args: str) -> Any:
        result = self.run(*args, "--json")
        assert result.exit_code in (0, 1), result.output
        return json.loads(result.stdout)


def lead(i: int, email: str | None = None, at: str = "2026-04-02T15:00:00Z") -> dict[str, Any]:
    return {"id": f"sub-{i}", "at": at, "email": email or f"p{i}.placeholder@example.com", "name": "Pat"}


def write(path: Path, *leads: dict[str, Any]) -> Path:
    path.write_text(json.dumps({"leads": list(leads)}))
    return path


def sign(body: bytes) -> str:
    return hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()


@pytest.fixture
def practice(tmp_path: Path) -> Practice:
    return Practice(tmp_path / "practice")


def test_quarantine_lines_name_the_file_the_index_and_the_inbox_entry(practice: Practice, tmp_path: Path) -> None:
    good = write(tmp_path / "good.json", lead(1), lead(2))
    # the third record of the file has no usable identity: refused after parsing, by the ingest stages
    mixed = write(tmp_path / "mixed_batch.json", lead(3), lead(4), lead(5, email="not-an-address"))
    result = practice.run("ingest", "webform", str(good), str(mixed))
    assert result.exit_code == 1, result.output
    lines = [ln for ln in result.output.splitlines() if "record sub-5" in ln and "[inbox " in ln]
    assert len(lines) == 1, result.output
    line = lines[0]
    assert f"payload {mixed}" in line and "(#2 in the payload)" in line and "[inbox " in line
    assert "not-an-address" not in result.output  # never a value
    report = practice.json("ingest", "webform", str(mixed))
    (q,) = report["quarantined"]
    assert (q["payload"], q["index"], q["record"]) == (str(mixed), 2, "sub-5")
    # inbox show names the file, from the encrypted payload; the clear reason does not
    (entry,) = practice.json("inbox", "list", "--status", "quarantined")
    assert "mixed_batch" not in (entry["reason"] or "")
    shown = practice.run("inbox", "show", entry["id"])
    assert shown.exit_code == 0, shown.output
    assert any(ln.split()[:1] == ["file"] and str(mixed) in ln for ln in shown.output.splitlines()), shown.output
    assert practice.json("inbox", "show", entry["id"])["payload"]["origin"] == str(mixed)


def test_a_whole_payload_refusal_names_the_file(practice: Practice, tmp_path: Path) -> None:
    broken = tmp_path / "truncated.json"
    broken.write_text('{"leads": [')
    result = practice.run("ingest", "webform", str(broken), str(write(tmp_path / "ok.json", lead(1))))
    assert result.exit_code == 1
    (line,) = [ln for ln in result.output.splitlines() if "truncated.json" in ln]
    assert "field 'body'" in line and "[inbox " in line and "in the payload)" not in line


def test_a_payload_over_the_size_limit_is_quarantined_unread_and_the_rest_go_in(tmp_path: Path) -> None:
    practice = Practice(tmp_path / "practice", extra="\n[ingest]\nmax_payload_bytes = 400\n")
    small = write(tmp_path / "a_small.json", lead(1))
    secret_name = "Zephyrine"  # personal data of the oversized file: never shown, never stored
    big = write(
        tmp_path / "b_big.json", *(lead(i, email=f"{secret_name.lower()}{i}@example.com") for i in range(10, 20))
    )
    other = write(tmp_path / "c_other.json", lead(2))
    assert big.stat().st_size > 400 >= small.stat().st_size
    result = practice.run("ingest", "webform", str(small), str(big), str(other))
    assert result.exit_code == 1, result.output
    (line,) = [ln for ln in result.output.splitlines() if "b_big.json" in ln]
    assert line.strip().startswith("webform: ") and "field 'body'" in line
    assert "larger than [ingest] max_payload_bytes (400)" in line and "[inbox " in line
    assert secret_name.lower() not in result.output
    report = practice.json("inbox", "list")
    statuses = sorted(e["status"] for e in report)
    assert statuses == ["processed", "processed", "quarantined"]
    (refused,) = [e for e in report if e["status"] == "quarantined"]
    assert "field 'body'" in refused["reason"] and "b_big" not in refused["reason"]
    # only what shows the refusal is kept: the file name and content type, no body
    shown = practice.json("inbox", "show", refused["id"])
    assert shown["payload"]["body"] == "" and shown["payload"]["origin"] == str(big)
    # the same bytes again: the same entry, one more attempt; a retry explains what to do
    practice.run("ingest", "webform", str(big))
    (again,) = practice.json("inbox", "list", "--status", "quarantined")
    assert (again["id"], again["attempts"]) == (refused["id"], 2)
    retry = practice.run("inbox", "retry", refused["id"])
    assert retry.exit_code == 2 and "max_payload_bytes" in retry.output


def test_the_size_limit_is_checked_at_config_load(tmp_path: Path) -> None:
    practice = Practice(tmp_path / "practice", extra='\n[ingest]\nmax_payload_bytes = "1MB"\n')
    result = practice.run("inbox", "list")
    assert result.exit_code != 0 and "max_payload_bytes" in result.output


def test_an_unverified_import_is_recorded_in_the_inbox_and_the_audit_log(practice: Practice, tmp_path: Path) -> None:
    signed = write(tmp_path / "signed.json", lead(1))
    by_hand = write(tmp_path / "by_hand.json", lead(2))
    ok = practice.run("ingest", "signedform", str(signed), "--header", f"X-Sig: {sign(signed.read_bytes())}")
    assert ok.exit_code == 0, ok.output
    # without --no-verify an unsigned file is refused; with it, taken and recorded as not verified
    refused = practice.run("ingest", "signedform", str(by_hand))
    assert refused.exit_code == 1 and "X-Sig" in refused.output
    taken = practice.run("ingest", "signedform", str(by_hand), "--no-verify")
    assert taken.exit_code == 0, taken.output
    entries = {e["id"]: e for e in practice.json("inbox", "list")}
    assert sorted((e["status"], e["verified"]) for e in entries.values()) == [("processed", False), ("processed", True)]
    table = practice.run("inbox", "list").output
    assert "NOT verified" in table and "verified" in table
    (unverified,) = [i for i, e in entries.items() if e["verified"] is False]
    shown = practice.run("inbox", "show", unverified).output
    assert "NOT verified (taken with --no-verify)" in shown
    # the batch's ingest audit entry says so too
    from carecrm.core import CareCRM

    with CareCRM.from_config(practice.config, load_entrypoints=False) as app:
        ingests = [e.details for e in app.audit_log(limit=50) if e.action == "ingest"]
    assert sorted(d.get("verified") is False for d in ingests) == [False, True]
    # a retry of the hand import does not ask for a signature its file never had
    retried = practice.run("inbox", "retry", unverified)
    assert retried.exit_code == 0, retried.output
    assert practice.json("inbox", "show", unverified)["entry"]["verified"] is False


def test_a_forged_signature_on_an_accepted_body_is_a_failed_verification(practice: Practice, tmp_path: Path) -> None:
    body = write(tmp_path / "delivery.json", lead(1))
    good = f"X-Sig: {sign(body.read_bytes())}"
    assert practice.run("ingest", "signedform", str(body), "--header", good).exit_code == 0
    # the same bytes with their own valid signature: a duplicate, exit 0
    again = practice.json("ingest", "signedform", str(body), "--header", good)
    assert again["duplicate_payloads"] == 1 and again["quarantined"] == []
    # the same bytes with another signature: reported as a failed verification, exit 1
    forged = practice.run("ingest", "signedform", str(body), "--header", "X-Sig: " + "0" * 64)
    assert forged.exit_code == 1, forged.output
    assert "X-Sig" in forged.output and "re-delivery of an accepted payload" in forged.output
    report = practice.json("ingest", "signedform", str(body), "--header", "X-Sig: " + "0" * 64)
    assert report["duplicate_payloads"] == 0
    (q,) = report["quarantined"]
    assert q["field"] == "X-Sig" and q["payload"] == str(body) and "re-delivery of an accepted payload" in q["reason"]
    # the accepted entry is kept as it was, with nothing added
    (entry,) = practice.json("inbox", "list")
    assert (entry["status"], entry["verified"], entry["id"]) == ("processed", True, q["inbox_id"])


def timeline_times(practice: Practice) -> list[str]:
    from carecrm.core import CareCRM
    from carecrm.core.model.domain import Actor

    actor = Actor.parse("tester:admin")
    with CareCRM.from_config(practice.config, load_entrypoints=False) as app:
        ids = app.find_contacts(actor=actor, email="p1.placeholder@example.com")
        (contact,) = ids
        return [i.occurred_at.isoformat() for i in app.timeline(contact.id, actor=actor).interactions]


def test_reprocess_replaces_what_a_payload_produced_after_a_config_fix(practice: Practice, tmp_path: Path) -> None:
    # the form sends times without an offset; the source first reads them as UTC (wrong)
    text = practice.config.read_text()
    practice.config.write_text(
        text.replace(
            'channel = "web"\noccurred_at = "at"\n', 'channel = "web"\noccurred_at = "at"\ntime_zone = "UTC"\n', 1
        )
    )
    f = write(tmp_path / "calls.json", lead(1, at="2026-04-02 15:00:00"), lead(2, at="2026-04-02 16:00:00"))
    assert practice.run("ingest", "webform", str(f)).exit_code == 0
    assert timeline_times(practice) == ["2026-04-02T15:00:00+00:00"]
    retry = practice.json("inbox", "retry", practice.json("inbox", "list")[0]["id"])
    # a retry cannot correct it: the same keys are duplicates
    assert retry["duplicates"] == 2 and retry["interactions_added"] == 0
    practice.config.write_text(
        practice.config.read_text().replace('time_zone = "UTC"', 'time_zone = "America/Chicago"', 1)
    )
    (entry,) = practice.json("inbox", "list")
    one = practice.json("inbox", "reprocess", entry["id"])
    assert one["interactions_removed"] == 2
    assert one["interactions_added"] == 2 and one["contacts_created"] == 0 and one["quarantined"] == []
    assert timeline_times(practice) == ["2026-04-02T20:00:00+00:00"]  # 15:00 CDT
    # --source does every processed payload of the source; the result is the same
    every = practice.json("inbox", "reprocess", "--source", "webform")
    assert (every["interactions_removed"], every["interactions_added"]) == (2, 2)
    assert timeline_times(practice) == ["2026-04-02T20:00:00+00:00"]
    from carecrm.core import CareCRM

    with CareCRM.from_config(practice.config, load_entrypoints=False) as app:
        audits = [e for e in app.audit_log(limit=100) if e.action == "inbox.reprocess"]
        assert len(audits) == 2 and {e.details["removed"] for e in audits} == {2}
        assert app.counts()["interactions"] == 2
    text_out = practice.run("inbox", "reprocess", entry["id"]).output
    assert "interactions replaced" in text_out


def test_reprocess_checks_the_payload_first_and_refuses_what_is_not_processed(
    practice: Practice, tmp_path: Path
) -> None:
    body = write(tmp_path / "signed.json", lead(1))
    assert (
        practice.run("ingest", "signedform", str(body), "--header", f"X-Sig: {sign(body.read_bytes())}").exit_code == 0
    )
    hand = write(tmp_path / "hand.json", lead(2))
    assert practice.run("ingest", "signedform", str(hand), "--no-verify").exit_code == 0
    bad = tmp_path / "bad.json"
    bad.write_text("{")
    assert practice.run("ingest", "webform", str(bad)).exit_code == 1
    entries = practice.json("inbox", "list")
    quarantined = next(e for e in entries if e["status"] == "quarantined")
    refused = practice.run("inbox", "reprocess", quarantined["id"])
    assert refused.exit_code == 2 and "retry a quarantined one" in refused.output
    assert practice.run("inbox", "reprocess").exit_code == 2  # neither ID nor --source
    # the signed entry verifies again with the secret; the hand import is not asked for one
    done = practice.json("inbox", "reprocess", "--source", "signedform")
    assert (done["interactions_removed"], done["interactions_added"], done["quarantined"]) == (2, 2, [])
    # a changed secret: the stored payload no longer verifies, and nothing changes
    runner_env_secret = "another-secret"
    result = CliRunner().invoke(
        cli,
        ["inbox", "reprocess", "--source", "signedform", "--json"],
        env={
            "CARECRM_CONFIG": str(practice.config),
            "CARECRM_LOAD_PLUGINS": "",
            "CARECRM_TEST_INBOX_OPS_SECRET": runner_env_secret,
        },
    )
    assert result.exit_code == 1, result.output
    out = json.loads(result.stdout)
    assert [q["field"] for q in out["quarantined"]] == ["X-Sig"] and out["interactions_removed"] == 1
    assert "nothing changed" in out["quarantined"][0]["reason"]
