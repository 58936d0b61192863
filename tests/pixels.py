"""Pixel comparisons for tests that check an input reached the model."""

from __future__ import annotations

import numpy as np
from PIL import Image


def pixel_difference(a: Image.Image, b: Image.Image) -> float:
    """Mean absolute difference of two images of one size, in 0-255 units (RGB)."""
    if a.size != b.size:
        raise ValueError(f"images differ in size: {a.size} and {b.size}")
    first = np.asarray(a.convert("RGB"), dtype=np.float64)
    second = np.asarray(b.convert("RGB"), dtype=np.float64)
    return float(np.abs(first - second).mean())


def channel_spread(image: Image.Image) -> list[float]:
    """Standard deviation of each RGB channel over the image, in 0-255 units."""
    values = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
    return [float(value) for value in values.std(axis=0)]
