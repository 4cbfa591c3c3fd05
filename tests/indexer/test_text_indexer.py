"""Indexing logic against real Milvus Lite and SQLite, with a deterministic fake embedder
(the real embedder, Triton's text_embed, is covered by the integration tests)."""

import hashlib
import json
import subprocess
import sys
import time

import numpy as np
import pytest

from mmsearch.indexer.pipeline import IndexingError, IndexOptions, IndexReport, index_documents
from mmsearch.indexer.text import parse_line, read_documents
from mmsearch.model_repository.contract import CollectionInfo
from mmsearch.processes import free_port, port_is_open, stop_process_group
from mmsearch.settings import StoreSettings
from mmsearch.stores import SqliteDocumentStore, VectorStore

DIM = 8


def fake_embed(texts):
    vectors = np.array(
        [np.frombuffer(hashlib.sha256(t.encode()).digest()[: DIM * 4], dtype=np.uint32) for t in texts],
        dtype=np.float32,
    )
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


@pytest.fixture
def stores(tmp_path):
    settings = StoreSettings.resolve(tmp_path)
    vectors = VectorStore.open(settings)
    documents = SqliteDocumentStore(settings.sqlite_path)
    yield vectors, documents
    documents.close()


def write_lines(path, lines):
    path.write_text("\n".join(line if isinstance(line, str) else json.dumps(line) for line in lines) + "\n")
    return path


@pytest.mark.parametrize(
    "line, message",
    [
        ("{oops", "invalid JSON"),
        ("[1, 2]", "not a JSON object"),
        ('{"text": "no id"}', "missing id field 'id'"),
        ('{"id": "  ", "text": "blank id"}', "missing id field 'id'"),
        ('{"id": 1}', "missing or empty text field 'text'"),
        ('{"id": 1, "text": 5}', "missing or empty text field 'text'"),
        (json.dumps({"id": "x" * 600, "text": "t"}), "id longer than 512 bytes"),
    ],
)
def test_parse_line_names_the_problem(line, message):
    with pytest.raises(ValueError, match=message):
        parse_line(line, "id", "text")


def test_numeric_ids_become_strings():
    assert parse_line('{"id": 7, "text": "t"}', "id", "text")["id"] == "7"


def test_bad_lines_are_reported_with_line_numbers_and_duplicates_keep_the_last(tmp_path):
    path = write_lines(
        tmp_path / "c.jsonl", [{"id": "a", "text": "one"}, "{broken", "", {"id": "a", "text": "two"}, {"id": "b"}]
    )
    report = IndexReport("c")
    docs = read_documents(path, IndexOptions("c"), report)
    assert [d["text"] for d in docs] == ["two"]
    assert report.skipped == [
        (2, "invalid JSON (Expecting property name enclosed in double quotes)"),
        (5, "missing or empty text field 'text'"),
    ]
    assert report.duplicates == 1 and report.lines == 4


def test_on_error_fail_stops_before_anything_is_written(tmp_path, stores):
    path = write_lines(tmp_path / "c.jsonl", [{"id": "a", "text": "one"}, {"id": "b"}])
    with pytest.raises(IndexingError, match=r"c.jsonl:2: missing or empty text field"):
        read_documents(path, IndexOptions("c", on_error="fail"), IndexReport("c"))
    assert not stores[0].has("c")


def test_unreadable_input_is_a_clear_error(tmp_path):
    with pytest.raises(IndexingError, match="cannot read"):
        read_documents(tmp_path / "missing.jsonl", IndexOptions("c"), IndexReport("c"))


def test_last_partial_batch_is_written_and_reindexing_keeps_the_size(tmp_path, stores):
    vectors, documents = stores
    lines = [
        {"id": f"d{i}", "text": f"document number {i}", "category": "even" if i % 2 == 0 else "odd"} for i in range(77)
    ]
    path = write_lines(tmp_path / "c.jsonl", lines)
    options = IndexOptions("c", batch_size=10, concurrency=3)

    def embed_batch(batch):
        return batch, fake_embed([doc["text"] for doc in batch]), []

    for _ in range(2):
        report = IndexReport("c")
        docs = read_documents(path, options, report)
        index_documents(
            docs, embed_batch, CollectionInfo.for_index("text", DIM, options.text_field), vectors, documents, options,
            report, progress=False,
        )
        assert report.written == 77 and report.collection_size == 77 and report.documents_stored == 77
    assert json.loads(vectors.info("c").to_json()) == {
        "modality": "text", "text_field": "text", "query_models": {"text": "text_embed"}, "dim": DIM,
        "fields": ["category"],
    }
    top = vectors.search("c", fake_embed(["document number 76"])[0], limit=1)
    assert top[0][0] == "d76" and top[0][1] == pytest.approx(1.0, abs=1e-5)
    assert documents.get_many("c", ["d76"])["d76"]["category"] == "even"


def test_dimension_mismatch_is_refused(tmp_path, stores):
    vectors, _ = stores
    vectors.ensure_collection("c", CollectionInfo(dim=DIM))
    from mmsearch.stores import StoreError

    with pytest.raises(StoreError, match="holds 8-d vectors, not 16-d"):
        vectors.ensure_collection("c", CollectionInfo(dim=16))


def test_collections_are_searchable_after_milvus_lite_restarts(tmp_path):
    """A restarted `mmsearch serve` finds its collections released; the store loads them."""
    path = tmp_path / "milvus.db"
    for attempt in range(2):
        port = free_port()
        process = subprocess.Popen(
            [
                sys.executable, "-m", "milvus_lite", "server", "--data-dir", str(path), "--host", "127.0.0.1", "--port",
                str(port),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        try:
            deadline = time.monotonic() + 60
            while not port_is_open("127.0.0.1", port) and time.monotonic() < deadline:
                time.sleep(0.2)
            store = VectorStore(f"http://127.0.0.1:{port}")
            if attempt == 0:
                store.ensure_collection("c", CollectionInfo(dim=DIM))
                store.upsert("c", ["a"], fake_embed(["a"]), [{"id": "a"}], skip=set())
                store.flush("c")
            assert store.search("c", fake_embed(["a"])[0], 1)[0].id == "a"
            store.close()
        finally:
            stop_process_group(process, 30)


class FakeClient:
    """What run_index asks of Triton: the embedding width, and embeddings (deterministic)."""

    def embedding_dim(self, model):
        return DIM

    def embed_texts(self, texts, model):
        return fake_embed(texts)


def test_a_lite_collection_past_its_usable_size_is_warned_about(tmp_path, monkeypatch, capsys):
    from mmsearch import stores
    from mmsearch.indexer.run import run_index

    monkeypatch.setattr(stores, "LITE_USABLE_VECTORS", 5)
    path = write_lines(tmp_path / "c.jsonl", [{"id": f"d{i}", "text": f"document {i}"} for i in range(8)])
    settings = StoreSettings.resolve(tmp_path / "data")
    assert run_index(FakeClient(), settings, path, IndexOptions("c"), progress=False).collection_size == 8
    warning = capsys.readouterr().err
    assert "warning: collection 'c' holds 8 vectors in Milvus Lite" in warning and "--milvus-uri http://" in warning
    assert stores.lite_size_warnings(settings) == [warning.strip().removeprefix("warning: ")]  # what serve prints
    server = StoreSettings.resolve(tmp_path / "data", "http://milvus:19530")
    assert stores.lite_size_warning(server, "c", 10**9) is None  # a Milvus server copes
    monkeypatch.setattr(stores, "LITE_USABLE_VECTORS", 8)
    assert stores.lite_size_warnings(settings) == []
