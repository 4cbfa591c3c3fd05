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
        "fields": ["category"], "document_model": "text_embed",
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


def index_file(path, vectors, documents, options, embed=None):
    report = IndexReport(options.collection)
    docs = read_documents(path, options, report)
    embed = embed or (lambda batch: (batch, fake_embed([doc["text"] for doc in batch]), []))
    index_documents(docs, embed, CollectionInfo.for_index("text", DIM, options.text_field), vectors, documents,
                    options, report, progress=False)
    return report


def test_values_no_store_can_hold_skip_only_their_line(tmp_path, stores):
    # {"big": 10**30} once failed its whole batch with a 93-line traceback, losing 35 good documents.
    vectors, documents = stores
    good = [{"id": f"g{i}", "text": f"good {i}", "n": i} for i in range(99)]
    path = tmp_path / "c.jsonl"
    with path.open("wb") as out:
        for doc in good[:40]:
            out.write(json.dumps(doc).encode() + b"\n")
        out.write(b'{"id": "big", "text": "t", "big": 1000000000000000000000000000000}\n')  # line 41
        out.write(b'{"id": "nan", "text": "t", "x": NaN}\n')  # line 42
        out.write(b'{"id": "latin1", "text": "caf\xe9"}\n')  # line 43
        out.write(b'{"id": 12345, "text": "an int id"}\n{"id": "12345", "text": "the same id as a string"}\n')
        out.write(b'{"id": "mixed", "text": "t", "n": "a string, elsewhere ints", "deep": {"a": [1, {"b": 2}]}}\n')
        for doc in good[40:]:
            out.write(json.dumps(doc).encode() + b"\n")
    report = index_file(path, vectors, documents, IndexOptions("c", batch_size=16))
    assert report.skipped == [
        (41, "field 'big': integer 1000000000000000000000000000000 does not fit in 64 bits"),
        (42, "NaN is not a JSON value (JSON numbers are finite)"),
        (43, "not UTF-8 text (byte 0xe9 at column 30)"),
    ]
    assert report.duplicates == 1  # ids are strings: 12345 and "12345" are one document, the later wins
    assert report.written == 99 + 2 and report.collection_size == 101 and report.documents_stored == 101
    assert list(vectors.info("c").fields) == ["n"]
    assert documents.get_many("c", ["12345"])["12345"]["text"] == "the same id as a string"
    assert documents.get_many("c", ["mixed"])["mixed"]["deep"] == {"a": [1, {"b": 2}]}


class RefusingVectors:
    """A real Milvus Lite store that refuses one id's row, as Milvus refuses a value it cannot hold,
    or goes down after `down_after` writes."""

    def __init__(self, inner, refuse="", down_after=None):
        self.inner, self.refuse, self.down_after, self.writes = inner, refuse, down_after, 0

    def upsert(self, name, ids, *args, **kwargs):
        from mmsearch.stores import StoreRejected, StoreUnavailable

        self.writes += 1
        if self.down_after is not None and self.writes > self.down_after:
            raise StoreUnavailable("Milvus at x failed to upsert: connection refused")
        if self.refuse in ids:
            raise StoreRejected(f"Milvus at x refused to upsert: bad value in {self.refuse}")
        return self.inner.upsert(name, ids, *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def test_a_document_a_store_refuses_costs_only_itself(tmp_path, stores):
    vectors, documents = stores
    path = write_lines(tmp_path / "c.jsonl", [{"id": f"d{i}", "text": f"doc {i}"} for i in range(20)])
    report = index_file(path, RefusingVectors(vectors, refuse="d7"), documents, IndexOptions("c", batch_size=5))
    assert report.written == 19 and report.collection_size == 19
    assert report.skipped == [("id d7", "Milvus at x refused to upsert: bad value in d7")]
    with pytest.raises(IndexingError, match=r"id d7: Milvus at x refused .* \(--on-error fail; 9 documents written\)"):
        index_file(path, RefusingVectors(vectors, refuse="d7"), documents, IndexOptions("c", batch_size=5,
                                                                                         on_error="fail"))


def test_a_store_going_down_mid_run_stops_with_the_count_written(tmp_path, stores):
    vectors, documents = stores
    path = write_lines(tmp_path / "c.jsonl", [{"id": f"d{i}", "text": f"doc {i}"} for i in range(50)])
    down = RefusingVectors(vectors, down_after=2)
    with pytest.raises(IndexingError, match="connection refused; stopped after writing 20 of 50 documents .*again"):
        index_file(path, down, documents, IndexOptions("c", batch_size=10))
    assert index_file(path, vectors, documents, IndexOptions("c", batch_size=10)).collection_size == 50


@pytest.mark.parametrize("name", ["my coll", "9lives", "a-b", "x" * 256, "", "naïve"])
def test_a_collection_name_a_milvus_server_refuses_is_refused_before_anything_is_written(tmp_path, name):
    # Milvus Lite took 'my coll'; a Milvus server then refused it, with a traceback.
    from mmsearch.indexer.run import run_index

    settings = StoreSettings.resolve(tmp_path / "data")
    path = write_lines(tmp_path / "c.jsonl", [{"id": "a", "text": "one"}])
    with pytest.raises(IndexingError, match="is not valid: use 1-255 letters, digits and underscores"):
        run_index(None, settings, path, IndexOptions(name), progress=False)
    assert not settings.data_dir.exists()


def test_a_re_run_finishes_the_collection_an_interrupted_run_built(tmp_path, stores):
    from mmsearch.indexer.run import run_index

    vectors, _ = stores
    vectors.ensure_collection("c__text_embed__20260101000000", CollectionInfo.for_index("text", DIM, "text"))
    path = write_lines(tmp_path / "c.jsonl", [{"id": f"d{i}", "text": f"document {i}"} for i in range(5)])
    settings = StoreSettings.resolve(tmp_path)
    run_index(FakeClient(), settings, path, IndexOptions("c"), progress=False)
    assert vectors.aliases() == {"c": "c__text_embed__20260101000000"}  # finished, not a second one beside it
    assert vectors.collections() == ["c__text_embed__20260101000000"]
