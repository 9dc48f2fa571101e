"""The lifecycle pipeline: stages and allowed moves (:mod:`.stages`), the one stage-move path
(:mod:`.moves`), the pipeline service (:mod:`.service`), business hours, the coordinators' work
(tasks, assignment, logged calls: :mod:`.coordination`) and speed to lead (:mod:`.speed_to_lead`).
"""

from __future__ import annotations

from carecrm.core._aliases import forwarder

# ``carecrm.core.pipeline`` was a module before this release; its names stay reachable for one release.
__getattr__ = forwarder(__name__, "carecrm.core.pipeline.stages")
