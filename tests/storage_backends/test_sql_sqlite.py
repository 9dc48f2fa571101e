"""The SQL backend on SQLite: the conformance suite on a file and in memory, plus what is
specific to SQL and SQLite (URLs, pragmas, migrations, errors, schema versions)."""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from carecrm.core.errors import (
    BackendUnavailable,
    ConfigError,
    DuplicateError,
    SchemaVersionError,
)
from carecrm.core.plugins.manager import build_plugin_manager, collect
from carecrm.core.storage.contract import SCHEMA_VERSION, StorageBackend
from carecrm.core.testing.storage import (
    StorageBackendContract,
    audit_record,
    contact_record,
    interaction_record,
    stage_change_record,
)
from carecrm.storage_backends import sql as sql_plugin
from carecrm.storage_backends.sql import SCHEMES, open_backend, repositories, schema
from carecrm.storage_backends.sql.backend import OPTION_DEFAULTS, SqlBackend, normalize_url
from carecrm.storage_backends.sql.migrate import HEAD_FOR_VERSION


class TestSqliteFileContract(StorageBackendContract):
    """The conformance suite on a SQLite file (the embedded default)."""

    @pytest.fixture
    def backend(self, carecrm_sqlite_backend: StorageBackend) -> StorageBackend:
        return carecrm_sqlite_backend

    @pytest.fixture
    def reopen_backend(self, tmp_path: Path) -> Iterator[Callable[[], StorageBackend]]:
        opened: list[StorageBackend] = []

        def reopen() -> StorageBackend:
            opened.append(open_backend(f"sqlite:///{tmp_path / 'carecrm.db'}", {}))
            return opened[-1]

        yield reopen
        for b in opened:
            b.close()

    @pytest.fixture
    def second_backend(self, tmp_path: Path) -> Iterator[StorageBackend]:
        second = open_backend(f"sqlite:///{tmp_path / 'second.db'}", {})
        second.create_schema()
        yield second
        second.close()


class TestSqliteMemoryContract(StorageBackendContract):
    """The conformance suite on an in-memory SQLite database (``sqlite://``)."""

    concurrent_units = False  # one shared connection

    @pytest.fixture
    def backend(self) -> Iterator[StorageBackend]:
        backend = open_backend("sqlite://", {})
        backend.create_schema()
        yield backend
        backend.close()

    @pytest.fixture
    def second_backend(self) -> Iterator[StorageBackend]:
        second = open_backend("sqlite://", {})
        second.create_schema()
        yield second
        second.close()


# --------------------------------------------------------------------------- registration, URLs


def test_registers_sql_for_every_scheme() -> None:
    pm = build_plugin_manager(load_entrypoints=False)
    registered: dict[str, tuple[tuple[str, ...], Any]] = {}

    def make_register(owner: str) -> Callable[..., None]:
        def register(name: str, schemes: Any, factory: Any) -> None:
            registered[name] = (tuple(schemes), factory)

        return register

    collect(pm, "carecrm_register_storage_backends", make_register)
    schemes, factory = registered["sql"]
    assert set(schemes) == {
        "sqlite",
        "sqlite+pysqlite",
        "postgresql",
        "postgresql+psycopg",
        "mysql",
        "mysql+pymysql",
        "mariadb",
        "mariadb+pymysql",
    }
    assert factory is sql_plugin.open_backend
    backend = factory("sqlite://", {})
    assert isinstance(backend, StorageBackend)
    backend.close()


@pytest.mark.parametrize(
    ("url", "driver"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg"),
        ("mysql://u@h/db", "mysql+pymysql"),
        ("mariadb://u@h/db", "mariadb+pymysql"),
        ("mariadb+pymysql://u@h/db", "mariadb+pymysql"),
        ("sqlite:///carecrm.db", "sqlite"),
        ("sqlite+pysqlite:///carecrm.db", "sqlite+pysqlite"),
    ],
)
def test_plain_urls_pick_psycopg_and_pymysql(url: str, driver: str) -> None:
    parsed = normalize_url(url)
    assert parsed.drivername == driver
    if driver.startswith(("mysql", "mariadb")):
        assert parsed.query["charset"] == "utf8mb4"
    assert set(SCHEMES) >= {url.split("://")[0]}


def test_unserved_scheme_and_unknown_option_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="served: .*postgresql"):
        SqlBackend("oracle://u@h/db")
    with pytest.raises(ConfigError, match="known: .*busy_timeout_ms"):
        open_backend("sqlite://", {"pool_sise": 3})
    assert set(OPTION_DEFAULTS) == {"echo", "pool_size", "pool_pre_ping", "busy_timeout_ms", "connect_timeout"}


def test_url_display_masks_the_password() -> None:
    backend = SqlBackend("postgresql://carecrm:s3cr3t-pw@db.example:5433/crm")
    assert "s3cr3t-pw" not in backend.url_display
    assert backend.url_display == "postgresql+psycopg://carecrm:***@db.example:5433/crm"
    assert "s3cr3t-pw" not in repr(backend)
    backend.close()


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_unreachable_server_names_the_host_never_the_password(scheme: str) -> None:
    backend = SqlBackend(f"{scheme}://carecrm:s3cr3t-pw@127.0.0.1:9/crm", connect_timeout=3)
    for call in (backend.check, backend.schema_version, backend.create_schema, backend.unit_of_work().__enter__):
        with pytest.raises(BackendUnavailable) as caught:
            call()
        message = str(caught.value)
        assert "127.0.0.1:9" in message and "check that the server is running" in message
        assert "s3cr3t-pw" not in message
    backend.close()


def test_sqlite_in_a_missing_folder_is_backend_unavailable(tmp_path: Path) -> None:
    backend = SqlBackend(f"sqlite:///{tmp_path / 'nowhere' / 'carecrm.db'}")
    with pytest.raises(BackendUnavailable, match="folder exists"):
        backend.check()
    backend.close()


# --------------------------------------------------------------------------- SQLite specifics


def test_sqlite_file_pragmas(carecrm_sqlite_backend: StorageBackend) -> None:
    assert isinstance(carecrm_sqlite_backend, SqlBackend)
    with carecrm_sqlite_backend.engine.connect() as conn:
        pragma = lambda name: conn.exec_driver_sql(f"PRAGMA {name}").scalar()  # noqa: E731
        assert pragma("journal_mode") == "wal"
        assert pragma("synchronous") == 1  # NORMAL
        assert pragma("foreign_keys") == 1
        assert pragma("busy_timeout") == 5000


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_memory_databases_work(url: str) -> None:
    backend = open_backend(url, {})
    assert backend.schema_version() is None
    backend.create_schema()
    contact = contact_record()
    with backend.unit_of_work() as uow:
        uow.contacts.add(contact)
        uow.commit()
    with backend.unit_of_work() as uow:
        assert uow.contacts.get(contact.id) == contact
    assert backend.check()["schema_version"] == SCHEMA_VERSION
    backend.close()


def test_a_busy_writer_is_reported_as_backend_unavailable(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'busy.db'}"
    first = SqlBackend(url)
    first.create_schema()
    second = SqlBackend(url, busy_timeout_ms=50)
    with first.unit_of_work() as holder:
        holder.contacts.add(contact_record())
        with pytest.raises(BackendUnavailable, match="busy"):
            with second.unit_of_work():
                pass  # BEGIN IMMEDIATE waits for the write lock on entering
        holder.commit()
    with second.unit_of_work() as uow:
        assert uow.contacts.count() == 1
    first.close()
    second.close()


def test_units_of_work_in_threads_on_one_file(carecrm_sqlite_backend: StorageBackend) -> None:
    errors: list[BaseException] = []

    def work(n: int) -> None:
        try:
            for _ in range(5):
                with carecrm_sqlite_backend.unit_of_work() as uow:
                    uow.contacts.add(contact_record())
                    uow.commit()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    with carecrm_sqlite_backend.unit_of_work() as uow:
        assert uow.contacts.count() == 20


# --------------------------------------------------------------------------- schema versions


def test_a_database_without_the_schema_says_run_init(tmp_path: Path) -> None:
    backend = SqlBackend(f"sqlite:///{tmp_path / 'empty.db'}")
    assert backend.schema_version() is None
    assert backend.check()["schema_version"] is None
    with pytest.raises(SchemaVersionError, match="carecrm init"):
        with backend.unit_of_work():
            pass
    with pytest.raises(SchemaVersionError, match="carecrm init"):
        backend.verify_schema()
    backend.close()


def test_upgrade_creates_the_schema_of_an_empty_database(tmp_path: Path) -> None:
    backend = SqlBackend(f"sqlite:///{tmp_path / 'empty.db'}")
    assert backend.upgrade() == ["0001_initial", "0002_inbox_unique_digest", "0003_outbox", "0004_inbox_verified"]
    assert backend.schema_version() == SCHEMA_VERSION
    assert backend.upgrade() == []
    with backend.unit_of_work() as uow:
        assert uow.contacts.count() == 0
    backend.close()


def test_schema_version_messages(carecrm_sqlite_backend: StorageBackend, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'carecrm.db'}"
    with carecrm_sqlite_backend.unit_of_work() as uow:
        uow.meta.set("schema_version", str(SCHEMA_VERSION + 1))
        uow.commit()
    newer = SqlBackend(url)
    with pytest.raises(SchemaVersionError) as caught:
        with newer.unit_of_work():
            pass
    assert "upgrade carecrm" in str(caught.value) and str(SCHEMA_VERSION + 1) in str(caught.value)
    with pytest.raises(SchemaVersionError, match="upgrade carecrm"):
        newer.upgrade()
    with carecrm_sqlite_backend.unit_of_work() as uow:  # verified before: not re-checked
        uow.meta.set("schema_version", "0")
        uow.commit()
    older = SqlBackend(url)
    with pytest.raises(SchemaVersionError, match="carecrm storage upgrade"):
        with older.unit_of_work():
            pass
    assert older.upgrade() == []
    with older.unit_of_work() as uow:
        assert uow.meta.get("schema_version") == str(SCHEMA_VERSION)
    with carecrm_sqlite_backend.unit_of_work() as uow:
        uow.meta.set("schema_version", "one")
        uow.commit()
    with pytest.raises(SchemaVersionError, match="not a number"):
        carecrm_sqlite_backend.schema_version()
    newer.close()
    older.close()


def test_a_missing_table_says_run_init(carecrm_sqlite_backend: StorageBackend) -> None:
    assert isinstance(carecrm_sqlite_backend, SqlBackend)
    carecrm_sqlite_backend.verify_schema()
    with carecrm_sqlite_backend.engine.begin() as conn:
        conn.exec_driver_sql("DROP TABLE notes")
    with carecrm_sqlite_backend.unit_of_work() as uow:
        with pytest.raises(SchemaVersionError, match="carecrm init.*'notes'"):
            uow.notes.for_contact(contact_record().id)


def test_a_database_without_alembic_bookkeeping_is_adopted(tmp_path: Path) -> None:
    backend = SqlBackend(f"sqlite:///{tmp_path / 'adopt.db'}")
    with backend.engine.begin() as conn:
        schema.metadata.create_all(conn)
        conn.execute(schema.meta.insert().values(key="schema_version", value=str(SCHEMA_VERSION)))
    assert backend.upgrade() == []
    with backend.engine.connect() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == HEAD_FOR_VERSION[SCHEMA_VERSION]
    backend.close()


def test_version_1_inbox_duplicates_are_folded_by_the_upgrade(tmp_path: Path) -> None:
    """A schema-1 database may hold several inbox rows of one payload (a re-delivered
    discarded payload got a fresh row); the upgrade to 2 keeps the one whose status says
    most, points interactions at it, and the unique index then holds."""
    from alembic import command

    from carecrm.core.testing.storage import inbox_record
    from carecrm.storage_backends.sql.migrate import alembic_config, write_schema_version

    backend = SqlBackend(f"sqlite:///{tmp_path / 'v1.db'}")
    discarded = inbox_record(status="discarded", digest="d" * 64)
    processed = inbox_record(status="processed", digest="d" * 64)
    single = inbox_record(status="quarantined")
    inter = interaction_record(contact_record().id, inbox_id=discarded.id)
    codec = repositories._codec
    with backend.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0001_initial")
        write_schema_version(conn, 1)
        for rec in (discarded, processed, single):
            conn.execute(schema.inbox.insert(), _row_before_4(codec(type(rec), schema.inbox).row(rec)))
        conn.execute(schema.interactions.insert(), codec(type(inter), schema.interactions).row(inter))
    assert backend.upgrade() == ["0002_inbox_unique_digest", "0003_outbox", "0004_inbox_verified"]
    with backend.unit_of_work() as uow:
        assert sorted(r.id for r in uow.inbox.list()) == sorted([processed.id, single.id])
        assert uow.interactions.get(inter.id).inbox_id == processed.id
        with pytest.raises(DuplicateError):
            uow.inbox.add(inbox_record(digest="d" * 64))
    backend.close()


def test_a_version_2_database_gains_the_outbox(tmp_path: Path) -> None:
    """Schema 2 → 3 adds the empty ``outbox`` table; the data already stored stays."""
    from alembic import command

    from carecrm.core.testing.storage import outbox_record
    from carecrm.storage_backends.sql.migrate import alembic_config, write_schema_version

    backend = SqlBackend(f"sqlite:///{tmp_path / 'v2.db'}")
    kept = contact_record()
    with backend.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0002_inbox_unique_digest")
        write_schema_version(conn, 2)
        conn.execute(schema.contacts.insert(), repositories._codec(type(kept), schema.contacts).row(kept))
    assert backend.upgrade() == ["0003_outbox", "0004_inbox_verified"]
    with backend.unit_of_work() as uow:
        assert uow.contacts.get(kept.id).id == kept.id
        assert uow.outbox.last_seq() == 0
        uow.outbox.append_many([outbox_record(1)])
        uow.commit()
    assert _migration_diff(backend) == []
    backend.close()


def _row_before_4(row: dict[str, Any]) -> dict[str, Any]:
    """An inbox row as a database before schema version 4 holds it (no ``verified``)."""
    return {k: v for k, v in row.items() if k != "verified"}


def test_a_version_3_database_records_verification_from_4(tmp_path: Path) -> None:
    """Schema 3 → 4 adds ``inbox.verified`` (rows stored before read None: unknown) and
    the ``ix_interactions_inbox`` index; the data already stored stays."""
    from alembic import command

    from carecrm.core.testing.storage import inbox_record
    from carecrm.storage_backends.sql.migrate import alembic_config, write_schema_version

    backend = SqlBackend(f"sqlite:///{tmp_path / 'v3.db'}")
    old = inbox_record(status="processed")
    inter = interaction_record(contact_record().id, inbox_id=old.id)
    codec = repositories._codec
    with backend.engine.begin() as conn:
        command.upgrade(alembic_config(conn), "0003_outbox")
        write_schema_version(conn, 3)
        conn.execute(schema.inbox.insert(), _row_before_4(codec(type(old), schema.inbox).row(old)))
        conn.execute(schema.interactions.insert(), codec(type(inter), schema.interactions).row(inter))
    assert backend.upgrade() == ["0004_inbox_verified"]
    with backend.unit_of_work() as uow:
        assert uow.inbox.get(old.id).verified is None
        assert uow.inbox.set_verified([old.id], False) == 1
        assert [r.id for r in uow.interactions.delete_for_inbox(old.id)] == [inter.id]
        uow.commit()
    assert _migration_diff(backend) == []
    backend.close()


def _migration_diff(backend: SqlBackend) -> list[Any]:
    with backend.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        return [d for d in compare_metadata(context, schema.metadata) if "alembic_version" not in repr(d)]


def test_migrations_build_exactly_the_schema_module(tmp_path: Path) -> None:
    backend = SqlBackend(f"sqlite:///{tmp_path / 'migrated.db'}")
    backend.create_schema()
    assert _migration_diff(backend) == []
    backend.close()


def test_every_table_has_the_columns_of_its_record() -> None:
    for repository in _repository_classes():
        fields = {a.name for a in attrs.fields(repository.record_class)}
        assert fields == {c.name for c in repository.table.columns}, repository.table.name
    names = {t.name for t in schema.ALL_TABLES}
    assert names == {
        "contacts",
        "identities",
        "interactions",
        "stage_changes",
        "appointments",
        "consents",
        "notes",
        "tasks",
        "scores",
        "reviews",
        "segments",
        "inbox",
        "merges",
        "audit_log",
        "outbox",
        "meta",
    }


def _repository_classes() -> list[type[Any]]:
    return [
        c
        for c in vars(repositories).values()
        if isinstance(c, type) and issubclass(c, repositories._Repository) and c is not repositories._Repository
    ]


# --------------------------------------------------------------------------- errors and paging


def test_duplicate_messages_name_the_constraint_not_the_values(carecrm_sqlite_backend: StorageBackend) -> None:
    contact = contact_record()
    first = interaction_record(contact.id, idempotency_key="vendor-evt-12345")
    with carecrm_sqlite_backend.unit_of_work() as uow:
        uow.interactions.add(first)
        with pytest.raises(DuplicateError) as caught:
            uow.interactions.add(interaction_record(contact.id, idempotency_key="vendor-evt-12345"))
        assert str(caught.value) == "interactions: a row with the same (source, idempotency_key) already exists"
        assert caught.value.__cause__ is None and caught.value.__suppress_context__
        with pytest.raises(DuplicateError, match=r"^interactions: a row with the same id already exists$"):
            uow.interactions.add(interaction_record(contact.id, id=first.id))


def test_streamed_iterators_page_through_everything(
    carecrm_sqlite_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(repositories, "PAGE", 3)
    contact_ids = sorted(contact_record().id for _ in range(4))
    changes = [
        stage_change_record(cid, changed_at=stage_change_record(cid).changed_at.replace(second=s))
        for cid in contact_ids
        for s in (5, 1, 1)
    ]
    with carecrm_sqlite_backend.unit_of_work() as uow:
        for change in changes:
            uow.stages.add(change)
        for seq in range(1, 11):
            uow.audit.append(audit_record(seq))
        uow.commit()
    with carecrm_sqlite_backend.unit_of_work() as uow:
        got = [(c.contact_id, c.reached_at) for c in uow.stages.first_reached(["contacted"])]
        firsts = {cid: min(c.changed_at for c in changes if c.contact_id == cid) for cid in contact_ids}
        assert got == sorted(firsts.items())
        assert [e.seq for e in uow.audit.iter()] == list(range(1, 11))
        assert [e.seq for e in uow.audit.iter(since_seq=4)] == list(range(5, 11))


def test_check_describes_sqlite(carecrm_sqlite_backend: StorageBackend) -> None:
    info = carecrm_sqlite_backend.check()
    assert info["dialect"] == "sqlite" and info["driver"] == "pysqlite"
    assert re.fullmatch(r"\d+\.\d+\.\d+", info["server_version"])
    assert info["capabilities"] == ["savepoints", "transactions"]
    assert info["schema_current"] is True
    assert info["url_display"].startswith("sqlite:///")


def test_the_unit_of_work_must_be_entered(carecrm_sqlite_backend: StorageBackend) -> None:
    from carecrm.core.errors import StorageError

    uow = carecrm_sqlite_backend.unit_of_work()
    with pytest.raises(StorageError, match="not open"):
        uow.contacts.count()
    with uow:
        with pytest.raises(StorageError, match="already open"):
            uow.__enter__()


def test_sqlalchemy_types_of_the_schema() -> None:
    from sqlalchemy.dialects import mysql, postgresql, sqlite

    ddl = {
        name: str(sa.schema.CreateTable(schema.interactions).compile(dialect=d))
        for name, d in [("pg", postgresql.dialect()), ("my", mysql.dialect()), ("lite", sqlite.dialect())]
    }
    assert "occurred_at TIMESTAMP(3) WITHOUT TIME ZONE NOT NULL" in ddl["pg"]
    assert "id UUID NOT NULL" in ddl["pg"] and "touchpoint JSONB" in ddl["pg"]
    assert "occurred_at DATETIME(3) NOT NULL" in ddl["my"]
    assert "id CHAR(32) CHARACTER SET ascii COLLATE ascii_bin NOT NULL" in ddl["my"]
    assert "body_enc LONGBLOB" in ddl["my"] and "COLLATE utf8mb4_bin" in ddl["my"]
    assert "occurred_at DATETIME NOT NULL" in ddl["lite"]
