"""Coordinator work (:class:`carecrm.core.pipeline.coordination.CoordinationService`) and speed
to lead (:class:`carecrm.core.pipeline.speed_to_lead.SpeedToLead`) built from their
collaborators alone (storage, settings, mapper, read path, audit trail, resolver, event
delivery), with no :class:`carecrm.core.CareCRM`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from carecrm.core import settings_from_dict
from carecrm.core.config import Settings
from carecrm.core.events.outbox import Published
from carecrm.core.identity.directory import ContactResolver
from carecrm.core.model.domain import Actor, Contact
from carecrm.core.pipeline.coordination import CoordinationService
from carecrm.core.pipeline.speed_to_lead import SpeedToLead, SpeedToLeadSummary
from carecrm.core.privacy.audit import AuditTrail
from carecrm.core.privacy.crypto import KeyRing
from carecrm.core.privacy.mapping import RecordMapper
from carecrm.core.privacy.read_path import ReadPath
from carecrm.storage_backends.sql.backend import SqlBackend

CARLA = Actor.parse("carla:coordinator")
#: Monday 6 October 2025, 09:00 and 09:30 in Chicago (CDT, UTC-5): inside the hours.
MONDAY_0900 = datetime(2025, 10, 6, 14, 0, tzinfo=UTC)
MONDAY_0930 = datetime(2025, 10, 6, 14, 30, tzinfo=UTC)


class Parts:
    """The collaborators the facade would pass, built by hand on one SQLite file."""

    def __init__(self, tmp_path: Path) -> None:
        url = f"sqlite:///{tmp_path / 'practice.db'}"
        self.settings: Settings = settings_from_dict(
            {
                "practice": {
                    "name": "Lakeside Dermatology",
                    "locations": [
                        {
                            "name": "downtown",
                            "timezone": "America/Chicago",
                            "region": "US",
                            "business_hours": {d: ["08:00", "17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
                        }
                    ],
                },
                "storage": {"url": url},
            },
            base_dir=tmp_path,
        )
        self.storage = SqlBackend(url)
        self.storage.create_schema()
        self.keys = KeyRing.generate()
        self.mapper = RecordMapper(self.keys)
        self.trail = AuditTrail(self.storage, self.keys)
        self.delivered: list[Published | None] = []

    def deliver(self, published: Sequence[Published | None] = ()) -> Any:
        self.delivered.extend(published)

    def coordination(self) -> CoordinationService:
        return CoordinationService(
            storage=self.storage,
            settings=self.settings,
            mapper=self.mapper,
            read_path=ReadPath(self.mapper, self.trail.append),
            audit=self.trail,
            resolver=ContactResolver(self.settings, self.mapper),
            deliver=self.deliver,
        )

    def new_contact(self) -> Contact:
        contact = Contact(first_name="Test", last_name="Placeholder", location="downtown")
        key = self.mapper.new_contact_key()
        with self.storage.unit_of_work() as uow:
            uow.contacts.add(self.mapper.contact_to_record(contact, key))
            uow.commit()
        return contact


@pytest.fixture
def parts(tmp_path: Path) -> Iterator[Parts]:
    made = Parts(tmp_path)
    yield made
    made.storage.close()


def test_tasks_and_assignment_without_an_app(parts: Parts) -> None:
    service = parts.coordination()
    contact = parts.new_contact()
    task = service.add_task(contact.id, "call back about the consult", actor=CARLA, due="2025-10-06 09:00")
    assert task.due_at == MONDAY_0900 and task.assignee == "carla"
    assert len(parts.delivered) == 1  # task.created, delivered after the commit
    [(listed, summary)] = service.tasks(actor=CARLA, contact=contact.id)
    assert listed.text == "call back about the consult" and summary.full_name == "Test Placeholder"
    done = service.complete_task(task.id, actor=CARLA)
    assert done.status == "done" and service.tasks(actor=CARLA) == []
    assert service.assign(contact.id, "dana", actor=CARLA).owner == "dana"
    assert service.location_of_contact(contact.id).name == "downtown"
    actions = [e.action for e in parts.trail.entries()]
    assert actions[:4] == ["task.add", "tasks.read", "task.complete", "contact.assign"]
    assert parts.trail.verify()[0]


def test_logged_calls_give_the_speed_to_lead(parts: Parts) -> None:
    service = parts.coordination()
    contact = parts.new_contact()
    service.log_interaction(contact.id, actor=CARLA, kind="form.submitted", occurred_at=MONDAY_0900)
    figures = SpeedToLead(storage=parts.storage, settings=parts.settings)
    assert figures.speed_to_lead(contact.id) is None  # nobody answered yet
    call = service.log_interaction(
        contact.id, actor=CARLA, kind="call.completed", direction="outbound", occurred_at=MONDAY_0930
    )
    assert call.channel == "phone"
    first = figures.first_response(contact.id)
    assert first is not None and (first.business_seconds, first.wall_clock_seconds) == (1800.0, 1800.0)
    assert figures.speed_to_lead_summary() == SpeedToLeadSummary(median_seconds=1800.0, measured=1, awaiting=0)
    with parts.storage.unit_of_work() as uow:
        assert figures.speed_to_lead_values(uow, {contact.id: "downtown"}) == {contact.id: 1800.0}
