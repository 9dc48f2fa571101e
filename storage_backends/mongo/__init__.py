"""The built-in MongoDB storage backend (pymongo; ``pip install "carecrm[mongo]"``).

Registered as ``mongo`` for ``mongodb://`` and ``mongodb+srv://`` URLs, and for
``mongomock://NAME`` (the same backend over the in-process mongomock test double, for
tests only).  pymongo is imported only when a backend is opened.  See
:mod:`carecrm.storage_backends.mongo.backend` for the design (documents, indexes,
transactions or ordered writes) and docs/storage.md for operators.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from carecrm.core.plugins.hookspecs import hookimpl

if TYPE_CHECKING:
    from carecrm.storage_backends.mongo.backend import MongoBackend

#: The URL schemes served (the part of ``[storage] url`` before ``://``).
SCHEMES: tuple[str, ...] = ("mongodb", "mongodb+srv", "mongomock")


def open_backend(url: str, options: dict[str, Any]) -> MongoBackend:
    """The storage factory: open a :class:`~carecrm.storage_backends.mongo.backend.MongoBackend`.

    Nothing is connected yet; the first use asks the server what it is and the first unit
    of work checks the schema version.

    :param url: ``mongodb://user:password@host1,host2/dbname?replicaSet=rs0``,
        ``mongodb+srv://...`` or ``mongomock://NAME`` (tests).
    :param options: the other ``[storage]`` settings: ``database``,
        ``server_selection_timeout_ms``, ``transactions`` (``auto`` or ``off``).
    :raises ConfigError: on an unknown option, an unusable URL, or pymongo missing.
    """
    from carecrm.storage_backends.mongo.backend import MongoBackend

    return MongoBackend.from_options(url, options)


@hookimpl
def carecrm_register_storage_backends(register: Callable[..., None]) -> None:
    """Register the ``mongo`` backend for MongoDB URLs (and ``mongomock://`` for tests)."""
    register("mongo", SCHEMES, open_backend)
