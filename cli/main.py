"""The ``carecrm`` command line: the root group, global options and plugin commands.

The root group is thin: it records ``--config`` and ``--as`` and builds the
:class:`~carecrm.core.CareCRM` app only when a command first needs it, so ``--help``
and ``init`` never read a config or open a database.  Plugins add commands through the
``carecrm_register_commands(cli)`` hook, called once, the first time the group lists
its commands or is asked for a command that is not built in.

Start-up is kept short (``benchmarks/cli_startup.py``): each built-in command's module is
imported only when that command is looked up, the command modules import the core,
rich and the storage drivers inside the functions that use them, and the plugin
manager built for plugin commands imports only the built-in plugins that add commands.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import click

from carecrm.cli.context import CliError, CliState, debugging, map_error
from carecrm.core.errors import CareCRMError

if TYPE_CHECKING:
    import pluggy

    from carecrm.core.model.domain import Actor

log = logging.getLogger("carecrm.cli")

#: The built-in commands, in the order ``carecrm --help`` lists them: each name and the
#: ``module:attribute`` of its click command.  A command's module is imported only when
#: the command is looked up (click's "lazy loading of subcommands" pattern), so
#: ``carecrm --help`` and a look-up import only what they use.
BUILTIN_COMMANDS: Mapping[str, str] = {
    "init": "carecrm.cli.commands.setup:init",
    "sources": "carecrm.cli.commands.setup:sources",
    "ingest": "carecrm.cli.commands.ingest:ingest",
    "inbox": "carecrm.cli.commands.ingest:inbox",
    "contacts": "carecrm.cli.commands.contacts:contacts",
    "timeline": "carecrm.cli.commands.contacts:timeline",
    "note": "carecrm.cli.commands.contacts:note",
    "task": "carecrm.cli.commands.tasks:task",
    "log": "carecrm.cli.commands.tasks:log_group",
    "stage": "carecrm.cli.commands.pipeline:stage",
    "pipeline": "carecrm.cli.commands.pipeline:pipeline",
    "score": "carecrm.cli.commands.scoring:score",
    "attribute": "carecrm.cli.commands.attribution:attribute",
    "segment": "carecrm.cli.commands.segments:segment",
    "plugins": "carecrm.cli.commands.admin:plugins",
    "storage": "carecrm.cli.commands.admin:storage",
    "audit": "carecrm.cli.commands.admin:audit",
    "events": "carecrm.cli.commands.admin:events",
}


def load_command(path: str) -> click.Command:
    """Import the click command at ``path`` (``module:attribute``).

    :raises TypeError: if the attribute is not a :class:`click.Command`.
    """
    module_name, _, attribute = path.partition(":")
    command = getattr(importlib.import_module(module_name), attribute)
    if not isinstance(command, click.Command):
        raise TypeError(f"{path} is not a click command")
    return command


def default_plugin_manager() -> pluggy.PluginManager:
    """The plugin manager whose ``carecrm_register_commands`` implementations add
    commands: third-party plugins (entry points) and the built-in plugins that add
    commands (:data:`~carecrm.core.plugins.manager.COMMAND_PLUGINS`); the other built-in plugins
    (storage, sources, models) are not imported for that."""
    from carecrm.core.plugins.manager import COMMAND_PLUGINS, build_plugin_manager

    return build_plugin_manager(builtin_plugins=COMMAND_PLUGINS)


class RootGroup(click.Group):
    """The ``carecrm`` group: turns core errors into exit statuses, imports built-in
    commands on first use and loads plugin commands lazily.

    :param lazy_commands: built-in commands by name, as ``module:attribute`` paths
        (default :data:`BUILTIN_COMMANDS`), imported when first looked up.
    :param plugin_manager_factory: builds the plugin manager whose
        ``carecrm_register_commands`` implementations add commands; None disables
        plugin commands (the documentation generator uses that).
    """

    def __init__(
        self,
        *args: Any,
        lazy_commands: Mapping[str, str] = BUILTIN_COMMANDS,
        plugin_manager_factory: Callable[[], pluggy.PluginManager] | None = default_plugin_manager,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy_commands)
        self._pm_factory = plugin_manager_factory
        self._plugins_loaded = plugin_manager_factory is None

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Built-in commands in their order, then plugin commands sorted by name."""
        self.load_plugin_commands()
        builtin = list(self._lazy)
        return builtin + sorted(n for n in self.commands if n not in self._lazy)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """A built-in command (imported on first use), else (after loading them once) a
        plugin's command."""
        return self.builtin_command(cmd_name) or self._plugin_command(cmd_name)

    def builtin_command(self, name: str) -> click.Command | None:
        """The built-in command ``name``, imported and added on first use; None if there
        is no built-in command of that name."""
        path = self._lazy.get(name)
        if path is None:
            return None
        command = self.commands.get(name)
        if command is None:
            command = load_command(path)
            self.commands[name] = command
        return command

    def load_all(self) -> list[click.Command]:
        """Import every built-in command (the documentation generator and tests walk
        them all); returns them in listing order."""
        return [c for c in (self.builtin_command(n) for n in self._lazy) if c is not None]

    def _plugin_command(self, name: str) -> click.Command | None:
        if name not in self.commands:
            self.load_plugin_commands()
        return self.commands.get(name)

    def load_plugin_commands(self) -> None:
        """Call every ``carecrm_register_commands`` implementation once.

        A plugin that fails, or adds a command under a built-in command's name, is
        reported on stderr and the rest of the command line still works.
        """
        if self._plugins_loaded:
            return
        self._plugins_loaded = True
        assert self._pm_factory is not None
        from carecrm.core.plugins.manager import per_plugin_callers

        try:
            pm = self._pm_factory()
        except CareCRMError as exc:
            click.echo(f"warning: plugin commands not loaded: {exc}", err=True)
            return
        for plugin_name, caller in per_plugin_callers(pm, "carecrm_register_commands", call_order=True):
            before = dict(self.commands)
            try:
                caller(cli=self)
            except Exception as exc:  # a broken plugin must not break the command line
                log.debug("carecrm_register_commands of %s failed", plugin_name, exc_info=True)
                click.echo(
                    f"warning: plugin {plugin_name} failed to add its commands ({type(exc).__name__})",
                    err=True,
                )
            for name in self._lazy:
                if self.commands.get(name) is not before.get(name):
                    click.echo(
                        f"warning: plugin {plugin_name} tried to replace the built-in command "
                        f"{name!r}; the built-in is kept",
                        err=True,
                    )
                    if name in before:
                        self.commands[name] = before[name]
                    else:
                        del self.commands[name]  # imported from its module on first use

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


def _parse_actor(ctx: click.Context, param: click.Parameter, value: str | None) -> Actor | None:
    """The ``--as`` actor, or None when not given (:class:`CliState` then uses the
    default actor, looked up only when a command needs it)."""
    if value is None:
        return None
    from carecrm.core.model.domain import Actor

    try:
        return Actor.parse(value)
    except ValueError as exc:
        raise click.BadParameter(f"{exc}; expected NAME or NAME:ROLE") from None


def create_cli(
    *, plugin_manager_factory: Callable[[], pluggy.PluginManager] | None = default_plugin_manager
) -> RootGroup:
    """Build a new root group with every built-in command (each imported on first use).

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
    @click.option(
        "--full-ids",
        is_flag=True,
        default=False,
        help="Show whole ids in tables; tables show short ids (the last 8 hex digits), which every "
        "command taking an id or REF accepts too.",
    )
    @click.version_option(package_name="carecrm", prog_name="carecrm")
    @click.pass_context
    def cli(
        ctx: click.Context, config: str | None, actor: Actor | None, verbose: int, debug: bool, full_ids: bool
    ) -> None:
        """carecrm: the CRM of a medical practice's leads and patients.

        Every command reads the practice's config (carecrm.toml) and opens its database
        only when it needs to. Exit status: 0 success (duplicates and pending payloads
        are not failures), 1 some records were quarantined, 2 usage or configuration
        error.
        """
        if verbose:
            logging.basicConfig(level=logging.DEBUG if verbose > 1 else logging.INFO, format="%(name)s: %(message)s")
        obj = CliState(config, actor, debug=debug or os.environ.get("CARECRM_DEBUG") == "1", full_ids=full_ids)
        ctx.obj = obj
        ctx.call_on_close(obj.close)

    return cli


#: The console script's entry point (``carecrm = carecrm.cli.main:cli``).
cli = create_cli()


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (``python -m carecrm.cli``)."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="carecrm")


__all__ = ["BUILTIN_COMMANDS", "CliError", "RootGroup", "cli", "create_cli", "load_command", "main"]
