"""Helpers shared by the benchmarks: environment report, run statistics, app set-up.

Rules every benchmark here follows (docs/performance.md):

* every figure is printed beside a baseline measured in the same process and run, as a
  ratio, never as an absolute pass/fail;
* each measurement is repeated ``--repeat K`` times and reported as the median and the
  min–max of the K runs (the machines are shared and noisy);
* nothing personal is printed: the data is synthetic and is not printed either.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import platform
import sqlite3
import statistics
import subprocess
import urllib.parse
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

#: Distributions whose versions every benchmark prints.
PACKAGES: tuple[str, ...] = ("SQLAlchemy", "cryptography", "phonenumbers", "email-validator", "jmespath")

#: The practice every benchmark app uses (same shape as tests/conftest.py).
PRACTICE: dict[str, Any] = {
    "name": "Lakeside Dermatology",
    "service_lines": ["acne", "botox", "mohs", "laser", "eczema", "psoriasis"],
    "locations": [
        {
            "name": "downtown",
            "timezone": "America/Chicago",
            "region": "US",
            "phones": ["+13125550100"],
            "business_hours": {d: ["08:00", "17:00"] for d in ("mon", "tue", "wed", "thu", "fri")},
        }
    ],
}


def nproc() -> int:
    """CPUs this process may run on (what ``nproc`` prints)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def cpu_model() -> str:
    """The CPU model name from /proc/cpuinfo ("unknown" elsewhere)."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def ram_gib() -> float | None:
    """Total RAM in GiB from /proc/meminfo (None elsewhere)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) / 1024 / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def versions() -> dict[str, str]:
    """Python, SQLite and the libraries carecrm's hot paths use."""
    out = {"Python": platform.python_version(), "SQLite": sqlite3.sqlite_version}
    for name in PACKAGES:
        try:
            out[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            out[name] = "not installed"
    try:
        from cryptography.hazmat.backends.openssl.backend import backend

        out["OpenSSL"] = backend.openssl_version_text()
    except Exception:  # pragma: no cover - informative only
        pass
    return out


def source_state() -> str:
    """The repository commit the benchmark runs on, and whether carecrm's own code
    (core, plugins, storage backends) has uncommitted changes."""
    import carecrm.core

    repo = Path(carecrm.core.__file__).resolve().parents[1]
    try:
        head = subprocess.run(
            ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(repo), "status", "--porcelain", "--", "core", "plugins", "storage_backends"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.splitlines()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"commit {head}" + (
        f" + {len(dirty)} uncommitted/untracked file(s) in core, plugins, storage_backends" if dirty else ""
    )


def print_environment(title: str, script: str, argv: Sequence[str]) -> None:
    """Print the benchmark's title, command line (``script`` and its arguments), machine
    and versions."""
    ram = ram_gib()
    print(f"== {title}")
    print(f"command: python {script} {' '.join(argv)}".rstrip())
    print(f"nproc: {nproc()}  cpu: {cpu_model()}  ram: {f'{ram:.1f} GiB' if ram else 'unknown'}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    import carecrm.core

    print(f"carecrm source: {source_state()}; imported from {Path(carecrm.core.__file__).resolve().parents[1]}")


def add_repeat(parser: argparse.ArgumentParser) -> None:
    """The ``--repeat K`` option every benchmark takes."""
    parser.add_argument(
        "--repeat", type=int, default=3, metavar="K", help="runs per measurement; the median is reported (default 3)"
    )


def summary(values: Sequence[float]) -> tuple[float, float, float]:
    """``(median, min, max)`` of the runs."""
    return statistics.median(values), min(values), max(values)


def fmt(value: float, digits: int = 3) -> str:
    """A number with ``digits`` significant digits, thousands separated (1,234 / 56.7 / 0.123)."""
    if value == 0:
        return "0"
    if abs(value) >= 10 ** (digits - 1):
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def fmt_runs(values: Sequence[float], digits: int = 3) -> str:
    """``median [min–max]`` of the runs."""
    med, lo, hi = summary(values)
    return f"{fmt(med, digits)} [{fmt(lo, digits)}-{fmt(hi, digits)}]"


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q`` quantile (0..1) of already sorted values, nearest-rank method."""
    if not sorted_values:
        raise ValueError("no values")
    rank = max(1, min(len(sorted_values), int(round(q * len(sorted_values) + 0.5))))
    return sorted_values[rank - 1]


def actor() -> Any:
    """The benchmarks' acting user (``benchmark:admin``), passed to every facade call."""
    from carecrm.core.model.domain import Actor

    return Actor.parse("benchmark:admin")


def build_app(
    folder: Path,
    *,
    sources: dict[str, Any] | None = None,
    ingest: dict[str, Any] | None = None,
    create: bool = True,
    storage: str | None = None,
) -> Any:
    """A :class:`~carecrm.core.CareCRM` on ``folder/carecrm.db`` with keys in ``folder/carecrm.keys``,
    built the way ``tests/conftest.py`` does (no entry points); facade calls pass
    :func:`actor` (an admin).

    :param create: create the schema (a brand-new database); False opens an existing one.
    :param storage: a MongoDB URL (``mongodb://...`` or ``mongomock://NAME``) to store on
        instead of ``folder/carecrm.db`` (the keys stay in ``folder``).
    """
    from carecrm.core import CareCRM, settings_from_dict
    from carecrm.core.privacy.crypto import KeyRing

    folder.mkdir(parents=True, exist_ok=True)
    doc: dict[str, Any] = {
        "practice": PRACTICE,
        "keys": {"file": "carecrm.keys"},
        "storage": {"url": storage if is_mongo(storage) else f"sqlite:///{folder / 'carecrm.db'}"},
    }
    if sources:
        doc["sources"] = sources
    if ingest:
        doc["ingest"] = ingest
    keyfile = folder / "carecrm.keys"
    if not keyfile.exists():
        KeyRing.generate().write_file(keyfile)
    settings = settings_from_dict(doc, base_dir=folder)
    app = CareCRM(settings, load_entrypoints=False)
    if create:
        app.create_schema()
    return app


def sqlite_schema(db_path: Path) -> list[str]:
    """The CREATE TABLE / CREATE INDEX statements of a SQLite database (tables first)."""
    con = sqlite3.connect(db_path)
    try:
        rows = con.execute(
            "SELECT type, sql FROM sqlite_master WHERE sql IS NOT NULL AND name NOT LIKE 'sqlite_%' "
            "ORDER BY CASE type WHEN 'table' THEN 0 ELSE 1 END, rowid"
        ).fetchall()
    finally:
        con.close()
    return [sql for _type, sql in rows]


def table_counts(db_path: Path, tables: Sequence[str]) -> dict[str, int]:
    """Rows per table of a SQLite database."""
    con = sqlite3.connect(db_path)
    try:
        return {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}
    finally:
        con.close()


def open_sqlite(path: Path) -> sqlite3.Connection:
    """A stdlib connection with carecrm's SQLite settings: WAL, synchronous=NORMAL,
    autocommit mode (explicit BEGIN/COMMIT)."""
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=NORMAL")
    return con


# --------------------------------------------------------------------------- storage (--storage URL)

#: What a benchmark prints when it runs on mongomock (issue #4).
MONGOMOCK_NOTE = (
    "NOTE: mongomock is an in-process fake, not a MongoDB server: these figures say nothing about "
    "MongoDB performance (set a mongodb:// URL to measure a real server)"
)

_MONGO_SCHEMES = ("mongodb://", "mongodb+srv://", "mongomock://")


def add_storage(parser: argparse.ArgumentParser) -> None:
    """The ``--storage URL`` option (default: a SQLite file, as before)."""
    parser.add_argument(
        "--storage",
        default=None,
        metavar="URL",
        help="run carecrm and the hand-written side on MongoDB: mongodb://HOST/DBNAME (a real server; "
        "the database name must contain 'bench': the benchmark drops it) or mongomock://NAME (the "
        "in-process fake, tiny sizes only); default: SQLite files",
    )


def is_mongo(url: str | None) -> bool:
    """Whether ``url`` is a MongoDB URL (a real server or mongomock)."""
    return bool(url) and str(url).startswith(_MONGO_SCHEMES)


def is_mongomock(url: str | None) -> bool:
    """Whether ``url`` is a ``mongomock://`` URL (the in-process fake)."""
    return bool(url) and str(url).startswith("mongomock://")


def check_storage(parser: argparse.ArgumentParser, url: str | None) -> None:
    """Refuse a ``--storage`` value that is not a MongoDB URL, and a real-server URL whose
    database name lacks ``bench`` (the benchmarks drop and refill their databases)."""
    if url is None:
        return
    if not is_mongo(url):
        parser.error("--storage: expected mongodb://..., mongodb+srv://... or mongomock://NAME (default: SQLite)")
    if not is_mongomock(url) and "bench" not in mongo_database_name(url):
        parser.error(
            "--storage: the benchmark drops and refills its MongoDB databases, so the URL must name a database "
            "whose name contains 'bench' (e.g. mongodb://localhost:27017/carecrm_bench)"
        )


def mongo_database_name(url: str) -> str:
    """The database a MongoDB URL names (``carecrm`` when none; mongomock: ``carecrm``)."""
    if is_mongomock(url):
        return "carecrm"
    path = urllib.parse.urlsplit(url).path.lstrip("/")
    return urllib.parse.unquote(path) if path else "carecrm"


def mongo_client(url: str) -> Any:
    """A client on the server of ``url``, configured like carecrm's (UTC-aware dates,
    standard UUIDs).  For ``mongomock://NAME`` it is the process's fake that carecrm's
    backend uses for the same URL, so both sides see the same data."""
    if is_mongomock(url):
        from carecrm.storage_backends.mongo.backend import mock_client

        return mock_client(url.split("://", 1)[1] or "default")
    import pymongo

    return pymongo.MongoClient(url, tz_aware=True, tzinfo=UTC, uuidRepresentation="standard", appname="carecrm-bench")


def create_mongo_schema(url: str, database: str) -> None:
    """carecrm's collections and indexes in ``database`` on the server of ``url`` (what the
    hand-written side runs on, as the SQLite side runs on carecrm's DDL)."""
    from carecrm.storage_backends.mongo.backend import MongoBackend

    backend = MongoBackend(url, database=database)
    try:
        backend.create_schema()
    finally:
        backend.close()


def print_storage(url: str | None) -> None:
    """Print where the benchmark stores (and the mongomock notice when on the fake)."""
    if not is_mongo(url):
        print("storage: SQLite files (stdlib sqlite3 for the hand-written side)")
        return
    assert url is not None
    from carecrm.storage_backends.mongo.backend import _mask

    extra = []
    for name in ("pymongo", "mongomock"):
        try:
            extra.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    if is_mongomock(url):
        print(f"storage: {url} (mongomock, in-process fake); {', '.join(extra)}")
        print(MONGOMOCK_NOTE)
    else:
        server = mongo_client(url).server_info().get("version", "unknown")
        print(
            f"storage: MongoDB {server} at {_mask(url)}, database {mongo_database_name(url)} "
            f"(pymongo for the hand-written side); {', '.join(extra)}"
        )


def mongomock_limit(parser: argparse.ArgumentParser, url: str | None, **sizes: tuple[int, int]) -> None:
    """On mongomock, refuse sizes above their caps (``name=(value, cap)``): the fake scans
    in Python (measured: ~60 ms per lookup on 50k documents)."""
    if not is_mongomock(url):
        return
    over = [f"--{k.replace('_', '-')} {v} > {cap}" for k, (v, cap) in sizes.items() if v > cap]
    if over:
        parser.error(
            "on mongomock:// sizes are capped (the fake scans every document in Python, and its figures "
            f"measure nothing about MongoDB): {', '.join(over)}; use a mongodb:// URL for real sizes"
        )
