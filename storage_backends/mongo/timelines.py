"""Mongo repositories of timelines: interactions and the stage history."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from carecrm.core.model.records import (
    FirstResponseRecord,
    InteractionFacts,
    InteractionRecord,
    StageChangeRecord,
    StageReachedRecord,
    TouchRecord,
)
from carecrm.core.storage.contract import TimelineCursor
from carecrm.storage_backends.mongo.documents import (
    and_,
    bid,
    chunks,
    from_bson,
    utc,
)

if TYPE_CHECKING:
    pass
from carecrm.storage_backends.mongo.shared import (
    PAGE,
    _ids,
    _Repository,
)

# --------------------------------------------------------------------------- interactions

_TIMELINE = [("occurred_at", 1), ("_id", 1)]
_BY_CONTACT = [("contact_id", 1), ("occurred_at", 1), ("_id", 1)]
_TOUCH_FIELDS = ("contact_id", "kind", "occurred_at", "channel", "direction", "campaign", "channel_group", "touchpoint")


class MongoInteractions(_Repository):
    """:class:`carecrm.core.storage.contract.InteractionRepository` on collection ``interactions``:
    unique on (source, idempotency_key), timeline index (contact_id, occurred_at, _id)."""

    collection = "interactions"

    def add(self, record: InteractionRecord) -> None:
        """Append an interaction.  :raises DuplicateError: on a repeated (source, key) or id."""
        self._insert([record])

    def add_many(self, records: Sequence[InteractionRecord]) -> None:
        """Append several interactions, all or none.  :raises DuplicateError:"""
        self._insert(records)

    def existing_keys(self, source: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` are stored for ``source`` (``{source, idempotency_key: {$in}}``)."""
        docs = self.view.find_in("idempotency_key", keys, {"source": source}, projection={"idempotency_key": 1})
        return {d["idempotency_key"] for d in docs}

    def delete_for_inbox(self, inbox_id: uuid.UUID) -> list[InteractionRecord]:
        """Delete the interactions of one inbox payload (index ``ix_interactions_inbox``); returns them."""
        docs = self.view.find({"inbox_id": bid(inbox_id)})
        for doc in docs:
            self.view.delete(doc["_id"])
        return self._records(docs)

    def get(self, interaction_id: uuid.UUID) -> InteractionRecord:
        """One interaction.  :raises NotFound: if there is none."""
        record: InteractionRecord = self._record(self.view.get(bid(interaction_id)), f"no interaction {interaction_id}")
        return record

    def timeline(
        self,
        contact_id: uuid.UUID,
        *,
        after: TimelineCursor | None = None,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
    ) -> list[InteractionRecord]:
        """A contact's interactions by (occurred_at, id): keyset pages on the timeline index.

        :raises ValueError: if the cursor's time is naive.
        """
        query: dict[str, Any] = {"contact_id": bid(contact_id)}
        if kinds is not None:
            query["kind"] = {"$in": list(kinds)}
        if after is not None:
            when, last = utc(after[0], "after"), bid(after[1])
            query = and_(query, {"$or": [{"occurred_at": {"$gt": when}}, {"occurred_at": when, "_id": {"$gt": last}}]})
        return self._records(self.view.find(query, _TIMELINE, max(limit, 0)))

    def clear_timelines(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[InteractionFacts]]:
        """The clear facts of each contact's interactions by (occurred_at, id): one ``find``
        per chunk of ids sorted on the timeline index, projecting the seven fields needed."""
        projection = {f: 1 for f in ("contact_id", "kind", "occurred_at", "channel", "direction", "attributes")}
        found: dict[uuid.UUID, list[InteractionFacts]] = {}
        for doc in self.view.find_in("contact_id", _ids(contact_ids), sort=_BY_CONTACT, projection=projection):
            cid = from_bson(doc["contact_id"])
            found.setdefault(cid, []).append(
                InteractionFacts(
                    id=from_bson(doc["_id"]),
                    contact_id=cid,
                    kind=doc["kind"],
                    occurred_at=from_bson(doc["occurred_at"]),
                    channel=doc.get("channel"),
                    direction=doc.get("direction"),
                    attributes=from_bson(doc.get("attributes") or {}),
                )
            )
        return found

    def latest_times(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """``$max`` of occurred_at per contact: one ``$group`` per chunk of ids."""
        found: dict[Any, datetime] = {}
        for chunk in chunks(_ids(contact_ids)):
            query = {"contact_id": {"$in": list(chunk)}}
            rows = self.view.aggregate(query, [{"$group": {"_id": "$contact_id", "latest": {"$max": "$occurred_at"}}}])
            for row in rows:
                found[row["_id"]] = from_bson(row["latest"])
            for doc in self.view.pending_matches(query):
                when = from_bson(doc["occurred_at"])
                if doc["contact_id"] not in found or found[doc["contact_id"]] < when:
                    found[doc["contact_id"]] = when
        return {from_bson(k): v for k, v in found.items()}

    def contacts_with(self, kinds: Sequence[str], since: datetime, until: datetime | None) -> list[Any]:
        """The distinct contact ids (as stored) of interactions of ``kinds`` with
        ``since <= occurred_at < until``: one ``$group`` on the (kind, occurred_at) index."""
        window: dict[str, Any] = {"$gte": utc(since, "since")}
        if until is not None:
            window["$lt"] = utc(until, "until")
        query = {"kind": {"$in": list(kinds)}, "occurred_at": window}
        ids = [row["_id"] for row in self.view.aggregate(query, [{"$group": {"_id": "$contact_id"}}])]
        ids.extend(d["contact_id"] for d in self.view.pending_matches(query))
        return list(dict.fromkeys(ids))

    def first_responses(
        self,
        *,
        inbound_kinds: Sequence[str],
        outbound_kinds: Sequence[str],
        contact_ids: Sequence[uuid.UUID] | None = None,
    ) -> list[FirstResponseRecord]:
        """Speed to lead, computed by the server in two grouped queries per chunk: the
        first inbound per contact (``$group`` ``$min``), then the first outbound at or after
        each contact's first inbound (``$match`` with one ``{contact_id, occurred_at: {$gte}}``
        branch per contact, ``$group`` ``$min``)."""
        if not inbound_kinds or (contact_ids is not None and not contact_ids):
            return []
        inbound = {"kind": {"$in": list(inbound_kinds)}, "direction": "inbound"}
        outbound = {"kind": {"$in": list(outbound_kinds)}, "direction": "outbound"}
        scopes: list[dict[str, Any]]
        if contact_ids is None:
            scopes = [{}]
        else:
            scopes = [{"contact_id": {"$in": list(c)}} for c in chunks(_ids(contact_ids))]
        firsts: dict[Any, datetime] = {}
        for scope in scopes:
            query = and_(scope, inbound)
            group = [{"$group": {"_id": "$contact_id", "first": {"$min": "$occurred_at"}}}]
            for row in self.view.aggregate(query, group):
                firsts[row["_id"]] = from_bson(row["first"])
            for doc in self.view.pending_matches(query):
                when = from_bson(doc["occurred_at"])
                if doc["contact_id"] not in firsts or when < firsts[doc["contact_id"]]:
                    firsts[doc["contact_id"]] = when
        answers: dict[Any, datetime] = {}
        if outbound_kinds:
            keys = list(firsts)
            for chunk in chunks(keys):
                query = and_(
                    outbound, {"$or": [{"contact_id": k, "occurred_at": {"$gte": utc(firsts[k])}} for k in chunk]}
                )
                group = [{"$group": {"_id": "$contact_id", "first": {"$min": "$occurred_at"}}}]
                for row in self.view.aggregate(query, group):
                    answers[row["_id"]] = from_bson(row["first"])
                for doc in self.view.pending_matches(query):
                    when = from_bson(doc["occurred_at"])
                    if doc["contact_id"] not in answers or when < answers[doc["contact_id"]]:
                        answers[doc["contact_id"]] = when
        out = [
            FirstResponseRecord(contact_id=from_bson(k), first_inbound_at=v, first_outbound_at=answers.get(k))
            for k, v in firsts.items()
        ]
        out.sort(key=lambda r: r.contact_id)
        return out

    def iter_touches(
        self,
        kinds: Sequence[str],
        *,
        skip_outbound: Sequence[str] = (),
        occurred_after: datetime | None = None,
        occurred_before: datetime | None = None,
    ) -> Iterator[TouchRecord]:
        """Interactions of ``kinds`` by (contact_id, occurred_at, id), streamed from one
        sorted cursor (:data:`PAGE` documents per round trip), projecting the touch fields.

        :raises ValueError: if a bound is naive.
        """
        window: dict[str, Any] = {}
        if occurred_after is not None:
            window["$gte"] = utc(occurred_after, "occurred_after")
        if occurred_before is not None:
            window["$lt"] = utc(occurred_before, "occurred_before")
        if not kinds:
            return iter(())
        query: dict[str, Any] = {"kind": {"$in": list(dict.fromkeys(kinds))}}
        if window:
            query["occurred_at"] = window
        if skip_outbound:
            query = and_(query, {"$nor": [{"kind": {"$in": list(skip_outbound)}, "direction": "outbound"}]})
        docs = self.view.stream(query, _BY_CONTACT, {f: 1 for f in _TOUCH_FIELDS}, batch=PAGE)
        return (
            TouchRecord(
                id=from_bson(d["_id"]),
                contact_id=from_bson(d["contact_id"]),
                kind=d["kind"],
                occurred_at=from_bson(d["occurred_at"]),
                channel=d.get("channel"),
                direction=d.get("direction"),
                campaign=d.get("campaign"),
                channel_group=d.get("channel_group"),
                touchpoint=from_bson(d.get("touchpoint") or {}),
            )
            for d in docs
        )


# --------------------------------------------------------------------------- stages, appointments


class MongoStages(_Repository):
    """:class:`carecrm.core.storage.contract.StageRepository` on collection ``stage_changes``."""

    collection = "stage_changes"

    def add(self, record: StageChangeRecord) -> None:
        """Append a stage change."""
        self._insert([record])

    def add_many(self, records: Sequence[StageChangeRecord]) -> None:
        """Append several stage changes, all or none."""
        self._insert(records)

    def history(self, contact_id: uuid.UUID) -> list[StageChangeRecord]:
        """One contact's stage changes, oldest first."""
        return self._records(self.view.find({"contact_id": bid(contact_id)}, [("changed_at", 1), ("_id", 1)]))

    def first_reached(
        self,
        stages: Sequence[str],
        *,
        pipeline: str | None = None,
        reached_from: datetime | None = None,
        reached_before: datetime | None = None,
    ) -> Iterator[StageReachedRecord]:
        """``$min`` of changed_at per contact over its changes into ``stages``: one ``$group``
        (with the window as a ``$match`` after it), combined with the unit's pending changes
        and sorted by contact id.  The answer holds one small pair per contact.

        :raises ValueError: if a bound is naive.
        """
        window: dict[str, Any] = {}
        if reached_from is not None:
            window["$gte"] = utc(reached_from, "reached_from")
        if reached_before is not None:
            window["$lt"] = utc(reached_before, "reached_before")
        if not stages:
            return iter(())
        query: dict[str, Any] = {"to_stage": {"$in": list(dict.fromkeys(stages))}}
        if pipeline is not None:
            query["pipeline"] = pipeline
        pending = self.view.pending_matches(query)
        group: list[Mapping[str, Any]] = [{"$group": {"_id": "$contact_id", "first": {"$min": "$changed_at"}}}]
        if window and not pending:
            group.append({"$match": {"first": window}})
        found = {row["_id"]: from_bson(row["first"]) for row in self.view.aggregate(query, group)}
        for doc in pending:
            when = from_bson(doc["changed_at"])
            if doc["contact_id"] not in found or when < found[doc["contact_id"]]:
                found[doc["contact_id"]] = when
        low, high = window.get("$gte"), window.get("$lt")
        out = sorted(
            (from_bson(k), v) for k, v in found.items() if (low is None or v >= low) and (high is None or v < high)
        )
        return (StageReachedRecord(contact_id=cid, reached_at=at) for cid, at in out)
