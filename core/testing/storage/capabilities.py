"""The optional query capabilities (:mod:`carecrm.core.storage.capabilities`): for every
query a backend declares native, the native method and the core's reference
implementation run on the same data and must agree, call for call."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

from carecrm.core.analytics.criteria import Eq, HadInteraction, Not, all_of
from carecrm.core.model.records import ERASED, MERGED
from carecrm.core.storage.capabilities import QUERY_CAPABILITIES, query_function
from carecrm.core.storage.contract import StorageBackend, UnitOfWork
from carecrm.core.testing.storage.base import ContractBase
from carecrm.core.testing.storage.builders import (
    at,
    contact_record,
    interaction_record,
    score_record,
    stage_change_record,
)

#: The world every capability is asked about: contacts ``c0``..``c6`` in id order (``c4``
#: merged, ``c5`` erased, ``c6`` never interacted), by role.
QueryWorld = dict[str, Any]

_INBOUND = ["form.submitted", "call.missed", "call.completed"]
_OUTBOUND = ["call.completed", "sms.sent", "email.sent"]


def _cases(world: QueryWorld) -> dict[str, list[tuple[tuple[Any, ...], dict[str, Any]]]]:
    """Per capability name, the (args, kwargs) calls that native and reference must answer alike."""
    ids: list[uuid.UUID] = world["ids"]
    missing = world["missing"]
    return {
        "interactions.first_responses": [
            ((), {"inbound_kinds": _INBOUND, "outbound_kinds": _OUTBOUND}),
            ((), {"inbound_kinds": _INBOUND, "outbound_kinds": _OUTBOUND, "contact_ids": [ids[1], ids[0], missing]}),
            ((), {"inbound_kinds": _INBOUND, "outbound_kinds": _OUTBOUND, "contact_ids": []}),
            ((), {"inbound_kinds": ["call.missed"], "outbound_kinds": ["sms.sent"]}),
            ((), {"inbound_kinds": _INBOUND, "outbound_kinds": []}),
        ],
        "interactions.clear_timelines": [((ids + [missing],), {}), (([],), {})],
        "interactions.latest_times": [((ids + [missing],), {}), (([ids[2]],), {})],
        "interactions.iter_touches": [
            ((["form.submitted", "call.completed", "page.viewed"],), {}),
            ((["call.completed", "sms.sent"],), {"skip_outbound": ["call.completed"]}),
            ((_INBOUND + _OUTBOUND,), {"occurred_after": at(30), "occurred_before": at(300)}),
            (([],), {}),
        ],
        "stages.first_reached": [
            ((["contacted", "booked_patient"],), {}),
            ((["booked_patient"],), {"pipeline": "implants"}),
            ((["contacted", "booked_patient"],), {"reached_from": at(15), "reached_before": at(200)}),
            (([],), {}),
        ],
        "contacts.active_scores": [((ids + [missing],), {}), (([],), {})],
        "contacts.select_ids": [
            ((Eq("stage", "new_lead"),), {}),
            ((HadInteraction(("form.submitted",), since=at(0)),), {"limit": 2}),
            ((Not(Eq("stage", "contacted")),), {"after": ids[1], "limit": 10}),
        ],
        "contacts.count_matching": [
            ((Eq("stage", "new_lead"),), {}),
            ((all_of(HadInteraction(("call.completed",), since=at(0)), Not(Eq("stage", "booked_patient"))),), {}),
        ],
        "scores.top_active": [
            (("rules",), {}),
            (("rules",), {"limit": 2}),
            (("rules",), {"stages": ["new_lead", "booked_patient"]}),
            (("rules",), {"stages": []}),
            (("ml",), {}),
        ],
    }


class CapabilityContract(ContractBase):
    """Native optional queries agree with their reference implementations."""

    @pytest.fixture
    def query_world(self, backend: StorageBackend) -> QueryWorld:
        """Seven contacts with interactions (ties in time, both directions, unknown
        direction), stage changes in two pipelines and scores under two models."""
        ids = sorted(uuid.uuid4() for _ in range(7))
        stages = ["new_lead", "contacted", "new_lead", "booked_patient", "new_lead", "new_lead", "new_lead"]
        contacts = [
            contact_record(id=cid, stage=stage, score=float(10 * i) if i != 2 else None)
            for i, (cid, stage) in enumerate(zip(ids, stages, strict=True))
        ]
        contacts[4] = attrs.evolve(contacts[4], status=MERGED, merged_into=ids[0])
        contacts[5] = attrs.evolve(contacts[5], status=ERASED, pii_enc=None, wrapped_key=None)

        def touch(i: int, kind: str, seconds: float, direction: str | None) -> Any:
            return interaction_record(ids[i], kind=kind, occurred_at=at(seconds), direction=direction)

        interactions = [
            touch(0, "form.submitted", 10, "inbound"),
            touch(0, "call.completed", 10, "outbound"),
            touch(0, "sms.sent", 70, "outbound"),
            touch(0, "page.viewed", 5, None),
            touch(1, "page.viewed", 0, None),
            touch(1, "call.missed", 20, "inbound"),
            touch(1, "call.completed", 40, "inbound"),
            touch(1, "email.sent", 400, "outbound"),
            touch(2, "call.completed", 50, "outbound"),
            touch(2, "form.submitted", 60, "inbound"),
            touch(3, "form.submitted", 100, "inbound"),
            touch(3, "form.submitted", 100, "inbound"),
            touch(3, "sms.sent", 90, "outbound"),
            touch(4, "form.submitted", 30, "inbound"),
            touch(4, "sms.sent", 31, "outbound"),
            touch(5, "call.missed", 500, "inbound"),
        ]
        changes = [
            stage_change_record(ids[0], to_stage="contacted", changed_at=at(20)),
            stage_change_record(ids[0], to_stage="booked_patient", changed_at=at(10), pipeline="implants"),
            stage_change_record(ids[1], to_stage="contacted", changed_at=at(5)),
            stage_change_record(ids[1], to_stage="booked_patient", changed_at=at(250)),
            stage_change_record(ids[3], to_stage="booked_patient", changed_at=at(150), pipeline="implants"),
            stage_change_record(ids[3], to_stage="contacted", changed_at=at(150)),
            stage_change_record(ids[4], to_stage="contacted", changed_at=at(40)),
        ]
        scores = [
            score_record(ids[0], score=30.0),
            score_record(ids[1], score=50.0),
            score_record(ids[2], score=30.0),
            score_record(ids[3], score=80.0),
            score_record(ids[4], score=99.0),
            score_record(ids[5], score=99.0),
            score_record(ids[1], model="ml", score=0.5),
        ]

        def fill(uow: UnitOfWork) -> None:
            uow.contacts.add_many(contacts)
            uow.interactions.add_many(interactions)
            uow.stages.add_many(changes)
            uow.scores.put_many(scores)

        self.store(backend, fill)
        return {"ids": ids, "missing": uuid.uuid4()}

    @pytest.mark.parametrize("name", sorted(QUERY_CAPABILITIES))
    def test_native_query_agrees_with_the_reference(
        self, backend: StorageBackend, query_world: QueryWorld, name: str
    ) -> None:
        """Each declared native query gives what its reference implementation on the
        required methods gives, for every call of the case list (iterators read whole)."""
        with backend.unit_of_work() as uow:
            if name not in uow.native_queries:
                pytest.skip(f"the backend answers {name} by the reference implementation only")
            calls = _cases(query_world)[name]
            native, reference = query_function(uow, name, native=True), query_function(uow, name, native=False)
            for args, kwargs in calls:
                want = _whole(reference(*args, **kwargs))
                got = _whole(native(*args, **kwargs))
                assert got == want, (name, args, kwargs)
            assert any(_whole(reference(*a, **k)) for a, k in calls), f"{name}: every case was empty"

    def test_every_capability_has_agreement_cases(self, backend: StorageBackend, query_world: QueryWorld) -> None:
        """The case list covers every optional query, and a declared name is a known one."""
        assert set(_cases(query_world)) == set(QUERY_CAPABILITIES)
        with backend.unit_of_work() as uow:
            assert uow.native_queries <= set(QUERY_CAPABILITIES)


def _whole(value: Any) -> Any:
    """A query's answer with any iterator read into a list."""
    return list(value) if isinstance(value, Iterator) else value
