"""The dispatch of the optional storage queries (:mod:`carecrm.core.storage.capabilities`):
native when the unit of work declares the query, the reference otherwise."""

from __future__ import annotations

import pytest

from carecrm.core.errors import UnknownComponentError
from carecrm.core.storage.capabilities import ALL_QUERIES, QUERY_CAPABILITIES, queries, query_function
from carecrm.core.storage.contract import StorageBackend
from carecrm.core.testing.storage import at, contact_record, interaction_record
from carecrm.storage_backends.sql.backend import SqlUnitOfWork


def test_every_capability_names_its_repository_method_and_a_reference() -> None:
    assert ALL_QUERIES == frozenset(QUERY_CAPABILITIES)
    for name, capability in QUERY_CAPABILITIES.items():
        assert name == f"{capability.repository}.{capability.method}"
        assert callable(capability.reference) and capability.reference.__doc__


def test_an_unknown_query_lists_the_known_ones(carecrm_sqlite_backend: StorageBackend) -> None:
    with carecrm_sqlite_backend.unit_of_work() as uow, pytest.raises(UnknownComponentError) as caught:
        query_function(uow, "contacts.top")
    assert "contacts.count_matching" in str(caught.value)


def test_declared_queries_run_natively_and_undeclared_ones_by_the_reference(
    carecrm_sqlite_backend: StorageBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    contact = contact_record()
    with carecrm_sqlite_backend.unit_of_work() as uow:
        uow.contacts.add(contact)
        uow.interactions.add(interaction_record(contact.id, occurred_at=at(7)))
        uow.commit()
    with carecrm_sqlite_backend.unit_of_work() as uow:
        native = query_function(uow, "interactions.latest_times")
        assert getattr(native, "__self__", None) is uow.interactions
        assert queries(uow).latest_times([contact.id]) == {contact.id: at(7)}
    monkeypatch.setattr(SqlUnitOfWork, "native_queries", frozenset({"contacts.select_ids"}))
    with carecrm_sqlite_backend.unit_of_work() as uow:
        reference = query_function(uow, "interactions.latest_times")
        assert getattr(reference, "__self__", None) is None
        assert reference([contact.id]) == {contact.id: at(7)}
        assert queries(uow).latest_times([contact.id]) == {contact.id: at(7)}
        with pytest.raises(NotImplementedError, match="interactions.latest_times"):
            query_function(uow, "interactions.latest_times", native=True)
