"""Milvus as a process of ours: the Milvus Lite side-server of `mmsearch serve`, and the
milvus-server 2.3 standalone binary that `mmsearch bench` and the tests start.

Milvus Lite is single-process: `serve` runs it as a gRPC server over the embedded database
and records where it listens, so a concurrent `mmsearch index` connects to that process
instead of opening the same files a second time.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from mmsearch.processes import (
    ManagedProcess,
    ServerError,
    free_port,
    http_answers,
    port_is_open,
    start_ready,
    wait_until_bindable,
)
from mmsearch.settings import StoreSettings

# milvus-server 2.3.5 has fixed ports (9091 health, 2379 etcd): one instance per machine.
MILVUS_HEALTH_PORT, MILVUS_ETCD_PORT = 9091, 2379
MILVUS_HEALTH = f"http://127.0.0.1:{MILVUS_HEALTH_PORT}/healthz"
PORT_RELEASE_S = 90  # TCP TIME_WAIT is 60 s on Linux
MILVUS_SERVER_START_S = 180
MILVUS_LITE_START_S = 60


def start_milvus_lite(settings: StoreSettings, port: int | None = None) -> ManagedProcess:
    """Milvus Lite as a gRPC server over the embedded database; records where it listens and
    which process owns it (this one). `port`: a restart, on the port clients already use."""
    if port is None:
        running = settings.connect_uri()
        if running != settings.milvus_uri:
            raise ServerError(f"{settings.milvus_uri} is already served at {running} by another `mmsearch serve`")
        port = free_port()
    Path(settings.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
    args = [sys.executable, "-m", "milvus_lite", "server", "--data-dir", settings.milvus_uri,
            "--host", "127.0.0.1", "--port", str(port)]
    process = start_ready("Milvus Lite server", args, settings.data_dir / "logs" / "milvus-lite.log",
                          lambda: port_is_open("127.0.0.1", port), MILVUS_LITE_START_S)
    endpoint = {"uri": f"http://127.0.0.1:{port}", "host": "127.0.0.1", "port": port,
                "path": str(Path(settings.milvus_uri).resolve()), "pid": process.process.pid, "owner": os.getpid()}
    settings.lite_endpoint_file.write_text(json.dumps(endpoint))
    return process


def milvus_server_healthy() -> bool:
    return http_answers(MILVUS_HEALTH, b"OK")


def start_milvus_server(data_dir: Path, log_path: Path, port: int | None = None) -> tuple[ManagedProcess, str]:
    """milvus-server from the `milvus` wheel (embedded etcd, local storage); (process, its URI).
    Given the port and data dir of one that stopped, it is the same server again."""
    if milvus_server_healthy():
        raise ServerError("a Milvus server already answers on :9091 (milvus-server has fixed ports: one per machine); "
                          "stop it, or pass its URI with --milvus-uri")
    # milvus-server moves to the next free port when it cannot bind the one it is given, so a
    # restart waits for the old ports: clients and our health check use exactly these.
    if port and not wait_until_bindable([port, MILVUS_HEALTH_PORT, MILVUS_ETCD_PORT], PORT_RELEASE_S):
        raise ServerError(f"port {port}, {MILVUS_HEALTH_PORT} or {MILVUS_ETCD_PORT} is still in use after "
                          f"{PORT_RELEASE_S} s: stop what holds it")
    port = port or free_port()
    args = [str(Path(sys.executable).parent / "milvus-server"), "--data", str(data_dir), "--proxy-port", str(port)]
    process = start_ready("milvus-server", args, log_path,
                          lambda: milvus_server_healthy() and port_is_open("127.0.0.1", port), MILVUS_SERVER_START_S)
    return process, f"http://127.0.0.1:{port}"
