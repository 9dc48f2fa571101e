"""The lead scores service (the chosen scoring model, live updates, explanations), which
:class:`carecrm.core.CareCRM` builds once and delegates to.

A score is computed by the model named in ``[scoring] model`` (default ``points``) from a
contact's stored interactions, which are clear (no decryption: see
:mod:`carecrm.core.analytics.scoring`).  It is stored twice: as a
:class:`~carecrm.core.model.records.ScoreRecord` with its reasons (``uow.scores``), and in the
contact record's clear ``score`` field, which segments filter on.  Live events rescore a
contact through the built-in plugin :mod:`carecrm.plugins.scoring.live`, batched so that
each contact of a dispatch batch is rescored once.  A stored score is a snapshot at its
``computed_at``: decaying points keep fading, so ``carecrm score recompute``
(:meth:`ScoringService.rescore_all`) is worth running daily.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Hashable, Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from carecrm.core.analytics.scoring import ScoringModel, compact_reasons
from carecrm.core.analytics.vendor_tests import (
    flagged_contacts,
    is_test,
    is_test_timeline,
    note_seen,
    seen_cache,
)
from carecrm.core.errors import NotFound
from carecrm.core.events import types as ev
from carecrm.core.events.outbox import Published, publish
from carecrm.core.model.records import ACTIVE, ScoreRecord
from carecrm.core.model.timeutil import to_utc_ms, utcnow
from carecrm.core.plugins.options import build_component
from carecrm.core.storage.capabilities import queries

if TYPE_CHECKING:
    from carecrm.core.config import Settings
    from carecrm.core.model.domain import Actor, Contact
    from carecrm.core.plugins.manager import Registry
    from carecrm.core.privacy.read_path import ReadPath
    from carecrm.core.storage.contract import StorageBackend

#: Contacts rescored per unit of work (one query per kind of record per batch).
RESCORE_BATCH = 500

#: The batch key of the rescores collected during a delivery.
RESCORE_KEY = "carecrm.scoring.rescore"


class Resolve(Protocol):
    """Finds the one contact a reference names and reads it for ``actor`` (audited), as
    :meth:`carecrm.core.identity.directory.ContactDirectory.resolve`.

    :raises NotFound: when nothing matches.
    """

    def __call__(self, ref: str | uuid.UUID, *, actor: Actor) -> Contact: ...


class ScoringService:
    """Use cases of lead scores (the chosen scoring model, live updates, explanations), with
    explicit collaborators.

    Built once by the facade, at its construction (it opens nothing): it owns the
    practice's scoring model, built on first use under a lock and then shared by
    concurrent callers.  The storage and the read path open lazily, so they are reached
    through providers on each use (closing and reopening the facade's storage is seen).
    The contacts awaiting a live rescore belong to the delivery in progress
    (``collect``), never to the service.

    :param settings: ``[scoring]`` (the model and its options), the pipeline's stages.
    :param models: the registered scoring model classes by ``model_id``.
    :param storage: the current storage backend (called per use).
    :param read_path: the current read path (called per use; decrypts and audits reads).
    :param resolve: finds and reads the contact a reference names for an actor.
    :param collect: adds an item to a batch of the delivery in progress
        (``collect(key, item, flush)``: :meth:`carecrm.core.CareCRM.collect_after_dispatch`).
    :param deliver: delivers the outbox's events after a commit
        (:meth:`carecrm.core.CareCRM.deliver_events`).
    """

    def __init__(
        self,
        *,
        settings: Settings,
        models: Registry[type[ScoringModel]],
        storage: Callable[[], StorageBackend],
        read_path: Callable[[], ReadPath],
        resolve: Resolve,
        collect: Callable[[str, Hashable, Callable[[list[Any]], None]], None],
        deliver: Callable[[Sequence[Published | None]], Any],
    ) -> None:
        self.settings = settings
        self.models = models
        self._storage = storage
        self._read_path = read_path
        self._resolve = resolve
        self._collect = collect
        self._deliver = deliver
        self._model: ScoringModel | None = None
        self._model_lock = threading.Lock()

    # ------------------------------------------------------------------ the model

    @property
    def scoring_model(self) -> ScoringModel:
        """The model ``[scoring] model`` names (default ``points``), built on first use with
        the rest of the ``[scoring]`` table as its options.

        :raises UnknownComponentError: for an unknown model (the message lists the known ones).
        :raises ConfigError: for a bad option, named ``scoring.<option>``.
        """
        model = self._model
        if model is None:
            with self._model_lock:
                model = self._model
                if model is None:
                    configured = self.settings.scoring
                    name = configured.model
                    cls_ = self.models.get(name)
                    practice = self.settings.practice
                    model = self._model = build_component(
                        cls_,
                        name=name,
                        table=configured.options,
                        settings=self.settings,
                        section="scoring",
                        owner=f"scoring model {name!r} of plugin {self.models.owner(name)}",
                        legacy=lambda options: cls_(options, practice),
                    )
        return model

    @property
    def scoring_live(self) -> bool:
        """``[scoring] live`` (default true): whether committed events rescore contacts.

        :raises ConfigError: if it is not a boolean.
        """
        return self.settings.scoring.live

    # ------------------------------------------------------------------ computing

    def schedule_rescore(self, contact_id: uuid.UUID) -> None:
        """Rescore ``contact_id`` once the events being dispatched have all been delivered
        (each contact once per batch, however many of its events the batch holds); outside
        a dispatch, at once.  Called by the live-scoring plugin; a failure is logged with
        the contact id and never undoes committed data.  The contacts pending belong to
        the delivery in progress (:meth:`CareCRM.collect_after_dispatch`), not to the service."""
        self._collect(RESCORE_KEY, contact_id, self._flush_rescores)

    def _flush_rescores(self, pending: list[uuid.UUID]) -> None:
        if pending:
            self.rescore_contacts(pending)

    def rescore(self, contact_id: uuid.UUID, *, now: datetime | None = None) -> ScoreRecord:
        """Compute, store and return one contact's score (a merged contact's survivor is
        scored instead).  Dispatches ``ScoreChanged`` when the score changed.

        :param now: the time the score is computed for (default: now, UTC).
        :raises NotFound: if the contact does not exist, was erased, or is a test contact
            (:mod:`carecrm.core.analytics.vendor_tests`).
        """
        with self._storage().unit_of_work() as uow:
            rec = uow.contacts.get(contact_id)
            hops = 0
            while rec.status != ACTIVE and rec.merged_into is not None and hops < 8:
                rec, hops = uow.contacts.get(rec.merged_into), hops + 1
        if rec.status != ACTIVE:
            raise NotFound(f"contact {contact_id} is {rec.status}; it has no score")
        records = self.rescore_contacts([rec.id], now=now)
        if not records:
            raise NotFound(f"contact {contact_id} has only vendors' test events; it has no score")
        return records[0]

    def rescore_contacts(self, contact_ids: Iterable[uuid.UUID], *, now: datetime | None = None) -> list[ScoreRecord]:
        """Compute and store the scores of several contacts, :data:`RESCORE_BATCH` per unit of
        work: per batch one query for the contacts' clear scores, one for the clear facts of
        all their interactions, one statement writing the scores and one copying the changed ones
        into the contacts' clear ``score`` field
        (:meth:`~carecrm.core.storage.contract.ContactRepository.set_scores`, which moves each
        version on).  Contacts that do not exist or are not active are skipped, and so are
        test contacts (only vendors' test events on their timeline:
        :mod:`carecrm.core.analytics.vendor_tests`); a real contact's test interactions are
        left out of the facts the model reads.
        ``ScoreChanged`` is dispatched after each commit for every contact whose score
        changed; ``old_score`` is the contact's previous clear score (None for a first
        score).

        :param now: the time scores are computed for (default: now, UTC); a naive value
            raises ``ValueError``.
        :returns: the stored scores, in the order of ``contact_ids`` (skipped ones left out).
        """
        at = utcnow() if now is None else to_utc_ms(now)
        model = self.scoring_model
        ids = list(dict.fromkeys(contact_ids))
        out: list[ScoreRecord] = []
        for start in range(0, len(ids), RESCORE_BATCH):
            chunk = ids[start : start + RESCORE_BATCH]
            changed: list[ev.Event] = []
            with self._storage().unit_of_work() as uow:
                before = queries(uow).active_scores(chunk)
                active = [cid for cid in chunk if cid in before]
                if not active:
                    continue
                timelines = queries(uow).clear_timelines(active)
                records: list[ScoreRecord] = []
                untested: list[uuid.UUID] = []
                tests_seen = False
                for cid in active:
                    facts = timelines.get(cid, [])
                    real = [f for f in facts if not is_test(f.attributes)]
                    if len(real) < len(facts):
                        tests_seen = True
                    if is_test_timeline(facts):  # only a vendor's test events: never scored
                        untested.append(cid)
                        continue
                    result = model.score(real, at)
                    reasons = [r.to_json() for r in compact_reasons(result.reasons)]
                    records.append(
                        ScoreRecord(
                            contact_id=cid, model=model.model_id, score=result.score, reasons=reasons, computed_at=at
                        )
                    )
                if tests_seen:
                    note_seen(uow)  # segments start looking for test contacts
                    seen_cache(self._storage()).mark()
                if records:
                    uow.scores.put_many(records)
                uow.contacts.set_scores(
                    {r.contact_id: r.score for r in records if before[r.contact_id] != r.score}
                    | {cid: None for cid in untested if before[cid] is not None}
                )
                for record in records:
                    old = before[record.contact_id]
                    if old != record.score:
                        changed.append(
                            ev.ScoreChanged(
                                at=at,
                                contact_id=record.contact_id,
                                model=model.model_id,
                                old_score=old,
                                new_score=record.score,
                            )
                        )
                published = publish(uow, changed)
                uow.commit()
            out.extend(records)
            if changed:
                self._deliver([published])
        return out

    def rescore_all(self, *, now: datetime | None = None) -> int:
        """Rescore every active contact (``carecrm score recompute``: after changing the
        rules, after a bulk import with ``[scoring] live = false``, or daily so decaying
        points fade), a page of :data:`RESCORE_BATCH` contacts per unit of work.

        :param now: the time scores are computed for (default: now, UTC).
        :returns: the number of contacts rescored.
        """
        at = utcnow() if now is None else to_utc_ms(now)
        total = 0
        after: uuid.UUID | None = None
        while True:
            with self._storage().unit_of_work() as uow:
                page = uow.contacts.list(after=after, limit=RESCORE_BATCH)
            if not page:
                return total
            total += len(self.rescore_contacts([r.id for r in page], now=at))
            after = page[-1].id

    # ------------------------------------------------------------------ reading

    def score_top(
        self, limit: int = 20, *, actor: Actor, stages: Sequence[str] | None = None
    ) -> list[tuple[Contact, ScoreRecord]]:
        """Who to call first: the active contacts with the highest scores under the
        configured model, highest first (ties by contact id), decrypted for the
        coordinator (a read by ``actor``: one ``contact.read`` entry per contact shown,
        purpose ``scoring``).  Test contacts (:mod:`carecrm.core.analytics.vendor_tests`)
        are never on it.

        :param limit: how many (1 or more).
        :param stages: only contacts in these lifecycle stages (default: every stage).
        :raises ValueError: if ``limit`` < 1 or a stage is not one of the pipeline's
            (the message lists them).
        """
        if limit < 1:
            raise ValueError("limit: must be 1 or more")
        if stages is not None:
            known = self.settings.pipeline.all_stages
            for stage in stages:
                if stage not in known:
                    raise ValueError(f"stage: unknown stage {stage!r}; known: {', '.join(known)}")
        model = self.scoring_model
        out: list[tuple[Contact, ScoreRecord]] = []
        with self._storage().unit_of_work() as uow:
            wanted = list(stages) if stages is not None else None
            fetch = limit
            while True:  # test contacts are never scored; a score stored before that is skipped
                scores = queries(uow).top_active(model.model_id, limit=fetch, stages=wanted)
                tests = flagged_contacts(uow, [s.contact_id for s in scores])
                kept = [s for s in scores if s.contact_id not in tests]
                if len(kept) >= limit or len(scores) < fetch:
                    break
                fetch += limit
            scores = kept[:limit]
            contacts = uow.contacts.get_many([s.contact_id for s in scores])
            shown = self._read_path().contacts(
                uow, [contacts[s.contact_id] for s in scores], actor=actor, purpose="scoring"
            )
            out.extend(zip(shown, scores, strict=True))
            if out:
                uow.commit()
        return out

    def score_explain(self, ref: str | uuid.UUID, *, actor: Actor) -> tuple[Contact, ScoreRecord]:
        """A contact (a read by ``actor``) and its stored score under the configured model,
        whose ``reasons`` explain it (see :class:`carecrm.core.analytics.scoring.ScoreReason`).  A
        contact never scored yet gets a score computed now and not stored.

        :param ref: contact id, email or phone.
        :raises NotFound: if no contact matches.
        """
        contact = self._resolve(ref, actor=actor)
        model = self.scoring_model
        with self._storage().unit_of_work() as uow:
            try:
                return contact, uow.scores.get(contact.id, model.model_id)
            except NotFound:
                facts = queries(uow).clear_timelines([contact.id]).get(contact.id, [])
        timeline = [f for f in facts if not is_test(f.attributes)]  # vendors' test events count for nothing
        now = utcnow()
        result = model.score(timeline, now)
        return contact, ScoreRecord(
            contact_id=contact.id,
            model=model.model_id,
            score=result.score,
            reasons=[r.to_json() for r in compact_reasons(result.reasons)],
            computed_at=now,
        )

    def last_touches(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """When each contact's latest interaction occurred (UTC), by id; contacts without
        interactions are left out.  No personal data is read."""
        with self._storage().unit_of_work() as uow:
            return queries(uow).latest_times(list(contact_ids))
