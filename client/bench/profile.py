"""`mmsearch bench --profile`: where the CPU of one search goes, under load.

While perf_analyzer drives `search` at a fixed concurrency, three views are taken of the same
window and divided by the searches it completed:

- CPU per process (utime + stime from /proc): tritonserver itself (gRPC frontend, schedulers,
  ensembles), each python model's stub processes, the Milvus Lite server, and perf_analyzer;
- Triton's statistics extension (/v2/models/stats): per model, requests and executions per
  search and the time in queue, compute input, infer and output;
- a sampling profile (py-spy) of the `search` stubs and the Milvus Lite server: the functions
  that hold the GIL most, i.e. where their Python spends its CPU.
"""

from __future__ import annotations

import resource
import shutil
import signal
import subprocess
import sys
import tempfile
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

from mmsearch.client.bench import BENCH_COLLECTION, TOP_K, BenchError
from mmsearch.client.bench.accounting import by_role, cpu_seconds, process_roles
from mmsearch.client.bench.perf_analyzer import require_perf_analyzer, run_perf_analyzer
from mmsearch.client.bench.triton_stats import STAGES, histogram_delta, model_stats, stage_histograms
from mmsearch.model_repository import contract as c
from mmsearch.processes import free_port
from mmsearch.settings import StoreSettings
from mmsearch.tritonserver import Ports, TritonServer

PY_SPY_RATE_HZ = 200
TOP_FUNCTIONS = 15


@dataclass
class Profile:
    concurrency: int
    searches: int = 0
    throughput: float = 0.0
    p50_ms: float = 0.0
    cpu_ms: dict[str, float] = field(default_factory=dict)  # role -> CPU ms per search
    processes: dict[str, int] = field(default_factory=dict)  # role -> how many processes
    models: dict[str, dict] = field(default_factory=dict)  # model -> per-search statistics
    stages_ms: dict[str, float] = field(default_factory=dict)  # the search model's own stage timings
    # what py-spy saw in each sampled process kind: (samples, [(function, inclusive %, self %)])
    sampled: dict[str, tuple[int, list[tuple[str, float, float]]]] = field(default_factory=dict)


def py_spy_binary() -> str:
    binary = Path(sys.executable).parent / "py-spy"
    if not binary.exists() and not shutil.which("py-spy"):
        raise BenchError("the sampling profile needs py-spy: pip install py-spy (it is in the [bench] extra)")
    return str(binary) if binary.exists() else shutil.which("py-spy")


def start_py_spy(pids: Iterable[int], out_dir: Path) -> list[tuple[subprocess.Popen, Path]]:
    recorders = []
    for pid in pids:
        output = out_dir / f"py-spy-{pid}.txt"
        # --gil: only samples where the GIL is held, i.e. where the stub's Python spends CPU.
        command = [py_spy_binary(), "record", "--pid", str(pid), "--rate", str(PY_SPY_RATE_HZ), "--format", "raw",
                   "--output", str(output), "--nonblocking", "--gil", "--duration", "3600"]
        recorders.append((subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL), output))
    return recorders


def stop_py_spy(recorders: list[tuple[subprocess.Popen, Path]]) -> list[str]:
    """Stop the recorders (py-spy writes its file on SIGINT); the collapsed stacks they recorded."""
    lines = []
    for process, output in recorders:
        process.send_signal(signal.SIGINT)
        process.wait(60)
        if output.exists():
            lines += output.read_text().splitlines()
    return lines


def short_frame(frame: str) -> str:
    """"f (path/to/file.py:12)" as "f (file.py:12)"."""
    function, _, where = frame.partition(" (")
    return f"{function} ({where.rsplit('/', 1)[-1]}" if where else function


def top_functions(stacks: list[str], limit: int = TOP_FUNCTIONS) -> tuple[list[tuple[str, float, float]], int]:
    """From collapsed stacks ("f1;f2;f3 count"): the functions with the most samples, inclusive and self."""
    inclusive: Counter = Counter()
    own: Counter = Counter()
    total = 0
    for line in stacks:
        frames_text, _, count_text = line.rpartition(" ")
        count = int(count_text)
        frames = [short_frame(frame) for frame in frames_text.split(";")]
        total += count
        for frame in set(frames):
            inclusive[frame] += count
        own[frames[-1]] += count
    top = [(name, 100 * n / total, 100 * own[name] / total) for name, n in inclusive.most_common(limit * 3)
           if name and not name.startswith(("TritonPythonModel.execute", "<module>"))][:limit]
    return top, total


def measure(server: TritonServer, milvus, data: list[dict], concurrency: int, seconds: float, work: Path,
            with_py_spy: bool) -> Profile:
    groups = {server.triton.process.pid: "tritonserver"}
    if server.milvus:
        groups[server.milvus.process.pid] = "Milvus Lite server"
    if milvus:
        groups[milvus.process.pid] = "milvus-server"
    roles = process_roles(groups)
    url = f"localhost:{server.ports.grpc}"
    run_perf_analyzer(c.SEARCH, url, data, concurrency, work, 1)  # warm every instance first
    cpu_before, stats_before = by_role(roles, cpu_seconds), model_stats(server.ports.http)
    stages_before = stage_histograms(server.ports.metrics)
    client_before = resource.getrusage(resource.RUSAGE_CHILDREN)
    targets = {f"python stub: {c.SEARCH}": "the `search` stubs", "Milvus Lite server": "the Milvus Lite server"}
    recorders = {name: start_py_spy([pid for pid, role in roles.items() if role == target], work)
                 for target, name in targets.items()} if with_py_spy else {}
    figures = run_perf_analyzer(c.SEARCH, url, data, concurrency, work, seconds)
    stacks = {name: stop_py_spy(started) for name, started in recorders.items()}
    client_after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_after, stats_after = by_role(roles, cpu_seconds), model_stats(server.ports.http)
    stages = histogram_delta(stages_before, stage_histograms(server.ports.metrics))
    searches = stats_after[c.SEARCH]["requests"] - stats_before[c.SEARCH]["requests"]
    if searches <= 0:
        raise BenchError("the profile window completed no search")
    profile = Profile(concurrency, searches, figures["throughput"], figures["p50_ms"])
    cpu = cpu_after - cpu_before
    cpu["perf_analyzer (the client)"] = (client_after.ru_utime + client_after.ru_stime
                                         - client_before.ru_utime - client_before.ru_stime)
    profile.cpu_ms = {role: 1000 * seconds_ / searches for role, seconds_ in cpu.most_common()}
    profile.processes = dict(Counter(roles.values()))
    profile.models = per_search(stats_before, stats_after, searches)
    profile.stages_ms = {stage: h["sum"] / h["count"] for stage, h in stages.items() if h["count"]}
    profile.sampled = {name: top_functions(lines)[::-1] for name, lines in stacks.items() if lines}
    return profile


def per_search(before: dict, after: dict, searches: int) -> dict[str, dict]:
    models = {}
    for name, now in sorted(after.items()):
        requests = now["requests"] - before[name]["requests"]
        if requests <= 0:
            continue
        executions = now["executions"] - before[name]["executions"]
        models[name] = {
            "requests_per_search": requests / searches,
            "average_batch": requests / executions if executions else 0.0,
            **{f"{stage}_ms": (now[stage] - before[name][stage]) / 1e6 / requests for stage in STAGES},
        }
    return models


def run_profile(repository: Path, concurrency: int, seconds: float, queries: list[str], documents: list[dict],
                store: str = "lite", with_py_spy: bool = True, progress: Callable[[str], None] = print) -> Profile:
    """Index the FAQ into a fresh Milvus Lite or milvus-server (started here, so that its CPU is
    counted too), then profile `search` at `concurrency`."""
    from mmsearch.milvus_servers import start_milvus_server

    require_perf_analyzer()
    if with_py_spy:
        py_spy_binary()
    with tempfile.TemporaryDirectory(prefix="mmsearch-profile-") as scratch:
        work, milvus = Path(scratch), None
        if store == "server":
            milvus, uri = start_milvus_server(work / "milvus", work / "milvus-server.log")
        settings = StoreSettings.resolve(work / "data", uri if milvus else None)
        try:
            server = TritonServer(repository, settings, Ports(free_port(), free_port(), free_port())).start()
            try:
                index_faq(server, settings, documents, work)
                progress(f"profiling search at concurrency {concurrency} on {store}")
                data = [{c.QUERY: [q], c.COLLECTION: [BENCH_COLLECTION], c.TOP_K: [TOP_K]} for q in queries]
                return measure(server, milvus, data, concurrency, seconds, work, with_py_spy)
            finally:
                server.stop()
        finally:
            if milvus:
                milvus.stop()


def index_faq(server: TritonServer, settings: StoreSettings, documents: list[dict], work: Path) -> None:
    from mmsearch.client.search_client import SearchClient
    from mmsearch.indexer.datasets import write_jsonl
    from mmsearch.indexer.pipeline import IndexOptions
    from mmsearch.indexer.run import run_index

    corpus = write_jsonl(documents, work / "faq.jsonl")
    with SearchClient(f"localhost:{server.ports.grpc}") as client:
        run_index(client, settings, corpus, IndexOptions(BENCH_COLLECTION, text_field="answer"), progress=False)


def profile_markdown(profile: Profile) -> str:
    total = sum(profile.cpu_ms.values())
    lines = [f"`search` at concurrency {profile.concurrency}: {profile.throughput:.1f} searches/s, p50 "
             f"{profile.p50_ms:.1f} ms; {profile.searches} searches measured.", "",
             "| process | count | CPU ms per search | share |", "|---|---|---|---|"]
    lines += [f"| {role} | {profile.processes.get(role, 1)} | {ms:.2f} | {100 * ms / total:.0f}% |"
              for role, ms in profile.cpu_ms.items()]
    lines += [f"| **total** | | **{total:.2f}** | |", "",
              "| Triton model | requests per search | average batch | queue ms | compute input ms | infer ms | "
              "compute output ms |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {name} | {m['requests_per_search']:.2f} | {m['average_batch']:.2f} | {m['queue_ms']:.2f} | "
              f"{m['compute_input_ms']:.2f} | {m['compute_infer_ms']:.2f} | {m['compute_output_ms']:.2f} |"
              for name, m in profile.models.items()]
    if profile.stages_ms:
        lines += ["", "`search` stages (wall ms per request, from its own metrics): " + ", ".join(
            f"{stage} {ms:.2f}" for stage, ms in profile.stages_ms.items())]
    for name, (samples, functions) in profile.sampled.items():
        lines += ["", f"py-spy, {name} ({samples} samples at {PY_SPY_RATE_HZ} Hz while holding the GIL):", "",
                  "| function | inclusive | self |", "|---|---|---|"]
        lines += [f"| `{function}` | {inclusive:.0f}% | {own:.0f}% |" for function, inclusive, own in functions]
    return "\n".join(lines)
