"""No personal data in clear in any database: the SQLite file (with its -wal file) and
the PostgreSQL and MariaDB tables, the inbox included, are searched for the test data's
emails, phones, names, note and inquiry text (HIPAA 45 CFR 164.312(a)(2)(iv))."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from carecrm.core import (
    CareCRM,
    InteractionDraft,
    LeadEvent,
    RawPayload,
    SourceConnector,
    ValidationFailed,
    hookimpl,
)
from carecrm.core.config import settings_from_dict
from carecrm.core.model.domain import Actor, ConsentSignal

ACTOR = Actor.parse("tester:admin")

PEOPLE = [
    {
        "first": "Maria",
        "last": "Placeholder",
        "email": "Maria.Placeholder@Example.com",
        "phone": "(312) 555-0142",
        "text": "Cystic acne on my jawline since March",
    },
    {
        "first": "Zaphod",
        "last": "Beeblebroxian",
        "email": "zaphod.beeblebroxian@example.org",
        "phone": "15550000000",
        "text": "Considering isotretinoin, worried about side effects",
    },
]
NOTE = "Patient mentioned pregnancy plans; discuss before prescribing"
NEEDLES = [
    "maria.placeholder@example.com",
    "Maria.Placeholder",
    "Placeholder",
    "Beeblebroxian",
    "zaphod.beeblebroxian",
    "3125550142",
    "555-0142",
    "5550000000",
    "isotretinoin",
    "jawline",
    "pregnancy plans",
    "Zaphod",
]


class JsonLeads(SourceConnector):
    """Test connector: a JSON list of people."""

    connector_id = "jsonleads"

    def parse(self, payload: RawPayload) -> Iterable[LeadEvent | ValidationFailed]:
        for i, p in enumerate(json.loads(payload.body)):
            yield LeadEvent(
                source=self.name,
                record_ref=f"lead-{i}",
                emails=(p["email"],),
                phones=(p["phone"],),
                first_name=p["first"],
                last_name=p["last"],
                postal_code="60601",
                city="Chicago",
                service_interest="acne",
                interactions=(
                    InteractionDraft(
                        kind="form.submitted",
                        idempotency_key=f"form.submitted:{i}",
                        occurred_at=datetime(2026, 4, 2, 15, i, tzinfo=UTC),
                        channel="web",
                        body=p["text"],
                    ),
                ),
                consents=(
                    ConsentSignal(
                        contact_point_kind="phone",
                        channel="sms",
                        purpose="marketing",
                        status="granted",
                        idempotency_key=f"consent:{i}",
                        occurred_at=datetime(2026, 4, 2, 15, i, tzinfo=UTC),
                        evidence={"text": f"I agree, {p['first']}"},
                    ),
                ),
            )


class Plugin:
    @hookimpl
    def carecrm_register_sources(self, register: Any) -> None:
        register(JsonLeads)


def _scenario(app: CareCRM) -> None:
    body = json.dumps(PEOPLE).encode()
    report = app.ingest_payloads(
        "jsonleads",
        [RawPayload(body=body, headers={"X-Caller": "+13125550142"}, url="https://hooks.example/?phone=3125550142")],
        actor=ACTOR,
    )
    assert report.contacts_created == 2, report
    contact = app.find_contacts(phone="312.555.0142", actor=ACTOR)[0]
    app.add_note(contact.id, NOTE, actor=ACTOR)
    # the data reads back in clear through the API
    assert app.timeline(contact.id, actor=ACTOR).interactions[0].body == PEOPLE[0]["text"]
    assert app.notes(contact.id, actor=ACTOR)[0].text == NOTE


def _assert_clean(blob: bytes, where: str) -> None:
    low = blob.lower()
    found = [n for n in NEEDLES if n.lower().encode() in low]
    assert not found, f"personal data in clear in {where}: {found}"


def _build(make_app: Callable[..., CareCRM], url: str | None) -> CareCRM:
    base = make_app(url=url)
    base.close()
    # the jsonleads connector is only registered in this app: a configured source's
    # connector must be installed when an app starts
    doc = {**base.settings.raw, "sources": {"jsonleads": {}}, "storage": {"url": base.settings.storage_url}}
    return CareCRM(settings_from_dict(doc), keys=base.keys, load_entrypoints=False, extra_plugins=[Plugin()])


def test_sqlite_file_and_wal_hold_no_personal_data(make_app: Callable[..., CareCRM], tmp_path: Path) -> None:
    app = _build(make_app, None)
    _scenario(app)
    files = [p for p in tmp_path.iterdir() if p.name.startswith("carecrm.db")]
    assert any(p.name.endswith("-wal") for p in files), "expected a WAL file while the database is open"
    for path in files:
        _assert_clean(path.read_bytes(), path.name)
    app.close()
    for path in tmp_path.iterdir():
        if path.name.startswith("carecrm.db"):
            _assert_clean(path.read_bytes(), path.name)


def _dump(url: str) -> Iterator[tuple[str, bytes]]:
    engine = sa.create_engine(url)
    meta = sa.MetaData()
    meta.reflect(engine)
    with engine.connect() as conn:
        for table in meta.sorted_tables:
            rows = conn.execute(sa.select(table)).all()
            yield (
                table.name,
                repr(rows).encode()
                + b"".join(
                    v
                    for r in rows
                    for v in r
                    if isinstance(v, (bytes, bytearray, memoryview)) and not isinstance(v, str)
                ),
            )
    engine.dispose()


def _server_url(kind: str) -> str:
    if kind == "postgresql":
        return os.environ.get("CARECRM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
    return os.environ.get("CARECRM_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test")


@pytest.fixture
def fresh_database(request: pytest.FixtureRequest) -> Iterator[str]:
    """A new, empty database on the server for this test, dropped afterwards."""
    kind = request.param
    admin_url = _server_url(kind)
    name = f"carecrm_privacy_{os.getpid()}"
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
            conn.execute(sa.text(f"CREATE DATABASE {name}"))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{kind} server not reachable: {type(exc).__name__}")
    url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    yield url
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
    admin.dispose()


@pytest.mark.parametrize(
    "fresh_database",
    [pytest.param("postgresql", marks=pytest.mark.postgres), pytest.param("mysql", marks=pytest.mark.mariadb)],
    indirect=True,
)
def test_server_tables_hold_no_personal_data(make_app: Callable[..., CareCRM], fresh_database: str) -> None:
    app = _build(make_app, fresh_database)
    _scenario(app)
    app.close()
    tables = dict(_dump(fresh_database))
    assert {"contacts", "identities", "interactions", "inbox", "notes", "consents"} <= set(tables)
    for name, blob in tables.items():
        _assert_clean(blob, f"table {name}")
