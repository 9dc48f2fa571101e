"""Mongo repositories of people: contacts (segment criteria compiled to one query) and
their identities."""

from __future__ import annotations

import builtins
import re
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from carecrm.core.analytics.criteria import And, Criteria, Eq, HadInteraction, In, Not, Or, Prefix, Range
from carecrm.core.errors import ConflictError, NotFound
from carecrm.core.model.records import (
    ACTIVE,
    ContactRecord,
    IdentityRecord,
)
from carecrm.storage_backends.mongo.documents import (
    and_,
    bid,
    from_bson,
)

if TYPE_CHECKING:
    from carecrm.storage_backends.mongo.timelines import MongoInteractions
from carecrm.storage_backends.mongo.shared import (
    NOTHING,
    _ids,
    _limit,
    _Repository,
)

# --------------------------------------------------------------------------- contacts


class MongoContacts(_Repository):
    """:class:`carecrm.core.storage.contract.ContactRepository` on collection ``contacts``."""

    collection = "contacts"

    def add(self, record: ContactRecord) -> None:
        """Insert a new contact.  :raises DuplicateError: if the id exists."""
        self._insert([record])

    def add_many(self, records: Sequence[ContactRecord]) -> None:
        """Insert several contacts, all or none.  :raises DuplicateError:"""
        self._insert(records)

    def get(self, contact_id: uuid.UUID) -> ContactRecord:
        """The contact with this id.  :raises NotFound: if there is none."""
        record: ContactRecord = self._record(self.view.get(bid(contact_id)), f"no contact {contact_id}")
        return record

    def get_many(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, ContactRecord]:
        """The contacts among ``contact_ids`` that exist, by id (``_id $in``, chunked)."""
        return {r.id: r for r in self._records(self.view.find_in("_id", _ids(contact_ids)))}

    def update(self, record: ContactRecord) -> ContactRecord:
        """Replace the contact if its version equals ``record.version`` (checked now and
        again at commit, where the replace is conditional on the stored version).

        :returns: the stored record, ``version`` increased by one.
        :raises NotFound: if the contact does not exist.
        :raises ConflictError: if the stored version differs.
        """
        key = bid(record.id)
        current = self.view.get(key)
        if current is None:
            raise NotFound(f"no contact {record.id}")
        if current["version"] != record.version:
            raise ConflictError.stale_version("contact", record.id, stored=current["version"], expected=record.version)
        stored = attrs.evolve(record, version=record.version + 1)
        assert self.codec is not None
        self.view.replace(self.codec.doc(stored), expect={"version": record.version})
        return self.codec.record(self.codec.doc(stored))  # type: ignore[no-any-return]

    def active_scores(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, float | None]:
        """``find({status: active, _id: {$in}}, {score})`` per chunk of ids."""
        docs = self.view.find_in("_id", _ids(contact_ids), {"status": ACTIVE}, projection={"score": 1, "status": 1})
        return {from_bson(d["_id"]): d.get("score") for d in docs}

    def set_scores(self, scores: Mapping[uuid.UUID, float | None]) -> None:
        """Set the clear score of each contact and move its version on (each replace is
        conditional on the version read here); unknown ids change nothing."""
        if not scores:
            return
        by_key = {bid(cid): score for cid, score in scores.items()}
        for doc in self.view.find_in("_id", list(by_key)):
            version = doc["version"]
            new = dict(doc, score=by_key[doc["_id"]], version=version + 1)
            self.view.replace(new, expect={"version": version})

    def _active(self, query: Mapping[str, Any]) -> dict[str, Any]:
        return and_({"status": ACTIVE}, query)

    def find_by_name(self, name_bidx: str) -> builtins.list[ContactRecord]:
        """Active contacts whose full-name blind index equals ``name_bidx``, oldest first."""
        docs = self.view.find(self._active({"name_bidx": name_bidx}), [("created_at", 1), ("_id", 1)])
        return self._records(docs)

    def find_by_family_name(self, family_name_bidx: str) -> builtins.list[ContactRecord]:
        """Active contacts whose family-name blind index matches, oldest first."""
        docs = self.view.find(self._active({"family_name_bidx": family_name_bidx}), [("created_at", 1), ("_id", 1)])
        return self._records(docs)

    def list(
        self, *, stage: str | None = None, after: uuid.UUID | None = None, limit: int = 100
    ) -> builtins.list[ContactRecord]:
        """Active contacts in id order, optionally of one stage, after id ``after``."""
        query: dict[str, Any] = {}
        if stage is not None:
            query["stage"] = stage
        if after is not None:
            query["_id"] = {"$gt": bid(after)}
        return self._records(self.view.find(self._active(query), [("_id", 1)], max(limit, 0)))

    # -- segments

    def _segment_query(self, criteria: Criteria, after: uuid.UUID | None) -> dict[str, Any]:
        compiled = compile_criteria(criteria, self._uow.interactions)
        query = and_({"status": ACTIVE}, compiled)
        if after is not None:
            query = and_(query, {"_id": {"$gt": bid(after)}})
        return query

    def select(
        self, criteria: Criteria, *, limit: int = 100, after: uuid.UUID | None = None
    ) -> builtins.list[ContactRecord]:
        """Active contacts matching a filter tree, in id order (one ``find`` after the
        interactions' contact ids of any ``HadInteraction`` node: see :func:`compile_criteria`).

        :raises ValueError: if ``limit`` is negative.
        """
        _limit(limit)
        if limit == 0:
            return []
        return self._records(self.view.find(self._segment_query(criteria, after), [("_id", 1)], limit))

    def select_ids(
        self, criteria: Criteria, *, limit: int = 1000, after: uuid.UUID | None = None
    ) -> builtins.list[uuid.UUID]:
        """The ids :meth:`select` would return (projection on ``_id`` only).

        :raises ValueError: if ``limit`` is negative.
        """
        _limit(limit)
        if limit == 0:
            return []
        docs = self.view.find(self._segment_query(criteria, after), [("_id", 1)], limit, projection={"_id": 1})
        return [from_bson(d["_id"]) for d in docs]

    def count_matching(self, criteria: Criteria) -> int:
        """How many active contacts match a filter tree (one ``count_documents``)."""
        return self.view.count(self._segment_query(criteria, None))


def compile_criteria(criteria: Criteria, interactions: MongoInteractions) -> dict[str, Any]:
    """A filter tree as a MongoDB query on ``contacts`` (two-valued logic).

    ``Eq(f, None)`` is ``{f: null}`` (null or missing); ``Not`` is ``$nor``, which matches a
    document whose field is null or missing, as the two-valued ``Not`` must; a ``Prefix``
    is an anchored, escaped, case-sensitive ``$regex`` (an index range scan); ``Range``
    is ``$gte``/``$lte`` (never matching null).  A ``HadInteraction`` node becomes
    ``{_id: {$in: ids}}`` where ``ids`` are the distinct contact ids of the interactions
    of those kinds in ``[since, until)``, found first by one ``$group`` on the interactions
    (index ``(kind, occurred_at)``): a correlated ``$lookup`` pipeline is not run by the
    in-process test double, and this form runs on both.
    """
    if isinstance(criteria, Eq):
        return {criteria.field: criteria.value}
    if isinstance(criteria, In):
        if not criteria.values:
            return dict(NOTHING)
        return {criteria.field: {"$in": list(criteria.values)}}
    if isinstance(criteria, Range):
        cond: dict[str, Any] = {}
        if criteria.min is not None:
            cond["$gte"] = criteria.min
        if criteria.max is not None:
            cond["$lte"] = criteria.max
        return {criteria.field: cond}
    if isinstance(criteria, Prefix):
        return {criteria.field: {"$regex": "^" + re.escape(criteria.prefix)}}
    if isinstance(criteria, HadInteraction):
        return {"_id": {"$in": interactions.contacts_with(criteria.kinds, criteria.since, criteria.until)}}
    if isinstance(criteria, And):
        return and_(*(compile_criteria(c, interactions) for c in criteria.children))
    if isinstance(criteria, Or):
        if not criteria.children:
            return dict(NOTHING)
        return {"$or": [compile_criteria(c, interactions) or {"_id": {"$exists": True}} for c in criteria.children]}
    if isinstance(criteria, Not):
        inner = compile_criteria(criteria.child, interactions)
        if not inner:
            return dict(NOTHING)
        return {"$nor": [inner]}
    raise TypeError(f"not a segment criterion: {type(criteria).__name__}")


# --------------------------------------------------------------------------- identities


class MongoIdentities(_Repository):
    """:class:`carecrm.core.storage.contract.IdentityRepository` on collection ``identities``
    (unique on (contact_id, kind, bidx); ``bidx`` alone is not unique: households share)."""

    collection = "identities"
    _order = [("created_at", 1), ("_id", 1)]

    def add(self, record: IdentityRecord) -> None:
        """Insert an identity.  :raises DuplicateError: on the same (contact, kind, bidx)."""
        self._insert([record])

    def add_many(self, records: Sequence[IdentityRecord]) -> None:
        """Insert several identities, all or none."""
        self._insert(records)

    def find(self, kind: str, bidx: str) -> list[IdentityRecord]:
        """Identities of ``kind`` with this blind index, oldest first."""
        return self._records(self.view.find({"kind": kind, "bidx": bidx}, self._order))

    def find_many(self, keys: Iterable[tuple[str, str]]) -> list[IdentityRecord]:
        """Identities matching any (kind, bidx) pair: ``{kind, bidx: {$in}}`` per kind and chunk."""
        by_kind: dict[str, list[str]] = {}
        for kind, value in dict.fromkeys(keys):
            by_kind.setdefault(kind, []).append(value)
        out: list[IdentityRecord] = []
        for kind, values in by_kind.items():
            out.extend(self._records(self.view.find_in("bidx", values, {"kind": kind})))
        return out

    def for_contact(self, contact_id: uuid.UUID) -> list[IdentityRecord]:
        """All identities of one contact, oldest first."""
        return self._records(self.view.find({"contact_id": bid(contact_id)}, self._order))
