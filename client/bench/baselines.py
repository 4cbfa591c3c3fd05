"""(b), (f) What a user would run instead of Triton, started as a process and driven over HTTP."""

from __future__ import annotations

import http.client
import json
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlsplit

from mmsearch.client.bench import BenchError
from mmsearch.client.bench.report import Row, percentiles_ms
from mmsearch.processes import ManagedProcess, free_port, http_answers, start_ready
from mmsearch.settings import StoreSettings

SERVICE_START_S = 180


def http_load(url: str, payloads: Sequence[dict], concurrency: int, seconds: float, part: str, system: str) -> Row:
    """`concurrency` closed-loop clients with keep-alive, as perf_analyzer drives Triton."""
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
        raise BenchError(f"{system} failed {len(errors)} requests (first: {errors[0] if errors else 'none'}) "
                         f"and answered {len(latencies)}")
    return Row(part, system, concurrency, len(latencies) / (time.perf_counter() - started), "queries/s",
               *percentiles_ms(latencies))


def start_service(module: str, extra: list[str], settings: StoreSettings, log_path: Path) -> tuple[ManagedProcess, str]:
    """A baseline service (`python -m module`) on the same stores; (the process, its base URL)."""
    port = free_port()
    args = [sys.executable, "-m", module, "--port", str(port), *extra, "--milvus-uri", settings.connect_uri(),
            "--data-dir", str(settings.data_dir), *(["--mongo-uri", settings.mongo_uri] if settings.mongo_uri else [])]
    process = start_ready(module.rsplit(".", 1)[-1], args, log_path, lambda: http_answers(f"http://127.0.0.1:{port}/"),
                          SERVICE_START_S)
    return process, f"http://127.0.0.1:{port}"
