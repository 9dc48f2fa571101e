"""The storage use cases (:class:`carecrm.core.storage.migrate.StorageMigration`) built from
their collaborators alone: a backend opener, the checked storage, the keys and the audit
trail, with no :class:`carecrm.core.CareCRM`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from carecrm.core.model.domain import Actor
from carecrm.core.privacy.audit import AuditTrail
from carecrm.core.privacy.crypto import KeyRing
from carecrm.core.storage.contract import RECORD_KINDS, SCHEMA_VERSION, StorageBackend
from carecrm.core.storage.migrate import StorageMigration
from carecrm.storage_backends.sql.backend import SqlBackend

ACTOR = Actor.parse("tester:admin")


def _never() -> Any:
    raise AssertionError("check and upgrade must not open the checked storage, the keys or the audit trail")


def test_check_and_upgrade_open_the_configured_backend_only(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'practice.db'}"
    opened: list[str | None] = []

    def open_backend(where: str | None, options: dict[str, Any] | None) -> StorageBackend:
        opened.append(where)
        return SqlBackend(where or url)

    migration = StorageMigration(open_backend=open_backend, storage=_never, keys=_never, audit=_never)
    before = migration.storage_check()
    assert before["schema_version"] is None and "carecrm init" in before["advice"]
    assert migration.storage_upgrade() == ["create schema"]
    after = migration.storage_check()
    assert after["schema_version"] == after["expected_schema_version"] == SCHEMA_VERSION
    assert after["counts"]["contacts"] == 0
    assert opened == [None, None, None]


def test_migrate_to_copies_into_an_empty_target_and_audits_the_copy(tmp_path: Path) -> None:
    keys = KeyRing.generate()
    source = SqlBackend(f"sqlite:///{tmp_path / 'source.db'}")
    source.create_schema()
    with source.unit_of_work() as uow:
        uow.meta.set("key_check", keys.check_value())
        uow.commit()
    trail = AuditTrail(source, keys)

    def open_backend(where: str | None, options: dict[str, Any] | None) -> StorageBackend:
        assert where is not None and options == {}
        return SqlBackend(where)

    migration = StorageMigration(
        open_backend=open_backend, storage=lambda: source, keys=lambda: keys, audit=lambda: trail
    )
    progress: list[tuple[str, int]] = []
    target_url = f"sqlite:///{tmp_path / 'copy.db'}"
    result = migration.migrate_to(target_url, actor=ACTOR, progress=lambda kind, n: progress.append((kind, n)))
    assert set(result) == set(RECORD_KINDS)
    assert all(s == t for s, t in result.values())
    assert result["audit_log"][0] == 1  # the copy's own entry, copied with the rest
    assert [kind for kind, _ in progress] == list(RECORD_KINDS)
    assert migration.counts() == {k: 0 for k in migration.counts()}
    copy = SqlBackend(target_url)
    try:
        assert AuditTrail(copy, keys).verify()[0]
        assert [e.action for e in AuditTrail(copy, keys).entries()] == ["storage.migrate_to"]
    finally:
        copy.close()
    with pytest.raises(ValueError, match="^batch"):
        migration.migrate_to(target_url, actor=ACTOR, batch=0)
    source.close()
