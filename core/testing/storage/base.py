"""Fixtures and helpers shared by every part of the storage conformance suite."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from carecrm.core.model.records import (
    ContactRecord,
    InteractionRecord,
)
from carecrm.core.storage.contract import StorageBackend, UnitOfWork
from carecrm.core.testing.storage.builders import (
    at,
    contact_record,
    interaction_record,
)


class ContractBase:
    """Fixtures and helpers every part of the conformance suite shares (see the package
    docstring: a backend overrides ``backend``, optionally ``reopen_backend`` and
    ``second_backend``)."""

    #: False for a backend whose units of work cannot run in two threads at once (an
    #: in-memory SQLite database shares one connection): the concurrency tests skip.
    concurrent_units: bool = True

    # ------------------------------------------------------------------ fixtures

    @pytest.fixture
    def backend(self) -> Iterator[StorageBackend]:
        """A fresh, empty, schema-created backend per test.  Subclasses MUST override."""
        raise NotImplementedError("override the `backend` fixture in your StorageBackendContract subclass")
        yield  # pragma: no cover

    @pytest.fixture
    def reopen_backend(self, backend: StorageBackend) -> Callable[[], StorageBackend]:
        """A callable opening a new backend on ``backend``'s database.  Optional to override."""
        pytest.skip("no reopen_backend fixture: the open-time schema check is not tested")

    @pytest.fixture
    def second_backend(self) -> StorageBackend:
        """A second fresh, empty, schema-created backend of the same kind on another
        database, closed afterwards.  Optional to override."""
        pytest.skip("no second_backend fixture: whole-database copies into a second backend are not tested")

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def store(backend: StorageBackend, fill: Callable[[UnitOfWork], Any]) -> Any:
        """Run ``fill(uow)`` in a new unit of work and commit; returns what it returned."""
        with backend.unit_of_work() as uow:
            result = fill(uow)
            uow.commit()
        return result

    @staticmethod
    def read(backend: StorageBackend, query: Callable[[UnitOfWork], Any]) -> Any:
        """Run ``query(uow)`` in a new unit of work (rolled back) and return its result."""
        with backend.unit_of_work() as uow:
            return query(uow)

    def new_contact(self, backend: StorageBackend, **overrides: Any) -> ContactRecord:
        """Store and return a contact."""
        record = contact_record(**overrides)
        self.store(backend, lambda uow: uow.contacts.add(record))
        return record

    def _timeline_fixture(self, backend: StorageBackend) -> tuple[ContactRecord, list[InteractionRecord]]:
        """Two contacts with shuffled interactions (ties in time); returns the first contact
        and its interactions in timeline order, (occurred_at, id)."""
        contact = self.new_contact(backend)
        other = self.new_contact(backend)
        kinds = ["form.submitted", "email.opened", "call.completed"]
        records = [
            interaction_record(contact.id, occurred_at=at(seconds), kind=kinds[i % 3])
            for i, seconds in enumerate([5, 1, 3, 3, 3, 3, 2, 9, 3.001])
        ]
        records += [interaction_record(other.id, occurred_at=at(s)) for s in (0, 3, 4)]
        shuffled = records[:]
        random.Random(7).shuffle(shuffled)
        self.store(backend, lambda uow: uow.interactions.add_many(shuffled))
        mine = sorted((r for r in records if r.contact_id == contact.id), key=lambda r: (r.occurred_at, r.id))
        return contact, mine
