"""The MongoDB backend against a real server: the conformance suite, plus what mongomock
cannot show (multi-document transactions, the server's own unique indexes and errors).

Runs when ``CARECRM_TEST_MONGODB_URI`` names a server (``mongodb://127.0.0.1:27017`` for a
standalone ``mongod``; a one-node replica set, ``mongod --replSet rs0`` then
``rs.initiate()``, adds the transaction tests).  Each test gets its own database
``carecrm_test_<random>``, dropped afterwards; the user needs readWrite and createIndex on
those names.  Without the variable each test is skipped with that reason (the run's
summary counts them; ``pytest -rs`` lists each), and every test here is marked ``real_mongo``.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from carecrm.core.errors import DuplicateError
from carecrm.core.storage.contract import StorageBackend
from carecrm.core.testing.storage import StorageBackendContract, contact_record, identity_record, interaction_record
from carecrm.storage_backends.mongo.backend import MongoBackend, MongoUnitOfWork

URI = os.environ.get("CARECRM_TEST_MONGODB_URI", "")
#: Why every test here is skipped without a server (pytest -rs counts them under it).
NO_SERVER = (
    "real_mongo: CARECRM_TEST_MONGODB_URI is not set, so this test against a real MongoDB server "
    "did not run (mongomock has no sessions or transactions)"
)

pytestmark = pytest.mark.real_mongo


@pytest.fixture
def database_name() -> Iterator[str]:
    """A private database for one test, dropped afterwards; skips without a server."""
    if not URI:
        pytest.skip(NO_SERVER)
    name = f"carecrm_test_{uuid.uuid4().hex[:12]}"
    yield name
    cleanup = MongoBackend(URI, database=name)
    cleanup.client.drop_database(name)
    cleanup.close()


class TestRealMongoContract(StorageBackendContract):
    """The conformance suite on the server at CARECRM_TEST_MONGODB_URI."""

    @pytest.fixture
    def backend(self, database_name: str) -> Iterator[StorageBackend]:
        backend = MongoBackend(URI, database=database_name)
        backend.create_schema()
        yield backend
        backend.close()

    @pytest.fixture
    def reopen_backend(self, database_name: str) -> Iterator[Callable[[], StorageBackend]]:
        opened: list[MongoBackend] = []

        def reopen() -> StorageBackend:
            opened.append(MongoBackend(URI, database=database_name))
            return opened[-1]

        yield reopen
        for backend in opened:
            backend.close()


@pytest.fixture
def backend(database_name: str) -> Iterator[MongoBackend]:
    """A fresh backend on the real server, schema created."""
    opened = MongoBackend(URI, database=database_name)
    opened.create_schema()
    yield opened
    opened.close()


def test_check_describes_the_server(backend: MongoBackend) -> None:
    info = backend.check()
    assert info["topology"] in ("standalone", "replica set", "sharded cluster")
    assert info["server_version"][0].isdigit() and info["indexes"]["ok"] is True
    assert ("transactions" in info["capabilities"]) == (info["topology"] != "standalone")


def test_the_server_refuses_a_duplicate_key_at_commit(backend: MongoBackend) -> None:
    """A duplicate written behind the unit's back is refused by the unique index itself."""
    contact = contact_record()
    with backend.unit_of_work() as uow:
        uow.interactions.add(interaction_record(contact.id, idempotency_key="evt-9"))
        with backend.unit_of_work() as other:
            other.interactions.add(interaction_record(contact.id, idempotency_key="evt-9"))
            other.commit()
        with pytest.raises(DuplicateError) as caught:
            uow.commit()
    assert "evt-9" not in str(caught.value)
    with backend.unit_of_work() as uow:
        assert uow.interactions.count() == 1


def test_a_transaction_commits_all_or_nothing(backend: MongoBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a replica set a commit that fails part-way stores nothing of the unit."""
    if "transactions" not in backend.capabilities:
        pytest.skip(f"the server at {backend.url_display} is standalone: no transactions to test")
    contact = contact_record()
    real_apply = MongoUnitOfWork._apply

    def fail_on_interactions(self: MongoUnitOfWork, view: Any, session: Any) -> None:
        real_apply(self, view, session)
        if view.name == "identities":
            raise RuntimeError("simulated failure after contacts and identities were written")

    monkeypatch.setattr(MongoUnitOfWork, "_apply", fail_on_interactions)
    with backend.unit_of_work() as uow:
        uow.contacts.add(contact)
        uow.identities.add(identity_record(contact.id))
        uow.interactions.add(interaction_record(contact.id))
        with pytest.raises(RuntimeError):
            uow.commit()
    monkeypatch.setattr(MongoUnitOfWork, "_apply", real_apply)
    with backend.unit_of_work() as uow:
        assert (uow.contacts.count(), uow.identities.count(), uow.interactions.count()) == (0, 0, 0)
