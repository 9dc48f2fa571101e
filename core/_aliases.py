"""One-release aliases for the module paths of carecrm 0.x before the core was laid out by capability.

Until this release the core was one flat folder (``carecrm.core.models``,
``carecrm.core.connectors``, ``carecrm.core.hookspecs``, ...).  Its modules now live in
subpackages named for what they hold (``docs/architecture.md``, "Layout").  So that a
plugin written against the old paths keeps working for one release, importing an old
path gives the module at its new place and a :class:`DeprecationWarning` naming it; the
module object is the same, so ``isinstance`` checks and hook registrations agree.

The five old modules whose names are now packages (``storage``, ``pipeline``,
``events``, ``plugins``, ``identity``) forward their old public names through :func:`forwarder`.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import warnings
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

#: Old module path -> new module path, for one release.
MODULE_ALIASES: dict[str, str] = {
    f"carecrm.core.{old}": f"carecrm.core.{new}"
    for old, new in {
        "models": "model.domain",
        "records": "model.records",
        "vocab": "model.vocab",
        "channels": "model.channels",
        "ids": "model.ids",
        "short_ids": "model.short_ids",
        "timeutil": "model.timeutil",
        "when": "model.when",
        "text": "model.text",
        "serialization": "model.serialization",
        "vocabdocs": "model.vocabdocs",
        "storage_capabilities": "storage.capabilities",
        "migrate_api": "storage.migrate",
        "crypto": "privacy.crypto",
        "mapping": "privacy.mapping",
        "audit": "privacy.audit",
        "read_path": "privacy.read_path",
        "matching": "identity.matching",
        "directory": "identity.directory",
        "connectors": "ingest.connectors",
        "connector_kit": "ingest.kit",
        "pipeline_service": "pipeline.service",
        "stage_moves": "pipeline.moves",
        "business_hours": "pipeline.business_hours",
        "coordination_api": "pipeline.coordination",
        "scoring": "analytics.scoring",
        "scoring_api": "analytics.scoring_service",
        "attribution": "analytics.attribution",
        "attribution_api": "analytics.attribution_service",
        "segments_api": "analytics.segments_service",
        "criteria": "analytics.criteria",
        "outbox": "events.outbox",
        "dispatch": "events.dispatch",
        "hookspecs": "plugins.hookspecs",
        "hookdocs": "plugins.hookdocs",
        "registries": "plugins.registries",
        "options": "plugins.options",
    }.items()
}


def _warn(old: str, new: str) -> None:
    warnings.warn(
        f"{old} moved to {new}; the old path is an alias for one release",
        DeprecationWarning,
        stacklevel=3,
    )


class _AliasLoader(importlib.abc.Loader):
    """Loads an old path as the module already at its new place."""

    def __init__(self, new: str) -> None:
        self.new = new

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType:
        """Import the module at its new path and hand that object out under the old name."""
        _warn(spec.name, self.new)
        return importlib.import_module(self.new)

    def exec_module(self, module: ModuleType) -> None:
        """Nothing to run: the module was executed under its new name."""


class _AliasFinder(importlib.abc.MetaPathFinder):
    """Finds the old module paths of :data:`MODULE_ALIASES` (and nothing else)."""

    def find_spec(
        self, fullname: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        """A spec for an old path, else ``None`` so the normal finders go on."""
        new = MODULE_ALIASES.get(fullname)
        if new is None:
            return None
        return importlib.machinery.ModuleSpec(fullname, _AliasLoader(new))


def install() -> None:
    """Put the alias finder on :data:`sys.meta_path` once (called by ``carecrm.core``)."""
    if not any(isinstance(finder, _AliasFinder) for finder in sys.meta_path):
        sys.meta_path.append(_AliasFinder())


def forwarder(package: str, target: str, names: frozenset[str] | None = None) -> Callable[[str], Any]:
    """A PEP 562 ``__getattr__`` for a package that took the place of an old module.

    ``carecrm.core.storage`` was a module and is now a package; ``from
    carecrm.core.storage import UnitOfWork`` keeps working for one release by fetching
    the name from *target* (here ``carecrm.core.storage.contract``) with a
    :class:`DeprecationWarning`.  A submodule of the package is returned as itself,
    without a warning (``from carecrm.core.plugins import hookspecs`` asks the package
    for the name before it imports the submodule).

    :param package: the package's dotted name, for messages.
    :param target: the module that holds the old module's names.
    :param names: when given, only these names are forwarded.
    :raises AttributeError: for a name the target does not have.
    """

    def __getattr__(name: str) -> Any:
        if name.startswith("__") or (names is not None and name not in names):
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        try:  # a submodule of the package (``from carecrm.core.plugins import hookspecs``)
            return importlib.import_module(f"{package}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{package}.{name}":
                raise
        module = importlib.import_module(target)
        try:
            value = getattr(module, name)
        except AttributeError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        _warn(f"{package}.{name}", f"{target}.{name}")
        return value

    return __getattr__
