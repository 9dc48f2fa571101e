"""Generate ``docs/cli.md``, the command reference, from the click commands themselves:
``python -m carecrm.cli.docgen > docs/cli.md``.

Only built-in commands are documented (plugin commands depend on what is installed);
``tests/cli/test_cli.py`` checks that the committed file equals this output.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator

import click

from carecrm.cli.main import create_cli

INTRO = """\
# carecrm command reference

Generated from the click commands by `python -m carecrm.cli.docgen > docs/cli.md`: do not
edit by hand (a test checks that this file matches the code).

## Conventions

- **Configuration**: `carecrm.toml`, found from `--config PATH`, else `CARECRM_CONFIG`, else
  the current folder. `carecrm init` writes one. Environment overrides for secrets:
  `CARECRM_STORAGE_URL`, `CARECRM_KEY_FILE`, `CARECRM_KEYS`. `--help` and `init` never read
  a config nor open a database.
- **Who is acting**: `--as NAME[:ROLE]` (or `CARECRM_ACTOR`), by default the operating-system
  user as admin, is recorded as the actor of every change and every audited read. It is a
  label for the local command line, not authentication.
- **Output**: human-readable tables by default, made to fit 80–120 columns (`NO_COLOR` is
  respected; 120 columns when not writing to a terminal, or `COLUMNS`); `--json` on every
  command that shows data prints one JSON document instead, with whole ids and every
  attribute. Times in JSON are ISO 8601 UTC ending in `Z`.
- **REF**: where a command takes a REF, give a contact id, an email address or a phone
  number in any format. When an email or phone is shared by several contacts (a household),
  the error lists their ids to pick from.
- **Short ids**: tables show ids by their last 8 hex digits (`93a635aa` for
  `01a23bf5-f261-76f2-b703-7ca693a635aa`: the random end of the time-ordered UUIDv7, whose
  front is shared by ids made in the same millisecond); every command taking an id or a
  REF accepts that short form, or any longer end of the id, as well as the whole id.
  `--full-ids` shows whole ids. A short id of decimal digits only is read as a phone number
  first. In the rare case that a short id ends several ids of one kind, the error lists
  the whole ids to pick from.
- **Personal data**: error messages and logs never contain personal data; `contacts show`,
  `timeline` and `inbox show` print a person's data on purpose, and each of those reads is
  written to the audit log.
- **Plugins** add commands through the `carecrm_register_commands(cli)` hook
  (`docs/plugin_hooks.md`); they are listed by `carecrm --help` but not here.
- **Debugging**: `--debug` (or `CARECRM_DEBUG=1`) shows the traceback of an error instead of
  the one-line message, and after `ingest` or `inbox retry` the traceback of each record
  quarantined by an unexpected failure. Without it no traceback is shown: an unexpected
  failure is `error: internal error (<type>)` with exit status 2, and a record that fails is
  quarantined with one line naming the source, the payload file, the record and the field,
  never the value (tracebacks can quote values).

## Exit status

| status | meaning |
|---|---|
| 0 | success; duplicates and pending payloads are not failures |
| 1 | some records were quarantined (`ingest`, `inbox retry`), or `audit verify` found the chain broken |
| 2 | usage or configuration error: a bad option, a missing or invalid config or key file, an unknown \
source or stage, a refused stage move, a contact that does not exist, a database that needs \
`carecrm storage upgrade` |
"""

_HEADING_PUNCT = re.compile(r"[^\w\- ]")


def md_escape(value: str) -> str:
    """Text safe inside Markdown prose: ``<``, ``>`` and ``&`` as entities, ``*`` escaped."""
    return html.escape(value, quote=False).replace("*", r"\*")


def anchor(title: str) -> str:
    """The GitHub anchor of a heading such as ``carecrm inbox list``."""
    return _HEADING_PUNCT.sub("", title.lower()).replace(" ", "-")


def walk(command: click.Command, ctx: click.Context) -> Iterator[tuple[click.Command, click.Context]]:
    """``command`` and every subcommand below it, depth first, in listing order."""
    yield command, ctx
    if isinstance(command, click.Group):
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from walk(sub, click.Context(sub, info_name=name, parent=ctx))


def _help_text(command: click.Command) -> str:
    text = (command.help or "").split("\f", 1)[0]
    paragraphs = [" ".join(line.strip() for line in p.splitlines()) for p in re.split(r"\n\s*\n", text.strip())]
    return "\n\n".join(md_escape(p) for p in paragraphs if p and p != "\b")


def _params(command: click.Command, ctx: click.Context) -> tuple[list[str], list[str]]:
    arguments: list[str] = []
    options: list[str] = []
    for param in command.get_params(ctx):
        if isinstance(param, click.Argument):
            arguments.append(f"- `{param.make_metavar(ctx)}`")
        elif isinstance(param, click.Option) and not param.hidden:
            record = param.get_help_record(ctx)
            if record is None:
                continue
            decl, help_text = record
            options.append(f"- `{decl}`" + (f": {md_escape(help_text)}" if help_text else ""))
    return arguments, options


def section(command: click.Command, ctx: click.Context) -> str:
    """The Markdown section of one command: usage, description, arguments, options,
    subcommands."""
    path = ctx.command_path
    usage = " ".join([path, *command.collect_usage_pieces(ctx)])
    out = [f"## `{path}`", "", "```", usage, "```", ""]
    body = _help_text(command)
    if body:
        out += [body, ""]
    arguments, options = _params(command, ctx)
    if arguments:
        out += ["Arguments:", "", *arguments, ""]
    if options:
        out += ["Options:", "", *options, ""]
    if isinstance(command, click.Group):
        subs = []
        for name in command.list_commands(ctx):
            sub = command.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            title = f"{path} {name}"
            subs.append(f"- [`{title}`](#{anchor(title)}): {md_escape(sub.get_short_help_str(limit=100))}")
        out += ["Commands:", "", *subs, ""]
    return "\n".join(out)


def generate() -> str:
    """The whole reference (built-in commands only, at a fixed help width)."""
    root = create_cli(plugin_manager_factory=None)
    settings = {**root.context_settings, "terminal_width": 100, "max_content_width": 100}
    ctx = click.Context(root, info_name="carecrm", **settings)
    sections = [section(cmd, c) for cmd, c in walk(root, ctx)]
    return INTRO + "\n" + "\n".join(sections).rstrip() + "\n"


def main() -> None:
    """Print the reference on stdout."""
    click.echo(generate(), nl=False)


if __name__ == "__main__":
    main()
