"""The plugin manager and the registries of swappable parts.

Built-in plugins are the modules in :data:`DEFAULT_PLUGINS`; they register through the
same hooks as third-party plugins, which come from the entry-point group ``carecrm``
(``[project.entry-points.carecrm]`` in a plugin's pyproject).  ``CARECRM_LOAD_PLUGINS``
limits which entry points load: unset means all, empty means none, a comma list names
entry points.  ``CARECRM_TRACE_PLUGINS=1`` logs every hook call.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Generic, TypeVar

import attrs
import pluggy

from carecrm.core.errors import PluginError, UnknownComponentError
from carecrm.core.plugins import hookspecs

log = logging.getLogger("carecrm.plugins")

ENTRY_POINT_GROUP = "carecrm"

#: Built-in plugins, as module paths, registered after entry points.
DEFAULT_PLUGINS: tuple[str, ...] = (
    "carecrm.storage_backends.sql",
    "carecrm.storage_backends.mongo",
    "carecrm.plugins.identity_exact",
    "carecrm.plugins.sources.mapped",
    "carecrm.plugins.sources.sendgrid",
    "carecrm.plugins.sources.callrail",
    "carecrm.plugins.sources.twilio",
    "carecrm.plugins.sources.intercom",
    "carecrm.plugins.sources.olark",
    "carecrm.plugins.sources.mailgun",
    "carecrm.plugins.sources.mailchimp",
    "carecrm.plugins.sources.postmark",
    "carecrm.plugins.sources.amazon_ses",
    "carecrm.plugins.sources.meta_lead_ads",
    "carecrm.plugins.sources.google_ads_lead_form",
    "carecrm.plugins.sources.linkedin_lead_gen",
    "carecrm.plugins.sources.hubspot",
    "carecrm.plugins.scoring.points",
    "carecrm.plugins.scoring.live",
    "carecrm.plugins.attribution.basic",
    "carecrm.plugins.segments.basic",
    "carecrm.plugins.demo",
)

#: The built-in plugins that add command-line commands (``carecrm_register_commands``):
#: the only built-in ones the command line imports to list or find a plugin command, so
#: ``carecrm --help`` does not import every source, model and backend.  A test checks
#: that no other module of :data:`DEFAULT_PLUGINS` implements the hook.
COMMAND_PLUGINS: tuple[str, ...] = ("carecrm.plugins.demo",)

T = TypeVar("T")


def build_plugin_manager(
    *,
    load_entrypoints: bool = True,
    extra_plugins: Sequence[object] = (),
    builtin_plugins: Sequence[str] = DEFAULT_PLUGINS,
) -> pluggy.PluginManager:
    """Build a plugin manager: hookspecs, entry points, ``DEFAULT_PLUGINS``, extras.

    :param load_entrypoints: load third-party plugins from the ``carecrm`` entry-point
        group (tests pass False).
    :param extra_plugins: plugin objects (modules or instances) registered last.
    :param builtin_plugins: the built-in plugin modules to import and register (default
        all of :data:`DEFAULT_PLUGINS`; the command line passes :data:`COMMAND_PLUGINS`
        when it only needs plugin commands).
    :raises PluginError: if a plugin implements a hook that does not exist (a misspelt
        name fails loudly through ``check_pending``).
    """
    pm = pluggy.PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    if load_entrypoints:
        wanted = os.environ.get("CARECRM_LOAD_PLUGINS")
        if wanted is None:
            pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP)
        else:
            for name in [n.strip() for n in wanted.split(",") if n.strip()]:
                pm.load_setuptools_entrypoints(ENTRY_POINT_GROUP, name=name)
    for modname in builtin_plugins:
        module = importlib.import_module(modname)
        if not pm.is_registered(module):
            pm.register(module, name=modname)
    for plugin in extra_plugins:
        pm.register(plugin)
    try:
        pm.check_pending()
    except pluggy.PluginValidationError as exc:
        raise PluginError(str(exc)) from exc
    if os.environ.get("CARECRM_TRACE_PLUGINS") == "1":
        pm.trace.root.setwriter(log.debug)
        pm.enable_tracing()
    return pm


@attrs.frozen(kw_only=True)
class PluginInfo:
    """One registered plugin: its name, the families it serves, its origin
    (``built-in`` or ``<distribution> <version>``) and the components it registered."""

    name: str
    families: tuple[str, ...]
    origin: str
    components: tuple[str, ...]


@attrs.define
class Registry(Generic[T]):
    """Named components of one family (sources, scoring models, ...).

    :param family: the family's name, used in error messages.
    :param base: the family's contract base class; when given, only subclasses of it
        may be registered.
    """

    family: str
    _items: dict[str, T] = attrs.field(factory=dict)
    _owners: dict[str, str] = attrs.field(factory=dict)
    base: type[Any] | None = attrs.field(default=None, kw_only=True)

    def check(self, item: object, *, owner: str) -> None:
        """Check that ``item`` is a class subclassing :attr:`base` (when set).

        :raises PluginError: naming the plugin, the class and the expected base class.
        """
        if self.base is None:
            return
        if not (isinstance(item, type) and issubclass(item, self.base)):
            what = item.__qualname__ if isinstance(item, type) else repr(item)
            module = getattr(item, "__module__", None)
            shown = f"{module}.{what}" if module and isinstance(item, type) else what
            article = "an" if self.family[:1] in "aeiou" else "a"
            raise PluginError(
                f"plugin {owner} registered {shown} as {article} {self.family}, but it is not a subclass of "
                f"{self.base.__module__}.{self.base.__qualname__}"
            )

    def register(self, name: str, item: T, *, owner: str) -> None:
        """Register ``item`` as ``name``.

        :raises PluginError: if the name is taken, or ``item`` does not subclass
            :attr:`base` (naming the plugin, the class and the base).
        """
        self.check(item, owner=owner)
        if name in self._items:
            raise PluginError(f"{self.family} {name!r} registered twice: by {self._owners[name]} and by {owner}")
        self._items[name] = item
        self._owners[name] = owner

    def get(self, name: str) -> T:
        """The component of this name.  :raises UnknownComponentError: listing known names."""
        try:
            return self._items[name]
        except KeyError:
            raise UnknownComponentError(self.family, name, self._items) from None

    def names(self) -> list[str]:
        """Registered names, sorted."""
        return sorted(self._items)

    def owner(self, name: str) -> str:
        """The plugin that registered ``name``."""
        return self._owners[name]

    def __contains__(self, name: object) -> bool:
        return name in self._items


def _plugin_name_of(pm: pluggy.PluginManager, impl_plugin: object) -> str:
    return pm.get_name(impl_plugin) or repr(impl_plugin)


def per_plugin_callers(
    pm: pluggy.PluginManager, hook_name: str, *, call_order: bool = False
) -> Iterator[tuple[str, pluggy.HookCaller]]:
    """One pluggy hook caller per plugin implementing ``hook_name``, with its name.

    Each caller is ``pm.subset_hook_caller(hook_name, others)``: that plugin's own
    implementation plus every ``wrapper=True`` / ``hookwrapper=True`` implementation of
    the hook (whichever plugin registered it), so wrappers run around each plugin's call
    and ``CARECRM_TRACE_PLUGINS=1`` traces every call.  Calling a registration hook this
    way lets each plugin receive its own ``register`` callable (owner tracking) while the
    call still goes through pluggy.

    :param hook_name: the hook (``carecrm_register_sources``).
    :param call_order: False (default) yields plugins in ``get_hookimpls()`` order
        (registration order, ``tryfirst``/``trylast`` applied); True in pluggy's call
        order (the reverse: last registered first).
    :returns: an iterator of ``(plugin name, hook caller)``; call the caller with the
        hook's keyword arguments.
    """
    caller = getattr(pm.hook, hook_name)
    plain = [impl for impl in caller.get_hookimpls() if not (impl.wrapper or impl.hookwrapper)]
    for impl in reversed(plain) if call_order else plain:
        others = [other.plugin for other in plain if other.plugin is not impl.plugin]
        yield _plugin_name_of(pm, impl.plugin), pm.subset_hook_caller(hook_name, remove_plugins=others)


def collect(
    pm: pluggy.PluginManager,
    hook_name: str,
    make_register: Callable[[str], Callable[..., None]],
) -> None:
    """Call a registration hook plugin by plugin, so each ``register`` call knows its owner.

    Goes through pluggy's hook callers (:func:`per_plugin_callers`): hook wrappers run and
    tracing shows the calls.

    :param hook_name: the registration hook (``carecrm_register_sources``).
    :param make_register: given the owner's plugin name, returns the ``register``
        callable passed to that plugin's implementation.
    :raises PluginError: or whatever a plugin's implementation raises.
    """
    for owner, caller in per_plugin_callers(pm, hook_name):
        caller(register=make_register(owner))


def origin_of(pm: pluggy.PluginManager, plugin: object) -> str:
    """``built-in`` for a DEFAULT_PLUGINS module, else ``<distribution> <version>``."""
    name = pm.get_name(plugin) or ""
    if name in DEFAULT_PLUGINS:
        return "built-in"
    for dist_plugin, dist in pm.list_plugin_distinfo():
        if dist_plugin is plugin:
            return f"{dist.project_name} {dist.version}"
    return "registered in code"


def iter_plugins(pm: pluggy.PluginManager) -> Iterable[tuple[str, object]]:
    """(name, plugin) of every registered plugin, in registration order."""
    yield from pm.list_name_plugin()


def entry_point_names() -> list[str]:
    """Names of the installed entry points of the ``carecrm`` group."""
    import importlib.metadata

    return sorted(ep.name for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


def families_of(pm: pluggy.PluginManager, plugin: object) -> tuple[str, ...]:
    """The hook families a plugin implements, from the hook names it implements."""
    names: list[str] = []
    mapping = {
        "carecrm_register_storage_backends": "storage",
        "carecrm_register_sources": "source",
        "carecrm_register_scoring_models": "scoring",
        "carecrm_register_attribution_models": "attribution",
        "carecrm_register_segment_builders": "segment",
        "carecrm_register_commands": "cli",
        "carecrm_register_options": "options",
        "carecrm_track_event": "events",
        "carecrm_match_contact": "matching",
        "carecrm_configure": "configure",
    }
    for caller in pm.get_hookcallers(plugin) or []:
        fam = mapping.get(caller.name)
        if fam and fam not in names:
            names.append(fam)
    return tuple(names)
