"""The audit log: every read of personal data is recorded, and tampering is detected
(an edited entry, a removed middle entry, a cut-off tail, an emptied log)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pytest

from carecrm.core import CareCRM, InteractionDraft, LeadEvent
from carecrm.core.model.domain import Actor

BOB = Actor.parse("bob:frontdesk")


def _app_with_reads(make_app: Callable[..., CareCRM]) -> CareCRM:
    app = make_app()
    cid = app.ingest(
        [
            LeadEvent(
                source="web",
                record_ref="r1",
                emails=("ann.placeholder@example.com",),
                first_name="Ann",
                interactions=(
                    InteractionDraft(
                        kind="form.submitted",
                        idempotency_key="form.submitted:r1",
                        occurred_at=datetime(2026, 4, 2, tzinfo=UTC),
                    ),
                ),
            )
        ],
        actor=BOB,
    ).contact_ids[0]
    app.timeline(cid, actor=BOB)
    app.find_contacts(email="ann.placeholder@example.com", actor=BOB)
    app.get_contact(cid, actor=BOB)
    return app


def test_reads_are_recorded_per_contact_with_actor_and_purpose(make_app: Callable[..., CareCRM]) -> None:
    app = _app_with_reads(make_app)
    cid = app.find_contacts(email="ann.placeholder@example.com", actor=BOB)[0].id
    entries = app.audit_log(contact_id=cid, limit=100)
    actions = {e.action for e in entries}
    assert {"timeline.read", "contact.read"} <= actions
    assert all(e.actor == "bob" and e.role == "frontdesk" for e in entries)
    assert any(e.purpose == "lookup" for e in entries)  # the search read is recorded per contact
    assert "ann" not in repr(entries).lower()
    ok, n, problem = app.verify_audit_chain()
    assert ok and n >= 4 and problem is None


def _db(app: CareCRM) -> Path:
    return Path(app.settings.storage_url.removeprefix("sqlite:///"))


@pytest.mark.parametrize(
    ("sql", "expected"),
    [
        ("UPDATE audit_log SET actor = 'mallory' WHERE seq = 2", "edited"),
        ("DELETE FROM audit_log WHERE seq = 2", "edited, or entries before it were removed"),
        ("DELETE FROM audit_log WHERE seq = (SELECT max(seq) FROM audit_log)", "ends before its head"),
        ("DELETE FROM audit_log", "ends before its head"),
        ("DELETE FROM audit_log; DELETE FROM meta WHERE key = 'audit_head'", "head anchor is missing"),
        ("UPDATE meta SET value = '1:abc:def' WHERE key = 'audit_head'", "head anchor was altered"),
    ],
)
def test_tampering_is_detected(make_app: Callable[..., CareCRM], sql: str, expected: str) -> None:
    app = _app_with_reads(make_app)
    head = app.audit_head()
    assert head and app.verify_audit_chain(expected_head=head)[0]
    app.close()
    con = sqlite3.connect(_db(app))
    con.executescript(sql)
    con.commit()
    con.close()
    again = CareCRM(app.settings, keys=app.keys, load_entrypoints=False)
    ok, _, problem = again.verify_audit_chain()
    assert not ok and expected in (problem or "")
    again.close()


def test_an_exported_head_catches_a_rewound_anchor(make_app: Callable[..., CareCRM]) -> None:
    app = _app_with_reads(make_app)
    old_head = app.audit_head()
    app.timeline(app.find_contacts(email="ann.placeholder@example.com", actor=BOB)[0].id, actor=BOB)
    exported = app.audit_head()
    app.close()
    # someone with the database deletes the newest entries and restores the old anchor
    con = sqlite3.connect(_db(app))
    seq = int(old_head.split(":")[0])  # type: ignore[union-attr]
    con.execute("DELETE FROM audit_log WHERE seq > ?", (seq,))
    con.execute("UPDATE meta SET value = ? WHERE key = 'audit_head'", (old_head,))
    con.commit()
    con.close()
    again = CareCRM(app.settings, keys=app.keys, load_entrypoints=False)
    assert again.verify_audit_chain()[0]  # consistent on its own...
    ok, _, problem = again.verify_audit_chain(expected_head=exported)
    assert not ok and "exported head" in (problem or "")  # ...but not with the exported anchor
    again.close()
