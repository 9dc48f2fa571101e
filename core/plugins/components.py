"""The plugins and components of one app: options, listing, enabling, source connectors.

:class:`Components` is built once by the facade (:class:`carecrm.core.CareCRM`) with the
plugin manager, the settings, the registries and a digest function, and owns the caches
of structured plugin options and built connectors.  It opens nothing: the key ring is
reached only through ``digest`` when a connector hashes a record, so ``carecrm --help``
and ``carecrm plugins`` never load keys or open storage.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from typing import Any

import pluggy

from carecrm.core.config import Settings, resolve_secret
from carecrm.core.errors import ConfigError, UnknownComponentError
from carecrm.core.ingest.connectors import SourceConnector
from carecrm.core.plugins.manager import DEFAULT_PLUGINS, PluginInfo, entry_point_names, families_of, origin_of
from carecrm.core.plugins.options import build_component, structure_options
from carecrm.core.plugins.registries import Registries


class SourceProblems(ConfigError):
    """Every problem of the configured sources, found at start-up
    (:meth:`Components.check_options`) or by ``carecrm sources check``.

    :param problems: one message per problem, each naming the source, the option and the
        known values.
    :ivar problems: those messages.
    """

    def __init__(self, problems: Iterable[str]) -> None:
        self.problems: tuple[str, ...] = tuple(problems)
        count = len(self.problems)
        head = f"{count} problem{'s' if count != 1 else ''} in the [sources.*] configuration (carecrm sources check):"
        super().__init__("\n".join((head, *(f"  {p}" for p in self.problems))))


class Components:
    """Plugins and the components they register, as the practice configured them.

    Thread safety: the options and connector caches are filled under one lock (a
    double-checked look-up), so concurrent callers asking for the same source share one
    connector (a connector may keep state between payloads) and one options instance.

    :param pm: the app's plugin manager.
    :param settings: the practice's settings (``[plugins]``, ``[plugins.<name>]``,
        ``[sources.<name>]``).
    :param registries: the app's registries (filled by
        :meth:`~carecrm.core.plugins.registries.Registries.collect_from`, before or after
        this object is built: they are read on each use).
    :param digest: ``digest(data: bytes) -> str``, the keyed hash bound to every connector
        (:meth:`~carecrm.core.ingest.connectors.SourceConnector.bind_digest`); called only
        when a connector hashes a record, so it may load the key ring lazily.
    """

    def __init__(
        self,
        *,
        pm: pluggy.PluginManager,
        settings: Settings,
        registries: Registries,
        digest: Callable[[bytes], str],
    ) -> None:
        self._pm = pm
        self._settings = settings
        self._registries = registries
        self._digest = digest
        self._lock = threading.RLock()
        self._plugin_options: dict[str, Any] = {}
        self._connectors: dict[str, SourceConnector] = {}

    # ------------------------------------------------------------------ start-up checks

    def check_enabled_plugins(self) -> None:
        """Check that every plugin ``[plugins] enabled`` names is installed (an entry point
        or a registered plugin); nothing to check when the list is absent.

        :raises UnknownComponentError: naming the plugin and listing the installed
            third-party plugins.
        """
        enabled = self._settings.enabled_plugins
        if enabled is None:
            return
        installed = set(entry_point_names()) | {name for name, _ in self._pm.list_name_plugin()}
        for name in enabled:
            if name not in installed:
                raise UnknownComponentError(
                    "plugin", name, sorted(entry_point_names()) or ["(no third-party plugins installed)"]
                )

    def check_options(self) -> None:
        """Structure, at start-up, the options the practice gave to every plugin that
        declares its options class, and build the connector of every configured source
        (``[sources.<name>]``), so a typo, an unknown interaction kind or a selector that
        does not compile fails when the app starts, not when a lead arrives (a live
        receiver would otherwise have nothing to take the lead with).

        :raises ConfigError: naming the plugin, the key and the known keys.
        :raises SourceProblems: (a :class:`ConfigError`) listing every problem of every
            configured source, each naming the source, the option and the known values.
        """
        for name in self._registries.options_types:
            self.plugin_options(name)
        problems = self.source_problems(self._settings.sources)
        if problems:
            raise SourceProblems(problems)

    def source_problems(self, names: Iterable[str]) -> list[str]:
        """Build the connectors of ``names`` (cached for later use) and return what is wrong
        with them, one message per problem (every problem of a mapped source: its
        ``problems``), each starting ``source '<name>'``; empty when all are well.

        A connector may define ``check_source_settings(*, has_secret: bool)``, raising
        :class:`ConfigError` for what its options alone cannot tell (a mapped source with a
        ``secret`` but no ``signature`` table); it is called here, never on the ingest path.
        """
        problems: list[str] = []
        for name in names:
            try:
                connector = self.connector(name)
                # a connector may check what only the core knows (a secret is configured)
                check = getattr(connector, "check_source_settings", None)
                settings = self._settings.sources.get(name)
                if callable(check) and settings is not None:
                    check(has_secret=settings.secret is not None)
            except ConfigError as exc:
                for text in getattr(exc, "problems", None) or (str(exc),):
                    problems.append(text if text.startswith("source ") else f"source {name!r}: {text}")
        return problems

    # ------------------------------------------------------------------ plugins

    def plugin_options(self, name: str) -> Any:
        """The ``[plugins.<name>]`` options of plugin ``name``.

        :returns: an instance of the options class the plugin declared through
            ``carecrm_register_options`` (defaults when the table is absent); for a plugin
            that declares none (deprecated), a copy of the table as a dict (empty when absent).
        :raises ConfigError: for an unknown key or a wrong type, naming the plugin, the key
            and the known keys.
        """
        options_type = self._registries.options_types.get(name)
        table = self._settings.plugin_options.get(name, {})
        if options_type is None:
            return dict(table)
        cached = self._plugin_options.get(name)
        if cached is None:
            with self._lock:
                cached = self._plugin_options.get(name)
                if cached is None:
                    cached = structure_options(options_type, table, section=f"plugins.{name}", owner=f"plugin {name}")
                    self._plugin_options[name] = cached
        return cached

    def plugins_info(self) -> list[PluginInfo]:
        """Every registered plugin with families, origin and components, for ``carecrm plugins``."""
        out = []
        for name, plugin in self._pm.list_name_plugin():
            if plugin is None:
                continue
            out.append(
                PluginInfo(
                    name=name,
                    families=families_of(self._pm, plugin),
                    origin=origin_of(self._pm, plugin),
                    components=tuple(self._registries.components.get(name, ())),
                )
            )
        return out

    def plugin_enabled(self, name: str) -> bool:
        """Built-ins are always enabled; a third-party plugin is enabled unless
        ``[plugins] enabled`` lists others only."""
        if name in DEFAULT_PLUGINS or self._settings.enabled_plugins is None:
            return True
        return name in self._settings.enabled_plugins

    # ------------------------------------------------------------------ sources

    def connector(self, source: str) -> SourceConnector:
        """The configured connector of ``source`` (a ``[sources.<name>]`` table, or a
        registered connector id used with no options).

        :raises UnknownComponentError: listing the configured sources and connectors.
        """
        cached = self._connectors.get(source)
        if cached is not None:
            return cached
        with self._lock:
            cached = self._connectors.get(source)
            if cached is None:
                cached = self._make_connector(source)
                self._connectors[source] = cached
        return cached

    def _make_connector(self, source: str) -> SourceConnector:
        sources = self._registries.sources
        settings = self._settings.sources.get(source)
        if settings is None:
            if not (source in sources and source != "mapped"):
                known = sorted(set(self._settings.sources) | (set(sources.names()) - {"mapped"}))
                raise UnknownComponentError("source", source, known)
            connector_id, table = source, {}
        else:
            connector_id, table = settings.connector, settings.options
        cls_ = sources.get(connector_id)
        practice = self._settings.practice
        connector = build_component(
            cls_,
            name=source,
            table=table,
            settings=self._settings,
            section=f"sources.{source}",
            owner=f"source {source!r} (connector {connector_id!r} of plugin {sources.owner(connector_id)})",
            legacy=lambda options: cls_(source, options, practice),
        )
        connector.bind_digest(self._digest)
        return connector

    def source_secret(self, source: str) -> str | None:
        """The resolved ``secret`` of a source (``$env:`` / ``$file:`` references read)."""
        settings = self._settings.sources.get(source)
        if settings is None:
            return None
        return resolve_secret(settings.secret, what=f"sources.{source}.secret")
