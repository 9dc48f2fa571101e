"""Segment benchmark: carecrm's segment count and id list beside the hand-written SQL for the
same question, with stdlib ``sqlite3`` on the same SQLite file.

Usage (from the repository root)::

    .venv/bin/python benchmarks/segment.py [--contacts 100000] [--interactions 1000000]
        [--executions 30] [--repeat 3] [--db DIR] [--reuse] [--storage URL]

**Data**: the timeline benchmark's database (``benchmarks/timeline.py``'s loader, the same
seed, the same cache folder and manifest, so one load serves both benchmarks): C contacts
(stage new_lead 40 %, 6 service lines, 6 cities, postal prefix 606) and I interactions in
time order over two years before the load (12 kinds, ``email.opened`` 20 %), built by
carecrm's mapper and written with the unit of work's ``add_many``.

**The question** (the raw-layer segment query, measured apart on the reference VM): active contacts in stage
``new_lead``, interested in ``acne``, in Chicago, Evanston or Oak Park, who opened an email
within 90 days, counted in local days of the practice (America/Chicago) before "now" =
the newest interaction of the data set (so a reused database gives the same answer).

**Measured**, per run, ``--executions`` times each after 3 warm-ups, the two sides
alternating which goes first:

* **carecrm count**: ``app.segment_count(spec, now=...)``: the ``basic`` builder checks the
  spec and builds the filter tree, the SQL backend compiles it and runs one
  ``SELECT count(*) ... EXISTS (...)`` in a unit of work;
* **carecrm ids**: ``list(app.segment_ids(spec, now=...))``: the same, one
  ``SELECT id ... ORDER BY id`` per page of 1,000 ids, UUIDs returned;
* **hand-written**: the same two statements written by hand (``sqlite3``, bind parameters,
  the window start computed with ``zoneinfo``), ids converted to ``uuid.UUID`` too.

Printed: p50 per side (median [min-max] of the runs, ms), the ratios carecrm/hand-written
and the target line (<= 1.5x), the matching and candidate counts (checked equal on both
sides), and SQLite's query plan of carecrm's statement (which indexes it uses).

**MongoDB** (``--storage mongodb://HOST/carecrm_bench`` or ``mongomock://NAME``): the data is
loaded through the Mongo backend (the timeline loader), carecrm answers on it, and the
hand-written side is pymongo on the same database asking the same thing the backend's
query form asks: one ``aggregate`` ``$match {kind, occurred_at >= start}`` → ``$group`` by
``contact_id`` on the interactions, then ``count_documents`` / ``find(...).sort("_id")``
on the contacts with ``status``, ``stage``, ``service_interest``, ``city $in`` and ``_id $in``
those ids.  No query plan is printed there.  On ``mongomock://`` the sizes are tiny by
default and capped as in the timeline benchmark, and the figures are labelled as a fake's.
"""

from __future__ import annotations

import argparse
import gc
import json
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

try:
    from benchmarks import common, timeline
except ImportError:  # run as a script: python benchmarks/segment.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import common, timeline

#: The question's filters (stage, service line and cities of the timeline loader's data).
STAGE = "new_lead"
SERVICE = "acne"
CITIES = ("Chicago", "Evanston", "Oak Park")
KIND = "email.opened"
DAYS = 90
ZONE = "America/Chicago"

SPEC: dict[str, Any] = {
    "stage": [STAGE],
    "service_interest": [SERVICE],
    "city": list(CITIES),
    "had": [{"kinds": [KIND], "within_days": DAYS}],
}

_WHERE = (
    "FROM contacts c WHERE c.status = 'active' AND c.stage = ? AND c.service_interest = ? "
    "AND c.city IN (?, ?, ?) AND EXISTS (SELECT 1 FROM interactions i "
    "WHERE i.contact_id = c.id AND i.kind = ? AND i.occurred_at >= ?)"
)
HAND_COUNT = f"SELECT count(*) {_WHERE}"
HAND_IDS = f"SELECT c.id {_WHERE} ORDER BY c.id"
CANDIDATES = (
    "SELECT count(*) FROM contacts WHERE status = 'active' AND stage = ? AND service_interest = ? AND city IN (?, ?, ?)"
)


def window_start(now: datetime) -> datetime:
    """Local midnight ``DAYS`` days before ``now``'s date in Chicago, as UTC (by hand)."""
    zone = ZoneInfo(ZONE)
    day = now.astimezone(zone).date() - timedelta(days=DAYS)
    return datetime(day.year, day.month, day.day, tzinfo=zone).astimezone(UTC)


def stored_time(value: datetime) -> str:
    """A UTC time as carecrm's SQLite schema stores it (naive ISO text, microseconds)."""
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


class HandSegmentMongo:
    """The hand-written side on MongoDB: pymongo on the backend's collections and fields."""

    def __init__(self, storage: str, now: datetime) -> None:
        self.db = common.mongo_client(storage)[common.mongo_database_name(storage)]
        self.now = now

    def _clear(self) -> dict[str, Any]:
        return {"status": "active", "stage": STAGE, "service_interest": SERVICE, "city": {"$in": list(CITIES)}}

    def _query(self) -> dict[str, Any]:
        match = {"kind": KIND, "occurred_at": {"$gte": window_start(self.now)}}
        ids = [
            row["_id"]
            for row in self.db.interactions.aggregate([{"$match": match}, {"$group": {"_id": "$contact_id"}}])
        ]
        return {**self._clear(), "_id": {"$in": ids}}

    def count(self) -> int:
        """``count_documents`` of the question."""
        return int(self.db.contacts.count_documents(self._query()))

    def ids(self) -> list[uuid.UUID]:
        """The matching ids in ``_id`` order, as UUIDs."""
        cursor = self.db.contacts.find(self._query(), {"_id": 1}).sort("_id", 1)
        return [timeline._uuid(d["_id"]) for d in cursor]

    def candidates(self) -> int:
        """Contacts passing the clear-field filters."""
        return int(self.db.contacts.count_documents(self._clear()))

    def newest_interaction(self) -> datetime:
        """The newest interaction's time."""
        doc = next(iter(self.db.interactions.find({}, {"occurred_at": 1}).sort("occurred_at", -1).limit(1)))
        at: datetime = doc["occurred_at"]
        return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)

    def close(self) -> None:
        """Nothing to close (the client is shared)."""


class HandSegment:
    """The hand-written side: stdlib sqlite3 on the same file."""

    def __init__(self, db: Path, now: datetime) -> None:
        self.con = sqlite3.connect(db, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.now = now

    def _params(self) -> tuple[Any, ...]:
        return (STAGE, SERVICE, *CITIES, KIND, stored_time(window_start(self.now)))

    def count(self) -> int:
        """``SELECT count(*) ...``."""
        return int(self.con.execute(HAND_COUNT, self._params()).fetchone()[0])

    def ids(self) -> list[uuid.UUID]:
        """``SELECT c.id ... ORDER BY c.id`` as UUIDs."""
        return [uuid.UUID(row[0]) for row in self.con.execute(HAND_IDS, self._params())]

    def candidates(self) -> int:
        """Contacts passing the clear-column filters (what the index range scan reads)."""
        return int(self.con.execute(CANDIDATES, (STAGE, SERVICE, *CITIES)).fetchone()[0])

    def newest_interaction(self) -> datetime:
        """The newest interaction's time: the loader writes them in time order, so the
        last row inserted (highest rowid) is the newest."""
        row = self.con.execute("SELECT occurred_at FROM interactions ORDER BY rowid DESC LIMIT 1").fetchone()
        return datetime.fromisoformat(row[0]).replace(tzinfo=UTC)

    def plan(self, sql: str, params: Sequence[Any]) -> list[str]:
        """SQLite's ``EXPLAIN QUERY PLAN`` lines of a statement."""
        return [str(r[3]) for r in self.con.execute(f"EXPLAIN QUERY PLAN {sql}", tuple(params))]

    def close(self) -> None:
        """Close the connection."""
        self.con.close()


def carecrm_statements(app: Any, run: Callable[[], Any]) -> list[tuple[str, Any]]:
    """The SELECT statements (SQL text and parameters) carecrm sends while ``run()`` runs."""
    from sqlalchemy import event

    seen: list[tuple[str, Any]] = []

    def on_execute(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_rest: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    engine = app.storage.engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        run()
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
    return seen


def measure(
    sides: dict[str, Callable[[], Any]], executions: int, warmup: int = 3
) -> tuple[dict[str, list[float]], dict[str, Any]]:
    """Run each side ``executions`` times (after ``warmup``), alternating which goes first.

    :returns: the sorted latencies (seconds) and the last result of each side.
    """
    results: dict[str, Any] = {}
    for _ in range(warmup):
        for name, call in sides.items():
            results[name] = call()
    lat: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    perf = time.perf_counter
    gc.collect()
    for i in range(executions):
        for name in names if i % 2 == 0 else reversed(names):
            t0 = perf()
            results[name] = sides[name]()
            lat[name].append(perf() - t0)
    return {k: sorted(v) for k, v in lat.items()}, results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the segment benchmark; see the module docstring.  Returns 0."""
    parser = argparse.ArgumentParser(prog="benchmarks/segment.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=None, help="contacts to load (default 100000; mongomock 200)")
    parser.add_argument(
        "--interactions", type=int, default=None, help="interactions to load (default 1000000; mongomock 2000)"
    )
    parser.add_argument(
        "--executions", type=int, default=None, help="timed executions per run and side (default 30; mongomock 5)"
    )
    parser.add_argument("--db", type=Path, default=None, help="folder of the database (default: the timeline's)")
    parser.add_argument("--reuse", action="store_true", help="reuse the database in --db when it has these sizes")
    parser.add_argument("--seed", type=int, default=20261130, help="data seed")
    common.add_repeat(parser)
    common.add_storage(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    common.check_storage(parser, args.storage)
    mock = common.is_mongomock(args.storage)
    mongo = common.is_mongo(args.storage)
    for name, full, tiny in (("contacts", 100_000, 200), ("interactions", 1_000_000, 2000), ("executions", 30, 5)):
        if getattr(args, name) is None:
            setattr(args, name, tiny if mock else full)
    common.mongomock_limit(
        parser,
        args.storage,
        contacts=(args.contacts, timeline.MOCK_CAPS["contacts"]),
        interactions=(args.interactions, timeline.MOCK_CAPS["interactions"]),
        executions=(args.executions, 50),
    )
    if args.reuse and mock:
        parser.error("--reuse: a mongomock:// database lives only as long as its process")
    if min(args.contacts, args.interactions, args.executions, args.repeat) < 1:
        parser.error("sizes, --executions and --repeat must be positive")

    common.print_environment(
        "segment benchmark", "benchmarks/segment.py", list(argv) if argv is not None else sys.argv[1:]
    )
    common.print_storage(args.storage)
    folder = args.db or Path(tempfile.gettempdir()) / (
        f"carecrm-bench-timeline-{'mongo-' if mongo else ''}{args.contacts}-{args.interactions}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / timeline.MANIFEST
    wanted = timeline._manifest(args.contacts, args.interactions, args.seed, args.storage)
    reused = (
        args.reuse
        and manifest.exists()
        and json.loads(manifest.read_text()) == wanted
        and (mongo or (folder / "carecrm.db").exists())
    )
    if reused:
        print(f"load: reused the database in {folder}")
    else:
        t_c, t_i = timeline.load(folder, args.contacts, args.interactions, args.seed, args.storage)
        print(
            f"load: {args.contacts} contacts in {t_c:.1f} s, {args.interactions} interactions in {t_i:.1f} s "
            f"(timeline benchmark's loader: carecrm's mapper and add_many); "
            + (f"keys in {folder}" if mongo else f"db in {folder}")
        )

    db = folder / "carecrm.db"
    app = common.build_app(folder, create=False, storage=args.storage)

    def hand_side(at: datetime) -> HandSegment | HandSegmentMongo:
        return HandSegmentMongo(args.storage, at) if mongo else HandSegment(db, at)

    probe = hand_side(datetime.now(UTC))
    now = probe.newest_interaction()
    probe.close()
    hand = hand_side(now)
    since = window_start(now)
    try:
        candidates = hand.candidates()
        if mongo:
            where = "MongoDB database " + common.mongo_database_name(args.storage)
        else:
            where = f"db {sum(p.stat().st_size for p in folder.glob('carecrm.db*')) / 2**20:,.0f} MiB"
        print(
            f"data: {args.contacts} contacts, {args.interactions} interactions, {where}; "
            f"now = newest interaction {now:%Y-%m-%d %H:%M:%S}Z, window from {since:%Y-%m-%d %H:%M:%S}Z "
            f"(local midnight {DAYS} days before, {ZONE})"
        )
        print(
            f"question: stage {STAGE}, service {SERVICE}, city in {', '.join(CITIES)}, had {KIND} within {DAYS} days; "
            f"{candidates} candidates; {args.executions} executions per run and side, 3 warm-up, {args.repeat} run(s)"
        )
        if isinstance(hand, HandSegment):
            statements = carecrm_statements(app, lambda: app.segment_count(SPEC, now=now))
            count_sql, count_params = statements[-1]
            plan = hand.plan(count_sql, count_params)
            print("carecrm's count statement, SQLite plan: " + " | ".join(plan))
            uses = [ix for ix in ("ix_contacts_segment", "ix_interactions_contact_time") if any(ix in p for p in plan)]
            print(f"plan uses: {', '.join(uses) or 'no index'}")
            print("hand-written count, SQLite plan: " + " | ".join(hand.plan(HAND_COUNT, hand._params())))
        else:
            print("query form (both sides): $group of the interactions' contact ids, then one query on contacts")

        p50: dict[str, list[float]] = {"count": [], "hand_count": [], "ids": [], "hand_ids": []}
        matched = 0
        for _ in range(args.repeat):
            lat, res = measure(
                {
                    "count": lambda: app.segment_count(SPEC, now=now),
                    "hand_count": hand.count,
                    "ids": lambda: list(app.segment_ids(SPEC, now=now)),
                    "hand_ids": hand.ids,
                },
                args.executions,
            )
            if res["count"] != res["hand_count"] or res["ids"] != res["hand_ids"] or len(res["ids"]) != res["count"]:
                raise RuntimeError(
                    f"the sides disagree: carecrm {res['count']} / {len(res['ids'])} ids, "
                    f"hand-written {res['hand_count']} / {len(res['hand_ids'])} ids"
                )
            matched = res["count"]
            for name, values in lat.items():
                p50[name].append(common.percentile(values, 0.50) * 1e3)
        print(f"matching contacts: {matched} (both sides, count and ids)")
        print(f"carecrm count      : p50 {common.fmt_runs(p50['count'])} ms")
        print(f"hand-written count : p50 {common.fmt_runs(p50['hand_count'])} ms")
        print(f"carecrm ids        : p50 {common.fmt_runs(p50['ids'])} ms")
        print(f"hand-written ids   : p50 {common.fmt_runs(p50['hand_ids'])} ms")
        med = {k: common.summary(v)[0] for k, v in p50.items()}
        ratios = {}
        for what in ("count", "ids"):
            per_run = [a / h for a, h in zip(p50[what], p50[f"hand_{what}"], strict=True)]
            ratios[what] = med[what] / med[f"hand_{what}"]
            print(f"ratio {what} carecrm/hand-written: {ratios[what]:.2f} (per run: {common.fmt_runs(per_run)})")
        met = all(r <= 1.5 for r in ratios.values())
        print(f"target: carecrm <= 1.5x hand-written (count and ids): {'MET' if met else 'NOT MET'}")
        if mock:
            print(common.MONGOMOCK_NOTE)
    finally:
        hand.close()
        app.close()
    if args.db is None and not args.reuse and not mock:
        print(f"(database kept in {folder}: pass --reuse to skip the load next time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
