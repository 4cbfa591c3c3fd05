"""The retrieval layers without a server: fake embedder and stores, real validation and flow."""

import gc
import weakref

import numpy as np
import pytest

from mmsearch.model_repository.contract import MAX_QUERY_CHARS, CollectionInfo
from mmsearch.model_repository.search.experiments import ConfigError, parse_config
from mmsearch.model_repository.search.layers import arm_validator
from mmsearch.model_repository.search.request import SearchError, SearchRequest
from mmsearch.model_repository.search.searcher import Searcher
from mmsearch.stores import Hit, StoreError, StoreRejected, StoreUnavailable, UnknownCollection


class FakeVectors:
    def __init__(self, hits, collections=("docs",), calls=None, aliases=None, models=None):
        self.hits, self.known = hits, collections
        self.calls = calls if calls is not None else []
        self.aliases_, self.models, self.searched = aliases or {}, models or {}, []

    def describe(self, name):
        physical = self.aliases_.get(name, name)
        return physical, self.info(physical)

    def info(self, name):
        if name not in self.known:
            raise UnknownCollection(name, self.known)
        queries = {"text": self.models[name]} if name in self.models else {}
        return CollectionInfo("image" if name == "photos" else "text", text_field="text", fields=("category",),
                              query_models=queries)

    def collections(self):
        return list(self.known)

    def aliases(self):
        return dict(self.aliases_)

    def count(self, name):
        return 16 if name == "photos" else len(self.hits)

    def search(self, name, vector, limit, **kwargs):
        return self.search_many(name, np.asarray(vector)[None], limit, **kwargs)[0]

    def search_many(self, name, vectors, limit, **kwargs):
        """Like Milvus: best first, at most `limit` per query vector."""
        self.calls.append({"limit": limit, "nq": len(vectors), **kwargs})
        self.searched.append(name)
        ranked = sorted(self.hits, key=lambda hit: -hit[1])[:limit]
        with_vectors = kwargs.get("with_vectors")
        return [[Hit(doc_id, score, np.array(vec, dtype=np.float32) if with_vectors else None)
                 for doc_id, score, vec in ranked] for _ in vectors]


class FakeDocuments:
    def __init__(self, docs, fail=False):
        self.docs, self.fail, self.closed = docs, fail, False

    def get_many(self, collection, ids):
        if self.fail:  # True: down; or the StoreError to raise
            raise StoreUnavailable("document store mongodb://x failed to read: timeout") if self.fail is True else \
                self.fail
        return {i: self.docs[i] for i in ids if i in self.docs}

    def close(self):
        self.closed = True


HITS = (("a", 0.9, [1.0, 0.0]), ("b", 0.5, [0.6, 0.8]))


def make_searcher(hits=HITS, docs=None, fail=False, opened=None, embedded=None, config=None, calls=None):
    docs = docs if docs is not None else {"a": {"id": "a", "text": "A"}, "b": {"id": "b", "text": "B"}}
    opened = opened if opened is not None else []

    def open_documents():
        opened.append(1)
        return FakeDocuments(docs, fail=fail)

    def embed(model, input_name, payloads):
        if embedded is not None:
            embedded.extend((model, input_name, payload) for payload in payloads)
        return np.ones((len(payloads), 4), dtype=np.float32) / 2

    parsed = parse_config(config, arm_validator()) if config else None
    return Searcher(embed, lambda: FakeVectors(list(hits), ("docs", "photos"), calls), open_documents,
                    **({"experiments": lambda: parsed} if parsed else {}))


def request(**overrides):
    return SearchRequest(**({"query": "hello", "collection": "docs", "top_k": 10} | overrides))


def test_result_has_hits_documents_experiments_and_stage_timings():
    result = make_searcher().search(request())
    assert [h["id"] for h in result["hits"]] == ["a", "b"]  # fewer hits than top_k is fine
    assert result["hits"][0]["document"] == {"id": "a", "text": "A"}
    assert set(result["timings_ms"]) == {"embed", "match", "rank", "summary", "total"}
    assert result["experiments"] == {"qp": "baseline", "match": "baseline", "rank": "baseline", "summary": "baseline"}


def test_hit_without_document_is_returned_with_null_document():
    result = make_searcher(docs={"a": {"id": "a"}}).search(request())
    assert result["hits"][1] == {"id": "b", "score": 0.5, "document": None}


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"query": ""}, "QUERY is empty"), ({"query": " \t\n"}, "QUERY is empty"),
        ({"query": "x" * 5000}, "limit is 2048"), ({"top_k": 0}, "TOP_K must be between 1 and 100"),
        ({"top_k": 101}, "TOP_K must be between 1 and 100"), ({"collection": ""}, "COLLECTION is empty"),
        ({"collection": "other"}, "unknown collection 'other' \\(collections: docs, photos\\)"),
        ({"query": "", "image": b""}, "IMAGE is empty"),
        ({"query": "", "image": b"x" * (32 * 1024 * 1024 + 1)}, "IMAGE is 33554433 bytes; the limit is 33554432"),
        ({"query": "", "image": b"\x89PNG"},
         "collection 'docs' holds text documents and cannot be searched with an image query"),
        ({"image": b"\x89PNG"}, "send QUERY or IMAGE, not both"),
        ({"params": {"boost": 1}}, "unknown PARAMS keys: boost"),
        ({"params": {"filter": "category = 1"}}, "invalid filter: unexpected character '='"),
        ({"params": {"filter": "secret == 1"}}, "invalid filter: unknown field 'secret'"),
        ({"params": {"experiments": {"rank": "mmr"}}}, "scene 'docs' has no arm 'mmr' in layer 'rank'"),
        ({"params": {"experiments": ["rank", "mmr"]}}, 'PARAMS "experiments" must map layers to arm names'),
        ({"params": {"filter": 5}}, "invalid filter: a filter must be a string"),
    ],
)
def test_bad_requests_raise_search_error_with_a_clear_message(overrides, message):
    with pytest.raises(SearchError, match=message):
        make_searcher().search(request(**overrides))


def test_query_limit_counts_characters_not_utf8_bytes():
    at_limit = "检" * MAX_QUERY_CHARS  # 3 UTF-8 bytes each
    assert len(at_limit.encode("utf-8")) == 3 * MAX_QUERY_CHARS
    accepted = SearchRequest.from_wire(at_limit.encode("utf-8"), b"docs", 10)  # as the wire brings it: bytes
    assert make_searcher().search(accepted)["query"] == at_limit
    too_long = SearchRequest.from_wire((at_limit + "检").encode("utf-8"), b"docs", 10)
    message = f"QUERY is {MAX_QUERY_CHARS + 1} characters long; the limit is {MAX_QUERY_CHARS}$"
    with pytest.raises(SearchError, match=message):
        make_searcher().search(too_long)


def test_a_store_that_is_down_is_unavailable_and_the_connection_is_reopened():
    opened = []
    searcher = make_searcher(fail=True, opened=opened)
    for _ in range(2):
        with pytest.raises(SearchError, match="store unavailable: document store .* failed to read") as failure:
            searcher.search(request())
        assert failure.value.status == "unavailable"
    assert len(opened) == 2  # a fresh connection after the failure


@pytest.mark.parametrize("error, status", [(StoreRejected("Milvus at x refused to search: bad expression"), "invalid"),
                                           (StoreError("document store x failed to write: constraint"), "internal")])
def test_a_store_that_refuses_keeps_its_connection(error, status):
    # A filter Milvus rejected once dropped every client, as if the store were down.
    opened = []
    searcher = make_searcher(fail=error, opened=opened)
    for _ in range(2):
        with pytest.raises(SearchError, match=str(error)) as failure:
            searcher.search(request())
        assert failure.value.status == status
    assert len(opened) == 1


def test_bad_requests_are_the_callers_fault():
    with pytest.raises(SearchError) as failure:
        make_searcher().search(request(top_k=0))
    assert failure.value.status == "invalid"


@pytest.mark.parametrize(
    "params, message", [(b"{not json", "PARAMS is not valid JSON"), (b"[1, 2]", "PARAMS must be a JSON object"),
                        (b"[" * 100_000 + b"]" * 100_000, "PARAMS is nested too deeply")]
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


CONFIG = """
scenes:
  docs:
    layers:
      qp: [{name: lower, params: {lowercase: true, prefix: "query: "}}]
      match:
        - {name: deep, params: {depth: 40, filter: 'category == "faq"', search_params: {ef: 64}, consistency: Bounded}}
      rank:
        - {name: truncate, ratio: 0.5}
        - {name: diverse, ratio: 0.5, params: {ranker: mmr, lambda: 0.0}}
      summary: [{name: short, params: {fields: [text]}}]
"""


def test_layers_apply_their_arms_params():
    embedded, calls = [], []
    docs = {"a": {"id": "a", "text": "A", "extra": 1}, "b": {"id": "b", "text": "B", "extra": 2}}
    searcher = make_searcher(embedded=embedded, calls=calls, docs=docs, config=CONFIG)
    result = searcher.search(
        request(query="Hello", params={"experiments": {"rank": "diverse"}, "filter": "category != 'x'"})
    )
    assert embedded == [("text_embed", "TEXT", "query: hello")]
    # depth 40 and one hit past the cut, to see whether a tie crosses it
    assert calls == [{"limit": 41, "nq": 1, "filter": '(category == "faq") and (category != "x")',
                      "search_params": {"ef": 64}, "with_vectors": True, "consistency": "Bounded"}]
    assert result["experiments"] == {"qp": "lower", "match": "deep", "rank": "diverse", "summary": "short"}
    assert result["hits"][0]["document"] == {"id": "a", "text": "A"}  # summary keeps only the asked fields
    assert "debug" not in result
    debug = searcher.search(request(params={"debug": True, "experiments": {"rank": "diverse"}}))["debug"]
    assert debug == {"collection": "docs", "query_model": "text_embed", "filter": 'category == "faq"', "depth": 40,
                     "candidates": 2,
                     "ranker": "mmr", "rank_params": {"lambda": 0.0}}


def alias_searcher(embedded, config=None):
    """'docs' is an alias over docs__tuned (embedded by text_embed_tuned); docs__base is the old one."""
    vectors = FakeVectors(list(HITS), ("docs__base", "docs__tuned", "photos"), aliases={"docs": "docs__tuned"},
                          models={"docs__base": "text_embed", "docs__tuned": "text_embed_tuned"})

    def embed(model, input_name, payloads):
        embedded.extend((model, payload) for payload in payloads)
        return np.ones((len(payloads), 4), dtype=np.float32) / 2

    parsed = parse_config(config, arm_validator()) if config else None
    searcher = Searcher(embed, lambda: vectors, lambda: FakeDocuments({"a": {"id": "a"}, "b": {"id": "b"}}),
                        **({"experiments": lambda: parsed} if parsed else {}))
    return searcher, vectors


def test_an_alias_is_searched_in_its_collection_with_that_collections_model():
    embedded = []
    searcher, vectors = alias_searcher(embedded)
    result = searcher.search(request(params={"debug": True}))
    assert embedded == [("text_embed_tuned", "hello")] and vectors.searched == ["docs__tuned"]
    assert result["collection"] == "docs"
    assert (result["debug"]["collection"], result["debug"]["query_model"]) == ("docs__tuned", "text_embed_tuned")
    catalog = searcher.search(request(query="", collection="", params={"catalog": True}))["collections"]
    assert [c["name"] for c in catalog] == ["docs", "docs__base", "photos"]  # the alias, not what is behind it


def test_a_match_arm_on_another_collection_embeds_with_that_collections_model():
    config = """
scenes:
  docs:
    layers:
      match: [{name: tuned, ratio: 0.5}, {name: base, ratio: 0.5, params: {collection: docs__base}}]
"""
    embedded = []
    searcher, vectors = alias_searcher(embedded, config)
    for arm in ("base", "tuned", "base"):
        searcher.search(request(params={"experiments": {"match": arm}}))
    assert embedded == [("text_embed", "hello"), ("text_embed_tuned", "hello"), ("text_embed", "hello")]
    assert vectors.searched == ["docs__base", "docs__tuned", "docs__base"]
    photos = "scenes: {docs: {layers: {match: [{name: p, params: {collection: photos}}]}}}"
    with pytest.raises(SearchError, match="match arm 'p' searches 'photos', which holds image documents"):
        alias_searcher([], photos)[0].search(request())


def test_hybrid_fetches_candidate_text_and_moves_lexical_matches_up():
    hits = (("a", 0.9, [1, 0]), ("b", 0.85, [1, 0]), ("c", 0.8, [1, 0]))
    docs = {
        "a": {"id": "a", "text": "apt upgrade"},
        "b": {"id": "b", "text": "nothing here"},
        "c": {"id": "c", "text": "install debian now"},
    }
    config = "scenes: {docs: {layers: {rank: [{name: hybrid, params: {rrf_k: 1}}]}}}"
    result = make_searcher(hits=hits, docs=docs, config=config).search(request(query="install debian", top_k=3))
    assert [h["id"] for h in result["hits"]][0] == "c"


@pytest.mark.parametrize(
    "config, message",
    [
        ("scenes: {d: {layers: {rank: [{name: x, params: {ranker: nope}}]}}}", "unknown ranker 'nope'"),
        ("scenes: {d: {layers: {rank: [{name: mmr, params: {lambda: 3}}]}}}", "lambda must be between 0 and 1"),
        (
            "scenes: {d: {layers: {match: [{name: m, params: {depth: 0}}]}}}",
            "depth must be an integer between 1 and 2000",
        ),
        (
            "scenes: {d: {layers: {match: [{name: m, params: {consistency: Weak}}]}}}",
            "consistency must be one of Strong, Bounded, Session, Eventually",
        ),
        ("scenes: {d: {layers: {match: [{name: m, params: {filter: 'a ='}}]}}}", "invalid filter"),
        # the query model is the searched collection's, never an arm's: no mixing two encoders
        ("scenes: {d: {layers: {qp: [{name: q, params: {model: other_embed}}]}}}", "unknown qp params model"),
        ("scenes: {d: {layers: {match: [{name: m, params: {collection: 'a b'}}]}}}", "collection must be a collection"),
        ("scenes: {d: {layers: {summary: [{name: s, params: {fields: text}}]}}}", "fields must be a list"),
        ("scenes: {d: {layers: {rank: [{name: r, params: {boost: 2}}]}}}", "unknown rank params boost"),
    ],
)
def test_arm_params_are_validated_when_the_config_loads(config, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(config, arm_validator())


def test_exact_ties_are_ordered_by_id_even_across_the_cut():
    hits = (("z", 0.5, [1, 0]), ("top", 0.9, [1, 0]), ("b", 0.50000001, [1, 0]), ("a", 0.49999999, [1, 0]))
    result = make_searcher(hits=hits, docs={}).search(request(top_k=2))
    assert [h["id"] for h in result["hits"]] == ["top", "a"]


def test_catalog_lists_collections_with_size_query_kinds_and_scene_arms():
    config = """
scenes:
  docs:
    layers:
      rank:
        - {name: truncate, ratio: 0.5}
        - {name: mmr, ratio: 0.5, params: {lambda: 0.7}}
"""
    catalog = make_searcher(config=config).search(request(query="", collection="", params={"catalog": True}))
    docs, photos = catalog["collections"]
    assert docs == {
        "name": "docs", "modality": "text", "size": 2, "queries": ["text"], "fields": ["category"],
        "text_field": "text", "scene": "docs",
        "layers": {"qp": ["baseline"], "match": ["baseline"], "rank": ["truncate", "mmr"], "summary": ["baseline"]},
    }
    assert (photos["name"], photos["modality"], photos["size"], photos["queries"]) == (
        "photos",
        "image",
        16,
        ["image", "text"],
    )
    assert photos["layers"]["rank"] == ["baseline"]  # no scene: the baseline arms


def test_catalog_reports_a_store_that_is_down():
    def down():
        raise StoreUnavailable("cannot connect to Milvus at http://x:19530: refused")

    searcher = Searcher(lambda *a: None, down, lambda: FakeDocuments({}))
    with pytest.raises(SearchError, match="cannot connect to Milvus"):
        searcher.search(request(params={"catalog": True}))


class CountingDocuments(FakeDocuments):
    def __init__(self, docs, reads):
        super().__init__(docs)
        self.reads = reads

    def get_many(self, collection, ids):
        self.reads.append((collection, sorted(ids)))
        return super().get_many(collection, ids)


def batch_searcher(embed_calls, search_calls, reads, config=None):
    docs = {"a": {"id": "a", "text": "A"}, "b": {"id": "b", "text": "B"}}

    def embed(model, input_name, payloads):
        if any(p == b"broken" for p in payloads):
            raise SearchError("clip_image_embed failed: not an image")
        embed_calls.append((model, input_name, list(payloads)))
        return np.array([[len(str(p)), 1.0, 0.0, 0.0] for p in payloads], dtype=np.float32)

    parsed = parse_config(config, arm_validator()) if config else None
    return Searcher(embed, lambda: FakeVectors(list(HITS), ("docs", "photos"), search_calls),
                    lambda: CountingDocuments(docs, reads), **({"experiments": lambda: parsed} if parsed else {}))


def test_a_batch_shares_one_embedding_call_one_milvus_search_and_one_document_read():
    embed_calls, search_calls, reads = [], [], []
    requests = [request(query=q) for q in ("one", "two", "three")] + [request(query="x", top_k=0)]
    outcomes = batch_searcher(embed_calls, search_calls, reads).search_many(requests)
    assert embed_calls == [("text_embed", "TEXT", ["one", "two", "three"])]
    assert [(call["nq"], call["limit"]) for call in search_calls] == [(3, 11)]
    assert reads == [("docs", ["a", "b"])]
    assert isinstance(outcomes[3], SearchError) and "TOP_K must be between 1 and 100" in str(outcomes[3])
    for query, outcome in zip(("one", "two", "three"), outcomes, strict=False):
        alone = batch_searcher([], [], []).search(request(query=query))
        assert (outcome["query"], outcome["hits"]) == (query, alone["hits"])
        assert outcome["experiments"] == alone["experiments"]


def test_requests_that_cannot_share_a_call_are_grouped():
    config = "scenes: {docs: {layers: {match: [{name: deep, params: {depth: 20}}]}}}"
    embed_calls, search_calls, reads = [], [], []
    requests = [request(query="a"), request(query="b", top_k=5), request(collection="photos", query="c"),
                request(collection="photos", query="", image=b"\x89PNG"),
                request(query="d", params={"filter": "category == 1"})]
    outcomes = batch_searcher(embed_calls, search_calls, reads, config).search_many(requests)
    assert all(isinstance(outcome, dict) for outcome in outcomes)
    assert sorted((model, len(payloads)) for model, _, payloads in embed_calls) == [
        ("clip_image_embed", 1), ("clip_text_embed", 1), ("text_embed", 3)]
    # docs at depth 20, with and without the filter; photos at depth 10 (an image and a text query share it)
    assert sorted((call["nq"], call["limit"], call["filter"]) for call in search_calls) == [
        (1, 21, "category == 1"), (2, 11, ""), (2, 21, "")]
    assert sorted(collection for collection, _ in reads) == ["docs", "photos"]


def test_an_unreadable_image_fails_only_its_own_request():
    embed_calls = []
    requests = [request(collection="photos", query="", image=b"broken"),
                request(collection="photos", query="", image=b"\x89PNG")]
    broken, fine = batch_searcher(embed_calls, [], []).search_many(requests)
    assert isinstance(broken, SearchError) and "not an image" in str(broken)
    assert [hit["id"] for hit in fine["hits"]] == ["a", "b"]
    assert embed_calls == [("clip_image_embed", "IMAGE", [b"\x89PNG"])]  # the batch failed, then one by one


@pytest.mark.parametrize("make, overrides", [
    (lambda: batch_searcher([], [], []), {"top_k": 0}),
    (lambda: batch_searcher([], [], []), {"collection": "photos", "query": "", "image": b"broken"}),
    (lambda: make_searcher(fail=True), {}),
], ids=["refused", "unreadable image", "store down"])
def test_a_failed_request_is_freed_without_the_garbage_collector(make, overrides):
    """A kept traceback holds the request in a cycle until a collection: in Triton each refused
    100 MB query held its 100 MB (and its input tensor) for good (issue 12)."""
    searcher = make()
    bad = request(**overrides)
    batch, gone = [bad, request(collection="photos", query="", image=b"\x89PNG")], weakref.ref(bad)
    gc.disable()
    try:
        outcomes = searcher.search_many(batch)
        assert isinstance(outcomes[0], SearchError)
        del bad, batch, outcomes
        assert gone() is None
    finally:
        gc.enable()


def test_a_tie_across_the_cut_asks_that_query_again_deeper():
    hits = [("top", 0.9, [1, 0])] + [(f"t{i:02d}", 0.5, [1, 0]) for i in range(30, 0, -1)]
    calls = []
    result = make_searcher(hits=hits, docs={}, calls=calls).search(request(top_k=3))
    assert [h["id"] for h in result["hits"]] == ["top", "t01", "t02"]  # all 30 ties seen, the lowest ids kept
    assert [call["limit"] for call in calls] == [4, 16, 40]
