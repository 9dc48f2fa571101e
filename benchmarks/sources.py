"""Sources benchmark: every vendor corpus file ingested N times with fresh event ids,
through its built-in connector and ``CareCRM.ingest_payloads`` on SQLite.

Usage (from the repository root)::

    .venv/bin/python benchmarks/sources.py [--n 1000] [--repeat 3] [--corpus DIR] [--vendor NAME ...]

**Data**: the payload files of every corpus folder (``../shared/corpus`` or
``$CARECRM_TEST_CORPUS``, :func:`carecrm.core.testing.resources.corpus_dir`) whose vendor
has a built-in connector, read as ``carecrm ingest VENDOR FOLDER`` reads them
(:func:`carecrm.cli.payloads.expand_paths`: notes and ``*.meta.json`` skipped; the content
type guessed from the file name).  Each file is copied ``--n`` times with *fresh event
ids*: the fields that make an event new to its vendor's connector (:data:`FRESH_IDS`, a
few regular expressions per vendor: Twilio's ``MessageSid``, SendGrid's ``sg_event_id``,
SES's SNS ``MessageId`` and the SES ``messageId`` inside the escaped ``Message``, ...)
get their last six characters replaced by the copy's number, so every copy is a new
delivery, never a duplicate; the email addresses and phone numbers in it are varied too
(:func:`fresh`), so the copies are the events of many people.  Files a connector refuses by design (the corpus notes say
so: a form with no contact point, SES's bare inner message, Meta's consent answers
alone) are found by a first pass, left out and listed.

**Measured**, per run, on a fresh SQLite file of a bare app (no ``[sources]`` tables,
``verify=False``: the corpus's signed files carry no signature made with a secret we
hold), vendor by vendor:

* **carecrm**: ``app.ingest_payloads(vendor, copies)``: inbox write (encrypted), parse,
  normalize, match, encrypt, store, commit, per batch;
* **connector only** (the baseline, the same run): ``list(connector.parse(copy))`` of
  the same copies with the app's own connector: the vendor's format read into lead
  events, nothing stored.  Signature checks are not in either side (``verify=False``).

Printed: per vendor family (forms, ad leads, chat, phone and SMS, email) the payloads/s
of carecrm and of the connector alone (median [min-max] of the runs), the share of
carecrm's time spent in the connector (connector time / carecrm time: the rest is the
core), and per vendor the same with the rows each copy added (checked: no copy is a
duplicate).
"""

from __future__ import annotations

import argparse
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import common  # noqa: E402

REPO = Path(__file__).resolve().parents[1]

#: Vendor families, in print order, and their vendors (each a corpus folder and a
#: built-in connector of the same name).
FAMILIES: dict[str, tuple[str, ...]] = {
    "forms": ("typeform", "jotform", "webflow", "unbounce"),
    "ad leads": ("meta_lead_ads", "google_ads_lead_form", "linkedin_lead_gen", "hubspot"),
    "chat": ("intercom", "olark"),
    "phone and SMS": ("twilio", "callrail"),
    "email": ("mailchimp", "mailgun", "postmark", "amazon_ses", "sendgrid"),
}


def _json(key: str) -> str:
    """``"key": "value"`` or ``"key": 123`` in a JSON body."""
    return rf'"{key}"\s*:\s*"?([^",}}\s]+)'


def _escaped(key: str) -> str:
    """``\\"key\\": \\"value\\"``: JSON inside a JSON string (SNS ``Message``, Jotform's
    ``rawRequest``)."""
    return rf'\\"{key}\\"\s*:\s*\\"([^\\"]+)'


def _form(key: str) -> str:
    """``key=value`` in a form-encoded body (the key as sent, percent-escapes and all)."""
    return rf"(?:^|&){key}=([^&\s]+)"


def _url_json(key: str) -> str:
    """``%22key%22%3A%20%22value%22``: JSON percent-encoded in a form field (Olark)."""
    return rf"%22{key}%22%3A(?:%20|\+)?%22([^%&]+)%22"


def _multipart(key: str) -> str:
    """A multipart part named ``key``: its value line."""
    return rf'name="{key}"\r?\n\r?\n([^\r\n]+)'


#: Per vendor, the patterns whose first group is an id that makes an event new.
FRESH_IDS: dict[str, tuple[str, ...]] = {
    "typeform": (_json("event_id"), _json("token")),
    "jotform": (_multipart("submissionID"), _escaped("submissionID")),
    "webflow": (_json("id"),),
    "unbounce": (_form("page_id"), r"%22ip_address%22%3A%5B%22([0-9.]+)"),
    "meta_lead_ads": (_json("leadgen_id"), _json("id")),
    "google_ads_lead_form": (_json("lead_id"),),
    "linkedin_lead_gen": (r'"leadGenFormResponse"\s*:\s*"urn:li:leadGenFormResponse:([^"]+)"',),
    "hubspot": (_json("eventId"), _json("objectId")),
    "intercom": (_json("id"),),
    "olark": (_url_json("id"),),
    "twilio": (_form("MessageSid"), _form("SmsSid"), _form("SmsMessageSid"), _form("CallSid")),
    "callrail": (_form("id"),),
    "mailchimp": (_form(r"data%5Bid%5D"), _form(r"data%5Bweb_id%5D")),
    "mailgun": (_json("id"), _json("token")),
    "postmark": (_json("MessageID"), _json("ID"), _json("RecordID")),
    "amazon_ses": (_json("MessageId"), _escaped("messageId"), _escaped("feedbackId")),
    "sendgrid": (_json("sg_event_id"), _json("sg_message_id")),
}

_COMPILED: dict[str, tuple[re.Pattern[bytes], ...]] = {
    vendor: tuple(re.compile(p.encode()) for p in patterns) for vendor, patterns in FRESH_IDS.items()
}


#: An email address's local part (before ``@`` or its escape ``%40``).
_EMAIL = re.compile(rb"(?<![A-Za-z0-9._+%-])[A-Za-z0-9._+-]+(?=@|%40)")
#: A phone number (E.164 with ``+`` or ``%2B``, or ``(NNN) NNN-NNNN``) without its last
#: three digits.
_PHONE = re.compile(rb"((?:\+|%2B)[0-9]{7,12}|\([0-9]{3}\)(?: |%20|\+)?[0-9]{3}-[0-9])[0-9]{3}(?![0-9])")


def fresh(vendor: str, body: bytes, copy: int) -> bytes:
    """``body`` with every id of :data:`FRESH_IDS` ``[vendor]`` made new for ``copy``
    (0 or more): its last six characters replaced by the copy's number (``%06d``; an id
    of six characters or fewer is replaced whole, a short number followed by it), so hex,
    base-62, UUID and numeric ids stay well-formed.  The person is made new too, so the
    copies are many people's events as a live stream is, not one timeline thousands of
    events long: every email address's local part gets a ``c<copy>-`` prefix and every
    phone number's last three digits become the copy's number modulo 1,000 (the corpus's
    numbers are in the 555-01XX ranges, which stay valid numbers)."""
    stamp = b"%06d" % copy

    def swap(m: re.Match[bytes]) -> bytes:
        value = m.group(1)
        if len(value) > len(stamp):
            new = value[: -len(stamp)] + stamp
        elif value.isdigit():  # a short JSON number: no leading zero
            new = b"%d" % (int(value) * 10 ** len(stamp) + copy)
        else:
            new = stamp
        return m.group(0)[: m.start(1) - m.start(0)] + new + m.group(0)[m.end(1) - m.start(0) :]

    for pattern in _COMPILED[vendor]:
        body = pattern.sub(swap, body)
    tail = b"%03d" % (copy % 1000)
    body = _EMAIL.sub(lambda m: b"c%d-" % copy + m.group(0), body)
    return _PHONE.sub(lambda m: m.group(1) + tail, body)


def load_corpus(corpus: Path, vendors: Sequence[str]) -> dict[str, list[tuple[str, bytes, str]]]:
    """Per vendor, its payload files as ``(file name, body, content type)``, read as
    ``carecrm ingest`` reads a folder."""
    from carecrm.cli.payloads import expand_paths, guess_content_type

    out: dict[str, list[tuple[str, bytes, str]]] = {}
    for vendor in vendors:
        folder = corpus / vendor
        if not folder.is_dir():
            continue
        files = [Path(f) for f in expand_paths([str(folder)])]
        out[vendor] = [(f.name, f.read_bytes(), guess_content_type(f.name, f.read_bytes())) for f in files]
    return out


def _payload(body: bytes, content_type: str, origin: str) -> Any:
    from carecrm.core.model.domain import RawPayload

    return RawPayload(body=body, content_type=content_type, origin=origin)


def refused_files(folder: Path, cases: dict[str, list[tuple[str, bytes, str]]]) -> dict[str, list[str]]:
    """The files each vendor's connector refuses (quarantines), from one ingest of the
    originals on a scratch app."""
    app = common.build_app(folder)
    try:
        out: dict[str, list[str]] = {}
        for vendor, files in cases.items():
            payloads = [_payload(body, ctype, name) for name, body, ctype in files]
            report = app.ingest_payloads(vendor, payloads, actor=common.actor(), verify=False)
            out[vendor] = sorted({Path(q.payload or "?").name for q in report.quarantined})
        return out
    finally:
        app.close()


def run_once(folder: Path, cases: dict[str, list[tuple[str, bytes, str]]], n: int) -> dict[str, dict[str, float]]:
    """One run on a fresh database: per vendor the seconds of carecrm's ingest and of the
    connector alone over ``n`` fresh copies of each file, the payloads, the rows added
    and the duplicates seen (0 when the fresh ids work)."""
    app = common.build_app(folder)
    out: dict[str, dict[str, float]] = {}
    try:
        for vendor, files in cases.items():
            payloads = [
                _payload(fresh(vendor, body, k + 1), ctype, name) for k in range(n) for name, body, ctype in files
            ]
            connector = app.connector(vendor)
            t0 = time.perf_counter()
            for p in payloads:
                list(connector.parse(p))
            parse_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            report = app.ingest_payloads(vendor, payloads, actor=common.actor(), verify=False)
            ingest_s = time.perf_counter() - t0
            out[vendor] = {
                "payloads": float(len(payloads)),
                "ingest_s": ingest_s,
                "parse_s": parse_s,
                "rows": float(report.interactions_added + report.pending),
                "duplicates": float(report.duplicate_payloads + report.duplicates),
                "quarantined": float(len(report.quarantined)),
            }
    finally:
        app.close()
    return out


def _rates(runs: list[dict[str, dict[str, float]]], vendors: Sequence[str], key: str) -> list[float]:
    return [sum(r[v]["payloads"] for v in vendors) / max(1e-9, sum(r[v][key] for v in vendors)) for r in runs]


def _share(runs: list[dict[str, dict[str, float]]], vendors: Sequence[str]) -> list[float]:
    return [sum(r[v]["parse_s"] for v in vendors) / max(1e-9, sum(r[v]["ingest_s"] for v in vendors)) for r in runs]


def main(argv: Sequence[str] | None = None) -> int:
    """Run the sources benchmark; see the module docstring.  Returns 0 (2 without the
    corpus)."""
    from carecrm.core.testing.resources import corpus_dir

    parser = argparse.ArgumentParser(prog="benchmarks/sources.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1000, help="fresh copies of each corpus file (default 1000)")
    parser.add_argument("--corpus", type=Path, default=None, help="the corpus folder (default: ../shared/corpus)")
    parser.add_argument("--vendor", action="append", default=None, help="only this vendor (repeatable)")
    parser.add_argument("--keep", type=Path, default=None, help="keep the databases in this folder")
    common.add_repeat(parser)
    args = parser.parse_args(list(argv) if argv is not None else None)
    if args.n < 1 or args.repeat < 1:
        parser.error("--n and --repeat must be positive")
    known = [v for family in FAMILIES.values() for v in family]
    vendors = args.vendor or known
    unknown = sorted(set(vendors) - set(known))
    if unknown:
        parser.error(f"unknown vendor {unknown[0]!r}; known: {', '.join(known)}")
    corpus = args.corpus or corpus_dir(REPO)

    common.print_environment(
        "sources benchmark", "benchmarks/sources.py", list(argv) if argv is not None else sys.argv[1:]
    )
    print("storage: SQLite files (a bare app: no [sources] tables; verify=False)")
    cases = load_corpus(corpus, vendors)
    if not cases:
        print(f"corpus missing: {corpus} has none of the vendors' folders")
        return 2
    root = args.keep or Path(tempfile.mkdtemp(prefix="carecrm-bench-sources-"))
    root.mkdir(parents=True, exist_ok=True)
    try:
        refused = refused_files(root / "scratch", cases)
        for vendor, names in refused.items():
            cases[vendor] = [c for c in cases[vendor] if c[0] not in names]
        left_out = [f"{v}/{name}" for v, names in refused.items() for name in names]
        cases = {v: files for v, files in cases.items() if files}
        total_files = sum(len(f) for f in cases.values())
        print(
            f"data: {total_files} corpus files of {len(cases)} vendors, {args.n} fresh copies each "
            f"({total_files * args.n} payloads per run), {args.repeat} run(s)"
        )
        print("left out (refused by design): " + (", ".join(left_out) if left_out else "none"))
        runs = [run_once(root / f"run{k}", cases, args.n) for k in range(args.repeat)]
        dup = sum(r[v]["duplicates"] + r[v]["quarantined"] for r in runs for v in cases)
        print(f"duplicates or quarantined among the fresh copies: {dup:.0f}")
        print("-- per family: carecrm payloads/s | connector-only payloads/s | connector share of carecrm's time")
        shown: list[tuple[str, Sequence[str]]] = [
            (name, [v for v in members if v in cases]) for name, members in FAMILIES.items()
        ]
        shown.append(("all", list(cases)))
        for name, members in shown:
            if not members:
                continue
            print(_line(name, runs, members))
        print("-- per vendor (rows added per payload)")
        for vendor in cases:
            rows = runs[-1][vendor]["rows"] / runs[-1][vendor]["payloads"]
            print(_line(vendor, runs, [vendor]) + f" | rows/payload {rows:.2f}")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


def _line(name: str, runs: list[dict[str, dict[str, float]]], vendors: Sequence[str]) -> str:
    fmt: Callable[[list[float]], str] = common.fmt_runs
    share = _share(runs, vendors)
    return (
        f"{name:<22}: carecrm {fmt(_rates(runs, vendors, 'ingest_s'))} payloads/s"
        f" | connector only {fmt(_rates(runs, vendors, 'parse_s'))} payloads/s"
        f" | connector share {common.fmt(100 * common.summary(share)[0])} %"
    )


if __name__ == "__main__":
    raise SystemExit(main())
