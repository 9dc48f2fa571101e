"""Shared fixtures: an isolated app on a temporary SQLite database.

Entry points are never loaded (``load_entrypoints=False``) and ``CARECRM_*`` variables
are removed, so a developer's environment cannot leak into the tests.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from carecrm.core import CareCRM, settings_from_dict
from carecrm.core.privacy.crypto import KeyRing
from carecrm.core.testing.resources import corpus_dir, skip_without_corpus

REPO = Path(__file__).resolve().parents[1]
CORPUS = corpus_dir(REPO)

BASE_CONFIG: dict[str, Any] = {
    "practice": {
        "name": "Lakeside Dermatology",
        "service_lines": ["acne", "botox", "mohs"],
        "locations": [
            {
                "name": "downtown",
                "timezone": "America/Chicago",
                "region": "US",
                "phones": ["+13125550100"],
                "business_hours": {d: ["08:00", "17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
            }
        ],
    },
    "keys": {"file": "carecrm.keys"},
}


@pytest.fixture(autouse=True)
def _isolate_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("CARECRM_") and not name.startswith("CARECRM_TEST_"):
            monkeypatch.delenv(name, raising=False)


@pytest.fixture
def corpus() -> Path:
    """The vendor corpus folder (``$CARECRM_TEST_CORPUS`` or ``../shared/corpus`` beside
    the clone); skips, with the reason the run's summary counts, when it is absent."""
    skip_without_corpus(CORPUS)
    return CORPUS


@pytest.fixture
def make_app(tmp_path: Path) -> Iterator[Callable[..., CareCRM]]:
    """Build apps on a fresh SQLite file: ``make_app(sources={...}, url=None, **sections)``.

    Who acts is not part of the app: tests pass their ``Actor`` to every facade call.
    """
    apps: list[CareCRM] = []

    def factory(url: str | None = None, **sections: Any) -> CareCRM:
        doc = {**BASE_CONFIG, **sections}
        doc["storage"] = {"url": url or f"sqlite:///{tmp_path / 'carecrm.db'}"}
        keyfile = tmp_path / "carecrm.keys"
        if not keyfile.exists():
            KeyRing.generate().write_file(keyfile)
        settings = settings_from_dict(doc, base_dir=tmp_path)
        app = CareCRM(settings, load_entrypoints=False)
        app.create_schema()
        apps.append(app)
        return app

    yield factory
    for app in apps:
        app.close()


@pytest.fixture
def postgres_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test, dropped afterwards.

    The server is ``CARECRM_TEST_POSTGRES_URL`` (default the local test server); an
    unreachable server fails under ``CI`` and skips otherwise.
    """
    yield from _fresh_database(
        request,
        os.environ.get("CARECRM_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"),
        server="PostgreSQL",
        create="",
        drop=" WITH (FORCE)",
    )


@pytest.fixture
def mariadb_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh, empty MariaDB database for one test, dropped afterwards.

    The server is ``CARECRM_TEST_MARIADB_URL`` (default the local test server, root with
    no password); an unreachable server fails under ``CI`` and skips otherwise.
    """
    yield from _fresh_database(
        request,
        os.environ.get("CARECRM_TEST_MARIADB_URL", "mysql+pymysql://root@127.0.0.1:3306/test"),
        server="MariaDB",
        create=" CHARACTER SET utf8mb4 COLLATE utf8mb4_bin",
        drop="",
    )


def _fresh_database(
    request: pytest.FixtureRequest, admin_url: str, *, server: str, create: str, drop: str
) -> Iterator[str]:
    """Create a database named after the test on the server of ``admin_url``, yield its
    URL, drop it afterwards (``create`` and ``drop`` are the dialect's clause suffixes).
    An unreachable server fails under ``CI`` and skips otherwise."""
    name = f"carecrm_{request.node.name.lower()[:30]}_{os.getpid()}"
    name = "".join(c if c.isalnum() or c == "_" else "_" for c in name)[:63]
    try:
        admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}"))
            conn.execute(sa.text(f"CREATE DATABASE {name}{create}"))
    except sa.exc.OperationalError as exc:
        if os.environ.get("CI"):
            raise
        pytest.skip(f"{server} not reachable: {type(exc).__name__}")
    yield sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as conn:
        conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name}{drop}"))
    admin.dispose()
