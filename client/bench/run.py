"""`mmsearch bench`: parts (a) to (f) in one run, each compared with its baseline from the same run."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from mmsearch.client.bench import BENCH_COLLECTION, CONCURRENCY, TOP_K
from mmsearch.client.bench.baselines import http_load, start_service
from mmsearch.client.bench.perf_analyzer import perf_rows, require_perf_analyzer
from mmsearch.client.bench.raw import measure_raw
from mmsearch.client.bench.report import Row, write_report
from mmsearch.model_repository import contract as c
from mmsearch.processes import free_port
from mmsearch.settings import StoreSettings
from mmsearch.tritonserver import Ports, TritonServer

INDEX_COPIES = 3
INDEX_COLLECTION = "bench_index"  # (e) writes the FAQ three times over here
SEARCH = "Triton search (perf_analyzer)"
NAIVE, NAIVE_SERVICE = "naive HTTP + sentence-transformers + Milvus", "mmsearch.client.bench.naive_service"
COMPETENT = "async HTTP + onnxruntime (a 1-thread session per core) + Milvus"
COMPETENT_SERVICE = "mmsearch.client.bench.onnx_service"

Progress = Callable[[str], None]


@dataclass
class BenchOptions:
    repository: Path
    seconds: float = 5.0  # perf_analyzer measurement window; (a), (b) and (f) run 3x as long
    levels: tuple[int, ...] = CONCURRENCY
    cores: int = os.cpu_count() or 1
    milvus_server: str | None = None  # for the server-store rows; default: start milvus-server from the wheel
    mongo_uri: str | None = None  # default: the embedded document store
    out: Path = Path("bench-results")
    scale: int | None = None  # instead: search over this many random vectors
    store: str | None = None  # milvus-server or Milvus Lite; default: a server with scale, Milvus Lite with profile
    index_types: tuple[str, ...] = ()  # with scale; default IVF_FLAT and HNSW on a server, FLAT in Milvus Lite
    vectors: str = "fitted"  # with scale: fitted to real embeddings, or uniform on the sphere
    profile: bool = False  # instead: where the CPU of a search goes, at the top concurrency


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
    from mmsearch.client.bench.scale import run_scale, scale_markdown
    from mmsearch.export.build import ensure_text_repository

    ensure_text_repository(options.repository)
    top = max(options.levels)
    if options.profile:
        return write_profile(options, command, progress)
    if options.scale:
        store = options.store or "server"
        index_types = options.index_types or (("IVF_FLAT", "HNSW") if store == "server" else ("FLAT",))
        queries, fit_texts = scale_texts()
        rows, report = run_scale(options.repository, options.scale, store, index_types, options.seconds,
                                 options.levels, queries, fit_texts if options.vectors == "fitted" else (),
                                 options.milvus_server, progress)
        return write_report(rows, options.out, command, top, asdict(report) | {"insert_rate": report.insert_rate},
                            name="bench-scale", section=scale_markdown(report))[0]
    return write_report(run_bench(options, progress), options.out, command, top)[0]


def scale_texts() -> tuple[list[str], list[str]]:
    """200 real queries (the FAQ headings, then chatterbot questions), and the texts whose
    embeddings the synthetic vectors are fitted to (the chatterbot and FAQ answers)."""
    from mmsearch.client.bench.scale import RECALL_QUERIES
    from mmsearch.indexer.datasets import chatterbot_english

    workload, chat = Workload.load(), chatterbot_english()
    queries = (workload.queries + [d["question"] for d in chat])[:RECALL_QUERIES]
    unique = workload.documents[: len(workload.documents) // INDEX_COPIES]
    return queries, [d["answer"] for d in chat] + [d["answer"] for d in unique]


def write_profile(options: BenchOptions, command: str, progress: Progress) -> Path:
    from mmsearch.client.bench.profile import profile_markdown, run_profile
    from mmsearch.client.bench.report import machine_description

    workload = Workload.load()
    profile = run_profile(options.repository, max(options.levels), options.seconds, workload.queries,
                          workload.documents[: len(workload.documents) // INDEX_COPIES], options.store or "lite",
                          progress=progress)
    options.out.mkdir(parents=True, exist_ok=True)
    markdown = options.out / "profile.md"
    markdown.write_text(f"{machine_description()}\n\n{profile_markdown(profile)}\n\nMade by `{command}`.\n")
    (options.out / "profile.json").write_text(json.dumps(asdict(profile), indent=2) + "\n")
    return markdown


def run_bench(options: BenchOptions, progress: Progress = print) -> list[Row]:
    require_perf_analyzer()
    workload = Workload.load()
    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-") as scratch:
        work = Path(scratch)
        settings = StoreSettings.resolve(work / "data", None, options.mongo_uri)
        progress("(a) raw onnxruntime in this process")
        raw_rows, query_limit, docs_limit = measure_raw(options.repository, options.cores, workload.queries,
                                                        [d["answer"] for d in workload.documents], options.seconds * 3)
        lite = measure_served(options, settings, workload, work, progress)
        server = measure_on_milvus_server(options, workload, work, progress)
        off = measure_without_batching(options, settings, workload.queries, work, progress)
    lite.index.compare(docs_limit)
    for row in lite.embed:
        row.compare(query_limit)
    for row, naive in zip(lite.search, lite.naive, strict=True):
        row.compare(naive)
    for row, on_lite in zip(server, lite.search, strict=True):
        row.compare(on_lite)
    off.compare(next(row for row in lite.embed if row.concurrency == off.concurrency))
    return [*raw_rows, lite.index, *lite.embed, *lite.naive, *lite.competent, *lite.search, *server, off]


@dataclass
class Served:
    index: Row
    embed: list[Row]
    search: list[Row]
    naive: list[Row]
    competent: list[Row]


def index_workload(url: str, settings: StoreSettings, workload: Workload, work: Path) -> Row:
    """(e) the FAQ three times over into one collection (indexing throughput), then the 147
    unique answers into the collection every search part uses."""
    from mmsearch.client.search_client import SearchClient
    from mmsearch.indexer.datasets import write_jsonl
    from mmsearch.indexer.pipeline import IndexOptions
    from mmsearch.indexer.run import run_index

    copies = write_jsonl(workload.documents, work / "faq-copies.jsonl")
    unique = write_jsonl(workload.documents[: len(workload.documents) // INDEX_COPIES], work / "faq.jsonl")
    with SearchClient(url) as client:
        report = run_index(client, settings, copies, IndexOptions(INDEX_COLLECTION, text_field="answer", recreate=True),
                           progress=False)
        run_index(client, settings, unique, IndexOptions(BENCH_COLLECTION, text_field="answer", recreate=True),
                  progress=False)
    return Row("e", f"mmsearch index ({report.written} docs, batch 32, 4 in flight)", None, report.docs_per_s, "docs/s")


def search_data(queries: Sequence[str]) -> list[dict]:
    return [{c.QUERY: [q], c.COLLECTION: [BENCH_COLLECTION], c.TOP_K: [TOP_K]} for q in queries]


def measure_served(options: BenchOptions, settings: StoreSettings, workload: Workload, work: Path,
                   progress: Progress) -> Served:
    """(e), (c) and (d) through one Triton on Milvus Lite, then (b) and (f) on the same collection."""
    server = TritonServer(options.repository, settings, Ports(free_port(), free_port(), free_port())).start()
    url = f"localhost:{server.ports.grpc}"
    try:
        progress("(e) indexing through Triton")
        index = index_workload(url, settings, workload, work)
        text_data = [{c.TEXT: [q]} for q in workload.queries]
        embed = perf_rows("c", c.TEXT_TOWER.embed, "Triton text_embed (perf_analyzer)", url, text_data, options.levels,
                          work, options.seconds, progress)
        search = perf_rows("d", c.SEARCH, SEARCH, url, search_data(workload.queries), options.levels, work,
                           options.seconds, progress)
        naive = measure_service("b", NAIVE, NAIVE_SERVICE, ["--model", source_model(options.repository)], options,
                                settings, workload.queries, work, progress)
        competent = measure_service("f", COMPETENT, COMPETENT_SERVICE, ["--repository", str(options.repository)],
                                    options, settings, workload.queries, work, progress)
    finally:
        server.stop()
    return Served(index, embed, search, naive, competent)


def measure_service(part: str, system: str, module: str, extra: list[str], options: BenchOptions,
                    settings: StoreSettings, queries: Sequence[str], work: Path, progress: Progress) -> list[Row]:
    progress(f"({part}) {system}: starting")
    process, url = start_service(module, extra, settings, work / f"{part}.log")
    try:
        payloads = [{"query": q, "collection": BENCH_COLLECTION, "top_k": TOP_K} for q in queries]
        rows = []
        for concurrency in options.levels:
            progress(f"({part}) {system}, concurrency {concurrency}")
            http_load(url, payloads[:8], 1, 2, part, system)  # warm-up
            rows.append(http_load(url, payloads, concurrency, options.seconds * 3, part, system))
    finally:
        process.stop()
    return rows


def measure_on_milvus_server(options: BenchOptions, workload: Workload, work: Path, progress: Progress) -> list[Row]:
    """(d) again, with the vectors in a milvus-server (the given one, or one started from the wheel)."""
    from mmsearch.milvus_servers import start_milvus_server

    milvus, uri = None, options.milvus_server
    if uri is None:
        progress("starting milvus-server")
        milvus, uri = start_milvus_server(work / "milvus", work / "milvus-server.log")
    settings = StoreSettings.resolve(work / "server-data", uri, options.mongo_uri)
    try:
        server = TritonServer(options.repository, settings, Ports(free_port(), free_port(), free_port())).start()
        try:
            url = f"localhost:{server.ports.grpc}"
            index_workload(url, settings, Workload([], workload.documents[: len(workload.documents) // INDEX_COPIES]),
                           work)
            return perf_rows("d", c.SEARCH, SEARCH + ", milvus-server store", url, search_data(workload.queries),
                             options.levels, work, options.seconds, progress)
        finally:
            server.stop()
    finally:
        if milvus:
            milvus.stop()


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
