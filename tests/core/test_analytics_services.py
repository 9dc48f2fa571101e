"""The scoring, attribution and segments services work with their collaborators alone,
without a CareCRM facade: a storage backend, settings, the registries, a read path and an
audit trail, and plain callables for delivery and batching."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Hashable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest

from carecrm.core import settings_from_dict
from carecrm.core.analytics.attribution_service import AttributionService
from carecrm.core.analytics.scoring_service import RESCORE_KEY, ScoringService
from carecrm.core.analytics.segments_service import SegmentsService
from carecrm.core.analytics.services import build_analytics
from carecrm.core.config import Settings
from carecrm.core.errors import UnknownComponentError
from carecrm.core.events.outbox import Published
from carecrm.core.model.domain import Actor, Contact
from carecrm.core.plugins.manager import build_plugin_manager
from carecrm.core.plugins.registries import Registries
from carecrm.core.privacy.audit import AuditTrail
from carecrm.core.privacy.crypto import KeyRing
from carecrm.core.privacy.mapping import RecordMapper
from carecrm.core.privacy.read_path import ReadPath
from carecrm.core.storage.contract import StorageBackend
from carecrm.core.testing.storage import contact_record, interaction_record

ACTOR = Actor(name="carla", role="coordinator")
PRACTICE: dict[str, Any] = {
    "practice": {
        "name": "Lakeside Dermatology",
        "service_lines": ["acne", "botox"],
        "locations": [{"name": "downtown", "timezone": "America/Chicago", "region": "US"}],
    }
}


class World:
    """The collaborators of the services, built by hand."""

    def __init__(self, tmp_path: Path, **sections: Any) -> None:
        url = f"sqlite:///{tmp_path / 'crm.db'}"
        doc = {**PRACTICE, "storage": {"url": url}, **sections}
        self.settings: Settings = settings_from_dict(doc, base_dir=tmp_path)
        self.registries = Registries()
        self.registries.collect_from(build_plugin_manager(load_entrypoints=False))
        entry = self.registries.storage_backends.get(self.registries.schemes["sqlite"])
        tmp_path.mkdir(parents=True, exist_ok=True)
        self.backend: StorageBackend = entry.factory(url, {})
        self.backend.create_schema()
        self.keys = KeyRing.generate()
        self.trail = AuditTrail(self.backend, self.keys)
        self.read_path = ReadPath(RecordMapper(self.keys), self.trail.append)
        self.delivered: list[Sequence[Published | None]] = []
        self.collected: list[tuple[str, Hashable, Callable[[list[Any]], None]]] = []

    def deliver(self, published: Sequence[Published | None] = ()) -> None:
        self.delivered.append(published)

    def collect(self, key: str, item: Hashable, flush: Callable[[list[Any]], None]) -> None:
        self.collected.append((key, item, flush))

    def resolve(self, ref: str | uuid.UUID, *, actor: Actor) -> Contact:
        raise AssertionError("not used here")

    def scores(self) -> ScoringService:
        return ScoringService(
            settings=self.settings,
            models=self.registries.scoring_models,
            storage=lambda: self.backend,
            read_path=lambda: self.read_path,
            resolve=self.resolve,
            collect=self.collect,
            deliver=self.deliver,
        )


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    w = World(tmp_path)
    yield w
    w.backend.close()


def test_the_scoring_service_owns_its_model_and_rescores_through_its_collaborators(world: World) -> None:
    scores = world.scores()
    models: list[object] = []
    threads = [threading.Thread(target=lambda: models.append(scores.scoring_model)) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len({id(m) for m in models}) == 1 and models[0] is scores.scoring_model  # built once, shared
    assert world.scores().scoring_model is not scores.scoring_model  # per service, not global
    assert scores.scoring_live is True

    contact = contact_record(score=None)
    with world.backend.unit_of_work() as uow:
        uow.contacts.add(contact)
        uow.interactions.add(interaction_record(contact.id))
        uow.commit()
    scores.schedule_rescore(contact.id)  # batched through the delivery's collector
    ((key, item, flush),) = world.collected
    assert (key, item) == (RESCORE_KEY, contact.id)
    flush([item])
    assert len(world.delivered) == 1  # the ScoreChanged of a first score, delivered after the commit
    with world.backend.unit_of_work() as uow:
        stored = uow.scores.get(contact.id, "points")
        assert uow.contacts.get(contact.id).score == stored.score
    assert scores.rescore_all() == 1
    assert len(world.delivered) == 1  # the same score again: nothing changed, nothing delivered


def test_the_attribution_service_needs_settings_models_and_storage_only(tmp_path: Path) -> None:
    world = World(tmp_path)
    try:
        attribution = AttributionService(
            settings=world.settings, models=world.registries.attribution_models, storage=lambda: world.backend
        )
        attribution.check_configured()
        report = attribution.attribute("linear", by="source")
        assert (report.model, report.by, report.conversions) == ("linear", "source", 0)
        assert attribution.conversion_steps()[0] == "lead"
    finally:
        world.backend.close()
    bad = World(tmp_path / "bad", attribution={"models": {"nope": {}}})
    try:
        attribution = AttributionService(
            settings=bad.settings, models=bad.registries.attribution_models, storage=lambda: bad.backend
        )
        with pytest.raises(UnknownComponentError, match="nope"):
            attribution.check_configured()
    finally:
        bad.backend.close()


def test_the_segments_service_saves_counts_and_audits_through_its_collaborators(world: World) -> None:
    segments = SegmentsService(
        settings=world.settings,
        builders=world.registries.segment_builders,
        storage=lambda: world.backend,
        read_path=lambda: world.read_path,
        audit=lambda: world.trail,
    )
    with world.backend.unit_of_work() as uow:
        uow.contacts.add(contact_record(service_interest="acne", score=None))
        uow.commit()
    saved = segments.segment_save("acne", {"service_interest": "acne"}, actor=ACTOR)
    assert (saved.builder, saved.spec) == ("basic", {"service_interest": ["acne"]})
    assert [s.name for s in segments.segment_list()] == ["acne"]
    assert segments.segment_count(segments.saved_segment_criteria("acne")) == 1
    assert segments.segment_preview({"service_interest": "botox"}, actor=ACTOR, limit=0).count == 0
    segments.segment_delete("acne", actor=ACTOR)
    assert segments.segment_list() == []
    assert [e.action for e in world.trail.entries(limit=10)] == ["segment.save", "segment.delete"]


def test_build_analytics_wires_the_three_services(world: World) -> None:
    scores, attribution, segments = build_analytics(
        settings=world.settings,
        registries=world.registries,
        storage=lambda: world.backend,
        read_path=lambda: world.read_path,
        audit=lambda: world.trail,
        resolve=world.resolve,
        collect=world.collect,
        deliver=world.deliver,
    )
    assert scores.models is world.registries.scoring_models
    assert attribution.models is world.registries.attribution_models
    assert segments.builders is world.registries.segment_builders
    assert segments.segment_builder().builder_id == "basic"
