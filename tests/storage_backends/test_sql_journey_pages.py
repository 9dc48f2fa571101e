"""The SQL backend's attribution streams across page boundaries, on SQLite, PostgreSQL and
MariaDB: ``iter_touches`` and ``first_reached`` with a page of 3 rows, so that ties on time,
a contact split over two pages and the keyset conditions are all exercised."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from carecrm.core.model.ids import new_id
from carecrm.core.storage.contract import StorageBackend
from carecrm.core.testing.storage import at, contact_record, interaction_record, stage_change_record
from carecrm.storage_backends.sql import repositories
from carecrm.storage_backends.sql.backend import SqlBackend


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("postgresql", marks=pytest.mark.postgres),
        pytest.param("mariadb", marks=pytest.mark.mariadb),
    ]
)
def backend(request: pytest.FixtureRequest, tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[StorageBackend]:
    monkeypatch.setattr(repositories, "TOUCH_PAGE", 3)
    if request.param == "sqlite":
        opened = SqlBackend(f"sqlite:///{tmp_path / 'pages.db'}")
        opened.create_schema()
    else:
        database = request.getfixturevalue("postgres_database" if request.param == "postgresql" else "mariadb_database")
        database.reset()
        opened = SqlBackend(database.url)
    yield opened
    opened.close()


def test_touches_across_pages(backend: StorageBackend) -> None:
    ids = sorted(new_id() for _ in range(4))
    rows = [
        interaction_record(ids[i % 4], kind="form.submitted", occurred_at=at((i * 7) % 5), direction="inbound")
        for i in range(23)
    ]
    rows += [interaction_record(ids[1], kind="call.completed", occurred_at=at(2), direction="outbound")]
    random.Random(3).shuffle(rows)
    with backend.unit_of_work() as uow:
        uow.contacts.add_many([contact_record(id=cid) for cid in ids])
        uow.interactions.add_many(rows)
        uow.commit()
    wanted = sorted((r for r in rows if r.direction != "outbound"), key=lambda r: (r.contact_id, r.occurred_at, r.id))
    with backend.unit_of_work() as uow:
        got = [
            r.id
            for r in uow.interactions.iter_touches(
                ["form.submitted", "call.completed"], skip_outbound=["call.completed"]
            )
        ]
        bounded = [
            r.id for r in uow.interactions.iter_touches(["form.submitted"], occurred_after=at(1), occurred_before=at(4))
        ]
    assert got == [r.id for r in wanted]
    assert bounded == [r.id for r in wanted if at(1) <= r.occurred_at < at(4)]


def test_first_reached_across_pages(backend: StorageBackend) -> None:
    ids = sorted(new_id() for _ in range(11))
    changes = [stage_change_record(cid, to_stage="booked_patient", changed_at=at(i % 4)) for i, cid in enumerate(ids)]
    changes += [stage_change_record(ids[0], to_stage="booked_patient", changed_at=at(9))]
    with backend.unit_of_work() as uow:
        uow.stages.add_many(changes)
        uow.commit()
    with backend.unit_of_work() as uow:
        got = [(r.contact_id, r.reached_at) for r in uow.stages.first_reached(["booked_patient"])]
        late = [r.contact_id for r in uow.stages.first_reached(["booked_patient"], reached_from=at(2))]
    assert got == [(cid, at(i % 4)) for i, cid in enumerate(ids)]
    assert late == [cid for i, cid in enumerate(ids) if i % 4 >= 2]
