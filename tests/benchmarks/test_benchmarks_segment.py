"""Smoke test of ``benchmarks/segment.py``: ``main(argv)`` runs at a tiny size and prints
its figures, the ratios, the target line and the indexes of its query plan.  Nothing is
asserted about speed (docs/performance.md)."""

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


def test_segment_benchmark_prints_latencies_ratios_plan_and_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    segment = importlib.import_module("benchmarks.segment")
    argv = ["--contacts", "300", "--interactions", "6000", "--executions", "3", "--repeat", "1"]
    assert segment.main([*argv, "--db", str(tmp_path / "db")]) == 0
    out = capsys.readouterr().out
    _line(out, r"^nproc: [0-9]+ ")
    _line(out, r"^load: 300 contacts ")
    candidates = int(_line(out, r"; ([0-9]+) candidates;").group(1))
    matched = int(_line(out, r"^matching contacts: ([0-9]+) \(both sides").group(1))
    assert 0 < matched <= candidates < 300
    for label in ("carecrm count", "hand-written count", "carecrm ids", "hand-written ids"):
        m = _line(out, rf"^{label}\s*: p50 {RUNS} ms$")
        assert all(float(g.replace(",", "")) > 0 for g in m.groups())
    for what in ("count", "ids"):
        assert float(_line(out, rf"^ratio {what} carecrm/hand-written: ({NUMBER}) ").group(1)) > 0
    _line(out, r"^target: carecrm <= 1.5x hand-written \(count and ids\): (MET|NOT MET)$")
    _line(out, r"^plan uses: ix_contacts_segment, ix_interactions_contact_time$")
    assert "@example.com" not in out

    # a second run reuses the database instead of loading it again
    assert segment.main([*argv, "--db", str(tmp_path / "db"), "--reuse"]) == 0
    assert "load: reused the database" in capsys.readouterr().out
