"""Timelines, speed to lead and attribution's journeys: interaction and stage-history
reads in order, paged and streamed.
"""

from __future__ import annotations

import random
import uuid
from datetime import datetime, timedelta
from typing import Any

import pytest

from carecrm.core.model.ids import new_id
from carecrm.core.model.records import (
    ContactRecord,
    InteractionRecord,
    TouchRecord,
)
from carecrm.core.storage.capabilities import queries
from carecrm.core.storage.contract import StorageBackend, UnitOfWork
from carecrm.core.testing.storage.base import ContractBase
from carecrm.core.testing.storage.builders import (
    assert_same_record,
    at,
    contact_record,
    interaction_record,
    stage_change_record,
)


class TimelineContract(ContractBase):
    """Timelines, speed to lead and attribution's journeys: interaction and stage-history
    reads in order, paged and streamed."""

    # ------------------------------------------------------------------ timeline

    def test_timeline_order_breaks_ties_by_id(self, backend: StorageBackend) -> None:
        """The timeline is ordered by (occurred_at, id): ties on time are broken by id."""
        contact, expected = self._timeline_fixture(backend)
        got = self.read(backend, lambda uow: uow.interactions.timeline(contact.id))
        assert [r.id for r in got] == [r.id for r in expected]
        assert_same_record(got[0], expected[0])

    def test_timeline_keyset_pagination(self, backend: StorageBackend) -> None:
        """Keyset pages (after=(occurred_at, id) of the last row) cover the timeline exactly once, across ties."""
        contact, expected = self._timeline_fixture(backend)
        pages: list[list[InteractionRecord]] = []
        cursor = None
        with backend.unit_of_work() as uow:
            while True:
                page = uow.interactions.timeline(contact.id, after=cursor, limit=2)
                if not page:
                    break
                pages.append(page)
                cursor = (page[-1].occurred_at, page[-1].id)
        assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
        assert [r.id for p in pages for r in p] == [r.id for r in expected]

    def test_timeline_kinds_filter(self, backend: StorageBackend) -> None:
        """kinds= restricts the timeline, also across pages."""
        contact, expected = self._timeline_fixture(backend)
        wanted = ["email.opened", "call.completed"]
        got = self.read(backend, lambda uow: uow.interactions.timeline(contact.id, kinds=wanted))
        assert [r.id for r in got] == [r.id for r in expected if r.kind in wanted]
        first = self.read(backend, lambda uow: uow.interactions.timeline(contact.id, kinds=wanted, limit=2))
        rest = self.read(
            backend,
            lambda uow: uow.interactions.timeline(
                contact.id, kinds=wanted, after=(first[-1].occurred_at, first[-1].id)
            ),
        )
        assert [r.id for r in first + rest] == [r.id for r in got]
        assert self.read(backend, lambda uow: uow.interactions.timeline(contact.id, kinds=["page.viewed"])) == []

    def test_existing_keys_in_large_batches(self, backend: StorageBackend) -> None:
        """existing_keys() answers for more keys than fit one IN list, per source."""
        contact = self.new_contact(backend)
        stored = [interaction_record(contact.id, idempotency_key=f"key-{i:05d}") for i in range(0, 1400, 2)]
        self.store(backend, lambda uow: uow.interactions.add_many(stored))
        asked = [f"key-{i:05d}" for i in range(1400)]
        got = self.read(backend, lambda uow: uow.interactions.existing_keys("typeform", asked))
        assert got == {r.idempotency_key for r in stored}
        assert self.read(backend, lambda uow: uow.interactions.existing_keys("calendly", asked)) == set()
        assert self.read(backend, lambda uow: uow.interactions.existing_keys("typeform", [])) == set()
        assert self.read(backend, lambda uow: uow.interactions.count()) == 700

    # speed to lead: first inbound, first outbound at or after it

    _IN = ("form.submitted", "call.missed", "call.completed")
    _OUT = ("call.completed", "sms.sent", "email.sent")

    def _first_response_fixture(self, backend: StorageBackend) -> dict[str, ContactRecord]:
        people = {label: self.new_contact(backend) for label in ("answered", "waiting", "outbound_only", "other")}
        rows = [
            # an email before the inquiry does not answer it; a call out after it does
            ("answered", "email.sent", "outbound", 5),
            ("answered", "form.submitted", "inbound", 10),
            ("answered", "form.submitted", "inbound", 12),
            ("answered", "email.opened", "outbound", 15),  # not an answer kind
            ("answered", "call.completed", None, 16),  # unknown direction never counts
            ("answered", "call.completed", "outbound", 40.5),
            ("answered", "sms.sent", "outbound", 90),
            # an inbound call that was missed starts the clock; only the inbound side so far
            ("waiting", "call.missed", "inbound", 20),
            ("waiting", "call.completed", "inbound", 30),
            ("waiting", "page.viewed", "inbound", 1),  # not an inbound kind asked for
            ("outbound_only", "email.sent", "outbound", 3),
            # an answer at the very same millisecond counts
            ("other", "form.submitted", "inbound", 7),
            ("other", "sms.sent", "outbound", 7),
        ]
        records = [
            interaction_record(people[label].id, kind=kind, direction=direction, occurred_at=at(seconds))
            for label, kind, direction, seconds in rows
        ]
        random.Random(3).shuffle(records)
        self.store(backend, lambda uow: uow.interactions.add_many(records))
        return people

    def test_first_responses_per_contact(self, backend: StorageBackend) -> None:
        """first_responses(): first inbound of the asked kinds, then the first outbound answer at or after it."""
        people = self._first_response_fixture(backend)
        got = self.read(
            backend, lambda uow: queries(uow).first_responses(inbound_kinds=self._IN, outbound_kinds=self._OUT)
        )
        by_id = {r.contact_id: r for r in got}
        assert [r.contact_id for r in got] == sorted(by_id)
        assert set(by_id) == {people[k].id for k in ("answered", "waiting", "other")}
        answered = by_id[people["answered"].id]
        assert (answered.first_inbound_at, answered.first_outbound_at) == (at(10), at(40.5))
        assert answered.first_inbound_at.tzinfo is not None and answered.first_outbound_at is not None
        assert answered.first_outbound_at.utcoffset() == timedelta(0)
        waiting = by_id[people["waiting"].id]
        assert (waiting.first_inbound_at, waiting.first_outbound_at) == (at(20), None)
        other = by_id[people["other"].id]
        assert (other.first_inbound_at, other.first_outbound_at) == (at(7), at(7))

    def test_first_responses_filters(self, backend: StorageBackend) -> None:
        """first_responses(): contact_ids restricts ([] is nothing); the kinds decide what counts."""
        people = self._first_response_fixture(backend)
        ids = [people["answered"].id, people["outbound_only"].id, new_id()]
        got = self.read(
            backend,
            lambda uow: queries(uow).first_responses(inbound_kinds=self._IN, outbound_kinds=self._OUT, contact_ids=ids),
        )
        assert [(r.contact_id, r.first_inbound_at, r.first_outbound_at) for r in got] == [
            (people["answered"].id, at(10), at(40.5))
        ]
        none = self.read(
            backend,
            lambda uow: queries(uow).first_responses(inbound_kinds=self._IN, outbound_kinds=self._OUT, contact_ids=[]),
        )
        assert none == []
        # only SMS answers: the call out no longer counts
        sms = self.read(
            backend,
            lambda uow: queries(uow).first_responses(
                inbound_kinds=["form.submitted"], outbound_kinds=["sms.sent"], contact_ids=[people["answered"].id]
            ),
        )
        assert [(r.first_inbound_at, r.first_outbound_at) for r in sms] == [(at(10), at(90))]
        nothing_out = self.read(
            backend,
            lambda uow: queries(uow).first_responses(inbound_kinds=["call.missed"], outbound_kinds=[]),
        )
        assert [(r.contact_id, r.first_outbound_at) for r in nothing_out] == [(people["waiting"].id, None)]
        empty = self.read(backend, lambda uow: queries(uow).first_responses(inbound_kinds=[], outbound_kinds=self._OUT))
        assert empty == []

    def test_first_responses_in_chunks(self, backend: StorageBackend) -> None:
        """first_responses() answers for more contact ids than fit one IN list."""
        contacts = [contact_record(id=new_id()) for _ in range(1100)]
        self.store(backend, lambda uow: uow.contacts.add_many(contacts))
        records = [interaction_record(c.id, occurred_at=at(i)) for i, c in enumerate(contacts)]
        records += [
            interaction_record(c.id, kind="sms.sent", direction="outbound", occurred_at=at(i + 60))
            for i, c in enumerate(contacts)
            if i % 2 == 0
        ]
        self.store(backend, lambda uow: uow.interactions.add_many(records))
        got = self.read(
            backend,
            lambda uow: queries(uow).first_responses(
                inbound_kinds=["form.submitted"], outbound_kinds=["sms.sent"], contact_ids=[c.id for c in contacts]
            ),
        )
        assert [r.contact_id for r in got] == sorted(c.id for c in contacts)
        index = {c.id: i for i, c in enumerate(contacts)}
        for r in got:
            i = index[r.contact_id]
            assert r.first_inbound_at == at(i)
            assert r.first_outbound_at == (at(i + 60) if i % 2 == 0 else None)

    # ------------------------------------------------------------------ attribution journeys

    def test_iter_touches_order_kinds_direction_and_bounds(self, backend: StorageBackend) -> None:
        """iter_touches() streams kinds by (contact_id, occurred_at, id) across contacts, skips
        outbound rows of skip_outbound kinds (unknown direction kept), bounds occurred_at
        [after, before), and returns the clear marketing fields as TouchRecords."""
        a, b, c = sorted([new_id(), new_id(), new_id()])
        for cid in (a, b, c):
            self.new_contact(backend, id=cid)
        calls = ["call.completed", "call.missed"]
        rows = [
            interaction_record(a, kind="form.submitted", occurred_at=at(5)),
            interaction_record(a, kind="page.viewed", occurred_at=at(1), direction=None),
            interaction_record(a, kind="email.opened", occurred_at=at(2)),
            interaction_record(a, kind="call.completed", occurred_at=at(3), direction="outbound"),
            interaction_record(a, kind="call.completed", occurred_at=at(4), direction="inbound"),
            interaction_record(a, kind="call.missed", occurred_at=at(4), direction=None),
            interaction_record(b, kind="form.submitted", occurred_at=at(0)),
            interaction_record(b, kind="form.submitted", occurred_at=at(10), direction="outbound"),
            interaction_record(c, kind="email.sent", occurred_at=at(1), direction="outbound"),
        ]
        shuffled = rows[:]
        random.Random(11).shuffle(shuffled)
        self.store(backend, lambda uow: uow.interactions.add_many(shuffled))
        kinds = ["form.submitted", "page.viewed", *calls]
        expected = sorted(
            (r for r in rows if r.kind in kinds and not (r.kind in calls and r.direction == "outbound")),
            key=lambda r: (r.contact_id, r.occurred_at, r.id),
        )
        got = self.read(backend, lambda uow: list(queries(uow).iter_touches(kinds, skip_outbound=calls)))
        assert [r.id for r in got] == [r.id for r in expected]
        for record, want in zip(got, expected, strict=True):
            assert_same_record(
                record,
                TouchRecord(
                    id=want.id,
                    contact_id=want.contact_id,
                    kind=want.kind,
                    occurred_at=want.occurred_at,
                    channel=want.channel,
                    direction=want.direction,
                    campaign=want.campaign,
                    channel_group=want.channel_group,
                    touchpoint=want.touchpoint,
                ),
            )
        # an outbound row of a kind not in skip_outbound is kept
        assert rows[7].id in {r.id for r in got}
        # without skip_outbound, the outbound call comes back too
        plain = self.read(backend, lambda uow: list(queries(uow).iter_touches(["call.completed"])))
        assert [r.id for r in plain] == [rows[3].id, rows[4].id]
        bounded = self.read(
            backend,
            lambda uow: list(
                queries(uow).iter_touches(kinds, skip_outbound=calls, occurred_after=at(4), occurred_before=at(10))
            ),
        )
        assert [r.id for r in bounded] == [r.id for r in expected if at(4) <= r.occurred_at < at(10)]
        assert {r.id for r in bounded} >= {rows[4].id, rows[5].id, rows[0].id}, "the lower bound is included"
        assert rows[7].id not in {r.id for r in bounded}, "the upper bound is excluded"
        assert self.read(backend, lambda uow: list(queries(uow).iter_touches([]))) == []
        assert self.read(backend, lambda uow: list(queries(uow).iter_touches(["payment.received"]))) == []
        with backend.unit_of_work() as uow, pytest.raises(ValueError):
            list(queries(uow).iter_touches(kinds, occurred_after=datetime(2024, 3, 1)))

    def test_iter_touches_streams_many_rows_beside_other_statements(self, backend: StorageBackend) -> None:
        """Thousands of rows with tied times come back exactly once, in order, while the
        stage-history stream and other statements run in the same unit of work between rows."""
        ids = sorted(new_id() for _ in range(3))
        for cid in ids:
            self.new_contact(backend, id=cid)
        rows = [
            interaction_record(
                ids[i % 3],
                kind="page.viewed" if i % 4 else "form.submitted",
                occurred_at=at(i // 7),
                touchpoint={},
                attributes={},
                body_enc=None,
                inbox_id=None,
            )
            for i in range(2500)
        ]
        self.store(backend, lambda uow: uow.interactions.add_many(rows))
        changes = [stage_change_record(cid, changed_at=at(s)) for cid in ids for s in (0, 1)]

        def fill(uow: UnitOfWork) -> None:
            for change in changes:
                uow.stages.add(change)

        self.store(backend, fill)
        expected = sorted(rows, key=lambda r: (r.contact_id, r.occurred_at, r.id))
        got: list[uuid.UUID] = []
        with backend.unit_of_work() as uow:
            stages = queries(uow).first_reached(["contacted"])
            seen_stages = 0
            for n, record in enumerate(queries(uow).iter_touches(["page.viewed", "form.submitted"])):
                got.append(record.id)
                if n % 400 == 0:
                    uow.contacts.get(record.contact_id)
                    if next(stages, None) is not None:
                        seen_stages += 1
        assert got == [r.id for r in expected]
        assert seen_stages == len(ids)

    def test_first_reached_groups_filters_and_pages(self, backend: StorageBackend) -> None:
        """first_reached() gives each contact's earliest change into any of the stages, in
        contact-id order, by pipeline; the window applies to that first entry only."""
        a, b, c, d = sorted(new_id() for _ in range(4))
        booked = ["booked_patient", "returning_patient"]
        changes = [
            stage_change_record(a, to_stage="new_lead", changed_at=at(0)),
            stage_change_record(a, to_stage="returning_patient", changed_at=at(9)),
            stage_change_record(a, to_stage="booked_patient", changed_at=at(5)),
            stage_change_record(b, to_stage="booked_patient", changed_at=at(3)),
            stage_change_record(b, to_stage="booked_patient", changed_at=at(20)),  # re-entry
            stage_change_record(c, to_stage="contacted", changed_at=at(1)),
            stage_change_record(d, to_stage="booked_patient", changed_at=at(7), pipeline="implants"),
        ]
        self.store(backend, lambda uow: uow.stages.add_many(changes))

        def reached(**kwargs: Any) -> list[tuple[uuid.UUID, datetime]]:
            with backend.unit_of_work() as uow:
                return [(r.contact_id, r.reached_at) for r in queries(uow).first_reached(booked, **kwargs)]

        assert reached() == [(a, at(5)), (b, at(3)), (d, at(7))]
        assert reached(pipeline="default") == [(a, at(5)), (b, at(3))]
        assert reached(pipeline="implants") == [(d, at(7))]
        assert reached(reached_from=at(5)) == [(a, at(5)), (d, at(7))], "b's re-entry at 20 does not count"
        assert reached(reached_before=at(5)) == [(b, at(3))], "the upper bound is excluded"
        assert reached(reached_from=at(4), reached_before=at(7), pipeline="default") == [(a, at(5))]
        assert self.read(backend, lambda uow: list(queries(uow).first_reached([]))) == []
        with backend.unit_of_work() as uow, pytest.raises(ValueError):
            list(queries(uow).first_reached(booked, reached_from=datetime(2024, 3, 1)))

    def test_first_reached_streams_thousands_of_contacts(self, backend: StorageBackend) -> None:
        """Every contact comes back once, in id order, while other statements run between rows."""
        ids = sorted(new_id() for _ in range(6000))
        changes = [
            stage_change_record(cid, to_stage="booked_patient", changed_at=at(i % 50)) for i, cid in enumerate(ids)
        ]
        self.store(backend, lambda uow: uow.stages.add_many(changes))
        got = []
        with backend.unit_of_work() as uow:
            for n, record in enumerate(queries(uow).first_reached(["booked_patient"])):
                got.append(record.contact_id)
                if n % 2500 == 0:
                    uow.stages.history(record.contact_id)
        assert got == ids
