"""`mmsearch demo` (what `make demo` runs) reaches its example searches with real results."""

import pytest

from mmsearch.model_repository.server import free_port

pytestmark = pytest.mark.integration


def test_demo_indexes_chatterbot_and_prints_search_results(tmp_path, exported_repository, cli):
    out = cli("demo", "--exit", "--data-dir", str(tmp_path), "--repository", str(exported_repository),
              "--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port()))
    assert "collection now holds 2025 vectors and 2025 documents" in out.stdout
    assert "3 hits for 'tell me a joke' in chatterbot" in out.stdout
    assert "[humor-" in out.stdout  # the joke query finds the humour category first
    assert out.stdout.rstrip().endswith("stopping tritonserver")
