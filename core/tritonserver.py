"""Run the real `tritonserver` from the nvidia-pytriton wheel on a model repository.

The wheel carries a Triton 2.51 binary with the python backend; this module turns it into
a plain server: a backends folder holding the stub built for the running Python, the
library path that binary needs, and our store settings in the environment of the python
models. With the embedded Milvus Lite it also runs that database as a side-server, so the
Triton models and a concurrent `mmsearch index` share one database.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import re
import shutil
import sys
import sysconfig
import threading
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mmsearch.milvus_servers import start_milvus_lite
from mmsearch.model_repository.contract import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_METRICS_PORT,
    SEARCH,
)
from mmsearch.processes import (
    ManagedProcess,
    ServerError,
    check_port_free,
    http_answers,
    run_until_signalled,
    sigterm_as_interrupt,
    wait_for,
)
from mmsearch.settings import ENV_EXPERIMENTS, StoreSettings
from mmsearch.stores import StoreError, lite_size_warnings

TRITON_START_S = 300.0
LITE_CHECK_S, LITE_RESTART_FIRST_S, LITE_RESTART_MAX_S = 1.0, 1.0, 30.0
MODEL_CONTROL_S = 300.0  # an unload waits for the model's requests in flight; a load starts its stubs


@dataclass(frozen=True)
class Ports:
    http: int = DEFAULT_HTTP_PORT
    grpc: int = DEFAULT_GRPC_PORT
    metrics: int = DEFAULT_METRICS_PORT
    # Triton's API is unauthenticated (POST /v2/logging, the repository index, configs, stats):
    # this machine only unless the user chooses to expose it (README, Exposing Triton).
    host: str = DEFAULT_HOST


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


class TritonServer:
    """tritonserver (plus the embedded Milvus Lite server when that is the vector store)."""

    def __init__(
        self, repository: Path, settings: StoreSettings, ports: Ports = Ports(), experiments: Path | None = None
    ):
        self.repository = Path(repository).resolve()
        self.settings = settings
        self.ports = ports
        self.experiments = Path(experiments).resolve() if experiments else None
        self.triton: ManagedProcess | None = None
        self.milvus: ManagedProcess | None = None
        self._stopping = threading.Event()

    @property
    def log_path(self) -> Path:
        return self.settings.data_dir / "logs" / "tritonserver.log"

    def start(self, timeout: float = TRITON_START_S) -> TritonServer:
        if not (self.repository.is_dir() and any(self.repository.glob("*/config.pbtxt"))):
            raise ServerError(f"{self.repository} is not a model repository: run `mmsearch export` first")
        for port, flag in ((self.ports.http, "--http-port"), (self.ports.grpc, "--grpc-port"),
                           (self.ports.metrics, "--metrics-port")):
            check_port_free(port, flag)
        self.settings.require_writable()
        try:
            milvus_uri = self.settings.milvus_uri
            if self.settings.embedded_milvus:
                self.milvus = start_milvus_lite(self.settings)
                endpoint = json.loads(self.settings.lite_endpoint_file.read_text())
                milvus_uri = endpoint["uri"]
                threading.Thread(target=self._supervise_lite, args=(endpoint["port"],), name="milvus-lite-supervisor",
                                 daemon=True).start()
            self.triton = ManagedProcess("tritonserver", self._command(), self.log_path,
                                         env=server_environment(self._model_env(milvus_uri)))
            try:
                wait_for(self.ready, self.triton, timeout, "tritonserver")
            except ServerError as exc:
                raise ServerError("\n  ".join([str(exc), *triton_errors(self.triton.log_text())])) from None
        except BaseException:
            self.stop()
            raise
        return self

    def _command(self) -> list[str]:
        backends = prepare_backends(self.settings.data_dir / "triton")
        return [
            str(pytriton_dir() / "tritonserver" / "bin" / "tritonserver"),
            f"--model-repository={self.repository}",
            f"--backend-directory={backends}",
            f"--http-address={self.ports.host}",
            f"--http-port={self.ports.http}",
            f"--grpc-address={self.ports.host}",
            f"--grpc-port={self.ports.grpc}",
            f"--metrics-address={self.ports.host}",
            f"--metrics-port={self.ports.metrics}",
            # Every model loads at start as before; explicit control lets serve take `search`
            # out of service (not ready) while its vector store is down, and back in after.
            "--model-control-mode=explicit",
            "--load-model=*",
            "--allow-cpu-metrics=true",
        ]

    def _model_env(self, milvus_uri: str) -> dict[str, str]:
        """What the python models read: where the stores are, and the experiment config."""
        env = self.settings.as_env(milvus_uri)
        if self.experiments:
            env[ENV_EXPERIMENTS] = str(self.experiments)
        return env

    @property
    def http_url(self) -> str:
        host = "127.0.0.1" if self.ports.host in ("0.0.0.0", "::") else self.ports.host
        return f"http://{host}:{self.ports.http}"

    def ready(self) -> bool:
        return http_answers(f"{self.http_url}/v2/health/ready")

    def control(self, model: str, action: str) -> None:
        """Load or unload a model through Triton's repository API; a failure is logged, not raised."""
        request = urllib.request.Request(f"{self.http_url}/v2/repository/models/{model}/{action}", data=b"{}",
                                         method="POST")
        try:
            urllib.request.urlopen(request, timeout=MODEL_CONTROL_S).close()
        except OSError as exc:
            print(f"warning: could not {action} {model}: {exc}", file=sys.stderr, flush=True)

    def _supervise_lite(self, port: int) -> None:
        """Restart the Milvus Lite server when it dies, on the same port (the python models
        reconnect by themselves), with backoff. Meanwhile `search` is unloaded, so its ready
        endpoint says not ready and a load balancer can send its traffic elsewhere."""
        delay = LITE_RESTART_FIRST_S
        while not self._stopping.wait(LITE_CHECK_S):
            lite = self.milvus
            if lite is None or lite.alive():
                continue
            print(f"warning: the Milvus Lite server exited with code {lite.process.returncode}; `{SEARCH}` is not "
                  f"ready until it is back; restarting it in {delay:.0f} s (log: {lite.log_path})",
                  file=sys.stderr, flush=True)
            if delay == LITE_RESTART_FIRST_S:  # the first failure of this outage
                self.control(SEARCH, "unload")
            if self._stopping.wait(delay):
                return
            try:
                self.milvus = start_milvus_lite(self.settings, port)
                if self._stopping.is_set():  # stop() ran meanwhile: it must not outlive the server
                    self.milvus.stop()
                    return
            except ServerError as exc:
                print(f"warning: restarting Milvus Lite failed: {exc}", file=sys.stderr, flush=True)
                delay = min(delay * 2, LITE_RESTART_MAX_S)
                continue
            self.control(SEARCH, "load")
            print(f"Milvus Lite server restarted on port {port}; `{SEARCH}` is ready again", file=sys.stderr,
                  flush=True)
            delay = LITE_RESTART_FIRST_S

    def stop(self) -> None:
        self._stopping.set()
        if self.triton:
            self.triton.stop()
            self.triton = None
        if self.milvus:
            self.milvus.stop()
            self.milvus = None
            self.settings.lite_endpoint_file.unlink(missing_ok=True)

    def __enter__(self) -> TritonServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def serve(repository: Path, settings: StoreSettings, ports: Ports, experiments: Path | None = None) -> None:
    """`mmsearch serve`: Triton in the foreground until Ctrl-C or SIGTERM."""
    server = TritonServer(repository, settings, ports, experiments)
    print(f"starting tritonserver on {server.repository} (log: {server.log_path})", flush=True)
    with sigterm_as_interrupt():
        server.start()
        try:
            with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C or SIGTERM once up: a clean stop, exit 0
                try:
                    warnings = lite_size_warnings(settings)
                except StoreError as exc:  # a size check must never stop a server that is up
                    warnings = [f"could not read the collections' sizes: {exc}"]
                for warning in warnings:
                    print(f"warning: {warning}", file=sys.stderr, flush=True)
                print(f"mmsearch serve: ready on HTTP {ports.host}:{ports.http}, gRPC {ports.host}:{ports.grpc}, "
                      f"metrics {ports.host}:{ports.metrics} (vectors: {settings.milvus_uri}; "
                      f"documents: {settings.mongo_uri or settings.sqlite_path})", flush=True)
                run_until_signalled()
        finally:
            print("stopping tritonserver", flush=True)
            server.stop()
