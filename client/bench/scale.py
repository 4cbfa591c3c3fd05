"""`mmsearch bench --scale N`: search latency and memory over N random vectors in Milvus."""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from mmsearch.client.bench import TOP_K, BenchError
from mmsearch.client.bench.perf_analyzer import perf_rows, require_perf_analyzer
from mmsearch.client.bench.report import Row
from mmsearch.milvus_servers import start_milvus_server
from mmsearch.model_repository.contract import COLLECTION, PARAMS, QUERY, CollectionInfo
from mmsearch.model_repository.contract import TOP_K as TOP_K_TENSOR
from mmsearch.processes import free_port
from mmsearch.settings import StoreSettings
from mmsearch.tritonserver import Ports, TritonServer

SCALE_COLLECTION = "bench_scale"
SCALE_NPROBE = 16
SCALE_CONSISTENCY = ("Strong", "Bounded")
INSERT_BATCH = 10_000


def process_group_rss_mib(pid: int) -> float:
    """Resident memory of a process and everything in its process group (Linux /proc)."""
    group, total_kib = os.getpgid(pid), 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if os.getpgid(int(status.parent.name)) != group:
                continue
            total_kib += next(
                int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS:")
            )
        except (OSError, StopIteration, ValueError):
            continue
    return total_kib / 1024


def fill_random(
    settings: StoreSettings, count: int, dim: int, index_type: str, progress: Callable[[str], None]
) -> float:
    """`count` random unit vectors (and a small document each); returns the seconds it took."""
    from tqdm import tqdm

    from mmsearch.stores import VectorStore, open_document_store

    vectors, documents = VectorStore.open(settings), open_document_store(settings)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    try:
        vectors.drop(SCALE_COLLECTION)
        documents.drop(SCALE_COLLECTION)
        vectors.ensure_collection(SCALE_COLLECTION, CollectionInfo.for_index("text", dim, "title"), index_type)
        for start in tqdm(range(0, count, INSERT_BATCH), desc=f"inserting {count:,} vectors", unit_scale=INSERT_BATCH,
                          disable=None):
            size = min(INSERT_BATCH, count - start)
            block = rng.standard_normal((size, dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            docs = [{"id": f"v{i}", "title": f"random vector {i}"} for i in range(start, start + size)]
            vectors.upsert(SCALE_COLLECTION, [d["id"] for d in docs], block, docs, skip={"title"}, fresh=True)
            documents.upsert(SCALE_COLLECTION, docs)
        progress("flushing and building the index")
        wait_until_indexed(vectors, count)
    finally:
        documents.close()
        vectors.close()
    return time.perf_counter() - started


def wait_until_indexed(vectors, count: int) -> None:
    vectors.flush(SCALE_COLLECTION)
    # A server builds indexes in the background; wait until every row is indexed. (Its
    # pending_index_rows can stay above 0 for segments that compaction has replaced.)
    while (vectors.client.describe_index(SCALE_COLLECTION, "vector") or {}).get("indexed_rows", count) < count:
        time.sleep(2)
    vectors.load(SCALE_COLLECTION)
    if vectors.count(SCALE_COLLECTION) != count:
        raise BenchError(f"{SCALE_COLLECTION} holds {vectors.count(SCALE_COLLECTION)} vectors, not {count}")


def experiments_file(path: Path, index_type: str) -> Path:
    """Two match arms: Strong (sees every write) and Bounded (no wait for the time tick). IVF
    probes SCALE_NPROBE of its 1,024 lists; FLAT scans everything."""
    search_params = {"nprobe": SCALE_NPROBE} if index_type.startswith("IVF") else {}
    arms = [{"name": level, "ratio": 0.5, "params": {"search_params": search_params, "consistency": level}}
            for level in SCALE_CONSISTENCY]
    path.write_text(json.dumps({"scenes": {SCALE_COLLECTION: {"layers": {"match": arms}}}}))
    return path


def run_scale(repository: Path, count: int, store: str, index_type: str, seconds: float, levels: Sequence[int],
              queries: Sequence[str], progress: Callable[[str], None] = print) -> tuple[list[Row], dict]:
    """Search latency through the `search` model over `count` random vectors in Milvus Lite or
    the Milvus server, and the memory the vector store holds."""
    require_perf_analyzer()
    with tempfile.TemporaryDirectory(prefix="mmsearch-scale-") as scratch:
        work = Path(scratch)
        milvus = uri = None
        if store == "server":
            progress("starting milvus-server")
            milvus, uri = start_milvus_server(work / "milvus", work / "milvus-server.log")
        settings = StoreSettings.resolve(work / "data", uri)
        experiments = experiments_file(work / "experiments.yaml", index_type)
        server = TritonServer(repository, settings, Ports(free_port(), free_port(), free_port()), experiments).start()
        try:
            rows, memory = _measure(server, milvus, settings, count, store, index_type, seconds, levels, queries, work,
                                    progress)
        finally:
            server.stop()
            if milvus:
                milvus.stop()
    return rows, memory


def _measure(server, milvus, settings, count, store, index_type, seconds, levels, queries, work, progress):
    from mmsearch.client.search_client import SearchClient

    url = f"localhost:{server.ports.grpc}"
    with SearchClient(url) as client:
        dim = client.embedding_dim()
    progress(f"inserting {count:,} random {dim}-d unit vectors into {store}")
    fill_seconds = fill_random(settings, count, dim, index_type, progress)
    where = f"{count:,} × {dim} in {'milvus-server 2.3' if milvus else 'Milvus Lite'} ({index_type})"
    rows = []
    for level in SCALE_CONSISTENCY:
        params = json.dumps({"experiments": {"match": level}})
        data = [{QUERY: [q], COLLECTION: [SCALE_COLLECTION], TOP_K_TENSOR: [TOP_K], PARAMS: [params]} for q in queries]
        rows += perf_rows("scale", "search", f"search top-{TOP_K}, {where}, {level}", url, data, levels, work, seconds,
                          progress)
    store_pid = (milvus or server.milvus).process.pid
    memory = {"store_rss_mib": round(process_group_rss_mib(store_pid)),
              "triton_rss_mib": round(process_group_rss_mib(server.triton.process.pid)),
              "insert_and_index_s": round(fill_seconds, 1), "vectors": count, "dim": dim, "store": store,
              "index_type": index_type}
    return rows, memory
