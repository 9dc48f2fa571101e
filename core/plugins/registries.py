"""The registries of swappable parts, filled from the registration hooks when an app starts.

Each plugin's registration hooks are called once through pluggy's own hook callers, each
call with that plugin's own ``register`` (:func:`carecrm.core.plugins.manager.collect`), so every
component knows the plugin that owns it (``carecrm plugins`` lists them).  A registered
class must subclass its family's contract (:class:`carecrm.core.plugins.manager.Registry` checks
it); a storage factory must be callable and its URL schemes unique.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs
import pluggy

from carecrm.core.analytics.attribution import AttributionModel
from carecrm.core.analytics.scoring import ScoringModel
from carecrm.core.analytics.segments_service import SegmentBuilder
from carecrm.core.errors import PluginError
from carecrm.core.ingest.connectors import SourceConnector
from carecrm.core.plugins.manager import Registry, collect
from carecrm.core.storage.contract import StorageFactory


@attrs.frozen(kw_only=True)
class StorageEntry:
    """A registered storage backend: its name, URL schemes and factory."""

    name: str
    schemes: tuple[str, ...]
    factory: StorageFactory


class Registries:
    """Every family's registry of one app (see the module docstring).

    :ivar storage_backends: storage backends by name; ``schemes`` maps a URL scheme to one.
    :ivar sources: source connector classes by ``connector_id``.
    :ivar scoring_models: scoring model classes by ``model_id``.
    :ivar attribution_models: attribution model classes by ``model_id``.
    :ivar segment_builders: segment builder classes by ``builder_id``.
    :ivar options_types: each plugin's declared options class (attrs), by plugin name.
    :ivar components: what each plugin registered (``family:name``), by plugin name.
    """

    def __init__(self) -> None:
        self.storage_backends: Registry[StorageEntry] = Registry("storage backend")
        self.schemes: dict[str, str] = {}
        self.sources: Registry[type[SourceConnector]] = Registry("source connector", base=SourceConnector)
        self.scoring_models: Registry[type[ScoringModel]] = Registry("scoring model", base=ScoringModel)
        self.attribution_models: Registry[type[AttributionModel]] = Registry("attribution model", base=AttributionModel)
        self.segment_builders: Registry[type[SegmentBuilder]] = Registry("segment builder", base=SegmentBuilder)
        self.options_types: dict[str, type[Any]] = {}
        self.components: dict[str, list[str]] = {}

    def collect_from(self, pm: pluggy.PluginManager) -> None:
        """Call every registration hook of ``pm``'s plugins, each with its own ``register``.

        :raises PluginError: for a component that breaks its family's contract (naming the
            plugin): no id, not a subclass of the contract, a factory that is not callable,
            schemes that are not strings or already taken, an options class registered twice.
        """
        collect(pm, "carecrm_register_storage_backends", self._storage_register)
        collect(pm, "carecrm_register_options", self._options_register)
        collect(pm, "carecrm_register_sources", self._class_register(self.sources, "connector_id", "source"))
        collect(pm, "carecrm_register_scoring_models", self._class_register(self.scoring_models, "model_id", "scoring"))
        collect(
            pm,
            "carecrm_register_attribution_models",
            self._class_register(self.attribution_models, "model_id", "attribution"),
        )
        collect(
            pm,
            "carecrm_register_segment_builders",
            self._class_register(self.segment_builders, "builder_id", "segment"),
        )

    def _storage_register(self, owner: str) -> Callable[[str, Sequence[str], StorageFactory], None]:
        def register(name: str, schemes: Sequence[str], factory: StorageFactory) -> None:
            if not callable(factory):
                raise PluginError(
                    f"plugin {owner} registered storage backend {name!r} with a factory that is not callable; "
                    "expected factory(url: str, options: dict) -> StorageBackend"
                )
            if isinstance(schemes, str) or not all(isinstance(x, str) for x in schemes):
                raise PluginError(
                    f"plugin {owner} registered storage backend {name!r} with schemes that are not a list of strings"
                )
            self.storage_backends.register(
                name, StorageEntry(name=name, schemes=tuple(schemes), factory=factory), owner=owner
            )
            for scheme in schemes:
                if scheme in self.schemes:
                    raise PluginError(
                        f"URL scheme {scheme!r} registered twice: by {self.schemes[scheme]} and by {owner}"
                    )
                self.schemes[scheme] = name
            self.components.setdefault(owner, []).append(f"storage:{name}")

        return register

    def _class_register(self, registry: Registry[Any], attr: str, family: str) -> Callable[[str], Any]:
        def make(owner: str) -> Callable[[Any], None]:
            def register(cls_: Any) -> None:
                name = getattr(cls_, attr, None)
                if not name:
                    raise PluginError(f"{owner} registered a {registry.family} without {attr}")
                registry.register(name, cls_, owner=owner)
                self.components.setdefault(owner, []).append(f"{family}:{name}")

            return register

        return make

    def _options_register(self, owner: str) -> Callable[[type[Any]], None]:
        def register(options_cls: type[Any]) -> None:
            if not attrs.has(options_cls):
                raise PluginError(
                    f"plugin {owner} registered {options_cls!r} as its options class, but it is not an attrs class"
                )
            if owner in self.options_types:
                raise PluginError(f"plugin {owner} registered its options class twice")
            self.options_types[owner] = options_cls

        return register
