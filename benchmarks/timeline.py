"""Timeline-read benchmark: ``CareCRM.timeline(contact_id, limit=100)`` latency beside a
hand-written indexed query plus decryption on the same SQLite file.

Usage (from the repository root)::

    .venv/bin/python benchmarks/timeline.py [--contacts 100000] [--interactions 1000000]
        [--lookups 2000] [--repeat 3] [--db DIR] [--reuse] [--storage URL]

**Load** (not what is measured; its time is reported separately): C contacts, each with
an email identity, and I interactions generated in time order over two years like a
live event stream, each for a uniformly random contact (about I/C per contact, scattered
across the table).  Rows are built by carecrm's own mapping layer
(``app.mapper.contact_to_record`` / ``identity_to_record`` / ``interaction_to_record``:
real per-contact data keys, encrypted bodies) and written with the unit of work's
``add_many`` in batches of 50,000 rows.  The database, its key file and a manifest are
kept in ``--db`` (default ``$TMPDIR/carecrm-bench-timeline-C-I``) so ``--reuse`` can skip
the load on the next run.

**Measured**, per run, for ``--lookups`` random contacts (a new sample per run, the same
contacts for both sides, each pair run in alternating order after a warm-up):

* **carecrm**: ``app.timeline(contact_id, limit=100)``: resolves the contact (an audited
  contact read), reads the page, unwraps the data key, decrypts every body and writes an
  audit-log entry, as carecrm always does;
* **hand-written**: stdlib ``sqlite3`` on the same file: the contact's wrapped key by id,
  ``SELECT ... FROM interactions WHERE contact_id=? ORDER BY occurred_at, id LIMIT 101``
  (the same index), the data key unwrapped with the master key and every body
  AES-GCM-decrypted, touchpoint and attributes JSON decoded.

Printed: p50 and p99 (median [min-max] of the runs) for both, the ratio of the p99s and
the target line.  ``--profile`` adds a cProfile of carecrm's lookups.

**MongoDB** (``--storage mongodb://HOST/carecrm_bench`` or ``mongomock://NAME``): the same
load through the Mongo backend's ``add_many`` (the database is dropped first), and the
hand-written side is pymongo on the same database: the contact's ``key_version`` and
``wrapped_key`` by ``_id``, ``interactions.find({"contact_id": id}).sort([("occurred_at", 1),
("_id", 1)]).limit(101)`` (the backend's timeline index) and the same decryption.  On
``mongomock://`` the default sizes are tiny (200 contacts, 2,000 interactions, 100 lookups)
and capped (2,000 / 10,000 / 500: the fake scans in Python, and its load alone took ~45 s
for 5,000 interactions), and the figures are printed as those of a fake.
"""

from __future__ import annotations

import argparse
import base64
import cProfile
import gc
import hashlib
import io
import json
import pstats
import random
import shutil
import sqlite3
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any

from bson.binary import Binary, UuidRepresentation
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

try:
    from benchmarks import common
except ImportError:  # run as a script: python benchmarks/timeline.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import common

MANIFEST = "manifest.json"
#: Size caps on mongomock:// (the fake scans every document in Python).
MOCK_CAPS = {"contacts": 2000, "interactions": 10_000, "lookups": 500}
LOAD_BATCH = 50_000
_NONCE = 12
_WRAP_AAD = b"carecrm:data-key"

#: (kind, channel, weight, has a body)
KINDS: tuple[tuple[str, str, int, bool], ...] = (
    ("email.opened", "email", 20, False),
    ("email.delivered", "email", 14, False),
    ("email.clicked", "email", 6, False),
    ("page.viewed", "web", 12, False),
    ("form.submitted", "web", 8, True),
    ("call.completed", "phone", 8, True),
    ("call.missed", "phone", 4, False),
    ("sms.received", "sms", 8, True),
    ("sms.sent", "sms", 8, True),
    ("chat.message_received", "chat", 5, True),
    ("appointment.booked", "phone", 4, False),
    ("note.added", "in_person", 3, True),
)
BODIES = (
    "Asked about pricing for the acne treatment plan and whether insurance covers it.",
    "Left a voicemail: wants to move Thursday's consult to next week, mornings preferred.",
    "Patient confirmed the appointment and asked where to park near the downtown office.",
    "Wants a call back about laser hair removal packages; available after 4pm weekdays.",
    "Sent photos of the rash as requested; follow-up visit suggested within two weeks.",
)
FIRST = "Maria James Olivia Robert Emma Michael Sophia William Ava David Priya Wei Fatima José Zoë".split()
LAST = "Smith Johnson Garcia Miller Davis Nguyen Patel Kim Okafor O'Brien Müller Peña Dubois".split()
CITIES = ("Chicago", "Evanston", "Oak Park", "Naperville", "Skokie", "Cicero")
STAGES = ("new_lead", "new_lead", "contacted", "consult_scheduled", "booked_patient")
SERVICES = ("acne", "botox", "mohs", "laser", "eczema", "psoriasis")


# --------------------------------------------------------------------------- load


def schema_fingerprint() -> str:
    """SHA-256 of the SQLite schema this carecrm creates (so ``--reuse`` never reads a
    database made by a carecrm with another schema)."""
    with tempfile.TemporaryDirectory(prefix="carecrm-bench-schema-") as tmp:
        app = common.build_app(Path(tmp))
        app.close()
        ddl = common.sqlite_schema(Path(tmp) / "carecrm.db")
    return hashlib.sha256("\n".join(ddl).encode()).hexdigest()


def _manifest(contacts: int, interactions: int, seed: int, storage: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "contacts": contacts,
        "interactions": interactions,
        "seed": seed,
        "format": 2,
        "schema": schema_fingerprint(),
    }
    if common.is_mongo(storage):
        from carecrm.storage_backends.mongo.backend import _mask

        assert storage is not None
        out["storage"] = f"{_mask(storage)} database {common.mongo_database_name(storage)}"
    return out


def _bid(value: uuid.UUID) -> Binary:
    return Binary.from_uuid(value, UuidRepresentation.STANDARD)


def _uuid(value: Any) -> uuid.UUID:
    """A stored id as a UUID (pymongo decodes subtype 4; mongomock returns the Binary)."""
    return value.as_uuid(UuidRepresentation.STANDARD) if isinstance(value, Binary) else value


def load(folder: Path, contacts: int, interactions: int, seed: int, storage: str | None = None) -> tuple[float, float]:
    """Build the database in ``folder`` (or, with a MongoDB ``storage`` URL, in that
    database, dropped first; the keys stay in ``folder``); returns (contacts seconds,
    interactions seconds)."""
    from carecrm.core.model.domain import Contact, Identity, Interaction, Touchpoint
    from carecrm.core.model.timeutil import utcnow

    if folder.exists():
        for name in ("carecrm.db", "carecrm.db-wal", "carecrm.db-shm", "carecrm.keys", MANIFEST):
            (folder / name).unlink(missing_ok=True)
    if common.is_mongo(storage):
        assert storage is not None
        common.mongo_client(storage).drop_database(common.mongo_database_name(storage))
    app = common.build_app(folder, storage=storage)
    mapper = app.mapper
    rng = random.Random(seed)
    now = utcnow()
    start = now - timedelta(days=730)
    try:
        t0 = time.perf_counter()
        ids: list[uuid.UUID] = []
        keys: list[Any] = []
        for first_i in range(0, contacts, LOAD_BATCH):
            recs, idents = [], []
            for i in range(first_i, min(contacts, first_i + LOAD_BATCH)):
                first, last = rng.choice(FIRST), rng.choice(LAST)
                contact = Contact(
                    created_at=start,
                    updated_at=start,
                    first_name=first,
                    last_name=last,
                    postal_code=f"606{i % 100:02d}",
                    city=rng.choice(CITIES),
                    stage=rng.choice(STAGES),
                    stage_changed_at=start,
                    service_interest=rng.choice(SERVICES),
                    location="downtown",
                    first_source="webform",
                )
                key = mapper.new_contact_key()
                recs.append(mapper.contact_to_record(contact, key))
                email = f"patient{i}@example.com"
                idents.append(
                    mapper.identity_to_record(Identity(kind="email", value=email, source="webform"), contact.id, key)
                )
                ids.append(contact.id)
                keys.append(key)
            with app.storage.unit_of_work() as uow:
                uow.contacts.add_many(recs)
                uow.identities.add_many(idents)
                uow.commit()
        t_contacts = time.perf_counter() - t0

        t0 = time.perf_counter()
        kinds = [k for k, _c, _w, _b in KINDS]
        weights = [w for _k, _c, w, _b in KINDS]
        channel = {k: c for k, c, _w, _b in KINDS}
        has_body = {k: b for k, _c, _w, b in KINDS}
        span = (now - start).total_seconds()
        step = span / max(interactions, 1)
        n = 0
        while n < interactions:
            batch = []
            size = min(LOAD_BATCH, interactions - n)
            for kind in rng.choices(kinds, weights, k=size):
                c = rng.randrange(contacts)
                at = start + timedelta(seconds=n * step + rng.random() * step)
                tp = (
                    Touchpoint(source="google", medium="cpc", campaign="acne_fall")
                    if kind == "form.submitted"
                    else Touchpoint()
                )
                batch.append(
                    mapper.interaction_to_record(
                        Interaction(
                            contact_id=ids[c],
                            kind=kind,
                            occurred_at=at,
                            recorded_at=at,
                            source="bench",
                            idempotency_key=f"{kind}:{n}",
                            channel=channel[kind],
                            touchpoint=tp,
                            attributes={"seq": n},
                            body=rng.choice(BODIES) if has_body[kind] else None,
                        ),
                        keys[c],
                    )
                )
                n += 1
            with app.storage.unit_of_work() as uow:
                uow.interactions.add_many(batch)
                uow.commit()
        t_interactions = time.perf_counter() - t0
    finally:
        app.close()
    if not common.is_mongo(storage):
        con = sqlite3.connect(folder / "carecrm.db")
        try:
            con.execute("ANALYZE")
            con.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        finally:
            con.close()
    (folder / MANIFEST).write_text(json.dumps(_manifest(contacts, interactions, seed, storage)))
    return t_contacts, t_interactions


def contact_ids(folder: Path, storage: str | None = None) -> list[str]:
    """Every contact id (32 hex digits, as stored on SQLite), in id order."""
    if common.is_mongo(storage):
        assert storage is not None
        db = common.mongo_client(storage)[common.mongo_database_name(storage)]
        return [_uuid(d["_id"]).hex for d in db.contacts.find({}, {"_id": 1}).sort("_id", 1)]
    con = sqlite3.connect(folder / "carecrm.db")
    try:
        return [r[0] for r in con.execute("SELECT id FROM contacts ORDER BY id")]
    finally:
        con.close()


# --------------------------------------------------------------------------- hand-written


class HandTimeline:
    """The hand-written read: stdlib sqlite3, the master key from carecrm's key file."""

    COLUMNS = (
        "id, contact_id, kind, occurred_at, recorded_at, source, idempotency_key, channel, direction, location, "
        "campaign, channel_group, touchpoint, attributes, body_enc, actor, inbox_id"
    )

    def __init__(self, folder: Path) -> None:
        doc = json.loads((folder / "carecrm.keys").read_text())
        self.masters = {v: AESGCM(base64.b64decode(k)) for v, k in doc["master_keys"].items()}
        self.con = sqlite3.connect(folder / "carecrm.db", isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")

    def timeline(self, cid: str, limit: int = 100) -> list[dict[str, Any]]:
        """One page of a contact's timeline with decrypted bodies."""
        con = self.con
        row = con.execute("SELECT key_version, wrapped_key FROM contacts WHERE id=?", (cid,)).fetchone()
        if row is None:
            raise KeyError(cid)
        version, wrapped = row
        aes = AESGCM(self.masters[version].decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _WRAP_AAD))
        rows = con.execute(
            f"SELECT {self.COLUMNS} FROM interactions WHERE contact_id=? ORDER BY occurred_at, id LIMIT ?",
            (cid, limit + 1),
        ).fetchall()
        out = []
        for r in rows[:limit]:
            enc = r[14]
            body = None
            if enc is not None:
                aad = f"interaction:{uuid.UUID(r[0])}:body".encode()
                body = aes.decrypt(enc[:_NONCE], enc[_NONCE:], aad).decode()
            out.append(
                {
                    "id": r[0],
                    "kind": r[2],
                    "occurred_at": r[3],
                    "touchpoint": json.loads(r[12]),
                    "attributes": json.loads(r[13]),
                    "body": body,
                }
            )
        return out

    def audit_count(self) -> int:
        """Rows in the audit log (carecrm writes one per read)."""
        return int(self.con.execute("SELECT count(*) FROM audit_log").fetchone()[0])

    def close(self) -> None:
        """Close the connection."""
        self.con.close()


class HandTimelineMongo:
    """The hand-written read on MongoDB: pymongo on the backend's own collections and
    fields, the master key from carecrm's key file."""

    SORT = [("occurred_at", 1), ("_id", 1)]

    def __init__(self, folder: Path, storage: str) -> None:
        doc = json.loads((folder / "carecrm.keys").read_text())
        self.masters = {v: AESGCM(base64.b64decode(k)) for v, k in doc["master_keys"].items()}
        self.db = common.mongo_client(storage)[common.mongo_database_name(storage)]

    def timeline(self, cid: str, limit: int = 100) -> list[dict[str, Any]]:
        """One page of a contact's timeline with decrypted bodies."""
        ref = _bid(uuid.UUID(cid))
        row = self.db.contacts.find_one({"_id": ref}, {"key_version": 1, "wrapped_key": 1})
        if row is None:
            raise KeyError(cid)
        wrapped = bytes(row["wrapped_key"])
        aes = AESGCM(self.masters[row["key_version"]].decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _WRAP_AAD))
        docs = list(self.db.interactions.find({"contact_id": ref}).sort(self.SORT).limit(limit + 1))
        out = []
        for r in docs[:limit]:
            enc = r.get("body_enc")
            xid = _uuid(r["_id"])
            body = None
            if enc is not None:
                enc = bytes(enc)
                body = aes.decrypt(enc[:_NONCE], enc[_NONCE:], f"interaction:{xid}:body".encode()).decode()
            out.append(
                {
                    "id": xid,
                    "kind": r["kind"],
                    "occurred_at": r["occurred_at"],
                    "touchpoint": r.get("touchpoint"),
                    "attributes": r.get("attributes"),
                    "body": body,
                }
            )
        return out

    def audit_count(self) -> int:
        """Documents in the audit log (carecrm writes one per read)."""
        return int(self.db.audit_log.count_documents({}))

    def close(self) -> None:
        """Nothing to close (the client is shared)."""


# --------------------------------------------------------------------------- measure


def measure(
    app: Any, hand: HandTimeline | HandTimelineMongo, sample: Sequence[str], warmup: int
) -> tuple[list[float], list[float], int, int]:
    """Time both reads for each contact of ``sample``, alternating which goes first.

    :returns: carecrm latencies, hand-written latencies (seconds, sorted), and the
        interactions returned by each side in total (they must agree).
    """
    for cid in sample[:warmup]:
        app.timeline(uuid.UUID(cid), limit=100, actor=common.actor())
        hand.timeline(cid)
    lat_app: list[float] = []
    lat_hand: list[float] = []
    rows_app = rows_hand = 0
    perf = time.perf_counter
    gc.collect()
    for i, cid in enumerate(sample[warmup:]):
        ref = uuid.UUID(cid)
        for side in (0, 1) if i % 2 == 0 else (1, 0):
            if side == 0:
                t0 = perf()
                page = app.timeline(ref, limit=100, actor=common.actor())
                lat_app.append(perf() - t0)
                rows_app += len(page.interactions)
            else:
                t0 = perf()
                items = hand.timeline(cid)
                lat_hand.append(perf() - t0)
                rows_hand += len(items)
    return sorted(lat_app), sorted(lat_hand), rows_app, rows_hand


def statements_per_read(app: Any, sample: Sequence[str]) -> tuple[float, float]:
    """SQL statements (BEGIN, SAVEPOINT and COMMIT included) and transactions carecrm
    sends per ``timeline()`` call, counted over ``sample`` (untimed)."""
    from sqlalchemy import event

    engine = app.storage.engine
    counts = {"statements": 0, "commits": 0}

    def on_execute(*_args: Any) -> None:
        counts["statements"] += 1

    def on_commit(*_args: Any) -> None:
        counts["commits"] += 1

    event.listen(engine, "before_cursor_execute", on_execute)
    event.listen(engine, "commit", on_commit)
    try:
        for cid in sample:
            app.timeline(uuid.UUID(cid), limit=100, actor=common.actor())
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        event.remove(engine, "commit", on_commit)
    return counts["statements"] / len(sample), counts["commits"] / len(sample)


def _profile(app: Any, sample: Sequence[str], top: int) -> str:
    profiler = cProfile.Profile()
    profiler.enable()
    for cid in sample:
        app.timeline(uuid.UUID(cid), limit=100, actor=common.actor())
    profiler.disable()
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the timeline benchmark; see the module docstring.  Returns 0."""
    parser = argparse.ArgumentParser(prog="benchmarks/timeline.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--contacts", type=int, default=None, help="contacts to load (default 100000; mongomock 200)")
    parser.add_argument(
        "--interactions", type=int, default=None, help="interactions to load (default 1000000; mongomock 2000)"
    )
    parser.add_argument(
        "--lookups", type=int, default=None, help="timelines read per run and side (default 2000; mongomock 100)"
    )
    parser.add_argument(
        "--warmup", type=int, default=None, help="untimed reads per side before each run (default 100; mongomock 10)"
    )
    parser.add_argument("--db", type=Path, default=None, help="folder for the database (default a temp folder)")
    parser.add_argument("--reuse", action="store_true", help="reuse the database in --db when it has these sizes")
    parser.add_argument("--seed", type=int, default=20261130, help="data seed")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of carecrm's lookups")
    parser.add_argument("--profile-top", type=int, default=30, help="functions per profile table (default 30)")
    common.add_repeat(parser)
    common.add_storage(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    common.check_storage(parser, args.storage)
    mock = common.is_mongomock(args.storage)
    mongo = common.is_mongo(args.storage)
    for name, full, tiny in (
        ("contacts", 100_000, 200),
        ("interactions", 1_000_000, 2000),
        ("lookups", 2000, 100),
        ("warmup", 100, 10),
    ):
        if getattr(args, name) is None:
            setattr(args, name, tiny if mock else full)
    if min(args.contacts, args.interactions, args.lookups, args.repeat) < 1 or args.warmup < 0:
        parser.error("sizes and --repeat must be positive")
    common.mongomock_limit(
        parser,
        args.storage,
        contacts=(args.contacts, MOCK_CAPS["contacts"]),
        interactions=(args.interactions, MOCK_CAPS["interactions"]),
        lookups=(args.lookups, MOCK_CAPS["lookups"]),
    )
    if args.reuse and mock:
        parser.error("--reuse: a mongomock:// database lives only as long as its process")

    common.print_environment(
        "timeline benchmark", "benchmarks/timeline.py", list(argv) if argv is not None else sys.argv[1:]
    )
    common.print_storage(args.storage)
    folder = args.db or Path(tempfile.gettempdir()) / (
        f"carecrm-bench-timeline-{'mongo-' if mongo else ''}{args.contacts}-{args.interactions}"
    )
    folder.mkdir(parents=True, exist_ok=True)
    manifest = folder / MANIFEST
    wanted = _manifest(args.contacts, args.interactions, args.seed, args.storage)
    reused = (
        args.reuse
        and manifest.exists()
        and json.loads(manifest.read_text()) == wanted
        and (mongo or (folder / "carecrm.db").exists())
    )
    if reused:
        print(f"load: reused the database in {folder}")
    else:
        t_c, t_i = load(folder, args.contacts, args.interactions, args.seed, args.storage)
        print(
            f"load: {args.contacts} contacts (+ {args.contacts} identities) in {t_c:.1f} s "
            f"({args.contacts / t_c:,.0f} contacts/s), {args.interactions} interactions in {t_i:.1f} s "
            f"({args.interactions / t_i:,.0f} rows/s), through carecrm's mapper and add_many; "
            + (f"keys in {folder}" if mongo else f"db in {folder}")
        )
    ids = contact_ids(folder, args.storage)
    if mongo:
        where = "MongoDB database " + common.mongo_database_name(args.storage)
    else:
        where = f"db {sum(p.stat().st_size for p in folder.glob('carecrm.db*')) / 2**20:,.0f} MiB"
    print(
        f"data: {len(ids)} contacts, {args.interactions} interactions "
        f"(~{args.interactions / len(ids):.1f} per contact), {where}; "
        f"{args.lookups} lookups per run and side, {args.warmup} warm-up, {args.repeat} run(s)"
    )

    app = common.build_app(folder, create=False, storage=args.storage)
    hand: HandTimeline | HandTimelineMongo = HandTimelineMongo(folder, args.storage) if mongo else HandTimeline(folder)
    p50: dict[str, list[float]] = {"carecrm": [], "hand": []}
    p99: dict[str, list[float]] = {"carecrm": [], "hand": []}
    rows_per = 0.0
    audit_before = hand.audit_count()
    try:
        for k in range(args.repeat):
            rng = random.Random(args.seed + 1 + k)
            sample = [rng.choice(ids) for _ in range(args.lookups + args.warmup)]
            lat_app, lat_hand, rows_app, rows_hand = measure(app, hand, sample, args.warmup)
            if rows_app != rows_hand:
                raise RuntimeError(f"carecrm returned {rows_app} interactions, the hand-written read {rows_hand}")
            rows_per = rows_app / args.lookups
            for name, lat in (("carecrm", lat_app), ("hand", lat_hand)):
                p50[name].append(common.percentile(lat, 0.50) * 1e6)
                p99[name].append(common.percentile(lat, 0.99) * 1e6)
        reads = args.repeat * (args.lookups + args.warmup)
        audits = hand.audit_count() - audit_before
        if mongo:
            print(f"rows per timeline: {rows_per:.1f}; per carecrm read: {audits / reads:.2f} audit entries written")
        else:
            statements, commits = statements_per_read(app, ids[:: max(1, len(ids) // 50)][:50])
            print(
                f"rows per timeline: {rows_per:.1f}; per carecrm read: {audits / reads:.2f} audit entries written, "
                f"{statements:.1f} SQL statements, {commits:.1f} commits (untimed count)"
            )
        print(f"carecrm       : p50 {common.fmt_runs(p50['carecrm'])} us, p99 {common.fmt_runs(p99['carecrm'])} us")
        print(f"hand-written  : p50 {common.fmt_runs(p50['hand'])} us, p99 {common.fmt_runs(p99['hand'])} us")
        med50 = {k: common.summary(v)[0] for k, v in p50.items()}
        med99 = {k: common.summary(v)[0] for k, v in p99.items()}
        per_run = [a / h for a, h in zip(p99["carecrm"], p99["hand"], strict=True)]
        print(f"ratio p50 carecrm/hand-written: {med50['carecrm'] / med50['hand']:.2f}")
        print(
            f"ratio p99 carecrm/hand-written: {med99['carecrm'] / med99['hand']:.2f} "
            f"(per run: {common.fmt_runs(per_run)})"
        )
        met = med99["carecrm"] <= 2 * med99["hand"]
        print(f"target: carecrm p99 <= 2x hand-written: {'MET' if met else 'NOT MET'}")
        if mock:
            print(common.MONGOMOCK_NOTE)
        if args.profile:
            rng = random.Random(args.seed + 1000)
            print("\n-- cProfile of carecrm's lookups")
            print(_profile(app, [rng.choice(ids) for _ in range(args.lookups)], args.profile_top))
    finally:
        hand.close()
        app.close()
    if args.db is None and not args.reuse and not mock:
        print(f"(database kept in {folder}: pass --reuse to skip the load next time)")
    return 0


def cleanup(folder: Path) -> None:
    """Delete a benchmark database folder."""
    shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
