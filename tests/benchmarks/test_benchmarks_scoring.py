"""Smoke test of ``benchmarks/scoring.py``: it runs at a tiny size and prints its figures,
ratios and target line.  Nothing here asserts anything about speed (docs/performance.md)."""

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


def _number(text: str) -> float:
    return float(text.replace(",", ""))


def test_scoring_benchmark_prints_rates_ratios_and_target(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    scoring = importlib.import_module("benchmarks.scoring")
    assert scoring.main(["--n", "40", "--repeat", "2", "--batch-size", "15"]) == 0
    out = capsys.readouterr().out
    _line(out, r"^nproc: [0-9]+ ")
    for mode in ("on ", "off"):
        m = _line(out, rf"^ingest, live scoring {mode}\s*: {RUNS} leads/s wall, {RUNS} CPU$")
        assert all(_number(g) > 0 for g in m.groups())
    ratios = _line(out, rf"^ratio on/off, wall: {RUNS}; CPU: {RUNS} \(per run pair\)$")
    assert all(_number(g) > 0 for g in ratios.groups())
    _line(out, r"^target: live scoring slows ingest by <= 25% \(CPU ratio >= 0.75\): (MET|NOT MET)$")
    rescored = _line(out, rf"^rescore_all\s*: {RUNS} contacts/s \(([0-9]+) contacts\)$")
    assert 30 < int(rescored.group(4)) <= 40  # repeat people share a contact
    _line(out, rf"^model alone\s*: {RUNS} contacts/s$")
    assert _number(_line(out, rf"^ratio rescore_all/model alone: ({NUMBER})$").group(1)) > 0
    assert "@example.com" not in out
