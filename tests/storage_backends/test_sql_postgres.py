"""The SQL backend on PostgreSQL (psycopg 3): the conformance suite plus server specifics.

Needs the server at ``CARECRM_TEST_POSTGRES_URL`` (default
``postgresql://postgres@127.0.0.1:5432/test``); see ``conftest.py``.
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

from carecrm.core.errors import ConflictError, DuplicateError
from carecrm.core.storage.contract import StorageBackend
from carecrm.core.testing.storage import StorageBackendContract, contact_record, interaction_record
from carecrm.storage_backends.sql import schema
from carecrm.storage_backends.sql.backend import SqlBackend

pytestmark = pytest.mark.postgres


@pytest.fixture
def pg(postgres_database: Any) -> Any:
    """The session's PostgreSQL database, emptied for this test."""
    postgres_database.reset()
    return postgres_database


class TestPostgresContract(StorageBackendContract):
    """The conformance suite on PostgreSQL."""

    @pytest.fixture
    def backend(self, pg: Any) -> Iterator[StorageBackend]:
        backend = SqlBackend(pg.url)
        yield backend
        backend.close()

    @pytest.fixture
    def reopen_backend(self, pg: Any, open_sql_backends: Callable[[str], SqlBackend]) -> Callable[[], StorageBackend]:
        return lambda: open_sql_backends(pg.url)

    @pytest.fixture
    def second_backend(self, second_postgres_database: Any) -> Iterator[StorageBackend]:
        second_postgres_database.reset()
        second = SqlBackend(second_postgres_database.url)
        yield second
        second.close()


def test_check_describes_postgres(pg: Any) -> None:
    backend = SqlBackend(pg.url)
    info = backend.check()
    assert (info["dialect"], info["driver"]) == ("postgresql", "psycopg")
    assert info["server_version"][:2].isdigit()
    backend.close()


def test_column_types(pg: Any) -> None:
    with pg.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "select table_name, column_name, data_type, datetime_precision from information_schema.columns "
                "where table_schema = current_schema()"
            )
        ).all()
    types = {(r.table_name, r.column_name): (r.data_type, r.datetime_precision) for r in rows}
    assert types[("interactions", "occurred_at")] == ("timestamp without time zone", 3)
    assert types[("interactions", "id")][0] == "uuid"
    assert types[("interactions", "touchpoint")][0] == "jsonb"
    assert types[("inbox", "payload_enc")][0] == "bytea"
    assert types[("scores", "score")][0] == "double precision"


def test_migrations_build_exactly_the_schema_module(pg: Any) -> None:
    with pg.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": False})
        diff = [d for d in compare_metadata(context, schema.metadata) if "alembic_version" not in repr(d)]
    assert diff == []


def test_a_duplicate_leaves_the_transaction_usable(pg: Any) -> None:
    """On PostgreSQL a failed statement aborts the transaction; the backend's savepoints
    keep the unit of work going after a DuplicateError."""
    backend = SqlBackend(pg.url)
    contact = contact_record()
    with backend.unit_of_work() as uow:
        uow.contacts.add(contact)
        with pytest.raises(DuplicateError, match=r"^contacts: a row with the same id already exists$"):
            uow.contacts.add(contact)
        first = interaction_record(contact.id, idempotency_key="k")
        uow.interactions.add(first)
        with pytest.raises(DuplicateError, match=r"\(source, idempotency_key\)"):
            uow.interactions.add(interaction_record(contact.id, idempotency_key="k"))
        uow.commit()
    with backend.unit_of_work() as uow:
        assert (uow.contacts.count(), uow.interactions.count()) == (1, 1)
    backend.close()


def test_concurrent_updates_conflict(pg: Any) -> None:
    """Two units of work update the same contact: the second waits for the first's row lock,
    then finds the version moved on and raises ConflictError."""
    backend = SqlBackend(pg.url)
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
    with backend.unit_of_work() as uow:
        assert uow.contacts.get(contact.id).stage == "contacted"
    backend.close()


def test_milliseconds_survive(pg: Any) -> None:
    backend = SqlBackend(pg.url)
    contact = contact_record()
    record = interaction_record(contact.id, occurred_at=datetime(2024, 1, 2, 12, 0, 0, 123000, tzinfo=UTC))
    with backend.unit_of_work() as uow:
        uow.interactions.add(record)
        uow.commit()
    with backend.unit_of_work() as uow:
        assert uow.interactions.get(record.id).occurred_at == record.occurred_at
    backend.close()
