"""Render a deployable Triton model repository from exported encoders and our python models.

    <repo>/text_tokenizer/{config.pbtxt, 1/model.py, 1/tokenizer/}
    <repo>/text_encoder/{config.pbtxt, 1/model.onnx, 1/export.json [, 1/model.py for the python runner]}
    <repo>/text_embed/{config.pbtxt, 1/}            ensemble: tokenizer -> encoder
    <repo>/NAME_embed/{config.pbtxt, 1/model.onnx}  or one model, for a graph that tokenizes itself
    <repo>/clip_text_{tokenizer,encoder,embed}/     the CLIP text tower, same shape as text_*
    <repo>/image_preprocess/{config.pbtxt, 1/model.py, 1/image_processor/}
    <repo>/clip_image_encoder/, <repo>/clip_image_embed/   ensemble: image_preprocess -> clip_image_encoder
    <repo>/search/{config.pbtxt, 1/model.py}        BLS: embed -> Milvus -> documents
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from mmsearch.errors import MmsearchError
from mmsearch.export import triton_config as tc
from mmsearch.export.triton_config import BYTES, FP32, INT32, INT64, Batching, EnsembleStep, Tensor
from mmsearch.model_repository import contract as c

MODEL_SOURCES = resources.files("mmsearch.model_repository")
BACKENDS = ("auto", "python", "onnxruntime")
NGC_BACKENDS_DIR = "/opt/tritonserver/backends"  # where NGC Triton images keep their backends
# Caps for big machines, where a few multi-threaded instances beat dozens of processes.
MAX_CPU_ENCODER_INSTANCES = 8
MAX_SEARCH_INSTANCES = 8
SEARCH_MAX_BATCH = 32
CORES_PER_PREPROCESSOR = 8


class RenderError(MmsearchError):
    pass


@dataclass(frozen=True)
class ServingOptions:
    backend: str = "python"  # resolved: "python" or "onnxruntime"
    device: str = "cpu"
    precision: str = "fp32"
    cores: int = os.cpu_count() or 1
    max_batch_size: int = 64

    def validate(self) -> None:
        if self.backend not in ("python", "onnxruntime"):
            raise RenderError(f"unknown backend {self.backend!r}: use python or onnxruntime")
        if self.device not in ("cpu", "cuda"):
            raise RenderError(f"unknown device {self.device!r}: use cpu or cuda")
        if self.precision not in ("fp32", "fp16"):
            raise RenderError(f"unknown precision {self.precision!r}: use fp32 or fp16")
        if self.precision == "fp16" and (self.device != "cuda" or self.backend != "onnxruntime"):
            raise RenderError("--precision fp16 needs --device cuda --backend onnxruntime (TensorRT accelerator)")

    # Measured on 2 cores with perf_analyzer, text_embed at concurrency 16 (`mmsearch bench`):
    # - one encoder instance with 2 onnxruntime threads: 111 queries/s; two single-threaded
    #   instances: 180-191/s (short queries leave a 2-thread session half idle);
    # - tokenizer batching off: 237-247/s against 185/s with it on. A batched tokenizer pads
    #   queries to a common length and hands them on together, so one encoder instance gets
    #   them all while the other idles. A second tokenizer instance gained nothing.
    # - the encoder merges only requests already waiting (no queue delay, no preferred sizes):
    #   a 1 ms or 4 ms delay bought no throughput on CPU and cost latency at low load.
    # A GPU wants large batches: there the tokenizer batches and the encoder waits up to 1 ms
    # for 8/16/32 (not measured here: no GPU on these machines).
    @property
    def encoder_instances(self) -> int:
        return 2 if self.gpu else min(self.cores, MAX_CPU_ENCODER_INSTANCES)

    @property
    def encoder_threads(self) -> int:
        """onnxruntime intra-op threads per instance: together they use each core once."""
        return 1 if self.gpu else max(1, self.cores // self.encoder_instances)

    @property
    def gpu(self) -> bool:
        return self.device == "cuda"

    @property
    def preprocess_batching(self) -> Batching:
        """Tokenizers and image_preprocess (python, CPU)."""
        return Batching(
            self.max_batch_size, (), 500, instances=-(-self.cores // CORES_PER_PREPROCESSOR), dynamic=self.gpu
        )

    @property
    def encoder_batching(self) -> Batching:
        if self.gpu:  # two instances so that copies overlap compute
            return Batching(self.max_batch_size, (8, 16, 32), 1000, instances=self.encoder_instances, gpu=True)
        return Batching(self.max_batch_size, (), 0, instances=self.encoder_instances)

    @property
    def search_instances(self) -> int:
        # With dynamic batching, one per core: each batch's embedding call keeps an encoder busy
        # while the other instance searches Milvus. Measured at c=16 on 2 cores (mmsearch bench
        # --profile): 1 instance 66 searches/s (one encoder idles), 2 instances 85/s, 4 instances 75/s.
        return min(self.cores, MAX_SEARCH_INSTANCES)

    @property
    def search_batching(self) -> Batching:
        """The requests waiting when an instance frees up are searched together: one embedding
        call, one Milvus search and one document read for all of them."""
        return Batching(SEARCH_MAX_BATCH, (), 0, instances=self.search_instances)


def resolve_backend(backend: str, backends_dir: str | os.PathLike | None = None) -> str:
    """`auto` picks what the target server has: the native onnxruntime backend where it is
    installed (NGC containers), the python runner otherwise (the nvidia-pytriton wheel)."""
    if backend not in BACKENDS:
        raise RenderError(f"unknown backend {backend!r}: choose one of {', '.join(BACKENDS)}")
    if backend != "auto":
        return backend
    candidates = [backends_dir, os.environ.get("TRITON_BACKENDS_DIR"), NGC_BACKENDS_DIR]
    has_ort = any(d and (Path(d) / "onnxruntime").is_dir() for d in candidates)
    return "onnxruntime" if has_ort else "python"


def _copy_python_model(source: str, version_dir: Path) -> None:
    version_dir.mkdir(parents=True, exist_ok=True)
    (version_dir / "model.py").write_text((MODEL_SOURCES / source / "model.py").read_text())


def _replace_dir(path: Path) -> Path:
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


TOKEN_TENSORS = (Tensor(c.INPUT_IDS, INT64, (-1,)), Tensor(c.ATTENTION_MASK, INT64, (-1,)))


def tokenizer_config(name: str, max_seq_length: int, options: ServingOptions):
    return tc.python_model(
        name,
        [Tensor(c.TEXT, BYTES, (1,))],
        list(TOKEN_TENSORS),
        options.preprocess_batching,
        {"max_seq_length": max_seq_length},
    )


def encoder_config(name: str, inputs, outputs, options: ServingOptions, custom_op_library: str = ""):
    threads = options.encoder_threads
    if options.backend == "onnxruntime":
        return tc.onnxruntime_model(
            name, inputs, outputs, options.encoder_batching,
            tensorrt_fp16=options.precision == "fp16", intra_op_threads=threads, op_library=custom_op_library,
        )
    parameters = {"intra_op_threads": threads}
    if custom_op_library:
        parameters["custom_op_library"] = custom_op_library
    return tc.python_model(name, inputs, outputs, options.encoder_batching, parameters)


def text_embed_io(embedding_dim: int) -> tuple[list[Tensor], list[Tensor]]:
    """What every *_embed model takes and gives, an ensemble or one model."""
    return [Tensor(c.TEXT, BYTES, (1,))], [Tensor(c.EMBEDDING, FP32, (embedding_dim,))]


def text_embed_config(tower: c.TextTower, embedding_dim: int, options: ServingOptions):
    tokens = {c.INPUT_IDS: c.INPUT_IDS, c.ATTENTION_MASK: c.ATTENTION_MASK}
    return tc.ensemble(
        tower.embed,
        *text_embed_io(embedding_dim),
        [
            EnsembleStep(tower.tokenizer, {c.TEXT: c.TEXT}, tokens),
            EnsembleStep(tower.encoder, tokens, {c.ENCODER_OUTPUT: c.EMBEDDING}),
        ],
        options.max_batch_size,
    )


def search_config(options: ServingOptions):
    return tc.python_model(
        c.SEARCH,
        [
            Tensor(c.QUERY, BYTES, (1,)),
            Tensor(c.COLLECTION, BYTES, (1,)),
            Tensor(c.TOP_K, INT32, (1,)),
            Tensor(c.IMAGE, BYTES, (1,), optional=True),
            Tensor(c.USER_ID, BYTES, (1,), optional=True),
            Tensor(c.PARAMS, BYTES, (1,), optional=True),
        ],
        [Tensor(c.RESULT, BYTES, (1,))],
        options.search_batching,
        {"max_top_k": c.MAX_TOP_K, "max_query_chars": c.MAX_QUERY_CHARS},
    )


def image_preprocess_config(image_size: tuple[int, int], options: ServingOptions):
    return tc.python_model(
        c.IMAGE_PREPROCESS,
        [Tensor(c.IMAGE, BYTES, (1,))],
        [Tensor(c.PIXEL_VALUES, FP32, (3, *image_size))],
        options.preprocess_batching,
    )


def image_embed_config(embedding_dim: int, options: ServingOptions):
    return tc.ensemble(
        c.CLIP_IMAGE_EMBED,
        [Tensor(c.IMAGE, BYTES, (1,))],
        [Tensor(c.EMBEDDING, FP32, (embedding_dim,))],
        [
            EnsembleStep(c.IMAGE_PREPROCESS, {c.IMAGE: c.IMAGE}, {c.PIXEL_VALUES: c.PIXEL_VALUES}),
            EnsembleStep(c.CLIP_IMAGE_ENCODER, {c.PIXEL_VALUES: c.PIXEL_VALUES}, {c.ENCODER_OUTPUT: c.EMBEDDING}),
        ],
        options.max_batch_size,
    )


def _write_python_model(repo: Path, name: str, source: str, config, data_dirs: dict[str, Path] | None = None) -> None:
    """config.pbtxt + 1/model.py (+ data folders the model loads, e.g. its tokenizer)."""
    version = _replace_dir(repo / name) / "1"
    _copy_python_model(source, version)
    for target, data_dir in (data_dirs or {}).items():
        shutil.copytree(data_dir, version / target)
    tc.write(config, repo / name)


def _write_encoder(repo: Path, name: str, onnx_path: Path, inputs, outputs, options: ServingOptions,
                   provenance: Path | None, custom_op_library: str = "") -> None:
    version = _replace_dir(repo / name) / "1"
    version.mkdir()
    shutil.copy2(onnx_path, version / "model.onnx")
    if provenance:  # export.json: source model, parity result; says what this repository serves
        shutil.copy2(provenance, version / provenance.name)
    if options.backend == "python":
        _copy_python_model("onnx_encoder", version)
    tc.write(encoder_config(name, inputs, outputs, options, custom_op_library), repo / name)


def _write_ensemble(repo: Path, config) -> None:
    (_replace_dir(repo / config.name) / "1").mkdir()
    tc.write(config, repo / config.name)


def render_text_models(repo: Path, tower: c.TextTower, onnx_path: Path, tokenizer_dir: Path, embedding_dim: int,
                       max_seq_length: int, options: ServingOptions, provenance: Path | None = None) -> list[str]:
    """tokenizer + encoder + ensemble for one text tower (text_* or clip_text_*)."""
    options.validate()
    _write_python_model(
        repo,
        tower.tokenizer,
        "text_tokenizer",
        tokenizer_config(tower.tokenizer, max_seq_length, options),
        {"tokenizer": tokenizer_dir},
    )
    output = [Tensor(c.ENCODER_OUTPUT, FP32, (embedding_dim,))]
    _write_encoder(repo, tower.encoder, onnx_path, list(TOKEN_TENSORS), output, options, provenance)
    _write_ensemble(repo, text_embed_config(tower, embedding_dim, options))
    return [tower.tokenizer, tower.encoder, tower.embed]


def render_text_onnx_model(repo: Path, tower: c.TextTower, exported, options: ServingOptions,
                           provenance: Path | None = None) -> list[str]:
    """A graph that tokenizes itself is the whole tower: one model named like the ensemble it
    stands in for. A tokenizer and encoder left from an earlier export under the name go."""
    options.validate()
    for stale in (tower.tokenizer, tower.encoder):
        if (repo / stale).is_dir():
            shutil.rmtree(repo / stale)
    _write_encoder(repo, tower.embed, exported.onnx_path, *text_embed_io(exported.embedding_dim), options, provenance,
                   exported.custom_op_library)
    return [tower.embed]


def render_clip_models(repo: Path, exported, options: ServingOptions, provenance: Path | None = None) -> list[str]:
    """Both CLIP towers: clip_text_{tokenizer,encoder,embed}, and
    image_preprocess -> clip_image_encoder = clip_image_embed."""
    import onnx

    dim = exported.embedding_dim
    models = render_text_models(repo, c.CLIP_TEXT_TOWER, exported.text_onnx, exported.tokenizer_dir, dim,
                                exported.max_text_length, options, provenance)
    pixel_dims = [
        d.dim_value
        for d in onnx.load(str(exported.image_onnx), load_external_data=False).graph.input[0].type.tensor_type.shape.dim
    ]
    image_size = (pixel_dims[2], pixel_dims[3])
    _write_python_model(repo, c.IMAGE_PREPROCESS, "image_preprocess", image_preprocess_config(image_size, options),
                        {"image_processor": exported.image_processor_dir})
    _write_encoder(repo, c.CLIP_IMAGE_ENCODER, exported.image_onnx, [Tensor(c.PIXEL_VALUES, FP32, (3, *image_size))],
                   [Tensor(c.ENCODER_OUTPUT, FP32, (dim,))], options, provenance)
    _write_ensemble(repo, image_embed_config(dim, options))
    return models + [c.IMAGE_PREPROCESS, c.CLIP_IMAGE_ENCODER, c.CLIP_IMAGE_EMBED]


def render_search_model(repo: Path, options: ServingOptions) -> list[str]:
    _write_python_model(repo, c.SEARCH, "search", search_config(options))
    return [c.SEARCH]
