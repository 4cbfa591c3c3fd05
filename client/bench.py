"""`mmsearch bench`: our serving path against what a user would run instead, in one run.

On the same model (the repository's text encoder), the same query set (the Debian FAQ's 146
section headings) and the same collection (its 147 answers), measured one after another on
this machine:

  (a) raw onnxruntime in this process: the encoder's limit here (no server, no network)
  (b) the naive service: HTTP + sentence-transformers per request + the same Milvus search
  (c) the `text_embed` ensemble through Triton, driven by perf_analyzer
  (d) the full `search` model through Triton, driven by perf_analyzer
  (e) indexing throughput through Triton into Milvus and the document store
  and `text_embed` with dynamic batching switched off, to show what batching buys.

Every figure is reported with its ratio to (a) or (b) from the same run, never to a number
from another day or machine.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from mmsearch.model_repository.server import ManagedProcess, Ports, TritonServer, free_port, wait_for
from mmsearch.settings import StoreSettings, http_answers, port_is_open

CONCURRENCY = (1, 4, 16)
INDEX_COPIES = 3
COLLECTION = "bench_faq"
TOP_K = 10
LIBB64 = Path("/usr/lib/x86_64-linux-gnu/libb64.so.0d")


class BenchError(RuntimeError):
    pass


@dataclass
class Row:
    part: str  # a..e
    system: str
    concurrency: int | None
    throughput: float
    unit: str
    p50_ms: float | None = None
    p95_ms: float | None = None
    p99_ms: float | None = None
    baseline: str = ""  # the row this one is compared with, e.g. "(a) batch 32"
    ratio: float | None = None  # throughput / baseline throughput
    p50_ratio: float | None = None  # p50 / baseline p50

    @property
    def label(self) -> str:
        at = f" c={self.concurrency}" if self.concurrency else ""
        return f"({self.part}) {self.system}{at}"

    def compare(self, baseline: "Row") -> "Row":
        self.baseline = baseline.label
        self.ratio = self.throughput / baseline.throughput
        if self.p50_ms and baseline.p50_ms:
            self.p50_ratio = self.p50_ms / baseline.p50_ms
        return self


def percentiles_ms(latencies_s: Sequence[float]) -> tuple[float, float, float]:
    p50, p95, p99 = np.percentile(np.asarray(latencies_s) * 1000, [50, 95, 99])
    return float(p50), float(p95), float(p99)


# --------------------------------------------------------------------------- (a) raw onnxruntime


def raw_encoder(repository: Path, cores: int) -> Callable[[Sequence[str]], np.ndarray]:
    """The repository's own tokenizer and ONNX encoder, called in-process."""
    from mmsearch.export import triton_config
    from mmsearch.model_repository.onnx_runner import OnnxEncoder
    from mmsearch.model_repository.tokenization import BatchTokenizer

    config = triton_config.parse((repository / "text_tokenizer" / "config.pbtxt").read_text())
    tokenize = BatchTokenizer(repository / "text_tokenizer" / "1" / "tokenizer", int(config.parameters["max_seq_length"].string_value))
    encoder = OnnxEncoder(repository / "text_encoder" / "1" / "model.onnx", intra_op_threads=cores)
    encoder.warmup()

    def encode(texts: Sequence[str]) -> np.ndarray:
        input_ids, attention_mask = tokenize(texts)
        return encoder.run([{"input_ids": input_ids, "attention_mask": attention_mask}])[0]["embedding"]

    return encode


def bench_raw(encoders: Sequence[Callable], texts: Sequence[str], batch_size: int, seconds: float, system: str, unit: str) -> Row:
    """Each encoder in its own thread (onnxruntime releases the GIL) takes the next batch of
    `texts`: cycling for at least `seconds`, or once through when `seconds` is 0 (as the
    indexer does). Latency is per batch."""
    batches = [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    for encode in encoders:
        encode(batches[0])
    latencies: list[float] = []
    done = [0] * len(encoders)
    turns = itertools.count()
    started = time.perf_counter()

    def worker(k: int) -> None:
        while True:
            turn = next(turns)
            if turn >= len(batches) and time.perf_counter() - started >= seconds:
                return
            batch = batches[turn % len(batches)]
            t0 = time.perf_counter()
            encoders[k](batch)
            latencies.append(time.perf_counter() - t0)
            done[k] += len(batch)

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(len(encoders))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return Row("a", system, None, sum(done) / (time.perf_counter() - started), unit, *percentiles_ms(latencies))


# --------------------------------------------------------------------------- (c), (d) perf_analyzer


def perf_analyzer_env() -> dict[str, str]:
    """perf_analyzer from the tritonclient 2.51 wheel links libcudart (pip nvidia-cuda-runtime-cu12)
    and libb64 (Debian libb64-0d), even on a CPU-only machine."""
    if not LIBB64.exists():
        raise BenchError(f"perf_analyzer needs {LIBB64}: apt-get install -y libb64-0d")
    try:
        import nvidia.cuda_runtime
    except ImportError:
        raise BenchError("perf_analyzer needs libcudart: pip install nvidia-cuda-runtime-cu12") from None
    lib = Path(list(nvidia.cuda_runtime.__path__)[0]) / "lib"
    return {**os.environ, "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_LIBRARY_PATH")]))}


def perf_analyzer_binary() -> str:
    binary = Path(sys.executable).parent / "perf_analyzer"
    if not binary.exists():
        raise BenchError(f"{binary} is missing: it ships in the tritonclient 2.51 wheel (pip install tritonclient==2.51.0)")
    return str(binary)


def run_perf_analyzer(model: str, url: str, data: list[dict], concurrency: int, workdir: Path, seconds: float) -> dict:
    """One concurrency level; returns throughput (infer/s) and p50/p95/p99 (ms) from its CSV."""
    data_path = workdir / f"{model}-input.json"
    data_path.write_text(json.dumps({"data": data}))
    csv_path = workdir / f"{model}-c{concurrency}.csv"
    for window_s, stability in ((seconds, 25), (2 * seconds, 50)):  # a noisy machine gets a second, longer try
        csv_path.unlink(missing_ok=True)
        command = [
            perf_analyzer_binary(), "-m", model, "-u", url, "-i", "grpc", "--input-data", str(data_path),
            "--concurrency-range", str(concurrency), "--measurement-interval", str(int(window_s * 1000)),
            "--stability-percentage", str(stability), "--max-trials", "10", "-f", str(csv_path),
        ]
        result = subprocess.run(command, capture_output=True, text=True, env=perf_analyzer_env(), timeout=900)
        if result.returncode == 0 and csv_path.exists():
            break
    else:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-6:])
        raise BenchError(f"perf_analyzer on {model} at concurrency {concurrency} failed:\n{tail}")
    header, values = csv_path.read_text().strip().splitlines()[:2]
    row = dict(zip(header.split(","), values.split(",")))
    return {
        "throughput": float(row["Inferences/Second"]),
        **{f"p{p}_ms": float(row[f"p{p} latency"]) / 1000 for p in (50, 95, 99)},
    }


def perf_rows(part: str, model: str, system: str, url: str, data: list[dict], levels, workdir: Path, seconds: float,
              progress: Callable[[str], None]) -> list[Row]:
    rows = []
    for concurrency in levels:
        progress(f"({part}) {system}, concurrency {concurrency}")
        figures = run_perf_analyzer(model, url, data, concurrency, workdir, seconds)
        rows.append(Row(part, system, concurrency, unit="queries/s", **figures))
    return rows


# --------------------------------------------------------------------------- (b) the naive service


def http_load(url: str, payloads: Sequence[dict], concurrency: int, seconds: float) -> Row:
    """`concurrency` closed-loop clients with keep-alive, as perf_analyzer drives Triton."""
    import http.client
    from urllib.parse import urlsplit

    address = urlsplit(url)
    latencies: list[float] = []
    errors: list[str] = []
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client(offset: int) -> None:
        connection = http.client.HTTPConnection(address.hostname, address.port, timeout=120)
        i = offset
        while time.perf_counter() < deadline:
            body = json.dumps(payloads[i % len(payloads)])
            t0 = time.perf_counter()
            try:
                connection.request("POST", "/search", body, {"Content-Type": "application/json"})
                response = connection.getresponse()
                response.read()
                failure = None if response.status == 200 else f"HTTP {response.status}"
            except (OSError, http.client.HTTPException) as exc:
                failure = f"{exc.__class__.__name__}: {exc}"
                connection.close()  # reconnects on the next request
            elapsed = time.perf_counter() - t0
            with lock:
                (errors if failure else latencies).append(failure or elapsed)
            i += concurrency
        connection.close()

    started = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors or not latencies:
        raise BenchError(f"the naive service failed {len(errors)} requests (first: {errors[0] if errors else 'none'}) "
                         f"and answered {len(latencies)}")
    return Row("b", "naive HTTP + sentence-transformers + Milvus", concurrency, len(latencies) / (time.perf_counter() - started),
               "queries/s", *percentiles_ms(latencies))


def start_naive_service(model: str, settings: StoreSettings, log_path: Path) -> tuple[ManagedProcess, str]:
    port = free_port()
    process = ManagedProcess("naive-service", [
        sys.executable, "-m", "mmsearch.client.naive_service", "--port", str(port), "--model", model,
        "--milvus-uri", settings.connect_uri(), "--data-dir", str(settings.data_dir),
        *(["--mongo-uri", settings.mongo_uri] if settings.mongo_uri else []),
    ], log_path)

    wait_for(lambda: http_answers(f"http://127.0.0.1:{port}/"), process, 180, "the naive service")
    return process, f"http://127.0.0.1:{port}"


# --------------------------------------------------------------------------- the run


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
    record = repository / "text_encoder" / "1" / "export.json"
    if record.exists():
        return json.loads(record.read_text())["source"]
    from mmsearch.export.text_encoder import default_text_model

    return default_text_model()


@dataclass
class BenchOptions:
    repository: Path
    seconds: float = 5.0  # perf_analyzer measurement window; (a) and (b) run 3x as long
    levels: tuple[int, ...] = CONCURRENCY
    cores: int = os.cpu_count() or 1
    milvus_uri: str | None = None  # default: Milvus Lite; (b) and (d) always share one Milvus
    mongo_uri: str | None = None  # default: the embedded document store


def run_bench(options: BenchOptions, progress: Callable[[str], None] = print) -> list[Row]:
    from mmsearch.client.cli import run_index
    from mmsearch.client.search_client import SearchClient
    from mmsearch.indexer.datasets import debian_faq, write_jsonl
    from mmsearch.indexer.pipeline import IndexOptions

    perf_analyzer_env(), perf_analyzer_binary()  # fail before minutes of work, not after
    faq = debian_faq()
    queries = [q["query"] for q in faq.queries]
    # (e) and its baseline index the FAQ three times over (441 documents, fresh ids), so that
    # the last, partly filled batches weigh little in either.
    documents = [{**doc, "id": f"{doc['id']}#{copy}"} for copy in range(INDEX_COPIES) for doc in faq.documents]
    answers = [d["answer"] for d in documents]
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="mmsearch-bench-") as scratch:
        work = Path(scratch)
        settings = StoreSettings.resolve(work / "data", options.milvus_uri, options.mongo_uri)
        corpus = write_jsonl(documents, work / "faq.jsonl")

        # (a) both ways onnxruntime can use the cores: one session with a thread per core, or a
        # single-threaded session per core side by side. The best is the limit (c) is held to.
        progress("(a) raw onnxruntime in this process")
        long = options.seconds * 3
        wide = [raw_encoder(options.repository, options.cores)]
        narrow = [raw_encoder(options.repository, 1) for _ in range(options.cores)]
        raw_queries = [
            bench_raw(wide, queries, 1, long, f"onnxruntime in-process, 1 session × {options.cores} threads, batch 1", "queries/s"),
            bench_raw(wide, queries, 32, long, f"onnxruntime in-process, 1 session × {options.cores} threads, batch 32", "queries/s"),
            bench_raw(narrow, queries, 1, long, f"onnxruntime in-process, {options.cores} sessions × 1 thread, batch 1", "queries/s"),
        ]
        raw_docs = max((bench_raw(encoders, answers, 32, 0, f"onnxruntime in-process, {len(answers)} documents, {layout}, batch 32", "docs/s")
                        for encoders, layout in ((wide, f"1 session × {options.cores} threads"), (narrow, f"{options.cores} sessions × 1 thread"))),
                       key=lambda row: row.throughput)
        rows += [*raw_queries, raw_docs]
        limit = max(raw_queries, key=lambda row: row.throughput)
        del wide, narrow

        server = TritonServer(options.repository, settings, Ports(free_port(), free_port(), free_port())).start()
        url = f"localhost:{server.ports.grpc}"
        try:
            progress("(e) indexing through Triton")
            with SearchClient(url) as client:
                report = run_index(client, settings, corpus, IndexOptions(COLLECTION, text_field="answer", recreate=True), progress=False)
            rows.append(Row("e", f"mmsearch index ({report.written} docs, batch 32, 4 in flight)", None, report.docs_per_s,
                            "docs/s").compare(raw_docs))

            text_data = [{"TEXT": [q]} for q in queries]
            search_data = [{"QUERY": [q], "COLLECTION": [COLLECTION], "TOP_K": [TOP_K]} for q in queries]
            embed_rows = perf_rows("c", "text_embed", "Triton text_embed (perf_analyzer)", url, text_data, options.levels, work,
                                   options.seconds, progress)
            rows += [row.compare(limit) for row in embed_rows]
            search_rows = perf_rows("d", "search", "Triton search (perf_analyzer)", url, search_data, options.levels, work,
                                    options.seconds, progress)

            progress("(b) naive service: starting")
            naive, naive_url = start_naive_service(source_model(options.repository), settings, work / "naive.log")
            try:
                payloads = [{"query": q, "collection": COLLECTION, "top_k": TOP_K} for q in queries]
                naive_rows = []
                for concurrency in options.levels:
                    progress(f"(b) naive service, concurrency {concurrency}")
                    http_load(naive_url, payloads[:8], 1, 2)  # warm-up
                    naive_rows.append(http_load(naive_url, payloads, concurrency, long))
            finally:
                naive.stop()
            rows += naive_rows
            rows += [row.compare(base) for row, base in zip(search_rows, naive_rows)]
        finally:
            server.stop()

        progress("(c) text_embed without dynamic batching")
        plain = without_dynamic_batching(options.repository, work / "no-batching", ["text_tokenizer", "text_encoder"])
        server = TritonServer(plain, settings, Ports(free_port(), free_port(), free_port())).start()
        try:
            top = max(options.levels)
            off = perf_rows("c", "text_embed", "Triton text_embed, dynamic batching off", f"localhost:{server.ports.grpc}",
                            text_data, [top], work, options.seconds, progress)[0]
        finally:
            server.stop()
        on = next(row for row in embed_rows if row.concurrency == top)
        rows.append(off.compare(on))
    return rows


# --------------------------------------------------------------------------- scale: 1M vectors

SCALE_COLLECTION = "bench_scale"
SCALE_NPROBE = 16
SCALE_CONSISTENCY = ("Strong", "Bounded")
MILVUS_HEALTH = "http://127.0.0.1:9091/healthz"  # milvus-server's fixed health port


def process_group_rss_mib(pid: int) -> float:
    """Resident memory of a process and everything in its process group (Linux /proc)."""
    group, total_kib = os.getpgid(pid), 0
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            if os.getpgid(int(status.parent.name)) != group:
                continue
            total_kib += next(int(line.split()[1]) for line in status.read_text().splitlines() if line.startswith("VmRSS:"))
        except (OSError, StopIteration, ValueError):
            continue
    return total_kib / 1024


def milvus_server_healthy() -> bool:
    return http_answers(MILVUS_HEALTH, b"OK")


def start_milvus_server(work: Path) -> tuple[ManagedProcess, str]:
    if milvus_server_healthy():
        raise BenchError("a Milvus server already answers on :9091; stop it, or pass its URI with --milvus-uri")
    port = free_port()
    process = ManagedProcess("milvus-server", [str(Path(sys.executable).parent / "milvus-server"), "--data", str(work / "milvus"),
                                               "--proxy-port", str(port)], work / "milvus-server.log")
    wait_for(lambda: milvus_server_healthy() and port_is_open("127.0.0.1", port), process, 180, "milvus-server")
    return process, f"http://127.0.0.1:{port}"


def fill_random(settings: StoreSettings, count: int, dim: int, index_type: str, progress: Callable[[str], None]) -> float:
    """`count` random unit vectors (and a small document each); returns the seconds it took."""
    from tqdm import tqdm

    from mmsearch.stores import VectorStore, open_document_store

    vectors, documents = VectorStore.open(settings), open_document_store(settings)
    rng = np.random.default_rng(0)
    started = time.perf_counter()
    try:
        vectors.drop(SCALE_COLLECTION)
        documents.drop(SCALE_COLLECTION)
        vectors.ensure_collection(SCALE_COLLECTION, dim, {"modality": "text", "text_field": "title",
                                                          "query_models": {"text": "text_embed"}}, index_type)
        batch = 10_000
        for start in tqdm(range(0, count, batch), desc=f"inserting {count:,} vectors", unit_scale=batch, disable=None):
            size = min(batch, count - start)
            block = rng.standard_normal((size, dim), dtype=np.float32)
            block /= np.linalg.norm(block, axis=1, keepdims=True)
            docs = [{"id": f"v{i}", "title": f"random vector {i}"} for i in range(start, start + size)]
            vectors.upsert(SCALE_COLLECTION, [d["id"] for d in docs], block, docs, skip={"title"}, fresh=True)
            documents.upsert(SCALE_COLLECTION, docs)
        progress("flushing and building the index")
        vectors.flush(SCALE_COLLECTION)
        # A server builds indexes in the background; wait until every row is indexed. (Its
        # pending_index_rows can stay above 0 for segments that compaction has replaced.)
        while (vectors.client.describe_index(SCALE_COLLECTION, "vector") or {}).get("indexed_rows", count) < count:
            time.sleep(2)
        vectors.load(SCALE_COLLECTION)
        if vectors.count(SCALE_COLLECTION) != count:
            raise BenchError(f"{SCALE_COLLECTION} holds {vectors.count(SCALE_COLLECTION)} vectors, not {count}")
    finally:
        documents.close()
        vectors.close()
    return time.perf_counter() - started


def run_scale(repository: Path, count: int, store: str, index_type: str, seconds: float, levels: Sequence[int],
              progress: Callable[[str], None] = print) -> tuple[list[Row], dict]:
    """Search latency through the `search` model over `count` random vectors in Milvus Lite or
    the Milvus server, and the memory the vector store holds."""
    from mmsearch.client.search_client import SearchClient
    from mmsearch.indexer.datasets import debian_faq

    perf_analyzer_env(), perf_analyzer_binary()
    queries = [q["query"] for q in debian_faq().queries]
    with tempfile.TemporaryDirectory(prefix="mmsearch-scale-") as scratch:
        work = Path(scratch)
        milvus = None
        if store == "server":
            progress("starting milvus-server")
            milvus, uri = start_milvus_server(work)
        settings = StoreSettings.resolve(work / "data", uri if milvus else None)
        # IVF probes SCALE_NPROBE of its 1,024 lists; FLAT scans everything. Two match arms:
        # Strong (the default: sees every write) and Bounded (no wait for the time tick).
        search_params = {"nprobe": SCALE_NPROBE} if index_type.startswith("IVF") else {}
        experiments = work / "experiments.yaml"
        experiments.write_text(json.dumps({"scenes": {SCALE_COLLECTION: {"layers": {"match": [
            {"name": level, "ratio": 0.5, "params": {"search_params": search_params, "consistency": level}}
            for level in SCALE_CONSISTENCY]}}}}))
        server = TritonServer(repository, settings, Ports(free_port(), free_port(), free_port()), experiments).start()
        try:
            with SearchClient(f"localhost:{server.ports.grpc}") as client:
                dim = client.embedding_dim()
            progress(f"inserting {count:,} random {dim}-d unit vectors into {store}")
            fill_seconds = fill_random(settings, count, dim, index_type, progress)
            store_pid = (milvus or server.milvus).process.pid
            where = f"{count:,} × {dim} in {'milvus-server 2.3' if milvus else 'Milvus Lite'} ({index_type})"
            rows = []
            for level in SCALE_CONSISTENCY:
                params = json.dumps({"experiments": {"match": level}})
                data = [{"QUERY": [q], "COLLECTION": [SCALE_COLLECTION], "TOP_K": [TOP_K], "PARAMS": [params]} for q in queries]
                rows += perf_rows("scale", "search", f"search top-{TOP_K}, {where}, {level}", f"localhost:{server.ports.grpc}",
                                  data, levels, work, seconds, progress)
            memory = {"store_rss_mib": round(process_group_rss_mib(store_pid)), "triton_rss_mib": round(process_group_rss_mib(server.triton.process.pid)),
                      "insert_and_index_s": round(fill_seconds, 1), "vectors": count, "dim": dim, "store": store, "index_type": index_type}
        finally:
            server.stop()
            if milvus:
                milvus.stop()
    return rows, memory


# --------------------------------------------------------------------------- reporting


def _figure(value: float | None, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def markdown_table(rows: Sequence[Row]) -> str:
    lines = [
        "| run | throughput | p50 ms | p95 ms | p99 ms | compared with | throughput ratio | p50 ratio |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row.label} | {_figure(row.throughput)} {row.unit} | {_figure(row.p50_ms)} | {_figure(row.p95_ms)} | "
            f"{_figure(row.p99_ms)} | {row.baseline} | {_figure(row.ratio, 2)}{'×' if row.ratio else ''} | "
            f"{_figure(row.p50_ratio, 2)}{'×' if row.p50_ratio else ''} |"
        )
    return "\n".join(lines)


def goals(rows: Sequence[Row], top: int) -> list[str]:
    """The issue's targets, each with the measured ratio and whether it was met."""

    def ratio(label: str, p50: bool = False) -> float | None:
        row = next((r for r in rows if r.label == label), None)
        return None if row is None else (row.p50_ratio if p50 else row.ratio)

    index = next((r for r in rows if r.part == "e"), None)
    checks = [
        (f"(c) vs (a) throughput at c={top}", ratio(f"(c) Triton text_embed (perf_analyzer) c={top}"), "≥", 0.8),
        (f"(d) vs (b) throughput at c={top}", ratio(f"(d) Triton search (perf_analyzer) c={top}"), "≥", 3.0),
        (f"(d) vs (b) p50 at c={top}", ratio(f"(d) Triton search (perf_analyzer) c={top}", p50=True), "≤", 0.5),
        ("(e) vs (a) docs/s", index.ratio if index else None, "≥", 0.8),
    ]
    lines = []
    for name, value, sense, target in checks:
        if value is not None:
            met = value >= target if sense == "≥" else value <= target
            lines.append(f"- {name}: {value:.2f}× (goal {sense} {target}×): {'met' if met else 'missed'}")
    off = next((r for r in rows if r.system.endswith("dynamic batching off")), None)
    if off:
        lines.append(f"- dynamic batching off vs on, text_embed at c={off.concurrency}: throughput {off.ratio:.2f}×, p50 {off.p50_ratio:.2f}×")
    return lines


def write_report(rows: Sequence[Row], out_dir: Path, command: str, top: int, machine: str, extra: dict | None = None,
                 name: str = "bench") -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    notes = goals(rows, top) + [f"- {key}: {value}" for key, value in (extra or {}).items()]
    text = f"{machine}\n\n{markdown_table(rows)}\n\n" + "\n".join(notes) + f"\n\nMade by `{command}`.\n"
    markdown = out_dir / f"{name}.md"
    markdown.write_text(text)
    data = out_dir / f"{name}.json"
    rows_json = [asdict(r) | {"label": r.label} for r in rows]
    data.write_text(json.dumps({"machine": machine, "command": command, "rows": rows_json, **(extra or {})}, indent=2) + "\n")
    return markdown, data
