"""Rendering helpers: rich tables for people, JSON for scripts.

rich (and the core's JSON serialization) are imported on first use, not when a command
module is imported, so ``--help`` never pays for them.

Human output goes through a :class:`rich.console.Console` that respects ``NO_COLOR``
and is 120 columns wide when stdout is not a terminal (a pipe, a file, a test runner),
so tables stay readable there.  Every value that comes from data is wrapped in
:class:`rich.text.Text`, never interpreted as rich markup (a note reading ``[urgent]``
prints as typed).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import click

from carecrm.core.model.timeutil import isoformat_z

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

#: Shown for a value that is not known.
NONE = "—"


def console() -> Console:
    """A console on the current stdout (looked up at call time, so test runners that
    swap ``sys.stdout`` capture the output)."""
    from rich.console import Console

    width: int | None = None
    if not sys.stdout.isatty():
        try:
            width = int(os.environ.get("COLUMNS", "120"))
        except ValueError:
            width = 120
    return Console(file=sys.stdout, width=width, highlight=False, emoji=False, soft_wrap=False)


def json_value(value: Any) -> Any:
    """``value`` (attrs objects, datetimes, UUIDs, mappings, sequences) as plain JSON
    data: :func:`carecrm.core.model.serialization.to_json_value`, imported on first use."""
    from carecrm.core.model.serialization import to_json_value

    return to_json_value(value)


def compact_json(value: Any) -> Any:
    """JSON data without its null and empty members:
    :func:`carecrm.core.model.serialization.compact`, imported on first use."""
    from carecrm.core.model.serialization import compact

    return compact(value)


def show_id(value: Any, *, full: bool | None = None) -> str | None:
    """How a table shows an id: its short form (the last hex digits,
    :func:`carecrm.core.model.short_ids.short_id`), or the whole id with ``--full-ids``.

    :param value: a :class:`uuid.UUID`, its text, or None (shown as None).
    :param full: whole ids (default: as the invocation's ``--full-ids`` says).
    """
    if value is None:
        return None
    if full is None:
        from carecrm.cli.context import state

        full = state().full_ids
    if full:
        return str(value)
    from carecrm.core.model.short_ids import short_id

    return short_id(value)


def echo_json(value: Any) -> None:
    """Print ``value`` (attrs objects, datetimes and UUIDs included) as indented JSON.

    Text is printed as UTF-8, or as ``\\uXXXX`` escapes throughout when some text cannot be
    encoded (a lone surrogate in a payload's header): the JSON means the same either way.
    """
    from carecrm.core.model.serialization import to_json_value

    data = to_json_value(value)
    out = json.dumps(data, indent=2, ensure_ascii=False, default=str)
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        out = json.dumps(data, indent=2, ensure_ascii=True, default=str)
    click.echo(out)


def styled(value: str, style: str = "") -> Text:
    """A table cell or line of plain ``value`` (never read as rich markup) in ``style``
    (a rich style such as ``bold`` or ``dim``; empty: none)."""
    from rich.text import Text

    return Text(value, style=style)


def text(value: Any) -> Text:
    """A table cell for ``value``: plain text, :data:`NONE` for None or an empty string."""
    from rich.text import Text

    if value is None or value == "" or value == () or value == []:
        return Text(NONE, style="dim")
    if isinstance(value, datetime):
        return Text(format_utc(value))
    if isinstance(value, bool):
        return Text("yes" if value else "no")
    if isinstance(value, (list, tuple)):
        return Text(", ".join(str(v) for v in value))
    return Text(str(value))


def table(*columns: str, title: str | None = None, no_wrap: Iterable[str] = ()) -> Table:
    """A table with these column headers: long values wrap and nothing is cut, except
    that the columns named in ``no_wrap`` (times, ids) are kept on one line."""
    from rich.table import Table

    keep = set(no_wrap)
    t = Table(title=title, title_justify="left", show_lines=False, expand=False)
    for name in columns:
        t.add_column(name, overflow="fold", no_wrap=name in keep)
    return t


def add_row(t: Table, *values: Any) -> None:
    """Add a row of :func:`text` cells."""
    from rich.text import Text

    t.add_row(*(v if isinstance(v, Text) else text(v) for v in values))


def print_table(t: Table) -> None:
    """Print a table (or a line saying it is empty)."""
    if not t.row_count:
        title = t.title if isinstance(t.title, str) else None
        click.echo(f"{title}: none" if title else "(none)")
        return
    console().print(t)


def print_fields(pairs: Iterable[tuple[str, Any]], *, title: str | None = None) -> None:
    """Print ``name: value`` pairs as a two-column grid."""
    from rich.table import Table
    from rich.text import Text

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column(overflow="fold")
    for name, value in pairs:
        grid.add_row(Text(name), value if isinstance(value, Text) else text(value))
    out = console()
    if title:
        out.print(Text(title, style="bold"))
    out.print(grid)


def format_utc(value: datetime | None) -> str:
    """``2018-01-18 18:17:02Z`` (UTC, to the second), or :data:`NONE`."""
    if value is None:
        return NONE
    return isoformat_z(value)[:19].replace("T", " ") + "Z"


def format_local(value: datetime | None, timezone: str) -> str:
    """``2018-01-18 12:17:02 CST`` in ``timezone`` (an IANA name), or :data:`NONE`."""
    if value is None:
        return NONE
    local = value.astimezone(ZoneInfo(timezone))
    return local.strftime("%Y-%m-%d %H:%M:%S ") + (local.tzname() or timezone)


def format_duration(seconds: float | None) -> str:
    """A short human duration: ``45s``, ``12m``, ``3h 20m``, ``4d 3h``; :data:`NONE` for None."""
    if seconds is None:
        return NONE
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    minutes, s = divmod(s, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m" if minutes else f"{hours}h"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h" if hours else f"{days}d"


def counts_line(counts: Mapping[str, int]) -> str:
    """``name ×3, other ×1`` for a mapping of counts (sorted by name)."""
    return ", ".join(f"{k} ×{v}" for k, v in sorted(counts.items()))
