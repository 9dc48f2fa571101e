"""Identities, contacts, stage history, consents, notes, tasks, scores, reviews and
segments (saved segments and segment queries).
"""

from __future__ import annotations

import attrs
import pytest

from carecrm.core.analytics.criteria import (
    And,
    Eq,
    HadInteraction,
)
from carecrm.core.errors import ConflictError, NotFound
from carecrm.core.model.ids import new_id
from carecrm.core.model.records import (
    ERASED,
    MERGED,
    ContactRecord,
)
from carecrm.core.storage.capabilities import queries
from carecrm.core.storage.contract import StorageBackend, UnitOfWork
from carecrm.core.testing.storage.base import ContractBase
from carecrm.core.testing.storage.builders import (
    _OPENED,
    SEGMENT_CASES,
    SEGMENT_CONTACTS,
    SEGMENT_INTERACTIONS,
    assert_same_record,
    at,
    bidx,
    consent_record,
    contact_record,
    identity_record,
    interaction_record,
    note_record,
    review_record,
    score_record,
    segment_record,
    stage_change_record,
    task_record,
)


class PeopleContract(ContractBase):
    """Identities, contacts, stage history, consents, notes, tasks, scores, reviews and
    segments (saved segments and segment queries)."""

    # ------------------------------------------------------------------ identities

    def test_blind_indexes_are_not_unique_across_contacts(self, backend: StorageBackend) -> None:
        """Two contacts may share a phone blind index; find() returns both, oldest first."""
        mother = self.new_contact(backend, created_at=at(0))
        son = self.new_contact(backend, created_at=at(10))
        shared = bidx("+13055550123")
        first = identity_record(mother.id, kind="phone", bidx=shared, created_at=at(0))
        second = identity_record(son.id, kind="phone", bidx=shared, created_at=at(10))
        self.store(backend, lambda uow: uow.identities.add_many([second, first]))
        got = self.read(backend, lambda uow: uow.identities.find("phone", shared))
        assert [r.contact_id for r in got] == [mother.id, son.id]
        assert self.read(backend, lambda uow: uow.identities.find("email", shared)) == []

    def test_find_many(self, backend: StorageBackend) -> None:
        """find_many() matches exact (kind, bidx) pairs only, for many pairs at once."""
        a, b = self.new_contact(backend), self.new_contact(backend)
        a_email = identity_record(a.id, kind="email", bidx=bidx("a@x.org"))
        a_phone = identity_record(a.id, kind="phone", bidx=bidx("+1305"))
        b_phone = identity_record(b.id, kind="phone", bidx=bidx("+1305"), created_at=at(5))
        b_ext = identity_record(b.id, kind="external:meta", bidx=bidx("lead 9"))
        self.store(backend, lambda uow: uow.identities.add_many([a_email, a_phone, b_phone, b_ext]))
        keys = [
            ("email", bidx("a@x.org")),
            ("phone", bidx("+1305")),
            ("phone", bidx("a@x.org")),
            ("email", bidx("nobody")),
            ("external:meta", bidx("lead 9")),
        ]
        keys += [("email", bidx(f"filler {i}")) for i in range(1100)]
        got = self.read(backend, lambda uow: uow.identities.find_many(keys))
        assert {r.id for r in got} == {a_email.id, a_phone.id, b_phone.id, b_ext.id}
        assert self.read(backend, lambda uow: uow.identities.find_many([])) == []

    # ------------------------------------------------------------------ contacts

    def test_find_contacts_by_name_blind_index(self, backend: StorageBackend) -> None:
        """find_by_name / find_by_family_name return active contacts only, oldest first."""
        name, family = bidx("name:ana lima"), bidx("family:lima")
        older = self.new_contact(backend, name_bidx=name, family_name_bidx=family, created_at=at(0))
        newer = self.new_contact(backend, name_bidx=name, family_name_bidx=family, created_at=at(50))
        self.new_contact(backend, name_bidx=name, family_name_bidx=family, status=MERGED, merged_into=older.id)
        cousin = self.new_contact(backend, name_bidx=bidx("name:rui lima"), family_name_bidx=family, created_at=at(20))
        got = self.read(backend, lambda uow: uow.contacts.find_by_name(name))
        assert [c.id for c in got] == [older.id, newer.id]
        got = self.read(backend, lambda uow: uow.contacts.find_by_family_name(family))
        assert [c.id for c in got] == [older.id, cousin.id, newer.id]
        assert self.read(backend, lambda uow: uow.contacts.find_by_name(bidx("nobody"))) == []

    def test_list_and_count_contacts(self, backend: StorageBackend) -> None:
        """list() pages active contacts in id order by stage; counts; get_many() skips missing ids."""
        ids = sorted(new_id() for _ in range(6))
        stages = ["new_lead", "contacted", "new_lead", "new_lead", "booked_patient", "new_lead"]
        records = [contact_record(id=i, stage=s) for i, s in zip(ids, stages, strict=True)]
        records[3] = attrs.evolve(records[3], status=ERASED, pii_enc=None, wrapped_key=None)
        self.store(backend, lambda uow: uow.contacts.add_many(list(reversed(records))))
        with backend.unit_of_work() as uow:
            assert [c.id for c in uow.contacts.list()] == [ids[0], ids[1], ids[2], ids[4], ids[5]]
            assert [c.id for c in uow.contacts.list(stage="new_lead")] == [ids[0], ids[2], ids[5]]
            assert [c.id for c in uow.contacts.list(stage="new_lead", after=ids[0], limit=1)] == [ids[2]]
            assert [c.id for c in uow.contacts.list(after=ids[4])] == [ids[5]]
            assert uow.contacts.count() == 6
            found = uow.contacts.get_many([ids[0], new_id(), ids[3], ids[0]])
            assert set(found) == {ids[0], ids[3]}
            assert_same_record(found[ids[3]], records[3])

    # ------------------------------------------------------------------ stages, appointments

    def test_stage_history(self, backend: StorageBackend) -> None:
        """history() is per contact oldest first, whatever the pipeline; count() counts every change."""
        a, b = sorted([new_id(), new_id()])
        changes = [
            stage_change_record(b, changed_at=at(1)),
            stage_change_record(a, changed_at=at(9), pipeline="implants"),
            stage_change_record(a, changed_at=at(2)),
            stage_change_record(b, changed_at=at(0), from_stage=None, to_stage="new_lead"),
        ]

        def fill(uow: UnitOfWork) -> None:
            for c in changes:
                uow.stages.add(c)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            assert [c.changed_at for c in uow.stages.history(b)] == [at(0), at(1)]
            assert [(c.changed_at, c.pipeline) for c in uow.stages.history(a)] == [
                (at(2), "default"),
                (at(9), "implants"),
            ]
            assert uow.stages.count() == 4

    # ------------------------------------------------------------------ consents, notes, tasks

    def test_consent_ledger_queries(self, backend: StorageBackend) -> None:
        """The ledger is queried by contact point (and channel, purpose) or by contact, by time."""
        phone, email = bidx("+13055550123"), bidx("a@x.org")
        contact = new_id()
        events = [
            consent_record(contact_point_bidx=phone, occurred_at=at(5), status="revoked", contact_id=contact),
            consent_record(contact_point_bidx=phone, occurred_at=at(1), contact_id=contact),
            consent_record(contact_point_bidx=phone, channel="phone", purpose="treatment", occurred_at=at(3)),
            consent_record(contact_point_bidx=email, channel="email", occurred_at=at(2), contact_id=contact),
        ]

        def fill(uow: UnitOfWork) -> None:
            for e in events:
                uow.consents.add(e)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            assert [e.occurred_at for e in uow.consents.for_contact_point(phone)] == [at(1), at(3), at(5)]
            sms = uow.consents.for_contact_point(phone, channel="sms", purpose="marketing")
            assert [e.status for e in sms] == ["granted", "revoked"]
            assert [e.id for e in uow.consents.for_contact_point(phone, purpose="treatment")] == [events[2].id]
            assert [e.id for e in uow.consents.for_contact(contact)] == [events[1].id, events[3].id, events[0].id]
            assert uow.consents.count() == 4

    def test_notes_oldest_first(self, backend: StorageBackend) -> None:
        """A contact's notes come back oldest first."""
        contact = self.new_contact(backend)
        notes = [note_record(contact.id, created_at=at(s)) for s in (3, 1, 2)]

        def fill(uow: UnitOfWork) -> None:
            for n in notes:
                uow.notes.add(n)

        self.store(backend, fill)
        got = self.read(backend, lambda uow: uow.notes.for_contact(contact.id))
        assert [n.created_at for n in got] == [at(1), at(2), at(3)]
        assert self.read(backend, lambda uow: uow.notes.for_contact(new_id())) == []

    def test_task_update_and_filters(self, backend: StorageBackend) -> None:
        """Task filters combine; order is due time (unknown last) then id; update() replaces."""
        a, b = new_id(), new_id()
        ids = sorted(new_id() for _ in range(5))
        tasks = [
            task_record(a, id=ids[4], assignee="bob", due_at=at(100)),
            task_record(a, id=ids[1], assignee="bob", due_at=None),
            task_record(b, id=ids[2], assignee="bob", due_at=at(50)),
            task_record(b, id=ids[3], assignee="eve", due_at=at(50)),
            task_record(a, id=ids[0], assignee="eve", due_at=None, status="done"),
        ]

        def fill(uow: UnitOfWork) -> None:
            for t in tasks:
                uow.tasks.add(t)

        self.store(backend, fill)
        with backend.unit_of_work() as uow:
            assert [t.id for t in uow.tasks.list()] == [ids[2], ids[3], ids[4], ids[0], ids[1]]
            assert [t.id for t in uow.tasks.list(assignee="bob")] == [ids[2], ids[4], ids[1]]
            assert [t.id for t in uow.tasks.list(contact_id=a, status="open")] == [ids[4], ids[1]]
            assert [t.id for t in uow.tasks.list(due_before=at(100))] == [ids[2], ids[3]]
            assert [t.id for t in uow.tasks.list(assignee="eve", status="done")] == [ids[0]]
            done = attrs.evolve(tasks[0], status="done", completed_at=at(90), completed_by="bob")
            uow.tasks.update(done)
            uow.tasks.update(done)  # the same values again is not "not found"
            uow.commit()
        assert_same_record(self.read(backend, lambda uow: uow.tasks.get(ids[4])), done)

    # ------------------------------------------------------------------ scores, reviews, segments

    def test_scores_put_replaces_per_contact_and_model(self, backend: StorageBackend) -> None:
        """put() replaces per (contact, model); another model's score of the same contact stays."""
        ids = sorted(new_id() for _ in range(4))
        with backend.unit_of_work() as uow:
            uow.scores.put(score_record(ids[0], score=10.0))
            uow.scores.put(score_record(ids[1], score=30.0))
            uow.scores.put(score_record(ids[2], score=20.0))
            uow.scores.put(score_record(ids[3], score=30.0))
            uow.scores.put(score_record(ids[0], score=99.5, reasons=[], computed_at=at(9)))
            uow.scores.put(score_record(ids[0], score=99.5, reasons=[], computed_at=at(9)))
            uow.scores.put(score_record(ids[2], model="ml", score=1000.0))
            uow.commit()
        with backend.unit_of_work() as uow:
            assert [uow.scores.get(i, "rules").score for i in ids] == [99.5, 30.0, 20.0, 30.0]
            assert_same_record(
                uow.scores.get(ids[0], "rules"), score_record(ids[0], score=99.5, reasons=[], computed_at=at(9))
            )
            assert uow.scores.get(ids[2], "ml").score == 1000.0
            with pytest.raises(NotFound):
                uow.scores.get(ids[0], "ml")

    def test_scores_put_many_upserts_and_keeps_the_last_of_a_repeated_key(self, backend: StorageBackend) -> None:
        """put_many() inserts and replaces by (contact, model) in one call; a key given twice
        keeps the last; an empty list is a no-op; reasons round-trip."""
        ids = sorted(new_id() for _ in range(3))
        self.store(backend, lambda uow: uow.scores.put(score_record(ids[0], score=1.0)))
        batch = [
            score_record(ids[0], score=5.5, reasons=[{"rule": "é", "points": 5.5}], computed_at=at(7)),
            score_record(ids[1], score=2.0),
            score_record(ids[2], score=3.0),
            score_record(ids[2], score=4.0, computed_at=at(8)),
            score_record(ids[1], model="ml", score=9.0),
        ]
        self.store(backend, lambda uow: uow.scores.put_many(batch))
        self.store(backend, lambda uow: uow.scores.put_many([]))
        assert_same_record(self.read(backend, lambda uow: uow.scores.get(ids[0], "rules")), batch[0])
        assert_same_record(self.read(backend, lambda uow: uow.scores.get(ids[2], "rules")), batch[3])
        got = self.read(backend, lambda uow: [uow.scores.get(i, "rules") for i in ids[:3]])
        assert [(s.contact_id, s.score) for s in got] == [(ids[0], 5.5), (ids[1], 2.0), (ids[2], 4.0)]
        assert self.read(backend, lambda uow: uow.scores.get(ids[1], "ml")).score == 9.0

    def test_scores_top_active_joins_contacts(self, backend: StorageBackend) -> None:
        """top_active() keeps active contacts only (merged, erased and missing left out),
        optionally of some stages (``[]`` matches nothing), highest first, ties by contact id."""
        ids = sorted(new_id() for _ in range(6))
        self.new_contact(backend, id=ids[0], stage="new_lead")
        self.new_contact(backend, id=ids[1], stage="contacted")
        self.new_contact(backend, id=ids[2], stage="new_lead")
        self.new_contact(backend, id=ids[3], status=MERGED, merged_into=ids[0])
        self.new_contact(backend, id=ids[4], status=ERASED, wrapped_key=None, pii_enc=None)
        scores = [10.0, 30.0, 30.0, 99.0, 98.0, 97.0]  # ids[5] has no contact
        records = [score_record(i, score=v) for i, v in zip(ids, scores, strict=True)]
        self.store(backend, lambda uow: uow.scores.put_many(records))
        self.store(backend, lambda uow: uow.scores.put(score_record(ids[0], model="ml", score=1.0)))
        with backend.unit_of_work() as uow:
            top = queries(uow).top_active("rules")
            assert [(s.contact_id, s.score) for s in top] == [(ids[1], 30.0), (ids[2], 30.0), (ids[0], 10.0)]
            assert_same_record(top[0], records[1])
            assert [s.contact_id for s in queries(uow).top_active("rules", limit=1)] == [ids[1]]
            assert queries(uow).top_active("rules", limit=0) == []
            assert [s.contact_id for s in queries(uow).top_active("rules", stages=["new_lead"])] == [ids[2], ids[0]]
            assert [s.contact_id for s in queries(uow).top_active("rules", stages=["contacted", "x"])] == [ids[1]]
            assert queries(uow).top_active("rules", stages=[]) == []
            assert [s.contact_id for s in queries(uow).top_active("ml")] == [ids[0]]
            with pytest.raises(ValueError, match="limit"):
                queries(uow).top_active("rules", limit=-1)

    def test_contacts_active_scores_and_set_scores(self, backend: StorageBackend) -> None:
        """active_scores() reads the clear score of active contacts only; set_scores() writes
        only the score, moves each version on (an older copy then conflicts) and ignores
        unknown ids."""
        a = self.new_contact(backend, score=None)
        b = self.new_contact(backend, score=2.5)
        merged = self.new_contact(backend, status=MERGED, merged_into=a.id, score=7.0)
        missing = new_id()
        got = self.read(backend, lambda uow: queries(uow).active_scores([a.id, b.id, merged.id, missing, a.id]))
        assert got == {a.id: None, b.id: 2.5}
        assert self.read(backend, lambda uow: queries(uow).active_scores([])) == {}
        self.store(backend, lambda uow: uow.contacts.set_scores({a.id: 0.1 + 0.2, b.id: None, missing: 1.0}))
        self.store(backend, lambda uow: uow.contacts.set_scores({}))
        stored_a = self.read(backend, lambda uow: uow.contacts.get(a.id))
        assert_same_record(stored_a, attrs.evolve(a, score=0.1 + 0.2, version=a.version + 1))
        assert self.read(backend, lambda uow: uow.contacts.get(b.id)).score is None
        with backend.unit_of_work() as uow, pytest.raises(ConflictError):
            uow.contacts.update(attrs.evolve(a, stage="contacted"))  # a copy read before the score moved
        assert self.read(backend, lambda uow: uow.contacts.get_many([missing])) == {}  # nothing was created

    def test_clear_timelines_and_latest_times(self, backend: StorageBackend) -> None:
        """clear_timelines() returns each contact's interactions by (occurred_at, id) as
        clear facts; latest_times() the latest occurred_at per contact; contacts without
        interactions are left out of both; long id lists work (chunks)."""
        contact, expected = self._timeline_fixture(backend)
        others = [self.new_contact(backend) for _ in range(2)]
        rows = [
            interaction_record(others[0].id, kind="email.opened", occurred_at=at(3), direction="outbound",
                               attributes={"machine_open": True}),
            interaction_record(others[0].id, kind="call.completed", occurred_at=at(1), channel="phone"),
        ]  # fmt: skip
        self.store(backend, lambda uow: uow.interactions.add_many(rows))
        ids = [contact.id, others[0].id, others[1].id] + [new_id() for _ in range(1200)]
        got = self.read(backend, lambda uow: queries(uow).clear_timelines(ids))
        assert set(got) == {contact.id, others[0].id}
        assert [f.id for f in got[contact.id]] == [r.id for r in expected]
        first, second = got[others[0].id]
        assert (first.id, first.kind, first.occurred_at) == (rows[1].id, "call.completed", at(1))
        assert (first.channel, first.contact_id) == ("phone", others[0].id)
        assert (second.direction, second.attributes) == ("outbound", {"machine_open": True})
        latest = self.read(backend, lambda uow: queries(uow).latest_times(ids))
        assert latest == {contact.id: max(r.occurred_at for r in expected), others[0].id: at(3)}
        assert self.read(backend, lambda uow: queries(uow).clear_timelines([])) == {}
        assert self.read(backend, lambda uow: queries(uow).latest_times([])) == {}

    def test_review_pairs_are_unique(self, backend: StorageBackend) -> None:
        """A pair is stored once whatever its order; list() by status; for_contact() from either side."""
        a, b, c = sorted(new_id() for _ in range(3))
        first = review_record(a, b, created_at=at(0))
        with backend.unit_of_work() as uow:
            assert uow.reviews.add(first) is True
            assert uow.reviews.add(review_record(a, b, reason="again")) is False
            assert uow.reviews.add(review_record(a, b, contact_a=b, contact_b=a)) is False
            assert uow.reviews.add(review_record(b, c, created_at=at(5), status="dismissed")) is True
            assert uow.reviews.add(review_record(a, c, created_at=at(9))) is True
            uow.commit()
        with backend.unit_of_work() as uow:
            assert [(r.contact_a, r.contact_b) for r in uow.reviews.list()] == [(a, b), (a, c)]
            assert [r.status for r in uow.reviews.list(status=None)] == ["open", "dismissed", "open"]
            assert [r.status for r in uow.reviews.list(status="dismissed")] == ["dismissed"]
            assert [(r.contact_a, r.contact_b) for r in uow.reviews.for_contact(c)] == [(b, c), (a, c)]
            assert_same_record(uow.reviews.for_contact(a)[0], first)

    def test_segments_put_get_list_delete(self, backend: StorageBackend) -> None:
        """Segments: put() replaces by name, list() by name, delete() removes."""
        with backend.unit_of_work() as uow:
            uow.segments.put(segment_record("b-lapsed"))
            uow.segments.put(segment_record("a-new"))
            replaced = segment_record(
                "b-lapsed",
                definition={"field": "stage", "op": "eq", "value": "lost"},
                updated_at=at(60),
                created_by=None,
            )
            uow.segments.put(replaced)
            uow.commit()
        with backend.unit_of_work() as uow:
            assert [s.name for s in uow.segments.list()] == ["a-new", "b-lapsed"]
            assert_same_record(uow.segments.get("b-lapsed"), replaced)
            uow.segments.delete("a-new")
            uow.commit()
        assert [s.name for s in self.read(backend, lambda uow: uow.segments.list())] == ["b-lapsed"]

    # ------------------------------------------------------------------ segment queries

    def segment_world(self, backend: StorageBackend) -> dict[str, ContactRecord]:
        """Store :data:`SEGMENT_CONTACTS` (ids increasing in label order) and
        :data:`SEGMENT_INTERACTIONS`; returns the contacts by label."""
        records: dict[str, ContactRecord] = {}
        for label in sorted(SEGMENT_CONTACTS):
            records[label] = contact_record(**SEGMENT_CONTACTS[label])

        def fill(uow: UnitOfWork) -> None:
            uow.contacts.add_many(list(records.values()))
            uow.interactions.add_many(
                [
                    interaction_record(records[label].id, kind=kind, occurred_at=at(seconds))
                    for label, kind, seconds in SEGMENT_INTERACTIONS
                ]
            )

        self.store(backend, fill)
        return records

    @pytest.mark.parametrize("group", sorted(SEGMENT_CASES))
    def test_segment_criteria_select_and_count(self, backend: StorageBackend, group: str) -> None:
        """select(), select_ids() and count_matching() agree on every node type and
        combination: active contacts only, in id order, logic two-valued (a negated test
        matches an unknown value), a prefix case-sensitive with no wildcards, since
        inclusive and until exclusive, one row per contact however many interactions match."""
        records = self.segment_world(backend)
        label_of = {r.id: label for label, r in records.items()}
        with backend.unit_of_work() as uow:
            for criteria, expected in SEGMENT_CASES[group]:
                got = "".join(label_of[r.id] for r in uow.contacts.select(criteria))
                assert got == expected, f"select({criteria!r}) selected {got!r}, expected {expected!r}"
                ids = "".join(label_of[i] for i in queries(uow).select_ids(criteria))
                assert ids == expected, f"select_ids({criteria!r}) selected {ids!r}, expected {expected!r}"
                count = queries(uow).count_matching(criteria)
                assert count == len(expected), f"count_matching({criteria!r}) = {count}, expected {len(expected)}"

    def test_segment_select_returns_whole_records_and_pages_by_id(self, backend: StorageBackend) -> None:
        """select() returns stored records field by field; limit and after page by id
        (keyset); select_ids() pages the same way; limit 0 returns nothing, a negative limit
        is refused."""
        records = self.segment_world(backend)
        everyone = And()
        with backend.unit_of_work() as uow:
            first = uow.contacts.select(everyone, limit=2)
            assert [r.id for r in first] == [records["a"].id, records["b"].id]
            for got in first:
                assert_same_record(got, records["a"] if got.id == records["a"].id else records["b"])
            second = uow.contacts.select(everyone, limit=2, after=first[-1].id)
            assert [r.id for r in second] == [records["c"].id, records["d"].id]
            assert [r.id for r in uow.contacts.select(everyone, limit=2, after=second[-1].id)] == [records["e"].id]
            assert uow.contacts.select(everyone, after=records["e"].id) == []
            assert uow.contacts.select(everyone, limit=0) == []
            acne = Eq("service_interest", "acne")
            assert queries(uow).select_ids(acne, limit=2) == [records["a"].id, records["c"].id]
            assert queries(uow).select_ids(acne, limit=2, after=records["c"].id) == [records["d"].id, records["e"].id]
            assert queries(uow).select_ids(acne, after=records["e"].id) == []
            # `after` need not be a selected contact: paging goes on from any id
            assert queries(uow).select_ids(acne, after=records["b"].id) == [
                records["c"].id,
                records["d"].id,
                records["e"].id,
            ]
            with pytest.raises(ValueError):
                uow.contacts.select(everyone, limit=-1)
            with pytest.raises(ValueError):
                queries(uow).select_ids(everyone, limit=-1)

    def test_segment_queries_see_uncommitted_changes_of_their_unit_of_work(self, backend: StorageBackend) -> None:
        """A segment query runs inside its unit of work: it sees contacts and interactions
        added there before commit, and nothing of them after a rollback."""
        records = self.segment_world(backend)
        opened = HadInteraction(_OPENED, since=at(0))
        with backend.unit_of_work() as uow:
            uow.interactions.add(interaction_record(records["c"].id, kind="email.opened", occurred_at=at(300)))
            uow.contacts.add(contact_record(stage="contacted", service_interest="acne"))
            assert queries(uow).count_matching(opened) == 3
            assert queries(uow).count_matching(Eq("stage", "contacted")) == 2
            uow.rollback()
        assert self.read(backend, lambda uow: queries(uow).count_matching(opened)) == 2
