"""The audit trail: an append-only, hash-chained log of who read or changed what.

HIPAA 45 CFR 164.312(b) ("audit controls"): every read and change of personal data is
recorded with who acted (actor and role), what (action, purpose, field names, counts) and
which contact id, never the values.  Each entry carries a keyed HMAC-SHA256 chained to the
previous entry's, and the chain's head is anchored in ``meta`` under a keyed MAC, so an
edited, deleted or cut-off entry is detected by :meth:`AuditTrail.verify`.
"""

from __future__ import annotations

import json
import uuid
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs

from carecrm.core.model.domain import Actor
from carecrm.core.model.ids import new_id
from carecrm.core.model.records import AuditRecord
from carecrm.core.model.timeutil import utcnow
from carecrm.core.privacy.crypto import KeyRing
from carecrm.core.storage.contract import StorageBackend, UnitOfWork

#: The ``meta`` key of the chain's head anchor, ``seq:hash:mac``.
AUDIT_HEAD = "audit_head"


class AuditTrail:
    """Writes and checks the audit log of one database.

    :param storage: the backend holding the log.
    :param keys: the key ring whose audit key signs the chain.
    """

    def __init__(self, storage: StorageBackend, keys: KeyRing) -> None:
        self.storage = storage
        self.keys = keys

    def append(
        self,
        uow: UnitOfWork,
        actor: Actor,
        action: str,
        *,
        contact_id: uuid.UUID | None = None,
        purpose: str | None = None,
        fields: Sequence[str] = (),
        details: dict[str, Any] | None = None,
    ) -> None:
        """Append an audit-log entry in ``uow`` (HIPAA 45 CFR 164.312(b)), chained to the last
        one by a keyed hash, and move the keyed head anchor (``meta.audit_head``) to it, so an
        edited, deleted or cut-off entry is detectable.  ``fields`` and ``details`` hold
        names and counts, never values; ``actor`` is who acted (every caller passes its own).

        Concurrent writers: the head anchor is read with
        :meth:`~carecrm.core.storage.contract.MetaRepository.get_for_update`, so the head stays
        locked until ``uow`` ends and two processes never take the same ``seq``; call this
        last in a unit of work, just before its commit, so the lock is held for as short a
        time as possible (appends serialize, nothing else does).

        :raises ConflictError: lock wait timeout or deadlock (retry the unit)."""
        # the chain's head from its anchor (one small row, locked), else from the log itself
        head = uow.meta.get_for_update(AUDIT_HEAD)
        prev: str | None
        if head is not None and head.count(":") == 2:
            seq_text, prev_hash, _ = head.split(":")
            seq, prev = int(seq_text) + 1, prev_hash
        else:
            last = uow.audit.last()
            seq = 1 if last is None else last.seq + 1
            prev = None if last is None else last.hash
        rec = AuditRecord(
            seq=seq,
            id=new_id(),
            at=utcnow(),
            actor=actor.name,
            role=actor.role,
            action=action,
            contact_id=contact_id,
            purpose=purpose,
            fields=list(fields),
            details=details or {},
            prev_hash=prev,
            hash="",
        )
        rec = attrs.evolve(rec, hash=self.keys.audit_mac(prev, audit_body(rec)))
        uow.audit.append(rec)
        uow.meta.set(AUDIT_HEAD, self._head_value(rec.seq, rec.hash))

    def _head_value(self, seq: int, entry_hash: str) -> str:
        return f"{seq}:{entry_hash}:{self.keys.audit_mac(None, f'head:{seq}:{entry_hash}'.encode())}"

    def head(self) -> str | None:
        """The audit log's head anchor ``seq:hash:mac`` (None for an empty log).

        Export it on a schedule (print it into a ticket, a WORM bucket, an email to the
        privacy officer): ``verify(expected_head=...)`` with an exported value
        then proves that no entry up to it was removed, even by someone holding the database.
        """
        with self.storage.unit_of_work() as uow:
            return uow.meta.get(AUDIT_HEAD)

    def entries(self, *, limit: int = 50, contact_id: uuid.UUID | None = None) -> list[AuditRecord]:
        """The newest ``limit`` audit-log entries, oldest first (for ``carecrm audit log``).

        Entries hold who (actor and role), what (action, purpose, field names, counts)
        and which contact id, never personal data, so reading them is not itself audited.
        The log is read from its start (it has no index by time); fine for a person's
        review, not for a hot path.

        :param contact_id: keep only the entries about this contact.
        """
        tail: deque[AuditRecord] = deque(maxlen=max(1, limit))
        with self.storage.unit_of_work() as uow:
            for rec in uow.audit.iter():
                if contact_id is None or rec.contact_id == contact_id:
                    tail.append(rec)
        return list(tail)

    def verify(self, *, expected_head: str | None = None) -> tuple[bool, int, str | None]:
        """Recompute the audit chain.

        Checks every entry's keyed hash and link, that the last entry is the keyed head
        anchor stored with the log (a cut-off tail or an emptied log is detected), and, given
        ``expected_head`` (an anchor exported earlier), that the log still reaches it.

        :returns: ``(ok, entries checked, None or what is wrong)``.
        """
        prev = None
        n = 0
        last: AuditRecord | None = None
        with self.storage.unit_of_work() as uow:
            expected_seq = 1
            for rec in uow.audit.iter():
                if (
                    rec.seq != expected_seq
                    or rec.prev_hash != prev
                    or self.keys.audit_mac(prev, audit_body(rec)) != rec.hash
                ):
                    return False, n, f"entry seq {rec.seq} was edited, or entries before it were removed"
                prev, n, expected_seq, last = rec.hash, n + 1, expected_seq + 1, rec
                if expected_head and expected_head.split(":")[:2] == [str(rec.seq), rec.hash]:
                    expected_head = None  # reached
            head = uow.meta.get(AUDIT_HEAD)
            has_data = uow.contacts.count() > 0 or uow.inbox.count() > 0
        if expected_head:
            return False, n, "the log no longer reaches the exported head: entries were removed"
        if head is None:
            if last is not None or has_data:
                return False, n, "the head anchor is missing: the log was truncated or emptied"
            return True, n, None
        try:
            seq_text, head_hash, _ = head.split(":")
            head_ok = head == self._head_value(int(seq_text), head_hash)
        except ValueError:
            head_ok = False
        if not head_ok:
            return False, n, "the head anchor was altered"
        if last is None or (last.seq, last.hash) != (int(seq_text), head_hash):
            return False, n, f"the log ends before its head anchor (seq {seq_text}): entries were removed"
        return True, n, None


def audit_body(rec: AuditRecord) -> bytes:
    """The canonical bytes an audit entry's hash covers (everything but the hashes)."""
    return json.dumps(
        [
            rec.seq,
            str(rec.id),
            rec.at.isoformat(),
            rec.actor,
            rec.role,
            rec.action,
            str(rec.contact_id) if rec.contact_id else None,
            rec.purpose,
            list(rec.fields),
            rec.details,
        ],
        sort_keys=True,
        separators=(",", ":"),
    ).encode()
