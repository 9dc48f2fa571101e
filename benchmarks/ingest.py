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


def run_carecrm(bodies: Sequence[bytes], folder: Path, batch_size: int) -> tuple[float, Any]:
    """Ingest the payloads with carecrm on a fresh database; returns (seconds, report)."""
    from carecrm.core.identity import normalize_email, normalize_phone
    from carecrm.core.models import RawPayload

    app = common.build_app(folder, sources={SOURCE: SOURCE_CONFIG}, ingest={"batch_size": batch_size})
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
        report = app.ingest_payloads(SOURCE, payloads)
        elapsed = time.perf_counter() - t0
    finally:
        app.close()
    return elapsed, report


def count_statements(bodies: Sequence[bytes], folder: Path, batch_size: int) -> float:
    """SQL statements carecrm sends to the driver per lead (an untimed run; an
    ``executemany`` counts once; BEGIN, SAVEPOINT and RELEASE count)."""
    from sqlalchemy import event

    from carecrm.core.models import RawPayload

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
        app.ingest_payloads(SOURCE, payloads)
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

    def __init__(self, db: Path, schema: Sequence[str], batch_size: int) -> None:
        self.con = common.open_sqlite(db)
        for ddl in schema:
            self.con.execute(ddl)
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
        con = self.con
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
            marks = ",".join("?" * len(chunk))
            seen.update(
                r[0]
                for r in con.execute(
                    f"SELECT digest FROM inbox WHERE source=? AND digest IN ({marks})", [SOURCE, *chunk]
                )
            )
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
        con.execute("BEGIN")
        con.executemany(_INSERTS["inbox"], out["inbox"])

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
            marks = ",".join("?" * len(chunk))
            for cid, kind, bidx in con.execute(
                f"SELECT contact_id, kind, bidx FROM identities WHERE kind IN ('email','phone') AND bidx IN ({marks})",
                [b for _, b in chunk],
            ):
                known.setdefault((kind, bidx), cid)
        stored_keys: set[str] = set()
        idem = [f"form.submitted:{lead['ref']}" for lead in leads]
        for chunk in _chunks(idem):
            marks = ",".join("?" * len(chunk))
            stored_keys.update(
                r[0]
                for r in con.execute(
                    f"SELECT idempotency_key FROM interactions WHERE source=? AND idempotency_key IN ({marks})",
                    [SOURCE, *chunk],
                )
            )

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
                    wrapped = con.execute("SELECT wrapped_key FROM contacts WHERE id=?", (cid,)).fetchone()[0]
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
                con.executemany(_INSERTS[table], out[table])
        con.executemany(
            "UPDATE inbox SET status='processed', reason=NULL, processed_at=?, attempts=1 WHERE id=?",
            [(now_s, iid) for iid, _ in todo],
        )
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
        con.execute(_INSERTS["audit_log"], out["audit_log"][0])
        self.prev_hash = digest
        con.execute("COMMIT")
        # the raw baseline inserts the final inbox rows (status processed)
        out["inbox"] = [r[:3] + ("processed", None) + r[5:9] + (now_s, 1) for r in out["inbox"]]
        self.rows.batches.append(out)

    def close(self) -> None:
        """Close the connection."""
        self.con.close()


def _chunks(items: Sequence[Any], size: int = _CHUNK) -> list[Sequence[Any]]:
    return [items[i : i + size] for i in range(0, len(items), size)]


def run_handwritten(
    bodies: Sequence[bytes], folder: Path, schema: Sequence[str], batch_size: int
) -> tuple[float, Rows]:
    """The hand-written pipeline on a fresh database; returns (seconds, rows written)."""
    folder.mkdir(parents=True, exist_ok=True)
    pipeline = HandWritten(folder / "hand.db", schema, batch_size)
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


def run_raw(rows: Rows, folder: Path, schema: Sequence[str]) -> float:
    """``executemany`` of already-encrypted rows, one transaction per batch; returns seconds."""
    folder.mkdir(parents=True, exist_ok=True)
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


def _profile(bodies: Sequence[bytes], folder: Path, batch_size: int, top: int) -> str:
    """cProfile of one carecrm run: the top functions by own time and by cumulative time."""
    profiler = cProfile.Profile()
    from carecrm.core.identity import normalize_email, normalize_phone
    from carecrm.core.models import RawPayload

    app = common.build_app(folder, sources={SOURCE: SOURCE_CONFIG}, ingest={"batch_size": batch_size})
    received = datetime.now(UTC)
    payloads = [
        RawPayload(body=b, content_type="application/json", headers=_headers(), received_at=received) for b in bodies
    ]
    normalize_email.cache_clear()
    normalize_phone.cache_clear()
    profiler.enable()
    app.ingest_payloads(SOURCE, payloads)
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
    parser.add_argument("--n", type=int, default=5000, help="leads (payloads) to ingest (default 5000)")
    parser.add_argument("--batch-size", type=int, default=500, help="leads per transaction (default 500)")
    parser.add_argument("--seed", type=int, default=20261130, help="data seed")
    parser.add_argument("--keep", type=Path, default=None, help="keep the databases in this folder")
    parser.add_argument("--profile", action="store_true", help="also print a cProfile of one carecrm run")
    parser.add_argument("--profile-top", type=int, default=30, help="functions per profile table (default 30)")
    common.add_repeat(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.n < 1 or args.repeat < 1 or args.batch_size < 1:
        parser.error("--n, --repeat and --batch-size must be positive")

    common.print_environment(
        "ingest benchmark", "benchmarks/ingest.py", list(argv) if argv is not None else sys.argv[1:]
    )
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
                    seconds, report = run_carecrm(bodies, run_dir / "carecrm", args.batch_size)
                elif name == "hand":
                    seconds, rows = run_handwritten(bodies, run_dir / "hand", schema, args.batch_size)
                else:
                    assert rows is not None
                    seconds = run_raw(rows, run_dir / "raw", schema)
                rates[name].append(args.n / seconds)
            if k == args.repeat - 1:
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
        calls = count_statements(bodies[: min(len(bodies), 1000)], root / "count", args.batch_size)
        print(f"carecrm SQL statements per lead (untimed pass over {min(len(bodies), 1000)} leads): {calls:.2f}")
        print(f"carecrm       : {common.fmt_runs(rates['carecrm'])} leads/s")
        print(f"hand-written  : {common.fmt_runs(rates['hand'])} leads/s")
        print(f"raw sqlite3   : {common.fmt_runs(rates['raw'])} leads/s")
        med = {k: common.summary(v)[0] for k, v in rates.items()}
        per_run_hand = [c / h for c, h in zip(rates["carecrm"], rates["hand"], strict=True)]
        per_run_raw = [c / r for c, r in zip(rates["carecrm"], rates["raw"], strict=True)]
        print(
            f"ratio carecrm/hand-written: {med['carecrm'] / med['hand']:.3f} (per run: {common.fmt_runs(per_run_hand)})"
        )
        print(f"ratio carecrm/raw: {med['carecrm'] / med['raw']:.3f} (per run: {common.fmt_runs(per_run_raw)})")
        met = med["carecrm"] / med["hand"] >= 0.5
        print(f"target: carecrm >= 50% of hand-written: {'MET' if met else 'NOT MET'}")
        if args.profile:
            print("\n-- cProfile of one carecrm run")
            print(_profile(bodies, root / "profile", args.batch_size, args.profile_top))
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
