"""Text search end to end: real tritonserver, real ONNX MiniLM, real Milvus, real document stores.

The Debian FAQ (package debian-faq) is the corpus: each section's answer is a document,
its heading the query. The served top-10 must equal the brute-force top-10 computed here
with sentence-transformers on the same texts, for each store configuration.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from mmsearch.client.metrics import evaluate
from mmsearch.client.search_client import ClientError, SearchClient
from mmsearch.export.text_encoder import default_text_model
from mmsearch.indexer.datasets import debian_faq, write_jsonl
from mmsearch.settings import StoreSettings
from mmsearch.stores import VectorStore, open_document_store

pytestmark = pytest.mark.integration
COLLECTION = "debian_faq"
TOP_K = 10


@pytest.fixture(scope="module")
def faq(tmp_path_factory):
    dataset = debian_faq()
    assert len(dataset.documents) >= 100
    path = write_jsonl(dataset.documents, tmp_path_factory.mktemp("faq") / "faq.jsonl")
    return dataset, path


@pytest.fixture(scope="module")
def brute_force(faq):
    """Exact top-10 per query from sentence-transformers (PyTorch) in this process."""
    from sentence_transformers import SentenceTransformer

    dataset, _ = faq
    model = SentenceTransformer(default_text_model(), device="cpu")
    ids = [doc["id"] for doc in dataset.documents]
    docs = model.encode([doc["answer"] for doc in dataset.documents], normalize_embeddings=True, batch_size=32)
    queries = model.encode([q["query"] for q in dataset.queries], normalize_embeddings=True, batch_size=32)
    scores = queries @ docs.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_K]
    return {
        q["query"]: [(ids[j], float(scores[i, j])) for j in top[i]] for i, q in enumerate(dataset.queries)
    }


STORES = ["embedded", "mongo", "milvus-server"]


@pytest.fixture(scope="module", params=STORES)
def served(request, tmp_path_factory, exported_repository, start_triton, faq, cli):
    """A Triton server over one store configuration, with the FAQ indexed through the CLI."""
    data_dir = tmp_path_factory.mktemp(f"data-{request.param}")
    milvus_uri = request.getfixturevalue("milvus_server").uri if request.param == "milvus-server" else None
    mongo_uri = request.getfixturevalue("mongo_server").uri if request.param == "mongo" else None
    settings = StoreSettings.resolve(data_dir, milvus_uri, mongo_uri)
    server = start_triton(exported_repository, settings)
    store_flags = ["--data-dir", str(data_dir)]
    if milvus_uri:
        store_flags += ["--milvus-uri", milvus_uri]
    if mongo_uri:
        store_flags += ["--mongo-uri", mongo_uri]
    url = f"localhost:{server.ports.grpc}"
    _, path = faq
    index_args = ["index", "--input", str(path), "--collection", COLLECTION, "--text-field", "answer", "--url", url,
                  "--recreate", *store_flags]
    first = cli(*index_args)
    return {"server": server, "settings": settings, "url": url, "flags": store_flags, "index_args": index_args,
            "first_index": first.stdout, "kind": request.param}


def test_served_top10_equals_brute_force(served, faq, brute_force):
    dataset, _ = faq
    client = SearchClient(served["url"], "grpc")
    runs, worst = [], 0.0
    for query in dataset.queries:
        result = client.search(query["query"], COLLECTION, TOP_K)
        served_hits = [(hit["id"], hit["score"]) for hit in result["hits"]]
        expected = brute_force[query["query"]]
        assert [h[0] for h in served_hits] == [e[0] for e in expected], query["query"]
        worst = max(worst, max(abs(s[1] - e[1]) for s, e in zip(served_hits, expected, strict=True)))
        assert all(hit["document"]["id"] == hit["id"] for hit in result["hits"])
        runs.append(([h[0] for h in served_hits], query["relevant"]))
    assert worst <= 1e-3
    scores = evaluate(runs)
    print(f"\n[{served['kind']}] {len(dataset.queries)} queries, max |score diff| {worst:.2e}: {json.dumps(scores)}")
    # A real model on real FAQ text: far above chance (1/147), or the pipeline is broken.
    assert scores["recall@10"] > 0.6 and scores["mrr"] > 0.4


def test_index_reports_counts_and_reindex_keeps_size(served, faq, cli):
    dataset, _ = faq
    n = len(dataset.documents)
    assert f"indexed {n} documents" in served["first_index"]
    assert f"collection now holds {n} vectors and {n} documents" in served["first_index"]
    again = cli(*[a for a in served["index_args"] if a != "--recreate"])
    assert f"collection now holds {n} vectors and {n} documents" in again.stdout
    settings = served["settings"]
    assert VectorStore(settings.connect_uri()).count(COLLECTION) == n
    store = open_document_store(settings)
    assert store.count(COLLECTION) == n
    store.close()


def test_http_and_grpc_return_identical_results(served, faq):
    server = served["server"]
    grpc_client = SearchClient(f"localhost:{server.ports.grpc}", "grpc")
    http_client = SearchClient(f"localhost:{server.ports.http}", "http")
    for query in faq[0].queries[:20]:
        a = grpc_client.search(query["query"], COLLECTION, 5)
        b = http_client.search(query["query"], COLLECTION, 5)
        assert a["hits"] == b["hits"]


BAD_REQUESTS = [
    (dict(query=""), "QUERY is empty"), (dict(query="   \n\t"), "QUERY is empty"),
    (dict(query="x" * 100_000), "limit is 2048"), (dict(top_k=0), "TOP_K must be between 1 and 100"),
    (dict(top_k=-3), "TOP_K must be between 1 and 100"), (dict(top_k=101), "TOP_K must be between 1 and 100"),
    (dict(collection="no_such_collection"), "unknown collection 'no_such_collection'"),
    (dict(collection=""), "COLLECTION is empty"),
    (dict(params={"nonsense": 1}), "unknown PARAMS keys: nonsense"),
]


# Request validation and the eval command do not depend on the stores: one configuration.
@pytest.mark.parametrize("served", ["embedded"], indirect=True)
@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bad_requests_get_clear_errors_and_server_keeps_serving(served, protocol):
    server = served["server"]
    port = server.ports.grpc if protocol == "grpc" else server.ports.http
    client = SearchClient(f"localhost:{port}", protocol)
    for overrides, message in BAD_REQUESTS:
        request = {"query": "how do I install Debian", "collection": COLLECTION, "top_k": 5} | overrides
        with pytest.raises(ClientError, match=message):
            client.search(**request)
        assert client.search("how do I install Debian", COLLECTION, 5)["hits"]


def test_fewer_hits_than_top_k_is_not_an_error(served, tmp_path, cli):
    small = tmp_path / "small.jsonl"
    small.write_text(
        "\n".join(json.dumps({"id": f"s{i}", "text": t}) for i, t in enumerate(["apt-get upgrade", "a cat"]))
    )
    cli("index", "--input", str(small), "--collection", "small", "--url", served["url"], *served["flags"])
    result = SearchClient(served["url"]).search("upgrade packages", "small", 50)
    assert [hit["id"] for hit in result["hits"]] == ["s0", "s1"]
    assert set(result["timings_ms"]) == {"embed", "match", "rank", "summary", "total"}


def test_cli_batch_search_prints_one_json_result_per_line(served, tmp_path, cli, faq):
    queries = tmp_path / "queries.jsonl"
    queries.write_text("\n".join(json.dumps({"query": q["query"]}) for q in faq[0].queries[:5]))
    out = cli(
        "search", "--queries", str(queries), "--collection", COLLECTION, "--json", "--top-k", "3", "--url",
        served["url"],
    )
    lines = [json.loads(line) for line in out.stdout.splitlines()]
    assert [line["query"] for line in lines] == [q["query"] for q in faq[0].queries[:5]]
    assert all(len(line["hits"]) == 3 for line in lines)


@pytest.mark.parametrize("served", ["embedded"], indirect=True)
def test_eval_command_reports_metrics(served, tmp_path, cli, faq):
    queries = write_jsonl(faq[0].queries, tmp_path / "judged.jsonl")
    out = cli("eval", "--queries", str(queries), "--collection", COLLECTION, "--json", "--url", served["url"])
    scores = json.loads(out.stdout)
    assert scores["queries"] == len(faq[0].queries)
    assert 0 < scores["recall@1"] <= scores["recall@5"] <= scores["recall@10"] <= 1


@pytest.mark.parametrize("served", ["mongo"], indirect=True)
def test_document_store_down_is_a_clear_error_and_recovers(served, mongo_server):
    client = SearchClient(served["url"])
    assert client.search("what is Debian", COLLECTION, 3)["hits"]
    mongo_server.stop()
    try:
        with pytest.raises(ClientError, match="document store .* failed to read"):
            client.search("what is Debian", COLLECTION, 3)
    finally:
        mongo_server.start()
    result = client.search("what is Debian", COLLECTION, 3)
    assert result["hits"] and result["hits"][0]["document"] is not None
