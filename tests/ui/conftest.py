"""One real Triton for the UI tests: MiniLM and the tiny CLIP, the Debian FAQ (English, and the
Chinese translation for how the page shows it) and the sample photos indexed through the CLI,
and an experiment config with two rank arms."""

from __future__ import annotations

import pytest

from mmsearch.indexer.datasets import debian_faq, sample_photos, write_jsonl
from mmsearch.settings import StoreSettings

EXPERIMENTS = """
salt: ui-tests
scenes:
  faq:
    collection: debian_faq
    layers:
      rank:
        - {name: truncate, ratio: 0.5}
        - {name: mmr, ratio: 0.5, params: {lambda: 0.7}}
"""
# A Debian FAQ heading-style question whose section wins by a wide margin (0.70 vs 0.57).
QUERY = "Where can I get the Debian source code?"
TOP_HIT = ("faq-6.9", "Where is the source code?")
ZH_COLLECTION = "debian_faq_zh"


@pytest.fixture(scope="session")
def ui_server(tmp_path_factory, clip_repository, start_triton, cli):
    base = tmp_path_factory.mktemp("ui")
    (base / "experiments.yaml").write_text(EXPERIMENTS)
    server = start_triton(clip_repository[0], StoreSettings.resolve(base / "data"), base / "experiments.yaml")
    url = f"localhost:{server.ports.grpc}"
    faq = write_jsonl(debian_faq().documents, base / "faq.jsonl")
    photos = sample_photos(base / "photos")
    common = ["--url", url, "--data-dir", str(base / "data")]
    cli("index", "--input", str(faq), "--collection", "debian_faq", "--text-field", "answer", *common)
    cli("index", "--input", str(photos), "--collection", "photos", "--modality", "image", *common)
    # MiniLM: the page's rendering is under test here, not Chinese retrieval (tests/integration).
    zh_faq = write_jsonl(debian_faq(lang="zh").documents, base / "faq.zh.jsonl")
    cli("index", "--input", str(zh_faq), "--collection", ZH_COLLECTION, "--text-field", "answer", *common)
    return {"url": url, "photos": photos, "query": QUERY, "top_hit": TOP_HIT, "zh_collection": ZH_COLLECTION}
