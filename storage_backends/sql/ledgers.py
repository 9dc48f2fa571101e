"""SQL repositories of the smaller ledgers: appointments, consents, notes, tasks, scores,
reviews, segments and the inbox."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from carecrm.core.errors import DuplicateError, NotFound
from carecrm.core.model.records import (
    ACTIVE,
    AppointmentRecord,
    ConsentRecord,
    InboxRecord,
    NoteRecord,
    ReviewRecord,
    ScoreRecord,
    SegmentRecord,
    TaskRecord,
)
from carecrm.core.model.timeutil import stored_utc as utc
from carecrm.storage_backends.sql import schema
from carecrm.storage_backends.sql.errors import translated

if TYPE_CHECKING:
    pass
from carecrm.storage_backends.sql.rows import (
    _Repository,
    upsert_statement,
)

# --------------------------------------------------------------------------- appointments


class SqlAppointments(_Repository):
    """:class:`carecrm.core.storage.contract.AppointmentRepository` on table ``appointments``."""

    table = schema.appointments
    record_class = AppointmentRecord

    def count(self) -> int:
        """Number of stored appointments."""
        return self._count()


# --------------------------------------------------------------------------- consent ledger


class SqlConsents(_Repository):
    """:class:`carecrm.core.storage.contract.ConsentRepository` on table ``consents``."""

    table = schema.consents
    record_class = ConsentRecord

    def add(self, record: ConsentRecord) -> None:
        """Append a consent event.  :raises DuplicateError: on a repeated (source, key) or id."""
        self._insert(record)

    def for_contact_point(
        self, contact_point_bidx: str, *, channel: str | None = None, purpose: str | None = None
    ) -> list[ConsentRecord]:
        """Events for one contact point (optionally one channel / purpose), by (occurred_at, id)."""
        t = self.table
        statement = sa.select(t).where(t.c.contact_point_bidx == contact_point_bidx)
        if channel is not None:
            statement = statement.where(t.c.channel == channel)
        if purpose is not None:
            statement = statement.where(t.c.purpose == purpose)
        return self._records(statement.order_by(t.c.occurred_at, t.c.id))

    def for_contact(self, contact_id: uuid.UUID) -> list[ConsentRecord]:
        """Events recorded for one contact, by (occurred_at, id)."""
        t = self.table
        return self._records(sa.select(t).where(t.c.contact_id == contact_id).order_by(t.c.occurred_at, t.c.id))

    def count(self) -> int:
        """Number of stored consent events."""
        return self._count()


# --------------------------------------------------------------------------- notes, tasks


class SqlNotes(_Repository):
    """:class:`carecrm.core.storage.contract.NoteRepository` on table ``notes``."""

    table = schema.notes
    record_class = NoteRecord

    def add(self, record: NoteRecord) -> None:
        """Store a note.  :raises DuplicateError: if the id exists."""
        self._insert(record)

    def for_contact(self, contact_id: uuid.UUID) -> list[NoteRecord]:
        """One contact's notes, oldest first."""
        t = self.table
        return self._records(sa.select(t).where(t.c.contact_id == contact_id).order_by(t.c.created_at, t.c.id))


class SqlTasks(_Repository):
    """:class:`carecrm.core.storage.contract.TaskRepository` on table ``tasks``."""

    table = schema.tasks
    record_class = TaskRecord

    def add(self, record: TaskRecord) -> None:
        """Store a task.  :raises DuplicateError: if the id exists."""
        self._insert(record)

    def get(self, task_id: uuid.UUID) -> TaskRecord:
        """One task.  :raises NotFound: if there is none."""
        t = self.table
        record: TaskRecord = self._one(sa.select(t).where(t.c.id == task_id), f"no task {task_id}")
        return record

    def update(self, record: TaskRecord) -> None:
        """Replace a stored task.  :raises NotFound: if there is none."""
        t = self.table
        row = self._codec.row(record)
        values = {name: value for name, value in row.items() if name != "id"}
        result = self._execute(sa.update(t).where(t.c.id == record.id).values(**values))
        if result.rowcount == 0:
            raise NotFound(f"no task {record.id}")

    def list(
        self,
        *,
        assignee: str | None = None,
        contact_id: uuid.UUID | None = None,
        status: str | None = None,
        due_before: datetime | None = None,
    ) -> list[TaskRecord]:
        """Tasks matching every given filter, by (due_at with unknown last, id).

        ``due_before`` keeps tasks due strictly before it (tasks with no due time never
        match).  :raises ValueError: if ``due_before`` is naive.
        """
        t = self.table
        statement = sa.select(t)
        if assignee is not None:
            statement = statement.where(t.c.assignee == assignee)
        if contact_id is not None:
            statement = statement.where(t.c.contact_id == contact_id)
        if status is not None:
            statement = statement.where(t.c.status == status)
        if due_before is not None:
            statement = statement.where(t.c.due_at < utc(due_before, "due_before"))
        return self._records(statement.order_by(t.c.due_at.is_(None), t.c.due_at, t.c.id))


# --------------------------------------------------------------------------- scores, reviews


class SqlScores(_Repository):
    """:class:`carecrm.core.storage.contract.ScoreRepository` on table ``scores``."""

    table = schema.scores
    record_class = ScoreRecord

    def put(self, record: ScoreRecord) -> None:
        """Insert or replace the score of (contact_id, model)."""
        self._upsert(self._codec.row(record), ("contact_id", "model"))

    def put_many(self, records: Sequence[ScoreRecord]) -> None:
        """Insert or replace several scores: one executemany upsert, built once per dialect
        (on SQLite through sqlite3's own executemany); a (contact_id, model) given twice
        keeps the last."""
        if not records:
            return
        t = self.table
        dialect = self._uow.dialect_name
        keys = ("contact_id", "model")

        def build() -> sa.Executable:
            row = {c.name: sa.bindparam(f"p_{c.name}", type_=c.type) for c in t.columns}
            return upsert_statement(dialect, t, row, keys)

        last = {(r.contact_id, r.model): r for r in records}
        if dialect == "sqlite" and len(last) > 1:
            changes = ", ".join(f'"{c.name}" = excluded."{c.name}"' for c in t.columns if c.name not in keys)
            with translated(t.name, self._uow.where):
                self._sqlite_executemany(
                    [self._codec.row(r) for r in last.values()],
                    f' ON CONFLICT ("contact_id", "model") DO UPDATE SET {changes}',
                )
            return
        statement = self._statement(("put_many", dialect), build)
        rows = [{f"p_{name}": value for name, value in self._codec.row(r).items()} for r in last.values()]
        self._execute(statement, rows)

    def get(self, contact_id: uuid.UUID, model: str) -> ScoreRecord:
        """:raises NotFound: if the contact has no score under ``model``."""
        t = self.table
        record: ScoreRecord = self._one(
            sa.select(t).where(t.c.contact_id == contact_id, t.c.model == model),
            f"no score of contact {contact_id} under model {model!r}",
        )
        return record

    def top_active(self, model: str, *, limit: int = 20, stages: Sequence[str] | None = None) -> list[ScoreRecord]:
        """Highest scores of ``model`` of active contacts (optionally of ``stages``), ties by
        contact id: one statement joining ``contacts``; the (model, score) index gives the order.

        :raises ValueError: if ``limit`` < 0.
        """
        if limit < 0:
            raise ValueError("limit: must be 0 or more")
        if stages is not None and not stages:
            return []
        t, c = self.table, schema.contacts
        statement = sa.select(t).join(c, c.c.id == t.c.contact_id).where(t.c.model == model, c.c.status == ACTIVE)
        if stages is not None:
            statement = statement.where(c.c.stage.in_(list(dict.fromkeys(stages))))
        return self._records(statement.order_by(t.c.score.desc(), t.c.contact_id).limit(limit))


class SqlReviews(_Repository):
    """:class:`carecrm.core.storage.contract.ReviewRepository` on table ``reviews``."""

    table = schema.reviews
    record_class = ReviewRecord

    def add(self, record: ReviewRecord) -> bool:
        """Store a pair unless the same pair is stored; True if stored (the record keeps
        its pair ordered, :class:`ReviewRecord`)."""
        t = self.table
        exists = self._execute(
            sa.select(t.c.id).where(t.c.contact_a == record.contact_a, t.c.contact_b == record.contact_b)
        ).first()
        if exists is not None:
            return False
        row = self._codec.row(record)
        conn = self._uow.connection
        try:
            with translated(self.table.name, self._uow.where), conn.begin_nested():
                conn.execute(sa.insert(t), row)
        except DuplicateError as exc:
            if getattr(exc, "columns", ()) == ("id",):
                raise
            return False  # a concurrent writer stored the same pair first
        return True

    def list(self, *, status: str | None = "open") -> list[ReviewRecord]:
        """Pairs with this status (all if None), oldest first."""
        t = self.table
        statement = sa.select(t)
        if status is not None:
            statement = statement.where(t.c.status == status)
        return self._records(statement.order_by(t.c.created_at, t.c.id))

    def for_contact(self, contact_id: uuid.UUID) -> builtins.list[ReviewRecord]:
        """Pairs that involve one contact, oldest first."""
        t = self.table
        return self._records(
            sa.select(t)
            .where(sa.or_(t.c.contact_a == contact_id, t.c.contact_b == contact_id))
            .order_by(t.c.created_at, t.c.id)
        )


# --------------------------------------------------------------------------- segments, inbox


class SqlSegments(_Repository):
    """:class:`carecrm.core.storage.contract.SegmentRepository` on table ``segments``."""

    table = schema.segments
    record_class = SegmentRecord

    def put(self, record: SegmentRecord) -> None:
        """Insert or replace the segment of this name (every field is replaced)."""
        self._upsert(self._codec.row(record), ("name",))

    def get(self, name: str) -> SegmentRecord:
        """:raises NotFound: if no segment has this name."""
        t = self.table
        record: SegmentRecord = self._one(sa.select(t).where(t.c.name == name), f"no segment named {name!r}")
        return record

    def list(self) -> list[SegmentRecord]:
        """All saved segments by name (binary order)."""
        t = self.table
        records: list[SegmentRecord] = self._records(sa.select(t))
        return sorted(records, key=lambda r: r.name)

    def delete(self, name: str) -> None:
        """:raises NotFound: if no segment has this name."""
        t = self.table
        if self._execute(sa.delete(t).where(t.c.name == name)).rowcount == 0:
            raise NotFound(f"no segment named {name!r}")


class SqlInbox(_Repository):
    """:class:`carecrm.core.storage.contract.InboxRepository` on table ``inbox``."""

    table = schema.inbox
    record_class = InboxRecord

    def add(self, record: InboxRecord) -> None:
        """Store a received payload.  :raises DuplicateError: if the id exists."""
        self._insert(record)

    def add_many(self, records: Sequence[InboxRecord]) -> None:
        """Store several payloads in one executemany INSERT; all or none."""
        self._insert_many(records)

    def add_new(self, records: Sequence[InboxRecord]) -> int | None:
        """Store each payload whose (source, digest) is not stored yet and skip the rest
        (``ON CONFLICT DO NOTHING`` on PostgreSQL and SQLite; on MariaDB an
        ``ON DUPLICATE KEY UPDATE`` that changes nothing, never ``INSERT IGNORE``, which
        would also turn a too-long value into a silent truncation).

        :returns: on SQLite how many were stored (sqlite3 sums the changes of an
            ``executemany``, and a skipped row changes nothing); None on PostgreSQL and
            MariaDB, whose batched ``executemany`` row counts are not exact per row."""
        if not records:
            return 0
        dialect = self._uow.dialect_name
        t = self.table

        def build() -> Any:
            if dialect == "postgresql":
                from sqlalchemy.dialects.postgresql import insert as pg_insert

                return pg_insert(t).on_conflict_do_nothing(index_elements=["source", "digest"])
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as sqlite_insert

                return sqlite_insert(t).on_conflict_do_nothing(index_elements=["source", "digest"])
            from sqlalchemy.dialects.mysql import insert as mysql_insert

            return mysql_insert(t).on_duplicate_key_update(digest=t.c.digest)

        rows = [self._codec.row(r) for r in records]
        if dialect == "sqlite":
            with translated(t.name, self._uow.where):
                return self._sqlite_executemany(rows, ' ON CONFLICT ("source", "digest") DO NOTHING')
        statement = self._statement(("add_new", dialect), build)
        conn = self._uow.connection
        with translated(t.name, self._uow.where):
            conn.execute(statement, rows if len(rows) > 1 else rows[0])
        return None

    def find_digests(self, source: str, digests: Iterable[str]) -> list[InboxRecord]:
        """Payloads of ``source`` with any of these digests, oldest first (chunked IN lists)."""
        t = self.table
        wanted = list(dict.fromkeys(digests))
        out: list[InboxRecord] = []
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            statement = sa.select(t).where(t.c.source == source, t.c.digest.in_(chunk))
            out.extend(self._records(statement))
        out.sort(key=lambda r: (r.received_at, r.id))
        return out

    def set_status_many(
        self,
        inbox_ids: Iterable[uuid.UUID],
        status: str,
        *,
        reason: str | None = None,
        processed_at: datetime | None = None,
    ) -> int:
        """Set status and reason of several payloads, ``attempts = attempts + 1``, in one
        UPDATE per 500 ids.  :raises ValueError: if ``processed_at`` is naive."""
        t = self.table
        ids = list(dict.fromkeys(inbox_ids))
        values: dict[str, Any] = {"status": status, "reason": reason, "attempts": t.c.attempts + 1}
        if processed_at is not None:
            values["processed_at"] = utc(processed_at, "processed_at")
        changed = 0
        for start in range(0, len(ids), 500):
            statement = sa.update(t).where(t.c.id.in_(ids[start : start + 500])).values(values)
            changed += int(self._execute(statement).rowcount)
        return changed

    def set_verified(self, inbox_ids: Iterable[uuid.UUID], verified: bool | None) -> int:
        """Set ``verified`` of several payloads, one UPDATE per 500 ids; attempts unchanged."""
        t = self.table
        ids = list(dict.fromkeys(inbox_ids))
        changed = 0
        for start in range(0, len(ids), 500):
            statement = sa.update(t).where(t.c.id.in_(ids[start : start + 500])).values(verified=verified)
            changed += int(self._execute(statement).rowcount)
        return changed

    def get(self, inbox_id: uuid.UUID) -> InboxRecord:
        """:raises NotFound: if there is none."""
        t = self.table
        statement = self._statement("get", lambda: sa.select(t).where(t.c.id == sa.bindparam("p_id")))
        record: InboxRecord = self._one(statement, f"no inbox payload {inbox_id}", {"p_id": inbox_id})
        return record

    def set_status(
        self,
        inbox_id: uuid.UUID,
        status: str,
        *,
        reason: str | None = None,
        processed_at: datetime | None = None,
        attempts: int | None = None,
    ) -> None:
        """Set the status and the reason (None clears it); ``processed_at`` and ``attempts``
        change only when given.

        :raises NotFound: if there is no such payload.
        :raises ValueError: if ``processed_at`` is naive.
        """
        t = self.table
        values: dict[str, Any] = {"status": status, "reason": reason}
        if processed_at is not None:
            values["processed_at"] = utc(processed_at, "processed_at")
        if attempts is not None:
            values["attempts"] = attempts
        names = tuple(values)
        statement = self._statement(
            ("set_status", names),
            lambda: (
                sa.update(t)
                .where(t.c.id == sa.bindparam("p_id"))
                .values({name: sa.bindparam(f"v_{name}", type_=t.c[name].type) for name in names})
            ),
        )
        params = {f"v_{name}": value for name, value in values.items()}
        params["p_id"] = inbox_id
        if self._execute(statement, params).rowcount == 0:
            raise NotFound(f"no inbox payload {inbox_id}")

    def list(self, *, status: str | None = None, source: str | None = None, limit: int = 100) -> list[InboxRecord]:
        """Payloads, newest first (received_at, then id), filtered by status and source."""
        t = self.table
        statement = sa.select(t)
        if status is not None:
            statement = statement.where(t.c.status == status)
        if source is not None:
            statement = statement.where(t.c.source == source)
        statement = statement.order_by(t.c.received_at.desc(), t.c.id.desc()).limit(max(limit, 0))
        return self._records(statement)

    def purge(self, *, status: str, before: datetime) -> int:
        """Delete payloads of ``status`` received before ``before``; returns the count.

        :raises ValueError: if ``before`` is naive.
        """
        t = self.table
        statement = sa.delete(t).where(t.c.status == status, t.c.received_at < utc(before, "before"))
        return int(self._execute(statement).rowcount)

    def count(self) -> int:
        """Number of stored payloads."""
        return self._count()
