"""Interface, schema versions, record round trips, time, missing and duplicate records,
optimistic concurrency and transactions: the rules every repository shares.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import attrs
import pytest

from carecrm.core.errors import ConflictError, DuplicateError, NotFound, SchemaVersionError
from carecrm.core.model.ids import new_id
from carecrm.core.model.records import (
    ERASED,
    MERGED,
)
from carecrm.core.storage.contract import SCHEMA_VERSION, StorageBackend, UnitOfWork
from carecrm.core.testing.storage.base import ContractBase
from carecrm.core.testing.storage.builders import (
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
    review_record,
    score_record,
    segment_record,
    stage_change_record,
    task_record,
)


class CoreContract(ContractBase):
    """Interface, schema versions, record round trips, time, missing and duplicate records,
    optimistic concurrency and transactions: the rules every repository shares."""

    # ------------------------------------------------------------------ interface and schema

    def test_is_a_storage_backend(self, backend: StorageBackend) -> None:
        """The backend satisfies the StorageBackend protocol: name, url_display, capabilities."""
        assert isinstance(backend, StorageBackend)
        assert isinstance(backend.name, str) and backend.name
        assert isinstance(backend.url_display, str)
        assert isinstance(backend.capabilities, frozenset)

    def test_check_describes_a_reachable_backend(self, backend: StorageBackend) -> None:
        """check() pings and names ok, backend, server_version, schema_version, capabilities."""
        info = backend.check()
        for key in ("ok", "backend", "server_version", "schema_version", "capabilities"):
            assert key in info, f"check() lacks {key!r}"
        assert info["ok"] is True
        assert info["backend"] == backend.name
        assert info["schema_version"] == SCHEMA_VERSION

    def test_schema_version_is_current_after_create_schema(self, backend: StorageBackend) -> None:
        """After create_schema() the stored version is SCHEMA_VERSION and verify_schema() agrees."""
        assert backend.schema_version() == SCHEMA_VERSION
        assert backend.verify_schema() == SCHEMA_VERSION

    def test_create_schema_is_idempotent_and_keeps_data(self, backend: StorageBackend) -> None:
        """create_schema() on a current database changes nothing and loses nothing."""
        contact = self.new_contact(backend)
        backend.create_schema()
        assert backend.schema_version() == SCHEMA_VERSION
        assert_same_record(self.read(backend, lambda uow: uow.contacts.get(contact.id)), contact)

    def test_upgrade_of_a_current_database_applies_nothing(self, backend: StorageBackend) -> None:
        """upgrade() on a current database returns an empty list of steps."""
        assert backend.upgrade() == []
        assert backend.schema_version() == SCHEMA_VERSION

    def _set_stored_version(self, backend: StorageBackend, version: int) -> None:
        self.store(backend, lambda uow: uow.meta.set("schema_version", str(version)))

    def test_newer_schema_version_is_refused(self, backend: StorageBackend) -> None:
        """A database written by a newer carecrm is refused (verify, upgrade, create) and left untouched."""
        self._set_stored_version(backend, SCHEMA_VERSION + 1)
        assert backend.schema_version() == SCHEMA_VERSION + 1
        with pytest.raises(SchemaVersionError):
            backend.verify_schema()
        with pytest.raises(SchemaVersionError):
            backend.upgrade()
        with pytest.raises(SchemaVersionError):
            backend.create_schema()
        assert backend.schema_version() == SCHEMA_VERSION + 1, "a refused database must stay untouched"

    def test_newer_schema_version_is_refused_on_open(
        self, backend: StorageBackend, reopen_backend: Callable[[], StorageBackend]
    ) -> None:
        """Opening a newer database refuses the first unit of work with SchemaVersionError."""
        self._set_stored_version(backend, SCHEMA_VERSION + 1)
        reopened = reopen_backend()
        with pytest.raises(SchemaVersionError):
            with reopened.unit_of_work() as uow:
                uow.contacts.count()

    def test_older_schema_version_is_refused_until_upgraded(
        self, backend: StorageBackend, reopen_backend: Callable[[], StorageBackend]
    ) -> None:
        """An older database is refused until upgrade(), which keeps its data and works."""
        contact = self.new_contact(backend)
        self._set_stored_version(backend, SCHEMA_VERSION - 1)
        with pytest.raises(SchemaVersionError):
            backend.verify_schema()
        with pytest.raises(SchemaVersionError):
            with reopen_backend().unit_of_work() as uow:
                uow.contacts.count()
        with pytest.raises(SchemaVersionError):
            backend.create_schema()
        assert isinstance(backend.upgrade(), list)
        assert backend.schema_version() == SCHEMA_VERSION
        assert backend.verify_schema() == SCHEMA_VERSION
        assert_same_record(self.read(backend, lambda uow: uow.contacts.get(contact.id)), contact)
        with reopen_backend().unit_of_work() as uow:
            assert uow.contacts.count() == 1

    # ------------------------------------------------------------------ round trips

    def test_contact_round_trip(self, backend: StorageBackend) -> None:
        """Contacts round-trip field by field: every field set, every optional field None, merged."""
        full = self.new_contact(backend)
        minimal = contact_record(
            wrapped_key=None,
            pii_enc=None,
            name_bidx=None,
            family_name_bidx=None,
            key_version=None,
            name_confidence=None,
            stage_changed_at=None,
            service_interest=None,
            location=None,
            city=None,
            postal_prefix=None,
            owner=None,
            score=None,
            first_source=None,
        )
        merged = contact_record(status=MERGED, merged_into=full.id, score=-3.0)
        self.store(backend, lambda uow: uow.contacts.add_many([minimal, merged]))
        with backend.unit_of_work() as uow:
            for record in (full, minimal, merged):
                assert_same_record(uow.contacts.get(record.id), record)

    def test_identity_round_trip(self, backend: StorageBackend) -> None:
        """Identities (email, phone, external ids with a URL system) round-trip field by field."""
        contact = self.new_contact(backend)
        email = identity_record(contact.id, verified=True)
        phone = identity_record(
            contact.id, kind="phone", bidx=bidx("+13055550123"), valid=False, source=None, value_enc=None
        )
        external = identity_record(
            contact.id, kind="external:http://hl7.org/fhir/sid/us-mrn", bidx=bidx("mrn 1"), valid=True
        )

        def fill(uow: UnitOfWork) -> None:
            uow.identities.add(email)
            uow.identities.add_many([phone, external])

        self.store(backend, fill)
        got = self.read(backend, lambda uow: uow.identities.for_contact(contact.id))
        assert {r.id: r for r in got}.keys() == {email.id, phone.id, external.id}
        for record in (email, phone, external):
            assert_same_record(next(r for r in got if r.id == record.id), record)

    def test_interaction_round_trip(self, backend: StorageBackend) -> None:
        """Interactions round-trip, nested unicode JSON, bytes and optional Nones included."""
        contact = self.new_contact(backend)
        full = interaction_record(contact.id)
        bare = interaction_record(
            contact.id,
            channel=None,
            direction=None,
            location=None,
            campaign=None,
            channel_group=None,
            touchpoint={},
            attributes={},
            body_enc=None,
            actor="system",
            inbox_id=None,
        )

        def fill(uow: UnitOfWork) -> None:
            uow.interactions.add(full)
            uow.interactions.add(bare)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            for record in (full, bare):
                assert_same_record(uow.interactions.get(record.id), record)

    def test_stage_change_round_trip(self, backend: StorageBackend) -> None:
        """Stage changes round-trip and come back oldest first."""
        contact = self.new_contact(backend)
        first = stage_change_record(
            contact.id, from_stage=None, to_stage="new_lead", actor=None, reason=None, implied_by=None
        )
        second = stage_change_record(contact.id, changed_at=at(60))

        def fill(uow: UnitOfWork) -> None:
            uow.stages.add(second)
            uow.stages.add(first)

        self.store(backend, fill)
        got = self.read(backend, lambda uow: uow.stages.history(contact.id))
        assert len(got) == 2
        assert_same_record(got[0], first)
        assert_same_record(got[1], second)

    def test_appointment_round_trip(self, backend: StorageBackend) -> None:
        """An appointment stored through import_records() comes back unchanged and is counted."""
        contact = self.new_contact(backend)
        record = appointment_record(contact.id)
        self.store(backend, lambda uow: uow.import_records("appointments", [record]))
        assert_same_record(self.read(backend, lambda uow: list(uow.export_records("appointments")))[0], record)
        assert self.read(backend, lambda uow: uow.appointments.count()) == 1

    def test_consent_round_trip(self, backend: StorageBackend) -> None:
        """Consent events round-trip, one without a contact or evidence included."""
        record = consent_record()
        anonymous = consent_record(contact_id=None, evidence_enc=None, regime={}, expires_at=None)

        def fill(uow: UnitOfWork) -> None:
            uow.consents.add(record)
            uow.consents.add(anonymous)

        self.store(backend, fill)
        got = self.read(backend, lambda uow: uow.consents.for_contact_point(record.contact_point_bidx))
        by_id = {r.id: r for r in got}
        assert_same_record(by_id[record.id], record)
        assert_same_record(by_id[anonymous.id], anonymous)

    def test_note_round_trip(self, backend: StorageBackend) -> None:
        """Notes round-trip with their encrypted body."""
        contact = self.new_contact(backend)
        record = note_record(contact.id)
        self.store(backend, lambda uow: uow.notes.add(record))
        assert_same_record(self.read(backend, lambda uow: uow.notes.for_contact(contact.id))[0], record)

    def test_task_round_trip(self, backend: StorageBackend) -> None:
        """Tasks round-trip, with and without due time, assignee and body."""
        contact = self.new_contact(backend)
        record = task_record(contact.id)
        bare = task_record(contact.id, created_by=None, assignee=None, due_at=None, body_enc=None)

        def fill(uow: UnitOfWork) -> None:
            uow.tasks.add(record)
            uow.tasks.add(bare)

        self.store(backend, fill)
        assert_same_record(self.read(backend, lambda uow: uow.tasks.get(record.id)), record)
        assert_same_record(self.read(backend, lambda uow: uow.tasks.get(bare.id)), bare)

    def test_score_round_trip(self, backend: StorageBackend) -> None:
        """Scores round-trip with their JSON reasons and a full double-precision score."""
        contact = self.new_contact(backend)
        record = score_record(contact.id)
        self.store(backend, lambda uow: uow.scores.put(record))
        got = self.read(backend, lambda uow: uow.scores.get(contact.id, "rules"))
        assert_same_record(got, record)
        assert got.score == 0.1 + 0.2, "scores keep double precision"

    def test_review_round_trip(self, backend: StorageBackend) -> None:
        """A resolved review pair round-trips."""
        a, b = self.new_contact(backend), self.new_contact(backend)
        record = review_record(a.id, b.id, status="resolved", resolved_at=at(9), resolved_by="carol")
        assert self.store(backend, lambda uow: uow.reviews.add(record)) is True
        assert_same_record(self.read(backend, lambda uow: uow.reviews.list(status=None))[0], record)

    def test_segment_round_trip(self, backend: StorageBackend) -> None:
        """A saved segment round-trips with its nested definition."""
        record = segment_record()
        self.store(backend, lambda uow: uow.segments.put(record))
        assert_same_record(self.read(backend, lambda uow: uow.segments.get(record.name)), record)

    def test_inbox_round_trip(self, backend: StorageBackend) -> None:
        """Inbox payloads round-trip, one of 300 kB included (beyond a 64 KiB BLOB)."""
        record = inbox_record(reason="field 'email' missing", processed_at=at(3), attempts=2, status="quarantined")
        large = inbox_record(payload_enc=ciphertext("large", size=300_000))

        def fill(uow: UnitOfWork) -> None:
            uow.inbox.add(record)
            uow.inbox.add(large)

        self.store(backend, fill)
        assert_same_record(self.read(backend, lambda uow: uow.inbox.get(record.id)), record)
        assert_same_record(self.read(backend, lambda uow: uow.inbox.get(large.id)), large)

    def test_merge_round_trip(self, backend: StorageBackend) -> None:
        """A merge-journal entry stored through import_records() comes back unchanged."""
        record = merge_record(new_id(), new_id())
        self.store(backend, lambda uow: uow.import_records("merges", [record]))
        assert_same_record(self.read(backend, lambda uow: list(uow.export_records("merges")))[0], record)

    def test_audit_round_trip(self, backend: StorageBackend) -> None:
        """Audit entries round-trip, empty lists, dicts and Nones included."""
        first = audit_record(1, contact_id=None, purpose=None, fields=[], details={}, actor=None, role=None)
        second = audit_record(2)

        def fill(uow: UnitOfWork) -> None:
            uow.audit.append(first)
            uow.audit.append(second)

        self.store(backend, fill)
        got = self.read(backend, lambda uow: list(uow.audit.iter()))
        assert len(got) == 2
        assert_same_record(got[0], first)
        assert_same_record(got[1], second)

    def test_meta_get_and_set(self, backend: StorageBackend) -> None:
        """meta: None for a missing key, set() inserts then replaces, unicode kept."""
        assert self.read(backend, lambda uow: uow.meta.get("key_check")) is None
        self.store(backend, lambda uow: uow.meta.set("key_check", "abc"))
        self.store(backend, lambda uow: uow.meta.set("key_check", "déf ✓"))
        assert self.read(backend, lambda uow: uow.meta.get("key_check")) == "déf ✓"

    # ------------------------------------------------------------------ time

    def test_datetimes_come_back_utc_truncated_to_milliseconds(self, backend: StorageBackend) -> None:
        """Any aware datetime comes back as the same instant in UTC, cut (not rounded) to ms."""
        contact = self.new_contact(backend)
        plus_two = timezone(timedelta(hours=2))
        occurred = datetime(2024, 7, 1, 14, 30, 15, 987654, tzinfo=plus_two)
        record = interaction_record(contact.id, occurred_at=occurred, recorded_at=T0)
        self.store(backend, lambda uow: uow.interactions.add(record))
        got = self.read(backend, lambda uow: uow.interactions.get(record.id))
        assert got.occurred_at == datetime(2024, 7, 1, 12, 30, 15, 987000, tzinfo=UTC)
        assert got.occurred_at.utcoffset() == timedelta(0)
        assert got.recorded_at == T0 and got.recorded_at.microsecond == 123000

    def test_naive_datetime_is_refused(self, backend: StorageBackend) -> None:
        """A naive datetime, as a field or as a query argument, raises ValueError; nothing is stored."""
        naive = datetime(2024, 3, 1, 12, 0, 0)
        with backend.unit_of_work() as uow:
            with pytest.raises(ValueError):
                uow.contacts.add(contact_record(created_at=naive))
            with pytest.raises(ValueError):
                uow.tasks.list(due_before=naive)
            with pytest.raises(ValueError):
                uow.interactions.timeline(new_id(), after=(naive, new_id()))
        assert self.read(backend, lambda uow: uow.contacts.count()) == 0

    # ------------------------------------------------------------------ not found

    def test_missing_records_raise_not_found(self, backend: StorageBackend) -> None:
        """Every get / update / delete / set_status of a missing record raises NotFound."""
        missing = new_id()
        with backend.unit_of_work() as uow:
            lookups: list[Callable[[], Any]] = [
                lambda: uow.contacts.get(missing),
                lambda: uow.interactions.get(missing),
                lambda: uow.tasks.get(missing),
                lambda: uow.scores.get(missing, "rules"),
                lambda: uow.segments.get("nope"),
                lambda: uow.segments.delete("nope"),
                lambda: uow.inbox.get(missing),
                lambda: uow.inbox.set_status(missing, "processed"),
                lambda: uow.tasks.update(task_record(missing)),
                lambda: uow.contacts.update(contact_record(id=missing)),
            ]
            for lookup in lookups:
                with pytest.raises(NotFound):
                    lookup()

    # ------------------------------------------------------------------ duplicates

    def test_duplicate_interaction_key_is_refused(self, backend: StorageBackend) -> None:
        """A repeated (source, idempotency_key) is a DuplicateError naming no value; keys are case-sensitive."""
        contact = self.new_contact(backend)
        first = interaction_record(contact.id, idempotency_key="evt-1")
        self.store(backend, lambda uow: uow.interactions.add(first))
        with backend.unit_of_work() as uow:
            with pytest.raises(DuplicateError) as caught:
                uow.interactions.add(interaction_record(contact.id, idempotency_key="evt-1"))
            assert "evt-1" not in str(caught.value), "error messages never carry stored values"
            # Same key from another source, or another key from the same source: fine.
            uow.interactions.add(interaction_record(contact.id, idempotency_key="evt-1", source="calendly"))
            uow.interactions.add(interaction_record(contact.id, idempotency_key="EVT-1"))
            uow.commit()
        assert self.read(backend, lambda uow: uow.interactions.count()) == 3

    def test_duplicate_consent_key_is_refused(self, backend: StorageBackend) -> None:
        """A repeated consent (source, idempotency_key) raises DuplicateError."""
        self.store(backend, lambda uow: uow.consents.add(consent_record(idempotency_key="c-1")))
        with backend.unit_of_work() as uow:
            with pytest.raises(DuplicateError):
                uow.consents.add(consent_record(idempotency_key="c-1", status="revoked"))
        self.store(backend, lambda uow: uow.consents.add(consent_record(idempotency_key="c-1", source="twilio")))
        assert self.read(backend, lambda uow: uow.consents.count()) == 2

    def test_add_many_is_all_or_nothing(self, backend: StorageBackend) -> None:
        """add_many() with one duplicate stores none of the batch and leaves the unit of work usable."""
        contact = self.new_contact(backend)
        stored = interaction_record(contact.id, idempotency_key="k-stored")
        self.store(backend, lambda uow: uow.interactions.add(stored))
        batch = [interaction_record(contact.id, idempotency_key=f"k-{i}") for i in range(5)]
        batch.insert(3, interaction_record(contact.id, idempotency_key="k-stored"))
        with backend.unit_of_work() as uow:
            kept = interaction_record(contact.id, idempotency_key="k-before")
            uow.interactions.add(kept)
            with pytest.raises(DuplicateError):
                uow.interactions.add_many(batch)
            # The unit stays usable and keeps what it did before the failed batch.
            assert uow.interactions.existing_keys("typeform", [f"k-{i}" for i in range(5)]) == set()
            after = interaction_record(contact.id, idempotency_key="k-after")
            uow.interactions.add(after)
            uow.commit()
        keys = self.read(
            backend,
            lambda uow: uow.interactions.existing_keys(
                "typeform", ["k-stored", "k-before", "k-after"] + [f"k-{i}" for i in range(5)]
            ),
        )
        assert keys == {"k-stored", "k-before", "k-after"}

    def test_add_many_refuses_a_repeated_key_inside_the_batch(self, backend: StorageBackend) -> None:
        """A key repeated inside one add_many() batch is a DuplicateError too; nothing is stored."""
        contact = self.new_contact(backend)
        batch = [interaction_record(contact.id, idempotency_key=k) for k in ("a", "b", "a")]
        with backend.unit_of_work() as uow:
            with pytest.raises(DuplicateError):
                uow.interactions.add_many(batch)
            uow.commit()
        assert self.read(backend, lambda uow: uow.interactions.count()) == 0

    def test_duplicate_ids_and_keys_are_refused(self, backend: StorageBackend) -> None:
        """Duplicate contact ids, (contact, kind, bidx) identities and audit seqs raise DuplicateError."""
        contact = self.new_contact(backend)
        identity = identity_record(contact.id)

        def fill(uow: UnitOfWork) -> None:
            uow.identities.add(identity)
            uow.audit.append(audit_record(1))

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            with pytest.raises(DuplicateError):
                uow.contacts.add(contact_record(id=contact.id))
            with pytest.raises(DuplicateError):
                uow.identities.add(identity_record(contact.id))  # same (contact, kind, bidx)
            with pytest.raises(DuplicateError):
                uow.audit.append(audit_record(1))
            with pytest.raises(DuplicateError):
                uow.contacts.add_many([contact_record(), contact_record(id=contact.id)])
        assert self.read(backend, lambda uow: (uow.contacts.count(), uow.identities.count())) == (1, 1)

    def test_empty_add_many_is_a_no_op(self, backend: StorageBackend) -> None:
        """add_many([]) stores nothing and raises nothing."""

        def fill(uow: UnitOfWork) -> None:
            uow.contacts.add_many([])
            uow.interactions.add_many([])
            uow.identities.add_many([])

        self.store(backend, fill)
        assert self.read(backend, lambda uow: uow.contacts.count()) == 0

    # ------------------------------------------------------------------ concurrency

    def test_update_uses_optimistic_concurrency(self, backend: StorageBackend) -> None:
        """update() bumps the version; an update based on a stale version raises ConflictError."""
        contact = self.new_contact(backend, stage="new_lead")
        moved = attrs.evolve(contact, stage="contacted", updated_at=at(100))
        stored = self.store(backend, lambda uow: uow.contacts.update(moved))
        assert stored.version == contact.version + 1
        assert_same_record(stored, attrs.evolve(moved, version=2))
        stale = attrs.evolve(contact, stage="lost")  # still says version 1
        with backend.unit_of_work() as uow:
            with pytest.raises(ConflictError):
                uow.contacts.update(stale)
        got = self.read(backend, lambda uow: uow.contacts.get(contact.id))
        assert (got.version, got.stage) == (2, "contacted")
        again = self.store(backend, lambda uow: uow.contacts.update(attrs.evolve(got, status=ERASED, pii_enc=None)))
        assert again.version == 3
        assert_same_record(self.read(backend, lambda uow: uow.contacts.get(contact.id)), again)

    # ------------------------------------------------------------------ transactions

    def test_leaving_without_commit_rolls_back(self, backend: StorageBackend) -> None:
        """Leaving the with-block without commit() stores nothing."""
        with backend.unit_of_work() as uow:
            uow.contacts.add(contact_record())
            uow.meta.set("x", "1")
        assert self.read(backend, lambda uow: (uow.contacts.count(), uow.meta.get("x"))) == (0, None)

    def test_an_exception_rolls_back_and_propagates(self, backend: StorageBackend) -> None:
        """An exception rolls back what was not committed and propagates."""

        class Boom(Exception):
            pass

        with pytest.raises(Boom):
            with backend.unit_of_work() as uow:
                uow.contacts.add(contact_record())
                uow.commit()
                uow.contacts.add(contact_record())
                raise Boom
        assert self.read(backend, lambda uow: uow.contacts.count()) == 1

    def test_explicit_rollback_then_commit(self, backend: StorageBackend) -> None:
        """rollback() undoes since the last commit; the unit stays usable after commit() and rollback()."""
        kept = contact_record()
        with backend.unit_of_work() as uow:
            uow.contacts.add(contact_record())
            uow.rollback()
            uow.contacts.add(kept)
            uow.commit()
            uow.contacts.add(contact_record())
        got = self.read(backend, lambda uow: uow.contacts.list())
        assert [c.id for c in got] == [kept.id]

    def test_committed_work_is_visible_to_a_new_unit(self, backend: StorageBackend) -> None:
        """What a unit commits, the next unit reads."""
        record = contact_record()
        self.store(backend, lambda uow: uow.contacts.add(record))
        assert self.read(backend, lambda uow: uow.contacts.get_many([record.id])) == {record.id: record}
