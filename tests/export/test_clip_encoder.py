"""CLIP export on the tiny random-weight CLIP from conftest: CPU only, offline."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from mmsearch.export import clip_encoder as ce
from mmsearch.export import steps
from mmsearch.export.steps import PARITY_SENTENCES, ExportError

HUB_CLIP = "openai/clip-vit-base-patch32"


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    # The hub must never be contacted; the constant covers an already-imported huggingface_hub.
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture(scope="module")
def exported(tiny_clip_dir, tmp_path_factory) -> ce.ClipExport:
    return ce.export_clip(str(tiny_clip_dir), tmp_path_factory.mktemp("clip") / "out")


@pytest.fixture(scope="module")
def model(tiny_clip_dir):
    from transformers import CLIPModel

    return CLIPModel.from_pretrained(str(tiny_clip_dir)).eval()


@pytest.fixture(scope="module")
def tokenizer(exported):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(exported.tokenizer_dir), local_files_only=True)


def _session(path: Path):
    import onnxruntime as ort

    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _torch_text(model, ids: np.ndarray, mask: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        out = model.get_text_features(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask))
    return torch.nn.functional.normalize(ce._features(out), dim=-1).numpy()


def _onnx_text(session, tokenizer, sentences, **padding) -> tuple[np.ndarray, dict]:
    enc = tokenizer(sentences, truncation=True, max_length=77, return_tensors="np", **(padding or {"padding": True}))
    feeds = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
    return session.run(["embedding"], feeds)[0], feeds


def test_layout_and_metadata(exported, tiny_clip_dir):
    out = exported.text_onnx.parent.parent
    assert exported.text_onnx == out / "text" / "model.onnx" and exported.text_onnx.is_file()
    assert exported.image_onnx == out / "image" / "model.onnx" and exported.image_onnx.is_file()
    assert (exported.tokenizer_dir / "tokenizer_config.json").is_file()
    assert (exported.image_processor_dir / "preprocessor_config.json").is_file()
    assert (exported.embedding_dim, exported.max_text_length) == (16, 77)
    assert exported.text_parity_max_abs_diff <= 1e-4 and exported.image_parity_max_abs_diff <= 1e-4
    assert exported.parity_sentences == len(PARITY_SENTENCES) and exported.parity_images >= 8
    assert exported.source == str(tiny_clip_dir)
    record = json.loads((out / "export.json").read_text())
    assert record["text_onnx"] == "text/model.onnx" and record["image_onnx"] == "image/model.onnx"
    assert record["tokenizer_dir"] == "tokenizer" and record["image_processor_dir"] == "image_processor"
    assert record["text_parity_max_abs_diff"] == exported.text_parity_max_abs_diff
    # Nothing else: the staging folder is gone.
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "image", "image_processor", "text", "tokenizer"]


def _signature(values) -> list[tuple]:
    from onnx import TensorProto

    return [
        (v.name, TensorProto.DataType.Name(v.type.tensor_type.elem_type),
         [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim])
        for v in values
    ]


def test_onnx_signatures(exported):
    import onnx

    text = onnx.load(str(exported.text_onnx)).graph
    assert _signature(text.input) == [
        ("input_ids", "INT64", ["batch", "sequence"]),
        ("attention_mask", "INT64", ["batch", "sequence"]),
    ]
    assert _signature(text.output) == [("embedding", "FLOAT", ["batch", 16])]
    image = onnx.load(str(exported.image_onnx)).graph
    assert _signature(image.input) == [("pixel_values", "FLOAT", ["batch", 3, 224, 224])]
    assert _signature(image.output) == [("embedding", "FLOAT", ["batch", 16])]


@pytest.mark.parametrize("size", [1, 2, 5, len(PARITY_SENTENCES)])
def test_text_matches_torch_at_any_batch_and_length(exported, model, tokenizer, size):
    session = _session(exported.text_onnx)
    for start in range(0, len(PARITY_SENTENCES), size):
        got, feeds = _onnx_text(session, tokenizer, list(PARITY_SENTENCES[start : start + size]))
        expected = _torch_text(model, feeds["input_ids"], feeds["attention_mask"])
        assert got.shape == (len(feeds["input_ids"]), 16) and got.dtype == np.float32
        assert np.max(np.abs(got - expected)) <= 1e-4
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_text_padding_does_not_change_embeddings(exported, tokenizer):
    # pad id == EOS id: pooling must take the *first* EOS, so any amount of padding is invisible.
    session = _session(exported.text_onnx)
    sentences = ["a", "A photo of a dog playing fetch in the park.", "The cat sits on the mat."]
    assert tokenizer.pad_token_id == tokenizer.eos_token_id
    alone = np.concatenate([_onnx_text(session, tokenizer, [s])[0] for s in sentences])
    tight, feeds = _onnx_text(session, tokenizer, sentences)
    assert (feeds["input_ids"] == tokenizer.pad_token_id).sum() > len(sentences)  # some rows were padded
    full, feeds = _onnx_text(session, tokenizer, sentences, padding="max_length")
    assert feeds["input_ids"].shape == (3, 77)
    assert np.max(np.abs(tight - alone)) <= 1e-5 and np.max(np.abs(full - alone)) <= 1e-5


def test_image_matches_torch(exported, model):
    session = _session(exported.image_onnx)
    rng = np.random.default_rng(1)
    for batch in (1, 3, 8):
        pixels = rng.standard_normal((batch, 3, 224, 224)).astype(np.float32)
        (got,) = session.run(["embedding"], {"pixel_values": pixels})
        with torch.no_grad():
            expected = torch.nn.functional.normalize(
                ce._features(model.get_image_features(pixel_values=torch.from_numpy(pixels))), dim=-1
            ).numpy()
        assert got.shape == (batch, 16) and got.dtype == np.float32
        assert np.max(np.abs(got - expected)) <= 1e-4
        np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_exported_towers_serve_real_photos(exported):
    import skimage

    from mmsearch.model_repository.image_preprocess.image_preprocessing import ClipImagePreprocessor

    data = Path(skimage.__file__).parent / "data"
    pixels = ClipImagePreprocessor(exported.image_processor_dir)([(data / "rocket.jpg").read_bytes()])
    (got,) = _session(exported.image_onnx).run(["embedding"], {"pixel_values": pixels})
    assert got.shape == (1, 16) and abs(np.linalg.norm(got) - 1) < 1e-5


def test_unreachable_hub_is_a_clear_error_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ExportError) as info:
        ce.export_clip(HUB_CLIP, out)
    message = str(info.value)
    assert "\n" not in message
    assert "CLIP weights" in message and "Hugging Face hub is unreachable" in message
    assert "local directory with a CLIP checkpoint" in message
    assert not out.exists()


def test_hub_name_and_local_dir_share_one_load_path(tiny_clip_dir, tmp_path, monkeypatch):
    """The offline failure above and the tiny export below are the same code with another source."""
    from transformers import CLIPModel

    sources: list[str] = []
    original = CLIPModel.from_pretrained.__func__

    def spy(cls, source, *args, **kwargs):
        sources.append(str(source))
        return original(cls, source, *args, **kwargs)

    monkeypatch.setattr(CLIPModel, "from_pretrained", classmethod(spy))
    with pytest.raises(ExportError, match="hub is unreachable"):
        ce.export_clip(HUB_CLIP, tmp_path / "hub")
    model, tokenizer, image_processor = ce.load_clip(str(tiny_clip_dir))
    assert sources == [HUB_CLIP, str(tiny_clip_dir)]
    assert isinstance(model, CLIPModel) and not model.training
    assert type(image_processor).__name__ == "CLIPImageProcessorPil"
    assert tokenizer.eos_token_id == model.config.text_config.eos_token_id


def test_incomplete_checkpoint_is_refused_not_randomly_filled(tiny_clip_dir, tmp_path):
    from safetensors.torch import load_file, save_file

    broken = tmp_path / "broken"
    shutil.copytree(tiny_clip_dir, broken)
    weights = load_file(str(broken / "model.safetensors"))
    del weights["text_projection.weight"]
    save_file(weights, str(broken / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(
        ExportError, match=r"not a complete CLIP checkpoint: 1 weights missing \(text_projection.weight\)"
    ):
        ce.export_clip(str(broken), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_not_a_directory(tmp_path):
    with pytest.raises(ExportError, match="is not a directory"):
        ce.export_clip(str(tmp_path / "missing"), tmp_path / "out")


def test_failed_parity_writes_nothing_and_keeps_the_old_export(tiny_clip_dir, tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    (out / "export.json").write_text("{}")
    monkeypatch.setattr(steps, "PARITY_TOLERANCE", -1.0)
    with pytest.raises(ExportError, match="parity check failed for the CLIP text tower"):
        ce.export_clip(str(tiny_clip_dir), out)
    assert [p.name for p in out.iterdir()] == ["export.json"] and (out / "export.json").read_text() == "{}"


def test_legacy_eos_token_id(tiny_clip_dir, tmp_path):
    """openai/clip-vit-base-patch32's config says eos_token_id=2: HF then pools at argmax(input_ids)."""
    legacy = tmp_path / "legacy"
    shutil.copytree(tiny_clip_dir, legacy)
    config = json.loads((legacy / "config.json").read_text())
    config["text_config"].update(bos_token_id=0, eos_token_id=2, pad_token_id=1)
    (legacy / "config.json").write_text(json.dumps(config))
    result = ce.export_clip(str(legacy), tmp_path / "out")
    assert result.text_parity_max_abs_diff <= 1e-4
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(result.tokenizer_dir))
    session = _session(result.text_onnx)
    tight, _ = _onnx_text(session, tokenizer, ["a", "a photo of a cat on a mat"])
    full, _ = _onnx_text(session, tokenizer, ["a", "a photo of a cat on a mat"], padding="max_length")
    assert np.max(np.abs(tight - full)) <= 1e-5


def test_text_tower_of_another_dimension_is_refused(tiny_clip_dir, tmp_path, cli):
    from mmsearch.export.text_encoder import default_text_model

    result = cli("export", "--clip-model", str(tiny_clip_dir), "--clip-text-model", default_text_model(),
                 "--repository", str(tmp_path / "repo"), check=False)
    assert result.returncode == 1
    assert "gives 384-d vectors but the image tower" in result.stderr and "gives 16-d" in result.stderr
