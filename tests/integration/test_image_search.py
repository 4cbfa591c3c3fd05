"""Image search end to end with a tiny randomly initialised CLIP (no CLIP weights can be had here).

The tiny checkpoint goes through the same path a real one would: `mmsearch export
--clip-model DIR` -> tritonserver -> `mmsearch index --modality image` -> `search`. The
served top-k must equal the brute-force top-k computed in this process with the PyTorch
model on the same gallery. The rankings say nothing about quality (the weights are random);
they prove the plumbing is exact.
"""

from __future__ import annotations

import http.server
import json
import struct
import threading
import zlib
from functools import partial

import numpy as np
import pytest
import torch

from mmsearch.client.search_client import ClientError, SearchClient
from mmsearch.indexer.datasets import sample_photos
from mmsearch.model_repository.image_preprocess.image_preprocessing import decode_image
from mmsearch.settings import StoreSettings
from mmsearch.stores import VectorStore

pytestmark = pytest.mark.integration
COLLECTION = "photos"
TOP_K = 5
TEXT_QUERIES = ["a cat", "an astronaut in space", "a cup of coffee", "a red motorcycle", "coins on a table", "the moon"]


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height (no pixel data to speak of)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = struct.pack(">I", len(ihdr)) + b"IHDR" + ihdr + struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return b"\x89PNG\r\n\x1a\n" + chunk + b"\x00\x00\x00\x00IEND\xaeB`\x82"


BAD_FILES = {
    "broken/corrupt.jpg": lambda good: good[: len(good) // 3],  # a truncated JPEG
    "broken/empty.png": lambda good: b"",
    "broken/huge.png": lambda good: png_header(20000, 20000),
    "broken/notes.txt": lambda good: b"not an image at all\n",
}


@pytest.fixture(scope="module")
def gallery(tmp_path_factory):
    root = sample_photos(tmp_path_factory.mktemp("gallery") / "photos")
    good = sorted(p.relative_to(root).as_posix() for p in root.iterdir())
    jpeg = (root / "rocket.jpg").read_bytes()
    for name, make in BAD_FILES.items():
        (root / name).parent.mkdir(exist_ok=True)
        (root / name).write_bytes(make(jpeg))
    return root, good


@pytest.fixture(scope="module")
def served(tmp_path_factory, clip_repository, start_triton, gallery, cli):
    repo, export = clip_repository
    data_dir = tmp_path_factory.mktemp("clip-data")
    server = start_triton(repo, StoreSettings.resolve(data_dir))
    url = f"localhost:{server.ports.grpc}"
    index_args = ["index", "--modality", "image", "--input", str(gallery[0]), "--collection", COLLECTION,
                  "--url", url, "--data-dir", str(data_dir)]
    return {"server": server, "url": url, "data_dir": data_dir, "export": export, "index_args": index_args,
            "index": cli(*index_args)}


@pytest.fixture(scope="module")
def reference(tiny_clip_dir, gallery):
    """Brute force in PyTorch: normalised image and text features of the tiny CLIP."""
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    model = CLIPModel.from_pretrained(tiny_clip_dir).eval()
    processor = AutoImageProcessor.from_pretrained(tiny_clip_dir, backend="pil")
    tokenizer = AutoTokenizer.from_pretrained(tiny_clip_dir)
    root, ids = gallery
    images = [decode_image((root / i).read_bytes()) for i in ids]

    def normalised(output):
        tensor = getattr(output, "pooler_output", output)
        return torch.nn.functional.normalize(tensor, dim=-1).numpy()

    with torch.no_grad():
        pixels = processor(images=images, return_tensors="pt")["pixel_values"]
        image_vectors = normalised(model.get_image_features(pixel_values=pixels))
        tokens = tokenizer(TEXT_QUERIES, padding=True, truncation=True, max_length=77, return_tensors="pt")
        text_vectors = normalised(model.get_text_features(**tokens))
    return ids, image_vectors, dict(zip(TEXT_QUERIES, text_vectors, strict=True))


def brute_force_top(ids, image_vectors, query_vector, k=TOP_K):
    scores = image_vectors @ query_vector
    order = np.argsort(-scores, kind="stable")[:k]
    return [(ids[i], float(scores[i])) for i in order]


def assert_same_ranking(result, expected):
    served = [(hit["id"], hit["score"]) for hit in result["hits"]]
    assert [s[0] for s in served] == [e[0] for e in expected]
    worst = max(abs(s[1] - e[1]) for s, e in zip(served, expected, strict=True))
    assert worst <= 1e-3
    return worst


def test_export_reports_parity_for_both_towers(served):
    assert "parity vs PyTorch: text" in served["export"].stdout
    for model in (
        "clip_text_tokenizer", "clip_text_encoder", "clip_text_embed", "image_preprocess", "clip_image_encoder",
        "clip_image_embed", "search",
    ):
        assert model in served["export"].stdout


def test_bad_files_are_reported_by_name_and_the_rest_indexed(served, gallery):
    root, good = gallery
    stderr = served["index"].stderr
    for name, reason in [("corrupt.jpg", "corrupt or truncated image"), ("empty.png", "empty image data"),
                         ("huge.png", "image is 20000x20000 pixels"), ("notes.txt", "not an image")]:
        line = next((line for line in stderr.splitlines() if name in line), "")
        assert reason in line and str(root / "broken" / name) in line, stderr
    assert f"indexed {len(good)} documents" in served["index"].stdout
    assert f"{len(BAD_FILES)} skipped" in served["index"].stdout
    assert VectorStore(StoreSettings.resolve(served["data_dir"]).connect_uri()).count(COLLECTION) == len(good)


def test_text_queries_match_pytorch_brute_force(served, reference):
    ids, image_vectors, text_vectors = reference
    client = SearchClient(served["url"])
    worst = 0.0
    for query in TEXT_QUERIES:
        result = client.search(query, COLLECTION, TOP_K)
        assert result["query_modality"] == "text"
        worst = max(worst, assert_same_ranking(result, brute_force_top(ids, image_vectors, text_vectors[query])))
    print(
        f"\n{len(TEXT_QUERIES)} text queries: served top-{TOP_K} == PyTorch brute force, max |score diff| {worst:.2e}"
    )


def test_image_queries_match_brute_force_and_find_themselves_first(served, reference, gallery):
    ids, image_vectors, _ = reference
    client = SearchClient(served["url"])
    worst, self_scores = 0.0, []
    for i, image_id in enumerate(ids):
        result = client.search("", COLLECTION, TOP_K, image=(gallery[0] / image_id).read_bytes())
        worst = max(worst, assert_same_ranking(result, brute_force_top(ids, image_vectors, image_vectors[i])))
        assert result["hits"][0]["id"] == image_id and result["hits"][0]["score"] >= 0.999
        self_scores.append(result["hits"][0]["score"])
    print(f"\n{len(ids)} image queries: served top-{TOP_K} == brute force, max |score diff| {worst:.2e}, "
          f"each finds itself first (min score {min(self_scores):.6f})")


def test_hits_carry_what_a_ui_needs(served, gallery):
    result = SearchClient(served["url"]).search("a cat", COLLECTION, 3)
    document = result["hits"][0]["document"]
    assert set(document) >= {"id", "path", "file_name", "width", "height"}
    with open(document["path"], "rb") as handle:
        assert decode_image(handle.read()).size == (document["width"], document["height"])


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_bad_image_queries_get_clear_errors_and_server_keeps_serving(served, gallery, protocol):
    port = served["server"].ports.grpc if protocol == "grpc" else served["server"].ports.http
    client = SearchClient(f"localhost:{port}", protocol)
    cat = (gallery[0] / "chelsea.png").read_bytes()
    for data, message in [(b"plain text", "not an image"), (png_header(20000, 20000), "image is 20000x20000 pixels"),
                          (cat[: len(cat) // 2], "corrupt or truncated image"), (b"", "IMAGE is empty")]:
        with pytest.raises(ClientError, match=message):
            client.search("", COLLECTION, 3, image=data)
        assert client.search("", COLLECTION, 3, image=cat)["hits"][0]["id"] == "chelsea.png"


def test_reindexing_the_folder_keeps_the_size(served, gallery, cli):
    again = cli(*served["index_args"])
    assert f"collection now holds {len(gallery[1])} vectors" in again.stdout


def test_jsonl_manifest_with_paths_and_urls_keeps_user_fields(served, gallery, tmp_path, cli):
    root, _ = gallery
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        manifest = tmp_path / "gallery.jsonl"
        manifest.write_text("\n".join(json.dumps(r) for r in [
            {"id": "cat", "path": str(root / "chelsea.png"), "caption": "Chelsea the cat", "license": "public domain"},
            {"id": "rocket", "path": f"http://127.0.0.1:{httpd.server_port}/rocket.jpg", "caption": "a rocket"},
            {"id": "gone", "path": f"http://127.0.0.1:{httpd.server_port}/missing.jpg"},
            {"id": "nopath"},
        ]))
        out = cli("index", "--modality", "image", "--input", str(manifest), "--collection", "manifest",
                  "--url", served["url"], "--data-dir", str(served["data_dir"]))
    finally:
        httpd.shutdown()
    assert "indexed 2 documents" in out.stdout and "2 skipped" in out.stdout
    assert "missing.jpg: cannot read" in out.stderr and "missing path field 'path'" in out.stderr
    client = SearchClient(served["url"])
    hits = {hit["id"]: hit["document"] for hit in client.search("a cat", "manifest", 5)["hits"]}
    assert hits["cat"]["caption"] == "Chelsea the cat" and hits["cat"]["width"] == 451
    assert hits["rocket"]["url"].endswith("/rocket.jpg")


def test_text_and_image_collections_share_one_server(served, gallery, tmp_path, cli):
    docs = tmp_path / "docs.jsonl"
    docs.write_text(json.dumps({"id": "1", "text": "a photo of a cat"}) + "\n")
    cli(
        "index", "--input", str(docs), "--collection", "words", "--url", served["url"], "--data-dir",
        str(served["data_dir"]),
    )
    client = SearchClient(served["url"])
    assert client.search("cats", "words", 3)["hits"][0]["id"] == "1"
    with pytest.raises(
        ClientError, match="collection 'words' holds text documents and cannot be searched with an image query"
    ):
        client.search("", "words", 3, image=(gallery[0] / "chelsea.png").read_bytes())


def test_separate_text_tower_replaces_clips_own(tmp_path_factory, tiny_clip_dir, tiny_clip_text_tower_dir, start_triton,
                                                gallery, reference, cli):
    """`--clip-text-model` (e.g. a multilingual tower aligned to CLIP's image space) serves text queries."""
    from sentence_transformers import SentenceTransformer

    repo = tmp_path_factory.mktemp("tower-repo") / "repository"
    out = cli("export", "--clip-model", str(tiny_clip_dir), "--clip-text-model", str(tiny_clip_text_tower_dir),
              "--repository", str(repo), "--backend", "python")
    assert "as clip_text_embed" in out.stdout
    data_dir = tmp_path_factory.mktemp("tower-data")
    server = start_triton(repo, StoreSettings.resolve(data_dir))
    url = f"localhost:{server.ports.grpc}"
    cli(
        "index", "--modality", "image", "--input", str(gallery[0]), "--collection", COLLECTION, "--url", url,
        "--data-dir", str(data_dir),
    )
    ids, image_vectors, _ = reference
    tower = SentenceTransformer(str(tiny_clip_text_tower_dir), device="cpu")
    client = SearchClient(url)
    for query, vector in zip(TEXT_QUERIES, tower.encode(TEXT_QUERIES, normalize_embeddings=True), strict=True):
        assert_same_ranking(client.search(query, COLLECTION, TOP_K), brute_force_top(ids, image_vectors, vector))
