"""The ``carecrm`` command line: the root group, global options and plugin commands.

The root group is thin: it records ``--config`` and ``--as`` and builds the
:class:`~carecrm.core.CareCRM` app only when a command first needs it, so ``--help``
and ``init`` never read a config or open a database.  Plugins add commands through the
``carecrm_register_commands(cli)`` hook, called once, the first time the group lists
its commands or is asked for a command that is not built in.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from typing import Any

import click
import pluggy

from carecrm.cli.commands import admin, attribution, contacts, ingest, pipeline, scoring, setup
from carecrm.cli.commands import segments as segment_commands
from carecrm.cli.commands import tasks as task_commands
from carecrm.cli.context import CliError, CliState, debugging, map_error
from carecrm.core.app import default_actor
from carecrm.core.errors import CareCRMError
from carecrm.core.models import Actor
from carecrm.core.plugins import build_plugin_manager, per_plugin_callers

log = logging.getLogger("carecrm.cli")

#: The built-in commands, in the order ``carecrm --help`` lists them.
BUILTIN_COMMANDS: tuple[click.Command, ...] = (
    setup.init,
    setup.sources,
    ingest.ingest,
    ingest.inbox,
    contacts.contacts,
    contacts.timeline,
    contacts.note,
    task_commands.task,
    task_commands.log_group,
    pipeline.stage,
    pipeline.pipeline,
    scoring.score,
    attribution.attribute,
    segment_commands.segment,
    admin.plugins,
    admin.storage,
    admin.audit,
    admin.events,
)


class RootGroup(click.Group):
    """The ``carecrm`` group: turns core errors into exit statuses and loads plugin
    commands lazily.

    :param plugin_manager_factory: builds the plugin manager whose
        ``carecrm_register_commands`` implementations add commands; None disables
        plugin commands (the documentation generator uses that).
    """

    def __init__(
        self,
        *args: Any,
        plugin_manager_factory: Callable[[], pluggy.PluginManager] | None = build_plugin_manager,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._pm_factory = plugin_manager_factory
        self._plugins_loaded = plugin_manager_factory is None

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-in commands in their order, then plugin commands sorted by name."""
        self.load_plugin_commands()
        builtin = [c.name for c in BUILTIN_COMMANDS if c.name in self.commands]
        return builtin + sorted(n for n in self.commands if n not in builtin)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A built-in command, else (after loading them once) a plugin's command."""
        if cmd_name not in self.commands:
            self.load_plugin_commands()
        return self.commands.get(cmd_name)

    def load_plugin_commands(self) -> None:
        """Call every ``carecrm_register_commands`` implementation once.

        A plugin that fails, or adds a command under a built-in command's name, is
        reported on stderr and the rest of the command line still works.
        """
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        assert self._pm_factory is not None
        try:
            pm = self._pm_factory()
        except CareCRMError as exc:
            click.echo(f"warning: plugin commands not loaded: {exc}", err=True)
            return
        builtin = dict(self.commands)
        for plugin_name, caller in per_plugin_callers(pm, "carecrm_register_commands", call_order=True):
            try:
                caller(cli=self)
            except Exception as exc:  # a broken plugin must not break the command line
                log.debug("carecrm_register_commands of %s failed", plugin_name, exc_info=True)
                click.echo(
                    f"warning: plugin {plugin_name} failed to add its commands ({type(exc).__name__})",
                    err=True,
                )
            for name, cmd in builtin.items():
                if self.commands.get(name) is not cmd:
                    click.echo(
                        f"warning: plugin {plugin_name} tried to replace the built-in command "
                        f"{name!r}; the built-in is kept",
                        err=True,
                    )
                    self.commands[name] = cmd

    def invoke(self, ctx: click.Context) -> Any:
        """Run the command; a :class:`CareCRMError` becomes ``error: <message>`` on stderr
        with exit status 2, and so does any other exception (a bug), as ``error: internal
        error (<type>)``: its text is never shown, since it may quote personal data.  With
        ``--debug`` or ``CARECRM_DEBUG=1`` the traceback is shown instead."""
        try:
            return super().invoke(ctx)
        except CareCRMError as exc:
            if debugging(ctx):
                raise
            raise map_error(exc) from None
        except (click.exceptions.ClickException, click.exceptions.Exit, click.exceptions.Abort):
            raise
        except Exception as exc:
            if debugging(ctx):
                raise
            raise CliError(
                f"internal error ({type(exc).__name__}); run with --debug (or CARECRM_DEBUG=1) to see the traceback"
            ) from None


def _parse_actor(ctx: click.Context, param: click.Parameter, value: str | None) -> Actor:
    if value is None:
        return default_actor()
    try:
        return Actor.parse(value)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; expected NAME or NAME:ROLE") from None


def create_cli(
    *, plugin_manager_factory: Callable[[], pluggy.PluginManager] | None = build_plugin_manager
) -> RootGroup:
    """Build a new root group with every built-in command.

    :param plugin_manager_factory: see :class:`RootGroup` (None: no plugin commands).
    """

    @click.group(
        "carecrm",
        cls=RootGroup,
        plugin_manager_factory=plugin_manager_factory,
        context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
    )
    @click.option(
        "--config",
        "config",
        metavar="PATH",
        envvar="CARECRM_CONFIG",
        default=None,
        help="The practice's config file [env CARECRM_CONFIG; default ./carecrm.toml].",
    )
    @click.option(
        "--as",
        "actor",
        metavar="NAME[:ROLE]",
        envvar="CARECRM_ACTOR",
        default=None,
        callback=_parse_actor,
        help="Who is acting, recorded on every change and read [env CARECRM_ACTOR; "
        "default: the operating-system user as admin]. A label, not authentication.",
    )
    @click.option(
        "-v", "--verbose", count=True, help="Log more on stderr (-v: info, -vv: debug). Logs never hold personal data."
    )
    @click.option(
        "--debug",
        is_flag=True,
        default=False,
        help="Show tracebacks: of an error, and of each record quarantined by an unexpected failure "
        "[env CARECRM_DEBUG=1]. Tracebacks may quote personal data.",
    )
    @click.version_option(package_name="carecrm", prog_name="carecrm")
    @click.pass_context
    def cli(ctx: click.Context, config: str | None, actor: Actor, verbose: int, debug: bool) -> None:
        """carecrm: the CRM of a medical practice's leads and patients.

        Every command reads the practice's config (carecrm.toml) and opens its database
        only when it needs to. Exit status: 0 success (duplicates and pending payloads
        are not failures), 1 some records were quarantined, 2 usage or configuration
        error.
        """
        if verbose:
            logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO, format="%(name)s: %(message)s")
        obj = CliState(config, actor, debug=debug or os.environ.get("CARECRM_DEBUG") == "1")
        ctx.obj = obj
        ctx.call_on_close(obj.close)

    for command in BUILTIN_COMMANDS:
        cli.add_command(command)
    return cli  # type: ignore[return-value]


#: The console script's entry point (``carecrm = carecrm.cli.main:cli``).
cli = create_cli()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (``python -m carecrm.cli``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="carecrm")


__all__ = ["BUILTIN_COMMANDS", "CliError", "RootGroup", "cli", "create_cli", "main"]
