"""Encoded image bytes -> CLIP pixel tensors, for the `image_preprocess` Triton model.

Our part is everything before the checkpoint's own image processor: size limits checked from
the header before any pixel is decoded, full decoding (so truncated files fail here, by
index, not somewhere inside the encoder), EXIF orientation, and conversion to RGB. Resizing,
cropping and normalisation are left to the checkpoint's `CLIPImageProcessor`, so served
tensors match what `transformers` computes for the same picture. No Triton imports: this is
plain Python, testable and reusable by the indexer.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import ExifTags, Image, ImageOps, UnidentifiedImageError

from mmsearch.errors import MmsearchError
from mmsearch.model_repository.contract import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS

# Formats we decode. Everything else PIL knows (EPS via Ghostscript, exotic scientific
# formats, ...) is attack surface that photo search does not need.
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "AVIF")


class ImageDecodeError(MmsearchError, ValueError):
    """The bytes are not an image we accept; the message names the problem."""


def _formats() -> tuple[str, ...]:
    Image.init()  # registers every plugin, so the AVIF check below sees what this Pillow has
    return tuple(f for f in FORMATS if f in Image.OPEN)


def _too_large(width: int, height: int) -> ImageDecodeError:
    return ImageDecodeError(f"image is {width}x{height} pixels; the limit is {MAX_IMAGE_PIXELS} pixels")


def _header_size(data: bytes) -> tuple[int, int] | None:
    """Width and height read from the header alone, bypassing PIL's decompression-bomb check."""
    for name in _formats():
        factory, accept = Image.OPEN[name]
        verdict = accept(data[:16]) if accept else True
        if not verdict or isinstance(verdict, str):  # a str is PIL's "recognised but unsupported"
            continue
        try:
            return factory(io.BytesIO(data), "").size  # parses the header; allocates no pixels
        except Exception:
            continue
    return None


def _open(data: bytes) -> Image.Image:
    """Open lazily (header only) and enforce the byte and pixel limits."""
    if not data:
        raise ImageDecodeError("empty image data")
    if len(data) > MAX_IMAGE_BYTES:
        raise ImageDecodeError(f"image data is {len(data)} bytes; the limit is {MAX_IMAGE_BYTES} bytes")
    try:
        image = Image.open(io.BytesIO(data), formats=_formats())
    except Image.DecompressionBombError:
        # PIL refuses images over twice its own limit (> ours) before telling the size: read it ourselves.
        size = _header_size(data)
        if size is None:
            raise ImageDecodeError(f"image is larger than the limit of {MAX_IMAGE_PIXELS} pixels") from None
        raise _too_large(*size) from None
    except UnidentifiedImageError:
        raise ImageDecodeError(f"not an image (cannot identify format; accepted: {', '.join(_formats())})") from None
    except Exception as exc:  # a recognised format whose header is broken
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None
    width, height = image.size
    if width * height > MAX_IMAGE_PIXELS:
        raise _too_large(width, height)
    if width == 0 or height == 0:
        raise ImageDecodeError(f"image is {width}x{height} pixels; it has no pixels")
    return image


def _to_rgb(image: Image.Image) -> Image.Image:
    if image.mode == "RGB":
        return image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I"):
        # 16-bit greyscale (PNG, TIFF): PIL's convert() would clip every value above 255 to
        # white; scale the 16-bit range down instead.
        samples = np.asarray(image, dtype=np.float64)
        image = Image.fromarray(np.clip(np.rint(samples / 257.0), 0, 255).astype(np.uint8), mode="L")
    if "A" in image.getbands() or "transparency" in image.info:
        # Transparent pixels go onto white, as transformers' convert_to_rgb does, so served
        # tensors equal `processor(images=Image.open(f))` on the same file.
        rgba = image.convert("RGBA")
        background = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, rgba).convert("RGB")
    return image.convert("RGB")  # L, P, CMYK, YCbCr, 1, ...


def decode_image(data: bytes) -> Image.Image:
    """Decode encoded image bytes into an upright RGB PIL image, or raise ImageDecodeError."""
    image = _open(bytes(data))
    try:
        image.load()  # decodes now, so a truncated or corrupt body fails here
        image = ImageOps.exif_transpose(image)
        return _to_rgb(image)
    except ImageDecodeError:
        raise
    except Exception as exc:
        raise ImageDecodeError(f"corrupt or truncated image: {exc}") from None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) as displayed, i.e. after EXIF orientation, from the header only."""
    image = _open(bytes(data))
    width, height = image.size
    try:
        orientation = image.getexif().get(ExifTags.Base.Orientation, 1)
    except Exception:  # unreadable EXIF: decode_image would not rotate either
        orientation = 1
    # Orientations 5-8 are the transposes and quarter turns: they swap width and height.
    return (height, width) if orientation in (5, 6, 7, 8) else (width, height)


class ClipImagePreprocessor:
    """Encoded images -> float32 pixel_values [n, 3, H, W] for the CLIP image tower."""

    def __init__(self, image_processor_dir: str | Path):
        from transformers import AutoImageProcessor

        # The PIL backend: torchvision is not installed, and the export's parity check used it.
        self.processor = AutoImageProcessor.from_pretrained(
            str(image_processor_dir), backend="pil", local_files_only=True
        )
        crop = self.processor.crop_size
        self.height, self.width = int(crop["height"]), int(crop["width"])

    def __call__(self, images: Sequence[bytes]) -> np.ndarray:
        decoded = []
        for index, data in enumerate(images):
            try:
                decoded.append(decode_image(data))
            except ImageDecodeError as exc:
                raise ImageDecodeError(f"image {index}: {exc}") from None
        if not decoded:
            return np.zeros((0, 3, self.height, self.width), dtype=np.float32)
        pixels = self.processor(images=decoded, return_tensors="np")["pixel_values"]
        return np.ascontiguousarray(pixels, dtype=np.float32)
