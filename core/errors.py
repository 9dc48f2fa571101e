"""The one error hierarchy of carecrm.

Every error a user or a plugin can see derives from :class:`CareCRMError`.  Backends
translate their drivers' exceptions into :class:`StorageError` subclasses so that core
and plugin code never catch ``sqlalchemy`` or ``pymongo`` exceptions.

Messages never carry personal data: they name the source, the record (an index or a
vendor's record id) and the field, never the value (HIPAA 45 CFR 164.502(b), the
minimum-necessary standard, applied to logs and error output).
"""

from __future__ import annotations

from collections.abc import Iterable


class CareCRMError(Exception):
    """Base class of every carecrm error."""


class ConfigError(CareCRMError):
    """The configuration (``carecrm.toml``, environment, CLI options) is wrong or missing."""


class UnknownComponentError(ConfigError):
    """A name in config or on the command line names no registered component.

    :param family: what was looked up (``"storage backend"``, ``"source"``, ...).
    :param name: the unknown name.
    :param known: the registered names; the message lists them so the user can pick one.
    """

    def __init__(self, family: str, name: str, known: Iterable[str]) -> None:
        self.family = family
        self.name = name
        self.known = sorted(known)
        listed = ", ".join(self.known) if self.known else "(none registered)"
        super().__init__(f"unknown {family} {name!r}; known: {listed}")


class PluginError(CareCRMError):
    """A plugin misbehaved at registration (duplicate name, bad hook implementation)."""


class CryptoError(CareCRMError):
    """A key is missing, unreadable or wrong, or a ciphertext failed authentication.

    Raised instead of ever returning garbage plaintext (AES-GCM authenticates every
    ciphertext, so a wrong key is always detected).
    """


class ValidationFailed(CareCRMError):
    """One record of a payload cannot be accepted.

    :param source: the source connector's name (``"typeform"``).
    :param record: which record: the vendor's record id or ``"#<index>"`` in the batch.
    :param field: the field at fault (``"email"``, ``"submitted_at"``, ``"body"``).
    :param reason: what is wrong, in words, never echoing the offending value.
    """

    def __init__(self, source: str, record: str, field: str, reason: str) -> None:
        self.source = source
        self.record = record
        self.field = field
        self.reason = reason
        super().__init__(f"{source}: record {record}: field {field!r}: {reason}")


class UnstorableValue(CareCRMError):
    """A value cannot be encoded for storage (a lone surrogate, a value nested too deeply,
    an object that is not JSON); raised by the record mapper before anything is stored.

    :param field: the field at fault (``"last_name"``, ``"body"``, ``"evidence"``).
    :param reason: what is wrong, never the value.
    """

    def __init__(self, field: str, reason: str) -> None:
        self.field = field
        self.reason = reason
        super().__init__(f"field {field!r} cannot be stored: {reason}")


class InvalidTransition(CareCRMError):
    """A lifecycle-stage move that the pipeline does not allow.

    :param from_stage: the contact's current stage.
    :param to_stage: the requested stage.
    :param allowed: the stages that may follow ``from_stage``; the message lists them.
    """

    def __init__(self, from_stage: str, to_stage: str, allowed: Iterable[str]) -> None:
        self.from_stage = from_stage
        self.to_stage = to_stage
        self.allowed = list(allowed)
        super().__init__(
            f"cannot move from {from_stage!r} to {to_stage!r}; allowed next stages: "
            + (", ".join(self.allowed) if self.allowed else "(none)")
        )


class StorageError(CareCRMError):
    """Base class of the errors a storage backend raises."""


class NotFound(StorageError):
    """The record asked for does not exist."""


class ConflictError(StorageError):
    """An update lost an optimistic-concurrency race (the stored version moved on), or a
    transaction lost a race or a lock wait with another writer; retrying the unit of work
    is the answer in every case.

    Backends build these through the constructors below, so the wording is the core's:
    messages name the record kind, its id and version numbers, never personal data.
    """

    @classmethod
    def stale_version(cls, kind: str, record_id: object, *, stored: object, expected: int) -> ConflictError:
        """An optimistic-lock failure: the stored ``version`` of a record moved on.

        :param kind: the record kind (``"contact"``).
        :param record_id: the record's id (a UUID; never a personal value).
        :param stored: the stored version (an int; or None when it cannot be read back).
        :param expected: the version the update was based on.
        """
        return cls(
            f"{kind} {record_id} was changed by someone else (stored version {stored}, "
            f"update based on version {expected}); read it again and retry"
        )

    @classmethod
    def changed_after_read(cls, where: str) -> ConflictError:
        """A conditional write at commit found a record changed since this unit read it.

        :param where: the table or collection (``"contacts"``).
        """
        return cls(f"{where}: a document was changed by someone else after this unit read it; read it again and retry")

    @classmethod
    def lost_race(cls, where: str, code: str | None = None) -> ConflictError:
        """The database failed this transaction to resolve a conflict (a deadlock, a
        serialization failure, a MongoDB write conflict).

        :param where: the table or collection the statement touched.
        :param code: the driver's error code, if any (``40P01``, ``1213``).
        """
        detail = f" ({code})" if code else ""
        return cls(f"{where}: the transaction lost a race with another writer{detail}; retry it")

    @classmethod
    def lock_timeout(cls, seconds: float) -> ConflictError:
        """A named lock (:meth:`carecrm.core.storage.contract.UnitOfWork.lock`) was not had in time.

        :param seconds: how long the unit waited.
        """
        return cls(f"(lock): waited {seconds} s for another writer's lock; retry the unit")


class DuplicateError(StorageError):
    """A record with the same unique key already exists (e.g. (source, idempotency key))."""


class BackendUnavailable(StorageError):
    """The database cannot be reached or opened; the message says what to check."""


class SchemaVersionError(StorageError):
    """The database was written by another schema version (newer: upgrade carecrm;
    older: run ``carecrm storage upgrade``).  Never silently misread."""


class MigrationError(StorageError):
    """A whole-database copy (``carecrm storage migrate-to``) was refused or failed: the
    target was not empty, a count differed after copying, or the keys do not open the copy.
    The message names the record kinds and counts, never a value."""
