"""Export a Hugging Face CLIP checkpoint to two ONNX towers for Triton.

`text/model.onnx` (input_ids, attention_mask -> embedding) and `image/model.onnx`
(pixel_values -> embedding) each end in the projection and L2 normalisation, so Triton's
`clip_text_encoder` and `clip_image_encoder` return final, comparable embeddings.
The export only lands in `output_dir` after both towers match PyTorch's
`get_text_features` / `get_image_features` on fixed sentences and images.
"""

from __future__ import annotations

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
    from transformers import CLIPModel

log = logging.getLogger(__name__)

TEXT_DIR = "text"
IMAGE_DIR = "image"
IMAGE_PROCESSOR_DIR = "image_processor"
# Real photos for the image parity check, shipped inside the scikit-image wheel (no download).
_PARITY_PHOTOS = ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg", "hubble_deep_field.jpg", "camera.png")
_PARITY_RANDOM_IMAGES = 4


@dataclass
class ClipExport(ExportRecord):
    text_onnx: Path
    image_onnx: Path
    tokenizer_dir: Path
    image_processor_dir: Path
    embedding_dim: int
    max_text_length: int
    text_parity_max_abs_diff: float
    image_parity_max_abs_diff: float
    parity_sentences: int
    parity_images: int
    source: str


def load_clip(name_or_path: str):
    """(CLIPModel in eval mode on CPU, tokenizer, PIL image processor) from a hub name or a local dir.

    One code path for both: a local directory is just a `from_pretrained` source that needs no hub.
    Weights the checkpoint lacks are an error, never random initialisation.
    """
    from transformers import AutoImageProcessor, AutoTokenizer, CLIPModel

    source = steps.resolve_source(name_or_path, "CLIP model")
    try:
        model, info = CLIPModel.from_pretrained(source, output_loading_info=True)
        tokenizer = AutoTokenizer.from_pretrained(source)
        # The PIL backend: torchvision is not a dependency, and it is what the Triton model runs.
        image_processor = AutoImageProcessor.from_pretrained(source, backend="pil")
    except Exception as exc:
        raise steps.load_failure(
            exc, name_or_path, "CLIP model",
            f"CLIP weights for {name_or_path!r} could not be loaded because the Hugging Face hub is "
            "unreachable; pass a local directory with a CLIP checkpoint instead",
        ) from exc
    # from_pretrained only warns about weights it had to initialise at random (e.g. a vision-only
    # or non-CLIP checkpoint); such an export would look fine and embed nonsense.
    missing = sorted(info.get("missing_keys") or []) + sorted(info.get("mismatched_keys") or [])
    if missing:
        shown = ", ".join(map(str, missing[:5])) + (" ..." if len(missing) > 5 else "")
        raise ExportError(
            f"{name_or_path!r} is not a complete CLIP checkpoint: {len(missing)} weights missing ({shown})"
        )
    return model.eval().to("cpu"), tokenizer, image_processor


def _features(output) -> torch.Tensor:
    # transformers 5 returns a BaseModelOutputWithPooling whose pooler_output holds the
    # *projected* features; 4.x returned the tensor itself.
    return output if isinstance(output, torch.Tensor) else output.pooler_output


class _TextTower(torch.nn.Module):
    """get_text_features (EOS pooling + projection) + L2 norm, traced as one graph."""

    def __init__(self, model: CLIPModel):
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        features = _features(self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask))
        return torch.nn.functional.normalize(features, p=2.0, dim=-1)


class _ImageTower(torch.nn.Module):
    def __init__(self, model: CLIPModel):
        super().__init__()
        self.model = model

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        features = _features(self.model.get_image_features(pixel_values=pixel_values))
        return torch.nn.functional.normalize(features, p=2.0, dim=-1)


def _export_text(model: CLIPModel, tokenizer, path: Path, dim: int) -> None:
    # Rows of different length, so the trace keeps the padding mask and the per-row EOS lookup
    # as graph ops instead of constants of the sample.
    sample = tokenizer(["a sample sentence to trace the text tower", "short"], padding=True, return_tensors="pt")
    args = (sample["input_ids"].to(torch.int64), sample["attention_mask"].to(torch.int64))
    dynamic = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}}
    steps.trace_to_onnx(_TextTower(model).eval(), args, ["input_ids", "attention_mask"], dynamic, path, dim)


def _export_image(model: CLIPModel, path: Path, dim: int, size: int) -> None:
    sample = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(0))
    steps.trace_to_onnx(
        _ImageTower(model).eval(), (sample,), ["pixel_values"], {"pixel_values": {0: "batch"}}, path, dim
    )


def _normalized(features: torch.Tensor) -> np.ndarray:
    return torch.nn.functional.normalize(_features(features), p=2.0, dim=-1).numpy()


def _text_parity(model: CLIPModel, onnx_path: Path, tokenizer_dir: Path, max_length: int) -> float:
    import onnxruntime as ort
    from transformers import AutoTokenizer

    # The saved tokenizer, not the in-memory one: the files Triton loads are what is verified.
    tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir), local_files_only=True)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    sentences = list(steps.PARITY_SENTENCES)
    # The whole set padded to its longest member, then each sentence alone: batch and sequence
    # length both vary, and padding (pad id == EOS id) must not move the pooled EOS position.
    diff = 0.0
    for batch in (sentences, *([s] for s in sentences)):
        enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
        ids, mask = enc["input_ids"].to(torch.int64), enc["attention_mask"].to(torch.int64)
        (got,) = session.run(["embedding"], {"input_ids": ids.numpy(), "attention_mask": mask.numpy()})
        with torch.no_grad():
            expected = _normalized(model.get_text_features(input_ids=ids, attention_mask=mask))
        diff = max(diff, steps.max_abs_diff(got, expected, "text"))
    return diff


def _parity_pixels(image_processor_dir: Path, size: int) -> tuple[np.ndarray, int]:
    """Real photos through the serving preprocessor, plus random tensors; (pixels, photo count)."""
    import io

    from PIL import Image

    from mmsearch.model_repository.image_preprocess.image_preprocessing import ClipImagePreprocessor

    photos: list[bytes] = []
    try:
        import skimage

        data_dir = Path(skimage.__file__).parent / "data"
        photos = [(data_dir / name).read_bytes() for name in _PARITY_PHOTOS if (data_dir / name).is_file()]
    except ImportError:
        pass
    real = len(photos)
    if not photos:
        # Without scikit-image: smooth synthetic images, which still span the processor's range.
        log.warning("scikit-image not installed: image parity uses synthetic images instead of photos")
        rng = np.random.default_rng(0)
        for width, height in ((320, 240), (200, 400), (640, 480)):
            ramp = np.linspace(0, 255, width)[None, :, None] * np.ones((height, 1, 3)) * rng.uniform(0.3, 1.0, 3)
            buffer = io.BytesIO()
            Image.fromarray(ramp.astype(np.uint8)).save(buffer, format="PNG")
            photos.append(buffer.getvalue())
    # The serving preprocessor over the saved processor config: that is what Triton feeds the tower.
    pixels = ClipImagePreprocessor(image_processor_dir)(photos)
    noise = np.random.default_rng(0).standard_normal((_PARITY_RANDOM_IMAGES, 3, size, size)).astype(np.float32)
    return np.concatenate([pixels, noise]), real


def _image_parity(model: CLIPModel, onnx_path: Path, image_processor_dir: Path, size: int) -> tuple[float, int]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    pixels, real = _parity_pixels(image_processor_dir, size)
    diff = 0.0
    for batch in (pixels, pixels[:1]):  # batch size is dynamic: check more than the traced one
        (got,) = session.run(["embedding"], {"pixel_values": batch})
        with torch.no_grad():
            expected = _normalized(model.get_image_features(pixel_values=torch.from_numpy(batch)))
        diff = max(diff, steps.max_abs_diff(got, expected, "image"))
    log.info("image parity over %d images (%d real photos)", len(pixels), real)
    return diff, len(pixels)


def _tower_sizes(model: CLIPModel, image_processor, name_or_path: str) -> tuple[int, int, int]:
    """(embedding dim, max text tokens, image side), after checking the processor crops to that side."""
    config = model.config
    size = int(config.vision_config.image_size)
    crop = image_processor.crop_size
    if (crop.get("height"), crop.get("width")) != (size, size):
        raise ExportError(
            f"{name_or_path!r}: image processor crops to {dict(crop)} but the vision tower takes {size}x{size}"
        )
    return int(config.projection_dim), int(config.text_config.max_position_embeddings), size


def export_clip(name_or_path: str, output_dir: Path) -> ClipExport:
    """Export to `output_dir`/{text/model.onnx, image/model.onnx, tokenizer/, image_processor/, export.json}.

    Built in a staging folder and moved into place only after both parity checks pass, so a
    failed export never leaves (or clobbers) files there. A model that cannot be loaded fails
    before anything, even `output_dir`, is created.
    """
    started = time.perf_counter()
    output_dir = Path(output_dir)
    model, tokenizer, image_processor = load_clip(name_or_path)
    dim, max_length, size = _tower_sizes(model, image_processor, name_or_path)
    with steps.staging(output_dir) as staged:
        tokenizer.save_pretrained(str(staged / steps.TOKENIZER_DIR))
        image_processor.save_pretrained(str(staged / IMAGE_PROCESSOR_DIR))
        _export_text(model, tokenizer, staged / TEXT_DIR / steps.ONNX_FILE, dim)
        _export_image(model, staged / IMAGE_DIR / steps.ONNX_FILE, dim, size)
        text_diff = _text_parity(model, staged / TEXT_DIR / steps.ONNX_FILE, staged / steps.TOKENIZER_DIR, max_length)
        image_diff, images = _image_parity(
            model, staged / IMAGE_DIR / steps.ONNX_FILE, staged / IMAGE_PROCESSOR_DIR, size
        )
        log.info("CLIP parity: max |onnx - torch| text %.3g, image %.3g", text_diff, image_diff)
        steps.check_parity(text_diff, "the CLIP text tower")
        steps.check_parity(image_diff, "the CLIP image tower")
        steps.move_into_place(staged, output_dir, (steps.TOKENIZER_DIR, IMAGE_PROCESSOR_DIR, TEXT_DIR, IMAGE_DIR))

    result = ClipExport(
        text_onnx=output_dir / TEXT_DIR / steps.ONNX_FILE,
        image_onnx=output_dir / IMAGE_DIR / steps.ONNX_FILE,
        tokenizer_dir=output_dir / steps.TOKENIZER_DIR,
        image_processor_dir=output_dir / IMAGE_PROCESSOR_DIR,
        embedding_dim=dim,
        max_text_length=max_length,
        text_parity_max_abs_diff=text_diff,
        image_parity_max_abs_diff=image_diff,
        parity_sentences=len(steps.PARITY_SENTENCES),
        parity_images=images,
        source=str(name_or_path),
    )
    result.save(output_dir)
    log.info("exported CLIP %s to %s in %.1fs", name_or_path, output_dir, time.perf_counter() - started)
    return result
