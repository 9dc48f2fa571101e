"""A vendor carecrm does not ship goes in by mapping alone (issue 8, item 10), exactly as
``docs/sources/mapped.md`` ("Adding a tool carecrm does not ship") shows: the test copies
the page's ``[sources.gravity]`` and ``[sources.calltrack]`` tables into a fresh
practice's ``carecrm.toml`` and ingests a payload with ``carecrm ingest``.

Also, from the command line, the start-up checks of item 8: ``carecrm sources check``
lists every problem and exits 2 (0 when all is well), every command refuses to start
with a broken mapping, and a record a valid mapping cannot read is quarantined with its
payload already in the inbox.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from carecrm.cli.main import cli
from carecrm.core.app import CareCRM
from carecrm.core.model.domain import Actor

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "sources" / "mapped.md"
ACTOR = Actor.parse("tester:admin")
EMAIL = "ana.placeholder@example.com"

#: A Gravity Forms entry object (https://docs.gravityforms.com/entry-object/) as the
#: Webhooks Add-On sends it with "All Fields", written for this test: placeholder data,
#: a form whose field 1 is a Name field, 2 email, 3 phone, 4 a service drop-down,
#: 5 a paragraph, 6 and 7 checkboxes (6.1 checked, 7.1 not), 8 a single-line text.
GRAVITY_ENTRY: dict[str, Any] = {
    "id": "1042",
    "form_id": "3",
    "post_id": None,
    "date_created": "2025-03-04 15:27:09",
    "date_updated": "2025-03-04 15:27:09",
    "is_starred": 0,
    "is_read": 0,
    "ip": "203.0.113.24",
    "source_url": "https://www.example-derm.test/consult/?utm_source=google&utm_medium=cpc"
    "&utm_campaign=acne-spring&gclid=TeSt-gclid-123",
    "user_agent": "Mozilla/5.0 (Macintosh; Intel Mac OS X 14_3) AppleWebKit/605.1.15 (KHTML, like Gecko)",
    "currency": "USD",
    "payment_status": None,
    "payment_date": None,
    "payment_amount": None,
    "payment_method": "",
    "transaction_id": None,
    "is_fulfilled": None,
    "created_by": None,
    "transaction_type": None,
    "status": "active",
    "1.2": "",
    "1.3": "Ana",
    "1.4": "",
    "1.6": "Placeholder",
    "1.8": "",
    "2": EMAIL,
    "3": "(312) 555-0142",
    "4": "acne",
    "5": "I would like a consult about acne scarring.",
    "6.1": "I agree to receive text messages about offers",
    "7.1": "",
    "8": "Instagram ad",
}


def doc_block(lang: str, first: str) -> str:
    """The fenced ``lang`` block of the mapped-connector page that starts with ``first``."""
    text = DOC.read_text(encoding="utf-8")
    for block in re.findall(rf"```{lang}\n(.*?)```", text, flags=re.S):
        if block.startswith(first):
            return str(block)
    raise AssertionError(f"no {lang} block starting {first!r} in {DOC}")


def run(config: Path, *args: str) -> Result:
    env = {"CARECRM_CONFIG": str(config), "CARECRM_LOAD_PLUGINS": "", "NO_COLOR": "1"}
    return CliRunner().invoke(cli, list(args), env=env)


@pytest.fixture
def practice(tmp_path: Path) -> Path:
    """A practice made by a bare ``carecrm init`` (US, America/Chicago): its config path."""
    root = tmp_path / "practice"
    result = CliRunner().invoke(
        cli, ["init", "--dir", str(root), "--timezone", "America/Chicago"], env={"CARECRM_LOAD_PLUGINS": ""}
    )
    assert result.exit_code == 0, result.output
    return root / "carecrm.toml"


def append(config: Path, table: str) -> None:
    with config.open("a", encoding="utf-8") as fh:
        fh.write("\n" + table)


def test_gravity_forms_by_mapping_alone(practice: Path, tmp_path: Path) -> None:
    append(practice, doc_block("toml", "[sources.gravity]"))
    assert run(practice, "sources", "check").exit_code == 0
    entry = tmp_path / "gravity-entry-1042.json"
    entry.write_text(json.dumps(GRAVITY_ENTRY, indent=2), encoding="utf-8")

    result = run(practice, "ingest", "gravity", str(entry), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["accepted"], summary["contacts_created"], summary["quarantined"]) == (1, 1, [])
    assert {"user_agent", "payment_status", "1.2", "7.1"} <= set(summary["dropped_fields"])
    assert not {"1.3", "2", "3", "5", "6.1", "8", "ip"} & set(summary["dropped_fields"])

    app = CareCRM.from_config(practice, load_entrypoints=False)
    try:
        timeline = app.timeline(EMAIL, actor=ACTOR)
        contact = timeline.contact
        assert (contact.first_name, contact.last_name, contact.service_interest) == ("Ana", "Placeholder", "acne")
        assert {i.kind: i.value for i in contact.identities} == {"email": EMAIL, "phone": "+13125550142"}
        (inter,) = timeline.interactions
        assert inter.kind == "form.submitted" and inter.channel == "web" and inter.source == "gravity"
        assert inter.occurred_at.isoformat() == "2025-03-04T15:27:09+00:00"  # UTC, not the practice's zone
        assert inter.body == "I would like a consult about acne scarring."
        assert inter.attributes == {"heard_about_us": "Instagram ad", "external_record_id": "1042"}
        tp = inter.touchpoint
        assert (tp.source, tp.medium, tp.campaign, tp.gclid, tp.form_id) == (
            "google",
            "cpc",
            "acne-spring",
            "TeSt-gclid-123",
            "3",
        )
        assert tp.landing_page == "https://www.example-derm.test/consult/"
        with app.storage.unit_of_work() as uow:
            (consent,) = uow.consents.for_contact(contact.id)  # 6.1 checked; 7.1 unchecked gives nothing
        assert (consent.channel, consent.purpose, consent.status) == ("sms", "marketing", "granted")
    finally:
        app.close()

    again = json.loads(run(practice, "ingest", "gravity", str(entry), "--json").stdout)
    assert again["interactions_added"] == 0 and again["contacts_created"] == 0


def test_a_call_tracking_tool_by_mapping_alone(practice: Path, tmp_path: Path) -> None:
    append(practice, doc_block("toml", "[sources.calltrack]"))
    call = tmp_path / "call.json"
    call.write_text(doc_block("json", '{"event": "call.completed"'), encoding="utf-8")
    other = tmp_path / "other-event.json"
    other.write_text(json.dumps({"event": "call.started", "call": {"id": "CA-88214"}}), encoding="utf-8")

    result = run(practice, "ingest", "calltrack", str(call), str(other), "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["accepted"], summary["empty_payloads"], summary["quarantined"]) == (1, 1, [])

    app = CareCRM.from_config(practice, load_entrypoints=False)
    try:
        timeline = app.timeline("+13125550199", actor=ACTOR)
        assert {i.kind: i.value for i in timeline.contact.identities} == {"phone": "+13125550199", "email": EMAIL}
        assert timeline.contact.first_name is None  # caller-ID text is not a name
        (inter,) = timeline.interactions
        assert (inter.kind, inter.channel, inter.direction) == ("call.completed", "phone", "inbound")
        assert inter.occurred_at.isoformat() == "2025-03-04T15:17:09+00:00"  # 1741101429, epoch seconds
        assert inter.body == "Botox consult"
        assert inter.attributes == {"duration_s": 184, "new_patient": "yes", "external_record_id": "CA-88213"}
        assert (inter.touchpoint.source, inter.touchpoint.medium, inter.touchpoint.gclid) == (
            "google",
            "organic",
            "TeSt-456",
        )
    finally:
        app.close()


# --------------------------------------------------------------------------- item 8 from the command line

BROKEN = """
[sources.forms]
connector = "mapped"
kind = "form.submited"
record_id = '"2"'
occurred_at = "join(' ', [date, time]"
only_if = "startswith(type, 'form')"
[sources.forms.fields]
email = '"2"'

[sources.tf]
connector = "typeform"
channel = "webb"
"""


def test_sources_check_lists_every_problem_and_exits_2(practice: Path) -> None:
    assert run(practice, "sources", "check").exit_code == 0
    append(practice, BROKEN)
    result = run(practice, "sources", "check")
    assert result.exit_code == 2
    lines = result.stderr.splitlines()
    assert [line.split("'")[1:4:2] for line in lines[:-1]] == [
        ["forms", "only_if"],
        ["forms", "kind"],
        ["forms", "occurred_at"],
        ["forms", "record_id"],
        ["tf", "channel"],
    ]
    assert "known: abs, avg" in lines[0] and "known: ad.clicked" in lines[1] and "form.submitted" in lines[1]
    assert "selects the same value as fields.email" in lines[3]
    assert lines[-1] == "error: 5 problems in the sources configuration"
    as_json = run(practice, "sources", "check", "--json")
    assert as_json.exit_code == 2 and len(json.loads(as_json.stdout)["problems"]) == 5


def test_no_command_starts_with_a_broken_mapping(practice: Path, tmp_path: Path) -> None:
    append(practice, BROKEN)
    payload = tmp_path / "p.json"
    payload.write_text("{}", encoding="utf-8")
    for args in (("sources", "list"), ("ingest", "forms", str(payload))):
        result = run(practice, *args)
        assert result.exit_code == 2
        assert "5 problems in the [sources.*] configuration" in result.stderr
        assert "source 'forms': option 'kind'" in result.stderr


def test_a_record_the_mapping_cannot_read_is_quarantined_from_the_inbox(practice: Path, tmp_path: Path) -> None:
    # compiles (so the app starts) but join() cannot apply to a record without a time
    append(
        practice,
        '[sources.forms]\nconnector = "mapped"\nrecord_id = "id"\n'
        'occurred_at = "join(\' \', [date, time])"\ntime_format = "%Y-%m-%d %H:%M"\n'
        '[sources.forms.fields]\nemail = "email"\n',
    )
    payload = tmp_path / "p.json"
    payload.write_text(json.dumps({"id": "7", "date": "2025-03-04", "email": EMAIL}), encoding="utf-8")
    result = run(practice, "ingest", "forms", str(payload), "--json")
    assert result.exit_code == 1
    (q,) = json.loads(result.stdout)["quarantined"]
    assert q["field"] == "occurred_at" and EMAIL not in json.dumps(q)
    listed = json.loads(run(practice, "inbox", "list", "--json").stdout)
    assert [(row["source"], row["status"]) for row in listed] == [("forms", "quarantined")]
