"""Smoke tests of the benchmarks (``benchmarks/ingest.py``, ``benchmarks/timeline.py``).

Each benchmark's ``main(argv)`` runs at a tiny size and must print its figures as
numbers, its ratios and its target line.  Nothing here asserts anything about speed:
timings are only meaningful from a full run on a quiet machine (docs/performance.md).
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path
from types import ModuleType

import pytest

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"
RUNS = rf"({NUMBER}) \[({NUMBER})-({NUMBER})\]"

pytestmark = pytest.mark.slow


def _benchmark(name: str, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.syspath_prepend(str(REPO))
    return importlib.import_module(f"benchmarks.{name}")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def _line(out: str, pattern: str) -> re.Match[str]:
    match = re.search(pattern, out, re.MULTILINE)
    assert match is not None, f"no line matching {pattern!r} in:\n{out}"
    return match


def _environment_printed(out: str) -> None:
    _line(out, r"^nproc: [0-9]+ ")
    versions = _line(out, r"^versions: (.*)$").group(1)
    for name in ("Python", "SQLite", "SQLAlchemy", "cryptography", "phonenumbers", "email-validator"):
        assert f"{name} " in versions


def test_ingest_benchmark_prints_rates_ratios_and_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ingest = _benchmark("ingest", monkeypatch)
    assert ingest.main(["--n", "50", "--repeat", "1", "--batch-size", "20", "--keep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    _environment_printed(out)
    for label in ("carecrm", "hand-written", "raw sqlite3"):
        m = _line(out, rf"^{label}\s*: {RUNS} leads/s$")
        assert all(_number(g) > 0 for g in m.groups())
    assert _number(_line(out, rf"^ratio carecrm/hand-written: ({NUMBER}) ").group(1)) > 0
    assert _number(_line(out, rf"^ratio carecrm/raw: ({NUMBER}) ").group(1)) > 0
    _line(out, r"^target: carecrm >= 50% of hand-written: (MET|NOT MET)$")
    report = _line(out, r"contacts created ([0-9]+), interactions added ([0-9]+), quarantined ([0-9]+)")
    assert int(report.group(2)) == 50 and int(report.group(3)) == 0
    assert "@example.com" not in out  # the synthetic people are never printed


def test_ingest_data_is_deterministic_and_has_repeat_people(monkeypatch: pytest.MonkeyPatch) -> None:
    ingest = _benchmark("ingest", monkeypatch)
    bodies, people = ingest.make_leads(400, seed=7)
    again, _ = ingest.make_leads(400, seed=7)
    assert bodies == again
    assert 0.8 * 400 < people < 0.97 * 400


def test_timeline_benchmark_prints_latencies_ratio_and_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    timeline = _benchmark("timeline", monkeypatch)
    argv = ["--contacts", "200", "--interactions", "2000", "--lookups", "50", "--warmup", "5", "--repeat", "1"]
    assert timeline.main([*argv, "--db", str(tmp_path / "db")]) == 0
    out = capsys.readouterr().out
    _environment_printed(out)
    _line(out, r"^load: 200 contacts ")
    for label in ("carecrm", "hand-written"):
        m = _line(out, rf"^{label}\s*: p50 {RUNS} us, p99 {RUNS} us$")
        assert all(_number(g) > 0 for g in m.groups())
    assert _number(_line(out, rf"^ratio p99 carecrm/hand-written: ({NUMBER}) ").group(1)) > 0
    _line(out, r"^target: carecrm p99 <= 2x hand-written: (MET|NOT MET)$")
    per_read = _line(out, rf"^rows per timeline: ({NUMBER}); per carecrm read: ({NUMBER}) audit entries written")
    assert _number(per_read.group(1)) > 0 and _number(per_read.group(2)) >= 1

    # a second run reuses the database instead of loading it again
    assert timeline.main([*argv, "--db", str(tmp_path / "db"), "--reuse"]) == 0
    assert "load: reused the database" in capsys.readouterr().out


def test_concurrent_ingest_benchmark_prints_rates_and_ratios(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], postgres_url: str
) -> None:
    """benchmarks/concurrent_ingest.py at a tiny size: a line per process count with the
    combined rate and its ratio to one process (it checks itself that no lead was lost)."""
    bench = _benchmark("concurrent_ingest", monkeypatch)
    assert bench.main(["--leads", "40", "--repeat", "1", "--procs", "1,2", "--url", postgres_url]) == 0
    out = capsys.readouterr().out
    for procs in (1, 2):
        m = _line(out, rf"^processes {procs}: {RUNS} leads/s combined, ratio to 1 process ({NUMBER})$")
        assert all(_number(g) > 0 for g in m.groups())
    assert "@example.com" not in out


def test_cli_startup_benchmark_prints_every_row_its_ratio_and_the_targets(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """benchmarks/cli_startup.py with one timed run per command: a row per command with
    seconds and the ratio to ``python -c pass``, and the 0.3 s target lines."""
    bench = _benchmark("cli_startup", monkeypatch)
    monkeypatch.setenv("CARECRM_LOAD_PLUGINS", "")
    assert bench.main(["--repeat", "1", "--keep", str(tmp_path / "practice")]) == 0
    out = capsys.readouterr().out
    _environment_printed(out)
    for label in (
        "python -c pass",
        "import carecrm.cli.main",
        "carecrm --help",
        "carecrm contacts --help",
        "carecrm contacts find --help",
        "carecrm contacts find --phone",
        "carecrm timeline PHONE",
    ):
        m = _line(out, rf"^{re.escape(label)}\s*: {RUNS} s  ratio to python -c pass: ({NUMBER})$")
        assert all(_number(g) > 0 for g in m.groups())
    for label in ("carecrm --help", "carecrm contacts --help", "carecrm contacts find --help"):
        _line(out, rf"^target: {re.escape(label)} < 0.3 s: (MET|NOT MET) \(median {NUMBER} s\)$")
    assert "@example.com" not in out  # nothing personal, even synthetic, is printed
    assert (tmp_path / "practice" / "carecrm.toml").is_file()
