"""The repositories of the MongoDB unit of work.

Each class implements one repository Protocol of :mod:`carecrm.core.storage.contract` over one
collection, seen through the unit's :class:`~carecrm.storage_backends.mongo.documents.View`
(stored documents overlaid with the unit's pending writes).  Writes are buffered and
applied at commit; reads are queries and aggregation pipelines run by the server
(``find`` with an index-backed sort, ``count_documents``, ``$group``); only the unit's own
pending documents are matched in Python.

Rules shared by every repository:

* a datetime field or argument must be timezone-aware (``ValueError`` otherwise); it is
  stored as a BSON date (UTC, milliseconds);
* a unique key (``_id``, (source, idempotency_key) ...) is checked when a record is added,
  so :class:`~carecrm.core.errors.DuplicateError` comes at once and the unit stays usable;
  ``add_many`` buffers all records or none; the unique indexes refuse a duplicate written
  concurrently by another unit at commit;
* long lists of keys are sent in chunks of :data:`~carecrm.storage_backends.mongo.documents.CHUNK`.

The classes live by family (:mod:`~carecrm.storage_backends.mongo.people`,
:mod:`~carecrm.storage_backends.mongo.timelines`, :mod:`~carecrm.storage_backends.mongo.ledgers`,
:mod:`~carecrm.storage_backends.mongo.journals`, whole-database copies in
:mod:`~carecrm.storage_backends.mongo.transfer`, the shared machinery in
:mod:`~carecrm.storage_backends.mongo.shared`); this module names them all.
"""

from __future__ import annotations

from carecrm.storage_backends.mongo.documents import CHUNK
from carecrm.storage_backends.mongo.journals import (  # noqa: F401
    MongoAudit,
    MongoMeta,
    MongoOutbox,
)
from carecrm.storage_backends.mongo.ledgers import (  # noqa: F401
    MongoAppointments,
    MongoConsents,
    MongoInbox,
    MongoNotes,
    MongoReviews,
    MongoScores,
    MongoSegments,
    MongoTasks,
    sort_docs_records,
)
from carecrm.storage_backends.mongo.people import (  # noqa: F401
    MongoContacts,
    MongoIdentities,
    compile_criteria,
)
from carecrm.storage_backends.mongo.shared import (  # noqa: F401
    CODECS,
    NOTHING,
    PAGE,
    UNIQUE,
    _due_extra,
    _ids,
    _limit,
    _Repository,
    _starts_extra,
)
from carecrm.storage_backends.mongo.timelines import (  # noqa: F401
    _BY_CONTACT,
    _TIMELINE,
    _TOUCH_FIELDS,
    MongoInteractions,
    MongoStages,
)
from carecrm.storage_backends.mongo.transfer import (  # noqa: F401
    count_records,
    export_records,
    import_records,
)

__all__ = [
    "CHUNK",
    "CODECS",
    "UNIQUE",
    "MongoAppointments",
    "MongoAudit",
    "MongoConsents",
    "MongoContacts",
    "MongoIdentities",
    "MongoInbox",
    "MongoInteractions",
    "MongoMeta",
    "MongoNotes",
    "MongoOutbox",
    "MongoReviews",
    "MongoScores",
    "MongoSegments",
    "MongoStages",
    "MongoTasks",
    "compile_criteria",
    "count_records",
    "export_records",
    "import_records",
]
