"""SQLite batch inserts through sqlite3's own ``executemany`` (the ingest path's fast
path): every value is converted exactly as SQLAlchemy converts it, rows round-trip, and
the inbox's insert-or-skip counts what it stored."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pytest
from sqlalchemy.dialects import sqlite

from carecrm.core.storage.contract import StorageBackend
from carecrm.core.testing.storage import bidx, inbox_record, interaction_record
from carecrm.storage_backends.sql import open_backend, schema
from carecrm.storage_backends.sql.types import UtcDateTime, UuidType, sqlite_bind_processor

DIALECT = sqlite.dialect()

DATETIMES = [
    None,
    datetime(2026, 12, 3, 15, 4, 5, 678000, tzinfo=UTC),
    datetime(2026, 12, 3, 15, 4, 5, 678999, tzinfo=UTC),  # truncated to the millisecond
    datetime(2026, 12, 3, 10, 4, 5, tzinfo=timezone(timedelta(hours=-5))),  # converted to UTC
    datetime(999, 1, 2, tzinfo=UTC),  # a three-digit year is padded to four
    datetime(9999, 12, 31, 23, 59, 59, 999000, tzinfo=UTC),
]
UUIDS = [None, uuid.uuid4(), uuid.UUID(int=0), uuid.UUID(int=2**128 - 1)]


@pytest.mark.parametrize("value", DATETIMES)
def test_datetimes_are_bound_as_sqlalchemy_binds_them(value: datetime | None) -> None:
    ours = sqlite_bind_processor(UtcDateTime(), DIALECT)
    theirs = UtcDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)
    assert ours is not None and theirs is not None
    assert ours(value) == theirs(value)


def test_a_naive_datetime_is_refused_by_both() -> None:
    ours = sqlite_bind_processor(UtcDateTime(), DIALECT)
    theirs = UtcDateTime().dialect_impl(DIALECT).bind_processor(DIALECT)
    assert ours is not None and theirs is not None
    for process in (ours, theirs):
        with pytest.raises(ValueError, match="naive"):
            process(datetime(2026, 1, 1))


@pytest.mark.parametrize("value", UUIDS)
def test_uuids_are_bound_as_sqlalchemy_binds_them(value: uuid.UUID | None) -> None:
    ours = sqlite_bind_processor(UuidType(), DIALECT)
    theirs = UuidType().dialect_impl(DIALECT).bind_processor(DIALECT)
    assert ours is not None and theirs is not None
    assert ours(value) == theirs(value)


def test_other_types_keep_sqlalchemys_processor() -> None:
    for table in schema.metadata.tables.values():
        for column in table.columns:
            if isinstance(column.type, UuidType | UtcDateTime):
                continue
            expected = column.type.dialect_impl(DIALECT).bind_processor(DIALECT)
            got = sqlite_bind_processor(column.type, DIALECT)
            assert (got is None) == (expected is None), f"{table.name}.{column.name}"


@pytest.fixture
def backend(tmp_path: Path) -> Iterator[StorageBackend]:
    opened = open_backend(f"sqlite:///{tmp_path / 'carecrm.db'}", {})
    opened.create_schema()
    yield opened
    opened.close()


def test_a_batch_round_trips_through_the_driver_path(backend: StorageBackend) -> None:
    contact = uuid.uuid4()
    records = [
        interaction_record(contact_id=contact, occurred_at=datetime(2026, 1, 1, tzinfo=UTC) + timedelta(seconds=i))
        for i in range(50)
    ]
    with backend.unit_of_work() as uow:
        uow.interactions.add_many(records)
        uow.commit()
    with backend.unit_of_work() as uow:
        back = {r.id: uow.interactions.get(r.id) for r in records}
    assert back == {r.id: r for r in records}


def test_insert_or_skip_counts_what_it_stored(backend: StorageBackend) -> None:
    first = inbox_record(digest=bidx("one"))
    with backend.unit_of_work() as uow:
        assert uow.inbox.add_new([first, inbox_record(digest=bidx("two"))]) == 2
        uow.commit()
    with backend.unit_of_work() as uow:
        assert uow.inbox.add_new([inbox_record(digest=bidx("one")), inbox_record(digest=bidx("three"))]) == 1
        uow.commit()
    with backend.unit_of_work() as uow:
        found = uow.inbox.find_digests(first.source, [bidx("one"), bidx("two"), bidx("three")])
    assert len(found) == 3 and found[0].id == first.id
