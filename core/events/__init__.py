"""Domain events and their delivery: the event types (:mod:`.types`), the durable outbox
(:mod:`.outbox`) and the in-process delivery to ``carecrm_track_event`` (:mod:`.dispatch`).
"""

from __future__ import annotations

from carecrm.core._aliases import forwarder

# ``carecrm.core.events`` was a module before this release; its names stay reachable for one release.
__getattr__ = forwarder(__name__, "carecrm.core.events.types")
