"""`mmsearch demo` (what `make demo` runs) reaches its example searches with real results."""

import re
import shutil

import pytest

from mmsearch.processes import free_port

pytestmark = pytest.mark.integration


def run_demo(cli, data_dir, repository, *extra):
    ports = ["--http-port", str(free_port()), "--grpc-port", str(free_port()), "--metrics-port", str(free_port()),
             "--ui-port", str(free_port())]
    return cli("demo", "--exit", "--data-dir", str(data_dir), "--repository", str(repository), *ports, *extra)


def test_demo_without_clip_weights_says_so_and_searches_text(tmp_path, exported_repository, cli):
    repository = tmp_path / "repository"
    shutil.copytree(exported_repository, repository)
    out = run_demo(cli, tmp_path, repository).stdout  # default CLIP: openai/clip-vit-base-patch32, hub unreachable
    assert (
        "image search is off in this demo: CLIP weights for 'openai/clip-vit-base-patch32' could not be loaded" in out
    )
    assert "collection now holds 2025 vectors and 2025 documents" in out
    assert "3 hits for 'tell me a joke' in chatterbot" in out
    assert re.search(r"^search page: http://localhost:\d+$", out, re.M)  # started and answering its health check
    assert "[humor-" in out  # the joke query finds the humour category first
    assert out.rstrip().endswith("stopping tritonserver")


def test_demo_with_a_clip_checkpoint_indexes_and_searches_photos(tmp_path, exported_repository, tiny_clip_dir, cli):
    repository = tmp_path / "repository"
    shutil.copytree(exported_repository, repository)
    out = run_demo(cli, tmp_path, repository, "--clip-model", str(tiny_clip_dir)).stdout
    assert "indexed 16 documents into 'photos'" in out
    assert "3 hits for 'a cat' in photos" in out
    assert "image -> image with astronaut.png:" in out
    assert "1. 1.000  [astronaut.png] astronaut.png" in out  # the query photo finds itself first


def test_demo_in_chinese_indexes_the_chinese_faq_with_the_multilingual_encoder(tmp_path, exported_repository, cli):
    repository = tmp_path / "repository"
    shutil.copytree(exported_repository, repository)
    out = run_demo(cli, tmp_path, repository, "--lang", "zh", "--clip-model", str(tmp_path / "no-clip")).stdout
    assert "wrapping ONNX text encoder use-multilingual as multilingual_text_embed" in out
    assert "indexed 147 documents into 'debian_faq_zh'" in out
    assert "3 hits for '如何升级我的 Debian 系统？' in debian_faq_zh" in out
    # the Chinese headings of the top hits are printed as they are, e.g. "[faq-9.1.1] aptitude"
    assert re.search(r"^  1\. 0\.\d{3}  \[faq-[\d.]+\] .*[\u4e00-\u9fff]", out, re.M)
    assert "3 hits for 'How do I upgrade my system?' in debian_faq_zh" in out  # English query, Chinese answers
    assert out.rstrip().endswith("stopping tritonserver")
