"""Text encoder export: real all-MiniLM-L6-v2 from the gt package, CPU only, offline."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from mmsearch.export import steps
from mmsearch.export import text_encoder as te


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # The hub must never be contacted; the constant covers an already-imported huggingface_hub.
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def exported(tmp_path_factory) -> te.TextEncoderExport:
    return te.export_text_encoder(te.default_text_model(), tmp_path_factory.mktemp("text_encoder"))


@pytest.fixture(scope="module")
def session(exported):
    import onnxruntime as ort

    return ort.InferenceSession(str(exported.onnx_path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def tokenizer(exported):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(exported.tokenizer_dir), local_files_only=True)


def _embed(session, tokenizer, sentences, max_length=256):
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=max_length, return_tensors="np")
    feeds = {k: batch[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    return session.run(["embedding"], feeds)[0], feeds["input_ids"].shape


def test_export_layout_and_metadata(exported):
    out = exported.onnx_path.parent
    assert exported.onnx_path == out / "model.onnx" and exported.onnx_path.is_file()
    assert (exported.tokenizer_dir / "tokenizer_config.json").is_file()
    assert exported.embedding_dim == 384
    assert exported.max_seq_length == 256
    assert exported.parity_sentences >= 32
    assert exported.parity_max_abs_diff <= 1e-4
    assert exported.source == te.default_text_model()
    record = json.loads((out / "export.json").read_text())
    assert record["onnx_path"] == "model.onnx" and record["tokenizer_dir"] == "tokenizer"
    # Nothing but the three artifacts: the staging folder is gone.
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.onnx", "tokenizer"]


def test_graph_signature(session):
    inputs = {i.name: (i.type, i.shape) for i in session.get_inputs()}
    assert inputs == {
        "input_ids": ("tensor(int64)", ["batch", "sequence"]),
        "attention_mask": ("tensor(int64)", ["batch", "sequence"]),
    }
    (output,) = session.get_outputs()
    assert (output.name, output.type, output.shape) == ("embedding", "tensor(float)", ["batch", 384])


def test_parity_sentences_cover_truncation(tokenizer):
    lengths = [len(tokenizer(s)["input_ids"]) for s in steps.PARITY_SENTENCES]
    assert max(lengths) > 256 and min(lengths) <= 3


def test_dynamic_batch_and_sequence(session, tokenizer, exported):
    one, shape_one = _embed(session, tokenizer, ["a short query"])
    five_sentences = [
        "A man is eating food.",
        "The new movie is awesome and everybody should watch it this weekend.",
        "x",
        "Ein Mann isst etwas.",
        "Transformers turn tokens into vectors; pooling turns vectors into one embedding. " * 5,
    ]
    five, shape_five = _embed(session, tokenizer, five_sentences)
    assert shape_one[0] == 1 and shape_five[0] == 5 and shape_one[1] != shape_five[1]
    assert one.shape == (1, exported.embedding_dim) and five.shape == (5, exported.embedding_dim)
    for emb in (one, five):
        np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, atol=1e-5)
    # Padding must not leak into the pooled vector: alone vs inside a padded batch.
    alone, _ = _embed(session, tokenizer, [five_sentences[2]])
    np.testing.assert_allclose(alone[0], five[2], atol=1e-5)


def test_matches_sentence_transformers_outside_parity_set(session, tokenizer):
    sentences = ["semantic search on triton", "Wie spät ist es?", "1 2 3 4 5", "word " * 400]
    got, _ = _embed(session, tokenizer, sentences)
    model = te.load_sentence_transformer(te.default_text_model())
    expected = model.encode(sentences, normalize_embeddings=True, convert_to_numpy=True)
    assert np.max(np.abs(got - expected)) <= 1e-4


def test_unreachable_hub_raises_clear_error():
    with pytest.raises(te.ExportError) as info:
        te.load_sentence_transformer("openai/definitely-not-here")
    message = str(info.value)
    assert "\n" not in message
    assert "hub" in message and "local" in message and "openai/definitely-not-here" in message


def test_missing_local_path_is_not_a_hub_lookup(tmp_path):
    with pytest.raises(te.ExportError, match="not a directory"):
        te.load_sentence_transformer(str(tmp_path / "nope"))


def test_failed_parity_leaves_no_model(tmp_path, monkeypatch):
    monkeypatch.setattr(steps, "PARITY_TOLERANCE", -1.0)  # any real diff now fails
    out = tmp_path / "out"
    with pytest.raises(te.ExportError, match="parity check failed"):
        te.export_text_encoder(te.default_text_model(), out)
    assert not (out / "model.onnx").exists()
    assert list(out.iterdir()) == []  # no export.json, tokenizer or staging leftovers


def test_cls_pooling_follows_model_config(tmp_path):
    # Same weights, CLS pooling: the graph must pool like the model says, not always mean.
    model_dir = tmp_path / "minilm-cls"
    shutil.copytree(te.default_text_model(), model_dir)
    pooling_config = model_dir / "1_Pooling" / "config.json"
    config = json.loads(pooling_config.read_text())
    config.update(pooling_mode_cls_token=True, pooling_mode_mean_tokens=False)
    pooling_config.write_text(json.dumps(config))

    result = te.export_text_encoder(str(model_dir), tmp_path / "out")
    assert result.parity_max_abs_diff <= 1e-4
    assert te.load_sentence_transformer(str(model_dir))[1].pooling_mode == "cls"


def test_dense_projection_head_is_exported_inside_the_graph(tiny_clip_text_tower_dir, tmp_path):
    """Multilingual CLIP text towers end in a Dense 768->512 head; it must not be dropped."""
    exported = te.export_text_encoder(str(tiny_clip_text_tower_dir), tmp_path / "tower")
    assert exported.embedding_dim == 16 and exported.max_seq_length == 128
    assert exported.parity_max_abs_diff <= 1e-4
