"""The pending-pointer flow on the command line, after a bare ``carecrm init``: a Meta
Lead Ads webhook (a pointer, no lead) goes in by the vendor's name and waits as
``pending``; ``carecrm inbox list --status pending`` shows what must be fetched;
``carecrm inbox complete ID FILE...`` completes it from the Graph API objects saved to
files.  Corpus payloads (``meta_lead_ads``) are used when the corpus is found; the test
skips otherwise.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner, Result

from carecrm.cli.main import cli
from carecrm.core.testing.resources import corpus_dir, needs_corpus

REPO = Path(__file__).resolve().parents[2]
META = corpus_dir(REPO) / "meta_lead_ads"


def run(config: Path, *args: str) -> Result:
    env = {"CARECRM_CONFIG": str(config), "CARECRM_LOAD_PLUGINS": "", "NO_COLOR": "1"}
    return CliRunner().invoke(cli, list(args), env=env)


def lead_file(tmp_path: Path, lead_id: str) -> Path:
    obj: dict[str, Any] = json.loads((META / "lead_graph_api_object.json").read_text())
    obj["id"] = lead_id
    path = tmp_path / f"lead_{lead_id}.json"
    path.write_text(json.dumps(obj))
    return path


@needs_corpus(corpus_dir(REPO), META / "leadgen_webhook_notification.json")
def test_ingest_pending_list_complete(tmp_path: Path) -> None:
    root = tmp_path / "practice"
    init = CliRunner().invoke(cli, ["init", "--dir", str(root)], env={"CARECRM_LOAD_PLUGINS": ""})
    assert init.exit_code == 0, init.output
    config = root / "carecrm.toml"
    webhook = str(META / "leadgen_webhook_notification.json")
    # no [sources.meta_lead_ads] table: by name; no secret: an operator's import, --no-verify
    ingest = run(config, "ingest", "meta_lead_ads", webhook, "--no-verify", "--json")
    assert ingest.exit_code == 0, ingest.output  # pending is not a failure
    assert json.loads(ingest.stdout)["pending"] == 1
    listed = run(config, "inbox", "list", "--status", "pending", "--json")
    assert listed.exit_code == 0, listed.output
    (entry,) = json.loads(listed.stdout)
    assert entry["status"] == "pending" and "123123123123" in entry["reason"]
    table = run(config, "inbox", "list", "--status", "pending").stdout
    assert "pending" in table and "waiting on fetch" in table

    wrong = run(config, "inbox", "complete", entry["id"], str(META / "lead_graph_api_object.json"))
    assert wrong.exit_code == 1  # a lead the webhook does not point to: refused, named by its file
    assert "lead_graph_api_object.json" in wrong.output and "not a lead this webhook points to" in wrong.output

    files = [str(lead_file(tmp_path, "123123123123")), str(lead_file(tmp_path, "123123123124"))]
    done = run(config, "inbox", "complete", entry["id"], *files, "--json")
    assert done.exit_code == 0, done.output
    assert json.loads(done.stdout)["accepted"] == 2
    assert json.loads(run(config, "inbox", "list", "--status", "pending", "--json").stdout) == []
    (processed,) = json.loads(run(config, "inbox", "list", "--status", "processed", "--json").stdout)
    assert processed["id"] == entry["id"]
    again = run(config, "inbox", "complete", entry["id"], *files)
    assert again.exit_code == 2 and "not pending" in again.output
