"""``carecrm ingest`` (payload files into the inbox and the timelines) and ``carecrm inbox``."""

from __future__ import annotations

import base64
import sys
import traceback
from typing import TYPE_CHECKING, Any

import attrs
import click

from carecrm.cli.context import EXIT_QUARANTINED, CliError, debugging, json_option, resolve_id, state
from carecrm.cli.output import (
    add_row,
    counts_line,
    echo_json,
    format_utc,
    json_value,
    print_fields,
    print_table,
    show_id,
    table,
)
from carecrm.cli.payloads import expand_paths, parse_header, read_payloads
from carecrm.core.model.records import INBOX_STATUSES as _INBOX_STATUSES
from carecrm.core.model.text import printable

if TYPE_CHECKING:
    from carecrm.core.ingest import IngestReport
    from carecrm.core.ingest.inbox import InboxItem
    from carecrm.core.model.domain import RawPayload

#: Inbox statuses (``carecrm inbox list --status``): the core's vocabulary.
INBOX_STATUSES = _INBOX_STATUSES


#: Labels of the ingest report's counts, in display order; counts the core adds later
#: are shown after these under their field name.
REPORT_LABELS: dict[str, str] = {
    "payloads": "payloads",
    "duplicate_payloads": "identical re-deliveries (skipped)",
    "empty_payloads": "payloads with no lead record",
    "records": "records",
    "accepted": "accepted",
    "duplicates": "duplicates",
    "pending": "pending",
    "contacts_created": "contacts created",
    "interactions_added": "interactions added",
    "interactions_removed": "interactions replaced",
    "review_pairs": "pairs sent to review",
}


def _counts(report: IngestReport) -> dict[str, int]:
    """Every integer count of the report, by field name, in :data:`REPORT_LABELS` order."""
    from carecrm.core.ingest import IngestReport

    counts = {f.name: getattr(report, f.name) for f in attrs.fields(IngestReport) if f.type in (int, "int")}
    ordered = {k: counts.pop(k) for k in REPORT_LABELS if k in counts}
    return {**ordered, **counts}


def report_json(report: IngestReport) -> dict[str, Any]:
    """An ingest report as JSON: every count, the quarantined records with their reasons,
    warnings, dropped-field counts and the ids of the contacts touched."""
    return {
        **_counts(report),
        "quarantined": [
            {
                "source": q.source,
                "record": q.record,
                "field": q.field,
                "reason": q.reason,
                "inbox_id": str(q.inbox_id) if q.inbox_id else None,
                "payload": q.payload,
                "index": q.index,
                "message": q.message(),
            }
            for q in report.quarantined
        ],
        "warnings": list(report.warnings),
        "dropped_fields": dict(report.dropped_fields),
        "contact_ids": [str(c) for c in report.contact_ids],
    }


def print_report(report: IngestReport) -> None:
    """A human summary of an ingest run: counts, then one line per quarantined record
    (source, payload file, record, field and reason, never a value), then warnings.  With
    ``--debug`` the traceback of each record quarantined by an unexpected failure follows
    on stderr."""
    rows: list[tuple[str, Any]] = []
    for key, value in _counts(report).items():
        rows.append((REPORT_LABELS.get(key, key.replace("_", " ")), value))
        if key == "pending":
            rows.append(("quarantined", len(report.quarantined)))
    if "quarantined" not in dict(rows):
        rows.append(("quarantined", len(report.quarantined)))
    rows += [
        ("warnings", len(report.warnings)),
        ("dropped fields", counts_line(report.dropped_fields) or "none"),
    ]
    print_fields(rows, title="Ingest summary")
    if report.quarantined:
        click.echo(f"Quarantined ({len(report.quarantined)}):")
        for q in report.quarantined:
            click.echo(f"  {q.message()}" + (f" [inbox {q.inbox_id}]" if q.inbox_id else ""))
        click.echo("see `carecrm inbox show ID`; fix the config or connector, then `carecrm inbox retry ID`")
        if debugging():
            for q in report.quarantined:
                if q.cause is not None:
                    click.echo(f"traceback of {q.message()}:", err=True)
                    click.echo("".join(traceback.format_exception(q.cause)).rstrip(), err=True)
    if report.warnings:
        t = table("warning", title="Warnings")
        for w in report.warnings:
            add_row(t, w)
        print_table(t)


@click.command()
@click.argument("source")
@click.argument("paths", nargs=-1, required=True, metavar="PATH...")
@click.option(
    "--header",
    "headers",
    multiple=True,
    metavar="NAME:VALUE",
    help="A request header sent with the payload (a signature, a timestamp). Repeatable.",
)
@click.option("--url", metavar="URL", help="The request URL the vendor posted to (some vendors sign it).")
@click.option(
    "--content-type",
    metavar="TYPE",
    help="Content type of every payload [default: guessed per file: .json JSON, .form.txt "
    "form encoding, else judged from the bytes (JSON, key=value&..., multipart)].",
)
@click.option(
    "--no-verify",
    is_flag=True,
    help="Skip signature verification (payloads you fetched yourself, e.g. a vendor export): "
    "the inbox entries and the audit log record them as not verified.",
)
@json_option
def ingest(
    source: str,
    paths: tuple[str, ...],
    headers: tuple[str, ...],
    url: str | None,
    content_type: str | None,
    no_verify: bool,
    as_json: bool,
) -> None:
    """Ingest payload files of SOURCE (a [sources.<name>] table or a connector's name).

    Each PATH is a file, a folder (every file inside, sorted; hidden files and the notes
    beside saved payloads - *.md, *.meta.json, *.expected.json, README - skipped) or - for
    stdin; each file is one payload as the vendor sent it. Every payload is kept in
    the encrypted inbox first, then parsed, matched to a person and stored. Exit status 1
    when some records were quarantined (see carecrm inbox list), 0 otherwise:
    duplicates and pending payloads are not failures.
    """
    parsed: dict[str, str] = {}
    for h in headers:
        try:
            name, value = parse_header(h)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--header") from None
        parsed[name] = value
    if paths.count("-") > 1:
        raise click.BadParameter("stdin (-) can be given once", param_hint="PATH")
    try:
        files = expand_paths(paths)
    except FileNotFoundError as exc:
        raise click.BadParameter(f"{exc.args[0]}: no such file or folder", param_hint="PATH") from None
    if not files:
        raise click.BadParameter("no files found", param_hint="PATH")
    the_app = state().app
    the_app.connector(source)  # an unknown source fails before stdin is read
    stdin = sys.stdin.buffer.read() if "-" in files else None
    payloads = read_payloads(files, stdin=stdin, content_type=content_type, headers=parsed, url=url)
    try:
        report = the_app.ingest_payloads(source, payloads, actor=state().actor, verify=not no_verify)
    except OSError as exc:
        raise CliError(f"cannot read {exc.filename}: {exc.strerror}") from None
    if as_json:
        echo_json(report_json(report))
    else:
        print_report(report)
    if report.quarantined:
        click.get_current_context().exit(EXIT_QUARANTINED)


# --------------------------------------------------------------------------- inbox


@click.group()
def inbox() -> None:
    """The inbox of raw payloads: what arrived, what was quarantined and why.

    Payloads are kept encrypted; processed ones are purged after the retention period,
    quarantined ones stay until retried or discarded.
    """


def _item_json(item: InboxItem) -> dict[str, Any]:
    return dict(json_value(item))


#: How ``inbox list`` / ``inbox show`` word an entry's ``verified``.
SIGNATURE_WORDS: dict[bool | None, str] = {True: "verified", False: "NOT verified", None: "no secret"}


@inbox.command("list")
@click.option("--status", type=click.Choice(INBOX_STATUSES), help="Only entries with this status.")
@click.option("--source", metavar="NAME", help="Only entries of this source.")
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", default=50, show_default=True, help="At most this many."
)
@json_option
def inbox_list(status: str | None, source: str | None, limit: int, as_json: bool) -> None:
    """Inbox entries, newest first (no payload content).

    The signature column says whether the payload's signature was checked: verified, NOT
    verified (taken with carecrm ingest --no-verify: a file an operator imported by
    hand), or no secret (the source has none configured, so there was nothing to check).
    """
    items = state().app.inbox_list(status=status, source=source, limit=limit)
    if as_json:
        echo_json([_item_json(i) for i in items])
        return
    t = table(
        "id",
        "source",
        "received (UTC)",
        "status",
        "attempts",
        "signature",
        "reason",
        title="Inbox",
        no_wrap=("id", "received (UTC)"),
    )
    for i in items:
        add_row(
            t,
            show_id(i.id),
            i.source,
            format_utc(i.received_at),
            i.status,
            i.attempts,
            SIGNATURE_WORDS[i.verified],
            i.reason,
        )
    print_table(t)


def _payload_json(payload: RawPayload) -> dict[str, Any]:
    try:
        body: str = payload.body.decode("utf-8")
        encoding = "utf-8"
    except UnicodeDecodeError:
        body, encoding = base64.b64encode(payload.body).decode("ascii"), "base64"
    return {
        "content_type": payload.content_type,
        "headers": dict(payload.headers),
        "url": payload.url,
        "received_at": json_value(payload.received_at),
        "origin": payload.origin,
        "body": body,
        "body_encoding": encoding,
    }


@inbox.command("show")
@click.argument("inbox_id", metavar="ID")
@json_option
def inbox_show(inbox_id: str, as_json: bool) -> None:
    """One entry and its decrypted payload, exactly as received (an audited read). ID is
    the entry's id or its short form, as inbox list shows it.

    The file the payload was read from (carecrm ingest's PATH, or stdin) is shown from
    the encrypted payload: a file name can name a person, so it is never in a clear column.
    """
    item, payload = state().app.inbox_show(resolve_id("inbox", inbox_id), actor=state().actor)
    if as_json:
        echo_json({"entry": _item_json(item), "payload": _payload_json(payload)})
        return
    print_fields(
        [
            ("id", item.id),
            ("source", item.source),
            ("received", format_utc(item.received_at)),
            ("status", item.status),
            ("attempts", item.attempts),
            (
                "signature",
                SIGNATURE_WORDS[item.verified] + (" (taken with --no-verify)" if item.verified is False else ""),
            ),
            ("last processed", format_utc(item.processed_at) if item.processed_at else None),
            ("reason", item.reason),
            ("file", printable(payload.origin, limit=1000) or None),
            ("content type", printable(payload.content_type, limit=500)),
            ("url", printable(payload.url, limit=2000) or None),
            *((f"header {printable(k)}", printable(v, limit=2000)) for k, v in sorted(payload.headers.items())),
        ]
    )
    click.echo("")
    click.echo(payload.body.decode("utf-8", errors="replace"), nl=not payload.body.endswith(b"\n"))


@inbox.command("retry")
@click.argument("inbox_id", metavar="ID")
@json_option
def inbox_retry(inbox_id: str, as_json: bool) -> None:
    """Process a stored payload again, after fixing the config or the connector.

    Exit status 1 when records are still quarantined.
    """
    report = state().app.inbox_retry(resolve_id("inbox", inbox_id), actor=state().actor)
    if as_json:
        echo_json(report_json(report))
    else:
        print_report(report)
    if report.quarantined:
        click.get_current_context().exit(EXIT_QUARANTINED)


@inbox.command("reprocess")
@click.argument("inbox_id", metavar="[ID]", required=False)
@click.option("--source", metavar="NAME", help="Every processed payload of this source instead of one entry.")
@json_option
def inbox_reprocess(inbox_id: str | None, source: str | None, as_json: bool) -> None:
    """Derive again what already processed payloads produced, after a config or connector
    fix (a time read in the wrong zone, a field mapped wrong): the interactions each
    payload created are replaced by what the payload gives now. Give an entry's ID, or
    --source NAME for all of a source's processed payloads.

    Each payload is checked first (its signature again, unless it was a --no-verify
    import, and that it still parses); one that fails is reported and changes nothing.
    Consent records and stage history are kept. Audited. Exit status 1 when records were
    quarantined.
    """
    if (inbox_id is None) == (source is None):
        raise click.UsageError("give an inbox entry ID or --source NAME (one of them)")
    app, actor = state().app, state().actor
    if source is not None:
        report = app.inbox_reprocess_source(source, actor=actor)
    else:
        report = app.inbox_reprocess(resolve_id("inbox", inbox_id or ""), actor=actor)
    if as_json:
        echo_json(report_json(report))
    else:
        print_report(report)
    if report.quarantined:
        click.get_current_context().exit(EXIT_QUARANTINED)


@inbox.command("complete")
@click.argument("inbox_id", metavar="ID")
@click.argument("paths", nargs=-1, required=True, metavar="FILE...")
@json_option
def inbox_complete(inbox_id: str, paths: tuple[str, ...], as_json: bool) -> None:
    """Complete a pending entry (a pointer-only vendor's notification: Meta Lead Ads,
    HubSpot) from the vendor's API objects it points to, saved to FILEs: Meta's Graph API
    lead object (with its custom_disclaimer_responses), HubSpot's contact object.

    The entry is processed once every record it names is in; otherwise it stays pending
    with what is left (see carecrm inbox list --status pending). Exit status 1 when a
    fetched object was refused. Audited.
    """
    try:
        files = expand_paths(paths)
    except FileNotFoundError as exc:
        raise click.BadParameter(f"{exc.args[0]}: no such file or folder", param_hint="FILE") from None
    entry = resolve_id("inbox", inbox_id)
    try:
        fetched = list(read_payloads(files, stdin=None, content_type=None, headers={}, url=None))
    except OSError as exc:
        raise CliError(f"cannot read {exc.filename}: {exc.strerror}") from None
    report = state().app.inbox_complete(entry, fetched, actor=state().actor)
    if as_json:
        echo_json(report_json(report))
    else:
        print_report(report)
    if report.quarantined:
        click.get_current_context().exit(EXIT_QUARANTINED)


@inbox.command("discard")
@click.argument("inbox_id", metavar="ID")
@click.option("--reason", help="Why (kept with the entry; do not write personal data here).")
def inbox_discard(inbox_id: str, reason: str | None) -> None:
    """Mark an entry discarded: it is never processed again and is purged later."""
    entry = resolve_id("inbox", inbox_id)
    state().app.inbox_discard(entry, actor=state().actor, reason=reason)
    click.echo(f"discarded inbox entry {entry}")
