"""Both document stores behind the same interface: embedded SQLite and a real MongoDB-wire server."""

import pytest

from mmsearch.stores import MongoDocumentStore, SqliteDocumentStore, StoreError


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
