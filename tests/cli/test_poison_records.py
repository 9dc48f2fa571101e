"""A poison record never stops a batch (issue #7, item 11), tried as an operator would:
``carecrm ingest`` over a folder of Webflow payloads where one file holds a value that
cannot be stored (a lone surrogate, a NUL, a control character, a huge number).

The Webflow mapping is the shipped example (``carecrm sources example webflow``), so these
tests need no corpus.  Files are written as a vendor sends them: JSON with ``\\uXXXX``
escapes, which is how a lone surrogate or a NUL arrives in a real payload.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli
from carecrm.core import CareCRM
from carecrm.core.privacy.mapping import RecordMapper

NAMES = ["Ava", "Ben", "Cleo", "Dev", "Eli", "Fay", "Gus", "Hal", "Ivy", "Jo"]
#: personal data of the poison record: must never appear in any output
POISON_FIRST = "Quillonia"
POISON_EMAIL = "quillonia.poison@example.com"


class Practice:
    """A practice made by ``carecrm init`` with the Webflow example source."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.config = root / "carecrm.toml"
        self.runner = CliRunner()

    def run(self, *args: str, debug: bool = False) -> Result:
        env = {"CARECRM_CONFIG": str(self.config), "CARECRM_LOAD_PLUGINS": "", "NO_COLOR": "1"}
        return self.runner.invoke(cli, [*(["--debug"] if debug else []), *args], env=env)

    def app(self) -> CareCRM:
        return CareCRM.from_config(self.config, load_entrypoints=False)

    def inbox_statuses(self) -> dict[str, int]:
        result = self.run("inbox", "list", "--limit", "1000", "--json")
        assert result.exit_code == 0, result.output
        out: dict[str, int] = {}
        for item in json.loads(result.stdout):
            out[item["status"]] = out.get(item["status"], 0) + 1
        return out

    def contacts(self) -> int:
        with self.app() as app:
            return app.counts()["contacts"]


@pytest.fixture
def practice(tmp_path: Path) -> Practice:
    root = tmp_path / "practice"
    env = {"CARECRM_LOAD_PLUGINS": ""}
    runner = CliRunner()
    made = runner.invoke(cli, ["init", "--dir", str(root), "--practice-name", "Lakeside", "--timezone", "UTC"], env=env)
    assert made.exit_code == 0, made.output
    example = runner.invoke(cli, ["sources", "example", "webflow"], env=env)
    assert example.exit_code == 0, example.output
    with (root / "carecrm.toml").open("a", encoding="utf-8") as fh:
        fh.write("\n" + example.stdout)
    return Practice(root)


def webflow(i: int | str, data: dict[str, Any], **payload: Any) -> dict[str, Any]:
    return {
        "triggerType": "form_submission",
        "payload": {
            "name": "Contact Us",
            "siteId": "65427cf400e02b306eaa049c",
            "data": data,
            "submittedAt": "2024-05-01T12:35:16.117Z",
            "id": f"sub-{i}",
            "formId": "65429eadebe8a9f3a30f62d0",
            **payload,
        },
    }


def write_folder(tmp_path: Path, poison: dict[str, Any] | None) -> Path:
    """Ten good submissions (good-0.json ... good-9.json) and ``poison.json``."""
    folder = tmp_path / "inbox"
    folder.mkdir()
    for i, name in enumerate(NAMES):
        data = {"First Name": name, "Last Name": "Lee", "email": f"{name.lower()}@example.com"}
        (folder / f"good-{i}.json").write_text(json.dumps(webflow(i, data)), encoding="ascii")
    if poison is not None:
        # ensure_ascii: a lone surrogate or NUL is written as the \uXXXX escape a vendor sends
        (folder / "poison.json").write_text(json.dumps(poison, ensure_ascii=True), encoding="ascii")
    return folder


def assert_clean(result: Result) -> None:
    """No traceback and no personal data of the poison record in any output."""
    for stream in (result.stdout, result.stderr):
        assert "Traceback" not in stream
        assert POISON_FIRST not in stream and POISON_EMAIL not in stream
        assert "\ud83d" not in stream and "\x00" not in stream and "\x07" not in stream


def poison_with(**data: Any) -> dict[str, Any]:
    fields = {"First Name": POISON_FIRST, "Last Name": "Lee", "email": POISON_EMAIL, **data}
    return webflow("poison", fields)


def test_lone_surrogate_in_a_name_quarantines_that_record_only(practice: Practice, tmp_path: Path) -> None:
    """The tester's scenario: ten good files and one whose last name is a lone surrogate."""
    folder = write_folder(tmp_path, poison_with(**{"Last Name": "\ud83d"}))
    result = practice.run("ingest", "webflow", str(folder))
    assert result.exit_code == 1, (result.output, result.exception)
    assert_clean(result)
    [line] = [ln for ln in result.stdout.splitlines() if "poison.json" in ln]
    assert "webflow:" in line and "record sub-poison" in line and "field 'last_name'" in line
    assert "lone surrogate" in line
    assert "Quarantined (1)" in result.stdout
    assert practice.contacts() == 10
    assert practice.inbox_statuses() == {"processed": 10, "quarantined": 1}

    as_json = practice.run("ingest", "webflow", str(folder), "--json")  # a re-run changes nothing
    assert as_json.exit_code == 1
    assert_clean(as_json)
    report = json.loads(as_json.stdout)
    assert report["duplicate_payloads"] == 10 and report["contacts_created"] == 0
    [q] = report["quarantined"]
    assert (q["source"], q["record"], q["field"]) == ("webflow", "sub-poison", "last_name")
    assert q["payload"].endswith("poison.json")
    assert practice.contacts() == 10
    assert practice.inbox_statuses() == {"processed": 10, "quarantined": 1}

    [entry] = json.loads(practice.run("inbox", "list", "--status", "quarantined", "--json").stdout)
    assert "field 'last_name'" in entry["reason"] and "sub-poison" in entry["reason"]
    assert POISON_FIRST not in entry["reason"]
    shown = practice.run("inbox", "show", entry["id"], "--json")  # the payload is kept exactly
    assert shown.exit_code == 0, shown.output
    assert "\\ud83d" in json.loads(shown.stdout)["payload"]["body"]


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({"Last Name": "Lee\x00"}, "last_name"),
        ({"First Name": "Quil\x07lonia"}, "first_name"),
        ({"First Name": "\x1b[31mQuil"}, "first_name"),
    ],
    ids=["nul-in-name", "bell-in-name", "escape-in-name"],
)
def test_nul_and_control_characters_in_a_name_are_refused(
    practice: Practice, tmp_path: Path, data: dict[str, Any], field: str
) -> None:
    folder = write_folder(tmp_path, poison_with(**data))
    result = practice.run("ingest", "webflow", str(folder))
    assert result.exit_code == 1, (result.output, result.exception)
    assert_clean(result)
    [line] = [ln for ln in result.stdout.splitlines() if "poison.json" in ln]
    assert f"field {field!r}" in line and "record sub-poison" in line
    assert practice.contacts() == 10
    assert practice.inbox_statuses() == {"processed": 10, "quarantined": 1}
    again = practice.run("ingest", "webflow", str(folder))
    assert again.exit_code == 1 and practice.contacts() == 10
    assert_clean(again)


@pytest.mark.parametrize(
    ("data", "payload"),
    [
        ({"Phone Number": 10**400}, {}),  # a 401-digit phone: an invalid identity, dropped
        ({}, {"siteId": 10**30}),  # an attribute wider than 64 bits: kept as its digits
        ({}, {"siteId": 1e999}),  # read as infinity: stored as null
        ({"Message": "broken \ud83d emoji, NUL \x00, bell \x07"}, {}),  # free text is cleaned
        ({"First Name": "Quillonia\tMay"}, {}),  # a tab in a name folds to a space
        ({"Landing Page": "https://example.com/\ud83d?utm_source=x\x00"}, {}),
        ({}, {"siteId": json.loads("[" * 60 + "]" * 60)}),  # too deep: the attribute is dropped
    ],
    ids=["huge-phone", "huge-int-attribute", "infinite-attribute", "bad-message", "tab-in-name", "bad-url", "deep"],
)
def test_values_that_are_cleaned_or_dropped_keep_the_lead(
    practice: Practice, tmp_path: Path, data: dict[str, Any], payload: dict[str, Any]
) -> None:
    poison = poison_with(**data)
    poison["payload"].update(payload)
    text = json.dumps(poison, ensure_ascii=True).replace("Infinity", "1e999")
    folder = write_folder(tmp_path, None)
    (folder / "poison.json").write_text(text, encoding="ascii")
    result = practice.run("ingest", "webflow", str(folder), "--json")
    assert result.exit_code == 0, (result.output, result.exception)
    assert_clean(result)
    assert json.loads(result.stdout)["contacts_created"] == 11
    assert practice.inbox_statuses() == {"processed": 11}
    shown = practice.run("timeline", POISON_EMAIL, "--json")
    assert shown.exit_code == 0, shown.output


def test_surrogate_in_the_only_email_quarantines_for_want_of_an_identity(practice: Practice, tmp_path: Path) -> None:
    folder = write_folder(tmp_path, poison_with(email="quil\ud83d@example.com"))
    result = practice.run("ingest", "webflow", str(folder), "--json")
    assert result.exit_code == 1
    assert_clean(result)
    report = json.loads(result.stdout)
    assert [q["field"] for q in report["quarantined"]] == ["identity"]
    assert any("'email[0]'" in w and "lone surrogate" in w for w in report["warnings"])
    assert practice.contacts() == 10


def test_surrogate_in_the_record_id_is_refused(practice: Practice, tmp_path: Path) -> None:
    folder = write_folder(tmp_path, webflow("x\ud83d", {"email": POISON_EMAIL, "First Name": POISON_FIRST}))
    result = practice.run("ingest", "webflow", str(folder), "--json")
    assert result.exit_code == 1
    assert_clean(result)
    [q] = json.loads(result.stdout)["quarantined"]
    assert q["field"] == "record_id" and q["record"] == "#0"
    assert practice.contacts() == 10


def test_an_unexpected_failure_of_one_record_quarantines_it_without_a_traceback(
    practice: Practice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any exception while one record is mapped (a bug, a plugin) costs that record only;
    the exception's text (which could quote a value) is shown only with --debug."""
    original = RecordMapper.interaction_to_record

    def explode(self: RecordMapper, interaction: Any, key: Any) -> Any:
        if interaction.body == "explode":
            raise RuntimeError(f"cannot handle {POISON_FIRST}")
        return original(self, interaction, key)

    monkeypatch.setattr(RecordMapper, "interaction_to_record", explode)
    folder = write_folder(tmp_path, poison_with(Message="explode"))
    result = practice.run("ingest", "webflow", str(folder))
    assert result.exit_code == 1, (result.output, result.exception)
    assert_clean(result)
    [line] = [ln for ln in result.stdout.splitlines() if "poison.json" in ln]
    assert "field 'interaction'" in line and "cannot be stored (RuntimeError)" in line
    assert practice.contacts() == 10
    assert practice.inbox_statuses() == {"processed": 10, "quarantined": 1}

    debug = practice.run("ingest", "webflow", str(folder), debug=True)
    assert debug.exit_code == 1
    assert "Traceback" in debug.stderr and "RuntimeError" in debug.stderr


def test_an_internal_error_is_one_line_unless_debugging(
    practice: Practice, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError(f"bug near {POISON_FIRST}")

    monkeypatch.setattr(CareCRM, "ingest_payloads", broken)
    folder = write_folder(tmp_path, None)
    result = practice.run("ingest", "webflow", str(folder))
    assert result.exit_code == 2
    assert_clean(result)
    assert "error: internal error (RuntimeError)" in result.stderr and "--debug" in result.stderr
    debug = practice.run("ingest", "webflow", str(folder), debug=True)
    assert isinstance(debug.exception, RuntimeError)


def test_odd_headers_and_url_survive_the_inbox(practice: Practice, tmp_path: Path) -> None:
    """A header or URL that UTF-8 cannot encode (how Python reads non-UTF-8 bytes of an
    argument) is kept exactly in the encrypted inbox and does not stop the payload."""
    folder = write_folder(tmp_path, None)
    odd = "caf\udce9 \ud83d \x00"
    result = practice.run(
        "ingest", "webflow", str(folder / "good-0.json"), "--header", f"X-Odd:{odd}", "--url", f"https://x/{odd}"
    )
    assert result.exit_code == 0, (result.output, result.exception)
    [entry] = json.loads(practice.run("inbox", "list", "--json").stdout)
    shown = practice.run("inbox", "show", entry["id"], "--json")
    assert shown.exit_code == 0, (shown.output, shown.exception)
    payload = json.loads(shown.stdout)["payload"]
    assert payload["headers"]["X-Odd"] == odd and payload["url"] == f"https://x/{odd}"
    human = practice.run("inbox", "show", entry["id"])
    assert human.exit_code == 0, (human.output, human.exception)
