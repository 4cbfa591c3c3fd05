"""(c), (d) Triton's own load generator, perf_analyzer from the tritonclient 2.51 wheel."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mmsearch.client.bench import BenchError
from mmsearch.client.bench.report import Row

LIBB64 = Path("/usr/lib/x86_64-linux-gnu/libb64.so.0d")
PERF_ANALYZER_TIMEOUT_S = 900


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
    return {
        **os.environ,
        "LD_LIBRARY_PATH": os.pathsep.join(filter(None, [str(lib), os.environ.get("LD_LIBRARY_PATH")])),
    }


def perf_analyzer_binary() -> str:
    binary = Path(sys.executable).parent / "perf_analyzer"
    if not binary.exists():
        raise BenchError(
            f"{binary} is missing: it ships in the tritonclient 2.51 wheel (pip install tritonclient==2.51.0)"
        )
    return str(binary)


def require_perf_analyzer() -> None:
    """Fail before minutes of work, not after."""
    perf_analyzer_env()
    perf_analyzer_binary()


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
        result = subprocess.run(command, capture_output=True, text=True, env=perf_analyzer_env(),
                                timeout=PERF_ANALYZER_TIMEOUT_S)
        if result.returncode == 0 and csv_path.exists():
            break
    else:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-6:])
        raise BenchError(f"perf_analyzer on {model} at concurrency {concurrency} failed:\n{tail}")
    header, values = csv_path.read_text().strip().splitlines()[:2]
    row = dict(zip(header.split(","), values.split(","), strict=True))
    return {
        "throughput": float(row["Inferences/Second"]),
        **{f"p{p}_ms": float(row[f"p{p} latency"]) / 1000 for p in (50, 95, 99)},
    }


def perf_rows(part: str, model: str, system: str, url: str, data: list[dict], levels: Sequence[int], workdir: Path,
              seconds: float, progress: Callable[[str], None]) -> list[Row]:
    rows = []
    for concurrency in levels:
        progress(f"({part}) {system}, concurrency {concurrency}")
        figures = run_perf_analyzer(model, url, data, concurrency, workdir, seconds)
        rows.append(Row(part, system, concurrency, unit="queries/s", **figures))
    return rows
