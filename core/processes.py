"""Child processes that mmsearch owns: start, wait until ready, stop with everything they spawned.

Used alike by `mmsearch serve` (tritonserver, the Milvus Lite side-server), `mmsearch demo`
(the search page), `mmsearch bench` (milvus-server, the baseline services) and the tests.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from mmsearch.errors import MmsearchError

LOG_TAIL_LINES = 15  # of a child that died while starting, shown in the error


class ServerError(MmsearchError):
    """A server process could not be started, or did not become ready."""


def pid_alive(pid) -> bool:
    """Whether a process with this id exists (ours or not); False for None or garbage."""
    try:
        pid = int(pid)
        if pid <= 0:
            return False
        os.kill(pid, 0)
    except (TypeError, ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


def port_is_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def check_port_free(port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            raise ServerError(
                f"port {port} is already in use: stop what holds it or pass {flag} another port"
            ) from None


def wait_until_bindable(ports: list[int], timeout: float) -> bool:
    """Whether every port could be bound, as a server that does not set SO_REUSEADDR binds it,
    within `timeout`: after a crash the killed server's connections hold its ports in TIME_WAIT
    for up to a minute."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            for port in ports:
                with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
                    sock.bind(("127.0.0.1", port))
            return True
        except OSError:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.5)


def http_answers(url: str, body: bytes | None = None, timeout: float = 1.0) -> bool:
    """Whether `url` answers a GET (with `body`, stripped, when given): a health check."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return body is None or response.read().strip() == body
    except OSError:
        return False


class ManagedProcess:
    """A child in its own process group, its output in a log file."""

    def __init__(self, name: str, args: list[str], log_path: Path, env: dict[str, str] | None = None):
        self.name = name
        self.log_path = log_path
        log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log = open(log_path, "w")  # noqa: SIM115 -- open for the life of the child
        self.process = subprocess.Popen(args, stdout=self._log, stderr=subprocess.STDOUT, env=env,
                                        start_new_session=True, preexec_fn=die_with_parent)

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
    with contextlib.suppress(subprocess.TimeoutExpired):
        process.wait(timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
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
            tail = "\n".join(process.log_text().strip().splitlines()[-LOG_TAIL_LINES:])
            raise ServerError(f"{what} exited with code {process.process.returncode} (log: {process.log_path})"
                              + (f"; it ended with:\n{tail}" if tail else ""))
        if check():
            return
        time.sleep(0.2)
    raise ServerError(f"{what} was not ready after {timeout:.0f} s (log: {process.log_path})")


def start_ready(
    name: str, args: list[str], log_path: Path, ready, timeout: float, env: dict | None = None
) -> ManagedProcess:
    """Start a child and return once `ready()` holds; a child that dies or never gets ready is
    stopped, and the error names it and its log."""
    process = ManagedProcess(name, args, log_path, env)
    try:
        wait_for(ready, process, timeout, name)
    except BaseException:
        process.stop()
        raise
    return process


@contextlib.contextmanager
def sigterm_as_interrupt():
    """While inside, SIGTERM raises KeyboardInterrupt, so a server stops (and cleans up) alike
    on Ctrl-C and on SIGTERM, whenever it comes: also between printing "ready" and waiting."""
    def interrupt(signum, frame):
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def run_until_signalled() -> None:
    """Block until Ctrl-C or SIGTERM."""
    with sigterm_as_interrupt(), contextlib.suppress(KeyboardInterrupt):
        while True:
            time.sleep(0.5)
