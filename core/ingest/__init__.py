"""The ingest path: lead events from any source into one timeline per person.

The stages (inbox → parse → prepare → plan → write → publish) and where each one lives
are described in :mod:`carecrm.core.ingest.service`.  This package's names are the ones
the rest of carecrm imports; they load on first use (PEP 562 module ``__getattr__``), so
a connector importing :mod:`carecrm.core.ingest.connectors` or the kit does not import
the whole ingest engine (every plugin module is imported when an app starts).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from carecrm.core.ingest.plan import BatchPlan, BatchPlanner, write_plan
    from carecrm.core.ingest.prepare import LeadPreparer, PreparedLead, is_reason_code, service_interest_code
    from carecrm.core.ingest.report import IngestReport, Quarantined, parsed_item
    from carecrm.core.ingest.service import WRITE_ATTEMPTS, Ingestor

#: Where each public name lives: ``name -> module`` (imported on first access).
_EXPORTS: dict[str, str] = {
    **dict.fromkeys(("BatchPlan", "BatchPlanner", "write_plan"), "carecrm.core.ingest.plan"),
    **dict.fromkeys(
        ("LeadPreparer", "PreparedLead", "is_reason_code", "service_interest_code"), "carecrm.core.ingest.prepare"
    ),
    **dict.fromkeys(("IngestReport", "Quarantined", "parsed_item"), "carecrm.core.ingest.report"),
    **dict.fromkeys(("WRITE_ATTEMPTS", "Ingestor"), "carecrm.core.ingest.service"),
}

__all__ = [
    "WRITE_ATTEMPTS",
    "BatchPlan",
    "BatchPlanner",
    "IngestReport",
    "Ingestor",
    "LeadPreparer",
    "PreparedLead",
    "Quarantined",
    "is_reason_code",
    "parsed_item",
    "service_interest_code",
    "write_plan",
]


def __getattr__(name: str) -> Any:
    """Import a public name's module on first access and cache the name here.

    :raises AttributeError: for a name that is neither public nor a submodule.
    """
    module = _EXPORTS.get(name)
    if module is None:
        try:  # a submodule (``from carecrm.core.ingest import kit``)
            return importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__name__}.{name}":
                raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names and whatever is already loaded."""
    return sorted(set(globals()) | set(__all__))
