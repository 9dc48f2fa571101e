"""Scoring benchmark: what live lead scoring costs the ingest path, and how fast
``carecrm score recompute`` rescores a database.

Usage (from the repository root)::

    .venv/bin/python benchmarks/scoring.py --n 2000 --repeat 5 [--batch-size 500]

Data: the ingest benchmark's deterministic web-form leads (``benchmarks/ingest.py``,
``make_leads``), through the same ``[sources.webform]`` mapped connector.

(a) **ingest, live scoring on** vs (b) **ingest, live scoring off** (``[scoring] live =
false``, the baseline): ``CareCRM.ingest_payloads`` on a fresh SQLite file each, in
alternating order, ``--repeat`` times.  Printed: both rates in leads/s by wall-clock time
and by the process's CPU time (the machines are shared: CPU time is the steadier of the
two), and the ratios on/off.  The target is the issue's: live scoring slows ingest by no
more than 25 % (ratio on/off >= 0.75).

(c) **rescore_all** of the database (a) wrote, beside (d) **the model alone**: the points
model's pure ``score()`` over the same timelines already in memory (the computing floor,
no storage).  Printed: contacts/s of both and the ratio.
"""

from __future__ import annotations

import argparse
import gc
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

try:
    from benchmarks import common, ingest
except ImportError:  # run as a script: python benchmarks/scoring.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import common, ingest


def build_app(folder: Path, *, live: bool, batch_size: int) -> Any:
    """An app like :func:`benchmarks.common.build_app` with the webform source and
    ``[scoring] live`` set."""
    from carecrm.core import CareCRM, settings_from_dict
    from carecrm.core.privacy.crypto import KeyRing

    folder.mkdir(parents=True, exist_ok=True)
    keyfile = folder / "carecrm.keys"
    if not keyfile.exists():
        KeyRing.generate().write_file(keyfile)
    doc: dict[str, Any] = {
        "practice": common.PRACTICE,
        "keys": {"file": "carecrm.keys"},
        "storage": {"url": f"sqlite:///{folder / 'carecrm.db'}"},
        "sources": {ingest.SOURCE: ingest.SOURCE_CONFIG},
        "ingest": {"batch_size": batch_size},
        "scoring": {"live": live},
    }
    app = CareCRM(settings_from_dict(doc, base_dir=folder), load_entrypoints=False)
    app.create_schema()
    return app


def run_ingest(bodies: Sequence[bytes], folder: Path, *, live: bool, batch_size: int) -> tuple[float, float, Any]:
    """Ingest the payloads on a fresh database; returns (wall seconds, CPU seconds, app)
    (the app is left open for the rescore measurement; the caller closes it)."""
    from carecrm.core.identity.normalize import normalize_email, normalize_phone
    from carecrm.core.model.domain import RawPayload

    app = build_app(folder, live=live, batch_size=batch_size)
    received = datetime.now(UTC)
    payloads = [
        RawPayload(body=b, content_type="application/json", headers=ingest._headers(), received_at=received)
        for b in bodies
    ]
    normalize_email.cache_clear()
    normalize_phone.cache_clear()
    gc.collect()
    w0, c0 = time.perf_counter(), time.process_time()
    app.ingest_payloads(ingest.SOURCE, payloads, actor=common.actor())
    return time.perf_counter() - w0, time.process_time() - c0, app


def run_rescore(app: Any) -> tuple[float, int]:
    """``app.rescore_all()``; returns (seconds, contacts rescored)."""
    gc.collect()
    t0 = time.perf_counter()
    n = app.rescore_all()
    return time.perf_counter() - t0, int(n)


def run_model_alone(app: Any) -> tuple[float, int]:
    """The configured model's pure ``score()`` over every contact's timeline, read into
    memory first (untimed); returns (seconds, contacts scored)."""
    with app.storage.unit_of_work() as uow:
        ids = [r.id for r in uow.contacts.list(limit=10**9)]
        timelines = uow.interactions.clear_timelines(ids)
    model = app.scoring_model
    now = datetime.now(UTC)
    gc.collect()
    t0 = time.perf_counter()
    for cid in ids:
        model.score(timelines.get(cid, []), now)
    return time.perf_counter() - t0, len(ids)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the scoring benchmark; see the module docstring.  Returns 0."""
    parser = argparse.ArgumentParser(prog="benchmarks/scoring.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=2000, help="leads (payloads) to ingest (default 2000)")
    parser.add_argument("--batch-size", type=int, default=500, help="leads per transaction (default 500)")
    parser.add_argument("--seed", type=int, default=20261130, help="data seed")
    common.add_repeat(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.n < 1 or args.repeat < 1 or args.batch_size < 1:
        parser.error("--n, --repeat and --batch-size must be positive")
    common.print_environment(
        "scoring benchmark", "benchmarks/scoring.py", list(argv) if argv is not None else sys.argv[1:]
    )
    bodies, people = ingest.make_leads(args.n, seed=args.seed)
    print(
        f"data: {args.n} web-form leads, {people} distinct people, batch size {args.batch_size}, "
        f"{args.repeat} run(s); model: the default points rules"
    )
    root = Path(tempfile.mkdtemp(prefix="carecrm-bench-scoring-"))
    wall: dict[str, list[float]] = {"on": [], "off": []}
    cpu: dict[str, list[float]] = {"on": [], "off": []}
    rescore: list[float] = []
    alone: list[float] = []
    scored = 0
    try:
        for k in range(args.repeat):
            for mode in ("on", "off") if k % 2 == 0 else ("off", "on"):
                seconds, cpu_seconds, app = run_ingest(
                    bodies, root / f"run{k}-{mode}", live=mode == "on", batch_size=args.batch_size
                )
                try:
                    wall[mode].append(args.n / seconds)
                    cpu[mode].append(args.n / cpu_seconds)
                    if mode == "on":
                        seconds, scored = run_rescore(app)
                        rescore.append(scored / seconds)
                        seconds, n = run_model_alone(app)
                        alone.append(n / seconds)
                finally:
                    app.close()
                shutil.rmtree(root / f"run{k}-{mode}", ignore_errors=True)
        print(
            f"ingest, live scoring on  : {common.fmt_runs(wall['on'])} leads/s wall, {common.fmt_runs(cpu['on'])} CPU"
        )
        print(
            f"ingest, live scoring off : {common.fmt_runs(wall['off'])} leads/s wall, {common.fmt_runs(cpu['off'])} CPU"
        )
        ratio_wall = [a / b for a, b in zip(wall["on"], wall["off"], strict=True)]
        ratio_cpu = [a / b for a, b in zip(cpu["on"], cpu["off"], strict=True)]
        print(f"ratio on/off, wall: {common.fmt_runs(ratio_wall)}; CPU: {common.fmt_runs(ratio_cpu)} (per run pair)")
        met = common.summary(ratio_cpu)[0] >= 0.75
        print(f"target: live scoring slows ingest by <= 25% (CPU ratio >= 0.75): {'MET' if met else 'NOT MET'}")
        print(f"rescore_all     : {common.fmt_runs(rescore)} contacts/s ({scored} contacts)")
        print(f"model alone     : {common.fmt_runs(alone)} contacts/s")
        med_r, med_a = common.summary(rescore)[0], common.summary(alone)[0]
        print(f"ratio rescore_all/model alone: {med_r / med_a:.3f}")
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
