"""Ingest benchmark: web-form leads through ``CareCRM.ingest_payloads`` end to end, beside a
hand-written pipeline doing the same work and the raw SQLite insert of the same rows.

Usage (from the repository root)::

    .venv/bin/python benchmarks/ingest.py --n 5000 --repeat 3 [--batch-size 500] [--keep DIR]

Three pipelines run on the same N JSON webhook payloads (deterministic, seeded), each on
a fresh SQLite file, in alternating order, ``--repeat`` times:

(a) **carecrm**: ``CareCRM.ingest_payloads("webform", payloads)`` with a ``[sources.webform]``
    table of the generic mapped connector: inbox write (encrypted under its own data
    key), parse, normalize, match, encrypt, store, commit, per batch of ``--batch-size``.
(b) **hand-written**: the same work with the same libraries and no framework: stdlib
    ``json``, ``email_validator.validate_email(check_deliverability=False)`` + lowercase,
    ``phonenumbers`` parse + possible/valid + E.164, AES-256-GCM per-contact data keys
    wrapped by a master key, the raw payload stored encrypted under its own key,
    HMAC-SHA256 blind indexes, repeats joined by a batch look-up of the blind indexes in
    sqlite3, rows written with stdlib ``sqlite3`` ``executemany`` in one transaction per
    batch (WAL, synchronous=NORMAL).  It writes the same tables, indexes, rows and
    ciphertexts as carecrm (inbox, contacts, identities, interactions, stage changes,
    one audit entry per batch), on carecrm's own schema (copied from a carecrm database).
(c) **raw**: ``sqlite3.executemany`` of the rows (b) produced, already encrypted, one
    transaction per batch: the storage limit.

Printed: the three rates in leads/s (median [min-max] of the runs), the ratios
carecrm/hand-written and carecrm/raw, and the target line.  ``--profile`` adds a cProfile
of one extra carecrm run (top functions by own and cumulative time).

**MongoDB** (``--storage mongodb://HOST/carecrm_bench`` or ``mongomock://NAME``): (a) runs on
the Mongo backend in that database; (b) is the same pipeline with its storage calls in
pymongo on ``<name>_hand`` (carecrm's collections and indexes, created by the backend):
``find`` with ``$in`` for the digest, blind-index and idempotency look-ups, the batch's
rows turned into the backend's documents (``_id``, BSON UUIDs and dates, sub-documents)
and written at commit by ordered ``insert_many`` per collection, as the backend commits on
a standalone server (on a replica set the backend uses a transaction, this side does not);
(c) is that ordered ``insert_many`` of the same documents in ``<name>_raw``.  Each run
drops those databases first.  On ``mongomock://`` ``--n`` defaults to 300 and is capped
at 2,000, and the figures are printed as a fake's.
"""

from __future__ import annotations

import argparse
import cProfile
import gc
import hashlib
import hmac
import io
import json
import os
import pstats
import random
import shutil
import sys
import tempfile
import time
import unicodedata
import urllib.parse
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import email_validator
import phonenumbers
import uuid6
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

try:
    from benchmarks import common
except ImportError:  # run as a script: python benchmarks/ingest.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from benchmarks import common

SOURCE = "webform"
#: The largest --n on mongomock:// (the fake scans every document in Python).
MOCK_CAP_N = 2000

#: The ``[sources.webform]`` table: the generic mapped connector reading the payloads below.
SOURCE_CONFIG: dict[str, Any] = {
    "connector": "mapped",
    "format": "json",
    "record_id": "submission_id",
    "occurred_at": "submitted_at",
    "time_format": "iso8601",
    "answers": "fields",
    "fields": {
        "email": "fields.email",
        "phone": "fields.phone",
        "first_name": "fields.first_name",
        "last_name": "fields.last_name",
        "service_interest": "fields.service",
        "body": "fields.message",
    },
    "touchpoint": {"form_id": "form_id", "landing_page": "page_url"},
}

FIRST_NAMES = (
    "Maria James Olivia Robert Emma Michael Sophia William Ava David Isabella Joseph Mia Daniel "
    "Charlotte Matthew Amelia Anthony Harper Christopher Evelyn Andrew Abigail Joshua Emily Kevin "
    "Elizabeth Brian Sofia Jason Avery Ryan Ella Eric Scarlett Jacob Grace Nicholas Chloe Tyler "
    "Victoria Brandon Riley Aaron Aria Jose Lily Juan Zoe Luis Nora Carlos Layla Priya Hannah Wei "
    "Fatima Mohammed Aisha Chen Ngozi Dmitri Siobhan José Zoë Renée"
).split()
LAST_NAMES = (
    "Smith Johnson Williams Brown Jones Garcia Miller Davis Rodriguez Martinez Hernandez Lopez "
    "Gonzalez Wilson Anderson Thomas Taylor Moore Jackson Martin Lee Perez Thompson White Harris "
    "Sanchez Clark Ramirez Lewis Robinson Walker Young Allen King Wright Scott Torres Nguyen Hill "
    "Flores Green Adams Nelson Baker Hall Rivera Campbell Mitchell Carter Roberts Patel Kim Okafor "
    "O'Brien Kowalski Müller Peña Dubois Nakamura"
).split()
AREA_CODES = (
    "312 773 872 630 708 847 224 331 779 815 217 309 618 262 414 608 920 219 260 317 "
    "574 765 812 269 313 517 586 616 734 810"
).split()
SERVICES = ("acne", "botox", "mohs", "laser", "eczema", "psoriasis")
PAGES = ("acne-treatment", "botox", "skin-cancer-screening", "laser-hair-removal", "contact", "eczema-care")
CAMPAIGNS = (
    ("google", "cpc", "acne_fall", "gclid"),
    ("facebook", "paid_social", "botox_promo", "fbclid"),
    ("bing", "cpc", "mohs_search", "msclkid"),
    ("newsletter", "email", "november_news", None),
    ("google", "organic", None, None),
    (None, None, None, None),
)
INQUIRY_OPENERS = (
    "Hi, I would like to book a consultation about",
    "Hello, could someone call me back regarding",
    "Do you accept new patients for",
    "I saw your ad and want to know the price of",
    "My dermatologist retired; I need a new provider for",
)
INQUIRY_TAILS = (
    "Weekday mornings work best for me.",
    "I can come in after 4pm most days.",
    "Please text rather than call if possible.",
    "Is there a waiting list at the moment?",
    "I have insurance through my employer.",
)
PREFERRED = ("phone", "email", "text")


# --------------------------------------------------------------------------- data


def _ascii(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(ch for ch in decomposed if ch.isascii() and ch.isalnum())


def _phone_text(rng: random.Random, digits: str) -> str:
    """A 10-digit US number in one of the formats people and form tools send."""
    a, b, c = digits[:3], digits[3:6], digits[6:]
    style = rng.randrange(6)
    if style == 0:
        return f"({a}) {b}-{c}"
    if style == 1:
        return f"{a}.{b}.{c}"
    if style == 2:
        return f"+1 {a} {b} {c}"
    if style == 3:
        return f"{a}-{b}-{c}"
    if style == 4:
        return f"1{a}{b}{c}"
    return f"+1 ({a}) {b}-{c}"


def _email_text(rng: random.Random, local: str) -> str:
    """``first.last{i}@example.com`` in mixed case, sometimes with spaces around."""
    style = rng.randrange(4)
    if style == 0:
        text = local.lower() + "@example.com"
    elif style == 1:
        text = local + "@Example.com"
    elif style == 2:
        text = local.upper() + "@EXAMPLE.COM"
    else:
        text = local + "@example.com"
    if rng.random() < 0.2:
        text = " " + text + "  "
    return text


def make_leads(n: int, *, seed: int = 20261130, repeat_share: float = 0.10) -> tuple[list[bytes], int]:
    """``n`` JSON webhook bodies of web-form leads (deterministic for a seed).

    About ``repeat_share`` of the leads are repeat people: the same person as an earlier
    lead, sharing its email (half of them, with the phone in another format), its email
    with a new phone (a quarter) or its phone with a new email (a quarter), so exact
    matching joins them.

    :returns: the bodies and the number of distinct people.
    """
    rng = random.Random(seed)
    people: list[dict[str, str]] = []
    bodies: list[bytes] = []
    start = datetime(2026, 11, 2, 8, 0, tzinfo=UTC)
    at = start
    for i in range(n):
        at += timedelta(seconds=rng.randint(5, 90))
        if people and rng.random() < repeat_share:
            person = dict(rng.choice(people))
            roll = rng.random()
            if roll < 0.25:  # same email, a new phone
                person["phone"] = _new_phone(len(people) + n + i)
            elif roll < 0.5:  # same phone, a new email
                person["email_local"] = person["email_local"] + "x"
        else:
            first, last = rng.choice(FIRST_NAMES), rng.choice(LAST_NAMES)
            idx = len(people)
            person = {
                "first": first,
                "last": last,
                "email_local": f"{_ascii(first)}.{_ascii(last)}{idx}",
                "phone": _new_phone(idx),
                "service": rng.choice(SERVICES),
            }
            people.append(person)
        source, medium, campaign, click = rng.choice(CAMPAIGNS)
        query: dict[str, str] = {}
        if source:
            query["utm_source"] = source
        if medium:
            query["utm_medium"] = medium
        if campaign:
            query["utm_campaign"] = campaign
        if click:
            query[click] = "Cj0KCQiA" + "".join(rng.choice("abcdefghijklmnopqrstuvwxyz0123456789") for _ in range(24))
        page = rng.choice(PAGES)
        url = f"https://www.lakesidederm.example/{page}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        message = f"{rng.choice(INQUIRY_OPENERS)} {person['service']}. {rng.choice(INQUIRY_TAILS)}"
        doc = {
            "form_id": "contact-us-v3",
            "submission_id": f"sub_{i:08d}",
            "submitted_at": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "page_url": url,
            "fields": {
                "first_name": person["first"],
                "last_name": person["last"],
                "email": _email_text(rng, person["email_local"]),
                "phone": _phone_text(rng, person["phone"]),
                "service": person["service"],
                "message": message,
                "preferred_contact": rng.choice(PREFERRED),
            },
        }
        bodies.append(json.dumps(doc, ensure_ascii=False).encode())
    return bodies, len(people)


def _new_phone(k: int) -> str:
    """A distinct 10-digit US number for person ``k`` (fictional exchange 555 first)."""
    area = AREA_CODES[k % len(AREA_CODES)]
    rest = k // len(AREA_CODES)
    line = rest % 10000
    exchange = 555 + rest // 10000
    return f"{area}{exchange:03d}{line:04d}"


# --------------------------------------------------------------------------- (a) carecrm


def _headers() -> dict[str, str]:
    return {"Content-Type": "application/json", "User-Agent": "FormTool-Webhooks/2.1"}


def run_carecrm(
    bodies: Sequence[bytes], folder: Path, batch_size: int, storage: str | None = None
) -> tuple[float, Any]:
    """Ingest the payloads with carecrm on a fresh database (SQLite in ``folder``, or the
    MongoDB database of ``storage``, dropped first); returns (seconds, report)."""
    from carecrm.core.identity.normalize import normalize_email, normalize_phone
    from carecrm.core.model.domain import RawPayload

    if common.is_mongo(storage):
        assert storage is not None
        common.mongo_client(storage).drop_database(common.mongo_database_name(storage))
    app = common.build_app(folder, sources={SOURCE: SOURCE_CONFIG}, ingest={"batch_size": batch_size}, storage=storage)
    received = datetime.now(UTC)
    payloads = [
        RawPayload(body=b, content_type="application/json", headers=_headers(), received_at=received) for b in bodies
    ]
    # carecrm caches normalized identities per process: start every run cold.
    normalize_email.cache_clear()
    normalize_phone.cache_clear()
    gc.collect()
    try:
        t0 = time.perf_counter()
        report = app.ingest_payloads(SOURCE, payloads, actor=common.actor())
        elapsed = time.perf_counter() - t0
    finally:
        app.close()
    return elapsed, report


def count_statements(bodies: Sequence[bytes], folder: Path, batch_size: int) -> float:
    """SQL statements carecrm sends to the driver per lead (an untimed run; an
    ``executemany`` counts once; BEGIN, SAVEPOINT and RELEASE count)."""
    from sqlalchemy import event

    from carecrm.core.model.domain import RawPayload

    app = common.build_app(folder, sources={SOURCE: SOURCE_CONFIG}, ingest={"batch_size": batch_size})
    received = datetime.now(UTC)
    payloads = [RawPayload(body=b, headers=_headers(), received_at=received) for b in bodies]
    count = 0

    def on_execute(*_args: Any) -> None:
        nonlocal count
        count += 1

    engine = app.storage.engine
    event.listen(engine, "before_cursor_execute", on_execute)
    try:
        app.ingest_payloads(SOURCE, payloads, actor=common.actor())
    finally:
        event.remove(engine, "before_cursor_execute", on_execute)
        app.close()
    return count / len(bodies)


# --------------------------------------------------------------------------- (b) hand-written

_NONCE = 12
_WRAP_AAD = b"carecrm:data-key"
_CHUNK = 500


def _uid() -> str:
    """A UUIDv7 as 32 hex digits (how carecrm's schema stores ids on SQLite)."""
    return uuid6.uuid7().hex


def _ts(value: datetime) -> str:
    """A UTC datetime as SQLAlchemy stores it on SQLite (naive ISO text, ms precision)."""
    value = value.astimezone(UTC)
    return value.replace(microsecond=value.microsecond // 1000 * 1000, tzinfo=None).isoformat(
        sep=" ", timespec="microseconds"
    )


def _fold(name: str | None) -> str | None:
    if not name:
        return None
    decomposed = unicodedata.normalize("NFKD", name)
    folded = " ".join("".join(ch for ch in decomposed if not unicodedata.combining(ch)).casefold().split())
    return folded or None


def _group(tp: dict[str, str]) -> str:
    """A minimal marketing channel group (the same answers as carecrm's defaults here)."""
    if "gclid" in tp or "msclkid" in tp:
        return "paid_search"
    medium, source = tp.get("medium", ""), tp.get("source", "")
    if "fbclid" in tp and medium in ("cpc", "paid", "paid_social", "cpm"):
        return "paid_social"
    if source in ("facebook", "instagram") and medium in ("cpc", "paid", "paid_social", "cpm"):
        return "paid_social"
    if source in ("google", "bing") and medium in ("cpc", "ppc", "paid"):
        return "paid_search"
    if medium == "email" or source == "newsletter":
        return "email"
    if medium == "organic":
        return "organic_search"
    if not (source or medium):
        return "direct"
    return "other"


@dataclass
class Rows:
    """Rows a pipeline wrote, per batch and table (kept for the raw-insert baseline)."""

    batches: list[dict[str, list[tuple[Any, ...]]]] = field(default_factory=list)


_INSERTS: dict[str, str] = {
    "inbox": "INSERT INTO inbox (id, source, received_at, status, reason, key_version, wrapped_key, payload_enc, "
    "digest, processed_at, attempts) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
    "contacts": "INSERT INTO contacts (id, created_at, updated_at, version, status, merged_into, key_version, "
    "wrapped_key, pii_enc, name_bidx, family_name_bidx, name_confidence, pipeline, stage, stage_changed_at, "
    "service_interest, location, city, postal_prefix, owner, score, first_source) "
    "VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "identities": "INSERT INTO identities (id, contact_id, kind, bidx, value_enc, source, verified, valid, created_at) "
    "VALUES (?,?,?,?,?,?,?,?,?)",
    "interactions": "INSERT INTO interactions (id, contact_id, kind, occurred_at, recorded_at, source, "
    "idempotency_key, channel, direction, location, campaign, channel_group, touchpoint, attributes, body_enc, "
    "actor, inbox_id) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
    "stage_changes": "INSERT INTO stage_changes (id, contact_id, pipeline, from_stage, to_stage, changed_at, actor, "
    "reason, implied_by) VALUES (?,?,?,?,?,?,?,?,?)",
    "audit_log": "INSERT INTO audit_log (seq, id, at, actor, role, action, contact_id, purpose, fields, details, "
    "prev_hash, hash) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
}
_TABLE_ORDER = ("inbox", "contacts", "identities", "interactions", "stage_changes", "audit_log")


class HandWritten:
    """The same ingest work as carecrm with stdlib ``sqlite3`` and the crypto and
    normalization libraries called directly (see the module docstring, (b))."""

    def __init__(self, store: SqliteStore | MongoStore, batch_size: int) -> None:
        self.store = store
        self.batch_size = batch_size
        self.master = AESGCM(os.urandom(32))
        self.bidx_key = os.urandom(32)
        self.audit_key = os.urandom(32)
        self.rows = Rows()
        self.seq = 0
        self.prev_hash: str | None = None

    # -- crypto helpers (the same constructions as carecrm's key ring)

    def _bidx(self, kind: str, value: str) -> str:
        return hmac.new(self.bidx_key, f"{kind}\x1f{value}".encode(), hashlib.sha256).hexdigest()

    def _new_key(self) -> tuple[AESGCM, bytes]:
        raw = os.urandom(32)
        nonce = os.urandom(_NONCE)
        return AESGCM(raw), nonce + self.master.encrypt(nonce, raw, _WRAP_AAD)

    def _unwrap(self, wrapped: bytes) -> AESGCM:
        return AESGCM(self.master.decrypt(wrapped[:_NONCE], wrapped[_NONCE:], _WRAP_AAD))

    @staticmethod
    def _enc(aes: AESGCM, data: bytes, aad: str) -> bytes:
        nonce = os.urandom(_NONCE)
        return nonce + aes.encrypt(nonce, data, aad.encode())

    # -- the pipeline

    def run(self, bodies: Sequence[bytes], received: datetime) -> None:
        """Ingest every body, ``batch_size`` per transaction."""
        for start in range(0, len(bodies), self.batch_size):
            self._batch(bodies[start : start + self.batch_size], received)

    def _batch(self, bodies: Sequence[bytes], received: datetime) -> None:
        store = self.store
        now = datetime.now(UTC)
        now_s = _ts(now)
        received_s = _ts(received)
        out: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _TABLE_ORDER}

        # 1. inbox: skip byte-identical re-deliveries, store each payload encrypted
        digests = [
            hmac.new(self.bidx_key, b"inbox\x1f" + SOURCE.encode() + b"\x1f" + b, hashlib.sha256).hexdigest()
            for b in bodies
        ]
        seen: set[str] = set()
        for chunk in _chunks(digests):
            seen.update(store.inbox_digests(chunk))
        envelope = json.dumps(
            {"content_type": "application/json", "headers": _headers(), "url": None, "origin": None},
            separators=(",", ":"),
        ).encode()
        todo: list[tuple[str, bytes]] = []
        for body, digest in zip(bodies, digests, strict=True):
            if digest in seen:
                continue
            seen.add(digest)
            iid = _uid()
            aes, wrapped = self._new_key()
            enc = self._enc(aes, envelope + b"\n" + body, f"inbox:{iid}")
            out["inbox"].append((iid, SOURCE, received_s, "received", None, "k1", wrapped, enc, digest, None, 0))
            todo.append((iid, body))
        store.begin()
        store.insert("inbox", out["inbox"])

        # 2. parse and normalize
        leads: list[dict[str, Any]] = []
        for iid, body in todo:
            doc = json.loads(body)
            f = doc["fields"]
            email = email_validator.validate_email(f["email"].strip(), check_deliverability=False).normalized.lower()
            number = phonenumbers.parse(f["phone"].strip(), "US")
            if not phonenumbers.is_possible_number(number):
                continue
            e164 = phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)
            parts = urllib.parse.urlsplit(doc["page_url"])
            tp: dict[str, str] = {"form_id": doc["form_id"]}
            for key, value in urllib.parse.parse_qsl(parts.query):
                name = {"utm_source": "source", "utm_medium": "medium", "utm_campaign": "campaign"}.get(key, key)
                if name in ("source", "medium", "campaign", "gclid", "fbclid", "msclkid"):
                    tp[name] = value
            tp["landing_page"] = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))
            leads.append(
                {
                    "inbox": iid,
                    "ref": str(doc["submission_id"]),
                    "at": datetime.fromisoformat(doc["submitted_at"]),
                    "first": f["first_name"],
                    "last": f["last_name"],
                    "email": email,
                    "email_raw": f["email"].strip(),
                    "phone": e164,
                    "phone_raw": f["phone"].strip(),
                    "valid": phonenumbers.is_valid_number(number),
                    "service": f["service"],
                    "message": f["message"],
                    "tp": tp,
                    "keys": [("email", self._bidx("email", email)), ("phone", self._bidx("phone", e164))],
                }
            )

        # 3. look up the batch's blind indexes and interaction keys (one query per chunk)
        known: dict[tuple[str, str], str] = {}
        all_keys = list({k for lead in leads for k in lead["keys"]})
        for chunk in _chunks(all_keys):
            for cid, kind, bidx in store.identities([b for _, b in chunk]):
                known.setdefault((kind, bidx), cid)
        stored_keys: set[str] = set()
        idem = [f"form.submitted:{lead['ref']}" for lead in leads]
        for chunk in _chunks(idem):
            stored_keys.update(store.existing_keys(chunk))

        # 4. match, encrypt, build rows
        batch_keys: dict[str, AESGCM] = {}
        have: set[tuple[str, str, str]] = set()
        contacts = created = added = 0
        for lead, key in zip(leads, idem, strict=True):
            if key in stored_keys:
                continue
            stored_keys.add(key)
            cid = next((known[k] for k in lead["keys"] if k in known), None)
            if cid is None:
                cid = _uid()
                aes, wrapped = self._new_key()
                batch_keys[cid] = aes
                pii = json.dumps({"first_name": lead["first"], "last_name": lead["last"]}, ensure_ascii=False)
                full, family = _fold(f"{lead['first']} {lead['last']}"), _fold(lead["last"])
                since = _ts(min(lead["at"], now))
                out["contacts"].append(
                    (
                        cid,
                        now_s,
                        now_s,
                        1,
                        "active",
                        None,
                        "k1",
                        wrapped,
                        self._enc(aes, pii.encode(), f"contact:{cid}:pii"),
                        self._bidx("name", full) if full else None,
                        self._bidx("family_name", family) if family else None,
                        "high",
                        "default",
                        "new_lead",
                        since,
                        lead["service"],
                        None,
                        None,
                        None,
                        None,
                        None,
                        SOURCE,
                    )
                )
                out["stage_changes"].append(
                    (_uid(), cid, "default", None, "new_lead", since, "benchmark", f"created from {SOURCE}", None)
                )
                created += 1
            else:
                aes = batch_keys.get(cid)
                if aes is None:
                    wrapped = store.wrapped_key(cid)
                    aes = batch_keys[cid] = self._unwrap(wrapped)
            contacts += 1
            for (kind, bidx), value, raw in zip(
                lead["keys"], (lead["email"], lead["phone"]), (lead["email_raw"], lead["phone_raw"]), strict=True
            ):
                if known.get((kind, bidx)) == cid or (cid, kind, bidx) in have:
                    continue
                rid = _uid()
                doc = {"v": value, "d": raw} if raw != value else {"v": value}
                out["identities"].append(
                    (
                        rid,
                        cid,
                        kind,
                        bidx,
                        self._enc(aes, json.dumps(doc, separators=(",", ":")).encode(), f"identity:{rid}"),
                        SOURCE,
                        0,
                        (1 if lead["valid"] else 0) if kind == "phone" else None,
                        now_s,
                    )
                )
                have.add((cid, kind, bidx))
                known.setdefault((kind, bidx), cid)
            xid = _uid()
            tp = lead["tp"]
            out["interactions"].append(
                (
                    xid,
                    cid,
                    "form.submitted",
                    _ts(lead["at"]),
                    now_s,
                    SOURCE,
                    key,
                    "web",
                    "inbound",
                    None,
                    tp.get("campaign"),
                    _group(tp),
                    json.dumps({**tp, "channel_group": _group(tp)}, separators=(",", ":")),
                    json.dumps({"external_record_id": lead["ref"]}, separators=(",", ":")),
                    self._enc(aes, lead["message"].encode(), f"interaction:{xid}:body"),
                    "benchmark",
                    lead["inbox"],
                )
            )
            added += 1

        # 5. write, mark the payloads processed, audit, commit
        for table in ("contacts", "identities", "interactions", "stage_changes"):
            if out[table]:
                store.insert(table, out[table])
        store.mark_processed(now_s, [iid for iid, _ in todo])
        self.seq += 1
        details = {"records": len(leads), "contacts_created": created, "interactions_added": added}
        audit_id = _uid()
        entry = json.dumps(
            [self.seq, audit_id, now.isoformat(), "benchmark", "admin", "ingest", None, None, [], details],
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
        digest = hmac.new(self.audit_key, (self.prev_hash or "").encode() + b"\x1e" + entry, hashlib.sha256).hexdigest()
        out["audit_log"].append(
            (
                self.seq,
                audit_id,
                now_s,
                "benchmark",
                "admin",
                "ingest",
                None,
                None,
                "[]",
                json.dumps(details),
                self.prev_hash,
                digest,
            )
        )
        store.insert("audit_log", out["audit_log"])
        self.prev_hash = digest
        store.commit()
        # the raw baseline inserts the final inbox rows (status processed)
        out["inbox"] = [r[:3] + ("processed", None) + r[5:9] + (now_s, 1) for r in out["inbox"]]
        self.rows.batches.append(out)

    def close(self) -> None:
        """Close the store."""
        self.store.close()


class SqliteStore:
    """The hand-written pipeline's storage calls on stdlib ``sqlite3`` (carecrm's schema)."""

    def __init__(self, db: Path, schema: Sequence[str]) -> None:
        self.con = common.open_sqlite(db)
        for ddl in schema:
            self.con.execute(ddl)

    def inbox_digests(self, chunk: Sequence[str]) -> list[str]:
        """Which digests are stored for the source."""
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT digest FROM inbox WHERE source=? AND digest IN ({marks})"
        return [r[0] for r in self.con.execute(sql, [SOURCE, *chunk])]

    def identities(self, bidxs: Sequence[str]) -> list[tuple[str, str, str]]:
        """(contact id, kind, bidx) of the email/phone identities with these blind indexes."""
        marks = ",".join("?" * len(bidxs))
        sql = f"SELECT contact_id, kind, bidx FROM identities WHERE kind IN ('email','phone') AND bidx IN ({marks})"
        return list(self.con.execute(sql, list(bidxs)))

    def existing_keys(self, chunk: Sequence[str]) -> list[str]:
        """Which interaction idempotency keys are stored for the source."""
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT idempotency_key FROM interactions WHERE source=? AND idempotency_key IN ({marks})"
        return [r[0] for r in self.con.execute(sql, [SOURCE, *chunk])]

    def wrapped_key(self, cid: str) -> bytes:
        """A contact's wrapped data key."""
        return bytes(self.con.execute("SELECT wrapped_key FROM contacts WHERE id=?", (cid,)).fetchone()[0])

    def begin(self) -> None:
        """Start the batch's transaction."""
        self.con.execute("BEGIN")

    def insert(self, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """``executemany`` of the rows."""
        self.con.executemany(_INSERTS[table], rows)

    def mark_processed(self, now_s: str, inbox_ids: Sequence[str]) -> None:
        """The batch's payloads are processed."""
        self.con.executemany(
            "UPDATE inbox SET status='processed', reason=NULL, processed_at=?, attempts=1 WHERE id=?",
            [(now_s, iid) for iid in inbox_ids],
        )

    def commit(self) -> None:
        """Commit the batch."""
        self.con.execute("COMMIT")

    def close(self) -> None:
        """Close the connection."""
        self.con.close()


# The rows (b) builds, as the Mongo backend's documents: id -> _id (audit: seq -> _id),
# ids -> BSON UUIDs, times -> dates, JSON text -> sub-documents, 0/1 flags -> booleans.
_COLUMNS = {t: sql.split("(", 1)[1].split(")", 1)[0].replace(" ", "").split(",") for t, sql in _INSERTS.items()}
_UUID_COLUMNS = {"id", "contact_id", "inbox_id", "merged_into", "implied_by"}
_TIME_COLUMNS = {
    "received_at", "processed_at", "created_at", "updated_at", "stage_changed_at", "occurred_at", "recorded_at",
    "changed_at", "at",
}  # fmt: skip
_JSON_COLUMNS = {"touchpoint", "attributes", "details", "fields"}
_BOOL_COLUMNS = {"verified", "valid"}


def _bson_uuid(hex_id: str) -> Any:
    from bson.binary import Binary, UuidRepresentation

    return Binary.from_uuid(uuid.UUID(hex_id), UuidRepresentation.STANDARD)


def _value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column in _UUID_COLUMNS:
        return _bson_uuid(value)
    if column in _TIME_COLUMNS:
        return datetime.fromisoformat(value).replace(tzinfo=UTC)
    if column in _JSON_COLUMNS:
        return json.loads(value)
    if column in _BOOL_COLUMNS:
        return bool(value)
    return value


def to_documents(table: str, rows: Sequence[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Rows of ``table`` as the Mongo backend's documents (same collections and fields)."""
    key = "seq" if table == "audit_log" else "id"
    out = []
    for row in rows:
        doc = {c: _value(c, v) for c, v in zip(_COLUMNS[table], row, strict=True)}
        doc["_id"] = doc.pop(key)
        out.append(doc)
    return out


class MongoStore:
    """The hand-written pipeline's storage calls on pymongo, on a database with carecrm's
    collections and indexes: the batch's documents are buffered and written at commit
    with ordered ``insert_many`` per collection (audit, contacts ... inbox last), as the
    Mongo backend commits on a standalone server (no transaction)."""

    def __init__(self, storage: str, database: str) -> None:
        self.db = common.mongo_client(storage)[database]
        self.pending: dict[str, list[dict[str, Any]]] = {}

    def inbox_digests(self, chunk: Sequence[str]) -> list[str]:
        """Which digests are stored for the source."""
        docs = self.db.inbox.find({"source": SOURCE, "digest": {"$in": list(chunk)}}, {"digest": 1, "_id": 0})
        return [d["digest"] for d in docs]

    def identities(self, bidxs: Sequence[str]) -> list[tuple[str, str, str]]:
        """(contact id hex, kind, bidx) of the email/phone identities with these blind indexes."""
        query = {"kind": {"$in": ["email", "phone"]}, "bidx": {"$in": list(bidxs)}}
        docs = self.db.identities.find(query, {"contact_id": 1, "kind": 1, "bidx": 1, "_id": 0})
        return [(timeline_uuid(d["contact_id"]).hex, d["kind"], d["bidx"]) for d in docs]

    def existing_keys(self, chunk: Sequence[str]) -> list[str]:
        """Which interaction idempotency keys are stored for the source."""
        query = {"source": SOURCE, "idempotency_key": {"$in": list(chunk)}}
        return [d["idempotency_key"] for d in self.db.interactions.find(query, {"idempotency_key": 1, "_id": 0})]

    def wrapped_key(self, cid: str) -> bytes:
        """A contact's wrapped data key."""
        doc = self.db.contacts.find_one({"_id": _bson_uuid(cid)}, {"wrapped_key": 1})
        return bytes(doc["wrapped_key"])

    def begin(self) -> None:
        """Start buffering the batch."""
        self.pending = {}

    def insert(self, table: str, rows: Sequence[tuple[Any, ...]]) -> None:
        """Buffer the rows as documents."""
        self.pending.setdefault(table, []).extend(to_documents(table, rows))

    def mark_processed(self, now_s: str, inbox_ids: Sequence[str]) -> None:
        """The batch's (buffered) payloads are processed."""
        done = set(inbox_ids)
        at = datetime.fromisoformat(now_s).replace(tzinfo=UTC)
        for doc in self.pending.get("inbox", []):
            if timeline_uuid(doc["_id"]).hex in done:
                doc.update(status="processed", reason=None, processed_at=at, attempts=1)

    def commit(self) -> None:
        """Write the buffer, collection by collection."""
        write_documents(self.db, self.pending)
        self.pending = {}

    def close(self) -> None:
        """Nothing to close (the client is shared)."""


#: The order the documents of a batch are written in on MongoDB (the backend's: audit
#: entry first, idempotency markers and the inbox status last).
_MONGO_ORDER = ("audit_log", "contacts", "identities", "stage_changes", "interactions", "inbox")


def write_documents(db: Any, docs: dict[str, list[dict[str, Any]]]) -> None:
    """Ordered ``insert_many`` per collection in :data:`_MONGO_ORDER`."""
    for table in _MONGO_ORDER:
        if docs.get(table):
            db[table].insert_many(docs[table], ordered=True)


def timeline_uuid(value: Any) -> uuid.UUID:
    """A stored id as a UUID (pymongo decodes BSON subtype 4; mongomock returns the Binary)."""
    from bson.binary import Binary, UuidRepresentation

    return value.as_uuid(UuidRepresentation.STANDARD) if isinstance(value, Binary) else value


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def _fresh_mongo(storage: str, suffix: str) -> str:
    """Drop and recreate (carecrm's collections and indexes) the database ``<base><suffix>``."""
    name = common.mongo_database_name(storage) + suffix
    common.mongo_client(storage).drop_database(name)
    common.create_mongo_schema(storage, name)
    return name


def run_handwritten(
    bodies: Sequence[bytes], folder: Path, schema: Sequence[str], batch_size: int, storage: str | None = None
) -> tuple[float, Rows]:
    """The hand-written pipeline on a fresh database (SQLite, or with a MongoDB ``storage``
    URL the database ``<name>_hand`` there); returns (seconds, rows written)."""
    folder.mkdir(parents=True, exist_ok=True)
    store: SqliteStore | MongoStore
    if common.is_mongo(storage):
        assert storage is not None
        store = MongoStore(storage, _fresh_mongo(storage, "_hand"))
    else:
        store = SqliteStore(folder / "hand.db", schema)
    pipeline = HandWritten(store, batch_size)
    received = datetime.now(UTC)
    gc.collect()
    try:
        t0 = time.perf_counter()
        pipeline.run(bodies, received)
        elapsed = time.perf_counter() - t0
    finally:
        pipeline.close()
    return elapsed, pipeline.rows


# --------------------------------------------------------------------------- (c) raw


def run_raw(rows: Rows, folder: Path, schema: Sequence[str], storage: str | None = None) -> float:
    """``executemany`` of already-encrypted rows, one transaction per batch; returns seconds.
    With a MongoDB ``storage`` URL: ordered ``insert_many`` of the same rows as documents
    (converted before the clock starts) per collection and batch, in ``<name>_raw``."""
    folder.mkdir(parents=True, exist_ok=True)
    if common.is_mongo(storage):
        assert storage is not None
        db = common.mongo_client(storage)[_fresh_mongo(storage, "_raw")]
        docs = [{t: to_documents(t, batch[t]) for t in _TABLE_ORDER} for batch in rows.batches]
        gc.collect()
        t0 = time.perf_counter()
        for batch_docs in docs:
            write_documents(db, batch_docs)
        return time.perf_counter() - t0
    con = common.open_sqlite(folder / "raw.db")
    for ddl in schema:
        con.execute(ddl)
    gc.collect()
    try:
        t0 = time.perf_counter()
        for batch in rows.batches:
            con.execute("BEGIN")
            for table in _TABLE_ORDER:
                if batch[table]:
                    con.executemany(_INSERTS[table], batch[table])
            con.execute("COMMIT")
        elapsed = time.perf_counter() - t0
    finally:
        con.close()
    return elapsed


# --------------------------------------------------------------------------- main


def _schema(folder: Path) -> list[str]:
    """carecrm's SQLite schema (tables and indexes), read from a fresh carecrm database."""
    app = common.build_app(folder / "schema")
    app.close()
    return common.sqlite_schema(folder / "schema" / "carecrm.db")


def _profile(bodies: Sequence[bytes], folder: Path, batch_size: int, top: int, storage: str | None = None) -> str:
    """cProfile of one carecrm run: the top functions by own time and by cumulative time."""
    profiler = cProfile.Profile()
    from carecrm.core.identity.normalize import normalize_email, normalize_phone
    from carecrm.core.model.domain import RawPayload

    if common.is_mongo(storage):
        assert storage is not None
        common.mongo_client(storage).drop_database(common.mongo_database_name(storage))
    app = common.build_app(folder, sources={SOURCE: SOURCE_CONFIG}, ingest={"batch_size": batch_size}, storage=storage)
    received = datetime.now(UTC)
    payloads = [
        RawPayload(body=b, content_type="application/json", headers=_headers(), received_at=received) for b in bodies
    ]
    normalize_email.cache_clear()
    normalize_phone.cache_clear()
    profiler.enable()
    app.ingest_payloads(SOURCE, payloads, actor=common.actor())
    profiler.disable()
    app.close()
    buf = io.StringIO()
    stats = pstats.Stats(profiler, stream=buf)
    stats.sort_stats("tottime").print_stats(top)
    stats.sort_stats("cumulative").print_stats(top)
    return buf.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ingest benchmark; see the module docstring.  Returns 0."""
    parser = argparse.ArgumentParser(prog="benchmarks/ingest.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=None, help="leads (payloads) to ingest (default 5000; mongomock 300)")
    parser.add_argument("--batch-size", type=int, default=500, help="leads per transaction (default 500)")
    parser.add_argument("--seed", type=int, default=20261130, help="data seed")
    parser.add_argument("--keep", type=Path, default=None, help="keep the databases in this folder")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one carecrm run")
    parser.add_argument("--profile-top", type=int, default=30, help="functions per profile table (default 30)")
    common.add_repeat(parser)
    common.add_storage(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    common.check_storage(parser, args.storage)
    mongo, mock = common.is_mongo(args.storage), common.is_mongomock(args.storage)
    if args.n is None:
        args.n = 300 if mock else 5000
    common.mongomock_limit(parser, args.storage, n=(args.n, MOCK_CAP_N))
    if args.n < 1 or args.repeat < 1 or args.batch_size < 1:
        parser.error("--n, --repeat and --batch-size must be positive")

    common.print_environment(
        "ingest benchmark", "benchmarks/ingest.py", list(argv) if argv is not None else sys.argv[1:]
    )
    common.print_storage(args.storage)
    bodies, people = make_leads(args.n, seed=args.seed)
    avg = sum(len(b) for b in bodies) / len(bodies)
    print(
        f"data: {args.n} web-form leads (JSON, {avg:.0f} B avg), {people} distinct people "
        f"({args.n - people} repeat leads), batch size {args.batch_size}, {args.repeat} run(s)"
    )
    root = args.keep or Path(tempfile.mkdtemp(prefix="carecrm-bench-ingest-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        schema = _schema(root)
        rates: dict[str, list[float]] = {"carecrm": [], "hand": [], "raw": []}
        report = None
        for k in range(args.repeat):
            order = ("carecrm", "hand", "raw") if k % 2 == 0 else ("hand", "raw", "carecrm")
            rows: Rows | None = None
            for name in order:
                run_dir = root / f"run{k}"
                if name == "carecrm":
                    seconds, report = run_carecrm(bodies, run_dir / "carecrm", args.batch_size, args.storage)
                elif name == "hand":
                    seconds, rows = run_handwritten(bodies, run_dir / "hand", schema, args.batch_size, args.storage)
                else:
                    assert rows is not None
                    seconds = run_raw(rows, run_dir / "raw", schema, args.storage)
                rates[name].append(args.n / seconds)
            if k == args.repeat - 1 and mongo:
                client, base = common.mongo_client(args.storage), common.mongo_database_name(args.storage)
                written = {
                    side: {t: client[base + suffix][t].count_documents({}) for t in _TABLE_ORDER}
                    for side, suffix in (("carecrm", ""), ("hand", "_hand"))
                }
            elif k == args.repeat - 1:
                written = {
                    "carecrm": common.table_counts(root / f"run{k}" / "carecrm" / "carecrm.db", _TABLE_ORDER),
                    "hand": common.table_counts(root / f"run{k}" / "hand" / "hand.db", _TABLE_ORDER),
                }
            if args.keep is None:
                shutil.rmtree(root / f"run{k}", ignore_errors=True)
        assert report is not None
        print(
            f"carecrm report (last run): payloads {report.payloads}, contacts created {report.contacts_created}, "
            f"interactions added {report.interactions_added}, quarantined {len(report.quarantined)}, "
            f"warnings {len(report.warnings)}"
        )
        for name, label in (("carecrm", "carecrm     "), ("hand", "hand-written")):
            print(f"rows written (last run), {label}: " + ", ".join(f"{t} {n}" for t, n in written[name].items()))
        if not mongo:
            calls = count_statements(bodies[: min(len(bodies), 1000)], root / "count", args.batch_size)
            print(f"carecrm SQL statements per lead (untimed pass over {min(len(bodies), 1000)} leads): {calls:.2f}")
        print(f"carecrm       : {common.fmt_runs(rates['carecrm'])} leads/s")
        print(f"hand-written  : {common.fmt_runs(rates['hand'])} leads/s")
        print(f"{'raw pymongo ' if mongo else 'raw sqlite3 '}  : {common.fmt_runs(rates['raw'])} leads/s")
        med = {k: common.summary(v)[0] for k, v in rates.items()}
        per_run_hand = [c / h for c, h in zip(rates["carecrm"], rates["hand"], strict=True)]
        per_run_raw = [c / r for c, r in zip(rates["carecrm"], rates["raw"], strict=True)]
        print(
            f"ratio carecrm/hand-written: {med['carecrm'] / med['hand']:.3f} (per run: {common.fmt_runs(per_run_hand)})"
        )
        print(f"ratio carecrm/raw: {med['carecrm'] / med['raw']:.3f} (per run: {common.fmt_runs(per_run_raw)})")
        met = med["carecrm"] / med["hand"] >= 0.5
        print(f"target: carecrm >= 50% of hand-written: {'MET' if met else 'NOT MET'}")
        if mock:
            print(common.MONGOMOCK_NOTE)
        if args.profile:
            print("\n-- cProfile of one carecrm run")
            print(_profile(bodies, root / "profile", args.batch_size, args.profile_top, args.storage))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
