"""Shared fixtures: real servers (tritonserver, Milvus, a MongoDB-wire server) started and
stopped by the tests themselves, and one exported model repository per session."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no hub here; never wait on its retries

from mmsearch.model_repository.server import Ports, TritonServer, free_port, stop_process_group  # noqa: E402
from mmsearch.settings import StoreSettings, port_is_open  # noqa: E402

BIN = Path(sys.executable).parent


def mmsearch_cli(*args: str, check: bool = True, timeout: float = 600, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run the installed `mmsearch` console script, as a user would."""
    result = subprocess.run(
        [str(BIN / "mmsearch"), *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **(env or {})}
    )
    if check and result.returncode != 0:
        raise AssertionError(f"mmsearch {' '.join(args)} failed ({result.returncode}):\n{result.stdout}\n{result.stderr}")
    return result


def wait_until(check, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.2)
    raise TimeoutError(f"{what} not ready after {timeout} s")


class Service:
    """A server process owned by a test: started, waited for, stopped (and waited for)."""

    def __init__(self, args: list[str], ready, log_path: Path, name: str, timeout: float = 90):
        self.args, self.ready, self.log_path, self.name, self.timeout = args, ready, log_path, name, timeout
        self.process: subprocess.Popen | None = None

    def start(self) -> "Service":
        self._log = open(self.log_path, "a")
        self.process = subprocess.Popen(self.args, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            wait_until(lambda: self.process.poll() is None and self.ready(), self.timeout, self.name)
        except TimeoutError:
            self.stop()
            raise AssertionError(f"{self.name} did not start:\n{self.log_path.read_text()[-3000:]}")
        return self

    def stop(self) -> None:
        if self.process:
            stop_process_group(self.process, 60)  # the storage path is reused only after it is gone
        self.process = None


@pytest.fixture(scope="session")
def exported_repository(tmp_path_factory) -> Path:
    """all-MiniLM-L6-v2 exported through the real CLI into a python-backend repository."""
    repo = tmp_path_factory.mktemp("repo") / "repository"
    mmsearch_cli("export", "--repository", str(repo), "--backend", "python")
    return repo


@pytest.fixture(scope="session")
def mongo_server(tmp_path_factory):
    """SecantusDB: a real MongoDB-wire server on WiredTiger."""
    base = tmp_path_factory.mktemp("mongo")
    port = free_port()
    service = Service(
        [str(BIN / "secantusd-py"), "--host", "127.0.0.1", "--port", str(port), "--storage-path", str(base / "data")],
        lambda: port_is_open("127.0.0.1", port),
        base / "secantusd.log",
        "secantusd-py",
    ).start()
    service.uri = f"mongodb://127.0.0.1:{port}"
    yield service
    service.stop()


def _milvus_healthy() -> bool:
    try:
        with urllib.request.urlopen("http://127.0.0.1:9091/healthz", timeout=1) as response:
            return response.read().strip() == b"OK"
    except OSError:
        return False


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory):
    """The real Milvus 2.3 standalone server from the `milvus` wheel (embedded etcd, local storage)."""
    if _milvus_healthy():
        pytest.fail("a Milvus server is already running on :9091; stop it so the test owns its own")
    base = tmp_path_factory.mktemp("milvus")
    port = free_port()
    service = Service(
        [str(BIN / "milvus-server"), "--data", str(base / "data"), "--proxy-port", str(port)],
        lambda: _milvus_healthy() and port_is_open("127.0.0.1", port),
        base / "milvus-server.log",
        "milvus-server",
        timeout=120,
    ).start()
    service.uri = f"http://127.0.0.1:{port}"
    yield service
    service.stop()


@pytest.fixture(scope="session")
def start_triton():
    """Start a TritonServer on free ports with given store settings; all are stopped at the end."""
    servers: list[TritonServer] = []

    def start(repository: Path, settings: StoreSettings) -> TritonServer:
        server = TritonServer(repository, settings, Ports(free_port(), free_port(), free_port()))
        servers.append(server.start())
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="session")
def cli():
    return mmsearch_cli
