"""`mmsearch export`: Hugging Face models -> parity-checked ONNX -> a Triton model repository."""

from __future__ import annotations

import re
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from mmsearch.export.repository import ServingOptions, render_search_model, resolve_backend
from mmsearch.export.steps import ExportError
from mmsearch.model_repository.contract import CLIP_IMAGE_EMBED, CLIP_TEXT_TOWER, TEXT_TOWER, TextTower

DEFAULT_CLIP_MODEL = "openai/clip-vit-base-patch32"


@dataclass(frozen=True)
class ExportOptions:
    repository: Path
    text_model: str | None = None  # default, when no clip_model is given: the MiniLM we ship
    clip_model: str | None = None
    clip_text_model: str | None = None  # a text tower aligned to clip_model's image tower
    backend: str = "auto"
    device: str = "cpu"
    precision: str = "fp32"
    name: str | None = None  # the text tower's ensemble, e.g. tuned_text_embed [default: text_embed]
    text_onnx: str | None = None  # an ONNX graph that tokenizes itself, instead of text_model
    custom_op_library: str | None = None  # implements text_onnx's custom ops [default: onnxruntime-extensions]


def named_text_tower(name: str | None) -> TextTower:
    """`--name P_embed` gives the models P_tokenizer, P_encoder and the ensemble P_embed."""
    if name is None:
        return TEXT_TOWER
    prefix = name.removesuffix("_embed")
    if not name.endswith("_embed") or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", prefix):
        raise ExportError(f"--name {name!r}: give NAME_embed (letters, digits, underscores), e.g. tuned_text_embed; "
                          "its tokenizer and encoder become NAME_tokenizer and NAME_encoder")
    if name in (CLIP_TEXT_TOWER.embed, CLIP_IMAGE_EMBED):
        raise ExportError(f"--name {name!r} is the CLIP tower's name")
    return TextTower(prefix)


def export_text(source: str, repo: Path, options: ServingOptions, tower: TextTower = TEXT_TOWER) -> list[str]:
    from mmsearch.export.repository import render_text_models
    from mmsearch.export.text_encoder import export_text_encoder

    print(f"exporting text encoder {source} as {tower.embed}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        exported = export_text_encoder(source, Path(work))
        models = render_text_models(repo, tower, exported.onnx_path, exported.tokenizer_dir, exported.embedding_dim,
                                    exported.max_seq_length, options, provenance=Path(work) / "export.json")
    print(
        f"  parity vs PyTorch on {exported.parity_sentences} sentences: "
        f"max abs diff {exported.parity_max_abs_diff:.2e}; "
        f"dim {exported.embedding_dim}, max {exported.max_seq_length} tokens",
        flush=True,
    )
    return models


def export_text_onnx(model: str, repo: Path, options: ServingOptions, tower: TextTower,
                     custom_op_library: str | None) -> list[str]:
    from mmsearch.export.onnx_text_encoder import export_onnx_text_encoder
    from mmsearch.export.repository import render_text_onnx_model

    print(f"wrapping ONNX text encoder {model} as {tower.embed}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        exported = export_onnx_text_encoder(model, Path(work), custom_op_library, options.backend)
        models = render_text_onnx_model(repo, tower, exported, options, provenance=Path(work) / "export.json")
    ops = f"{', '.join(exported.custom_ops)} from {exported.custom_op_library}" if exported.custom_ops else "none"
    print(f"  dim {exported.embedding_dim}; custom ops: {ops}"
          f"{'; normalised by the wrapper' if exported.normalised_by_wrapper else ''}", flush=True)
    if exported.one_text_at_a_time:
        print(f"  run one text at a time: batched, a text's vector moved by up to {exported.batch_drift:.1e} with its "
              "batch-mates (per-batch quantization)", flush=True)
    print(f"  wrapped graph, batched, vs the original on each of {exported.parity_sentences} sentences alone: "
          f"max abs diff {exported.parity_max_abs_diff:.2e}", flush=True)
    return models


def export_clip_towers(source: str, repo: Path, options: ServingOptions, text_tower: str | None = None) -> list[str]:
    from mmsearch.export.clip_encoder import export_clip
    from mmsearch.export.repository import render_clip_models

    print(f"exporting CLIP {source}", flush=True)
    with tempfile.TemporaryDirectory() as work:
        exported = export_clip(source, Path(work))
        models = render_clip_models(repo, exported, options, provenance=Path(work) / "export.json")
    print(f"  parity vs PyTorch: text {exported.text_parity_max_abs_diff:.2e}, "
          f"image {exported.image_parity_max_abs_diff:.2e}; dim {exported.embedding_dim}", flush=True)
    if text_tower:
        # A separately trained text tower (e.g. multilingual) aligned to this image tower
        # replaces CLIP's own in the clip_text_* models; it must embed into the same space.
        from mmsearch.export.text_encoder import embedding_dimension, load_sentence_transformer

        dim = embedding_dimension(load_sentence_transformer(text_tower))
        if dim != exported.embedding_dim:
            raise ExportError(f"text tower {text_tower!r} gives {dim}-d vectors but the image tower {source!r} "
                              f"gives {exported.embedding_dim}-d: they cannot share one space")
        models = sorted(set(models) | set(export_text(text_tower, repo, options, CLIP_TEXT_TOWER)))
    return models


def export_repository(options: ExportOptions) -> list[str]:
    """Export the asked-for models into `options.repository` (models already there are kept)."""
    from mmsearch.export.text_encoder import default_text_model

    if options.clip_text_model and not options.clip_model:
        raise ExportError("--clip-text-model needs --clip-model (the image tower it was aligned to)")
    tower = named_text_tower(options.name)
    if options.text_model and options.text_onnx:
        raise ExportError("give --text-model (a Hugging Face model) or --text-onnx (an ONNX graph), not both")
    if options.name and not (options.text_model or options.text_onnx):
        raise ExportError("--name names a text tower: give it with --text-model or --text-onnx")
    if options.custom_op_library and not options.text_onnx:
        raise ExportError("--custom-op-library is for the custom ops of a --text-onnx graph")
    serving = ServingOptions(
        backend=resolve_backend(options.backend), device=options.device, precision=options.precision
    )
    serving.validate()
    repo = Path(options.repository).resolve()
    print(f"backend {serving.backend}, {serving.device}, {serving.precision}", flush=True)
    started = time.perf_counter()
    models = []
    if options.text_onnx:
        models += export_text_onnx(options.text_onnx, repo, serving, tower, options.custom_op_library)
    elif options.text_model or not options.clip_model:
        models += export_text(options.text_model or default_text_model(), repo, serving, tower)
    if options.clip_model:
        models += export_clip_towers(options.clip_model, repo, serving, options.clip_text_model)
    models += render_search_model(repo, serving)
    print(f"wrote {', '.join(models)} to {repo} in {time.perf_counter() - started:.1f} s", flush=True)
    return models


def has_model(repository: Path, name: str) -> bool:
    return (Path(repository) / name / "config.pbtxt").exists()


def ensure_text_repository(repository: Path) -> None:
    """Export the default text model into `repository` unless it already serves text."""
    if not has_model(repository, TEXT_TOWER.embed):
        export_repository(ExportOptions(repository))


MULTILINGUAL_TOWER = TextTower("multilingual_text")


def ensure_multilingual(repository: Path) -> str:
    """Add USE-multilingual (16 languages, Chinese among them) as multilingual_text_embed unless
    `repository` already serves it; returns the model's name."""
    from mmsearch.export.onnx_text_encoder import USE_MULTILINGUAL

    if not has_model(repository, MULTILINGUAL_TOWER.embed):
        export_repository(ExportOptions(repository, text_onnx=USE_MULTILINGUAL, name=MULTILINGUAL_TOWER.embed))
    return MULTILINGUAL_TOWER.embed


def ensure_clip(repository: Path, clip_model: str) -> bool:
    """Add CLIP to `repository` if it lacks it; False, with the reason printed, where it cannot be loaded."""
    if has_model(repository, CLIP_IMAGE_EMBED):
        return True
    try:
        export_repository(ExportOptions(repository, clip_model=clip_model))
    except ExportError as exc:
        print(f"image search is off in this demo: {exc}. Text search goes on.", flush=True)
        return False
    return True
