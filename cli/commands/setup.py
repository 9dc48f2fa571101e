"""``carecrm init`` (a new practice: config, keys, database) and ``carecrm sources``."""

from __future__ import annotations

import importlib.resources
import json
import os
import re
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import click

from carecrm.cli.context import CliError, json_option, state
from carecrm.cli.output import add_row, echo_json, print_table, table
from carecrm.core.errors import CareCRMError, ConfigError

#: Where ``--source-example NAME`` looks for ``NAME.toml`` (the source checkout's docs).
EXAMPLES_DIR = Path(str(importlib.resources.files("carecrm.plugins.sources") / "examples"))

KEY_FILE_NAME = "carecrm.keys"
DEFAULT_STORAGE_URL = "sqlite:///carecrm.db"

_CONFIG_TEMPLATE = """\
# carecrm configuration for {practice_name}, written by `carecrm init` on {date}.
# Reference: docs/configuration.md.  Keep secrets out of this file: write
# "$env:NAME" (read from an environment variable) or "$file:PATH" instead.

[practice]
name = {practice_name_toml}
regime = {regime_toml}                 # US (HIPAA, TCPA, CAN-SPAM), UK or EU (GDPR, PECR)
# service_lines = ["acne", "botox"]

[[practice.locations]]
name = {location_toml}
timezone = {timezone_toml}      # local times are read and shown in this IANA time zone
region = {region_toml}                 # ISO 3166 country used to read local phone numbers
# phones = ["+13125550100"]
# business_hours = {{ mon = ["08:00", "17:00"], tue = ["08:00", "17:00"] }}

[storage]
url = {storage_toml}
# PostgreSQL: "postgresql://user@host/carecrm" (pip install "carecrm[postgres]")
# MariaDB:    "mysql://user@host/carecrm"      (pip install "carecrm[mysql]")
# Override with CARECRM_STORAGE_URL.

[keys]
# The key file unlocks every contact's data: keep it 0600, back it up apart from the
# database.  Override with CARECRM_KEY_FILE, or CARECRM_KEYS (the key JSON itself).
file = {key_file_toml}

# [ingest]
# batch_size = 500
# inbox_retention_days = 30

# Sources: one [sources.<name>] table per webhook or export you ingest, then
#   carecrm ingest <name> payload.json
# A form tool is mapped without code by the generic "mapped" connector
# (docs/sources/mapped.md); complete mappings: plugins/sources/examples/*.toml, e.g.
#   carecrm sources example typeform >> carecrm.toml
#
# [sources.website]
# connector = "mapped"
# secret = "$env:WEBSITE_FORM_SECRET"    # verify the vendor's signature
# format = "json"
# record_id = "id"
# kind = "form.submitted"
# channel = "web"
# occurred_at = "submitted_at"
# [sources.website.fields]
# email = "email"
# phone = "phone"
# first_name = "first_name"
# last_name = "last_name"
"""

_TZ_PADDING = 20


def _toml_str(value: str) -> str:
    """A TOML basic string (JSON string escapes are valid TOML escapes)."""
    return json.dumps(value, ensure_ascii=False)


def example_names() -> list[str]:
    """Names of the source examples shipped with carecrm (``carecrm/plugins/sources/examples``)."""
    if not EXAMPLES_DIR.is_dir():
        return []
    return sorted(p.stem for p in EXAMPLES_DIR.glob("*.toml"))


def find_example(name_or_path: str) -> Path:
    """The example file for ``--source-example``: a name in ``plugins/sources/examples`` or a path.

    :raises CliError: listing the known names when there is no such example.
    """
    candidate = Path(name_or_path).expanduser()
    if candidate.suffix == ".toml" and candidate.is_file():
        return candidate
    path = EXAMPLES_DIR / f"{name_or_path}.toml"
    if re.fullmatch(r"[A-Za-z0-9_-]+", name_or_path) and path.is_file():
        return path
    known = ", ".join(example_names()) or "(none found in this installation)"
    raise CliError(f"no source example {name_or_path!r}; known: {known}; or give the path of a .toml file")


def example_text(path: Path) -> tuple[str, list[str], list[str]]:
    """An example's text to append to a config (as written), the source names it
    defines, and notes for the user: a ``secret`` reference (``"$env:NAME"``,
    ``"$file:PATH"``) that cannot be read now is pointed out, since ingesting that
    source fails until it can.

    :raises CliError: if the file is not valid TOML or holds anything but
        ``[sources.<name>]`` tables.
    """
    raw = path.read_text(encoding="utf-8")
    try:
        doc = tomllib.loads(raw)
    except tomllib.TOMLDecodeError as exc:
        raise CliError(f"{path} is not valid TOML: {exc}") from None
    tables = doc.get("sources")
    if not isinstance(tables, dict) or not tables or set(doc) != {"sources"}:
        raise CliError(f"{path} must hold [sources.<name>] tables only")
    notes: list[str] = []
    for name, table_ in sorted(tables.items()):
        secret = table_.get("secret") if isinstance(table_, dict) else None
        if secret is None:
            continue
        from carecrm.core.config import resolve_secret

        try:
            resolve_secret(secret, what=f"sources.{name}.secret")
        except ConfigError as exc:
            notes.append(f"{exc}: set it before ingesting {name}")
    return raw.rstrip() + "\n", sorted(tables), notes


def render_config(
    *,
    practice_name: str,
    timezone: str,
    location: str,
    region: str,
    regime: str,
    storage_url: str,
    key_file: str,
    examples: list[tuple[Path, str]],
) -> str:
    """The text of a new ``carecrm.toml`` (see :func:`init`)."""
    text = _CONFIG_TEMPLATE.format(
        practice_name=practice_name.replace("\n", " "),
        date=datetime.now(UTC).strftime("%Y-%m-%d"),
        practice_name_toml=_toml_str(practice_name),
        regime_toml=_toml_str(regime),
        location_toml=_toml_str(location),
        timezone_toml=_toml_str(timezone).ljust(_TZ_PADDING),
        region_toml=_toml_str(region),
        storage_toml=_toml_str(storage_url),
        key_file_toml=_toml_str(key_file),
    )
    for path, body in examples:
        text += f"\n# ---- source example from {path.name}\n\n{body}"
    return text


@click.command()
@click.option(
    "--dir",
    "directory",
    metavar="DIR",
    type=click.Path(file_okay=False, path_type=Path),
    default=".",
    show_default=True,
    help="Folder for carecrm.toml and carecrm.keys (created if missing).",
)
@click.option(
    "--storage",
    "storage_url",
    metavar="URL",
    default=DEFAULT_STORAGE_URL,
    show_default=True,
    help="Database URL; a relative SQLite path is inside --dir.",
)
@click.option("--practice-name", metavar="NAME", default="Practice", show_default=True, help="The practice's name.")
@click.option(
    "--timezone",
    metavar="TZ",
    default="UTC",
    show_default=True,
    help="IANA time zone of the first location (America/Chicago).",
)
@click.option(
    "--location", "location_name", metavar="NAME", default="main", show_default=True, help="Name of the first location."
)
@click.option(
    "--region",
    metavar="CC",
    default="US",
    show_default=True,
    help="ISO 3166 country code used to read local phone numbers.",
)
@click.option(
    "--regime",
    type=click.Choice(["US", "UK", "EU"]),
    default="US",
    show_default=True,
    help="Privacy and marketing-consent regime.",
)
@click.option(
    "--source-example",
    "source_examples",
    multiple=True,
    metavar="NAME|PATH",
    help="Append a source mapping: a name from plugins/sources/examples (typeform, webflow) or a .toml "
    "file holding [sources.<name>] tables. Repeatable.",
)
def init(
    directory: Path,
    storage_url: str,
    practice_name: str,
    timezone: str,
    location_name: str,
    region: str,
    regime: str,
    source_examples: tuple[str, ...],
) -> None:
    """Create a practice: carecrm.toml, the key file (mode 0600) and the database schema.

    Refuses to overwrite an existing carecrm.toml or carecrm.keys (exit status 2).
    The config and key files are written only once the database schema exists. Keep the key file
    safe and backed up apart from the database: without it the data cannot be read.
    """
    try:
        ZoneInfo(timezone)
    except (ZoneInfoNotFoundError, ValueError):
        raise CliError(f"unknown IANA time zone {timezone!r} (e.g. America/Chicago, Europe/London)") from None
    if not practice_name.strip():
        raise CliError("--practice-name must not be empty")
    from carecrm.core.app import CareCRM
    from carecrm.core.config import CONFIG_NAME, settings_from_dict
    from carecrm.core.privacy.crypto import KeyRing

    directory = directory.expanduser()
    config_path = directory / CONFIG_NAME
    key_path = directory / KEY_FILE_NAME
    for existing in (config_path, key_path):
        if existing.exists():
            raise CliError(f"{existing} exists already; refusing to overwrite it (choose another --dir)")

    examples: list[tuple[Path, str]] = []
    notes: list[str] = []
    seen: dict[str, Path] = {}
    for ref in source_examples:
        path = find_example(ref)
        body, names, more = example_text(path)
        for name in names:
            if name in seen:
                raise CliError(f"source {name!r} is defined by both {seen[name]} and {path}")
            seen[name] = path
        examples.append((path, body))
        notes.extend(more)

    text = render_config(
        practice_name=practice_name.strip(),
        timezone=timezone,
        location=location_name,
        region=region.upper(),
        regime=regime.upper(),
        storage_url=storage_url,
        key_file=KEY_FILE_NAME,
        examples=examples,
    )
    directory.mkdir(parents=True, exist_ok=True)
    resolved_dir = directory.resolve()
    try:
        settings = settings_from_dict(tomllib.loads(text), path=resolved_dir / CONFIG_NAME, base_dir=resolved_dir)
    except tomllib.TOMLDecodeError as exc:  # only a broken example file can cause this
        raise CliError(f"the new config would not be valid TOML: {exc}") from None

    keys = KeyRing.generate()
    st = state()
    new_app = CareCRM(settings, keys=keys)
    st.set_app(new_app)
    # the schema first, with the keys in memory: a wrong URL or an unreachable server
    # leaves no half-made practice behind
    new_app.create_schema()
    new_app.close()
    try:
        keys.write_file(key_path)
        with config_path.open("x", encoding="utf-8") as fh:
            fh.write(text)
    except CareCRMError:
        raise
    except OSError as exc:
        raise CliError(f"cannot write in {directory}: {exc.strerror}") from None

    click.echo(f"created {config_path}")
    click.echo(f"created {key_path} (mode 0600: keep it safe, back it up apart from the database)")
    click.echo(f"created the database schema at {_display_url(settings.storage_url)}")
    for name in seen:
        click.echo(f"added source {name!r} (carecrm ingest {name} PATH)")
    for note in notes:
        click.echo(f"note: {note}")
    for var in ("CARECRM_KEYS", "CARECRM_KEY_FILE", "CARECRM_STORAGE_URL"):
        if os.environ.get(var):
            click.echo(f"note: {var} is set in this environment and overrides the new config's value")
    where = "" if directory.resolve() == Path.cwd().resolve() else f"cd {directory}, then "
    click.echo(f"next: {where}carecrm ingest SOURCE PATH, or carecrm contacts add --email ... (see carecrm --help)")


def _display_url(url: str) -> str:
    """A database URL without its password."""
    return re.sub(r"(://[^:/@]+):[^@]*@", r"\1:***@", url)


@click.group()
def sources() -> None:
    """Configured sources and the source mapping examples."""


@sources.command("list")
@json_option
def sources_list(as_json: bool) -> None:
    """Sources this practice can ingest: each [sources.<name>] table and its connector,
    and the connectors usable by name without a table."""
    the_app = state().app
    rows = []
    for name, s in sorted(the_app.settings.sources.items()):
        rows.append({"name": name, "connector": s.connector, "configured": True, "secret": s.secret is not None})
    for cid in the_app.sources.names():
        if cid != "mapped" and cid not in the_app.settings.sources:
            rows.append({"name": cid, "connector": cid, "configured": False, "secret": False})
    if as_json:
        echo_json(rows)
        return
    t = table("source", "connector", "configured", "signature secret", title="Sources")
    for r in rows:
        add_row(t, r["name"], r["connector"], r["configured"], r["secret"])
    print_table(t)


@sources.command("check")
@json_option
def sources_check(as_json: bool) -> None:
    """Check every source: build each [sources.<name>] table's connector (selectors compiled,
    kinds, channels and options checked against the known values) and each connector usable
    by name.  Lists every problem and exits 2 when there is one, 0 when all is well.  The
    same checks run whenever carecrm starts."""
    from carecrm.core.plugins.components import SourceProblems

    try:
        the_app = state().app
    except SourceProblems as exc:
        problems = list(exc.problems)
        names: list[str] = []
    else:
        names = sorted(the_app.settings.sources) + [
            cid for cid in the_app.sources.names() if cid != "mapped" and cid not in the_app.settings.sources
        ]
        problems = the_app.components.source_problems(names)
    if as_json:
        echo_json({"ok": not problems, "checked": names, "problems": problems})
    elif not problems:
        click.echo(f"{len(names)} sources checked: no problem")
    if problems:
        if not as_json:
            for problem in problems:
                click.echo(problem, err=True)
        count = len(problems)
        raise CliError(f"{count} problem{'s' if count != 1 else ''} in the sources configuration")


@sources.command("example")
@click.argument("name")
def sources_example(name: str) -> None:
    """Print a source mapping example (plugins/sources/examples/NAME.toml) to append to a config:
    carecrm sources example typeform >> carecrm.toml"""
    path = find_example(name)
    click.echo(path.read_text(encoding="utf-8"), nl=False)
