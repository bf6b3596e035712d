"""Pillow-only image helpers: the 2×2 preview grid and encoding that fits Discord's upload limit."""

from __future__ import annotations

import io
from collections.abc import Sequence

from PIL import Image, features

GRID_COLUMNS = 2
GRID_IMAGES = 4
MIN_UPLOAD_BYTES = 4096  # a tiny JPEG always fits in this; below it no image can be promised
WEBP_QUALITIES = (95, 90, 85, 80, 70)
JPEG_QUALITIES = (95, 90, 85, 75)
DOWNSCALE_QUALITY = 85
MIN_SIDE = 16


def compose_grid(images: Sequence[Image.Image]) -> Image.Image:
    """Four equal-sized images as one 2×2 grid without gaps, in reading order: U1 U2 / U3 U4."""
    if len(images) != GRID_IMAGES:
        raise ValueError(f"A grid needs {GRID_IMAGES} images; got {len(images)}.")
    size = images[0].size
    sizes = {image.size for image in images}
    if len(sizes) != 1:
        raise ValueError(f"Grid images must share one size; got {sorted(sizes)}.")
    width, height = size
    rows = (len(images) + GRID_COLUMNS - 1) // GRID_COLUMNS
    grid = Image.new("RGB", (width * GRID_COLUMNS, height * rows))
    for index, image in enumerate(images):
        row, column = divmod(index, GRID_COLUMNS)
        grid.paste(image.convert("RGB"), (column * width, row * height))
    return grid


def encode_png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _encode(image: Image.Image, fmt: str, quality: int) -> bytes:
    buffer = io.BytesIO()
    if fmt == "WEBP":
        if image.mode not in ("RGB", "RGBA"):
            image = image.convert("RGBA" if "A" in image.getbands() else "RGB")
        image.save(buffer, format="WEBP", quality=quality, method=4)
    else:
        # Full-resolution colour (4:4:4) at high quality; generated images have fine coloured detail.
        subsampling = 0 if quality >= 90 else 2
        image.convert("RGB").save(buffer, format="JPEG", quality=quality, subsampling=subsampling)
    return buffer.getvalue()


def encode_for_upload(image: Image.Image, max_bytes: int) -> tuple[bytes, str]:
    """The best encoding that fits in `max_bytes`, with its file extension (png, webp or jpg).

    Lossless PNG when it fits; else high-quality WebP, stepping the quality down; else JPEG; and only then a
    smaller image, since losing pixels hurts more than mild compression.
    """
    if max_bytes < MIN_UPLOAD_BYTES:
        raise ValueError(
            f"max_bytes={max_bytes} is too small for any image; allow at least {MIN_UPLOAD_BYTES}."
        )
    png = encode_png(image)
    if len(png) <= max_bytes:
        return png, "png"
    if features.check("webp"):
        for quality in WEBP_QUALITIES:
            data = _encode(image, "WEBP", quality)
            if len(data) <= max_bytes:
                return data, "webp"
    for quality in JPEG_QUALITIES:
        data = _encode(image, "JPEG", quality)
        if len(data) <= max_bytes:
            return data, "jpg"
    smaller = image
    while min(smaller.size) > MIN_SIDE:
        # JPEG size grows roughly with the pixel count, so shrink by the square root of the overshoot.
        factor = max(0.5, min(0.9, (max_bytes / len(data)) ** 0.5))
        width, height = smaller.size
        smaller = image.resize(
            (max(MIN_SIDE, int(width * factor)), max(MIN_SIDE, int(height * factor))),
            Image.Resampling.LANCZOS,
        )
        data = _encode(smaller, "JPEG", DOWNSCALE_QUALITY)
        if len(data) <= max_bytes:
            return data, "jpg"
    raise ValueError(f"Could not encode the image in {max_bytes} bytes.")
