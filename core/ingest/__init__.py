"""The ingest path: lead events from any source into one timeline per person.

The stages (inbox → parse → prepare → plan → write → publish) and where each one lives
are described in :mod:`carecrm.core.ingest.service`.  This package's names are the ones
the rest of carecrm imports.
"""

from carecrm.core.ingest.plan import BatchPlan, BatchPlanner, write_plan
from carecrm.core.ingest.prepare import LeadPreparer, PreparedLead, is_reason_code, service_interest_code
from carecrm.core.ingest.report import IngestReport, Quarantined, parsed_item
from carecrm.core.ingest.service import WRITE_ATTEMPTS, Ingestor

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
