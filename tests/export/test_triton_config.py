"""Golden config.pbtxt files: every config we generate parses into Triton's ModelConfig,
and a change to what we generate shows up as a diff against tests/export/golden/.

Regenerate after an intended change with: MMSEARCH_UPDATE_GOLDEN=1 pytest tests/export/test_triton_config.py
"""

import json
import os
from pathlib import Path

import pytest
from tritonclient.grpc import model_config_pb2 as mc

from mmsearch.export import repository as r
from mmsearch.export import triton_config as tc
from mmsearch.export.triton_config import FP32, INT64, Tensor
from mmsearch.model_repository.contract import TEXT_TOWER

GOLDEN = Path(__file__).parent / "golden"
CPU = r.ServingOptions(backend="python", device="cpu", cores=2)
GPU_TRT = r.ServingOptions(backend="onnxruntime", device="cuda", precision="fp16", cores=16)
ENCODER_IO = (
    [Tensor("input_ids", INT64, (-1,)), Tensor("attention_mask", INT64, (-1,))],
    [Tensor("embedding", FP32, (384,))],
)

CONFIGS = {
    "text_tokenizer": r.tokenizer_config("text_tokenizer", 256, CPU),
    "text_encoder_python_cpu": r.encoder_config("text_encoder", *ENCODER_IO, CPU),
    "text_encoder_onnxruntime_cpu": r.encoder_config(
        "text_encoder", *ENCODER_IO, r.ServingOptions(backend="onnxruntime", cores=2)
    ),
    "text_encoder_onnxruntime_cuda_fp16": r.encoder_config("text_encoder", *ENCODER_IO, GPU_TRT),
    "text_embed": r.text_embed_config(TEXT_TOWER, 384, CPU),
    # --text-onnx: one model whose graph tokenizes itself, its custom ops registered either way
    "text_embed_onnx_python_cpu": r.encoder_config("multilingual_text_embed", *r.text_embed_io(512), CPU,
                                                   "onnxruntime-extensions"),
    "text_embed_onnx_onnxruntime_cpu": r.encoder_config(
        "multilingual_text_embed", *r.text_embed_io(512), r.ServingOptions(backend="onnxruntime", cores=2),
        "/opt/ortextensions/lib/libortextensions.so",
    ),
    "search": r.search_config(CPU),
    "image_preprocess": r.image_preprocess_config((224, 224), CPU),
    "clip_image_embed": r.image_embed_config(512, CPU),
}


@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_config_matches_golden_file_and_parses(name):
    text = tc.to_text(CONFIGS[name])
    golden = GOLDEN / f"{name}.pbtxt"
    if os.environ.get("MMSEARCH_UPDATE_GOLDEN"):
        golden.parent.mkdir(exist_ok=True)
        golden.write_text(text)
    assert text == golden.read_text()
    parsed = tc.parse(golden.read_text())
    assert isinstance(parsed, mc.ModelConfig) and parsed == CONFIGS[name]


@pytest.mark.parametrize(
    "name",
    [
        "text_tokenizer", "text_encoder_python_cpu", "text_encoder_onnxruntime_cpu", "text_embed", "image_preprocess",
        "clip_image_embed", "text_embed_onnx_python_cpu", "text_embed_onnx_onnxruntime_cpu",
    ],
)
def test_models_that_feed_ensembles_take_batches(name):
    assert CONFIGS[name].max_batch_size > 0


def test_on_cpu_only_encoders_merge_requests_and_without_waiting():
    # Measured: a batching tokenizer hands the encoder one padded lump that a single instance
    # takes while the other idles (185 vs 237-247 text_embed queries/s at concurrency 16).
    for name in ("text_encoder_python_cpu", "text_encoder_onnxruntime_cpu"):
        assert CONFIGS[name].HasField("dynamic_batching")
        assert CONFIGS[name].dynamic_batching == mc.ModelDynamicBatching()  # what is waiting, no delay
    for name in ("text_tokenizer", "image_preprocess"):
        assert not CONFIGS[name].HasField("dynamic_batching")
    gpu_encoder = CONFIGS["text_encoder_onnxruntime_cuda_fp16"].dynamic_batching
    assert list(gpu_encoder.preferred_batch_size) == [8, 16, 32] and gpu_encoder.max_queue_delay_microseconds == 1000
    assert r.tokenizer_config("text_tokenizer", 256, GPU_TRT).HasField("dynamic_batching")


def test_fp16_uses_the_tensorrt_accelerator_on_gpu_instances():
    config = CONFIGS["text_encoder_onnxruntime_cuda_fp16"]
    accelerator = config.optimization.execution_accelerators.gpu_execution_accelerator[0]
    assert accelerator.name == "tensorrt" and accelerator.parameters["precision_mode"] == "FP16"
    assert config.instance_group[0].kind == mc.ModelInstanceGroup.KIND_GPU


@pytest.mark.parametrize(
    "options, message",
    [
        (r.ServingOptions(backend="python", device="cuda", precision="fp16"), "fp16 needs"),
        (r.ServingOptions(backend="tensorflow"), "unknown backend"),
        (r.ServingOptions(device="tpu"), "unknown device"),
    ],
)
def test_invalid_serving_options_are_rejected(options, message):
    with pytest.raises(r.RenderError, match=message):
        options.validate()


def test_auto_backend_follows_what_the_server_has(tmp_path, monkeypatch):
    monkeypatch.delenv("TRITON_BACKENDS_DIR", raising=False)
    monkeypatch.setattr(r, "NGC_BACKENDS_DIR", str(tmp_path / "no-ngc-here"))
    assert r.resolve_backend("auto") == "python"  # the pip wheel's Triton: python backend only
    (tmp_path / "onnxruntime").mkdir()
    assert r.resolve_backend("auto", tmp_path) == "onnxruntime"
    assert r.resolve_backend("python", tmp_path) == "python"


def test_every_config_in_an_exported_repository_parses(exported_repository):
    configs = sorted(exported_repository.glob("*/config.pbtxt"))
    assert {p.parent.name for p in configs} == {"text_tokenizer", "text_encoder", "text_embed", "search"}
    for path in configs:
        parsed = tc.parse(path.read_text())
        assert parsed.name == path.parent.name
    provenance = json.loads((exported_repository / "text_encoder" / "1" / "export.json").read_text())
    assert provenance["parity_max_abs_diff"] <= 1e-4 and provenance["embedding_dim"] == 384


@pytest.mark.parametrize(
    "options, encoders, threads, tokenizers, searches",
    [
        (r.ServingOptions(cores=1), 1, 1, 1, 1),
        (r.ServingOptions(cores=2), 2, 1, 1, 2),  # the measured machine
        (r.ServingOptions(cores=16), 8, 2, 2, 8),
        (r.ServingOptions(cores=64), 8, 8, 8, 8),
        (r.ServingOptions(backend="onnxruntime", device="cuda", cores=16), 2, 1, 2, 8),
    ],
)
def test_instances_and_threads_follow_device_and_cores(options, encoders, threads, tokenizers, searches):
    encoder = r.encoder_config("text_encoder", *ENCODER_IO, options)
    assert (encoder.instance_group[0].count, options.encoder_threads) == (encoders, threads)
    assert options.device == "cuda" or encoders * threads <= options.cores  # no core oversubscribed
    assert r.tokenizer_config("text_tokenizer", 256, options).instance_group[0].count == tokenizers
    assert r.search_config(options).instance_group[0].count == searches
