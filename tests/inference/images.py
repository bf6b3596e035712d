"""Small helpers shared by the tiny-pipeline tests."""

from __future__ import annotations

import numpy as np
from PIL import Image


def always(step: int, total: int) -> bool:
    """A step callback that never asks the render to stop."""
    return True


def pixels(image: Image.Image) -> np.ndarray:
    """The image as signed integers, so that differences between images can go below zero."""
    return np.asarray(image, dtype=np.int16)
