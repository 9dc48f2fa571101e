"""carecrm's pytest plugin (entry point ``pytest11: carecrm``), loaded by every pytest run
where carecrm is installed.

It rewrites the asserts of :mod:`carecrm.core.testing.storage` (so a failing conformance
test shows its values), offers one fixture:

* ``carecrm_sqlite_backend`` — a fresh SQLite-file backend with the carecrm schema, in the
  test's ``tmp_path``, closed afterwards.  The schema is built once per session and copied,
  so the fixture costs a file copy per test;

and ends the terminal summary with one ``carecrm:`` line per missing test resource (the
vendor corpus, a database server) that made tests skip, with the count and what to set
(:func:`carecrm.core.testing.resources.skip_summary`).

Importing this module imports neither SQLAlchemy nor any driver.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from carecrm.core.testing.resources import skip_summary

pytest.register_assert_rewrite("carecrm.core.testing.storage")

if TYPE_CHECKING:
    from carecrm.core.storage.contract import StorageBackend


def sqlite_url(path: Path) -> str:
    """The storage URL of a SQLite file."""
    return f"sqlite:///{path}"


@pytest.fixture(scope="session")
def carecrm_sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A SQLite file holding an empty carecrm schema, built once per test session."""
    from carecrm.storage_backends.sql import open_backend

    path = tmp_path_factory.mktemp("carecrm-template") / "template.db"
    backend = open_backend(sqlite_url(path), {})
    try:
        backend.create_schema()
    finally:
        backend.close()  # checkpoints the WAL into the main file
    return path


@pytest.fixture
def carecrm_sqlite_backend(tmp_path: Path, carecrm_sqlite_template: Path) -> Iterator[StorageBackend]:
    """A fresh, empty, schema-created SQLite backend (file ``tmp_path / "carecrm.db"``)."""
    from carecrm.storage_backends.sql import open_backend

    path = tmp_path / "carecrm.db"
    shutil.copyfile(carecrm_sqlite_template, path)
    backend = open_backend(sqlite_url(path), {})
    try:
        yield backend
    finally:
        backend.close()


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    """The reason of a skipped test's report (``Skipped: `` removed)."""
    longrepr = report.longrepr
    text = str(longrepr[2]) if isinstance(longrepr, tuple) and len(longrepr) == 3 else str(longrepr)
    return text.removeprefix("Skipped: ")


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Say how many tests skipped for want of each test resource, and what to set."""
    reports = terminalreporter.stats.get("skipped", [])
    skipped = [r for r in reports if isinstance(r, pytest.TestReport | pytest.CollectReport)]
    for line in skip_summary(_skip_reason(r) for r in skipped):
        terminalreporter.write_line(f"carecrm: {line}", yellow=True)
