"""The wiring of the analytics services: :func:`build_analytics` builds the scoring,
attribution and segments services of one app from their collaborators (the facade,
:class:`carecrm.core.CareCRM`, calls it once at its construction and delegates to them)."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from typing import TYPE_CHECKING, Any

from carecrm.core.analytics.attribution_service import AttributionService
from carecrm.core.analytics.scoring_service import Resolve, ScoringService
from carecrm.core.analytics.segments_service import SegmentsService

if TYPE_CHECKING:
    from carecrm.core.config import Settings
    from carecrm.core.events.outbox import Published
    from carecrm.core.plugins.registries import Registries
    from carecrm.core.privacy.audit import AuditTrail
    from carecrm.core.privacy.read_path import ReadPath
    from carecrm.core.storage.contract import StorageBackend


def build_analytics(
    *,
    settings: Settings,
    registries: Registries,
    storage: Callable[[], StorageBackend],
    read_path: Callable[[], ReadPath],
    audit: Callable[[], AuditTrail],
    resolve: Resolve,
    collect: Callable[[str, Hashable, Callable[[list[Any]], None]], None],
    deliver: Callable[[Sequence[Published | None]], Any],
) -> tuple[ScoringService, AttributionService, SegmentsService]:
    """Build the scoring, attribution and segments services (cheap: nothing is opened; the
    providers ``storage``, ``read_path`` and ``audit`` are called on each use).

    :param settings: the practice's settings.
    :param registries: the scoring models, attribution models and segment builders.
    :param storage: the current storage backend.
    :param read_path: the current read path (decrypts and audits reads).
    :param audit: the current audit trail.
    :param resolve: finds and reads the contact a reference names for an actor.
    :param collect: adds an item to a batch of the delivery in progress.
    :param deliver: delivers the outbox's events after a commit.
    :returns: ``(scores, attribution, segments)``: the scoring service (owner of the
        practice's scoring model), the attribution service and the segments service.
    """
    return (
        ScoringService(
            settings=settings,
            models=registries.scoring_models,
            storage=storage,
            read_path=read_path,
            resolve=resolve,
            collect=collect,
            deliver=deliver,
        ),
        AttributionService(settings=settings, models=registries.attribution_models, storage=storage),
        SegmentsService(
            settings=settings, builders=registries.segment_builders, storage=storage, read_path=read_path, audit=audit
        ),
    )
