"""The plugin system: the hook specifications (:mod:`.hookspecs`), the plugin manager
(:mod:`.manager`), the registries of swappable parts, typed plugin options and the hook reference
generator.
"""

from __future__ import annotations

from carecrm.core._aliases import forwarder

# ``carecrm.core.plugins`` was a module before this release; its names stay reachable for one release.
__getattr__ = forwarder(__name__, "carecrm.core.plugins.manager")
