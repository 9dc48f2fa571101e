"""The MongoDB backend over mongomock (in-process): the conformance suite, plus what is
specific to the backend without a server (URLs, options, documents, buffered units of
work, error translation at the pymongo boundary with pymongo's own exception types)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator

import pytest

from carecrm.core.storage import StorageBackend
from carecrm.core.testing.storage import StorageBackendContract
from carecrm.storage_backends.mongo.backend import MongoBackend, forget_mock


@pytest.fixture
def mock_url() -> Iterator[str]:
    """A fresh ``mongomock://`` name for one test, forgotten afterwards."""
    name = f"test-{uuid.uuid4().hex}"
    yield f"mongomock://{name}"
    forget_mock(name)


class TestMongomockContract(StorageBackendContract):
    """The conformance suite on the MongoDB backend over mongomock (no transactions: the
    buffered, ordered-writes units of work)."""

    @pytest.fixture
    def backend(self, mock_url: str) -> Iterator[StorageBackend]:
        backend = MongoBackend(mock_url)
        backend.create_schema()
        yield backend
        backend.close()

    @pytest.fixture
    def reopen_backend(self, mock_url: str) -> Callable[[], StorageBackend]:
        return lambda: MongoBackend(mock_url)
