"""`mmsearch bench --scale N`: N vectors in Milvus, measured once the store has settled.

1. Bulk load: N synthetic unit vectors inserted into a new collection that has no index yet, then
   flushed and compacted (the run waits for the compaction job to complete).
2. Per index type: build it, then wait until Milvus reports every row indexed and none pending,
   load, and wait until the Milvus processes use under 5% of a core for 5 s (background work
   such as compaction has settled). Only then is anything measured.
3. Recall@10 of the ANN search against exact search (numpy over the same vectors) on 200 real
   queries (embedded by text_embed), per ef / nprobe setting, with each search's latency
   (nq = 1, from this process, one at a time).
4. `search` through Triton at top-k 10 and each concurrency (perf_analyzer), with the cheapest
   setting whose recall@10 is at least 0.95; its match stage from the model's own histogram.
5. Insert rate, build time and the RSS of every process.

The vectors: N real embeddings cannot be made on these machines in reasonable time, so they are
drawn from a Gaussian fitted to ~2,200 real ones (chatterbot and Debian FAQ answers; the queries
are other texts) unless `uniform` asks for points uniform on the sphere. Uniform vectors have no
structure at all: every point is nearly as far as every other, the worst case for an ANN index.
"""

from __future__ import annotations

import json
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsearch.client.bench import TOP_K, BenchError
from mmsearch.client.bench.accounting import by_role, cpu_seconds, process_roles, rss_mib
from mmsearch.client.bench.perf_analyzer import perf_rows, require_perf_analyzer
from mmsearch.client.bench.report import Row, percentiles_ms
from mmsearch.client.bench.triton_stats import histogram_delta, quantile, stage_histograms
from mmsearch.model_repository import contract as c
from mmsearch.processes import free_port
from mmsearch.settings import StoreSettings
from mmsearch.stores import VectorStore
from mmsearch.tritonserver import Ports, TritonServer

SCALE_COLLECTION = "bench_scale"
INSERT_BATCH = 10_000
SEED = 0
RECALL_QUERIES = 200
RECALL_GOAL = 0.95
SETTLED_CPU = 0.05  # of one core
SETTLED_WINDOW_S = 5.0
# The knob each index type trades recall for speed with, and the values measured.
SEARCH_SETTINGS = {"FLAT": ("", (None,)), "IVF_FLAT": ("nprobe", (8, 16, 32, 64, 128, 256)),
                   "HNSW": ("ef", (16, 32, 64, 128, 256, 512))}
Progress = Callable[[str], None]


@dataclass
class ScaleReport:
    vectors: int
    dim: int
    store: str
    vectors_kind: str = "fitted"  # fitted to real embeddings, or uniform on the sphere
    insert_s: float = 0.0
    compaction_s: float = 0.0
    build_s: dict[str, float] = field(default_factory=dict)  # index type -> build + settle seconds
    recall: list[dict] = field(default_factory=list)  # index, setting, recall@10, p50/p99 ms
    chosen: dict[str, str] = field(default_factory=dict)  # index type -> match arm measured end to end
    match_ms: dict[str, dict] = field(default_factory=dict)  # arm -> {concurrency: {p50, p99}} of timings_ms.match
    rss_mib: dict[str, float] = field(default_factory=dict)  # process -> resident memory

    @property
    def insert_rate(self) -> float:
        return self.vectors / self.insert_s if self.insert_s else 0.0


def arm_name(index_type: str, value) -> str:
    knob = SEARCH_SETTINGS[index_type][0]
    return index_type.lower() if value is None else f"{index_type.lower()}-{knob}{value}"


def synthetic_vectors(count: int, dim: int, sample: np.ndarray | None) -> np.ndarray:
    """The collection's vectors, the same every run (unit length, float32).

    With `sample` (real embeddings): drawn from a Gaussian with the sample's mean and covariance,
    so they share real embeddings' anisotropy (MiniLM's effective dimension is about 19 of 384)
    with no knob to tune. Without: uniform on the sphere, which has no structure at all and is
    the worst case for an ANN index."""
    rng = np.random.default_rng(SEED)
    if sample is not None:
        mean, root = sample.mean(axis=0), np.linalg.cholesky(np.cov(sample, rowvar=False) + 1e-6 * np.eye(dim))
    data = np.empty((count, dim), dtype=np.float32)
    for start in range(0, count, INSERT_BATCH):
        block = rng.standard_normal((min(INSERT_BATCH, count - start), dim))
        block = block if sample is None else mean + block @ root.T
        data[start:start + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return data


def bulk_load(vectors: VectorStore, documents, data: np.ndarray, report: ScaleReport, progress: Progress) -> None:
    """Plain inserts into a new collection without an index (no delete records, nothing to
    index while loading), then flush and a compaction that is waited for."""
    from tqdm import tqdm

    vectors.drop(SCALE_COLLECTION)
    documents.drop(SCALE_COLLECTION)
    vectors.ensure_collection(SCALE_COLLECTION, c.CollectionInfo.for_index("text", data.shape[1], "title"), None)
    started = time.perf_counter()
    for start in tqdm(range(0, len(data), INSERT_BATCH), desc=f"inserting {len(data):,} vectors", disable=None):
        block = data[start:start + INSERT_BATCH]
        docs = [{"id": f"v{start + i}", "title": f"synthetic vector {start + i}"} for i in range(len(block))]
        vectors.upsert(SCALE_COLLECTION, [d["id"] for d in docs], block, docs, skip={"title"}, fresh=True)
        documents.upsert(SCALE_COLLECTION, docs)
    vectors.flush(SCALE_COLLECTION)
    report.insert_s = time.perf_counter() - started
    progress(f"inserted {len(data):,} vectors in {report.insert_s:.0f} s; compacting")
    started = time.perf_counter()
    job = vectors.compact(SCALE_COLLECTION)
    while vectors.compaction_state(job) != "Completed":
        time.sleep(1)
    report.compaction_s = time.perf_counter() - started


def wait_until_settled(cpu_seconds: Callable[[], float], progress: Progress, timeout_s: float = 1800) -> None:
    """Until the store's processes use under SETTLED_CPU of a core over SETTLED_WINDOW_S."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        before = cpu_seconds()
        time.sleep(SETTLED_WINDOW_S)
        busy = (cpu_seconds() - before) / SETTLED_WINDOW_S
        if busy < SETTLED_CPU:
            return
        progress(f"store still busy ({busy:.0%} of a core); waiting")
    raise BenchError(f"the vector store did not settle within {timeout_s:.0f} s")


def build(vectors: VectorStore, index_type: str, rows: int, cpu_seconds: Callable[[], float] | None,
          progress: Progress) -> float:
    """Build the index and wait until it covers every row and the store is idle; seconds taken."""
    started = time.perf_counter()
    vectors.build_index(SCALE_COLLECTION, index_type)
    while True:
        state = vectors.index_progress(SCALE_COLLECTION)
        if state.get("indexed_rows", 0) >= rows and not state.get("pending_index_rows", 0):
            break
        time.sleep(2)
    vectors.load(SCALE_COLLECTION)
    if vectors.count(SCALE_COLLECTION, consistency="Strong") != rows:
        raise BenchError(f"{SCALE_COLLECTION} does not hold the {rows} vectors inserted")
    if cpu_seconds is None:
        progress("the Milvus server was not started by this bench: its CPU is not watched, nor waited on to settle")
    else:
        wait_until_settled(cpu_seconds, progress)
    return time.perf_counter() - started


def exact_top(data: np.ndarray, queries: np.ndarray, k: int = TOP_K) -> list[set[int]]:
    """The true top k of each query by inner product, by brute force."""
    found = []
    for query in queries:
        scores = data @ query
        found.append(set(np.argpartition(-scores, k)[:k].tolist()))
    return found


def recall_rows(vectors: VectorStore, index_type: str, queries: np.ndarray, truth: list[set[int]]) -> list[dict]:
    knob, values = SEARCH_SETTINGS[index_type]
    rows = []
    for value in values:
        latencies, recalls = [], []
        for query, true in zip(queries, truth, strict=True):
            t0 = time.perf_counter()
            hits = vectors.search(SCALE_COLLECTION, query, TOP_K, search_params={knob: value} if knob else None)
            latencies.append(time.perf_counter() - t0)
            recalls.append(len({int(hit.id[1:]) for hit in hits} & true) / TOP_K)
        p50, _, p99 = percentiles_ms(latencies)
        rows.append({"index": index_type, "arm": arm_name(index_type, value),
                     "setting": f"{knob}={value}" if knob else "exact", "recall@10": round(float(np.mean(recalls)), 4),
                     "p50_ms": round(p50, 2), "p99_ms": round(p99, 2)})
    return rows


def experiments_file(path: Path, index_types: Sequence[str]) -> Path:
    """One match arm per index setting, forced per request (PARAMS experiments)."""
    arms = [{"name": arm_name(index_type, value), "params": {"search_params": {knob: value}} if knob else {}}
            for index_type in index_types for knob, values in [SEARCH_SETTINGS[index_type]] for value in values]
    for arm in arms:
        arm["ratio"] = 1 / len(arms)
    path.write_text(json.dumps({"scenes": {SCALE_COLLECTION: {"layers": {"match": arms}}}}))
    return path


def measure_search(server: TritonServer, arm: str, texts: Sequence[str], where: str, levels: Sequence[int],
                   seconds: float, work: Path, report: ScaleReport, progress: Progress) -> list[Row]:
    """`search` at each concurrency with `arm` forced; its match stage from the model's histogram."""
    params = json.dumps({"experiments": {"match": arm}})
    data = [{c.QUERY: [t], c.COLLECTION: [SCALE_COLLECTION], c.TOP_K: [TOP_K], c.PARAMS: [params]} for t in texts]
    rows = []
    for level in levels:
        before = stage_histograms(server.ports.metrics)
        rows += perf_rows("scale", c.SEARCH, f"search top-{TOP_K}, {where}, {arm}", f"localhost:{server.ports.grpc}",
                          data, [level], work, seconds, progress)
        match = histogram_delta(before, stage_histograms(server.ports.metrics)).get("match")
        if match:
            report.match_ms.setdefault(arm, {})[str(level)] = {
                "p50": round(quantile(match, 0.5), 2), "p99": round(quantile(match, 0.99), 2)}
    return rows


def load_and_measure(server: TritonServer, store_pid: int | None, index_types: Sequence[str], report: ScaleReport,
                     texts: Sequence[str], fit_texts: Sequence[str], levels: Sequence[int], seconds: float, work: Path,
                     progress: Progress) -> list[Row]:
    from mmsearch.client.search_client import SearchClient
    from mmsearch.stores import open_document_store

    with SearchClient(f"localhost:{server.ports.grpc}") as client:
        queries = client.embed_texts(list(texts[:RECALL_QUERIES]))
        sample = client.embed_texts(list(fit_texts)) if report.vectors_kind == "fitted" else None
    data = synthetic_vectors(report.vectors, report.dim, sample)
    vectors, documents = VectorStore.open(server.settings), open_document_store(server.settings)
    def store_cpu() -> float:
        return sum(by_role(process_roles({store_pid: "store"}), cpu_seconds).values())

    where = f"{report.vectors:,} × {report.dim} in {'milvus-server 2.3' if report.store == 'server' else 'Milvus Lite'}"
    rows = []
    try:
        bulk_load(vectors, documents, data, report, progress)
        truth = exact_top(data, queries)
        del data  # 1.5 GB at 1M × 384; not needed past the exact search
        for index_type in index_types:
            progress(f"building {index_type} and waiting for the store to settle")
            watch = store_cpu if store_pid is not None else None
            report.build_s[index_type] = round(build(vectors, index_type, report.vectors, watch, progress), 1)
            recall = recall_rows(vectors, index_type, queries, truth)
            report.recall += recall
            good = [r for r in recall if r["recall@10"] >= RECALL_GOAL] or [max(recall, key=lambda r: r["recall@10"])]
            report.chosen[index_type] = good[0]["arm"]
            rows += measure_search(server, good[0]["arm"], texts, f"{where} ({index_type})", levels, seconds, work,
                                   report, progress)
    finally:
        documents.close()
        vectors.close()
    return rows


def run_scale(repository: Path, count: int, store: str, index_types: Sequence[str], seconds: float,
              levels: Sequence[int], texts: Sequence[str], fit_texts: Sequence[str] = (),
              milvus_server: str | None = None, progress: Progress = print) -> tuple[list[Row], ScaleReport]:
    """Search at scale through the `search` model, over `count` synthetic vectors in a Milvus
    server (the given one, or one started from the wheel) or in Milvus Lite."""
    from mmsearch.client.search_client import SearchClient
    from mmsearch.milvus_servers import start_milvus_server

    require_perf_analyzer()
    with tempfile.TemporaryDirectory(prefix="mmsearch-scale-") as scratch:
        work, milvus, uri = Path(scratch), None, milvus_server
        if store == "server" and uri is None:
            progress("starting milvus-server")
            milvus, uri = start_milvus_server(work / "milvus", work / "milvus-server.log")
        settings = StoreSettings.resolve(work / "data", uri if store == "server" else None)
        experiments = experiments_file(work / "experiments.yaml", index_types)
        server = TritonServer(repository, settings, Ports(free_port(), free_port(), free_port()), experiments).start()
        try:
            with SearchClient(f"localhost:{server.ports.grpc}") as client:
                report = ScaleReport(count, client.embedding_dim(), store, "fitted" if fit_texts else "uniform")
            store_pid = (milvus or server.milvus).process.pid if (milvus or server.milvus) else None
            rows = load_and_measure(server, store_pid, index_types, report, texts, fit_texts, levels, seconds, work,
                                    progress)
            groups = {server.triton.process.pid: "tritonserver", **({store_pid: f"{store} store"} if store_pid else {})}
            roles = process_roles(groups)
            counts = Counter(roles.values())
            report.rss_mib = {role + (f" ×{counts[role]}" if counts[role] > 1 else ""): round(mib)
                              for role, mib in by_role(roles, rss_mib).most_common()}
        finally:
            server.stop()
            if milvus:
                milvus.stop()
    return rows, report


def scale_markdown(report: ScaleReport) -> str:
    kind = "vectors fitted to real embeddings" if report.vectors_kind == "fitted" else "random unit vectors"
    lines = [f"{report.vectors:,} {kind} × {report.dim} in "
             f"{'milvus-server 2.3.5' if report.store == 'server' else 'Milvus Lite'}: inserted in "
             f"{report.insert_s:.0f} s ({report.insert_rate:,.0f} vectors/s), compacted in "
             f"{report.compaction_s:.0f} s.",
             "", "| index | setting | recall@10 | search p50 ms | search p99 ms | index build + settle s |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r['index']} | {r['setting']} | {r['recall@10']:.3f} | {r['p50_ms']:.2f} | {r['p99_ms']:.2f} | "
              f"{report.build_s.get(r['index'], '')} |" for r in report.recall]
    lines += ["", "Match stage of `search` (timings_ms.match, from the model's histogram), by concurrency:", ""]
    lines += [f"- {arm}: " + ", ".join(f"c={level} p50 {m['p50']} ms, p99 {m['p99']} ms" for level, m in levels.items())
              for arm, levels in report.match_ms.items()]
    lines += ["", "Resident memory: " + ", ".join(f"{role} {mib:,.0f} MiB" for role, mib in report.rss_mib.items())]
    return "\n".join(lines)
