"""Who a person is: identity normalization (:mod:`.normalize`), the shapes of matching
(:mod:`.matching`) and the contact directory with the timeline read (:mod:`.directory`).
"""

from __future__ import annotations

from carecrm.core._aliases import forwarder

# ``carecrm.core.identity`` was a module before this release; its names stay reachable for one release.
__getattr__ = forwarder(__name__, "carecrm.core.identity.normalize")
