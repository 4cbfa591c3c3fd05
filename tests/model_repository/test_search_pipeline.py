"""The retrieval layers without a server: fake embedder and stores, real validation and flow."""

import numpy as np
import pytest

from mmsearch.model_repository.search_pipeline import SearchError, SearchRequest, Searcher
from mmsearch.stores import StoreError, UnknownCollection


class FakeVectors:
    def __init__(self, hits, collections=("docs",)):
        self.hits, self.known = hits, collections
        self.limits = []

    def metadata(self, name):
        if name not in self.known:
            raise UnknownCollection(name, self.known)
        return {"modality": "image" if name == "photos" else "text"}

    def search(self, name, vector, limit, **kwargs):
        self.limits.append(limit)
        return self.hits[:limit]


class FakeDocuments:
    def __init__(self, docs, fail=False):
        self.docs, self.fail, self.closed = docs, fail, False

    def get_many(self, collection, ids):
        if self.fail:
            raise StoreError("document store mongodb://x failed to read: timeout")
        return {i: self.docs[i] for i in ids if i in self.docs}

    def close(self):
        self.closed = True


def make_searcher(hits=(("a", 0.9), ("b", 0.5)), docs=None, fail=False, opened=None, embedded=None):
    docs = docs if docs is not None else {"a": {"id": "a", "text": "A"}, "b": {"id": "b", "text": "B"}}
    opened = opened if opened is not None else []

    def open_documents():
        opened.append(1)
        return FakeDocuments(docs, fail=fail)

    def embed(model, input_name, payload):
        if embedded is not None:
            embedded.append((model, input_name, payload))
        return np.ones(4, dtype=np.float32) / 2

    return Searcher(embed, lambda: FakeVectors(list(hits), ("docs", "photos")), open_documents)


def request(**overrides):
    return SearchRequest(**({"query": "hello", "collection": "docs", "top_k": 10} | overrides))


def test_result_has_hits_documents_experiments_and_stage_timings():
    result = make_searcher().search(request())
    assert [h["id"] for h in result["hits"]] == ["a", "b"]  # fewer hits than top_k is fine
    assert result["hits"][0]["document"] == {"id": "a", "text": "A"}
    assert set(result["timings_ms"]) == {"embed", "match", "rank", "summary", "total"}
    assert result["experiments"] == {"match": "baseline", "rank": "truncate"}


def test_hit_without_document_is_returned_with_null_document():
    result = make_searcher(docs={"a": {"id": "a"}}).search(request())
    assert result["hits"][1] == {"id": "b", "score": 0.5, "document": None}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"query": ""}, "QUERY is empty"),
        ({"query": " \t\n"}, "QUERY is empty"),
        ({"query": "x" * 5000}, "limit is 2048"),
        ({"top_k": 0}, "TOP_K must be between 1 and 100"),
        ({"top_k": 101}, "TOP_K must be between 1 and 100"),
        ({"collection": ""}, "COLLECTION is empty"),
        ({"collection": "other"}, "unknown collection 'other' \\(collections: docs, photos\\)"),
        ({"image": b""}, "IMAGE is empty"),
        ({"image": b"x" * (32 * 1024 * 1024 + 1)}, "IMAGE is 33554433 bytes; the limit is 33554432"),
        ({"image": b"\x89PNG"}, "collection 'docs' holds text documents and cannot be searched with an image query"),
        ({"params": {"boost": 1}}, "unknown PARAMS keys: boost"),
    ],
)
def test_bad_requests_raise_search_error_with_a_clear_message(overrides, message):
    with pytest.raises(SearchError, match=message):
        make_searcher().search(request(**overrides))


def test_store_error_becomes_search_error_and_the_connection_is_reopened():
    opened = []
    searcher = make_searcher(fail=True, opened=opened)
    for _ in range(2):
        with pytest.raises(SearchError, match="document store .* failed to read"):
            searcher.search(request())
    assert len(opened) == 2  # a fresh connection after the failure


@pytest.mark.parametrize(
    "params, message", [(b"{not json", "PARAMS is not valid JSON"), (b"[1, 2]", "PARAMS must be a JSON object")]
)
def test_from_wire_rejects_bad_params(params, message):
    with pytest.raises(SearchError, match=message):
        SearchRequest.from_wire(b"q", b"docs", 5, b"", params)


def test_from_wire_decodes_bytes_and_defaults():
    parsed = SearchRequest.from_wire(b"caf\xc3\xa9", b" docs ", np.int32(3))
    assert (parsed.query, parsed.collection, parsed.top_k, parsed.params) == ("café", "docs", 3, {})


@pytest.mark.parametrize(
    "overrides, model, input_name",
    [
        ({"collection": "docs"}, "text_embed", "TEXT"),
        ({"collection": "photos"}, "clip_text_embed", "TEXT"),
        ({"collection": "photos", "query": "", "image": b"\x89PNG"}, "clip_image_embed", "IMAGE"),
    ],
)
def test_query_tower_follows_collection_modality_and_request(overrides, model, input_name):
    embedded = []
    result = make_searcher(embedded=embedded).search(request(**overrides))
    assert embedded == [(model, input_name, overrides.get("image", "hello"))]
    assert result["query_modality"] == ("image" if "image" in overrides else "text")
