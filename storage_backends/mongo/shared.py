"""The Mongo repositories' shared machinery: each collection's codec and unique keys,
paging size, and the base repository over the unit of work's buffered view."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from carecrm.core.errors import NotFound
from carecrm.core.model.records import (
    AppointmentRecord,
    AuditRecord,
    ConsentRecord,
    ContactRecord,
    IdentityRecord,
    InboxRecord,
    InteractionRecord,
    MergeRecord,
    NoteRecord,
    OutboxRecord,
    ReviewRecord,
    ScoreRecord,
    SegmentRecord,
    StageChangeRecord,
    TaskRecord,
)
from carecrm.storage_backends.mongo.documents import (
    Codec,
    View,
    bid,
    score_key,
)

if TYPE_CHECKING:
    from carecrm.storage_backends.mongo.backend import MongoUnitOfWork


#: Matches no document (``Or()``, ``In(field, [])``).
NOTHING: dict[str, Any] = {"_id": {"$in": []}}

#: Documents per round trip of a streamed iterator.
PAGE = 1000


def _due_extra(doc: dict[str, Any]) -> dict[str, Any]:
    return {"due_unknown": doc["due_at"] is None}


def _starts_extra(doc: dict[str, Any]) -> dict[str, Any]:
    return {"starts_unknown": doc["starts_at"] is None}


CODECS: dict[str, Codec] = {
    "contacts": Codec(ContactRecord),
    "identities": Codec(IdentityRecord),
    "interactions": Codec(InteractionRecord),
    "stage_changes": Codec(StageChangeRecord),
    "appointments": Codec(AppointmentRecord, extra=_starts_extra),
    "consents": Codec(ConsentRecord),
    "notes": Codec(NoteRecord),
    "tasks": Codec(TaskRecord, extra=_due_extra),
    "scores": Codec(ScoreRecord, id_field=None, key=lambda r: score_key(r.contact_id, r.model)),
    "reviews": Codec(ReviewRecord),
    "segments": Codec(SegmentRecord, id_field="name"),
    "inbox": Codec(InboxRecord),
    "merges": Codec(MergeRecord),
    "audit_log": Codec(AuditRecord, id_field="seq"),
    "outbox": Codec(OutboxRecord, id_field="seq"),
}

#: Unique keys checked on insert (and enforced by unique indexes), per collection.
UNIQUE: dict[str, tuple[tuple[str, ...], ...]] = {
    "contacts": (("_id",),),
    "identities": (("_id",), ("contact_id", "kind", "bidx")),
    "interactions": (("_id",), ("source", "idempotency_key")),
    "stage_changes": (("_id",),),
    "appointments": (("_id",), ("source", "external_id")),
    "consents": (("_id",), ("source", "idempotency_key")),
    "notes": (("_id",),),
    "tasks": (("_id",),),
    "scores": (("_id",),),
    "reviews": (("_id",), ("contact_a", "contact_b")),
    "segments": (("_id",),),
    "inbox": (("_id",), ("source", "digest")),
    "merges": (("_id",),),
    "audit_log": (("_id",),),
    "outbox": (("_id",),),
    "meta": (("_id",),),
}


def _ids(values: Iterable[uuid.UUID]) -> list[Any]:
    return [bid(v) for v in dict.fromkeys(values)]


def _limit(limit: int) -> int:
    if limit < 0:
        raise ValueError("limit: must be 0 or more")
    return limit


class _Repository:
    """Base: the unit's view of one collection and its codec."""

    collection: str

    def __init__(self, uow: MongoUnitOfWork) -> None:
        self._uow = uow
        self.view: View = uow.view(self.collection)
        self.codec = CODECS.get(self.collection)

    def _records(self, docs: Iterable[Mapping[str, Any]]) -> list[Any]:
        assert self.codec is not None
        return [self.codec.record(d) for d in docs]

    def _record(self, doc: Mapping[str, Any] | None, missing: str) -> Any:
        if doc is None:
            raise NotFound(missing)
        assert self.codec is not None
        return self.codec.record(doc)

    def _insert(self, records: Sequence[Any]) -> None:
        assert self.codec is not None
        self.view.insert([self.codec.doc(r) for r in records])

    def count(self) -> int:
        """Number of stored documents (as this unit sees them)."""
        return self.view.count({})
