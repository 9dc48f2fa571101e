"""The core's reference implementations of the optional queries pass the same conformance
tests as the native ones: the timeline and people families of the suite (speed to lead,
attribution's journeys, batch timelines, scores, segment ids and counts) run on SQLite
and on mongomock with every native query switched off, so each query is answered by
:mod:`carecrm.core.storage.capabilities` on the required methods alone."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from carecrm.core.storage.contract import StorageBackend
from carecrm.core.testing.storage import PeopleContract, TimelineContract
from carecrm.storage_backends.mongo.backend import MongoBackend, MongoUnitOfWork, forget_mock
from carecrm.storage_backends.sql.backend import SqlUnitOfWork


class TestSqliteReferenceQueries(TimelineContract, PeopleContract):
    """SQLite, every optional query by the reference implementation."""

    @pytest.fixture
    def backend(self, carecrm_sqlite_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch) -> StorageBackend:
        monkeypatch.setattr(SqlUnitOfWork, "native_queries", frozenset())
        with carecrm_sqlite_backend.unit_of_work() as uow:
            assert uow.native_queries == frozenset()
        return carecrm_sqlite_backend


class TestMongomockReferenceQueries(TimelineContract, PeopleContract):
    """mongomock, every optional query by the reference implementation."""

    @pytest.fixture
    def backend(self, monkeypatch: pytest.MonkeyPatch) -> Iterator[StorageBackend]:
        monkeypatch.setattr(MongoUnitOfWork, "native_queries", frozenset())
        name = f"test-{uuid.uuid4().hex}"
        backend = MongoBackend(f"mongomock://{name}")
        backend.create_schema()
        yield backend
        backend.close()
        forget_mock(name)
