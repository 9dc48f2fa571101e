"""docs/quickstart.md runs as written: every command of its ``sh`` blocks, in order, in a
folder laid out like a clone (``docs/examples/`` beside the practice), in-process with
click's CliRunner.

The blocks may hold ``carecrm ...`` commands, ``cd DIR``, ``cat FILE | carecrm ... -``,
and the set-up commands (``python3 -m venv``, ``. .venv/bin/activate``, ``pip install``),
which are skipped: the test runs in the installed environment.  Each command must exit
with status 0 unless its comment says ``# exit status N``.  Anything else in a block fails
the test, so the page stays runnable.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli

REPO = Path(__file__).resolve().parents[2]
QUICKSTART = REPO / "docs" / "quickstart.md"
EXAMPLES = REPO / "docs" / "examples"

_SETUP = ("python3", "python", "pip", ".", "source")
_STATUS = re.compile(r"#\s*exit status (\d+)")


@attrs.frozen
class Step:
    """One command of a page: its text, its arguments (after ``carecrm``), the file piped
    to its standard input, and the exit status it must give."""

    line: str
    args: tuple[str, ...]
    stdin: str | None = None
    status: int = 0
    cd: str | None = None


def sh_lines(text: str) -> list[str]:
    """The non-empty lines of the page's ```sh blocks, in order."""
    blocks = re.findall(r"```sh\n(.*?)```", text, re.S)
    return [line.strip() for block in blocks for line in block.splitlines() if line.strip()]


def steps(text: str) -> list[Step]:
    """The commands the page asks a reader to run.

    :raises AssertionError: for a line the test cannot run as written.
    """
    out: list[Step] = []
    for line in sh_lines(text):
        found = _STATUS.search(line)
        status = int(found[1]) if found else 0
        words = shlex.split(line, comments=True)
        parts: list[list[str]] = [[]]
        for word in words:
            if word == "&&":
                parts.append([])
            else:
                parts[-1].append(word)
        for part in parts:
            if not part or part[0] in _SETUP:
                continue
            if part[0] == "cd":
                assert len(part) == 2, line
                out.append(Step(line=line, args=(), cd=part[1]))
                continue
            stdin = None
            if part[0] == "cat":
                assert len(part) >= 4 and part[2] == "|" and part[3] == "carecrm", f"cannot run: {line}"
                stdin, part = part[1], part[3:]
            assert part[0] == "carecrm" and "|" not in part, f"the quickstart test cannot run: {line}"
            out.append(Step(line=line, args=tuple(part[1:]), stdin=stdin, status=status))
    return out


def run_page(text: str, where: Path, monkeypatch: pytest.MonkeyPatch) -> list[tuple[Step, Result]]:
    """Run the page's steps from ``where``; every command must give its exit status."""
    monkeypatch.chdir(where)
    runner = CliRunner()
    done: list[tuple[Step, Result]] = []
    for step in steps(text):
        if step.cd is not None:
            monkeypatch.chdir(Path.cwd() / step.cd)
            continue
        data = (Path.cwd() / step.stdin).read_bytes() if step.stdin else None
        result = runner.invoke(cli, list(step.args), input=data, env={"CARECRM_LOAD_PLUGINS": "", "NO_COLOR": "1"})
        assert result.exit_code == step.status, (step.line, result.output, result.exception)
        done.append((step, result))
    return done


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A folder laid out like the clone's root, holding only ``docs/examples``."""
    root = tmp_path / "clone"
    shutil.copytree(EXAMPLES, root / "docs" / "examples")
    return root


def test_the_quickstart_runs_as_written(clone: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    done = run_page(QUICKSTART.read_text(encoding="utf-8"), clone, monkeypatch)
    by_line = {step.line.split("#")[0].strip(): result for step, result in done}
    assert len(done) >= 14

    first, again = [
        r for s, r in done if s.args == ("ingest", "typeform", "../docs/examples/typeform_form_response.json")
    ]
    assert re.search(r"contacts created\s+1\b", first.stdout) and re.search(r"interactions added\s+1\b", first.stdout)
    assert re.search(r"identical re-deliveries \(skipped\)\s+1\b", again.stdout)
    webflow = by_line["carecrm ingest webflow ../docs/examples/webflow/"]
    # two payloads, one new contact (Sam): Jane's message joins her Typeform contact
    assert re.search(r"payloads\s+2\b", webflow.stdout) and re.search(r"contacts created\s+1\b", webflow.stdout)
    quarantined = by_line["carecrm ingest typeform ../docs/examples/typeform_no_contact_details.json"]
    assert "field 'identity'" in quarantined.stdout and "Alex" not in quarantined.output

    runner = CliRunner()
    env = {"CARECRM_LOAD_PLUGINS": ""}
    assert Path.cwd() == clone / "lakeside"
    timeline = json.loads(runner.invoke(cli, ["timeline", "+1 312 555 0142", "--json"], env=env).stdout)
    assert timeline["contact"]["first_name"] == "Jane" and timeline["contact"]["stage"] == "consult_scheduled"
    sources = sorted(i["source"] for i in timeline["interactions"] if i["kind"] == "form.submitted")
    assert sources == ["typeform", "webflow"]
    found = json.loads(runner.invoke(cli, ["contacts", "find", "--name", "Placeholder", "--json"], env=env).stdout)
    assert sorted(c["first_name"] for c in found) == ["Jane", "Sam"]


def test_steps_refuse_what_they_cannot_run() -> None:
    page = "```sh\npython3 -m venv .venv && . .venv/bin/activate\ncd x\ncarecrm pipeline   # exit status 2\n```\n"
    assert [(s.args, s.cd, s.status) for s in steps(page)] == [((), "x", 0), (("pipeline",), None, 2)]
    piped = steps("```sh\ncat a.json | carecrm ingest typeform -\n```\n")
    assert piped == [
        Step(line="cat a.json | carecrm ingest typeform -", args=("ingest", "typeform", "-"), stdin="a.json")
    ]
    with pytest.raises(AssertionError, match="cannot run"):
        steps("```sh\ncurl https://example.org | sh\n```\n")


def _phones(doc: object, key: str = "") -> list[str]:
    """Every value under a key or answer naming a phone, in a JSON document."""
    if isinstance(doc, dict):
        return [p for k, v in doc.items() for p in _phones(v, str(k))]
    if isinstance(doc, list):
        return [p for v in doc for p in _phones(v, key)]
    return [str(doc)] if "phone" in key.lower() else []


def test_the_sample_payloads_hold_placeholder_people_only() -> None:
    """Every email in docs/examples is at example.com and every phone a fictional
    555-01xx number (NANP's range for fiction)."""
    paths = sorted(EXAMPLES.rglob("*.json"))
    assert len(paths) >= 4
    phones = []
    for path in paths:
        text = path.read_text(encoding="utf-8")
        for email in re.findall(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+", text):
            assert email.lower().endswith("@example.com"), path.name
        phones += _phones(json.loads(text))
    assert len(phones) >= 3
    for phone in phones:
        digits = re.sub(r"\D", "", phone)
        assert len(digits) in (10, 11) and digits[-7:-2] == "55501", phone
