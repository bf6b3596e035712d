"""The 2×2 grid and upload encoding (Pillow only)."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from bot.utils import imaging
from bot.utils.imaging import compose_grid, encode_for_upload, encode_png

COLOURS = [(255, 0, 0), (0, 255, 0), (0, 0, 255), (255, 255, 0)]


def noise(size: int, seed: int = 0) -> Image.Image:
    """Random pixels: the worst case for every codec."""
    return Image.frombytes("RGB", (size, size), random.Random(seed).randbytes(size * size * 3))


def test_grid_puts_images_in_reading_order() -> None:
    """U1 top-left, U2 top-right, U3 bottom-left, U4 bottom-right, with no gaps."""
    grid = compose_grid([Image.new("RGB", (8, 6), colour) for colour in COLOURS])
    assert grid.size == (16, 12)
    assert grid.mode == "RGB"
    corners = {(0, 0): 0, (7, 5): 0, (8, 0): 1, (15, 5): 1, (0, 6): 2, (7, 11): 2, (8, 6): 3, (15, 11): 3}
    for xy, index in corners.items():
        assert grid.getpixel(xy) == COLOURS[index], xy


def test_grid_rejects_wrong_count_and_mixed_sizes() -> None:
    """Three images, or images of different sizes, are refused with a message that says why."""
    with pytest.raises(ValueError, match="needs 4 images; got 3"):
        compose_grid([Image.new("RGB", (8, 8))] * 3)
    with pytest.raises(ValueError, match="share one size"):
        compose_grid([Image.new("RGB", (8, 8))] * 3 + [Image.new("RGB", (8, 9))])


def test_png_when_it_fits() -> None:
    """A simple image goes up as lossless PNG, byte for byte what encode_png makes."""
    image = Image.new("RGB", (64, 64), (10, 20, 30))
    data, extension = encode_for_upload(image, 1_000_000)
    assert extension == "png"
    assert data == encode_png(image)
    assert Image.open(io.BytesIO(data)).getpixel((5, 5)) == (10, 20, 30)


def test_noisy_image_falls_back_to_webp_within_the_limit() -> None:
    """Noise does not fit as PNG under the limit, so it goes up as WebP at full size."""
    image = noise(256)
    limit = 120_000
    assert len(encode_png(image)) > limit
    data, extension = encode_for_upload(image, limit)
    assert extension == "webp"
    assert len(data) <= limit
    decoded = Image.open(io.BytesIO(data))
    assert (decoded.format, decoded.size) == ("WEBP", (256, 256))


def test_jpeg_when_webp_does_not_fit(monkeypatch: pytest.MonkeyPatch) -> None:
    """With no WebP quality that fits, JPEG is the next choice, still at full size."""
    monkeypatch.setattr(imaging, "WEBP_QUALITIES", ())
    data, extension = encode_for_upload(noise(256), 150_000)
    assert extension == "jpg"
    assert len(data) <= 150_000
    decoded = Image.open(io.BytesIO(data))
    assert (decoded.format, decoded.size) == ("JPEG", (256, 256))


def test_downscales_as_a_last_resort() -> None:
    """When no codec fits at full size the image shrinks, keeping its aspect, until it fits."""
    image = noise(256).resize((256, 128))
    data, extension = encode_for_upload(image, 8_000)
    assert extension == "jpg"
    assert len(data) <= 8_000
    width, height = Image.open(io.BytesIO(data)).size
    assert width < 256
    assert abs(width / height - 2) < 0.1


def test_absurd_limit_is_refused() -> None:
    """A limit no image can meet is a caller bug, reported as ValueError."""
    with pytest.raises(ValueError, match="too small"):
        encode_for_upload(Image.new("RGB", (8, 8)), 100)
