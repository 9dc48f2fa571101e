"""Whole-database copies on the Mongo unit of work: export, import and count every kind
of record (``carecrm storage migrate-to``)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from carecrm.core.storage.contract import check_record_kind

if TYPE_CHECKING:
    from carecrm.storage_backends.mongo.backend import MongoUnitOfWork
from carecrm.storage_backends.mongo.shared import (
    CODECS,
    PAGE,
)

# --------------------------------------------------------------------------- whole-database copies


def export_records(uow: MongoUnitOfWork, kind: str) -> Iterator[Any]:
    """:meth:`carecrm.core.storage.contract.UnitOfWork.export_records` on the Mongo unit of work:
    the documents of ``kind``'s collection in ``_id`` order, streamed from one cursor
    (:data:`PAGE` documents per round trip), as stored records (``meta``: ``(key, value)``).

    :raises UnknownComponentError: for an unknown kind.
    """
    check_record_kind(kind)
    docs = uow.view(kind).stream({}, [("_id", 1)], batch=PAGE)
    if kind == "meta":
        return ((str(d["_id"]), str(d["value"])) for d in docs)
    codec = CODECS[kind]
    return (codec.record(d) for d in docs)


def import_records(uow: MongoUnitOfWork, kind: str, records: Sequence[Any]) -> int:
    """:meth:`carecrm.core.storage.contract.UnitOfWork.import_records` on the Mongo unit of work:
    the documents are buffered (unique keys checked, one query per key and chunk) and
    written by ``insert_many`` at commit (``meta``: one upsert per pair).

    :raises UnknownComponentError: for an unknown kind.
    :raises DuplicateError: if a key is already stored.
    :raises ValueError: on a naive datetime.
    """
    check_record_kind(kind)
    view = uow.view(kind)
    if kind == "meta":
        for key, value in records:
            view.replace({"_id": str(key), "value": str(value)})
        return len(records)
    codec = CODECS[kind]
    view.insert([codec.doc(r) for r in records])
    return len(records)


def count_records(uow: MongoUnitOfWork, kind: str) -> int:
    """:meth:`carecrm.core.storage.contract.UnitOfWork.count_records` on the Mongo unit of work (one
    ``count_documents``).  :raises UnknownComponentError: for an unknown kind."""
    check_record_kind(kind)
    return uow.view(kind).count({})
