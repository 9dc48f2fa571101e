"""What every command shares: the invocation state (config path, actor, the lazily built
app), the error type that maps to an exit status, and the ``--json`` option.

Exit status (``docs/cli.md``, "Exit status"): 0 success (duplicates and pending pointers are not
failures), 1 some records quarantined (or, for ``audit verify``, the check failed),
2 usage or configuration error.  A :class:`~carecrm.core.errors.CareCRMError` never
reaches the user as a traceback: :func:`map_error` turns it into a one-line message on
stderr.  Messages come from the core, which never puts personal data in them.
"""

from __future__ import annotations

import functools
import os
import uuid
from collections.abc import Callable, Sequence
from typing import IO, TYPE_CHECKING, Any, ClassVar, ParamSpec, TypeVar

import click

from carecrm.core.errors import (
    CareCRMError,
    InvalidTransition,
    NotFound,
    ValidationFailed,
)

if TYPE_CHECKING:
    from carecrm.core.app import CareCRM
    from carecrm.core.model.domain import Actor

#: Exit status: success.
EXIT_OK = 0
#: Exit status: some records were quarantined (or a verification failed).
EXIT_QUARANTINED = 1
#: Exit status: usage or configuration error.
EXIT_USAGE = 2

F = TypeVar("F", bound=Callable[..., Any])
P = ParamSpec("P")
R = TypeVar("R")


class CliError(click.ClickException):
    """An error shown as ``error: <message>`` on stderr, exiting with status 2
    (:data:`EXIT_USAGE`).

    Click declares ``exit_code`` per class (a ``ClassVar``); an error that needs another
    status is a subclass that sets it.
    """

    exit_code: ClassVar[int] = EXIT_USAGE

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the message on stderr (never a traceback)."""
        click.echo(f"error: {self.format_message()}", err=True, file=file)


def map_error(exc: CareCRMError) -> CliError:
    """The :class:`CliError` for a core error.

    Every :class:`CareCRMError` is a usage or configuration problem from the command
    line's point of view (a missing config or key file, an unknown source, a database of
    another schema version, a contact that does not exist, a refused stage move, bad
    manual input), so all of them exit with status 2.
    """
    if isinstance(exc, NotFound):
        text = str(exc) or "not found"
        if "not found" not in text.lower():
            text = f"not found: {text}"
        return CliError(text)
    if isinstance(exc, InvalidTransition):
        return CliError(str(exc))
    if isinstance(exc, ValidationFailed):
        return CliError(f"invalid input: {exc}")
    return CliError(str(exc) or type(exc).__name__)


class CliState:
    """One invocation's state, stored as ``ctx.obj``.

    :param config: the ``--config`` value (None: ``CARECRM_CONFIG``, else ``./carecrm.toml``).
    :param actor: who acts (``--as`` / ``CARECRM_ACTOR``), passed by every command to
        each facade call that reads or changes personal data; None: the operating-system
        user as admin, looked up on first use of :attr:`actor`.
    :param debug: show tracebacks (``--debug`` / ``CARECRM_DEBUG=1``).
    :param full_ids: show whole ids in tables (``--full-ids``) instead of short ids.
    """

    def __init__(self, config: str | None, actor: Actor | None, *, debug: bool = False, full_ids: bool = False) -> None:
        self.config = config
        self._actor = actor
        self.debug = debug
        self.full_ids = full_ids
        self._app: CareCRM | None = None

    @property
    def actor(self) -> Actor:
        """Who acts: the ``--as`` actor, else the default one (``CARECRM_ACTOR``, else the
        operating-system user as admin)."""
        if self._actor is None:
            from carecrm.core.app import default_actor

            self._actor = default_actor()
        return self._actor

    @property
    def config_explicit(self) -> bool:
        """True when the config path was given (``--config`` or ``CARECRM_CONFIG``)."""
        return self.config is not None or bool(os.environ.get("CARECRM_CONFIG"))

    @property
    def app(self) -> CareCRM:
        """The app, built on first use (so ``--help`` and ``init`` never read the config
        nor open the database; the database itself opens on the first query)."""
        if self._app is None:
            from carecrm.core.app import CareCRM

            self._app = CareCRM.from_config(self.config)
        return self._app

    def set_app(self, app: CareCRM) -> None:
        """Use ``app`` for the rest of this invocation (it is closed at the end)."""
        self._app = app

    def close(self) -> None:
        """Close the app's storage if it was opened."""
        if self._app is not None:
            self._app.close()
            self._app = None


def debugging(ctx: click.Context | None = None) -> bool:
    """Whether tracebacks are shown: ``--debug`` was given or ``CARECRM_DEBUG=1`` is set.

    :param ctx: the click context to look in (default the current one, if any).
    """
    if os.environ.get("CARECRM_DEBUG") == "1":
        return True
    ctx = ctx or click.get_current_context(silent=True)
    obj = ctx.find_object(CliState) if ctx is not None else None
    return bool(obj is not None and obj.debug)


def state() -> CliState:
    """The current invocation's :class:`CliState` (built by the root group)."""
    ctx = click.get_current_context()
    obj = ctx.find_object(CliState)
    if obj is None:
        # a command invoked on its own, outside the root group (plugin tests)
        obj = CliState(None, None)
        root = ctx.find_root()
        root.obj = obj
        root.call_on_close(obj.close)
    return obj


def app() -> CareCRM:
    """The current invocation's app (see :attr:`CliState.app`)."""
    return state().app


class LazyChoice(click.Choice[str]):
    """A :class:`click.Choice` whose choices come from ``load`` (called once, on first
    use), so a command module can offer the core's vocabulary without importing the
    core when it is imported (``--help`` of another command never pays for it).

    :param load: returns the allowed values (strings).
    :param case_sensitive: as for :class:`click.Choice`.
    """

    def __init__(self, load: Callable[[], Sequence[str]], case_sensitive: bool = True) -> None:
        self._load = load
        self._choices: tuple[str, ...] | None = None
        super().__init__((), case_sensitive=case_sensitive)

    @property
    def choices(self) -> tuple[str, ...]:
        """The allowed values, loaded on first use."""
        if self._choices is None:
            self._choices = tuple(self._load())
        return self._choices

    @choices.setter
    def choices(self, value: Sequence[str]) -> None:
        # click.Choice.__init__ assigns the (empty) tuple given to it: keep the loader
        if value:
            self._choices = tuple(value)


def resolve_id(kind: str, text: str) -> uuid.UUID:
    """The whole id that an id typed on the command line names: a UUID, or a short id
    (the last hex digits tables show) resolved with
    :meth:`carecrm.core.app.CareCRM.resolve_id`.

    :param kind: ``"contact"``, ``"task"`` or ``"inbox"``.
    :raises CliError: (exit status 2) if ``text`` is not an id.
    :raises NotFound: if nothing has that id; :raises AmbiguousId: if a short id names
        several records (both become ``error:`` lines with exit status 2).
    """
    try:
        return state().app.resolve_id(kind, text)
    except CareCRMError:
        raise
    except ValueError as exc:
        raise CliError(str(exc)) from None


def json_option(func: F) -> F:
    """Add ``--json`` (print one JSON document instead of tables) to a command."""
    return click.option(
        "--json", "as_json", is_flag=True, default=False, help="Print JSON instead of tables (for scripts)."
    )(func)


def value_error_as_usage(func: Callable[P, R]) -> Callable[P, R]:
    """Turn a :class:`ValueError` raised by the facade (an unknown stage, an empty note)
    into an ``error:`` message with exit status 2."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return func(*args, **kwargs)
        except CareCRMError:
            raise
        except ValueError as exc:
            raise CliError(str(exc)) from None

    return wrapper
