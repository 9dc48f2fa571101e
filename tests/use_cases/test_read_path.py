"""One read path for personal data (issue 7, item 4): only ``carecrm.core.privacy.read_path``
calls the mapper's decrypting functions, and what it reads is audited with the actor, the
purpose and the fields."""

from __future__ import annotations

import ast
from collections.abc import Callable
from pathlib import Path

from carecrm.core import CareCRM, InteractionDraft, LeadEvent
from carecrm.core.model.domain import Actor
from carecrm.core.model.timeutil import utcnow
from carecrm.core.privacy.mapping import RecordMapper
from carecrm.core.privacy.read_path import ReadPath

CORE = Path(__file__).resolve().parents[2] / "core"
PRIVACY = CORE / "privacy"
ALLOWED = {"read_path.py", "mapping.py"}  # the read path, and the mapper's own helpers
CARLA = Actor.parse("carla:coordinator")

#: The mapper's functions that decrypt (or copy out) stored records.
DECRYPTING = {name for name in dir(RecordMapper) if name.endswith("_from_record")} | {
    "inbox_payload",
    "consent_evidence",
}


def _receiver(node: ast.Attribute) -> str:
    return ast.unparse(node.value)


def test_only_the_read_path_calls_the_decrypting_functions() -> None:
    assert {"contact_from_record", "interaction_from_record", "note_from_record", "task_from_record"} <= DECRYPTING
    offenders: list[str] = []
    for path in sorted(CORE.rglob("*.py")):
        if path.name in ALLOWED and path.parent == PRIVACY:
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and node.attr in DECRYPTING:
                # the read path's own methods of the same name are the way in
                if _receiver(node).endswith("read_path"):
                    continue
                offenders.append(f"{path.relative_to(CORE)}:{node.lineno}: {ast.unparse(node)}")
            if isinstance(node, ast.ImportFrom) and node.module == "carecrm.core.privacy.mapping":
                names = {alias.name for alias in node.names}
                assert not names & DECRYPTING, path
    assert offenders == []


def test_the_read_path_itself_uses_them() -> None:
    tree = ast.parse((PRIVACY / "read_path.py").read_text(encoding="utf-8"))
    used = {n.attr for n in ast.walk(tree) if isinstance(n, ast.Attribute) and n.attr in DECRYPTING}
    assert {"contact_from_record", "interaction_from_record", "note_from_record", "task_from_record"} <= used
    assert "inbox_payload" in used
    assert ReadPath.fields_for.__doc__ and "164.502(b)" in ReadPath.fields_for.__doc__


def test_reads_are_audited_with_actor_purpose_and_fields(make_app: Callable[..., CareCRM]) -> None:
    app = make_app()
    event = LeadEvent(
        source="typeform",
        record_ref="r1",
        emails=("ann.placeholder@example.com",),
        first_name="Ann",
        interactions=(
            InteractionDraft(kind="form.submitted", occurred_at=utcnow(), idempotency_key="r1:f", body="acne"),
        ),
    )
    cid = app.ingest([event], actor=CARLA).contact_ids[0]
    before = len(app.audit_log(limit=1000))
    app.timeline(cid, actor=CARLA, purpose="care")
    app.find_contacts(email="ann.placeholder@example.com", actor=CARLA)
    app.resolve("ann.placeholder@example.com", actor=CARLA)
    app.add_note(cid, "called", actor=CARLA)
    app.notes(cid, actor=CARLA)
    entries = app.audit_log(limit=1000)[before:]
    assert [(e.actor, e.role, e.action, e.purpose, e.fields) for e in entries] == [
        ("carla", "coordinator", "timeline.read", "care", ["name", "identities", "interactions", "body"]),
        ("carla", "coordinator", "contact.read", "lookup", ["name", "identities"]),
        ("carla", "coordinator", "contact.read", "view", ["name", "identities"]),
        ("carla", "coordinator", "note.add", None, ["note"]),
        ("carla", "coordinator", "notes.read", "care", ["note"]),
    ]
    assert all(e.contact_id == cid for e in entries)
