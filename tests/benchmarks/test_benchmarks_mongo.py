"""Smoke tests of the benchmarks on the Mongo backend (``--storage mongomock://NAME``).

Each benchmark runs at a tiny size on mongomock and must print the fake's notice and its
rates, latencies and ratios as numbers.  Nothing is asserted about speed: mongomock is an
in-process fake, its figures say nothing about MongoDB (docs/performance.md).
"""

from __future__ import annotations

import importlib
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"
RUNS = rf"({NUMBER}) \[({NUMBER})-({NUMBER})\]"
NOTICE = (
    "NOTE: mongomock is an in-process fake, not a MongoDB server: these figures say nothing about "
    "MongoDB performance (set a mongodb:// URL to measure a real server)"
)

pytestmark = pytest.mark.slow


@pytest.fixture
def mock_url() -> Iterator[str]:
    from carecrm.storage_backends.mongo.backend import forget_mock

    name = f"bench-{uuid.uuid4().hex[:8]}"
    yield f"mongomock://{name}"
    forget_mock(name)


def _benchmark(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module(f"benchmarks.{name}")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _line(out: str, pattern: str) -> re.Match[str]:
    match = re.search(pattern, out, re.MULTILINE)
    assert match is not None, f"no line matching {pattern!r} in:\n{out}"
    return match


def _fake_noted(out: str, url: str) -> None:
    assert NOTICE in out
    _line(out, rf"^storage: {re.escape(url)} \(mongomock, in-process fake\)")


def test_ingest_on_mongomock(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, mock_url: str
) -> None:
    ingest = _benchmark("ingest", monkeypatch)
    argv = ["--n", "60", "--repeat", "1", "--batch-size", "25", "--keep", str(tmp_path), "--storage", mock_url]
    assert ingest.main(argv) == 0
    out = capsys.readouterr().out
    _fake_noted(out, mock_url)
    for label in ("carecrm", "hand-written", "raw pymongo"):
        m = _line(out, rf"^{label}\s*: {RUNS} leads/s$")
        assert all(_number(g) > 0 for g in m.groups())
    assert _number(_line(out, rf"^ratio carecrm/hand-written: ({NUMBER}) ").group(1)) > 0
    assert _number(_line(out, rf"^ratio carecrm/raw: ({NUMBER}) ").group(1)) > 0
    _line(out, r"^target: carecrm >= 50% of hand-written: (MET|NOT MET)$")
    carecrm = _line(out, r"^rows written \(last run\), carecrm     : (.*)$").group(1)
    hand = _line(out, r"^rows written \(last run\), hand-written: (.*)$").group(1)
    assert carecrm == hand and "interactions 60" in carecrm
    assert "SQL statements" not in out
    assert "@example.com" not in out


def test_timeline_on_mongomock(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, mock_url: str
) -> None:
    timeline = _benchmark("timeline", monkeypatch)
    argv = ["--contacts", "40", "--interactions", "300", "--lookups", "20", "--warmup", "2", "--repeat", "1"]
    assert timeline.main([*argv, "--db", str(tmp_path / "db"), "--storage", mock_url]) == 0
    out = capsys.readouterr().out
    _fake_noted(out, mock_url)
    _line(out, r"^load: 40 contacts ")
    for label in ("carecrm", "hand-written"):
        m = _line(out, rf"^{label}\s*: p50 {RUNS} us, p99 {RUNS} us$")
        assert all(_number(g) > 0 for g in m.groups())
    assert _number(_line(out, rf"^ratio p50 carecrm/hand-written: ({NUMBER})$").group(1)) > 0
    assert _number(_line(out, rf"^ratio p99 carecrm/hand-written: ({NUMBER}) ").group(1)) > 0
    per_read = _line(out, rf"^rows per timeline: ({NUMBER}); per carecrm read: ({NUMBER}) audit entries written")
    assert _number(per_read.group(1)) > 0 and _number(per_read.group(2)) >= 1
    assert (tmp_path / "db" / "carecrm.db").exists() is False  # nothing went to SQLite


def test_segment_on_mongomock(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path, mock_url: str
) -> None:
    segment = _benchmark("segment", monkeypatch)
    argv = ["--contacts", "150", "--interactions", "1200", "--executions", "2", "--repeat", "1"]
    assert segment.main([*argv, "--db", str(tmp_path / "db"), "--storage", mock_url]) == 0
    out = capsys.readouterr().out
    _fake_noted(out, mock_url)
    candidates = int(_line(out, r"; ([0-9]+) candidates;").group(1))
    matched = int(_line(out, r"^matching contacts: ([0-9]+) \(both sides").group(1))
    assert 0 <= matched <= candidates < 150
    for label in ("carecrm count", "hand-written count", "carecrm ids", "hand-written ids"):
        m = _line(out, rf"^{label}\s*: p50 {RUNS} ms$")
        assert all(_number(g) > 0 for g in m.groups())
    for what in ("count", "ids"):
        assert _number(_line(out, rf"^ratio {what} carecrm/hand-written: ({NUMBER}) ").group(1)) > 0
    _line(out, r"^target: carecrm <= 1.5x hand-written \(count and ids\): (MET|NOT MET)$")
    assert "SQLite plan" not in out


@pytest.mark.parametrize(
    ("name", "argv", "message"),
    [
        ("ingest", ["--n", "5000"], "--n 5000 > 2000"),
        ("timeline", ["--contacts", "50000"], "--contacts 50000 > 2000"),
        ("segment", ["--interactions", "1000000"], "--interactions 1000000 > 10000"),
        ("timeline", ["--reuse"], "lives only as long as its process"),
    ],
)
def test_mongomock_sizes_are_capped(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], name: str, argv: list[str], message: str
) -> None:
    bench = _benchmark(name, monkeypatch)
    with pytest.raises(SystemExit):
        bench.main([*argv, "--storage", "mongomock://capped"])
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://localhost/x", "expected mongodb://"),
        ("mongodb://localhost:27017/carecrm", "must name a database whose name contains 'bench'"),
    ],
)
def test_storage_url_is_checked(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], url: str, message: str
) -> None:
    timeline = _benchmark("timeline", monkeypatch)
    with pytest.raises(SystemExit):
        timeline.main(["--storage", url])
    assert message in capsys.readouterr().err
