"""`mmsearch serve` around the real tritonserver: ready line, clean stop, clear failures."""

import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mmsearch.processes import ServerError, free_port, port_is_open
from mmsearch.settings import StoreSettings
from mmsearch.tritonserver import Ports, TritonServer, triton_errors

pytestmark = pytest.mark.integration
BROKEN_MODEL = '''
class TritonPythonModel:
    def initialize(self, args):
        raise RuntimeError("boom on purpose in initialize")
'''


def test_model_that_fails_to_load_shows_tritons_error(tmp_path):
    repo = tmp_path / "repo"
    (repo / "broken" / "1").mkdir(parents=True)
    (repo / "broken" / "1" / "model.py").write_text(BROKEN_MODEL)
    (repo / "broken" / "config.pbtxt").write_text(
        'backend: "python"\nmax_batch_size: 0\n'
        'input { name: "X" data_type: TYPE_FP32 dims: [1] }\noutput { name: "Y" data_type: TYPE_FP32 dims: [1] }\n'
    )
    server = TritonServer(repo, StoreSettings.resolve(tmp_path / "data"), Ports(free_port(), free_port(), free_port()))
    with pytest.raises(ServerError, match="boom on purpose in initialize"):
        server.start(timeout=120)
    assert server.triton is None and server.milvus is None
    assert not (tmp_path / "data" / "milvus-lite.json").exists()


def test_missing_repository_is_a_clear_error(tmp_path):
    with pytest.raises(ServerError, match="is not a model repository: run `mmsearch export` first"):
        TritonServer(tmp_path / "nothing", StoreSettings.resolve(tmp_path)).start()


def test_port_in_use_is_named(tmp_path, exported_repository, cli):
    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        result = cli(
            "serve", "--repository", str(exported_repository), "--data-dir", str(tmp_path), "--http-port", str(port),
            "--grpc-port", str(free_port()), "--metrics-port", str(free_port()), check=False,
        )
    assert result.returncode == 1
    assert (
        result.stderr.strip()
        == f"error: port {port} is already in use: stop what holds it or pass --http-port another port"
    )


def launch_serve(repository, data_dir, http: int, grpc: int, metrics: int) -> subprocess.Popen:
    """`mmsearch serve` as a user starts it, with its output readable line by line."""
    return subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mmsearch"), "serve", "--repository", str(repository), "--data-dir",
            str(data_dir), "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


def test_serve_prints_ready_line_and_stops_cleanly_on_sigterm(tmp_path, exported_repository):
    http, grpc, metrics = free_port(), free_port(), free_port()
    process = launch_serve(exported_repository, tmp_path, http, grpc, metrics)
    try:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            lines.append(line)
            if "mmsearch serve: ready" in line or not line:
                break
        assert f"ready on HTTP 127.0.0.1:{http}, gRPC 127.0.0.1:{grpc}, metrics 127.0.0.1:{metrics}" in "".join(
            lines
        ), lines
        assert port_is_open("127.0.0.1", grpc)
        lite = StoreSettings.resolve(tmp_path).lite_endpoint_file
        assert lite.exists()
        process.send_signal(signal.SIGTERM)
        assert process.wait(90) == 0
        assert not port_is_open("127.0.0.1", grpc) and not port_is_open("127.0.0.1", http)
        assert not lite.exists()
    finally:
        if process.poll() is None:
            process.kill()


def test_triton_errors_extracts_first_lines_and_status_table():
    log = (
        'I1123 13:16:20.1 1 server.cc:1] "started"\n'
        "E1123 13:16:23.4 2219 model_lifecycle.cc:642] "
        "\"failed to load 'echo' version 1: Internal: ImportError: nope\\n\\nAt:\\n  x.py(1)\"\n"
        "| echo  | 1       | UNAVAILABLE: Internal: ImportError: nope |\n"
    )
    assert triton_errors(log) == [
        "failed to load 'echo' version 1: Internal: ImportError: nope",
        "| echo  | 1       | UNAVAILABLE: Internal: ImportError: nope |",
    ]


def test_cli_without_a_server_fails_with_one_line(cli):
    result = cli("search", "hello", "--collection", "c", "--url", f"localhost:{free_port()}", check=False)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and "is not reachable or not ready" in result.stderr


def test_children_do_not_outlive_a_killed_serve(tmp_path, exported_repository):
    http, grpc, metrics = free_port(), free_port(), free_port()
    process = launch_serve(exported_repository, tmp_path, http, grpc, metrics)
    try:
        while "mmsearch serve: ready" not in (line := process.stdout.readline()) and line:
            pass
        assert port_is_open("127.0.0.1", grpc)
        process.kill()  # SIGKILL: no chance to clean up, so the children must notice by themselves
        process.wait(30)
        deadline = time.monotonic() + 60
        while port_is_open("127.0.0.1", grpc) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not port_is_open("127.0.0.1", grpc)
    finally:
        if process.poll() is None:
            process.kill()


def test_serve_on_a_data_dir_it_cannot_write_is_one_line(tmp_path, exported_repository, cli):
    # Once a traceback (PermissionError from mkdir); root writes anywhere, so a file stands in the way.
    (tmp_path / "a-file").write_text("")
    run = cli("serve", "--repository", str(exported_repository), "--data-dir", str(tmp_path / "a-file" / "data"),
              check=False, timeout=60)
    assert run.returncode == 1
    assert run.stderr.strip().splitlines() == [
        f"error: data dir {tmp_path}/a-file/data is not writable (Not a directory): pass --data-dir "
        "(or MMSEARCH_DATA_DIR) a folder this user can write"]
