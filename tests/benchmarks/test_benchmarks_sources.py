"""Smoke test of ``benchmarks/sources.py``: at a tiny size it runs over the whole corpus,
every fresh copy is new (no duplicate, nothing quarantined), and it prints its figures
as numbers.  Nothing here asserts anything about speed (docs/performance.md has the
figures of a full run).  Skips, counted, without the corpus."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest

from carecrm.core.testing import resources

REPO = Path(__file__).resolve().parents[2]
CORPUS = resources.corpus_dir(REPO)
NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?(?:e[-+]?[0-9]+)?"
RUNS = rf"({NUMBER}) \[({NUMBER})-({NUMBER})\]"

pytestmark = [pytest.mark.slow, resources.needs_corpus(CORPUS)]


def _line(out: str, pattern: str) -> re.Match[str]:
    match = re.search(pattern, out, re.MULTILINE)
    assert match is not None, f"no line matching {pattern!r} in:\n{out}"
    return match


def test_sources_benchmark_prints_rates_and_connector_share(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    bench = importlib.import_module("benchmarks.sources")
    assert bench.main(["--n", "3", "--repeat", "1", "--corpus", str(CORPUS), "--keep", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    _line(out, r"^nproc: [0-9]+ ")
    data = _line(out, r"^data: ([0-9]+) corpus files of ([0-9]+) vendors, 3 fresh copies each")
    assert int(data.group(1)) >= 25 and int(data.group(2)) >= 15
    _line(out, r"^duplicates or quarantined among the fresh copies: 0$")
    for family in ("forms", "ad leads", "chat", "phone and SMS", "email", "all"):
        m = _line(
            out,
            rf"^{family}\s*: carecrm {RUNS} payloads/s \| connector only {RUNS} payloads/s"
            rf" \| connector share ({NUMBER}) %$",
        )
        assert all(float(g.replace(",", "")) > 0 for g in m.groups())
        assert 0 < float(m.group(7)) < 100
    for vendor in ("twilio", "sendgrid", "typeform", "amazon_ses", "mailchimp"):
        rows = _line(out, rf"^{vendor}\s*: .* rows/payload ({NUMBER})$")
        assert float(rows.group(1)) >= 1  # every copy added its events


def test_fresh_ids_make_every_copy_new_and_keep_the_rest(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(REPO))
    bench = importlib.import_module("benchmarks.sources")
    body = b"MessageSid=SM5ab7891328b440f04b7c83b459fc85fd&Body=STOP&From=%2B14135550111"
    one, two = bench.fresh("twilio", body, 1), bench.fresh("twilio", body, 2)
    assert one == b"MessageSid=SM5ab7891328b440f04b7c83b459000001&Body=STOP&From=%2B14135550001"
    assert two == b"MessageSid=SM5ab7891328b440f04b7c83b459000002&Body=STOP&From=%2B14135550002"
    person = bench.fresh("typeform", b'{"email": "laura@example.com", "p": "(555) 555-0142"}', 7)
    assert person == b'{"email": "c7-laura@example.com", "p": "(555) 555-0007"}'
    assert bench.fresh("hubspot", b'{"eventId":1,"objectId":123}', 7) == b'{"eventId":1000007,"objectId":123000007}'
    assert set(bench.FRESH_IDS) == {v for family in bench.FAMILIES.values() for v in family}
