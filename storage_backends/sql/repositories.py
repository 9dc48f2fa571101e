"""The repositories of the SQL unit of work (SQLAlchemy Core, 2.0 style).

Each class implements one repository Protocol of :mod:`carecrm.core.storage.contract` over the
connection of its :class:`~carecrm.storage_backends.sql.backend.SqlUnitOfWork`.  Records go
in and come out as :mod:`carecrm.core.model.records` instances; column names are field names.

Rules shared by every repository:

* a datetime field or argument must be timezone-aware (``ValueError`` otherwise); it is
  stored as UTC truncated to milliseconds;
* an INSERT that breaks a unique key raises :class:`~carecrm.core.errors.DuplicateError`
  and leaves the unit of work usable (a SAVEPOINT guards multi-row inserts everywhere and
  single-row inserts on PostgreSQL, where a failed statement aborts the transaction);
  ``add_many`` stores all rows or none;
* long lists of keys are sent in chunks of :data:`CHUNK` (one statement per chunk);
* "streamed" iterators page through the table by key (:data:`PAGE` rows per query), so they
  hold no server cursor open and other statements may run between two rows;
* the statements of the hot paths (ingest, timeline reads, the audit chain) are built once
  with bind parameters and reused (:meth:`_Repository._statement`): building a Core
  statement and its cache key costs about 3x more than executing it on SQLite
  (docs/performance.md).

The classes live by family (:mod:`~carecrm.storage_backends.sql.people`,
:mod:`~carecrm.storage_backends.sql.timelines`, :mod:`~carecrm.storage_backends.sql.ledgers`,
:mod:`~carecrm.storage_backends.sql.journals`, whole-database copies in
:mod:`~carecrm.storage_backends.sql.transfer`, the shared machinery in
:mod:`~carecrm.storage_backends.sql.rows`); this module names them all.
"""

from __future__ import annotations

from carecrm.storage_backends.sql.journals import (  # noqa: F401
    SqlAudit,
    SqlMeta,
    SqlOutbox,
    _insert_missing,
)
from carecrm.storage_backends.sql.ledgers import (  # noqa: F401
    SqlAppointments,
    SqlConsents,
    SqlInbox,
    SqlNotes,
    SqlReviews,
    SqlScores,
    SqlSegments,
    SqlTasks,
)
from carecrm.storage_backends.sql.people import (  # noqa: F401
    SqlContacts,
    SqlIdentities,
    _condition,
    _segment_statement,
    _shape,
    criteria_shape,
)
from carecrm.storage_backends.sql.rows import (  # noqa: F401
    _CODECS,
    _STATEMENTS,
    _TOUCH_COLUMNS,
    CHUNK,
    PAGE,
    TOUCH_PAGE,
    R,
    _chunks,
    _Codec,
    _codec,
    _Repository,
    upsert_statement,
)
from carecrm.storage_backends.sql.timelines import (  # noqa: F401
    SqlInteractions,
    SqlStages,
)
from carecrm.storage_backends.sql.transfer import (  # noqa: F401
    TRANSFER_TABLES,
    _after_key,
    _transfer_table,
    count_records,
    export_records,
    import_records,
)

#: The public names (the underscored ones stay importable for the tests, not re-exported).
__all__ = [
    "CHUNK",
    "PAGE",
    "TOUCH_PAGE",
    "TRANSFER_TABLES",
    "R",
    "SqlAppointments",
    "SqlAudit",
    "SqlConsents",
    "SqlContacts",
    "SqlIdentities",
    "SqlInbox",
    "SqlInteractions",
    "SqlMeta",
    "SqlNotes",
    "SqlOutbox",
    "SqlReviews",
    "SqlScores",
    "SqlSegments",
    "SqlStages",
    "SqlTasks",
    "count_records",
    "criteria_shape",
    "export_records",
    "import_records",
    "upsert_statement",
]
