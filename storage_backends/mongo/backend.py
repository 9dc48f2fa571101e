"""The MongoDB storage backend (pymongo), and its in-process test double (mongomock).

Open it from a URL::

    backend = MongoBackend("mongodb://carecrm:pw@db1,db2,db3/carecrm?replicaSet=rs0")
    backend.create_schema()            # carecrm init: creates every index (idempotent)
    with backend.unit_of_work() as uow:
        uow.contacts.add(record)
        uow.commit()

``mongodb://`` and ``mongodb+srv://`` URLs go to pymongo; the database is the URL's path
(default ``carecrm``).  ``mongomock://NAME`` opens the same backend over mongomock, for
tests only: one in-memory client per NAME per process, so CLI commands run one after the
other in a test see each other's data.

**Units of work.**  Every write of a unit is buffered (per collection, by ``_id``; see
:mod:`carecrm.storage_backends.mongo.documents`) and reads inside the unit see the
buffered writes.  :meth:`MongoUnitOfWork.commit` applies the buffer:

* on a replica set or sharded cluster (``hello`` reports ``setName``, or ``msg:
  "isdbgrid"``), inside one multi-document transaction (``with_transaction``: all or
  nothing, retried on transient errors); ``capabilities`` holds ``"transactions"``;
* on a standalone server (and mongomock), as ordered, idempotent writes (inserts, upserts
  and deletes by ``_id``; a contact's replace is conditional on the version it was read
  at) in :data:`APPLY_ORDER`: the audit entry first (a concurrent writer that took the
  same ``seq`` stops the commit before anything else is written), then contacts before
  identities before stage changes ... and the idempotency markers last (interactions'
  and consents' (source, key), the inbox status), so a crash part-way leaves data that
  a re-delivery completes rather than duplicates.  A crash between the contacts and
  their identities can leave a contact without identities; what the operator gives up
  is listed in docs/storage.md.

Rollback drops the buffer, so nothing of a unit that never committed reaches the server.
"""

from __future__ import annotations

import functools
import threading
import urllib.parse
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC
from types import TracebackType
from typing import TYPE_CHECKING, Any

from carecrm.core.errors import ConfigError, ConflictError, SchemaVersionError, StorageError
from carecrm.core.storage.capabilities import ALL_QUERIES
from carecrm.core.storage.contract import SCHEMA_VERSION
from carecrm.storage_backends.mongo import errors, repositories
from carecrm.storage_backends.mongo.documents import View, chunks
from carecrm.storage_backends.mongo.repositories import (
    UNIQUE,
    MongoAppointments,
    MongoAudit,
    MongoConsents,
    MongoContacts,
    MongoIdentities,
    MongoInbox,
    MongoInteractions,
    MongoMeta,
    MongoNotes,
    MongoOutbox,
    MongoReviews,
    MongoScores,
    MongoSegments,
    MongoStages,
    MongoTasks,
)

if TYPE_CHECKING:
    from pymongo.collection import Collection

#: URL schemes served: real servers, and the in-process test double.
SCHEMES: tuple[str, ...] = ("mongodb", "mongodb+srv", "mongomock")

#: Backend options (``[storage]`` settings other than ``url``) and their defaults.
OPTION_DEFAULTS: dict[str, Any] = {
    "database": None,
    "server_selection_timeout_ms": 5000,
    "transactions": "auto",
}

#: The order in which a commit without transactions applies a unit's collections.
APPLY_ORDER: tuple[str, ...] = (
    "audit_log",
    "contacts",
    "identities",
    "stage_changes",
    "appointments",
    "notes",
    "tasks",
    "scores",
    "reviews",
    "segments",
    "merges",
    "consents",
    "outbox",
    "interactions",
    "inbox",
    "meta",
)

#: Every index, by collection: (name, keys, unique).  ``_id`` is always unique.
INDEXES: dict[str, tuple[tuple[str, list[tuple[str, int]], bool], ...]] = {
    "contacts": (
        ("ix_contacts_status_stage", [("status", 1), ("stage", 1), ("_id", 1)], False),
        ("ix_contacts_name_bidx", [("name_bidx", 1)], False),
        ("ix_contacts_family_name_bidx", [("family_name_bidx", 1)], False),
        ("ix_contacts_segment", [("status", 1), ("service_interest", 1), ("city", 1)], False),
    ),
    "identities": (
        ("uq_identities_contact_kind_bidx", [("contact_id", 1), ("kind", 1), ("bidx", 1)], True),
        ("ix_identities_kind_bidx", [("kind", 1), ("bidx", 1)], False),
    ),
    "interactions": (
        ("uq_interactions_source_key", [("source", 1), ("idempotency_key", 1)], True),
        ("ix_interactions_timeline", [("contact_id", 1), ("occurred_at", 1), ("_id", 1)], False),
        ("ix_interactions_kind_time", [("kind", 1), ("occurred_at", 1)], False),
        # schema version 4: what one inbox payload produced (carecrm inbox reprocess)
        ("ix_interactions_inbox", [("inbox_id", 1)], False),
    ),
    "stage_changes": (("ix_stage_changes_contact", [("contact_id", 1), ("changed_at", 1), ("_id", 1)], False),),
    "appointments": (
        ("uq_appointments_source_external", [("source", 1), ("external_id", 1)], True),
        ("ix_appointments_contact", [("contact_id", 1), ("starts_at", 1)], False),
    ),
    "consents": (
        ("uq_consents_source_key", [("source", 1), ("idempotency_key", 1)], True),
        (
            "ix_consents_point",
            [("contact_point_bidx", 1), ("channel", 1), ("purpose", 1), ("occurred_at", 1)],
            False,
        ),
        ("ix_consents_contact", [("contact_id", 1), ("occurred_at", 1)], False),
    ),
    "notes": (("ix_notes_contact", [("contact_id", 1), ("created_at", 1)], False),),
    "tasks": (
        ("ix_tasks_assignee", [("assignee", 1), ("status", 1), ("due_at", 1)], False),
        ("ix_tasks_contact", [("contact_id", 1)], False),
    ),
    "scores": (
        ("ix_scores_model_score", [("model", 1), ("score", -1), ("contact_id", 1)], False),
        ("ix_scores_contact", [("contact_id", 1)], False),
    ),
    "reviews": (
        ("uq_reviews_pair", [("contact_a", 1), ("contact_b", 1)], True),
        ("ix_reviews_b", [("contact_b", 1)], False),
        ("ix_reviews_status", [("status", 1), ("created_at", 1)], False),
    ),
    "segments": (),
    "inbox": (
        ("ux_inbox_source_digest", [("source", 1), ("digest", 1)], True),
        ("ix_inbox_status_received", [("status", 1), ("received_at", 1)], False),
        ("ix_inbox_received", [("received_at", -1), ("_id", -1)], False),
    ),
    "merges": (
        ("ix_merges_survivor", [("survivor_id", 1)], False),
        ("ix_merges_merged", [("merged_id", 1)], False),
    ),
    "audit_log": (),
    "outbox": (),
    "meta": (),
}

#: How long a unit of work waits for one named lock, in seconds.
LOCK_TIMEOUT_SECONDS = 60
#: A lock document older than this (seconds) was left by a process that died holding it.
LOCK_LEASE_SECONDS = 120

_MOCK_CLIENTS: dict[str, Any] = {}
_MOCK_LOCK = threading.Lock()


def _insert_if_absent(coll: Collection[dict[str, Any]], doc: dict[str, Any]) -> Any:
    """Insert ``doc`` unless a document with its ``_id`` exists: the new ``_id``, or None
    when one existed."""
    return coll.update_one({"_id": doc["_id"]}, {"$setOnInsert": doc}, upsert=True).upserted_id


def mock_client(name: str) -> Any:
    """The process-wide mongomock client of ``mongomock://NAME`` (created on first use),
    timezone-aware like the real client.

    :raises ConfigError: if mongomock is not installed (it is a test dependency).
    """
    with _MOCK_LOCK:
        client = _MOCK_CLIENTS.get(name)
        if client is None:
            try:
                import mongomock
            except ImportError:
                raise ConfigError(
                    'mongomock:// URLs are for tests and need mongomock: pip install "carecrm[test]"'
                ) from None
            client = _MOCK_CLIENTS[name] = mongomock.MongoClient(
                tz_aware=True, tzinfo=UTC, uuidRepresentation="standard"
            )
        return client


def forget_mock(name: str) -> None:
    """Drop the in-memory data of ``mongomock://NAME`` (tests call it when done)."""
    with _MOCK_LOCK:
        _MOCK_CLIENTS.pop(name, None)


def _mask(url: str) -> str:
    """``url`` with the password replaced by ``***``."""
    scheme, _, rest = url.partition("://")
    creds, at, hosts = rest.rpartition("@")
    if not at:
        return url
    user, colon, _password = creds.partition(":")
    return f"{scheme}://{user}{':***' if colon else ''}@{hosts}"


class MongoBackend:
    """A carecrm storage backend on one MongoDB database (see the module docstring).

    :param url: ``mongodb://...``, ``mongodb+srv://...`` or ``mongomock://NAME`` (tests).
    :param database: the database name when the URL names none (default ``carecrm``).
    :param server_selection_timeout_ms: how long to wait for a server before
        :class:`~carecrm.core.errors.BackendUnavailable`, in milliseconds.
    :param transactions: ``"auto"`` (use them where the server has them) or ``"off"``.
    :param client: an already-made client (tests inject fakes through it); ``url`` then
        only names the server in messages.
    :raises ConfigError: on an unusable URL or option, or when pymongo is not installed.

    Attributes: ``name`` (``"mongo"``), ``url_display`` (password masked), ``client``,
    ``database`` (the pymongo database), ``capabilities`` (probes the server once).
    """

    name = "mongo"

    def __init__(
        self,
        url: str,
        *,
        database: str | None = None,
        server_selection_timeout_ms: int = 5000,
        transactions: str = "auto",
        client: Any = None,
    ) -> None:
        scheme = url.split("://", 1)[0] if "://" in url else ""
        if scheme not in SCHEMES:
            raise ConfigError(
                f"the mongo storage backend does not serve {scheme or url!r} URLs; served: {', '.join(SCHEMES)}"
            )
        if transactions not in ("auto", "off"):
            raise ConfigError("mongo storage option transactions: expected 'auto' or 'off'")
        if not isinstance(server_selection_timeout_ms, int) or server_selection_timeout_ms <= 0:
            raise ConfigError("mongo storage option server_selection_timeout_ms: expected a positive number of ms")
        self.url_display = _mask(url)
        self.mock = scheme == "mongomock"
        self._want_transactions = transactions == "auto"
        self._probed: dict[str, Any] | None = None
        self._schema_verified = False
        name = database
        if self.mock:
            mock_name = url.split("://", 1)[1] or "default"
            self.client = client if client is not None else mock_client(mock_name)
        else:
            path = urllib.parse.urlsplit(url).path.lstrip("/")
            name = name or (urllib.parse.unquote(path) if path else None)
            self.client = client if client is not None else self._make_client(url, server_selection_timeout_ms)
        self.database_name = name or "carecrm"
        self.database = self.client[self.database_name]

    @classmethod
    def from_options(cls, url: str, options: dict[str, Any] | None = None) -> MongoBackend:
        """Open a backend from a URL and the ``[storage]`` options (:data:`OPTION_DEFAULTS`).

        :raises ConfigError: on an unknown option (the message lists the known ones).
        """
        opts = dict(options or {})
        unknown = sorted(set(opts) - set(OPTION_DEFAULTS))
        if unknown:
            raise ConfigError(
                f"unknown mongo storage option(s) {', '.join(unknown)}; known: {', '.join(sorted(OPTION_DEFAULTS))}"
            )
        merged = {**OPTION_DEFAULTS, **opts}
        return cls(url, **merged)

    @staticmethod
    def _make_client(url: str, timeout_ms: int) -> Any:
        try:
            import pymongo
        except ImportError:
            raise ConfigError('the MongoDB driver is not installed: pip install "carecrm[mongo]"') from None
        try:
            return pymongo.MongoClient(
                url,
                tz_aware=True,
                tzinfo=UTC,
                uuidRepresentation="standard",
                serverSelectionTimeoutMS=timeout_ms,
                appname="carecrm",
                connect=False,
            )
        except pymongo.errors.ConfigurationError as exc:
            raise ConfigError(f"the MongoDB URL {_mask(url)} is not usable: {type(exc).__name__}") from None
        except (ValueError, TypeError):
            raise ConfigError(f"the MongoDB URL {_mask(url)} is not usable (check its options)") from None

    # ------------------------------------------------------------------ server

    def probe(self) -> dict[str, Any]:
        """Ask the server once what it is: ``{"version", "topology", "transactions"}``.

        :raises BackendUnavailable: unreachable, wrong credentials, or a server older than
            MongoDB 4.4 (the message says what to do).
        """
        if self._probed is not None:
            return self._probed
        where = self.url_display
        if self.mock:
            info = errors.describe(where, lambda: self.client.server_info())
            self._probed = {"version": str(info.get("version", "")), "topology": "in-process test double"}
            self._probed["transactions"] = False
            return self._probed
        hello = errors.describe(where, lambda: self.client.admin.command("hello"))
        wire = int(hello.get("maxWireVersion", 0))
        build = errors.describe(where, lambda: self.client.admin.command("buildInfo"))
        version = str(build.get("version", "unknown"))
        if wire < errors.MIN_WIRE_VERSION:
            raise errors.too_old(where, version)
        if hello.get("msg") == "isdbgrid":
            topology = "sharded cluster"
        elif hello.get("setName"):
            topology = "replica set"
        else:
            topology = "standalone"
        self._probed = {
            "version": version,
            "topology": topology,
            "transactions": self._want_transactions and topology != "standalone",
        }
        return self._probed

    @property
    def capabilities(self) -> frozenset[str]:
        """``{"transactions"}`` on a replica set or sharded cluster, else empty (asks the
        server once).  :raises BackendUnavailable: if the server cannot be reached."""
        return frozenset({"transactions"}) if self.probe()["transactions"] else frozenset()

    # ------------------------------------------------------------------ schema

    def _meta_version(self) -> int | None:
        doc = errors.call("meta", self.url_display, lambda: self.database["meta"].find_one({"_id": "schema_version"}))
        if doc is None:
            return None
        try:
            return int(doc["value"])
        except (TypeError, ValueError):
            raise SchemaVersionError(
                f"{self.url_display}: meta.schema_version is not a number; the database is not a carecrm "
                "database or was damaged"
            ) from None

    def _check_version(self, version: int | None) -> int:
        where = self.url_display
        if version is None:
            raise SchemaVersionError(f"{where} holds no carecrm schema: run `carecrm init`")
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{where} was written by a newer carecrm (schema {version}, this release reads "
                f"{SCHEMA_VERSION}): upgrade carecrm"
            )
        if version < SCHEMA_VERSION:
            raise SchemaVersionError(
                f"{where} holds an older carecrm schema ({version}; this release needs {SCHEMA_VERSION}): "
                "run `carecrm storage upgrade`"
            )
        return version

    def schema_version(self) -> int | None:
        """The stored schema version (``meta`` document ``schema_version``), or None.

        :raises BackendUnavailable: if the server cannot be reached.
        :raises SchemaVersionError: if the stored value is not a number.
        """
        self.probe()
        return self._meta_version()

    def verify_schema(self) -> int:
        """Read the stored schema version (always) and check it is SCHEMA_VERSION.

        :raises SchemaVersionError: none (run ``carecrm init``), older (run ``carecrm
            storage upgrade``) or newer (upgrade carecrm).
        :raises BackendUnavailable: if the server cannot be reached.
        """
        self._check_version(self.schema_version())
        self._schema_verified = True
        return SCHEMA_VERSION

    def create_collections(self) -> list[str]:
        """Create every collection that does not exist yet (a transaction on a sharded
        cluster cannot create one); returns the names created.

        :raises BackendUnavailable: if the user may not create collections.
        """
        from pymongo.errors import CollectionInvalid

        where = self.url_display
        existing = set(errors.call("(collections)", where, self.database.list_collection_names))
        created: list[str] = []
        for name in INDEXES:
            if name in existing:
                continue
            try:
                with errors.translated(name, where, "create the collections"):
                    self.database.create_collection(name)
            except CollectionInvalid:
                continue  # created meanwhile by another process
            created.append(name)
        return created

    def create_indexes(self) -> list[str]:
        """Create every index of :data:`INDEXES` (idempotent); returns their names.

        :raises BackendUnavailable: if the user may not create indexes (what to grant is
            in the message) or the server cannot be reached.
        """
        names: list[str] = []
        for collection, specs in INDEXES.items():
            coll = self.database[collection]
            for name, keys, unique in specs:
                with errors.translated(collection, self.url_display, "create the indexes"):
                    coll.create_index(keys, name=name, unique=unique)
                names.append(name)
        return names

    def _write_version(self) -> None:
        with errors.translated("meta", self.url_display, "write to the carecrm database"):
            self.database["meta"].replace_one(
                {"_id": "schema_version"}, {"_id": "schema_version", "value": str(SCHEMA_VERSION)}, upsert=True
            )

    def create_schema(self) -> None:
        """Create every index and record SCHEMA_VERSION in a new database (idempotent; on a
        current database it only makes sure every index exists).

        :raises SchemaVersionError: older (run ``carecrm storage upgrade``) or newer
            (upgrade carecrm); nothing is changed then.
        :raises BackendUnavailable: unreachable, wrong credentials, no right to create
            indexes, or a server too old.
        """
        self.probe()
        version = self._meta_version()
        if version is not None:
            self._check_version(version)
        self.create_collections()
        self.create_indexes()
        if version is None:
            self._write_version()
        self._schema_verified = True

    def upgrade(self) -> list[str]:
        """Bring the database to SCHEMA_VERSION: create missing indexes and record the version.

        :returns: the steps applied (``[]`` for a current database with every index).
        :raises SchemaVersionError: if the database is newer than this release.
        :raises BackendUnavailable: as :meth:`create_schema`.
        """
        self.probe()
        version = self._meta_version()
        if version == SCHEMA_VERSION:
            missing = self.index_status()["missing"]
            if not missing:
                return []
            self.create_indexes()
            return [f"create missing indexes: {', '.join(missing)}"]
        if version is not None and version > SCHEMA_VERSION:
            self._check_version(version)
        self.create_collections()
        if version == 1:
            self._upgrade_inbox_unique()
        self.create_indexes()
        self._write_version()
        self._schema_verified = True
        return [f"indexes of schema {SCHEMA_VERSION}" if version is not None else "create indexes"]

    def _upgrade_inbox_unique(self) -> None:
        """Schema 1 → 2: keep one inbox document per (source, digest) — the one whose status
        says most, as the SQL migration ``0002_inbox_unique_digest`` does — point
        interactions at it, and drop the old non-unique ``ix_inbox_digest``."""
        rank = {"processed": 0, "ignored": 1, "quarantined": 2, "received": 3, "discarded": 4}
        inbox, interactions = self.database["inbox"], self.database["interactions"]
        where = self.url_display
        groups = errors.call(
            "inbox",
            where,
            lambda: list(
                inbox.aggregate(
                    [
                        {"$group": {"_id": {"s": "$source", "d": "$digest"}, "n": {"$sum": 1}}},
                        {"$match": {"n": {"$gt": 1}}},
                    ]
                )
            ),
        )
        for group in groups:
            docs = list(inbox.find({"source": group["_id"]["s"], "digest": group["_id"]["d"]}))
            docs.sort(key=lambda d: (rank.get(d.get("status"), 5), d.get("received_at"), str(d["_id"])))
            keep, drop = docs[0]["_id"], [d["_id"] for d in docs[1:]]
            interactions.update_many({"inbox_id": {"$in": drop}}, {"$set": {"inbox_id": keep}})
            inbox.delete_many({"_id": {"$in": drop}})
        present = errors.call("inbox", where, inbox.index_information)
        if "ix_inbox_digest" in present:
            errors.call("inbox", where, lambda: inbox.drop_index("ix_inbox_digest"))

    def index_status(self) -> dict[str, Any]:
        """Which of :data:`INDEXES` exist: ``{"ok": bool, "missing": ["collection.name", ...]}``."""
        missing: list[str] = []
        for collection, specs in INDEXES.items():
            if not specs:
                continue
            coll = self.database[collection]
            present: dict[str, Any] = errors.call(collection, self.url_display, coll.index_information)
            missing.extend(f"{collection}.{name}" for name, _, _ in specs if name not in present)
        return {"ok": not missing, "missing": missing}

    def check(self) -> dict[str, Any]:
        """Ping the server and describe it: ``{"ok", "backend", "server_version",
        "topology", "schema_version", "expected_schema_version", "schema_current",
        "capabilities", "indexes", "url_display", "database"}``, and ``"advice"`` when an
        index is missing.

        :raises BackendUnavailable: unreachable, wrong credentials or too old.
        """
        errors.describe(self.url_display, lambda: self.client.admin.command("ping"))
        info = self.probe()
        version = self._meta_version()
        indexes = self.index_status()
        out: dict[str, Any] = {
            "ok": True,
            "backend": self.name,
            "server_version": info["version"],
            "topology": info["topology"],
            "schema_version": version,
            "expected_schema_version": SCHEMA_VERSION,
            "schema_current": version == SCHEMA_VERSION,
            "capabilities": sorted(self.capabilities),
            "indexes": indexes,
            "url_display": self.url_display,
            "database": self.database_name,
        }
        if version is not None and not indexes["ok"]:
            out["advice"] = "indexes are missing: run `carecrm storage upgrade`"
        return out

    def unit_of_work(self) -> MongoUnitOfWork:
        """A new unit of work (opened by ``with``)."""
        return MongoUnitOfWork(self)

    def _verify_once(self) -> None:
        if not self._schema_verified:
            self.verify_schema()

    def close(self) -> None:
        """Close the client's connections (an in-process mongomock client is kept: its
        data lives as long as the process)."""
        if not self.mock:
            self.client.close()

    def __repr__(self) -> str:
        return f"MongoBackend({self.url_display!r})"


class MongoUnitOfWork:
    """Every repository over one database, writes buffered until :meth:`commit` (see the
    module docstring).  Entering checks the schema version the first time for its backend
    instance; leaving without :meth:`commit` drops the buffer.

    :raises BackendUnavailable: on entering, if the server cannot be reached.
    :raises SchemaVersionError: on entering, if the schema version does not match.
    """

    #: Every optional query is answered natively (:mod:`carecrm.core.storage.capabilities`).
    native_queries: frozenset[str] = ALL_QUERIES

    def __init__(self, backend: MongoBackend) -> None:
        self.backend = backend
        self.where = backend.url_display
        self._open = False
        self._views: dict[str, View] = {}
        self.contacts = MongoContacts(self)
        self.identities = MongoIdentities(self)
        self.interactions = MongoInteractions(self)
        self.stages = MongoStages(self)
        self.appointments = MongoAppointments(self)
        self.consents = MongoConsents(self)
        self.notes = MongoNotes(self)
        self.tasks = MongoTasks(self)
        self.scores = MongoScores(self)
        self.reviews = MongoReviews(self)
        self.segments = MongoSegments(self)
        self.inbox = MongoInbox(self)
        self.audit = MongoAudit(self)
        self.outbox = MongoOutbox(self)
        self.meta = MongoMeta(self)
        self._locks: list[str] = []
        self._lock_owner = ""

    def view(self, collection: str) -> View:
        """The unit's view of ``collection`` (one per collection)."""
        found = self._views.get(collection)
        if found is None:
            found = self._views[collection] = View(
                lambda: self._collection(collection), collection, UNIQUE[collection], self._run
            )
        return found

    def _collection(self, name: str) -> Any:
        if not self._open:
            raise StorageError("the unit of work is not open: use it inside `with backend.unit_of_work() as uow:`")
        return self.backend.database[name]

    def _run(self, collection: str, fn: Callable[[], Any]) -> Any:
        return errors.call(collection, self.where, fn)

    def __enter__(self) -> MongoUnitOfWork:
        if self._open:
            raise StorageError("this unit of work is already open; open a new one per transaction")
        self.backend._verify_once()
        self._open = True
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            self.rollback()
        finally:
            self._open = False

    def rollback(self) -> None:
        """Drop every write buffered since the unit began or last committed, and release
        the unit's named locks."""
        for view in self._views.values():
            view.pending.clear()
        self._release_locks()

    def lock(self, names: Iterable[str]) -> None:
        """Exclusive named locks until the unit commits or rolls back (see
        :meth:`carecrm.core.storage.contract.UnitOfWork.lock`): one document per name in the
        ``locks`` collection (``{_id: name, owner, at}``), inserted at once (not buffered)
        in name order; a second unit's insert of the same ``_id`` fails on the unique
        ``_id`` and it polls until the holder deletes it at commit or rollback.  A lock
        older than :data:`LOCK_LEASE_SECONDS` belongs to a process that died holding it
        and is taken over.

        :raises ConflictError: a lock was not had within :data:`LOCK_TIMEOUT_SECONDS`.
        """
        import secrets
        import time
        from datetime import datetime, timedelta

        if not self._open:
            raise StorageError("the unit of work is not open: use it inside `with backend.unit_of_work() as uow:`")
        wanted = sorted(set(names) - set(self._locks))
        if not wanted:
            return
        if not self._lock_owner:
            self._lock_owner = secrets.token_hex(8)
        coll = self.backend.database["locks"]
        deadline = time.monotonic() + LOCK_TIMEOUT_SECONDS
        for name in wanted:
            pause = 0.005
            while True:
                now = datetime.now(UTC)
                doc = {"_id": name, "owner": self._lock_owner, "at": now}
                got = errors.call("locks", self.where, functools.partial(_insert_if_absent, coll, doc))
                if got is not None:
                    self._locks.append(name)
                    break
                old = {"_id": name, "at": {"$lt": now - timedelta(seconds=LOCK_LEASE_SECONDS)}}
                errors.call("locks", self.where, functools.partial(coll.delete_one, old))
                if time.monotonic() > deadline:
                    raise ConflictError.lock_timeout(LOCK_TIMEOUT_SECONDS)
                time.sleep(pause)
                pause = min(pause * 2, 0.1)

    def _release_locks(self) -> None:
        if not self._locks:
            return
        held, self._locks = self._locks, []
        coll = self.backend.database["locks"]
        errors.call("locks", self.where, lambda: coll.delete_many({"_id": {"$in": held}, "owner": self._lock_owner}))

    def commit(self) -> None:
        """Apply the buffered writes: in one transaction where the server has them, else
        in :data:`APPLY_ORDER` (see the module docstring); the buffer is empty afterwards.

        :raises ConflictError: a contact changed since this unit read it (nothing of the
            unit is stored with transactions; without, the writes before it are).
        :raises DuplicateError: a concurrent writer stored the same unique key first.
        :raises BackendUnavailable: the server was lost.
        """
        if not self._open:
            raise StorageError("the unit of work is not open: use it inside `with backend.unit_of_work() as uow:`")
        views = [self._views[name] for name in APPLY_ORDER if name in self._views and self._views[name].pending]
        if not views:
            return
        try:
            if self.backend.probe()["transactions"]:
                self._commit_in_transaction(views)
            else:
                for view in views:
                    self._apply(view, None)
        finally:
            self.rollback()

    def export_records(self, kind: str) -> Iterator[Any]:
        """Every stored record of ``kind`` as stored, in ``_id`` order, streamed
        (:func:`carecrm.storage_backends.mongo.repositories.export_records`).

        :raises UnknownComponentError: if ``kind`` is not one of
            :data:`carecrm.core.storage.contract.RECORD_KINDS`.
        """
        return repositories.export_records(self, kind)

    def import_records(self, kind: str, records: Sequence[Any]) -> int:
        """Buffer records of ``kind`` unchanged for the next :meth:`commit` (``insert_many``);
        returns how many were given
        (:func:`carecrm.storage_backends.mongo.repositories.import_records`).

        :raises UnknownComponentError: for an unknown kind.
        :raises DuplicateError: if a key is already stored.
        """
        return repositories.import_records(self, kind, records)

    def count_records(self, kind: str) -> int:
        """How many records of ``kind`` are stored (one ``count_documents``).

        :raises UnknownComponentError: for an unknown kind.
        """
        return repositories.count_records(self, kind)

    def _commit_in_transaction(self, views: list[View]) -> None:
        client = self.backend.client

        def apply_all(session: Any) -> None:
            for view in views:
                self._apply(view, session)

        with errors.translated("(transaction)", self.where):
            with client.start_session() as session:
                session.with_transaction(apply_all)

    def _apply(self, view: View, session: Any) -> None:
        """Write one collection's pending documents: inserts, then replaces (upserts, or
        conditional on ``expect``), then deletes — each by ``_id``, so a repeat is harmless."""
        raw = view.raw
        kw: dict[str, Any] = {} if session is None else {"session": session}
        inserts = [op.doc for op in view.pending.ops.values() if op.kind == "insert" and op.doc is not None]
        only_new = [op for op in view.pending.ops.values() if op.kind == "insert_new" and op.doc is not None]
        replaces = [op for op in view.pending.ops.values() if op.kind == "replace"]
        deletes = [key for key, op in view.pending.ops.items() if op.kind == "delete"]
        with errors.translated(view.name, self.where, keep_transient=session is not None):
            for chunk in chunks(inserts, 1000):
                raw.insert_many(list(chunk), ordered=True, **kw)
            for op in only_new:  # an upsert that only inserts: a concurrent writer's document wins
                assert op.doc is not None and op.expect is not None
                raw.update_one(op.expect, {"$setOnInsert": op.doc}, upsert=True, **kw)
            plain = [op for op in replaces if not op.expect]
            if plain and not self.backend.mock:
                from pymongo import ReplaceOne

                for chunk in chunks(plain, 1000):
                    raw.bulk_write(
                        [ReplaceOne({"_id": op.doc["_id"]}, op.doc, upsert=True) for op in chunk if op.doc], **kw
                    )
            else:
                for op in plain:
                    assert op.doc is not None
                    raw.replace_one({"_id": op.doc["_id"]}, op.doc, upsert=True, **kw)
            for op in replaces:
                if not op.expect:
                    continue
                assert op.doc is not None
                result = raw.replace_one({"_id": op.doc["_id"], **op.expect}, op.doc, **kw)
                if result.matched_count == 0:
                    raise ConflictError.changed_after_read(view.name)
            for chunk in chunks(deletes):
                raw.delete_many({"_id": {"$in": list(chunk)}}, **kw)


__all__ = [
    "APPLY_ORDER",
    "INDEXES",
    "OPTION_DEFAULTS",
    "SCHEMES",
    "MongoBackend",
    "MongoUnitOfWork",
    "forget_mock",
    "mock_client",
]
