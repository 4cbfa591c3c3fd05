"""The export steps both exporters (text_encoder, clip_encoder) share.

Resolve a model source and explain a failed load; trace a module to ONNX with the embedding
width pinned; compare ONNX with PyTorch and refuse a mismatch; build in a staging folder and
move into place only what passed; record export.json. Importable without torch.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path

import numpy as np

from mmsearch.errors import MmsearchError

EXPORT_JSON = "export.json"
ONNX_FILE = "model.onnx"
TOKENIZER_DIR = "tokenizer"
OPSET = 17
# Max |onnx - torch| allowed over every embedding component before an export is rejected.
PARITY_TOLERANCE = 1e-4

# Varied on purpose: very short, > 256 tokens (truncation), punctuation, digits,
# non-Latin scripts, accents and whitespace, so parity covers real query shapes.
PARITY_SENTENCES: tuple[str, ...] = (
    "a",
    "Hi!",
    "?",
    "The cat sits on the mat.",
    "A man is playing a guitar on stage.",
    "How do I reset my password?",
    "Semantic search finds documents by meaning rather than exact keywords.",
    "NVIDIA Triton Inference Server serves models over HTTP and gRPC.",
    "The quick brown fox jumps over the lazy dog. " * 40,
    "Lorem ipsum dolor sit amet, consectetur adipiscing elit; sed do eiusmod tempor! " * 30,
    "Order #12345 shipped on 2024-03-15 at 09:41 for $1,299.99 (incl. 19% VAT).",
    "3.14159 2.71828 1.41421 6.02214076e23",
    "Call +1 (555) 010-9999 or e-mail support@example.com.",
    "C'est la vie : le café est très chaud, n'est-ce pas ?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "¿Dónde está la biblioteca? ¡Está cerca de la estación!",
    "Москва — столица России.",
    "東京は日本の首都です。",
    "我喜欢在晚上读书和听音乐。",
    "서울은 대한민국의 수도입니다.",
    "مرحبا بالعالم",
    "Ελληνικά γράμματα: α β γ δ",
    "emoji test 🚀🔥👍",
    "   leading and trailing spaces   ",
    "UPPERCASE SHOUTING TEXT",
    "multiple\nlines\tand\ttabs",
    "!!!???...,,,;;;",
    "def f(x): return x ** 2  # python code",
    "<html><body><p>markup</p></body></html>",
    "A photo of a dog playing fetch in the park on a sunny afternoon.",
    "Recall@10 and nDCG@10 are common retrieval metrics.",
    "supercalifragilisticexpialidocious antidisestablishmentarianism",
    "The committee, after lengthy deliberation over several weeks and numerous heated "
    "exchanges, ultimately decided to postpone the vote until further evidence emerged.",
    "数字 42 と English が混ざった文章。" * 60,
)


class ExportError(MmsearchError):
    """An export could not be produced or failed its parity check."""


def resolve_source(name_or_path: str, what: str) -> str:
    """A local directory as an absolute path, or a hub name as given."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or path.is_absolute() or str(name_or_path).startswith((".", "~")):
        # Clearly meant as a path: don't let it fall through to a confusing hub lookup.
        raise ExportError(f"{what} path {name_or_path!r} is not a directory")
    return str(name_or_path)


def hub_unreachable(exc: BaseException) -> bool:
    from huggingface_hub.errors import LocalEntryNotFoundError, OfflineModeIsEnabled

    # transformers re-raises hub failures as a bare OSError; the cause chain keeps the real type.
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, (LocalEntryNotFoundError, OfflineModeIsEnabled)):
            return True
        seen = seen.__cause__ or seen.__context__
    return "couldn't connect to" in str(exc).lower()


def first_line(exc: BaseException) -> str:
    """An error's first line (library errors run to pages), or its type where it has no message."""
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0]


def load_failure(exc: Exception, name_or_path: str, what: str, unreachable_message: str) -> ExportError:
    """One line that says why `name_or_path` did not load: the hub, or the model's own error."""
    if hub_unreachable(exc):
        return ExportError(unreachable_message)
    return ExportError(f"could not load {what} {name_or_path!r}: {first_line(exc)}")


class ExportRecord:
    """Mixin for the export dataclasses: `save` writes export.json with paths relative to the folder."""

    def save(self, output_dir: Path) -> Path:
        output_dir = Path(output_dir)
        record = {
            key: Path(value).relative_to(output_dir).as_posix() if isinstance(value, Path) else value
            for key, value in asdict(self).items()
        }
        path = output_dir / EXPORT_JSON
        path.write_text(json.dumps(record, indent=2) + "\n")
        return path


def trace_to_onnx(module, args: tuple, input_names: list[str], dynamic_axes: dict, path: Path, dim: int) -> None:
    """Trace `module` (ending in an L2-normalised [batch, dim] `embedding`) into `path`, checked."""
    import onnx
    import torch

    path.parent.mkdir(parents=True, exist_ok=True)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter about python-side shape checks
        torch.onnx.export(
            module, args, str(path),
            input_names=input_names, output_names=["embedding"],
            dynamic_axes={**dynamic_axes, "embedding": {0: "batch"}},
            opset_version=OPSET, do_constant_folding=True,
            dynamo=False,  # TorchScript exporter: deterministic and needs no onnxscript
        )
    # The tracer loses the static width through the pooling and normalisation arithmetic; pin
    # it so Triton and clients see [batch, dim] instead of an opaque symbolic dimension.
    proto = onnx.load(str(path))
    proto.graph.output[0].type.tensor_type.shape.dim[1].dim_value = dim
    onnx.save(proto, str(path))
    onnx.checker.check_model(str(path), full_check=True)


def max_abs_diff(got: np.ndarray, expected: np.ndarray, what: str = "") -> float:
    if got.shape != expected.shape:
        raise ExportError(f"parity check failed: ONNX {what} output shape {got.shape} != reference {expected.shape}")
    return float(np.max(np.abs(got.astype(np.float64) - expected.astype(np.float64))))


def check_parity(diff: float, what: str = "") -> None:
    if not diff <= PARITY_TOLERANCE:  # also rejects NaN
        subject = f" for {what}" if what else ""
        raise ExportError(f"parity check failed{subject}: max abs diff {diff:.3g} > tolerance {PARITY_TOLERANCE:g}; "
                          "nothing written")


@contextmanager
def staging(output_dir: Path) -> Iterator[Path]:
    """A staging folder inside `output_dir` (so the final move is a rename), removed afterwards.
    If this created `output_dir` and the export fails, it is removed again."""
    created = not output_dir.exists()
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tempfile.TemporaryDirectory(prefix=".export-", dir=output_dir) as name:
            yield Path(name)
    except BaseException:
        if created and not any(output_dir.iterdir()):
            os.rmdir(output_dir)
        raise


def move_into_place(staged: Path, output_dir: Path, names: Sequence[str]) -> None:
    """Replace `output_dir`/name with `staged`/name for each name (files or folders)."""
    for name in names:
        src, dst = staged / name, output_dir / name
        if dst.is_dir() and not dst.is_symlink():
            shutil.rmtree(dst)
        elif dst.exists() or dst.is_symlink():
            dst.unlink()
        os.replace(src, dst)
