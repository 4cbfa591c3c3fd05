"""`mmsearch bench`: parts (a) to (e) in one run, each compared with its baseline from the same run."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from mmsearch.client.bench import BENCH_COLLECTION, CONCURRENCY, TOP_K
from mmsearch.client.bench.baselines import http_load, start_naive_service
from mmsearch.client.bench.perf_analyzer import perf_rows, require_perf_analyzer
from mmsearch.client.bench.raw import measure_raw
from mmsearch.client.bench.report import Row, write_report
from mmsearch.model_repository import contract as c
from mmsearch.processes import free_port
from mmsearch.settings import StoreSettings
from mmsearch.tritonserver import Ports, TritonServer

INDEX_COPIES = 3
NAIVE = "naive HTTP + sentence-transformers + Milvus"

Progress = Callable[[str], None]


@dataclass
class BenchOptions:
    repository: Path
    seconds: float = 5.0  # perf_analyzer measurement window; (a) and (b) run 3x as long
    levels: tuple[int, ...] = CONCURRENCY
    cores: int = os.cpu_count() or 1
    milvus_uri: str | None = None  # default: Milvus Lite; (b) and (d) always share one Milvus
    mongo_uri: str | None = None  # default: the embedded document store
    out: Path = Path("bench-results")
    scale: int | None = None  # instead: search over this many random vectors
    store: str = "server"  # with scale: milvus-server or Milvus Lite
    index_type: str = "IVF_FLAT"  # with scale


@dataclass
class Workload:
    """The Debian FAQ: its headings are the queries, its answers (three copies, fresh ids) the documents."""

    queries: list[str]
    documents: list[dict]

    @classmethod
    def load(cls) -> Workload:
        from mmsearch.indexer.datasets import debian_faq

        faq = debian_faq()
        # (e) and its baseline index the FAQ three times over (441 documents), so that the last,
        # partly filled batches weigh little in either.
        documents = [{**doc, "id": f"{doc['id']}#{copy}"} for copy in range(INDEX_COPIES) for doc in faq.documents]
        return cls([q["query"] for q in faq.queries], documents)


def bench(options: BenchOptions, command: str, progress: Progress = print) -> Path:
    """Run the bench (or the scale run), write bench[-scale].md and .json; returns the markdown."""
    from mmsearch.client.bench.scale import run_scale
    from mmsearch.export.build import ensure_text_repository

    ensure_text_repository(options.repository)
    top = max(options.levels)
    if options.scale:
        rows, memory = run_scale(options.repository, options.scale, options.store, options.index_type, options.seconds,
                                 options.levels, Workload.load().queries, progress)
        return write_report(rows, options.out, command, top, memory, name="bench-scale")[0]
    return write_report(run_bench(options, progress), options.out, command, top)[0]


def run_bench(options: BenchOptions, progress: Progress = print) -> list[Row]:
    require_perf_analyzer()
    workload = Workload.load()
    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-") as scratch:
        work = Path(scratch)
        settings = StoreSettings.resolve(work / "data", options.milvus_uri, options.mongo_uri)
        progress("(a) raw onnxruntime in this process")
        raw_rows, query_limit, docs_limit = measure_raw(options.repository, options.cores, workload.queries,
                                                        [d["answer"] for d in workload.documents], options.seconds * 3)
        served = measure_served(options, settings, workload, work, progress)
        served.index.compare(docs_limit)
        for row in served.embed:
            row.compare(query_limit)
        for row, naive in zip(served.search, served.naive, strict=True):
            row.compare(naive)
        off = measure_without_batching(options, settings, workload.queries, work, progress)
        off.compare(next(row for row in served.embed if row.concurrency == off.concurrency))
    return [*raw_rows, served.index, *served.embed, *served.naive, *served.search, off]


@dataclass
class Served:
    index: Row
    embed: list[Row]
    search: list[Row]
    naive: list[Row]


def measure_served(options: BenchOptions, settings: StoreSettings, workload: Workload, work: Path,
                   progress: Progress) -> Served:
    """(e), (c) and (d) through one Triton, then (b) against the collection (e) wrote."""
    from mmsearch.client.search_client import SearchClient
    from mmsearch.indexer.datasets import write_jsonl
    from mmsearch.indexer.pipeline import IndexOptions
    from mmsearch.indexer.run import run_index

    corpus = write_jsonl(workload.documents, work / "faq.jsonl")
    server = TritonServer(options.repository, settings, Ports(free_port(), free_port(), free_port())).start()
    url = f"localhost:{server.ports.grpc}"
    try:
        progress("(e) indexing through Triton")
        with SearchClient(url) as client:
            report = run_index(
                client,
                settings,
                corpus,
                IndexOptions(BENCH_COLLECTION, text_field="answer", recreate=True),
                progress=False,
            )
        index = Row(
            "e", f"mmsearch index ({report.written} docs, batch 32, 4 in flight)", None, report.docs_per_s, "docs/s"
        )
        text_data = [{c.TEXT: [q]} for q in workload.queries]
        search_data = [{c.QUERY: [q], c.COLLECTION: [BENCH_COLLECTION], c.TOP_K: [TOP_K]} for q in workload.queries]
        embed = perf_rows("c", c.TEXT_TOWER.embed, "Triton text_embed (perf_analyzer)", url, text_data, options.levels,
                          work, options.seconds, progress)
        search = perf_rows("d", c.SEARCH, "Triton search (perf_analyzer)", url, search_data, options.levels, work,
                           options.seconds, progress)
        naive = measure_naive(options, settings, workload.queries, work, progress)
    finally:
        server.stop()
    return Served(index, embed, search, naive)


def measure_naive(options: BenchOptions, settings: StoreSettings, queries: Sequence[str], work: Path,
                  progress: Progress) -> list[Row]:
    progress("(b) naive service: starting")
    naive, naive_url = start_naive_service(source_model(options.repository), settings, work / "naive.log")
    try:
        payloads = [{"query": q, "collection": BENCH_COLLECTION, "top_k": TOP_K} for q in queries]
        rows = []
        for concurrency in options.levels:
            progress(f"(b) naive service, concurrency {concurrency}")
            http_load(naive_url, payloads[:8], 1, 2, NAIVE)  # warm-up
            rows.append(http_load(naive_url, payloads, concurrency, options.seconds * 3, NAIVE))
    finally:
        naive.stop()
    return rows


def measure_without_batching(options: BenchOptions, settings: StoreSettings, queries: Sequence[str], work: Path,
                             progress: Progress) -> Row:
    progress("(c) text_embed without dynamic batching")
    tower = c.TEXT_TOWER
    plain = without_dynamic_batching(options.repository, work / "no-batching", [tower.tokenizer, tower.encoder])
    server = TritonServer(plain, settings, Ports(free_port(), free_port(), free_port())).start()
    try:
        return perf_rows("c", tower.embed, "Triton text_embed, dynamic batching off", f"localhost:{server.ports.grpc}",
                         [{c.TEXT: [q]} for q in queries], [max(options.levels)], work, options.seconds, progress)[0]
    finally:
        server.stop()


def without_dynamic_batching(repository: Path, target: Path, models: Sequence[str]) -> Path:
    """A copy of the repository whose `models` run every request on its own."""
    from mmsearch.export import triton_config

    shutil.copytree(repository, target)
    for name in models:
        config = triton_config.parse((target / name / "config.pbtxt").read_text())
        config.ClearField("dynamic_batching")
        triton_config.write(config, target / name)
    return target


def source_model(repository: Path) -> str:
    """The sentence-transformers model the repository's text encoder was exported from."""
    record = repository / c.TEXT_TOWER.encoder / "1" / "export.json"
    if record.exists():
        return json.loads(record.read_text())["source"]
    from mmsearch.export.text_encoder import default_text_model

    return default_text_model()

