"""Use cases of the storage as a whole (:class:`StorageMigration`): the check of a practice
database just opened (schema version, keys), check, upgrade, counts, and the
whole-database copy (``carecrm storage migrate-to URL``) that moves a practice to another
storage backend (the embedded SQLite default to PostgreSQL, SQL to MongoDB and back)
without losing anything.

Records are copied **as stored** (:meth:`carecrm.core.storage.contract.UnitOfWork.export_records`
→ :meth:`~carecrm.core.storage.contract.UnitOfWork.import_records`): ciphertext, blind indexes and
clear fields unchanged, nothing decrypted, so the same key file opens the copy.  The
``meta`` rows (``key_check``, ``audit_head`` ...) and the audit log are copied too, so
``carecrm audit verify`` passes on the copy.  Kind by kind, in
:data:`~carecrm.core.storage.contract.RECORD_KINDS` order, :data:`BATCH` records per target
commit; then the counts of every kind are compared and the key check value is read back.

The source is read in one unit of work.  Writers (ingest workers, webhooks, other
coordinators) should be stopped for the copy: on SQLite the copy holds the write lock
anyway; on a server database a write made during the copy shows up as a count mismatch.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from carecrm.core.errors import CryptoError, MigrationError, SchemaVersionError
from carecrm.core.storage.contract import RECORD_KINDS, SCHEMA_VERSION, StorageBackend

if TYPE_CHECKING:
    from carecrm.core.model.domain import Actor
    from carecrm.core.privacy.audit import AuditTrail
    from carecrm.core.privacy.crypto import KeyRing

#: Records per target commit (and per ``import_records`` call).
BATCH = 1000

#: The ``meta`` keys a freshly created schema holds (a target holding only these is empty).
_SCHEMA_META_KEYS = frozenset({"schema_version"})

#: The ``meta`` key of the key check value (:meth:`carecrm.core.privacy.crypto.KeyRing.check_value`).
_META_KEY_CHECK = "key_check"

#: Called after each batch with (kind, records of that kind copied so far).
Progress = Callable[[str, int], None]

#: Opens a backend by URL and options without checking its schema (``None``: the
#: practice's configured URL and options), as :meth:`carecrm.core.CareCRM.open_backend` does.
BackendOpener = Callable[[str | None, dict[str, Any] | None], StorageBackend]


class StorageMigration:
    """Use cases of the storage as a whole: :meth:`storage_check`, :meth:`storage_upgrade`,
    :meth:`counts` and :meth:`migrate_to`.

    Holds no state of its own (the facade builds it per use).  The practice's checked
    storage, its keys and its audit trail are given as callables, called only by the use
    cases that need them: :meth:`storage_check` and :meth:`storage_upgrade` must work on a
    database that the checked opening refuses (no schema, another schema version), so they
    open the configured backend unchecked through ``open_backend`` and never call them.

    :param open_backend: opens a backend unchecked, ``open_backend(url, options)``
        (``None``: the practice's configured URL / options); the caller closes it.
    :param storage: the practice's storage, opened on first use and checked (schema
        version and keys).
    :param keys: the practice's key ring (the copy's key check value is compared with it).
    :param audit: the practice's audit trail (the copy is an audited act).
    """

    def __init__(
        self,
        *,
        open_backend: BackendOpener,
        storage: Callable[[], StorageBackend],
        keys: Callable[[], KeyRing],
        audit: Callable[[], AuditTrail],
    ) -> None:
        self._open_backend = open_backend
        self._storage = storage
        self._keys = keys
        self._audit = audit

    def verify_opened(self, backend: StorageBackend) -> None:
        """Check a practice database just opened: its schema version must be this release's,
        and the keys must be the ones it was written with (a database with no key check
        value yet gets the keys' value, committed).  The keys are read only once the schema
        version is right.

        :raises SchemaVersionError: for no carecrm schema or another schema version (the
            message says what to run).
        :raises CryptoError: when the keys do not match the database (nothing was read or written).
        """
        version = backend.schema_version()
        if version is None:
            raise SchemaVersionError(
                f"{backend.url_display} holds no carecrm schema: run `carecrm init` (or `carecrm storage upgrade`)"
            )
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{backend.url_display} was written by a newer carecrm (schema {version}, this release reads "
                f"{SCHEMA_VERSION}): upgrade carecrm"
            )
        if version < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{backend.url_display} has schema {version}; this release needs {SCHEMA_VERSION}: "
                "run `carecrm storage upgrade`"
            )
        keys = self._keys()
        with backend.unit_of_work() as uow:
            stored = uow.meta.get(_META_KEY_CHECK)
            if stored is None:
                uow.meta.set(_META_KEY_CHECK, keys.check_value())
                uow.commit()
            elif not keys.matches_check_value(stored):
                raise CryptoError(
                    "the keys do not match this database (wrong key file or CARECRM_KEYS?); nothing was read or written"
                )

    def storage_check(self) -> dict[str, Any]:
        """Ping the configured storage and describe it (never raises for a schema mismatch:
        the answer says what to do)."""
        backend = self._open_backend(None, None)
        try:
            info = dict(backend.check())
            version = info.get("schema_version")
            info["expected_schema_version"] = SCHEMA_VERSION
            if version is None:
                info["advice"] = "no carecrm schema: run `carecrm init` or `carecrm storage upgrade`"
            elif version < SCHEMA_VERSION:
                info["advice"] = "run `carecrm storage upgrade`"
            elif version > SCHEMA_VERSION:
                info["advice"] = "written by a newer carecrm: upgrade carecrm"
            else:
                info["counts"] = _counts(backend)
            return info
        finally:
            backend.close()

    def storage_upgrade(self) -> list[str]:
        """Upgrade the configured storage to this release's schema; returns the steps applied."""
        backend = self._open_backend(None, None)
        try:
            if backend.schema_version() is None:
                backend.create_schema()
                return ["create schema"]
            return backend.upgrade()
        finally:
            backend.close()

    def counts(self) -> dict[str, int]:
        """Row counts per kind of record (for checks and migrations)."""
        return _counts(self._storage())

    def migrate_to(
        self,
        url: str,
        *,
        actor: Actor,
        options: Mapping[str, Any] | None = None,
        progress: Progress | None = None,
        batch: int = BATCH,
    ) -> dict[str, tuple[int, int]]:
        """Copy the whole practice database to the EMPTY storage at ``url`` and verify it.

        :param url: the target's storage URL (any registered scheme: ``sqlite:///new.db``,
            ``postgresql://user@host/db``, ``mongodb://...``, ``mongomock://NAME`` in tests).
        :param actor: who copies (named by the ``storage.migrate_to`` audit entry written to
            the source before the copy: every record of every patient leaves with it).
        :param options: the target backend's options (``[storage]`` settings other than
            ``url``); default none, since the practice's own options belong to its
            current backend.
        :param progress: called as ``progress(kind, copied_so_far)`` after every batch.
        :param batch: records per target commit (1 or more).
        :returns: ``{kind: (source_count, target_count)}`` for every kind of
            :data:`~carecrm.core.storage.contract.RECORD_KINDS`, the two counts equal.
        :raises ValueError: if ``batch`` is below 1.
        :raises UnknownComponentError: if no backend serves the URL's scheme.
        :raises SchemaVersionError: if the target holds another schema version.
        :raises MigrationError: if the target is not empty (nothing is written then), a
            count differs after the copy, or the key check value of the copy does not
            match the keys (the partial copy is left in place: drop it before retrying).
        :raises BackendUnavailable: if either database cannot be reached.
        """
        if batch < 1:
            raise ValueError("batch: must be 1 or more")
        source = self._storage()
        target = self._open_backend(url, dict(options or {}))
        try:
            where = target.url_display
            if target.schema_version() is None:
                target.create_schema()
            target.verify_schema()
            _refuse_non_empty(target)
            log_details = {"target_backend": target.name, "schema_version": SCHEMA_VERSION}
            with source.unit_of_work() as uow:
                self._audit().append(uow, actor, "storage.migrate_to", details=log_details)
                uow.commit()
            result: dict[str, tuple[int, int]] = {}
            with source.unit_of_work() as src, target.unit_of_work() as dst:
                for kind in RECORD_KINDS:
                    copied = 0
                    pending: list[Any] = []
                    for record in src.export_records(kind):
                        pending.append(record)
                        if len(pending) >= batch:
                            copied += dst.import_records(kind, pending)
                            dst.commit()
                            pending = []
                            if progress is not None:
                                progress(kind, copied)
                    if pending or copied == 0:
                        copied += dst.import_records(kind, pending)
                        dst.commit()
                        if progress is not None:
                            progress(kind, copied)
                for kind in RECORD_KINDS:
                    result[kind] = (src.count_records(kind), dst.count_records(kind))
                key_check = dst.meta.get(_META_KEY_CHECK)
            differ = {k: v for k, v in result.items() if v[0] != v[1]}
            if differ:
                listed = ", ".join(f"{k}: {s} in the source, {t} in the copy" for k, (s, t) in differ.items())
                raise MigrationError(
                    f"the copy at {where} does not hold what the source holds ({listed}); were writers "
                    "running during the copy? drop the copy and run migrate-to again with them stopped"
                )
            if key_check is None or not self._keys().matches_check_value(key_check):
                raise MigrationError(
                    f"the keys do not open the copy at {where} (its key check value is missing or "
                    "differs); drop the copy and run migrate-to again"
                )
            return result
        finally:
            target.close()


def _refuse_non_empty(target: StorageBackend) -> None:
    """Refuse a target that holds any record (only a fresh schema's own ``meta`` keys are
    allowed).  :raises MigrationError: naming the kinds found, with counts."""
    found: dict[str, int] = {}
    with target.unit_of_work() as uow:
        for kind in RECORD_KINDS:
            if kind == "meta":
                extra = [key for key, _ in uow.export_records("meta") if key not in _SCHEMA_META_KEYS]
                if extra:
                    found["meta"] = len(extra)
            else:
                count = uow.count_records(kind)
                if count:
                    found[kind] = count
    if found:
        listed = ", ".join(f"{kind}: {count}" for kind, count in found.items())
        raise MigrationError(
            f"the target {target.url_display} is not empty ({listed}); migrate-to copies into an "
            "empty database only, so nothing was copied: name a new database"
        )


def _counts(backend: StorageBackend) -> dict[str, int]:
    """Row counts per kind of record of a backend (no personal data is read)."""
    with backend.unit_of_work() as uow:
        return {
            "contacts": uow.contacts.count(),
            "identities": uow.identities.count(),
            "interactions": uow.interactions.count(),
            "stage_changes": uow.stages.count(),
            "appointments": uow.appointments.count(),
            "consents": uow.consents.count(),
            "inbox": uow.inbox.count(),
        }
