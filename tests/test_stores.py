"""Both document stores behind the same interface: embedded SQLite and a real MongoDB-wire server."""

import pytest

from mmsearch.stores import (
    MongoDocumentStore,
    SqliteDocumentStore,
    StoreError,
    StoreRejected,
    StoreUnavailable,
    check_storable,
    milvus_failure,
)


@pytest.fixture(params=["sqlite", "mongo"])
def store(request, tmp_path):
    if request.param == "sqlite":
        store = SqliteDocumentStore(tmp_path / "docs.sqlite")
    else:
        store = MongoDocumentStore(request.getfixturevalue("mongo_server").uri, database=f"test_{tmp_path.name}"[:60])
    yield store
    store.close()


def test_upsert_is_idempotent_and_fetches_in_chunks(store):
    docs = [{"id": f"d{i}", "text": f"t{i}", "nested": {"n": i}} for i in range(250)]
    store.drop("c")
    assert store.upsert("c", docs) == 250
    store.upsert("c", docs[:10])
    assert store.count("c") == 250
    found = store.get_many("c", [f"d{i}" for i in range(0, 250, 2)] + ["missing"])
    assert len(found) == 125 and found["d4"] == {"id": "d4", "text": "t4", "nested": {"n": 4}}


def test_collections_are_separate(store):
    store.upsert("one", [{"id": "x", "v": 1}])
    store.upsert("two", [{"id": "x", "v": 2}])
    assert store.get_many("one", ["x"])["x"]["v"] == 1 and store.get_many("two", ["x"])["x"]["v"] == 2


def test_sqlite_store_is_durable_across_connections(tmp_path):
    first = SqliteDocumentStore(tmp_path / "d.sqlite")
    first.upsert("c", [{"id": "a", "text": "kept"}])
    first.close()
    assert SqliteDocumentStore(tmp_path / "d.sqlite").get_many("c", ["a"])["a"]["text"] == "kept"


def test_mongo_store_down_raises_store_error_naming_the_store():
    store = MongoDocumentStore("mongodb://127.0.0.1:9", timeout_ms=300)
    with pytest.raises(StoreError, match="document store mongodb://127.0.0.1:9 failed to read"):
        store.get_many("c", ["a"])


def test_dollar_keys_survive_a_re_index(store):
    # MongoDB refused the second (replacing) write of such a document: re-runs were not idempotent.
    doc = {"id": "d", "$set": {"a": 1}, "nested": [{"$inc": 2}], "\uff04x": "fullwidth", "plain": 3}
    for _ in range(2):
        store.upsert("dollars", [doc])
    assert store.get_many("dollars", ["d"]) == {"d": doc}
    assert store.count("dollars") == 1


@pytest.mark.parametrize(
    "document, message",
    [
        ({"id": "a", "big": 10**30}, "field 'big': integer 10{30} does not fit in 64 bits"),
        ({"id": "a", "n": {"deep": [1, -(2**64)]}}, r"field 'n.deep\[1\]': integer"),
        ({"id": "a", "x": float("nan")}, "field 'x': nan is not a finite number"),
        ({"id": "a", "x": [float("inf")]}, r"field 'x\[0\]': inf is not a finite number"),
    ],
)
def test_values_no_store_can_hold_are_named(document, message):
    with pytest.raises(ValueError, match=message):
        check_storable(document)


def test_values_stores_hold_pass():
    check_storable({"id": "a", "min": -(2**63), "max": 2**63 - 1, "flag": True, "mixed": [1, "a", None, 2.5, {}]})


def test_milvus_failures_are_told_apart_from_outages():
    import grpc
    from pymilvus.exceptions import MilvusException

    class Rpc(grpc.RpcError):
        def __init__(self, code):
            self._code = code

        def code(self):
            return self._code

    assert milvus_failure(MilvusException(1, "maximum recursion depth exceeded")) is StoreRejected
    assert milvus_failure(MilvusException(1100, "cannot parse expression: a == ")) is StoreRejected
    assert milvus_failure(Rpc(grpc.StatusCode.INVALID_ARGUMENT)) is StoreRejected
    assert milvus_failure(MilvusException(2, "Fail connecting to server on 127.0.0.1:1")) is StoreUnavailable
    assert milvus_failure(Rpc(grpc.StatusCode.UNAVAILABLE)) is StoreUnavailable
    assert milvus_failure(ConnectionRefusedError()) is StoreUnavailable
    recovering = "session not found->datanode-1: node not found[node=1]: unrecoverable error"  # after a crash
    assert milvus_failure(MilvusException(65535, recovering)) is StoreUnavailable
