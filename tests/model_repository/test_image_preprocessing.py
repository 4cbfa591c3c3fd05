"""Image decoding and CLIP preprocessing on real photos (the ones inside the scikit-image wheel)."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import skimage
from PIL import ExifTags, Image, ImageFile

from mmsearch.model_repository.image_preprocess import image_preprocessing as ip
from mmsearch.model_repository.image_preprocess.image_preprocessing import (
    ClipImagePreprocessor,
    ImageDecodeError,
    decode_image,
    image_size,
)

PHOTOS = Path(skimage.__file__).parent / "data"
TOLERANCE = 1e-3


def photo(name: str) -> bytes:
    return (PHOTOS / name).read_bytes()


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def rgb(name: str) -> Image.Image:
    return Image.open(PHOTOS / name).convert("RGB")


@pytest.fixture(scope="module")
def preprocessor(tiny_clip_dir) -> ClipImagePreprocessor:
    # tiny_clip_dir holds openai/clip-vit-base-patch32's preprocessor_config.json verbatim.
    return ClipImagePreprocessor(tiny_clip_dir)


@pytest.fixture(scope="module")
def reference():
    """transformers' PIL CLIP image processor with its defaults, which are OpenAI CLIP's."""
    from transformers import CLIPImageProcessorPil

    processor = CLIPImageProcessorPil()
    return lambda image: processor(images=[image], return_tensors="np")["pixel_values"][0]


def _variants() -> dict[str, bytes]:
    """Real photos as shipped, plus re-encodings of them in every mode and format we accept."""
    chelsea = rgb("chelsea.png")
    alpha = Image.linear_gradient("L").resize(chelsea.size)
    la = chelsea.convert("L")
    la.putalpha(alpha)
    palette = rgb("coffee.png").quantize(colors=64)
    moon16 = Image.fromarray(np.asarray(Image.open(PHOTOS / "moon.png").convert("L"), dtype=np.uint16) * 257)
    return {
        "astronaut.png (RGB)": photo("astronaut.png"),
        "chelsea.png (RGB)": photo("chelsea.png"),
        "coffee.png (RGB)": photo("coffee.png"),
        "rocket.jpg": photo("rocket.jpg"),
        "hubble_deep_field.jpg": photo("hubble_deep_field.jpg"),
        "retina.jpg (1411x1411)": photo("retina.jpg"),
        "camera.png (L)": photo("camera.png"),
        "coins.png (L, 384x303)": photo("coins.png"),
        "page.png (L, 384x191)": photo("page.png"),
        "logo.png (RGBA)": photo("logo.png"),
        "motorcycle_left.png": photo("motorcycle_left.png"),
        "chelsea LA png": encode(la, "PNG"),
        "coffee P png with transparency": encode(palette, "PNG", transparency=0),
        "astronaut CMYK jpeg": encode(rgb("astronaut.png").convert("CMYK"), "JPEG", quality=95),
        "camera L jpeg": encode(Image.open(PHOTOS / "camera.png"), "JPEG"),
        "chelsea webp": encode(chelsea, "WEBP", quality=90),
        "rocket gif": encode(rgb("rocket.jpg"), "GIF"),
        "coins bmp": encode(Image.open(PHOTOS / "coins.png"), "BMP"),
        "hubble tiff": encode(rgb("hubble_deep_field.jpg"), "TIFF"),
        "tall crop 100x700 png": encode(rgb("retina.jpg").crop((600, 0, 700, 700)), "PNG"),
        "moon I;16 png": encode(moon16, "PNG"),
    }


VARIANTS = _variants()


def test_at_least_ten_real_photos():
    assert len([name for name in VARIANTS if "." in name.split()[0]]) >= 10


@pytest.mark.parametrize("name", VARIANTS)
def test_matches_transformers_processor(name, preprocessor, reference):
    data = VARIANTS[name]
    got = preprocessor([data])
    assert got.shape == (1, 3, 224, 224) and got.dtype == np.float32
    if "I;16" in name:
        # PIL (and so transformers) would clip 16-bit samples to white; we scale them to 8 bits.
        expected = reference(Image.fromarray((np.asarray(Image.open(io.BytesIO(data))) // 257).astype(np.uint8)))
        assert got.std() > 0.1, "16-bit image came out flat"
    else:
        # The file exactly as a user would hand it to transformers: its convert_to_rgb does the rest.
        expected = reference(Image.open(io.BytesIO(data)))
    assert np.max(np.abs(got[0] - expected)) <= TOLERANCE


def test_batch_equals_single_images(preprocessor):
    names = ["rocket.jpg", "logo.png (RGBA)", "camera.png (L)"]
    batch = preprocessor([VARIANTS[n] for n in names])
    singles = np.concatenate([preprocessor([VARIANTS[n]]) for n in names])
    np.testing.assert_array_equal(batch, singles)


def test_processor_settings_are_openai_clips(preprocessor):
    processor = preprocessor.processor
    assert type(processor).__name__ == "CLIPImageProcessorPil"
    assert processor.size["shortest_edge"] == 224 and (preprocessor.height, preprocessor.width) == (224, 224)
    assert list(processor.image_mean) == [0.48145466, 0.4578275, 0.40821073]
    assert int(processor.resample) == Image.Resampling.BICUBIC


def test_decode_modes_give_rgb():
    for name, data in VARIANTS.items():
        image = decode_image(data)
        assert image.mode == "RGB", name
    # Transparent pixels land on white, as transformers composites them.
    transparent = encode(Image.new("RGBA", (8, 8), (255, 0, 0, 0)), "PNG")
    assert decode_image(transparent).getpixel((0, 0)) == (255, 255, 255)


# EXIF orientation -> the transpose that makes the stored pixels upright.
ORIENTATIONS = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


@pytest.mark.parametrize("orientation", sorted(ORIENTATIONS))
def test_exif_orientation_is_applied(orientation, preprocessor):
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    tagged = encode(rgb("rocket.jpg"), "JPEG", quality=90, exif=exif.tobytes())
    # The same decoded JPEG pixels, turned upright by hand and stored losslessly without a tag.
    stored = Image.open(io.BytesIO(tagged))
    stored.load()
    upright = encode(Image.fromarray(np.asarray(stored)).transpose(ORIENTATIONS[orientation]), "PNG")

    np.testing.assert_array_equal(preprocessor([tagged]), preprocessor([upright]))
    assert decode_image(tagged).size == Image.open(io.BytesIO(upright)).size
    assert image_size(tagged) == Image.open(io.BytesIO(upright)).size
    # ... and the check would notice a skipped rotation.
    untagged = encode(Image.fromarray(np.asarray(stored)), "PNG")
    assert not np.array_equal(preprocessor([tagged]), preprocessor([untagged]))


def test_image_size_reads_the_header():
    assert image_size(photo("chelsea.png")) == (451, 300)
    assert image_size(photo("rocket.jpg")) == (640, 427)


# --- bad input ---------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A 1x1 PNG whose IHDR claims width x height (CRC fixed): the pixels would need GBs."""
    data = bytearray(encode(Image.new("RGB", (1, 1)), "PNG"))
    ihdr = struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr))
    return bytes(data)


def bmp_header(width: int, height: int) -> bytes:
    """BITMAPFILEHEADER + BITMAPINFOHEADER for a 24-bit width x height BMP, without its pixels."""
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 24, 0, 0, 2835, 2835, 0, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40, 0, 0, 14 + 40) + info


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if any pixel data gets decoded."""
    decoded = []
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size))
    yield
    assert decoded == [], "pixels were decoded"


@pytest.mark.filterwarnings("ignore::PIL.Image.DecompressionBombWarning")
@pytest.mark.parametrize("header", [png_header, bmp_header], ids=["png", "bmp"])
@pytest.mark.parametrize("width,height", [(20000, 20000), (10000, 10000), (7000, 7000), (64_000_001, 1)])
def test_huge_images_are_refused_from_the_header(header, width, height, no_decoding):
    # 20000x20000 is over PIL's own hard limit, 10000x10000 only over ours; 7000x7000 is the
    # 49-Mpx PNG that once cost 3.9 s of CPU before it was refused.
    message = f"image is {width}x{height} pixels; the limit is {ip.MAX_IMAGE_PIXELS} pixels"
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(header(width, height))
    with pytest.raises(ImageDecodeError, match=message):
        image_size(header(width, height))


def test_header_within_limits_still_needs_its_pixels():
    with pytest.raises(ImageDecodeError, match="corrupt or truncated image"):
        decode_image(png_header(100, 100))


@pytest.mark.parametrize(
    "data,message",
    [
        (b"", "empty image data"),
        (np.random.default_rng(0).bytes(4096), r"not an image \(cannot identify format"),
        (Path(ip.__file__).read_bytes(), r"not an image \(cannot identify format"),
        (photo("rocket.jpg")[: len(photo("rocket.jpg")) // 2], "corrupt or truncated image: "),
        (photo("chelsea.png")[: len(photo("chelsea.png")) // 2], "corrupt or truncated image: "),
        (encode(Image.new("RGB", (8, 8)), "PPM"), r"not an image \(cannot identify format"),  # not accepted
    ],
    ids=["empty", "random-bytes", "text-file", "truncated-jpeg", "truncated-png", "ppm"],
)
def test_bad_input_is_named(data, message):
    with pytest.raises(ImageDecodeError, match=message):
        decode_image(data)


def test_byte_limit(monkeypatch):
    monkeypatch.setattr(ip, "MAX_IMAGE_BYTES", 1000)
    with pytest.raises(ImageDecodeError, match=r"image data is \d+ bytes; the limit is 1000 bytes"):
        decode_image(photo("rocket.jpg"))


def test_preprocessor_names_the_bad_image(preprocessor):
    with pytest.raises(ImageDecodeError, match=r"^image 1: empty image data$"):
        preprocessor([photo("rocket.jpg"), b"", photo("coins.png")])
    with pytest.raises(ImageDecodeError, match=r"^image 0: not an image"):
        preprocessor([b"GIF89a but not really"])


def test_empty_batch(preprocessor):
    assert preprocessor([]).shape == (0, 3, 224, 224)
