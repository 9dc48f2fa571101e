"""Mongo repositories of the append-only journals and settings: the audit log, the outbox
and ``meta``."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING

from carecrm.core.model.records import (
    AuditRecord,
    OutboxRecord,
)
from carecrm.storage_backends.mongo.documents import (
    utc,
)

if TYPE_CHECKING:
    pass
from carecrm.storage_backends.mongo.shared import (
    PAGE,
    _limit,
    _Repository,
)

# --------------------------------------------------------------------------- journals


class MongoAudit(_Repository):
    """:class:`carecrm.core.storage.contract.AuditRepository` on collection ``audit_log``
    (``_id`` = seq, so a taken seq is refused by the database; append-only)."""

    collection = "audit_log"

    def append(self, record: AuditRecord) -> None:
        """Append an entry.  :raises DuplicateError: if ``seq`` is taken."""
        self._insert([record])

    def last(self) -> AuditRecord | None:
        """The entry with the highest ``seq``, or None for an empty log."""
        docs = self.view.find({}, [("_id", -1)], 1)
        return self._records(docs)[0] if docs else None

    def iter(self, *, since_seq: int = 0) -> Iterator[AuditRecord]:
        """Entries with ``seq > since_seq`` in seq order, streamed."""
        assert self.codec is not None
        codec = self.codec
        return (codec.record(d) for d in self.view.stream({"_id": {"$gt": since_seq}}, [("_id", 1)], batch=PAGE))


class MongoOutbox(_Repository):
    """:class:`carecrm.core.storage.contract.OutboxRepository` on collection ``outbox`` (``_id`` =
    seq, so a taken seq is refused by the database)."""

    collection = "outbox"

    def append_many(self, records: Sequence[OutboxRecord]) -> None:
        """Append events.  :raises DuplicateError: if a ``seq`` is taken."""
        self._insert(records)

    def after(self, seq: int, *, limit: int = 100) -> list[OutboxRecord]:
        """At most ``limit`` events with a greater ``seq``, in seq order.

        :raises ValueError: if ``limit`` is negative."""
        if _limit(limit) == 0:
            return []
        return self._records(self.view.find({"_id": {"$gt": seq}}, [("_id", 1)], limit))

    def last_seq(self) -> int:
        """The highest stored ``seq``, 0 for an empty outbox."""
        docs = self.view.find({}, [("_id", -1)], 1)
        return int(docs[0]["_id"]) if docs else 0

    def prune(self, *, upto_seq: int, before: datetime) -> int:
        """Delete events with ``seq <= upto_seq`` written before ``before``; returns the count.

        :raises ValueError: if ``before`` is naive."""
        query = {"_id": {"$lte": upto_seq}, "at": {"$lt": utc(before, "before")}}
        docs = self.view.find(query, projection={"_id": 1})
        for doc in docs:
            self.view.delete(doc["_id"])
        return len(docs)


class MongoMeta(_Repository):
    """:class:`carecrm.core.storage.contract.MetaRepository` on collection ``meta`` (``{_id: key, value}``)."""

    collection = "meta"

    def get(self, key: str) -> str | None:
        """The value, or None."""
        doc = self.view.get(key)
        return None if doc is None else str(doc["value"])

    def set(self, key: str, value: str) -> None:
        """Insert or replace."""
        self.view.replace({"_id": key, "value": value})

    def get_for_update(self, key: str) -> str | None:
        """The latest stored value, ``key`` locked until the unit ends: a lock document
        (:meth:`MongoUnitOfWork.lock` of ``meta:<key>``), then a fresh read."""
        self._uow.lock([f"meta:{key}"])
        return self.get(key)
