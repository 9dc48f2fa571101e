"""The storage contract every backend implements: the required repositories and unit of work
(:mod:`.contract`), the optional query capabilities with their reference implementations
(:mod:`.capabilities`), and the whole-database copy to another backend (:mod:`.migrate`).
"""

from __future__ import annotations

from carecrm.core._aliases import forwarder

# ``carecrm.core.storage`` was a module before this release; its names stay reachable for one release.
__getattr__ = forwarder(__name__, "carecrm.core.storage.contract")
