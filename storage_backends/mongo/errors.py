"""Translation of pymongo exceptions into :mod:`carecrm.core.errors`, with what to do.

Messages name the server (the URL with its password masked), the collection and the key
fields, never a value: a server's own text (``E11000 duplicate key error ... dup key: {
source: "x", idempotency_key: "..." }``) may carry data and is never passed on, and the
driver exception is not chained (``from None``) so it does not reach logs through a
traceback either.

Server error codes used (MongoDB's ``error_codes.yml``): 11000/11001 duplicate key,
18 AuthenticationFailed, 13 Unauthorized, 112 WriteConflict, 251 NoSuchTransaction,
263 OperationNotSupportedInTransaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from carecrm.core.errors import BackendUnavailable, ConflictError, DuplicateError, StorageError

T = TypeVar("T")

#: The oldest server this backend supports: MongoDB 4.4 (wire version 9), the first
#: with every aggregation stage and transaction feature used here.
MIN_WIRE_VERSION = 9
MIN_SERVER = "4.4"

AUTH_FAILED = 18
UNAUTHORIZED = 13
WRITE_CONFLICT = 112
DUPLICATE_KEY = (11000, 11001)


def unreachable(where: str, detail: str = "") -> BackendUnavailable:
    """The error for a server that cannot be reached (no server selected in time)."""
    extra = f" ({detail})" if detail else ""
    return BackendUnavailable(
        f"cannot reach the MongoDB server at {where}{extra}: check that mongod (or mongos) is running "
        "and reachable from here, the host names and ports of the URL, TLS options (tls=true for Atlas), "
        "the replicaSet name, and firewall/allow-lists; raise server_selection_timeout_ms for slow networks"
    )


def auth_failed(where: str) -> BackendUnavailable:
    """The error for wrong credentials (server code 18)."""
    return BackendUnavailable(
        f"the MongoDB server at {where} refused the user name or password (authentication failed): "
        "check the user and password in the URL (special characters percent-encoded), and authSource= "
        "(the database that holds the user, often admin)"
    )


def unauthorized(where: str, action: str) -> BackendUnavailable:
    """The error for a user lacking a right (server code 13)."""
    return BackendUnavailable(
        f"the MongoDB user of {where} is not allowed to {action}: grant it the readWrite role on the "
        "carecrm database, and createIndex there (dbAdmin, or run `carecrm init` once as an admin user)"
    )


def too_old(where: str, version: str) -> BackendUnavailable:
    """The error for a server older than :data:`MIN_SERVER`."""
    return BackendUnavailable(
        f"the MongoDB server at {where} runs version {version}; carecrm needs MongoDB {MIN_SERVER} or "
        "newer: upgrade the server (nothing was written)"
    )


def translate(exc: BaseException, collection: str, where: str, action: str = "read and write") -> Exception:
    """The carecrm exception for a pymongo exception raised while working on ``collection``.

    :param where: the masked URL of the server, for messages.
    :param action: what was being done, for an "unauthorized" message.
    :returns: a :class:`StorageError` subclass (the original is returned unchanged when it
        is not a pymongo error).
    """
    from pymongo import errors as pe

    if isinstance(exc, pe.DuplicateKeyError) or (
        isinstance(exc, pe.BulkWriteError)
        and any(e.get("code") in DUPLICATE_KEY for e in exc.details.get("writeErrors", []))
    ):
        err = DuplicateError(f"{collection}: a document with the same unique key already exists")
        err.table = collection  # type: ignore[attr-defined]
        return err
    if isinstance(exc, pe.ServerSelectionTimeoutError):
        return unreachable(where)
    if isinstance(exc, (pe.AutoReconnect, pe.ConnectionFailure, pe.NetworkTimeout)):
        return BackendUnavailable(
            f"lost the connection to the MongoDB server at {where}: check that it is running and reachable; "
            "nothing of the unfinished unit of work was committed by this call"
        )
    if isinstance(exc, pe.OperationFailure):
        code = exc.code
        if code == AUTH_FAILED:
            return auth_failed(where)
        if code == UNAUTHORIZED:
            return unauthorized(where, action)
        if code == WRITE_CONFLICT or exc.has_error_label("TransientTransactionError"):
            return ConflictError.lost_race(collection)
        return StorageError(f"{collection}: the MongoDB server refused the operation (code {code})")
    if isinstance(exc, pe.ConfigurationError):
        return StorageError(f"the MongoDB client configuration for {where} is not usable: {type(exc).__name__}")
    if isinstance(exc, pe.PyMongoError):
        return StorageError(f"{collection}: MongoDB error ({type(exc).__name__})")
    return exc if isinstance(exc, Exception) else StorageError(type(exc).__name__)


@contextmanager
def translated(
    collection: str, where: str, action: str = "read and write", *, keep_transient: bool = False
) -> Iterator[None]:
    """Run the block, turning pymongo exceptions into carecrm ones (see :func:`translate`).

    :param keep_transient: let an error labelled ``TransientTransactionError`` or
        ``UnknownTransactionCommitResult`` through unchanged, so pymongo's
        ``with_transaction`` retries the transaction.
    """
    from pymongo.errors import PyMongoError

    try:
        yield
    except PyMongoError as exc:
        if keep_transient and (
            exc.has_error_label("TransientTransactionError") or exc.has_error_label("UnknownTransactionCommitResult")
        ):
            raise
        raise translate(exc, collection, where, action) from None


def call(collection: str, where: str, fn: Callable[[], T]) -> T:
    """``fn()`` inside :func:`translated`."""
    with translated(collection, where):
        return fn()


def describe(where: str, fn: Callable[[], Any]) -> Any:
    """Run a server command (``hello``, ``buildInfo``) for :meth:`MongoBackend.check`."""
    with translated("(server)", where):
        return fn()
