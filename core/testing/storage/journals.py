"""The inbox, named locks and the meta lock, the audit log and the outbox, and
whole-database copies (export/import).
"""

from __future__ import annotations

from datetime import datetime

import pytest

from carecrm.core.errors import DuplicateError, NotFound, UnknownComponentError
from carecrm.core.model.ids import new_id
from carecrm.core.storage.contract import RECORD_KINDS, SCHEMA_VERSION, StorageBackend, UnitOfWork
from carecrm.core.testing.storage.base import ContractBase
from carecrm.core.testing.storage.builders import (
    appointment_record,
    assert_same_record,
    at,
    audit_record,
    bidx,
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


class JournalContract(ContractBase):
    """The inbox, named locks and the meta lock, the audit log and the outbox, and
    whole-database copies (export/import)."""

    # ------------------------------------------------------------------ inbox

    def test_inbox_status_list_digest_and_purge(self, backend: StorageBackend) -> None:
        """Inbox: set_status(), list() newest first with filters, find_digests(), purge() by status and age."""
        old = inbox_record(received_at=at(0))
        mid = inbox_record(received_at=at(10), source="calendly", digest=bidx("same"))
        new = inbox_record(received_at=at(20), digest=bidx("same"))
        again = inbox_record(received_at=at(30), digest=bidx("again"))

        def fill(uow: UnitOfWork) -> None:
            for r in (old, mid, new, again):
                uow.inbox.add(r)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            uow.inbox.set_status(old.id, "quarantined", reason="record #1: field 'email': not an address", attempts=1)
            uow.inbox.set_status(old.id, "processed", processed_at=at(40))
            uow.inbox.set_status(mid.id, "processed", processed_at=at(41), attempts=1)
            uow.inbox.set_status(new.id, "quarantined", reason="bad signature")
            uow.commit()
        with backend.unit_of_work() as uow:
            got = uow.inbox.get(old.id)
            assert (got.status, got.reason, got.processed_at, got.attempts) == ("processed", None, at(40), 1)
            assert [r.id for r in uow.inbox.list()] == [again.id, new.id, mid.id, old.id]
            assert [r.id for r in uow.inbox.list(status="processed")] == [mid.id, old.id]
            assert [r.id for r in uow.inbox.list(source="typeform", limit=2)] == [again.id, new.id]
            assert [r.id for r in uow.inbox.list(status="quarantined", source="calendly")] == []
            assert [r.id for r in uow.inbox.find_digests("typeform", [bidx("same")])] == [new.id]
            assert uow.inbox.find_digests("other", [bidx("same")]) == []
            assert uow.inbox.purge(status="processed", before=at(10)) == 1
            assert uow.inbox.purge(status="processed", before=at(10)) == 0
            uow.commit()
        assert self.read(backend, lambda uow: uow.inbox.count()) == 3
        with backend.unit_of_work() as uow:
            with pytest.raises(NotFound):
                uow.inbox.get(old.id)

    def test_inbox_one_row_per_digest(self, backend: StorageBackend) -> None:
        """(source, digest) is unique: add_many() of a stored pair is a DuplicateError;
        add_new() stores only the payloads whose pair is new and skips the rest quietly,
        the first stored row wins, and says how many it stored (or None); the same digest
        under another source is another payload."""
        first = inbox_record(received_at=at(0), digest=bidx("one"))
        self.store(backend, lambda uow: uow.inbox.add(first))
        again = inbox_record(received_at=at(1), digest=bidx("one"))
        with backend.unit_of_work() as uow:
            with pytest.raises(DuplicateError):
                uow.inbox.add_many([again])
        other = inbox_record(received_at=at(2), digest=bidx("two"))
        elsewhere = inbox_record(received_at=at(3), digest=bidx("one"), source="calendly")
        stored = self.store(backend, lambda uow: uow.inbox.add_new([again, other, elsewhere]))
        assert stored in (2, None)  # exact when the backend knows it at once
        assert self.store(backend, lambda uow: uow.inbox.add_new([])) in (0, None)
        with backend.unit_of_work() as uow:
            found = uow.inbox.find_digests("typeform", [bidx("one"), bidx("two")])
            assert [r.id for r in found] == [first.id, other.id]
            assert [r.id for r in uow.inbox.find_digests("calendly", [bidx("one")])] == [elsewhere.id]
            assert uow.inbox.count() == 3

    def test_inbox_verified_and_what_a_payload_produced(self, backend: StorageBackend) -> None:
        """Schema version 4: ``verified`` round-trips (True, False, None), set_verified()
        changes it without counting an attempt; interactions.delete_for_inbox() deletes
        and returns exactly the interactions of one payload, and a second call finds none."""
        checked = inbox_record(verified=True, digest=bidx("checked"))
        unchecked = inbox_record(verified=False, digest=bidx("unchecked"))
        unknown = inbox_record(digest=bidx("unknown"))
        contact = contact_record()
        mine = [interaction_record(contact.id, inbox_id=checked.id) for _ in range(2)]
        other = interaction_record(contact.id, inbox_id=unchecked.id)
        loose = interaction_record(contact.id)

        def fill(uow: UnitOfWork) -> None:
            uow.inbox.add_many([checked, unchecked, unknown])
            uow.contacts.add(contact)
            uow.interactions.add_many([*mine, other, loose])

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            assert [uow.inbox.get(r.id).verified for r in (checked, unchecked, unknown)] == [True, False, None]
            assert uow.inbox.set_verified([unchecked.id, unknown.id], True) == 2
            assert uow.inbox.set_verified([checked.id], None) == 1
            uow.commit()
        with backend.unit_of_work() as uow:
            got = [uow.inbox.get(r.id) for r in (checked, unchecked, unknown)]
            assert [g.verified for g in got] == [None, True, True]
            assert [g.attempts for g in got] == [checked.attempts, unchecked.attempts, unknown.attempts]
        with backend.unit_of_work() as uow:
            gone = uow.interactions.delete_for_inbox(checked.id)
            uow.commit()
        assert sorted(r.id for r in gone) == sorted(r.id for r in mine)
        assert_same_record(next(r for r in gone if r.id == mine[0].id), mine[0])
        with backend.unit_of_work() as uow:
            assert uow.interactions.delete_for_inbox(checked.id) == []
            assert uow.interactions.count() == 2
            assert uow.interactions.existing_keys("typeform", [r.idempotency_key for r in mine]) == set()
            assert uow.interactions.get(other.id).inbox_id == unchecked.id

    def test_meta_get_for_update_serializes_writers(self, backend: StorageBackend) -> None:
        """get_for_update(): None for a missing key (and a rolled-back unit leaves no key
        behind); read-modify-write from two threads at once loses no increment."""
        import threading

        with backend.unit_of_work() as uow:
            assert uow.meta.get_for_update("counter") is None
        assert self.read(backend, lambda uow: uow.meta.get("counter")) is None
        if not self.concurrent_units:
            pytest.skip("this backend's units of work cannot run in two threads at once")
        rounds, errors = 12, []

        def bump() -> None:
            try:
                for _ in range(rounds):
                    with backend.unit_of_work() as uow:
                        value = uow.meta.get_for_update("counter")
                        uow.meta.set("counter", str(int(value or 0) + 1))
                        uow.commit()
            except Exception as exc:  # pragma: no cover - reported below
                errors.append(exc)

        threads = [threading.Thread(target=bump) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        assert errors == []
        assert self.read(backend, lambda uow: uow.meta.get("counter")) == str(2 * rounds)

    def test_lock_waits_for_the_holder(self, backend: StorageBackend) -> None:
        """lock(): a second unit asking for a held name waits until the holder commits;
        other names and a re-lock of a held name do not wait; the lock is gone after
        commit, and after a rollback."""
        import threading
        import time

        with backend.unit_of_work() as uow:  # re-locking and empty calls are fine
            uow.lock(["identity:email:a", "identity:email:a"])
            uow.lock(["identity:email:a"])
            uow.lock([])
            uow.rollback()
            uow.lock(["identity:email:a"])  # released by the rollback: free again
        if not self.concurrent_units:
            pytest.skip("this backend's units of work cannot run in two threads at once")
        got: dict[str, float] = {}
        holding = threading.Event()

        def second() -> None:
            holding.wait(30)
            with backend.unit_of_work() as uow:
                uow.lock(["identity:email:b", "identity:email:a"])
                got["second"] = time.monotonic()
                uow.commit()

        thread = threading.Thread(target=second)
        thread.start()
        with backend.unit_of_work() as uow:
            uow.lock(["identity:email:a"])
            holding.set()
            time.sleep(0.4)
            got["released"] = time.monotonic()
            uow.commit()
        thread.join(60)
        assert got["second"] >= got["released"]
        with backend.unit_of_work() as uow:  # nobody holds it now
            uow.lock(["identity:email:a", "identity:email:b"])
            uow.commit()

    def test_inbox_batches(self, backend: StorageBackend) -> None:
        """Inbox batch methods: add_many(), find_digests() over several digests, and
        set_status_many() adding one attempt to each payload named."""
        a = inbox_record(received_at=at(0), digest=bidx("a"))
        b = inbox_record(received_at=at(1), digest=bidx("b"))
        c = inbox_record(received_at=at(2), digest=bidx("c"), source="calendly")
        self.store(backend, lambda uow: uow.inbox.add_many([a, b, c]))
        with backend.unit_of_work() as uow:
            found = uow.inbox.find_digests("typeform", [bidx("b"), bidx("a"), bidx("c"), bidx("zz")])
            assert [r.id for r in found] == [a.id, b.id]
            assert uow.inbox.find_digests("typeform", []) == []
            assert uow.inbox.set_status_many([a.id, b.id], "processed", processed_at=at(5)) == 2
            assert uow.inbox.set_status_many([b.id], "quarantined", reason="field 'body': not JSON") == 1
            uow.commit()
        with backend.unit_of_work() as uow:
            got_a, got_b, got_c = (uow.inbox.get(r.id) for r in (a, b, c))
        assert (got_a.status, got_a.attempts, got_a.processed_at) == ("processed", 1, at(5))
        assert (got_b.status, got_b.attempts, got_b.reason) == ("quarantined", 2, "field 'body': not JSON")
        assert (got_c.status, got_c.attempts) == (c.status, c.attempts)

    def test_stage_changes_add_many(self, backend: StorageBackend) -> None:
        """Stage changes appended in a batch read back in order."""
        cid = new_id()
        stages = ("new_lead", "contacted")
        changes = [stage_change_record(cid, changed_at=at(i), to_stage=s) for i, s in enumerate(stages)]
        self.store(backend, lambda uow: uow.stages.add_many(changes))
        history = self.read(backend, lambda uow: uow.stages.history(cid))
        assert [h.to_stage for h in history] == ["new_lead", "contacted"]

    # ------------------------------------------------------------------ journals

    def test_audit_log_append_last_iter(self, backend: StorageBackend) -> None:
        """Audit log: last(), iter(since_seq) streamed beside other reads, seq unique, no update/delete."""
        assert self.read(backend, lambda uow: uow.audit.last()) is None
        entries = [audit_record(seq) for seq in range(1, 8)]

        def fill(uow: UnitOfWork) -> None:
            for e in entries:
                uow.audit.append(e)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            assert_same_record(uow.audit.last(), entries[-1])
            assert [e.seq for e in uow.audit.iter()] == list(range(1, 8))
            assert [e.seq for e in uow.audit.iter(since_seq=5)] == [6, 7]
            assert list(uow.audit.iter(since_seq=7)) == []
            # Streaming must not block other statements of the same unit of work.
            seen = []
            for entry in uow.audit.iter():
                seen.append((entry.seq, uow.meta.get("schema_version")))
            assert len(seen) == 7
            with pytest.raises(DuplicateError):
                uow.audit.append(audit_record(7))
            for name in ("update", "delete", "put", "remove"):
                assert not hasattr(uow.audit, name), f"the audit log is append-only but has {name}()"

    def test_outbox_append_after_prune(self, backend: StorageBackend) -> None:
        """Outbox: append_many, after(seq, limit) in seq order, last_seq, a taken seq
        refused, prune by seq and time (naive time refused)."""
        assert self.read(backend, lambda uow: uow.outbox.last_seq()) == 0
        events = [outbox_record(seq) for seq in range(1, 8)]
        self.store(backend, lambda uow: uow.outbox.append_many(events[:3]))
        self.store(backend, lambda uow: uow.outbox.append_many(events[3:]))
        with backend.unit_of_work() as uow:
            assert uow.outbox.last_seq() == 7
            got = uow.outbox.after(0, limit=100)
            assert [e.seq for e in got] == list(range(1, 8))
            for stored, want in zip(got, events, strict=True):
                assert_same_record(stored, want)
            assert [e.seq for e in uow.outbox.after(2, limit=3)] == [3, 4, 5]
            assert uow.outbox.after(7) == [] and uow.outbox.after(0, limit=0) == []
            with pytest.raises(ValueError):
                uow.outbox.after(0, limit=-1)
            with pytest.raises(DuplicateError):
                uow.outbox.append_many([outbox_record(7)])
        with backend.unit_of_work() as uow:
            with pytest.raises(ValueError, match="naive"):
                uow.outbox.prune(upto_seq=7, before=datetime(2030, 1, 1))
            # events 1..5 are delivered; of those, 1..3 are older than at(4)
            assert uow.outbox.prune(upto_seq=5, before=at(4)) == 3
            uow.commit()
        with backend.unit_of_work() as uow:
            assert [e.seq for e in uow.outbox.after(0)] == [4, 5, 6, 7]
            assert uow.outbox.last_seq() == 7

    # ------------------------------------------------------------------ whole-database copies

    #: Contacts stored by :meth:`_fill_every_kind`; with two models each, the scores
    #: (composite key) span more than one page of 1000.
    COPY_CONTACTS = 501

    def _fill_every_kind(self, backend: StorageBackend) -> None:
        """Store records of every kind of RECORD_KINDS (contacts and scores past one page)."""
        contacts = [contact_record() for _ in range(self.COPY_CONTACTS)]
        a, b = contacts[0].id, contacts[1].id

        def fill(uow: UnitOfWork) -> None:
            uow.contacts.add_many(contacts)
            uow.identities.add(identity_record(a))
            uow.interactions.add_many([interaction_record(a), interaction_record(b)])
            uow.stages.add(stage_change_record(a))
            uow.import_records("appointments", [appointment_record(a)])
            uow.consents.add(consent_record(contact_id=a))
            uow.notes.add(note_record(a))
            uow.tasks.add(task_record(a))
            uow.scores.put_many([score_record(c.id, model=m) for c in contacts for m in ("rules", "live")])
            uow.reviews.add(review_record(a, b))
            uow.segments.put(segment_record())
            uow.inbox.add(inbox_record())
            uow.import_records("merges", [merge_record(a, b)])
            for seq in (1, 2, 3):
                uow.audit.append(audit_record(seq))
            uow.outbox.append_many([outbox_record(1), outbox_record(2)])
            uow.meta.set("key_check", "check-value")

        self.store(backend, fill)

    def test_export_records_streams_every_kind_in_key_order(self, backend: StorageBackend) -> None:
        """export_records(kind) yields every stored record of each kind as stored, by key,
        as many as count_records(kind); meta as (key, value) pairs; an unknown kind is
        refused listing the known ones."""
        self._fill_every_kind(backend)
        with backend.unit_of_work() as uow:
            exported = {kind: list(uow.export_records(kind)) for kind in RECORD_KINDS}
            counts = {kind: uow.count_records(kind) for kind in RECORD_KINDS}
            with pytest.raises(UnknownComponentError, match="contacts"):
                list(uow.export_records("patients"))
            with pytest.raises(UnknownComponentError):
                uow.count_records("patients")
            with pytest.raises(UnknownComponentError):
                uow.import_records("patients", [])
            stored_contact = uow.contacts.get(exported["contacts"][0].id)
        assert {kind: len(records) for kind, records in exported.items()} == counts
        assert counts["contacts"] == self.COPY_CONTACTS and counts["scores"] == 2 * self.COPY_CONTACTS
        assert all(counts[kind] >= 1 for kind in RECORD_KINDS)
        ids = [c.id for c in exported["contacts"]]
        assert ids == sorted(ids) and len(set(ids)) == len(ids)
        score_keys = [(s.contact_id, s.model) for s in exported["scores"]]
        assert score_keys == sorted(score_keys) and len(set(score_keys)) == len(score_keys)
        assert [e.seq for e in exported["audit_log"]] == [1, 2, 3]
        assert_same_record(exported["contacts"][0], stored_contact)
        meta = dict(exported["meta"])
        assert meta["key_check"] == "check-value" and meta["schema_version"] == str(SCHEMA_VERSION)

    def test_records_copy_into_a_second_backend_unchanged(
        self, backend: StorageBackend, second_backend: StorageBackend
    ) -> None:
        """export_records → import_records (in batches, a commit each) into a fresh backend
        of the same kind: every kind comes back equal, record for record, with equal
        counts; importing a stored key again is a DuplicateError."""
        self._fill_every_kind(backend)
        with backend.unit_of_work() as src:
            source = {kind: list(src.export_records(kind)) for kind in RECORD_KINDS}
        with second_backend.unit_of_work() as dst:
            for kind in RECORD_KINDS:
                records = source[kind]
                for start in range(0, max(len(records), 1), 400):
                    assert dst.import_records(kind, records[start : start + 400]) == len(records[start : start + 400])
                    dst.commit()
        with second_backend.unit_of_work() as dst:
            copied = {kind: list(dst.export_records(kind)) for kind in RECORD_KINDS}
            counts = {kind: dst.count_records(kind) for kind in RECORD_KINDS}
            with pytest.raises(DuplicateError):
                dst.import_records("contacts", source["contacts"][:1])
                dst.commit()
        assert counts == {kind: len(records) for kind, records in source.items()}
        for kind in RECORD_KINDS:
            assert len(copied[kind]) == len(source[kind]), kind
            if kind == "meta":
                assert dict(copied[kind]) == dict(source[kind])
                continue
            for got, want in zip(copied[kind], source[kind], strict=True):
                assert_same_record(got, want)
