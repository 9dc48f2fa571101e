"""The segment query's plan on SQLite, PostgreSQL and MariaDB: the statement the SQL backend
compiles for "stage + service interest + city IN (...) + had an interaction of a kind
since T" is answered by the (stage, service_interest, city) index of ``contacts`` and a
probe of the (contact_id, occurred_at, id) index of ``interactions`` per candidate, as
the raw layers were when measured apart (the segment query of docs/performance.md).

Each engine plans with its default settings on analyzed tables of 4,000 contacts and about
10,000 interactions; the benchmark checks SQLite's plan at 100,000 / 1,000,000
(docs/performance.md).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
import sqlalchemy as sa

from carecrm.core.analytics.criteria import Eq, HadInteraction, In, all_of
from carecrm.core.testing.storage import at, contact_record, interaction_record
from carecrm.storage_backends.sql.backend import SqlBackend

CONTACTS = 4000
STAGES = ("new_lead", "contacted", "consult_scheduled", "booked_patient", "lost")
SERVICES = tuple(f"service{i}" for i in range(12))
CITIES = tuple(f"City{i}" for i in range(40))
KINDS = ("email.opened", "email.delivered", "page.viewed", "form.submitted", "call.completed")

QUESTION = all_of(
    Eq("stage", "new_lead"),
    Eq("service_interest", "service1"),
    In("city", CITIES[:3]),
    HadInteraction(("email.opened",), since=at(-90 * 86400)),
)


def _fill(backend: SqlBackend) -> int:
    """Store the data set; returns how many contacts the question selects (computed here)."""
    rng = random.Random(7)
    contacts, interactions, expected = [], [], 0
    for _ in range(CONTACTS):
        c = contact_record(stage=rng.choice(STAGES), service_interest=rng.choice(SERVICES), city=rng.choice(CITIES))
        contacts.append(c)
        hit = False
        for _ in range(rng.randrange(0, 6)):
            kind = rng.choice(KINDS)
            when = at(-rng.randrange(0, 400) * 86400)
            interactions.append(interaction_record(c.id, kind=kind, occurred_at=when))
            hit = hit or (kind == "email.opened" and when >= at(-90 * 86400))
        if hit and c.stage == "new_lead" and c.service_interest == "service1" and c.city in CITIES[:3]:
            expected += 1
    with backend.unit_of_work() as uow:
        uow.contacts.add_many(contacts)
        uow.interactions.add_many(interactions)
        uow.commit()
    return expected


def _statement(backend: SqlBackend) -> tuple[str, Any]:
    """The SQL text and parameters the backend sends for ``count_matching(QUESTION)``."""
    seen: list[tuple[str, Any]] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if "count(" in statement.lower():
            seen.append((statement, parameters))

    sa.event.listen(backend.engine, "before_cursor_execute", on_execute)
    try:
        with backend.unit_of_work() as uow:
            uow.contacts.count_matching(QUESTION)
    finally:
        sa.event.remove(backend.engine, "before_cursor_execute", on_execute)
    return seen[-1]


def _explain(backend: SqlBackend, prefix: str) -> str:
    sql, params = _statement(backend)
    with backend.engine.connect() as conn:
        rows = conn.exec_driver_sql(f"{prefix} {sql}", params).all()
    return "\n".join(" ".join(str(v) for v in row) for row in rows)


def _check(backend: SqlBackend, plan: str, expected: int) -> None:
    with backend.unit_of_work() as uow:
        assert uow.contacts.count_matching(QUESTION) == expected
    assert "ix_contacts_segment" in plan, plan
    assert "ix_interactions_contact_time" in plan, plan


@pytest.fixture
def sqlite_backend(tmp_path: Any) -> Iterator[SqlBackend]:
    backend = SqlBackend(f"sqlite:///{tmp_path / 'plans.db'}")
    backend.create_schema()
    yield backend
    backend.close()


def test_sqlite_plan_uses_both_indexes(sqlite_backend: SqlBackend) -> None:
    expected = _fill(sqlite_backend)
    with sqlite_backend.engine.begin() as conn:
        conn.exec_driver_sql("ANALYZE")
    plan = _explain(sqlite_backend, "EXPLAIN QUERY PLAN")
    _check(sqlite_backend, plan, expected)
    assert "SCAN contacts" not in plan


@pytest.mark.postgres
def test_postgres_plan_uses_both_indexes(postgres_database: Any) -> None:
    postgres_database.reset()
    backend = SqlBackend(postgres_database.url)
    try:
        expected = _fill(backend)
        with backend.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")
        plan = _explain(backend, "EXPLAIN")
        assert "Seq Scan" not in plan, plan
        _check(backend, plan, expected)
    finally:
        backend.close()


@pytest.mark.mariadb
def test_mariadb_plan_uses_both_indexes(mariadb_database: Any) -> None:
    mariadb_database.reset()
    backend = SqlBackend(mariadb_database.url)
    try:
        expected = _fill(backend)
        with backend.engine.connect() as conn:
            conn.exec_driver_sql("ANALYZE TABLE contacts, interactions")
        plan = _explain(backend, "EXPLAIN")
        _check(backend, plan, expected)
        assert "ALL" not in plan.split(), plan  # no full table scan
    finally:
        backend.close()


def test_the_window_start_is_inclusive_at_millisecond_precision(sqlite_backend: SqlBackend) -> None:
    c = contact_record(stage="new_lead", service_interest="service1", city=CITIES[0])
    with sqlite_backend.unit_of_work() as uow:
        uow.contacts.add(c)
        uow.interactions.add(interaction_record(c.id, kind="email.opened", occurred_at=at(-90 * 86400)))
        uow.commit()
    with sqlite_backend.unit_of_work() as uow:
        assert uow.contacts.count_matching(QUESTION) == 1
        later = HadInteraction(("email.opened",), since=at(-90 * 86400) + timedelta(milliseconds=1))
        assert uow.contacts.count_matching(later) == 0
