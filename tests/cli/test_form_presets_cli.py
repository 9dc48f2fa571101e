"""The form tools' presets from the command line: after a bare ``carecrm init`` each
corpus file of Typeform, Webflow, Unbounce and Jotform goes in with ``carecrm ingest
<vendor> FILE`` (no ``[sources.*]`` table), a second run adds nothing, and ``carecrm
plugins`` lists each source with its formats."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli
from carecrm.core.testing import resources

REPO = Path(__file__).resolve().parents[2]
CORPUS = resources.corpus_dir(REPO)

#: vendor → (corpus file, whether it holds an email or phone: else quarantined 'identity')
FILES: dict[str, list[tuple[str, bool]]] = {
    "typeform": [("typeform/form_response_example.json", True)],
    "webflow": [("webflow/form_submission_doc_example.json", True)],
    "unbounce": [
        ("unbounce/form_submission_email.form.txt", True),
        ("unbounce/form_submission_with_xml.form.txt", False),
    ],
    "jotform": [("jotform/submission_multipart.txt", False)],
}
needs_corpus = resources.needs_corpus(CORPUS, *(CORPUS / f for files in FILES.values() for f, _ in files))


def run(config: Path, *args: str) -> Result:
    env = {"CARECRM_CONFIG": str(config), "CARECRM_LOAD_PLUGINS": "", "NO_COLOR": "1"}
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def bare(tmp_path: Path) -> Path:
    """A practice made by a bare ``carecrm init`` (no source example): its config path."""
    root = tmp_path / "practice"
    result = CliRunner().invoke(
        cli, ["init", "--dir", str(root), "--timezone", "America/Chicago"], env={"CARECRM_LOAD_PLUGINS": ""}
    )
    assert result.exit_code == 0, result.output
    with (root / "carecrm.toml").open("rb") as fh:
        assert "sources" not in tomllib.load(fh)
    return root / "carecrm.toml"


@needs_corpus
@pytest.mark.parametrize("vendor", sorted(FILES))
def test_ingest_by_name_after_a_bare_init(bare: Path, vendor: str) -> None:
    for name, identified in FILES[vendor]:
        path = CORPUS / name
        result = run(bare, "ingest", vendor, str(path), "--json")
        assert result.exit_code == (0 if identified else 1), (result.output, result.exception)
        summary = json.loads(result.stdout)
        if identified:
            assert summary["interactions_added"] == 1 and summary["quarantined"] == []
        else:
            (q,) = summary["quarantined"]
            assert q["field"] == "identity"
        again = run(bare, "ingest", vendor, str(path), "--json")
        assert json.loads(again.stdout)["interactions_added"] == 0


def test_plugins_lists_the_presets_with_their_formats(bare: Path) -> None:
    result = run(bare, "plugins", "--json")
    assert result.exit_code == 0, result.output
    rows = {r["name"]: r for r in json.loads(result.stdout)}
    mapped = rows["carecrm.plugins.sources.mapped"]
    for vendor in FILES:
        assert f"source:{vendor}" in mapped["components"]
        assert mapped["formats"][vendor], vendor
    assert mapped["formats"]["typeform"] == ["form_response (JSON)"]
    assert "rawRequest" in mapped["formats"]["jotform"][0]
    assert rows["carecrm.plugins.scoring.points"]["formats"] == {}
    table = run(bare, "plugins")
    assert "Sources" in table.stdout and "form_submission (JSON)" in table.stdout
