"""SQL repositories of timelines: interactions (timeline pages, touches, first responses)
and the stage history."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from carecrm.core.model.records import (
    FirstResponseRecord,
    InteractionFacts,
    InteractionRecord,
    StageChangeRecord,
    StageReachedRecord,
    TouchRecord,
)
from carecrm.core.model.timeutil import stored_utc as utc
from carecrm.core.storage.contract import TimelineCursor
from carecrm.storage_backends.sql import schema

if TYPE_CHECKING:
    pass
from carecrm.storage_backends.sql.rows import (
    _TOUCH_COLUMNS,
    TOUCH_PAGE,
    _chunks,
    _Repository,
)

# --------------------------------------------------------------------------- interactions


class SqlInteractions(_Repository):
    """:class:`carecrm.core.storage.contract.InteractionRepository` on table ``interactions``."""

    table = schema.interactions
    record_class = InteractionRecord

    def add(self, record: InteractionRecord) -> None:
        """Append an interaction.  :raises DuplicateError: on a repeated (source, idempotency_key)."""
        self._insert(record)

    def add_many(self, records: Sequence[InteractionRecord]) -> None:
        """Append several interactions in one executemany INSERT; all or none.

        :raises DuplicateError: if any (source, idempotency_key) or id exists.
        """
        self._insert_many(records)

    def existing_keys(self, source: str, keys: Iterable[str]) -> set[str]:
        """Which of ``keys`` are already stored for ``source`` (one query per chunk)."""
        t = self.table
        wanted = list(dict.fromkeys(keys))
        found: set[str] = set()
        statement = self._statement(
            "existing_keys",
            lambda: sa.select(t.c.idempotency_key).where(
                t.c.source == sa.bindparam("p_source"), t.c.idempotency_key.in_(sa.bindparam("p_keys", expanding=True))
            ),
        )
        for chunk in _chunks(wanted):
            found.update(self._execute(statement, {"p_source": source, "p_keys": list(chunk)}).scalars())
        return found

    def delete_for_inbox(self, inbox_id: uuid.UUID) -> list[InteractionRecord]:
        """Delete the interactions of one inbox payload (``ix_interactions_inbox``); returns them."""
        t = self.table
        gone: list[InteractionRecord] = self._records(sa.select(t).where(t.c.inbox_id == inbox_id))
        if gone:
            self._execute(sa.delete(t).where(t.c.inbox_id == inbox_id))
        return gone

    def get(self, interaction_id: uuid.UUID) -> InteractionRecord:
        """One interaction.  :raises NotFound: if there is none."""
        t = self.table
        record: InteractionRecord = self._one(
            sa.select(t).where(t.c.id == interaction_id), f"no interaction {interaction_id}"
        )
        return record

    def timeline(
        self,
        contact_id: uuid.UUID,
        *,
        after: TimelineCursor | None = None,
        limit: int = 100,
        kinds: Sequence[str] | None = None,
    ) -> list[InteractionRecord]:
        """A contact's interactions by (occurred_at, id), oldest first, after the cursor.

        ``kinds=[]`` matches nothing.  :raises ValueError: if the cursor's time is naive.
        """
        t = self.table
        if kinds is not None and not kinds:
            return []
        params: dict[str, Any] = {"p_contact": contact_id, "p_limit": max(limit, 0)}
        if kinds is not None:
            params["p_kinds"] = list(kinds)
        if after is not None:
            at, after_id = after
            params["p_at"], params["p_after_id"] = utc(at, "timeline cursor"), after_id

        def build() -> sa.Select[*tuple[Any, ...]]:
            statement = sa.select(t).where(t.c.contact_id == sa.bindparam("p_contact"))
            if kinds is not None:
                statement = statement.where(t.c.kind.in_(sa.bindparam("p_kinds", expanding=True)))
            if after is not None:
                at = sa.bindparam("p_at", type_=t.c.occurred_at.type)
                after_id: sa.BindParameter[uuid.UUID] = sa.bindparam("p_after_id")
                statement = statement.where(
                    sa.or_(t.c.occurred_at > at, sa.and_(t.c.occurred_at == at, t.c.id > after_id))
                )
            limit_ = sa.bindparam("p_limit", type_=sa.Integer())
            return statement.order_by(t.c.occurred_at, t.c.id).limit(limit_)

        statement = self._statement(("timeline", kinds is not None, after is not None), build)
        return self._records(statement, params)

    def first_responses(
        self,
        *,
        inbound_kinds: Sequence[str],
        outbound_kinds: Sequence[str],
        contact_ids: Sequence[uuid.UUID] | None = None,
    ) -> list[FirstResponseRecord]:
        """First inbound and first outbound-after-it per contact, in one statement (per chunk
        of ids)::

            SELECT fi.contact_id, fi.first_in, MIN(o.occurred_at)
            FROM (SELECT contact_id, MIN(occurred_at) AS first_in FROM interactions
                  WHERE direction = 'inbound' AND kind IN (...) GROUP BY contact_id) fi
            LEFT JOIN interactions o ON o.contact_id = fi.contact_id AND o.occurred_at >= fi.first_in
                 AND o.direction = 'outbound' AND o.kind IN (...)
            GROUP BY fi.contact_id, fi.first_in ORDER BY fi.contact_id

        Both sides use the (contact_id, occurred_at, id) index.
        """
        t = self.table
        inbound, outbound = list(dict.fromkeys(inbound_kinds)), list(dict.fromkeys(outbound_kinds))
        if not inbound or (contact_ids is not None and not contact_ids):
            return []

        def statement(ids: Sequence[uuid.UUID] | None) -> sa.Select[*tuple[Any, ...]]:
            first_in = sa.select(t.c.contact_id, sa.func.min(t.c.occurred_at).label("first_in")).where(
                t.c.direction == "inbound", t.c.kind.in_(inbound)
            )
            if ids is not None:
                first_in = first_in.where(t.c.contact_id.in_(list(ids)))
            fi = first_in.group_by(t.c.contact_id).subquery("fi")
            o = t.alias("o")
            on = sa.and_(o.c.contact_id == fi.c.contact_id, o.c.occurred_at >= fi.c.first_in)
            answers = sa.and_(o.c.direction == "outbound", o.c.kind.in_(outbound)) if outbound else sa.false()
            on = sa.and_(on, answers)
            return (
                sa.select(fi.c.contact_id, fi.c.first_in, sa.func.min(o.c.occurred_at).label("first_out"))
                .select_from(fi.outerjoin(o, on))
                .group_by(fi.c.contact_id, fi.c.first_in)
                .order_by(fi.c.contact_id)
            )

        chunks: list[Sequence[uuid.UUID] | None] = (
            [None] if contact_ids is None else list(_chunks(list(dict.fromkeys(contact_ids))))
        )
        out: list[FirstResponseRecord] = []
        for chunk in chunks:
            for row in self._execute(statement(chunk)):
                out.append(FirstResponseRecord(contact_id=row[0], first_inbound_at=row[1], first_outbound_at=row[2]))
        out.sort(key=lambda r: r.contact_id)
        return out

    def clear_timelines(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, list[InteractionFacts]]:
        """The clear facts of each contact's interactions, per contact by (occurred_at, id):
        one query per :data:`CHUNK` ids (``contact_id IN (...)``, a range scan of the
        (contact_id, occurred_at, id) index per id, ordered by the database), reading the
        seven columns scoring needs only."""
        t = self.table
        ids = list(dict.fromkeys(contact_ids))
        found: dict[uuid.UUID, list[InteractionFacts]] = {}
        statement = self._statement(
            "clear_timelines",
            lambda: (
                sa.select(t.c.id, t.c.contact_id, t.c.kind, t.c.occurred_at, t.c.channel, t.c.direction, t.c.attributes)
                .where(t.c.contact_id.in_(sa.bindparam("p_ids", expanding=True)))
                .order_by(t.c.contact_id, t.c.occurred_at, t.c.id)
            ),
        )
        for chunk in _chunks(ids):
            for row in self._execute(statement, {"p_ids": list(chunk)}):
                found.setdefault(row.contact_id, []).append(
                    InteractionFacts(
                        id=row.id,
                        contact_id=row.contact_id,
                        kind=row.kind,
                        occurred_at=row.occurred_at,
                        channel=row.channel,
                        direction=row.direction,
                        attributes=row.attributes,
                    )
                )
        return found

    def latest_times(self, contact_ids: Iterable[uuid.UUID]) -> dict[uuid.UUID, datetime]:
        """``max(occurred_at)`` per contact: one grouped query per :data:`CHUNK` ids."""
        t = self.table
        ids = list(dict.fromkeys(contact_ids))
        statement = self._statement(
            "latest_times",
            lambda: (
                sa.select(t.c.contact_id, sa.func.max(t.c.occurred_at).label("latest"))
                .where(t.c.contact_id.in_(sa.bindparam("p_ids", expanding=True)))
                .group_by(t.c.contact_id)
            ),
        )
        found: dict[uuid.UUID, datetime] = {}
        for chunk in _chunks(ids):
            for row in self._execute(statement, {"p_ids": list(chunk)}):
                found[row.contact_id] = row.latest
        return found

    def iter_touches(
        self,
        kinds: Sequence[str],
        *,
        skip_outbound: Sequence[str] = (),
        occurred_after: datetime | None = None,
        occurred_before: datetime | None = None,
    ) -> Iterator[TouchRecord]:
        """Interactions of ``kinds`` by (contact_id, occurred_at, id) as :class:`TouchRecord`,
        :data:`TOUCH_PAGE` rows per query.

        Keyset pages, like every streamed iterator here (no server cursor stays open, so
        the stage-history stream can be read between two pages, on MariaDB too): each
        page's condition starts with ``contact_id >= :last_contact`` so that every database
        answers it with a range scan of the (contact_id, occurred_at, id) index, already in
        order.  Only the nine columns of a touch are read, each page with one
        ``fetchall()``, and records are built by position (the codec's by-name path costs
        more than the query at a million rows).  ``kinds=[]`` yields nothing.

        :raises ValueError: on a naive bound.
        """
        t = self.table
        if not kinds:
            return
        params: dict[str, Any] = {"p_kinds": list(kinds), "p_limit": TOUCH_PAGE}
        if skip_outbound:
            params["p_skip"] = list(skip_outbound)
        if occurred_after is not None:
            params["p_from"] = utc(occurred_after, "occurred_after")
        if occurred_before is not None:
            params["p_to"] = utc(occurred_before, "occurred_before")

        def build(paged: bool) -> sa.Select[*tuple[Any, ...]]:
            statement = sa.select(*(t.c[name] for name in _TOUCH_COLUMNS)).where(
                t.c.kind.in_(sa.bindparam("p_kinds", expanding=True))
            )
            if skip_outbound:
                outbound = sa.func.coalesce(t.c.direction, "") == "outbound"
                statement = statement.where(
                    sa.not_(sa.and_(t.c.kind.in_(sa.bindparam("p_skip", expanding=True)), outbound))
                )
            if occurred_after is not None:
                statement = statement.where(t.c.occurred_at >= sa.bindparam("p_from", type_=t.c.occurred_at.type))
            if occurred_before is not None:
                statement = statement.where(t.c.occurred_at < sa.bindparam("p_to", type_=t.c.occurred_at.type))
            if paged:
                cid = sa.bindparam("p_cid", type_=t.c.contact_id.type)
                at = sa.bindparam("p_at", type_=t.c.occurred_at.type)
                last_id = sa.bindparam("p_id", type_=t.c.id.type)
                statement = statement.where(
                    t.c.contact_id >= cid,
                    sa.or_(
                        t.c.contact_id > cid,
                        t.c.occurred_at > at,
                        sa.and_(t.c.occurred_at == at, t.c.id > last_id),
                    ),
                )
            limit = sa.bindparam("p_limit", type_=sa.Integer())
            return statement.order_by(t.c.contact_id, t.c.occurred_at, t.c.id).limit(limit)

        shape = (bool(skip_outbound), occurred_after is not None, occurred_before is not None)
        statement = self._statement(("touches", *shape, False), lambda: build(False))
        paged = self._statement(("touches", *shape, True), lambda: build(True))
        while True:
            rows = self._execute(statement, params).fetchall()
            yield from [
                TouchRecord(
                    id=r[0],
                    contact_id=r[1],
                    kind=r[2],
                    occurred_at=r[3],
                    channel=r[4],
                    direction=r[5],
                    campaign=r[6],
                    channel_group=r[7],
                    touchpoint=r[8],
                )
                for r in rows
            ]
            if len(rows) < TOUCH_PAGE:
                return
            last = rows[-1]
            params.update(p_cid=last[1], p_at=last[3], p_id=last[0])
            statement = paged

    def count(self) -> int:
        """Number of stored interactions."""
        return self._count()


# --------------------------------------------------------------------------- stage history


class SqlStages(_Repository):
    """:class:`carecrm.core.storage.contract.StageRepository` on table ``stage_changes``."""

    table = schema.stage_changes
    record_class = StageChangeRecord

    def add(self, record: StageChangeRecord) -> None:
        """Append a stage change.  :raises DuplicateError: if the id exists."""
        self._insert(record)

    def add_many(self, records: Sequence[StageChangeRecord]) -> None:
        """Append several stage changes in one executemany INSERT; all or none."""
        self._insert_many(records)

    def history(self, contact_id: uuid.UUID) -> list[StageChangeRecord]:
        """One contact's stage changes, oldest first."""
        t = self.table
        return self._records(sa.select(t).where(t.c.contact_id == contact_id).order_by(t.c.changed_at, t.c.id))

    def first_reached(
        self,
        stages: Sequence[str],
        *,
        pipeline: str | None = None,
        reached_from: datetime | None = None,
        reached_before: datetime | None = None,
    ) -> Iterator[StageReachedRecord]:
        """``SELECT contact_id, min(changed_at) ... WHERE to_stage IN (...) GROUP BY contact_id
        HAVING <window> ORDER BY contact_id``, :data:`TOUCH_PAGE` contacts per query (keyset
        on contact_id, read along the (contact_id, changed_at, id) index).

        :raises ValueError: on a naive bound.
        """
        t = self.table
        if not stages:
            return
        params: dict[str, Any] = {"p_stages": list(stages), "p_limit": TOUCH_PAGE}
        if pipeline is not None:
            params["p_pipeline"] = pipeline
        if reached_from is not None:
            params["p_from"] = utc(reached_from, "reached_from")
        if reached_before is not None:
            params["p_to"] = utc(reached_before, "reached_before")

        def build(paged: bool) -> sa.Select[*tuple[Any, ...]]:
            first = sa.func.min(t.c.changed_at)
            statement = sa.select(t.c.contact_id, first).where(
                t.c.to_stage.in_(sa.bindparam("p_stages", expanding=True))
            )
            if pipeline is not None:
                statement = statement.where(t.c.pipeline == sa.bindparam("p_pipeline"))
            if paged:
                statement = statement.where(t.c.contact_id > sa.bindparam("p_cid", type_=t.c.contact_id.type))
            statement = statement.group_by(t.c.contact_id)
            if reached_from is not None:
                statement = statement.having(first >= sa.bindparam("p_from", type_=t.c.changed_at.type))
            if reached_before is not None:
                statement = statement.having(first < sa.bindparam("p_to", type_=t.c.changed_at.type))
            limit = sa.bindparam("p_limit", type_=sa.Integer())
            return statement.order_by(t.c.contact_id).limit(limit)

        shape = (pipeline is not None, reached_from is not None, reached_before is not None)
        statement = self._statement(("first_reached", *shape, False), lambda: build(False))
        paged = self._statement(("first_reached", *shape, True), lambda: build(True))
        while True:
            rows = self._execute(statement, params).fetchall()
            yield from [StageReachedRecord(contact_id=r[0], reached_at=r[1]) for r in rows]
            if len(rows) < TOUCH_PAGE:
                return
            params["p_cid"] = rows[-1][0]
            statement = paged

    def count(self) -> int:
        """Number of stored stage changes."""
        return self._count()
