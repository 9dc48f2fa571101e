"""The MongoDB backend over mongomock (in-process): the conformance suite, plus what is
specific to the backend without a server (URLs, options, documents, buffered units of
work, error translation at the pymongo boundary with pymongo's own exception types)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import attrs
import pytest
from bson.binary import Binary, UuidRepresentation
from pymongo.errors import AutoReconnect, DuplicateKeyError, OperationFailure, ServerSelectionTimeoutError

from carecrm.core.analytics.criteria import And, Eq, HadInteraction, In, Not, Prefix, Range, all_of
from carecrm.core.errors import (
    BackendUnavailable,
    ConfigError,
    ConflictError,
    DuplicateError,
    SchemaVersionError,
    StorageError,
)
from carecrm.core.storage.contract import SCHEMA_VERSION, StorageBackend
from carecrm.core.testing.storage import (
    StorageBackendContract,
    audit_record,
    contact_record,
    identity_record,
    interaction_record,
    score_record,
)
from carecrm.storage_backends.mongo.backend import APPLY_ORDER, MongoBackend, MongoUnitOfWork, forget_mock, mock_client
from carecrm.storage_backends.mongo.errors import translate
from carecrm.storage_backends.mongo.repositories import CODECS, compile_criteria


@pytest.fixture
def mock_url() -> Iterator[str]:
    """A fresh ``mongomock://`` name for one test, forgotten afterwards."""
    name = f"test-{uuid.uuid4().hex}"
    yield f"mongomock://{name}"
    forget_mock(name)


class TestMongomockContract(StorageBackendContract):
    """The conformance suite on the MongoDB backend over mongomock (no transactions: the
    buffered, ordered-writes units of work)."""

    @pytest.fixture
    def backend(self, mock_url: str) -> Iterator[StorageBackend]:
        backend = MongoBackend(mock_url)
        backend.create_schema()
        yield backend
        backend.close()

    @pytest.fixture
    def reopen_backend(self, mock_url: str) -> Callable[[], StorageBackend]:
        return lambda: MongoBackend(mock_url)

    @pytest.fixture
    def second_backend(self) -> Iterator[StorageBackend]:
        name = f"second-{uuid.uuid4().hex}"
        second = MongoBackend(f"mongomock://{name}")
        second.create_schema()
        yield second
        second.close()
        forget_mock(name)


def _decode(value: Any) -> Any:
    if isinstance(value, Binary) and value.subtype == 4:
        return value.as_uuid(UuidRepresentation.STANDARD)
    if isinstance(value, dict):
        return {k: _decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v) for v in value]
    return value


class _DecodingCursor:
    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def sort(self, *args: Any, **kwargs: Any) -> _DecodingCursor:
        self._cursor = self._cursor.sort(*args, **kwargs)
        return self

    def limit(self, n: int) -> _DecodingCursor:
        self._cursor = self._cursor.limit(n)
        return self

    def batch_size(self, n: int) -> _DecodingCursor:
        self._cursor = self._cursor.batch_size(n)
        return self

    def __iter__(self) -> Iterator[Any]:
        return (_decode(d) for d in self._cursor)


class _DecodingCollection:
    def __init__(self, collection: Any) -> None:
        self._collection = collection

    def __getattr__(self, name: str) -> Any:
        return getattr(self._collection, name)

    def find_one(self, *args: Any, **kwargs: Any) -> Any:
        return _decode(self._collection.find_one(*args, **kwargs))

    def find(self, *args: Any, **kwargs: Any) -> _DecodingCursor:
        return _DecodingCursor(self._collection.find(*args, **kwargs))

    def aggregate(self, *args: Any, **kwargs: Any) -> Iterator[Any]:
        return iter([_decode(d) for d in self._collection.aggregate(*args, **kwargs)])


class _DecodingDatabase:
    def __init__(self, database: Any) -> None:
        self._database = database

    def __getattr__(self, name: str) -> Any:
        return getattr(self._database, name)

    def __getitem__(self, name: str) -> _DecodingCollection:
        return _DecodingCollection(self._database[name])


class PymongoDecodingClient:
    """mongomock, but handing back binary subtype 4 as :class:`uuid.UUID` the way pymongo
    with ``uuidRepresentation="standard"`` does (mongomock returns what was stored)."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def __getattr__(self, name: str) -> Any:
        return getattr(self._client, name)

    def __getitem__(self, name: str) -> _DecodingDatabase:
        return _DecodingDatabase(self._client[name])


class TestPymongoDecodingContract(StorageBackendContract):
    """The conformance suite again, with UUIDs decoded as a real pymongo client decodes them."""

    @pytest.fixture
    def backend(self, mock_url: str) -> Iterator[StorageBackend]:
        backend = MongoBackend(mock_url, client=PymongoDecodingClient(mock_client(mock_url.split("://")[1])))
        backend.create_schema()
        yield backend
        backend.close()


# --------------------------------------------------------------------------- registration, URLs, options


def test_registers_mongo_for_its_schemes(mock_url: str) -> None:
    from carecrm.core.plugins.manager import build_plugin_manager, collect
    from carecrm.storage_backends import mongo as mongo_plugin

    pm = build_plugin_manager(load_entrypoints=False)
    registered: dict[str, tuple[tuple[str, ...], Any]] = {}

    def make_register(owner: str) -> Callable[..., None]:
        def register(name: str, schemes: Any, factory: Any) -> None:
            registered[name] = (tuple(schemes), factory)

        return register

    collect(pm, "carecrm_register_storage_backends", make_register)
    schemes, factory = registered["mongo"]
    assert set(schemes) == {"mongodb", "mongodb+srv", "mongomock"}
    assert factory is mongo_plugin.open_backend
    backend = factory(mock_url, {})
    assert isinstance(backend, MongoBackend) and isinstance(backend, StorageBackend)


def test_urls_options_and_the_masked_password() -> None:
    backend = MongoBackend("mongodb://carecrm:s3cr3t-pw@db1.example:27017,db2.example/crm?replicaSet=rs0")
    assert backend.url_display == "mongodb://carecrm:***@db1.example:27017,db2.example/crm?replicaSet=rs0"
    assert "s3cr3t-pw" not in repr(backend)
    assert backend.database_name == "crm"
    backend.close()
    assert MongoBackend("mongodb://db.example/", database="practice").database_name == "practice"
    assert MongoBackend("mongodb://db.example").database_name == "carecrm"
    with pytest.raises(ConfigError, match="served: mongodb, mongodb\\+srv, mongomock"):
        MongoBackend("redis://db.example")
    with pytest.raises(ConfigError, match="known: database, server_selection_timeout_ms, transactions"):
        MongoBackend.from_options("mongomock://x", {"server_selection_timeout": 5})
    with pytest.raises(ConfigError, match="transactions"):
        MongoBackend("mongomock://x", transactions="sometimes")
    with pytest.raises(ConfigError, match="server_selection_timeout_ms"):
        MongoBackend("mongodb://db.example", server_selection_timeout_ms=0)


def test_mongomock_urls_share_one_client_per_name(mock_url: str) -> None:
    first = MongoBackend(mock_url)
    first.create_schema()
    record = contact_record()
    with first.unit_of_work() as uow:
        uow.contacts.add(record)
        uow.commit()
    with MongoBackend(mock_url).unit_of_work() as uow:
        assert uow.contacts.get(record.id) == record
    other = MongoBackend(f"{mock_url}-other")
    assert other.schema_version() is None


# --------------------------------------------------------------------------- documents and indexes


def test_documents_use_bson_types_and_natural_ids(mock_url: str) -> None:
    backend = MongoBackend(mock_url)
    backend.create_schema()
    contact = contact_record()
    interaction = interaction_record(contact.id, occurred_at=datetime(2024, 7, 1, 12, 0, 0, 987654, tzinfo=UTC))
    with backend.unit_of_work() as uow:
        uow.contacts.add(contact)
        uow.interactions.add(interaction)
        uow.audit.append(audit_record(1))
        uow.scores.put(score_record(contact.id))
        uow.commit()
    raw = backend.database["interactions"].find_one({})
    assert raw["_id"] == Binary.from_uuid(interaction.id, UuidRepresentation.STANDARD) and "id" not in raw
    assert isinstance(raw["contact_id"], Binary) and raw["contact_id"].subtype == 4
    assert raw["body_enc"] == interaction.body_enc and raw["touchpoint"] == interaction.touchpoint
    assert raw["occurred_at"].replace(tzinfo=None) == datetime(2024, 7, 1, 12, 0, 0, 987000)
    assert backend.database["audit_log"].find_one({})["_id"] == 1
    assert backend.database["scores"].find_one({})["_id"] == f"{contact.id.hex}:rules"
    with backend.unit_of_work() as uow:
        got = uow.interactions.get(interaction.id)
    # mongomock, like pymongo, hands back a BSON FixedOffset: the backend gives timezone.utc
    assert got.occurred_at.tzinfo is UTC and got.recorded_at.tzinfo is UTC
    assert got.occurred_at == datetime(2024, 7, 1, 12, 0, 0, 987000, tzinfo=UTC)


def test_create_schema_makes_every_index_and_check_reports_them(mock_url: str) -> None:
    backend = MongoBackend(mock_url)
    backend.create_schema()
    indexes = backend.database["interactions"].index_information()
    assert indexes["uq_interactions_source_key"]["unique"] is True
    assert indexes["uq_interactions_source_key"]["key"] == [("source", 1), ("idempotency_key", 1)]
    assert indexes["ix_interactions_timeline"]["key"] == [("contact_id", 1), ("occurred_at", 1), ("_id", 1)]
    assert backend.database["identities"].index_information()["uq_identities_contact_kind_bidx"]["unique"]
    assert not backend.database["identities"].index_information()["ix_identities_kind_bidx"].get("unique")
    info = backend.check()
    assert info["indexes"] == {"ok": True, "missing": []}
    assert (info["backend"], info["topology"], info["capabilities"]) == ("mongo", "in-process test double", [])
    assert info["server_version"] and info["schema_current"] is True and "advice" not in info
    backend.database["interactions"].drop_index("ix_interactions_kind_time")
    info = backend.check()
    assert info["indexes"]["missing"] == ["interactions.ix_interactions_kind_time"]
    assert "carecrm storage upgrade" in info["advice"]
    assert backend.upgrade() == ["create missing indexes: interactions.ix_interactions_kind_time"]
    assert backend.check()["indexes"]["ok"] is True
    assert backend.upgrade() == []


def test_a_duplicate_is_refused_by_the_database_itself(mock_url: str) -> None:
    """The unique index on (source, idempotency_key) refuses a duplicate written behind
    the unit's back (a concurrent writer); the error names no value."""
    backend = MongoBackend(mock_url)
    backend.create_schema()
    contact = contact_record()
    record = interaction_record(contact.id, idempotency_key="vendor-evt-777")
    with backend.unit_of_work() as uow:
        uow.interactions.add(record)
        twin = interaction_record(contact.id, idempotency_key="vendor-evt-777")
        doc = CODECS["interactions"].doc(twin)
        backend.database["interactions"].insert_one(doc)  # another process, meanwhile
        with pytest.raises(DuplicateError) as caught:
            uow.commit()
    assert "vendor-evt-777" not in str(caught.value) and caught.value.__cause__ is None
    with pytest.raises(DuplicateKeyError):
        backend.database["interactions"].insert_one(dict(doc, _id=Binary.from_uuid(uuid.uuid4())))


# --------------------------------------------------------------------------- buffered units of work


def test_writes_are_invisible_to_others_until_commit_and_visible_inside(mock_url: str) -> None:
    backend = MongoBackend(mock_url)
    backend.create_schema()
    contact = contact_record()
    with backend.unit_of_work() as uow:
        uow.contacts.add(contact)
        uow.interactions.add(interaction_record(contact.id))
        uow.meta.set("audit_head", "1:abc:def")
        uow.audit.append(audit_record(1))
        # the unit reads its own writes
        assert uow.contacts.get(contact.id) == contact
        assert len(uow.interactions.timeline(contact.id)) == 1
        assert uow.meta.get("audit_head") == "1:abc:def"
        assert uow.audit.last() is not None and uow.audit.last().seq == 1  # type: ignore[union-attr]
        assert [c.id for c in uow.contacts.list(stage="new_lead")] == [contact.id]
        # nothing reached the database yet: another unit sees nothing
        assert backend.database["contacts"].count_documents({}) == 0
        with backend.unit_of_work() as other:
            assert other.contacts.count() == 0 and other.meta.get("audit_head") is None
        uow.commit()
        assert uow.contacts.count() == 1  # read back from the database
    assert backend.database["contacts"].count_documents({}) == 1


def test_commit_applies_contacts_before_identities_before_interactions(
    mock_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without transactions a commit that dies part-way (here: the interactions write
    fails) leaves the contact and its identities, never an interaction without them; the
    re-delivery then stores the interaction exactly once."""
    backend = MongoBackend(mock_url)
    backend.create_schema()
    contact = contact_record()
    identity = identity_record(contact.id)
    interaction = interaction_record(contact.id, idempotency_key="evt-1")
    assert APPLY_ORDER.index("contacts") < APPLY_ORDER.index("identities") < APPLY_ORDER.index("interactions")
    assert APPLY_ORDER.index("interactions") < APPLY_ORDER.index("inbox")
    real_apply = MongoUnitOfWork._apply

    def crash_on_interactions(self: MongoUnitOfWork, view: Any, session: Any) -> None:
        if view.name == "interactions":
            raise BackendUnavailable("lost the connection (simulated)")
        real_apply(self, view, session)

    monkeypatch.setattr(MongoUnitOfWork, "_apply", crash_on_interactions)
    with backend.unit_of_work() as uow:
        uow.contacts.add(contact)
        uow.identities.add(identity)
        uow.interactions.add(interaction)
        with pytest.raises(BackendUnavailable):
            uow.commit()
    monkeypatch.setattr(MongoUnitOfWork, "_apply", real_apply)
    with backend.unit_of_work() as uow:
        assert uow.identities.find("email", identity.bidx)[0].contact_id == contact.id
        assert uow.interactions.existing_keys("typeform", ["evt-1"]) == set()
        uow.interactions.add(interaction)  # the re-delivery
        uow.commit()
    with backend.unit_of_work() as uow:
        assert uow.interactions.existing_keys("typeform", ["evt-1"]) == {"evt-1"}
        assert uow.contacts.count() == 1


def test_a_contact_changed_behind_the_unit_is_a_conflict_at_commit(mock_url: str) -> None:
    backend = MongoBackend(mock_url)
    backend.create_schema()
    contact = contact_record()
    with backend.unit_of_work() as uow:
        uow.contacts.add(contact)
        uow.commit()
    with backend.unit_of_work() as uow:
        uow.contacts.update(attrs.evolve(contact, stage="contacted"))
        backend.database["contacts"].update_one({}, {"$set": {"version": 2, "stage": "lost"}})  # someone else
        with pytest.raises(ConflictError, match="read it again"):
            uow.commit()
    with backend.unit_of_work() as uow:
        assert uow.contacts.get(contact.id).stage == "lost"


def test_the_unit_of_work_must_be_entered(mock_url: str) -> None:
    backend = MongoBackend(mock_url)
    backend.create_schema()
    uow = backend.unit_of_work()
    with pytest.raises(StorageError, match="not open"):
        uow.contacts.count()
    with uow:
        with pytest.raises(StorageError, match="already open"):
            uow.__enter__()


def test_a_database_without_the_schema_says_run_init(mock_url: str) -> None:
    backend = MongoBackend(mock_url)
    assert backend.schema_version() is None
    assert backend.check()["schema_version"] is None
    with pytest.raises(SchemaVersionError, match="carecrm init"):
        with backend.unit_of_work():
            pass
    assert backend.upgrade() == ["create indexes"]
    assert backend.schema_version() == SCHEMA_VERSION
    backend.database["meta"].update_one({"_id": "schema_version"}, {"$set": {"value": "one"}})
    with pytest.raises(SchemaVersionError, match="not a number"):
        backend.schema_version()


def test_segment_filters_compile_to_queries() -> None:
    """The compiled query of a filter tree: $nor for Not, an anchored escaped $regex for
    Prefix, $gte/$lte for Range, null for an unknown value."""

    class NoInteractions:
        def contacts_with(self, kinds: Any, since: Any, until: Any) -> list[Any]:
            return ["ids"]

    compiled = compile_criteria(
        all_of(
            Not(Eq("city", "Chicago")),
            Prefix("postal_prefix", "60."),
            Range("score", 10, None),
            Eq("owner", None),
            In("stage", []),
            HadInteraction(("email.opened",), since=datetime(2024, 1, 1, tzinfo=UTC)),
        ),
        NoInteractions(),  # type: ignore[arg-type]
    )
    assert compiled == {
        "$and": [
            {"$nor": [{"city": "Chicago"}]},
            {"postal_prefix": {"$regex": "^60\\."}},
            {"score": {"$gte": 10}},
            {"owner": None},
            {"_id": {"$in": []}},
            {"_id": {"$in": ["ids"]}},
        ]
    }
    assert compile_criteria(Not(And()), NoInteractions()) == {"_id": {"$in": []}}  # type: ignore[arg-type]


# --------------------------------------------------------------------------- errors at the pymongo boundary


class FakeCollection:
    """A collection whose index creation may be refused (a user without the right)."""

    def __init__(self, client: FakeClient, name: str) -> None:
        self.client, self.name = client, name

    def find_one(self, query: Any, *args: Any, **kwargs: Any) -> Any:
        self.client.calls.append(("find_one", self.name))
        return None

    def create_index(self, keys: Any, **kwargs: Any) -> str:
        if self.client.index_error is not None:
            raise self.client.index_error
        self.client.calls.append(("create_index", self.name))
        return str(kwargs.get("name"))

    def replace_one(self, *args: Any, **kwargs: Any) -> Any:
        self.client.calls.append(("replace_one", self.name))


class FakeAdmin:
    def __init__(self, client: FakeClient) -> None:
        self.client = client

    def command(self, name: str) -> dict[str, Any]:
        error = self.client.command_errors.get(name)
        if error is not None:
            raise error
        return dict(self.client.replies[name])


class FakeClient:
    """Stands in for ``pymongo.MongoClient``: ``admin.command`` answers ``hello``,
    ``buildInfo`` and ``ping`` or raises pymongo's own exceptions."""

    def __init__(
        self,
        *,
        hello: dict[str, Any] | None = None,
        version: str = "7.0.14",
        command_errors: dict[str, Exception] | None = None,
        index_error: Exception | None = None,
    ) -> None:
        self.replies = {
            "hello": hello if hello is not None else {"isWritablePrimary": True, "maxWireVersion": 21},
            "buildInfo": {"version": version},
            "ping": {"ok": 1.0},
        }
        self.command_errors = command_errors or {}
        self.index_error = index_error
        self.admin = FakeAdmin(self)
        self.calls: list[tuple[str, str]] = []
        self.closed = False

    def __getitem__(self, name: str) -> Any:
        client = self

        class Database:
            def __getitem__(self, collection: str) -> FakeCollection:
                return FakeCollection(client, collection)

            def list_collection_names(self) -> list[str]:
                return []

            def create_collection(self, collection: str) -> None:
                client.calls.append(("create_collection", collection))

        return Database()

    def close(self) -> None:
        self.closed = True


URL = "mongodb://carecrm:s3cr3t-pw@db.example:27017/crm"


def _all_entry_points(backend: MongoBackend) -> list[Callable[[], Any]]:
    return [backend.check, backend.schema_version, backend.create_schema, backend.unit_of_work().__enter__]


def test_an_unreachable_server_says_what_to_check() -> None:
    timeout = ServerSelectionTimeoutError("db.example:27017: [Errno 111] Connection refused, Timeout: 5.0s")
    client = FakeClient(command_errors={"hello": timeout, "ping": timeout})
    backend = MongoBackend(URL, client=client)
    for call in _all_entry_points(backend):
        with pytest.raises(BackendUnavailable) as caught:
            call()
        message = str(caught.value)
        assert "cannot reach the MongoDB server at mongodb://carecrm:***@db.example:27017/crm" in message
        assert "mongod" in message and "server_selection_timeout_ms" in message
        assert "s3cr3t-pw" not in message and caught.value.__cause__ is None
    assert client.calls == []  # nothing was written


def test_wrong_credentials_say_check_the_user_and_auth_source() -> None:
    failed = OperationFailure("Authentication failed.", code=18)
    backend = MongoBackend(URL, client=FakeClient(command_errors={"hello": failed, "ping": failed}))
    for call in _all_entry_points(backend):
        with pytest.raises(BackendUnavailable, match="refused the user name or password.*authSource"):
            call()


def test_a_user_without_the_right_to_create_indexes_is_told_what_to_grant() -> None:
    denied = OperationFailure("not authorized on crm to execute command { createIndexes: ... }", code=13)
    client = FakeClient(index_error=denied)
    backend = MongoBackend(URL, client=client)
    with pytest.raises(BackendUnavailable) as caught:
        backend.create_schema()
    message = str(caught.value)
    assert "not allowed to create the indexes" in message and "readWrite" in message and "createIndex" in message
    assert ("replace_one", "meta") not in client.calls, "no schema version is recorded without the indexes"
    assert "s3cr3t-pw" not in message


def test_a_server_too_old_is_refused_before_anything_is_written() -> None:
    client = FakeClient(hello={"isWritablePrimary": True, "maxWireVersion": 6}, version="3.6.23")
    backend = MongoBackend(URL, client=client)
    for call in _all_entry_points(backend):
        with pytest.raises(BackendUnavailable, match=r"runs version 3\.6\.23; carecrm needs MongoDB 4\.4 or newer"):
            call()
    assert client.calls == []


@pytest.mark.parametrize(
    ("hello", "option", "topology", "capabilities"),
    [
        ({"setName": "rs0", "maxWireVersion": 21}, "auto", "replica set", {"transactions"}),
        ({"msg": "isdbgrid", "maxWireVersion": 21}, "auto", "sharded cluster", {"transactions"}),
        ({"maxWireVersion": 21}, "auto", "standalone", set()),
        ({"setName": "rs0", "maxWireVersion": 21}, "off", "replica set", set()),
    ],
)
def test_transactions_where_the_server_has_them(
    hello: dict[str, Any], option: str, topology: str, capabilities: set[str]
) -> None:
    backend = MongoBackend(URL, client=FakeClient(hello=hello), transactions=option)
    assert backend.capabilities == frozenset(capabilities)
    assert backend.probe()["topology"] == topology


def test_translation_of_other_driver_errors() -> None:
    where = "mongodb://h/db"
    assert isinstance(translate(AutoReconnect("connection reset"), "contacts", where), BackendUnavailable)
    conflict = translate(OperationFailure("WriteConflict", code=112), "contacts", where)
    assert isinstance(conflict, ConflictError) and "retry" in str(conflict)
    other = translate(OperationFailure("boom 'secret value'", code=2), "contacts", where)
    assert type(other) is StorageError and "secret" not in str(other) and "code 2" in str(other)
    dup = translate(DuplicateKeyError('E11000 dup key: { idempotency_key: "k-1" }', code=11000), "x", where)
    assert isinstance(dup, DuplicateError) and "k-1" not in str(dup)


def test_a_real_unreachable_server_times_out_into_backend_unavailable() -> None:
    """pymongo's own ServerSelectionTimeoutError, from a port nothing listens on."""
    backend = MongoBackend("mongodb://carecrm:s3cr3t-pw@127.0.0.1:9/crm", server_selection_timeout_ms=200)
    with pytest.raises(BackendUnavailable) as caught:
        backend.check()
    assert "127.0.0.1:9" in str(caught.value) and "s3cr3t-pw" not in str(caught.value)
    backend.close()


def test_pymongo_is_only_imported_when_a_backend_is_opened() -> None:
    import subprocess
    import sys

    code = (
        "import sys; import carecrm.storage_backends.mongo as m; "
        "from carecrm.core.plugins.manager import build_plugin_manager; build_plugin_manager(load_entrypoints=False); "
        "print('pymongo' in sys.modules, 'mongomock' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]
