"""Run the real `tritonserver` from the nvidia-pytriton wheel on a model repository.

The wheel carries a Triton 2.51 binary with the python backend; this module turns it into
a plain server: a backends folder holding the stub built for the running Python, the
library path that binary needs, and our store settings in the environment of the python
models. With the embedded Milvus Lite it also runs that database as a server process, so
the Triton models and a concurrent `mmsearch index` share one database.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mmsearch.settings import ENV_EXPERIMENTS, StoreSettings, port_is_open


class ServerError(RuntimeError):
    pass


@dataclass(frozen=True)
class Ports:
    http: int = 8000
    grpc: int = 8001
    metrics: int = 8002


def pytriton_dir() -> Path:
    # Only the wheel's files are used, not its Python API (whose pins we do not install).
    spec = importlib.util.find_spec("pytriton")
    if spec is None or not spec.submodule_search_locations:
        raise ServerError("nvidia-pytriton is not installed: run `make install`")
    return Path(spec.submodule_search_locations[0]).resolve()


def prepare_backends(cache_dir: Path) -> Path:
    """A backends folder whose python backend has the stub for this interpreter's version."""
    version = f"{sys.version_info.major}.{sys.version_info.minor}"
    wheel = pytriton_dir() / "tritonserver"
    stub = wheel / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        raise ServerError(f"the nvidia-pytriton wheel has no python backend stub for Python {version}")
    backends = cache_dir / f"backends-py{version}"
    target = backends / "python"
    if not (target / "triton_python_backend_stub").exists():
        shutil.rmtree(backends, ignore_errors=True)
        shutil.copytree(wheel / "backends" / "python", target)
        shutil.copy2(stub, target / "triton_python_backend_stub")
    return backends


def server_environment(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    libs = pytriton_dir().parent / "nvidia_pytriton.libs"
    # The stub links libpython3.x: it must load the one of *this* interpreter (pyenv,
    # conda...), not the system's, or stdlib extension modules fail to import.
    lib_dirs = [sysconfig.get_config_var("LIBDIR") or "", str(libs), env.get("LD_LIBRARY_PATH", "")]
    env["LD_LIBRARY_PATH"] = os.pathsep.join(d for d in lib_dirs if d)
    # The stub finds its interpreter (and so this virtualenv's packages) on PATH.
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env.update(extra)
    return env


def check_port_free(port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            raise ServerError(f"port {port} is already in use: stop what holds it or pass {flag} another port") from None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def triton_errors(log_text: str, limit: int = 8) -> list[str]:
    """Triton's own error lines (E....), first line of each, for a one-screen failure message."""
    lines = []
    for line in log_text.splitlines():
        if re.match(r"^E\d{4} ", line) or line.startswith("error:"):
            message = line.split('] "', 1)[-1].split("\\n")[0].rstrip('"')
            lines.append(message[:400])
    for line in log_text.splitlines():  # the model status table: "| name | 1 | UNAVAILABLE: ..."
        if "UNAVAILABLE" in line:
            lines.append(line.strip()[:400])
    return list(dict.fromkeys(lines))[:limit]


class ManagedProcess:
    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w")
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                        preexec_fn=die_with_parent)

    def alive(self) -> bool:
        return self.process.poll() is None

    def log_text(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self, timeout: float = 30.0) -> None:
        stop_process_group(self.process, timeout)
        self._log.close()


def stop_process_group(process: subprocess.Popen, timeout: float) -> None:
    """SIGTERM a process started with start_new_session and everything it spawned
    (Triton's python stubs, milvus-server's binary), then SIGKILL what outlives `timeout`."""
    try:
        os.killpg(process.pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        pass
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def die_with_parent() -> None:
    """In the child: get SIGTERM if `mmsearch serve` itself is killed (even by SIGKILL), so
    tritonserver and Milvus Lite never outlive it. Linux only; elsewhere a no-op."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def wait_for(check, process: ManagedProcess, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not process.alive():
            raise ServerError(f"{what} exited with code {process.process.returncode}")
        if check():
            return
        time.sleep(0.2)
    raise ServerError(f"{what} was not ready after {timeout:.0f} s (log: {process.log_path})")


def start_milvus_lite(settings: StoreSettings) -> ManagedProcess:
    """Milvus Lite as a gRPC server over the embedded database; records where it listens."""
    running = settings.connect_uri()
    if running != settings.milvus_uri:
        raise ServerError(f"{settings.milvus_uri} is already served at {running} by another `mmsearch serve`")
    port = free_port()
    Path(settings.milvus_uri).parent.mkdir(parents=True, exist_ok=True)
    process = ManagedProcess(
        "milvus-lite",
        [sys.executable, "-m", "milvus_lite", "server", "--data-dir", settings.milvus_uri, "--host", "127.0.0.1", "--port", str(port)],
        settings.data_dir / "logs" / "milvus-lite.log",
    )
    wait_for(lambda: port_is_open("127.0.0.1", port), process, 60, "Milvus Lite server")
    endpoint = {"uri": f"http://127.0.0.1:{port}", "host": "127.0.0.1", "port": port,
                "path": str(Path(settings.milvus_uri).resolve()), "pid": process.process.pid}
    settings.lite_endpoint_file.write_text(json.dumps(endpoint))
    return process


class TritonServer:
    """tritonserver (plus the embedded Milvus Lite server when that is the vector store)."""

    def __init__(self, repository: Path, settings: StoreSettings, ports: Ports = Ports(), experiments: Path | None = None):
        self.repository = Path(repository).resolve()
        self.settings = settings
        self.ports = ports
        self.experiments = Path(experiments).resolve() if experiments else None
        self.triton: ManagedProcess | None = None
        self.milvus: ManagedProcess | None = None

    def start(self, timeout: float = 300.0) -> "TritonServer":
        if not (self.repository.is_dir() and any(self.repository.glob("*/config.pbtxt"))):
            raise ServerError(f"{self.repository} is not a model repository: run `mmsearch export` first")
        for port, flag in ((self.ports.http, "--http-port"), (self.ports.grpc, "--grpc-port"), (self.ports.metrics, "--metrics-port")):
            check_port_free(port, flag)
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
        try:
            milvus_uri = self.settings.milvus_uri
            if self.settings.embedded_milvus:
                self.milvus = start_milvus_lite(self.settings)
                milvus_uri = json.loads(self.settings.lite_endpoint_file.read_text())["uri"]
            backends = prepare_backends(self.settings.data_dir / "triton")
            args = [
                str(pytriton_dir() / "tritonserver" / "bin" / "tritonserver"),
                f"--model-repository={self.repository}",
                f"--backend-directory={backends}",
                f"--http-port={self.ports.http}",
                f"--grpc-port={self.ports.grpc}",
                f"--metrics-port={self.ports.metrics}",
                "--allow-cpu-metrics=true",
            ]
            env = self.settings.as_env(milvus_uri)
            if self.experiments:
                env[ENV_EXPERIMENTS] = str(self.experiments)
            self.triton = ManagedProcess(
                "tritonserver", args, self.settings.data_dir / "logs" / "tritonserver.log", env=server_environment(env)
            )
            try:
                wait_for(self.ready, self.triton, timeout, "tritonserver")
            except ServerError as exc:
                errors = triton_errors(self.triton.log_text())
                raise ServerError("\n  ".join([str(exc), *errors])) from None
        except BaseException:
            self.stop()
            raise
        return self

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.ports.http}/v2/health/ready", timeout=1) as response:
                return response.status == 200
        except OSError:
            return False

    def stop(self) -> None:
        if self.triton:
            self.triton.stop()
            self.triton = None
        if self.milvus:
            self.milvus.stop()
            self.milvus = None
            self.settings.lite_endpoint_file.unlink(missing_ok=True)

    def __enter__(self) -> "TritonServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()
