"""The plugins and components of one app: options, listing, enabling, source connectors.

:class:`Components` is built once by the facade (:class:`carecrm.core.CareCRM`) with the
plugin manager, the settings, the registries and a digest function, and owns the caches
of structured plugin options and built connectors.  It opens nothing: the key ring is
reached only through ``digest`` when a connector hashes a record, so ``carecrm --help``
and ``carecrm plugins`` never load keys or open storage.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import pluggy

from carecrm.core.config import Settings, resolve_secret
from carecrm.core.errors import UnknownComponentError
from carecrm.core.ingest.connectors import SourceConnector
from carecrm.core.plugins.manager import DEFAULT_PLUGINS, PluginInfo, entry_point_names, families_of, origin_of
from carecrm.core.plugins.options import build_component, structure_options
from carecrm.core.plugins.registries import Registries


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
        declares its options class (so a typo fails when the app starts, not on first use).

        :raises ConfigError: naming the plugin, the key and the known keys.
        """
        for name in self._registries.options_types:
            self.plugin_options(name)

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
