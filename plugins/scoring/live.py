"""Live lead scores: rescore a contact when something that can change its score is committed.

A built-in ``carecrm_track_event`` implementation, model-agnostic (it rescores with
whatever ``[scoring] model`` names, a third-party model included):

* ``InteractionRecorded`` and ``StageChanged`` rescore the contact; ``ContactsMerged``
  rescores the survivor (it now holds both timelines);
* ``ScoreChanged``, ``ContactCreated`` (no interaction yet), ``ConsentChanged`` (consent
  is not on the timeline) and ``PossibleDuplicate`` change no score.

Rescoring is batched: the app's scoring service (``app.scores``,
:meth:`carecrm.core.analytics.scoring_service.ScoringService.schedule_rescore`) collects the contacts
while the app dispatches a batch of events (an ingest batch of 500 lead events fires
hundreds) and rescores each of them once when the batch has been delivered.  With
``[scoring] live = false`` nothing happens here (bulk imports; run ``carecrm score
recompute`` afterwards).

``carecrm_configure`` builds the configured model when the app starts, so a wrong
``[scoring]`` table fails at once with the field named, not at the first event.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from carecrm.core.events import types as ev
from carecrm.core.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from carecrm.core.app import CareCRM


@hookimpl
def carecrm_configure(app: CareCRM) -> None:
    """Check ``[scoring]`` at start-up (builds the model).

    :raises UnknownComponentError: for an unknown ``scoring.model`` (listing the known ones).
    :raises ConfigError: for a bad option (``scoring.rules[i].<field>``).
    """
    _ = app.scores.scoring_model


@hookimpl
def carecrm_track_event(event: ev.Event, app: CareCRM) -> None:
    """Schedule a rescore of the contact whose timeline the event changed."""
    scores = app.scores
    if not scores.scoring_live:
        return
    if isinstance(event, (ev.InteractionRecorded, ev.StageChanged)):
        scores.schedule_rescore(event.contact_id)
    elif isinstance(event, ev.ContactsMerged):
        scores.schedule_rescore(event.survivor_id)
