"""Smoke test of ``benchmarks/attribution.py``: at a tiny size it runs, checks its own
answers (credits sum to the conversions, hand-written first touch = carecrm's) and prints
its figures as numbers.  Nothing here asserts anything about speed."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"
RUNS = rf"({NUMBER}) \[({NUMBER})-({NUMBER})\]"

pytestmark = pytest.mark.slow


def _line(out: str, pattern: str) -> re.Match[str]:
    match = re.search(pattern, out, re.MULTILINE)
    assert match is not None, f"no line matching {pattern!r} in:\n{out}"
    return match


def test_attribution_benchmark_prints_rates_and_ratios(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    bench = importlib.import_module("benchmarks.attribution")
    assert bench.main(["--journeys", "60", "--repeat", "1", "--db", str(tmp_path / "db")]) == 0
    out = capsys.readouterr().out
    _line(out, r"^nproc: [0-9]+ ")
    _line(out, r"^load: 60 contacts, [0-9]+ interactions, 120 stage changes ")
    journeys = _line(out, r"^journeys: 60 conversions at booked_patient, ([0-9]+) with touches")
    assert int(journeys.group(1)) > 50
    for label in ("carecrm first_touch", "carecrm last_touch", "carecrm last_non_direct", "carecrm linear"):
        m = _line(out, rf"^{label}\s*: {RUNS} journeys/s$")
        assert all(float(g.replace(",", "")) > 0 for g in m.groups())
    _line(out, rf"^raw read\s*: {RUNS} journeys/s$")
    _line(out, rf"^hand-written first\s*: {RUNS} journeys/s$")
    _line(out, rf"^ratio linear time/raw read: ({NUMBER}); /hand-written first touch: ({NUMBER})$")
    _line(out, rf"^peak Python memory of one attribute\(\) call \(tracemalloc, untimed\): ({NUMBER}) MiB$")
    assert "@example.com" not in out and "Bench" not in out

    # a second run reuses the database instead of loading it again
    assert bench.main(["--journeys", "60", "--repeat", "1", "--db", str(tmp_path / "db"), "--reuse"]) == 0
    assert "load: reused the database" in capsys.readouterr().out
