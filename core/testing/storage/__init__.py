"""The storage conformance suite: every rule of :mod:`carecrm.core.storage.contract`, as pytest tests.

A backend passes this suite to be a carecrm backend (``docs/storage_backends.md``).  Subclass
:class:`StorageBackendContract` in a module named ``test_*.py`` and override the
``backend`` fixture::

    import pytest
    from carecrm.core.testing.storage import StorageBackendContract

    class TestMyBackend(StorageBackendContract):
        @pytest.fixture
        def backend(self, tmp_path):
            backend = MyBackend(f"mine://{tmp_path}")
            backend.create_schema()
            yield backend
            backend.close()

        @pytest.fixture
        def reopen_backend(self, backend):       # optional, see below
            opened = []
            def reopen():
                opened.append(MyBackend(backend_url))
                return opened[-1]
            yield reopen
            for b in opened:
                b.close()

Fixtures a subclass provides:

* ``backend`` (required): a fresh, empty backend whose schema is created
  (``create_schema()`` done), one per test; closed afterwards.
* ``reopen_backend`` (optional): a callable returning a *new* backend instance on the
  same database as ``backend``, the way the app opens it at start-up; tests of the
  open-time schema-version check skip without it.

The suite uses only the public interface (:mod:`carecrm.core.storage.contract`,
:mod:`carecrm.core.model.records`, :mod:`carecrm.core.errors`), so it runs unchanged against
any backend.  The record builders (:func:`contact_record`, ...) are public too, for a
backend's own extra tests.

The suite is a package, one module per family of repositories (``core``: schema, round
trips, time, errors, transactions; ``timelines``; ``people``; ``journals``;
``capabilities``: each declared native optional query against its reference
implementation); :class:`StorageBackendContract` combines them all, and the record
builders of :mod:`~carecrm.core.testing.storage.builders` are re-exported here.
"""

from __future__ import annotations

from carecrm.core.testing.storage.base import ContractBase
from carecrm.core.testing.storage.builders import (
    RICH_JSON,
    SEGMENT_CASES,
    SEGMENT_CONTACTS,
    SEGMENT_INTERACTIONS,
    T0,
    appointment_record,
    assert_same_record,
    at,
    audit_record,
    bidx,
    ciphertext,
    consent_record,
    contact_record,
    identity_record,
    inbox_record,
    interaction_record,
    merge_record,
    note_record,
    outbox_record,
    review_record,
    score_record,
    segment_record,
    stage_change_record,
    task_record,
)
from carecrm.core.testing.storage.capabilities import CapabilityContract
from carecrm.core.testing.storage.core import CoreContract
from carecrm.core.testing.storage.journals import JournalContract
from carecrm.core.testing.storage.people import PeopleContract
from carecrm.core.testing.storage.timelines import TimelineContract


class StorageBackendContract(CoreContract, TimelineContract, PeopleContract, JournalContract, CapabilityContract):
    """Conformance tests every storage backend passes (see the module docstring)."""


__all__ = [
    "CapabilityContract",
    "ContractBase",
    "CoreContract",
    "JournalContract",
    "PeopleContract",
    "StorageBackendContract",
    "TimelineContract",
    "T0",
    "RICH_JSON",
    "at",
    "bidx",
    "ciphertext",
    "contact_record",
    "identity_record",
    "interaction_record",
    "stage_change_record",
    "appointment_record",
    "consent_record",
    "note_record",
    "task_record",
    "score_record",
    "review_record",
    "segment_record",
    "inbox_record",
    "merge_record",
    "audit_record",
    "outbox_record",
    "assert_same_record",
    "SEGMENT_CONTACTS",
    "SEGMENT_INTERACTIONS",
    "SEGMENT_CASES",
]
