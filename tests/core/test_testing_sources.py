"""The connector contract kit itself (``carecrm.core.testing.sources``): it must find what is
wrong, not only pass what is right.  A tiny connector (one lead per line) and cases written
to a temporary folder drive it."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import attrs
import pytest

from carecrm.core import LeadEvent, RawPayload, Rejected, SourceConnector, ValidationFailed
from carecrm.core.config import Settings
from carecrm.core.model.domain import ConsentSignal, InteractionDraft
from carecrm.core.testing.sources import CaseError, check_case, check_folder, load_cases, parametrize

WHEN = datetime(2026, 4, 2, 15, 0, tzinfo=UTC)


class Lines(SourceConnector):
    """``email,kind`` per line; a line without ``@`` is rejected; ``!`` refuses the payload;
    options bend the contract for the tests below."""

    connector_id = "lines"

    def parse(self, payload: RawPayload) -> Iterable[LeadEvent | Rejected]:
        text = payload.body.decode()
        if text.startswith("!"):
            raise ValidationFailed(self.name, "payload", "body", "starts with !")
        if text.startswith("boom"):
            raise RuntimeError("a connector bug quoting ann.placeholder@example.com")
        for i, line in enumerate(text.splitlines()):
            email, _, kind = line.partition(",")
            if "@" not in email:
                yield Rejected(f"#{i}", "email", f"not an email: {email}" if self.options.get("leaky") else "no @")
                continue
            key = "same" if self.options.get("same_keys") else f"{kind}:{i}"
            yield LeadEvent(
                source=self.options.get("source", self.name),
                record_ref=f"#{i}",
                emails=(email,),
                interactions=(InteractionDraft(kind=kind, channel="web", occurred_at=WHEN, idempotency_key=key),),
                consents=(
                    ConsentSignal(
                        contact_point_kind="email",
                        channel="email",
                        purpose="marketing",
                        status="granted",
                        occurred_at=WHEN,
                        idempotency_key=f"{key}:consent",
                    ),
                ),
            )
        if self.options.get("junk"):
            yield "junk"  # type: ignore[misc]


def lines(**options: Any) -> Lines:
    return Lines(name="lines", options=options, settings=Settings())


BODY = "ann.placeholder@example.com,form.submitted\nnot-an-email\nbo.placeholder@example.com,chat.started\n"
GOOD = {
    "payload": "leads.txt",
    "content_type": "text/plain",
    "records": [
        {
            "ref": "#0",
            "kinds": ["form.submitted"],
            "channel": "web",
            "present": ["emails", "consents"],
            "absent": ["phones", "full_name"],
            "equals": {"emails": ["ann.placeholder@example.com"], "interactions.0.occurred_at": "2026-04-02T15:00:00Z"},
            "consents": [{"purpose": "marketing", "status": "granted"}],
        },
        {"ref": "#2", "kinds": ["chat.started"]},
    ],
    "rejected": [{"ref": "#1", "field": "email", "reason": "no @"}],
    "private": ["not-an-email"],
}


def write(folder: Path, name: str, expected: dict[str, Any], body: str = BODY) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.expected.json").write_text(json.dumps(expected))
    if body is not None and "payload" in expected:
        (folder / expected["payload"]).write_text(body)


def test_a_case_that_holds_passes(tmp_path: Path) -> None:
    write(tmp_path, "good", GOOD)
    (case,) = load_cases(tmp_path)
    assert case.name == "good" and case.payload().content_type == "text/plain"
    assert check_case(lines(), case) == []
    assert check_folder(tmp_path, lines) == {"good": []}


def test_each_difference_is_reported(tmp_path: Path) -> None:
    wrong = json.loads(json.dumps(GOOD))
    r0 = wrong["records"][0]
    r0.update(ref="#9", kinds=["chat.started"], channel="phone", present=["phones"], absent=["emails"])
    r0["equals"] = {"emails": ["other@example.com"], "no_such_field": 1}
    r0["consents"] = [{"purpose": "marketing", "status": "revoked"}]
    wrong["rejected"] = [{"ref": "#5", "field": "phone", "reason": "nope"}]
    write(tmp_path, "wrong", wrong)
    failures = check_case(lines(), load_cases(tmp_path)[0])
    for expected in (
        "records[0].ref",
        "records[0].kinds",
        "records[0].channel",
        "records[0].phones: expected a value",
        "records[0].emails: expected none",
        "records[0].emails: expected ['other@example.com']",
        "records[0].no_such_field: no such attribute",
        "records[0].consents",
        "rejected[0].ref",
        "rejected[0].field",
        "rejected[0].reason",
    ):
        assert any(f.startswith(expected) for f in failures), (expected, failures)
    fewer = GOOD | {"records": GOOD["records"][:1], "rejected": []}
    write(tmp_path, "wrong", fewer)
    failures = check_case(lines(), load_cases(tmp_path)[0])
    assert any(f.startswith("records: expected 1 lead events, got 2") for f in failures)
    assert any(f.startswith("rejected: expected 0 refused records, got 1") for f in failures)


def test_the_contract_rules_are_checked_for_every_case(tmp_path: Path) -> None:
    write(tmp_path, "good", GOOD)
    (case,) = load_cases(tmp_path)
    assert any("only LeadEvent and Rejected" in f for f in check_case(lines(junk=True), case))
    assert any("share an idempotency key" in f for f in check_case(lines(same_keys=True), case))
    relaxed = attrs.evolve(case, expected={**case.expected, "repeated_keys": True})
    assert check_case(lines(same_keys=True), relaxed) == []
    assert any("source: expected the connector's name" in f for f in check_case(lines(source="other"), case))
    assert any("repeats a private value" in f for f in check_case(lines(leaky=True), case))


def test_refused_payloads(tmp_path: Path) -> None:
    write(tmp_path, "refused", {"payload": "bad.txt", "refused": {"field": "body", "reason": "starts with"}}, body="!x")
    write(tmp_path, "refused_wrongly", {"payload": "bad2.txt", "refused": {"field": "email"}}, body="!x")
    write(
        tmp_path,
        "not_refused",
        {"payload": "ok.txt", "refused": {"field": "body"}},
        body="a@example.com,form.submitted",
    )
    write(tmp_path, "unexpected", {"payload": "bad3.txt"}, body="!x")
    write(tmp_path, "crash", {"payload": "boom.txt"}, body="boom")
    results = check_folder(tmp_path, lines)
    assert results["refused"] == []
    assert results["refused_wrongly"] == ["refused.field: expected 'email', got 'body'"]
    assert results["not_refused"][0].startswith("expected the payload to be refused")
    assert results["unexpected"] == ["the payload was refused: field 'body': starts with !"]
    assert results["crash"] == ["verify/parse raised RuntimeError (only ValidationFailed may refuse a payload)"]
    assert "placeholder" not in results["crash"][0]


@pytest.mark.parametrize(
    ("expected", "message"),
    [
        ({"records": []}, "key 'payload'"),
        ({"payload": "x", "recrods": []}, "unknown key 'recrods'"),
        ({"payload": "x", "records": [{"kind": ["a.b"]}]}, "unknown key records[0].'kind'"),
        ({"payload": "x", "rejected": [{"fields": "a"}]}, "unknown key rejected[0].'fields'"),
    ],
)
def test_a_malformed_case_is_an_error_naming_the_key(tmp_path: Path, expected: dict[str, Any], message: str) -> None:
    write(tmp_path, "bad", expected, body="")
    with pytest.raises(CaseError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_cases(tmp_path)


def test_parametrize_skips_a_case_whose_payload_is_missing(tmp_path: Path) -> None:
    write(tmp_path, "here", GOOD)
    (tmp_path / "gone.expected.json").write_text(json.dumps({"payload": "missing.json"}))
    mark = parametrize(tmp_path)
    assert mark.args[0] == "case"
    params = {p.id: p for p in mark.args[1]}
    assert set(params) == {"here", "gone"}
    assert not params["here"].marks
    (skip,) = params["gone"].marks
    assert skip.name == "skip" and "missing.json" in skip.kwargs["reason"]
    assert check_folder(tmp_path, lines) == {"here": []}  # a missing payload is not run
    with pytest.raises(FileNotFoundError):
        load_cases(tmp_path / "nowhere")


def test_the_documented_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """docs/writing_plugins.md: the contract kit's example case and test, on the tutorial's
    connector, as written."""
    import re
    import sys
    import types

    text = (Path(__file__).resolve().parents[2] / "docs" / "writing_plugins.md").read_text()
    python = re.findall(r"```python\n(.*?)```", text, re.S)
    module = types.ModuleType("carecrm_chatbot")
    exec(compile(next(b for b in python if "class ChatbotConnector" in b), "carecrm_chatbot", "exec"), module.__dict__)
    monkeypatch.setitem(sys.modules, "carecrm_chatbot", module)
    (case_json,) = re.findall(r"```json\n(.*?)```", text, re.S)
    folder = tmp_path / "payloads"
    folder.mkdir()
    (folder / "conversation.expected.json").write_text(case_json)
    body = {"id": "c-81", "started": "2026-04-02T15:00:00Z", "visitor": {"email": "ann@example.com"}, "text": "Hi"}
    (folder / "conversation.json").write_text(json.dumps(body))
    namespace: dict[str, Any] = {"__file__": str(tmp_path / "test_chatbot.py")}
    exec(compile(next(b for b in python if "def test_contract" in b), "test_chatbot", "exec"), namespace)
    test = namespace["test_contract"]
    (mark,) = test.pytestmark
    (param,) = mark.args[1]
    test(param.values[0])
    # and the check is real: a wrong expectation fails it
    (folder / "conversation.expected.json").write_text(case_json.replace("chat.started", "form.submitted"))
    with pytest.raises(AssertionError):
        test(load_cases(folder)[0])
