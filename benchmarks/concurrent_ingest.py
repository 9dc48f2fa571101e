"""Combined ingest rate of 1, 2 and 4 ``carecrm ingest`` processes on one PostgreSQL practice.

Issue 7: concurrent writers must lose nothing (tests/use_cases/test_concurrent_ingest.py checks the
counts); this benchmark says what the locks cost and what parallel processes gain.  Each
run makes a fresh practice database on the server (``--url``, default the local test
server; the database is created and dropped), writes ``--leads`` synthetic Typeform
``form_response`` payloads (distinct people) split evenly over P folders, starts P
processes at once and times until the last one exits.  Printed per P: the median and
min–max of ``--repeat`` runs of the combined leads/s, and the ratio to the 1-process rate
of the same run (the baseline).  Process start-up (about 0.3–0.5 s of imports) is inside
the time, as an operator would see it.  Nothing personal is printed (the data is made up).

Usage: ``python -m benchmarks.concurrent_ingest [--leads 4000] [--repeat 3] [--url URL]``
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

DEFAULT_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def payload(token: str, person: int) -> bytes:
    """A Typeform ``form_response`` body for a made-up person."""
    return json.dumps(
        {
            "event_id": f"ev-{token}",
            "event_type": "form_response",
            "form_response": {
                "form_id": "bench",
                "token": token,
                "submitted_at": "2026-11-02T16:00:00Z",
                "definition": {"id": "bench", "title": "Book a consult"},
                "hidden": {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "bench"},
                "answers": [
                    {"type": "text", "text": f"Pat{person}", "field": {"id": "JwWggjAKtOkA", "type": "short_text"}},
                    {"type": "email", "email": f"pat{person}@example.com", "field": {"id": "e", "type": "email"}},
                ],
            },
        }
    ).encode()


def one_run(admin_url: str, leads: int, procs: int, work: Path) -> float:
    """Combined leads/s of ``procs`` processes ingesting ``leads`` payloads into a new practice."""
    from click.testing import CliRunner

    from carecrm.cli.main import cli

    name = f"carecrm_bench_conc_{os.getpid()}_{procs}_{time.time_ns() % 10**9}"
    admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(sa.text(f"CREATE DATABASE {name}"))
    try:
        url = sa.engine.make_url(admin_url).set(database=name).render_as_string(hide_password=False)
        folder = work / name
        result = CliRunner().invoke(
            cli, ["init", "--dir", str(folder), "--storage", url, "--source-example", "typeform"]
        )
        if result.exit_code != 0:
            raise SystemExit(f"init failed: {result.output}")
        parts = [folder / f"part{p}" for p in range(procs)]
        for part in parts:
            part.mkdir()
        for i in range(leads):
            (parts[i % procs] / f"{i:06d}.json").write_bytes(payload(f"t{i}", i))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CARECRM_")}
        env["CARECRM_CONFIG"] = str(folder / "carecrm.toml")
        start = time.perf_counter()
        running = [
            subprocess.Popen(
                [sys.executable, "-m", "carecrm.cli", "ingest", "typeform", str(part), "--json"],
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            for part in parts
        ]
        for proc in running:
            _, err = proc.communicate(timeout=1800)
            if proc.returncode != 0:
                raise SystemExit(f"an ingest process failed ({proc.returncode}): {err.decode()[-2000:]}")
        elapsed = time.perf_counter() - start
        with sa.create_engine(url).connect() as conn:
            stored = conn.execute(sa.text("select count(*) from contacts")).scalar_one()
        if stored != leads:
            raise SystemExit(f"{stored} contacts stored for {leads} leads: concurrent writers lost records")
        return leads / elapsed
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        admin.dispose()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the benchmark; prints one line per process count.  Returns 0."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--leads", type=int, default=4000, help="payloads per run (split over the processes)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per process count (median printed)")
    parser.add_argument("--url", default=os.environ.get("CARECRM_TEST_POSTGRES_URL", DEFAULT_URL))
    parser.add_argument("--procs", default="1,2,4", help="process counts, comma-separated (1 is the baseline)")
    args = parser.parse_args(argv)
    counts = sorted({int(p) for p in args.procs.split(",")} | {1})
    print(f"concurrent ingest on PostgreSQL: {args.leads} leads per run, {args.repeat} runs, nproc {os.cpu_count()}")
    rates: dict[int, list[float]] = {p: [] for p in counts}
    with tempfile.TemporaryDirectory() as tmp:
        for _ in range(args.repeat):
            for p in counts:  # interleaved, so drift of a noisy host hits every count alike
                rates[p].append(one_run(args.url, args.leads, p, Path(tmp)))
    base = statistics.median(rates[1])
    for p in counts:
        r = rates[p]
        print(
            f"processes {p}: {statistics.median(r):,.0f} [{min(r):,.0f}-{max(r):,.0f}] leads/s combined, "
            f"ratio to 1 process {statistics.median(r) / base:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
