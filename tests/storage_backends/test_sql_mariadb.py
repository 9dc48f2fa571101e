"""The SQL backend on MariaDB (PyMySQL): the conformance suite through ``mysql://`` and
``mariadb://`` URLs, plus server specifics (DATETIME(3), strict mode, collation).

Needs the server at ``CARECRM_TEST_MARIADB_URL`` (default ``mysql://root@127.0.0.1:3306/test``);
see ``conftest.py``.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext

from carecrm.core.errors import ConflictError, DuplicateError, StorageError
from carecrm.core.storage.contract import StorageBackend
from carecrm.core.testing.storage import StorageBackendContract, contact_record, interaction_record
from carecrm.storage_backends.sql import schema
from carecrm.storage_backends.sql.backend import SqlBackend

pytestmark = pytest.mark.mariadb


@pytest.fixture
def maria(mariadb_database: Any) -> Any:
    """The session's MariaDB database, emptied for this test."""
    mariadb_database.reset()
    return mariadb_database


def _with_scheme(url: str, scheme: str) -> str:
    return sa.engine.make_url(url).set(drivername=scheme).render_as_string(hide_password=False)


class TestMariadbContract(StorageBackendContract):
    """The conformance suite on MariaDB through a plain ``mysql://`` URL (PyMySQL)."""

    scheme = "mysql"

    @pytest.fixture
    def backend(self, maria: Any) -> Iterator[StorageBackend]:
        backend = SqlBackend(_with_scheme(maria.url, self.scheme))
        yield backend
        backend.close()

    @pytest.fixture
    def reopen_backend(
        self, maria: Any, open_sql_backends: Callable[[str], SqlBackend]
    ) -> Callable[[], StorageBackend]:
        return lambda: open_sql_backends(_with_scheme(maria.url, self.scheme))

    @pytest.fixture
    def second_backend(self, second_mariadb_database: Any) -> Iterator[StorageBackend]:
        second_mariadb_database.reset()
        second = SqlBackend(_with_scheme(second_mariadb_database.url, self.scheme))
        yield second
        second.close()


class TestMariadbDialectContract(TestMariadbContract):
    """The same suite through a ``mariadb://`` URL (SQLAlchemy's MariaDB dialect, whose native
    UUID type the schema must not pick up)."""

    scheme = "mariadb"


def test_datetime_columns_keep_milliseconds(maria: Any) -> None:
    backend = SqlBackend(maria.url)
    contact = contact_record()
    noon = datetime(2024, 1, 2, 12, 0, 0, 123000, tzinfo=UTC)
    record = interaction_record(contact.id, occurred_at=noon, recorded_at=noon)
    with backend.unit_of_work() as uow:
        uow.interactions.add(record)
        uow.commit()
    with backend.unit_of_work() as uow:
        got = uow.interactions.get(record.id)
    assert got.occurred_at == noon and got.occurred_at.microsecond == 123000
    with maria.engine.connect() as conn:
        raw = conn.execute(sa.text("select occurred_at from interactions")).scalar_one()
        assert raw == datetime(2024, 1, 2, 12, 0, 0, 123000)
        precisions = conn.execute(
            sa.text(
                "select table_name, column_name, datetime_precision from information_schema.columns "
                "where table_schema = database() and data_type = 'datetime'"
            )
        ).all()
    assert precisions and all(p.datetime_precision == 3 for p in precisions), precisions
    backend.close()


def test_column_types_and_collation(maria: Any) -> None:
    with maria.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select table_name, column_name, column_type, character_set_name, collation_name "
                "from information_schema.columns where table_schema = database()"
            )
        ).all()
    cols = {(r.table_name, r.column_name): r for r in rows}
    assert cols[("interactions", "id")].column_type == "char(32)"
    assert cols[("interactions", "id")].character_set_name == "ascii"
    assert cols[("identities", "bidx")].collation_name == "ascii_bin"
    assert cols[("inbox", "payload_enc")].column_type == "longblob"
    assert cols[("scores", "score")].column_type == "double"
    assert cols[("interactions", "idempotency_key")].collation_name == "utf8mb4_bin"


def test_migrations_build_exactly_the_schema_module(maria: Any) -> None:
    with maria.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = [d for d in compare_metadata(context, schema.metadata) if "alembic_version" not in repr(d)]
    assert diff == []


def test_too_long_values_are_refused_not_cut(maria: Any) -> None:
    backend = SqlBackend(maria.url)
    contact = contact_record()
    with backend.unit_of_work() as uow:
        with pytest.raises(StorageError, match="does not fit its column") as caught:
            uow.interactions.add(interaction_record(contact.id, idempotency_key="k" * 300))
        assert "kkkk" not in str(caught.value)
        with pytest.raises(DuplicateError, match=r"^interactions: a row with the same id already exists$"):
            first = interaction_record(contact.id)
            uow.interactions.add(first)
            uow.interactions.add(interaction_record(contact.id, id=first.id))
    backend.close()


def test_concurrent_updates_conflict(maria: Any) -> None:
    backend = SqlBackend(maria.url)
    contact = contact_record()
    with backend.unit_of_work() as uow:
        uow.contacts.add(contact)
        uow.commit()
    outcome: list[BaseException | None] = []

    def second_writer() -> None:
        try:
            with backend.unit_of_work() as uow:
                uow.contacts.update(attrs.evolve(contact, stage="lost"))
                uow.commit()
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    with backend.unit_of_work() as uow:
        uow.contacts.update(attrs.evolve(contact, stage="contacted"))
        thread = threading.Thread(target=second_writer)
        thread.start()
        time.sleep(0.3)
        uow.commit()
    thread.join(10)
    assert len(outcome) == 1 and isinstance(outcome[0], ConflictError)
    backend.close()


def test_check_describes_mariadb(maria: Any) -> None:
    backend = SqlBackend(maria.url)
    info = backend.check()
    assert (info["dialect"], info["driver"]) == ("mariadb", "pymysql")
    assert "MariaDB" in info["server_version"]
    backend.close()
