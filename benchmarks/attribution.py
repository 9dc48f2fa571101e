"""Attribution benchmark: ``CareCRM.attribute`` with the four built-in models over 100,000
journeys, beside the raw streaming read of the same rows and a hand-written first-touch
attribution on the same SQLite file.

Usage (from the repository root)::

    .venv/bin/python benchmarks/attribution.py [--journeys 100000] [--repeat 3] [--db DIR] [--reuse]

**Load** (not measured; its time is reported): J contacts, each with 5 to 10 touches
(forms, inbound calls, chats, texts, page views, ad and email clicks, referrals; a mix of
paid search, paid social, organic, email, referral and direct touchpoints, about 1 in 100
older than the 365-day window), 2 non-touches (``email.sent``, ``email.opened``, which the
query must skip), an outbound call back (skipped too), and two stage changes (created
``new_lead``, then ``booked_patient`` 0 to 300 days ago): one journey per contact at the
default step.  Rows are built by carecrm's own mapping layer (``app.mapper``, real
per-contact data keys) and written with the unit of work's ``add_many``; the database,
its key file and a manifest stay in ``--db`` (default ``$TMPDIR/carecrm-bench-attribution-J``)
so ``--reuse`` skips the load next time.

**Measured**, each ``--repeat`` times, in alternating order:

* **carecrm**, per model (``first_touch``, ``last_touch``, ``last_non_direct``, ``linear``):
  ``app.attribute(model=M, by="channel_group")`` end to end: the touches streamed in
  keyset pages by ``iter_touches``, merge-joined with the conversions of
  ``first_reached``, windows, model, weight check, credit by channel group;
* **raw read** (the storage limit): stdlib ``sqlite3`` running the same two ordered
  queries (the nine columns of a touch; each contact's first entry into booked_patient or
  later, grouped) in one pass each, without keyset pages, fetching every row in chunks of
  5,000 with nothing done to the rows;
* **hand-written first touch**: the same two ``sqlite3`` streams merge-joined in plain
  Python (plain tuples; the touchpoint JSON is never decoded, ids and times stay text)
  crediting first touches by channel group: what a lean single-purpose script costs.
  Its credits must equal carecrm's ``first_touch`` credits (checked).

Printed: journeys/s (median [min-max] of the runs) per model, the raw read and the
hand-written script, the ratios carecrm/raw read and carecrm/hand-written, and the peak
Python memory of one untimed ``attribute()`` call (tracemalloc) to show the streaming.
"""

from __future__ import annotations

import argparse
import gc
import json
import random
import sqlite3
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

try:
    from benchmarks import common, timeline
except ImportError:  # run as a script: python benchmarks/attribution.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import common, timeline

MANIFEST = "manifest.json"
LOAD_BATCH = 50_000
MODELS = ("first_touch", "last_touch", "last_non_direct", "linear")
FETCH = 5000

#: (kind, channel, direction, weight) of a touch.
TOUCH_KINDS: tuple[tuple[str, str, str | None, int], ...] = (
    ("page.viewed", "web", None, 30),
    ("form.submitted", "web", "inbound", 14),
    ("ad.clicked", "ad_platform", None, 12),
    ("email.clicked", "email", "outbound", 12),
    ("call.completed", "phone", "inbound", 12),
    ("chat.started", "chat", "inbound", 8),
    ("sms.received", "sms", "inbound", 8),
    ("referral.received", "referral", "inbound", 2),
    ("walk_in.visited", "in_person", "inbound", 2),
)

#: Touchpoint fields and weight.
TOUCHPOINTS: tuple[tuple[dict[str, str], int], ...] = (
    ({"source": "google", "medium": "cpc", "campaign": "spring-acne", "gclid": "Cj0bench"}, 22),
    ({"source": "facebook", "medium": "paid_social", "campaign": "botox-fb"}, 14),
    ({"source": "google", "medium": "organic"}, 16),
    ({"source": "sendgrid", "medium": "email", "campaign": "acne-nurture"}, 12),
    ({"source": "yelp", "medium": "listing"}, 6),
    ({"source": "dr-lee", "medium": "physician_referral"}, 4),
    ({}, 26),
)


# --------------------------------------------------------------------------- load


def _manifest(journeys: int, seed: int) -> dict[str, Any]:
    return {"journeys": journeys, "seed": seed, "format": 1, "schema": timeline.schema_fingerprint()}


def load(folder: Path, journeys: int, seed: int) -> tuple[float, int, int]:
    """Build the database in ``folder``; returns (seconds, interactions, stage changes)."""
    from carecrm.core.model.domain import Contact, Identity, Interaction, Touchpoint
    from carecrm.core.model.ids import new_id
    from carecrm.core.model.records import StageChangeRecord
    from carecrm.core.model.timeutil import utcnow

    for name in ("carecrm.db", "carecrm.db-wal", "carecrm.db-shm", "carecrm.keys", MANIFEST):
        (folder / name).unlink(missing_ok=True)
    app = common.build_app(folder)
    mapper = app.mapper
    rng = random.Random(seed)
    now = utcnow()
    tps = [app.classify_touchpoint(Touchpoint(**fields)) for fields, _w in TOUCHPOINTS]
    tp_weights = [w for _f, w in TOUCHPOINTS]
    kind_weights = [w for *_k, w in TOUCH_KINDS]
    n_inter = n_stage = 0
    t0 = time.perf_counter()
    try:
        for first in range(0, journeys, LOAD_BATCH // 12):
            contacts, idents, inters, stages = [], [], [], []
            for i in range(first, min(journeys, first + LOAD_BATCH // 12)):
                booked = now - timedelta(days=rng.uniform(0, 300))
                created = booked - timedelta(days=rng.uniform(30, 420))
                contact = Contact(
                    created_at=created,
                    updated_at=booked,
                    first_name="Bench",
                    last_name=f"Person{i}",
                    stage="booked_patient",
                    stage_changed_at=booked,
                    service_interest=rng.choice(("acne", "botox", "mohs")),
                    location="downtown",
                    first_source="bench",
                )
                key = mapper.new_contact_key()
                contacts.append(mapper.contact_to_record(contact, key))
                idents.append(
                    mapper.identity_to_record(
                        Identity(kind="email", value=f"bench{i}@example.com", source="bench"), contact.id, key
                    )
                )
                span = (booked - created).total_seconds()
                drafts: list[tuple[str, str, str | None, Touchpoint]] = []
                for kind_i in rng.choices(range(len(TOUCH_KINDS)), kind_weights, k=rng.randint(5, 10)):
                    kind, channel, direction, _w = TOUCH_KINDS[kind_i]
                    drafts.append((kind, channel, direction, rng.choices(tps, tp_weights)[0]))
                drafts += [
                    ("email.sent", "email", "outbound", tps[3]),
                    ("email.opened", "email", "outbound", tps[3]),
                    ("call.completed", "phone", "outbound", Touchpoint()),
                ]
                for n, (kind, channel, direction, tp) in enumerate(drafts):
                    at = created + timedelta(seconds=rng.random() * span)
                    inters.append(
                        mapper.interaction_to_record(
                            Interaction(
                                contact_id=contact.id,
                                kind=kind,
                                occurred_at=at,
                                recorded_at=at,
                                source="bench",
                                idempotency_key=f"{i}:{n}",
                                channel=channel,
                                direction=direction,
                                location="downtown",
                                touchpoint=tp,
                            ),
                            key,
                        )
                    )
                for from_stage, to_stage, at in ((None, "new_lead", created), ("new_lead", "booked_patient", booked)):
                    stages.append(
                        StageChangeRecord(
                            id=new_id(),
                            contact_id=contact.id,
                            pipeline="default",
                            from_stage=from_stage,
                            to_stage=to_stage,
                            changed_at=at,
                            actor="benchmark",
                        )
                    )
            with app.storage.unit_of_work() as uow:
                uow.contacts.add_many(contacts)
                uow.identities.add_many(idents)
                uow.interactions.add_many(inters)
                for change in stages:
                    uow.stages.add(change)
                uow.commit()
            n_inter += len(inters)
            n_stage += len(stages)
    finally:
        app.close()
    seconds = time.perf_counter() - t0
    con = sqlite3.connect(folder / "carecrm.db")
    try:
        con.execute("ANALYZE")
        con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        con.close()
    (folder / MANIFEST).write_text(json.dumps(_manifest(journeys, seed)))
    return seconds, n_inter, n_stage


# --------------------------------------------------------------------------- baselines


def _queries() -> tuple[str, list[Any], str]:
    """The two ordered queries carecrm's storage runs (without keyset paging), as sqlite3
    text: the touches, and each contact's first entry into booked_patient or later."""
    from carecrm.core.analytics.attribution import CALL_KINDS, TOUCH_KINDS

    kinds = sorted(TOUCH_KINDS)
    calls = sorted(CALL_KINDS)
    columns = "id, contact_id, kind, occurred_at, channel, direction, campaign, channel_group, touchpoint"
    touches = (
        f"SELECT {columns} FROM interactions WHERE kind IN ({','.join('?' * len(kinds))}) "
        f"AND NOT (kind IN ({','.join('?' * len(calls))}) AND coalesce(direction, '') = 'outbound') "
        "ORDER BY contact_id, occurred_at, id"
    )
    stages = (
        "SELECT contact_id, min(changed_at) FROM stage_changes "
        "WHERE to_stage IN ('booked_patient', 'returning_patient') AND pipeline = 'default' "
        "GROUP BY contact_id ORDER BY contact_id"
    )
    return touches, [*kinds, *calls], stages


def _rows(cursor: sqlite3.Cursor) -> Any:
    while True:
        chunk = cursor.fetchmany(FETCH)
        if not chunk:
            return
        yield from chunk


def raw_read(con: sqlite3.Connection) -> tuple[int, int]:
    """Fetch every row of both streams and do nothing with them; returns the row counts."""
    touches_sql, params, stages_sql = _queries()
    n_touch = sum(1 for _ in _rows(con.execute(touches_sql, params)))
    n_stage = sum(1 for _ in _rows(con.execute(stages_sql)))
    return n_touch, n_stage


def hand_first_touch(con: sqlite3.Connection, lookback_days: int = 365) -> tuple[dict[str, float], int]:
    """First-touch credit by channel group, with the rules of :mod:`carecrm.core.analytics.attribution`
    written out by hand over the two sqlite3 streams; returns (credits, conversions)."""
    from datetime import datetime

    from carecrm.core.analytics.attribution import KIND_GROUPS

    touches_sql, params, stages_sql = _queries()
    touch_rows = _rows(con.execute(touches_sql, params))
    credit: dict[str, float] = {}
    n = 0
    pending = next(touch_rows, None)
    for cid, changed in _rows(con.execute(stages_sql)):
        n += 1
        conv = datetime.fromisoformat(changed)
        low = (conv - timedelta(days=lookback_days)).isoformat(sep=" ", timespec="microseconds")
        while pending is not None and pending[1] < cid:
            pending = next(touch_rows, None)
        first = None
        while pending is not None and pending[1] == cid:
            if first is None and low <= pending[3] <= changed:
                first = pending
            pending = next(touch_rows, None)
        if first is not None:
            group = first[7] or KIND_GROUPS.get(first[2], "direct")
            credit[group] = credit.get(group, 0.0) + 1.0
    return credit, n


# --------------------------------------------------------------------------- measure


def _timed(fn: Any) -> tuple[float, Any]:
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    return time.perf_counter() - t0, result


def main(argv: Sequence[str] | None = None) -> int:
    """Run the attribution benchmark; see the module docstring.  Returns 0."""
    parser = argparse.ArgumentParser(prog="benchmarks/attribution.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--journeys", type=int, default=100_000, help="contacts with a journey (default 100000)")
    parser.add_argument("--db", type=Path, default=None, help="folder for the database (default a temp folder)")
    parser.add_argument("--reuse", action="store_true", help="reuse the database in --db when it has this size")
    parser.add_argument("--seed", type=int, default=20261130, help="data seed")
    common.add_repeat(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if min(args.journeys, args.repeat) < 1:
        parser.error("--journeys and --repeat must be positive")

    common.print_environment(
        "attribution benchmark", "benchmarks/attribution.py", list(argv) if argv is not None else sys.argv[1:]
    )
    folder = args.db or Path(tempfile.gettempdir()) / f"carecrm-bench-attribution-{args.journeys}"
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / MANIFEST
    reused = (
        args.reuse
        and manifest.exists()
        and json.loads(manifest.read_text()) == _manifest(args.journeys, args.seed)
        and (folder / "carecrm.db").exists()
    )
    if reused:
        print(f"load: reused the database in {folder}")
    else:
        seconds, n_inter, n_stage = load(folder, args.journeys, args.seed)
        print(
            f"load: {args.journeys} contacts, {n_inter} interactions, {n_stage} stage changes in {seconds:.1f} s "
            f"through carecrm's mapper and add_many; db in {folder}"
        )
    counts = common.table_counts(folder / "carecrm.db", ("contacts", "interactions", "stage_changes"))
    size_mib = sum(p.stat().st_size for p in folder.glob("carecrm.db*")) / 2**20
    print(
        f"data: {counts['contacts']} contacts, {counts['interactions']} interactions, "
        f"{counts['stage_changes']} stage changes, db {size_mib:,.0f} MiB; {args.repeat} run(s)"
    )

    app = common.build_app(folder, create=False)
    con = common.open_sqlite(folder / "carecrm.db")
    runs: dict[str, list[float]] = {name: [] for name in (*MODELS, "raw", "hand")}
    reports: dict[str, Any] = {}
    hand_credit: dict[str, float] = {}
    journeys = touches = 0
    try:
        app.attribute(model="first_touch")  # warm-up: statements built, pages cached
        raw_read(con)
        for k in range(args.repeat):
            order = [*MODELS, "raw", "hand"]
            if k % 2:
                order.reverse()
            for name in order:
                if name == "raw":
                    seconds, (touches, _stages) = _timed(lambda: raw_read(con))
                elif name == "hand":
                    seconds, (hand_credit, hand_n) = _timed(lambda: hand_first_touch(con))
                    if hand_n != journeys and journeys:
                        raise RuntimeError(f"hand-written script found {hand_n} conversions, carecrm {journeys}")
                else:
                    seconds, report = _timed(lambda name=name: app.attribute(model=name, by="channel_group"))
                    reports[name] = report
                    journeys = report.conversions
                runs[name].append(seconds)
        for name, report in reports.items():
            total = sum(r.credit for r in report.rows)
            if abs(total - report.conversions_touched) > 1e-6 * max(1, report.conversions_touched):
                raise RuntimeError(f"{name}: credits sum to {total}, not {report.conversions_touched}")
        carecrm_first = {r.key: r.credit for r in reports["first_touch"].rows}
        if carecrm_first != hand_credit:
            raise RuntimeError(f"first_touch credits differ: carecrm {carecrm_first}, hand-written {hand_credit}")
        tracemalloc.start()
        app.attribute(model="linear")
        _current, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    finally:
        con.close()
        app.close()

    first = reports["first_touch"]
    print(
        f"journeys: {first.conversions} conversions at booked_patient, {first.conversions_touched} with touches "
        f"in the 365-day window, {first.touches} touches credited ({first.touches / first.conversions:.1f} per "
        f"journey); the touch query streams {touches} rows"
    )

    def rate(name: str) -> list[float]:
        return [journeys / s for s in runs[name]]

    for name in MODELS:
        print(f"carecrm {name:<16}: {common.fmt_runs(rate(name))} journeys/s")
    print(f"raw read               : {common.fmt_runs(rate('raw'))} journeys/s")
    print(f"hand-written first     : {common.fmt_runs(rate('hand'))} journeys/s")
    med = {name: common.summary(values)[0] for name, values in runs.items()}
    for name in MODELS:
        print(
            f"ratio {name} time/raw read: {med[name] / med['raw']:.2f}; "
            f"/hand-written first touch: {med[name] / med['hand']:.2f}"
        )
    print(f"peak Python memory of one attribute() call (tracemalloc, untimed): {peak / 2**20:.1f} MiB")
    rows = ", ".join(f"{r.key} {r.credit:,.0f}" for r in first.rows)
    print(f"first_touch credit by channel group: {rows}")
    if args.db is None and not args.reuse:
        print(f"(database kept in {folder}: pass --reuse to skip the load next time)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
