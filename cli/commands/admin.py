"""``carecrm plugins``, ``storage``, ``audit`` and ``events``: operating the installation."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from carecrm.cli.context import EXIT_QUARANTINED, EXIT_USAGE, json_option, resolve_id, state
from carecrm.cli.output import add_row, echo_json, json_value, print_fields, print_table, show_id, table

if TYPE_CHECKING:
    from carecrm.core.app import CareCRM

# --------------------------------------------------------------------------- plugins


def _plugins_app() -> CareCRM:
    """The app for ``carecrm plugins``: the practice's, or, when no config was named and
    there is no ./carecrm.toml, one on default settings (so a plugin author can check an
    installation before any practice exists)."""
    from carecrm.core.app import CareCRM
    from carecrm.core.config import Settings, find_config

    st = state()
    if st.config_explicit or find_config(None).exists():
        return st.app
    click.echo("note: no carecrm.toml here; showing installed plugins with default settings", err=True)
    default_app = CareCRM(Settings(base_dir=Path.cwd()))
    st.set_app(default_app)
    return default_app


def _source_formats(the_app: CareCRM, components: tuple[str, ...]) -> dict[str, list[str]]:
    """The payload formats of each source connector among ``components``
    (``source:<connector_id>`` names), from :attr:`SourceConnector.formats`."""
    out: dict[str, list[str]] = {}
    for component in components:
        family, _, name = component.partition(":")
        if family == "source" and name in the_app.sources:
            out[name] = list(getattr(the_app.sources.get(name), "formats", ()))
    return out


@click.command()
@json_option
def plugins(as_json: bool) -> None:
    """Installed plugins: built-in and third-party (entry-point group carecrm), with the
    hook families they serve, their origin (built-in, or distribution and version), the
    components they register and whether the config enables them; then each source
    connector with the payload formats it reads (``formats`` in the JSON output: connector
    id → formats, for the plugin's sources)."""
    the_app = _plugins_app()
    rows = [
        {
            "name": p.name,
            "families": list(p.families),
            "origin": p.origin,
            "components": list(p.components),
            "enabled": the_app.plugin_enabled(p.name),
            "formats": _source_formats(the_app, tuple(p.components)),
        }
        for p in the_app.plugins_info()
    ]
    if as_json:
        echo_json(rows)
        return
    t = table("plugin", "families", "origin", "components", "enabled", title="Plugins")
    for r in rows:
        add_row(t, r["name"], r["families"], r["origin"], r["components"], r["enabled"])
    print_table(t)
    sources = table("source", "plugin", "formats", title="Sources")
    for p in the_app.plugins_info():
        for name, formats in _source_formats(the_app, tuple(p.components)).items():
            add_row(sources, name, p.name, formats or "—")
    print_table(sources)


# --------------------------------------------------------------------------- storage


@click.group()
def storage() -> None:
    """The database: check it, upgrade its schema, move it to another backend."""


@storage.command("check")
@json_option
def storage_check(as_json: bool) -> None:
    """Reach the database and describe it: backend, server version, schema version.

    Exit status 2 when the database holds no carecrm schema or one of another version
    (the advice line says what to run).
    """
    info: dict[str, Any] = state().app.storage_check()
    if as_json:
        echo_json(info)
    else:
        print_fields([(k.replace("_", " "), _flat(v)) for k, v in info.items()], title="Storage")
    if info.get("advice") or not info.get("ok", True):
        click.get_current_context().exit(EXIT_USAGE)


def _flat(value: Any) -> Any:
    if isinstance(value, dict):
        return ", ".join(f"{k}={v}" for k, v in value.items())
    return value


@storage.command("upgrade")
def storage_upgrade() -> None:
    """Bring the database to this release's schema (creates it when absent).
    Back the database up first."""
    steps = state().app.storage_upgrade()
    if not steps:
        click.echo("the schema is up to date")
        return
    for step in steps:
        click.echo(f"applied: {step}")


@storage.command("migrate-to")
@click.argument("url", metavar="URL")
@json_option
def storage_migrate_to(url: str, as_json: bool) -> None:
    """Copy the whole database to the EMPTY storage at URL (another backend: SQLite to
    PostgreSQL, SQL to MongoDB and back), as stored: nothing is decrypted, the same key
    file opens the copy, and the audit log still verifies there.  Then compare the
    counts of every kind of record.  Stop ingest workers and other writers first; then
    point [storage] url (or CARECRM_STORAGE_URL) at URL.

    A target that already holds records is refused (exit status 2) and nothing is copied.
    """
    the_app = state().app

    def progress(kind: str, copied: int) -> None:
        if not as_json:
            click.echo(f"{kind}: {copied} copied", err=True)

    counts = the_app.migrate_to(url, actor=state().actor, progress=progress)
    if as_json:
        echo_json({"ok": True, "counts": {k: {"source": s, "target": t} for k, (s, t) in counts.items()}})
        return
    t = table("kind", "source", "copy", title="Copied and verified")
    for kind, (source_count, target_count) in counts.items():
        add_row(t, kind, source_count, target_count)
    print_table(t)
    click.echo("every count matches; the keys open the copy")


# --------------------------------------------------------------------------- audit


@click.group()
def audit() -> None:
    """The audit log of every change and every read of personal data."""


@audit.command("verify")
@click.option(
    "--expect-head",
    metavar="ANCHOR",
    help="An anchor exported earlier with `carecrm audit head`: the log must still reach it.",
)
@json_option
def audit_verify(expect_head: str | None, as_json: bool) -> None:
    """Recompute the keyed hash chain of the audit log and check it against its keyed head
    anchor: an edited, deleted or inserted entry, a cut-off tail or an emptied log breaks it.
    Exit status 1 when the check fails."""
    ok, checked, problem = state().app.verify_audit_chain(expected_head=expect_head)
    if as_json:
        echo_json({"ok": ok, "entries_checked": checked, "problem": problem})
    elif ok:
        click.echo(f"audit chain intact: {checked} entries verified")
    else:
        click.echo(f"audit chain BROKEN: {problem} ({checked} good entries before it)")
    if not ok:
        click.get_current_context().exit(EXIT_QUARANTINED)


@audit.command("head")
def audit_head() -> None:
    """Print the audit log's head anchor (seq:hash:mac). Export it on a schedule, somewhere
    the database's administrators cannot change, and check it later with
    `carecrm audit verify --expect-head ANCHOR`."""
    head = state().app.audit_head()
    click.echo(head or "(the audit log is empty)")


@audit.command("log")
@click.option(
    "--limit", type=click.IntRange(min=1), metavar="N", default=50, show_default=True, help="The newest N entries."
)
@click.option(
    "--contact",
    "contact_id",
    metavar="ID",
    help="Only entries about this contact id (whole or short, as tables show it).",
)
@json_option
def audit_log(limit: int, contact_id: str | None, as_json: bool) -> None:
    """The newest audit-log entries, oldest first: who (actor and role) did what, when,
    about which contact id, with which purpose and fields (names, never values)."""
    contact = resolve_id("contact", contact_id) if contact_id is not None else None
    entries = state().app.audit_log(limit=limit, contact_id=contact)
    if as_json:
        echo_json([{k: v for k, v in json_value(e).items() if k not in ("prev_hash", "hash")} for e in entries])
        return
    t = table(
        "seq",
        "at (UTC)",
        "actor",
        "role",
        "action",
        "contact",
        "purpose",
        "fields",
        title="Audit log",
        no_wrap=("at (UTC)", "contact"),
    )
    for e in entries:
        add_row(t, e.seq, e.at, e.actor, e.role, e.action, show_id(e.contact_id), e.purpose, e.fields)
    print_table(t)


# --------------------------------------------------------------------------- events


@click.group()
def events() -> None:
    """The durable outbox of live events: what plugins (scoring, automation) have not been
    given yet, deliver it, prune what every subscriber has had."""


@events.command("pending")
@json_option
def events_pending(as_json: bool) -> None:
    """How many committed events ``carecrm_track_event`` has not been given yet (after a
    crash between a commit and its delivery; any write, or ``events deliver``, sends them)."""
    count = state().app.pending_events()
    if as_json:
        echo_json({"pending": count})
    else:
        click.echo(f"{count} event(s) pending")


@events.command("deliver")
@json_option
def events_deliver(as_json: bool) -> None:
    """Deliver every pending event to the plugins now, in commit order (each once)."""
    report = state().app.deliver_events()
    if as_json:
        echo_json({"delivered": report.delivered, "skipped": report.skipped, "busy": report.busy})
    elif report.busy:
        click.echo("another process is delivering the events; it delivers these too")
    else:
        click.echo(f"{report.delivered} event(s) delivered" + (f", {report.skipped} skipped" if report.skipped else ""))


@events.command("prune")
@click.option(
    "--days",
    type=click.IntRange(min=0),
    default=30,
    show_default=True,
    help="Keep delivered events younger than this many days.",
)
def events_prune(days: int) -> None:
    """Delete delivered events older than ``--days``."""
    from datetime import timedelta

    removed = state().app.prune_events(older_than=timedelta(days=days))
    click.echo(f"{removed} event(s) pruned")
