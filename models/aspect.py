"""Output sizes: the contract's aspect ratios for text-to-image and the edit pipeline's size rule.

Pure Python on purpose: the web ingress imports this module and must stay free of torch.
"""

from __future__ import annotations

import math

# The contract's table (api-contract.md): every size is a multiple of 16, which the pipelines need
# (8x VAE compression, then 2x2 latent patches).
ASPECT_RATIOS: dict[str, tuple[int, int]] = {
    "1:1": (1024, 1024),
    "16:9": (1664, 928),
    "9:16": (928, 1664),
    "4:3": (1472, 1104),
    "3:4": (1104, 1472),
    "3:2": (1584, 1056),
    "2:3": (1056, 1584),
}

DEFAULT_ASPECT_RATIO = "1:1"

# Sizes asked for in pixels (``/v1``'s ``size``, the native ``width``/``height``): each side a
# multiple of 16 (the VAE's 8x and the 2x2 latent patches) from MIN_SIDE to MAX_SIDE. That covers
# the seven ratios' sizes and OpenAI's 1024x1536 / 1536x1024 as well as 256x256 and 512x512.
MIN_SIDE, MAX_SIDE, SIDE_MULTIPLE = 256, 2048, 16


def valid_side(side: int) -> bool:
    return MIN_SIDE <= side <= MAX_SIDE and side % SIDE_MULTIPLE == 0


# The edit pipeline aims at about one megapixel and rounds each side to 32, then to 16.
_EDIT_TARGET_AREA = 1024 * 1024


def size_for_aspect_ratio(ratio: str) -> tuple[int, int]:
    """Return ``(width, height)`` for one of the contract's ratios; ``KeyError`` for any other."""
    return ASPECT_RATIOS[ratio]


def edit_output_size(input_width: int, input_height: int) -> tuple[int, int]:
    """Return the ``(width, height)`` the edit pipeline produces for its last input image.

    Mirrors ``QwenImageEditPlusPipeline``: about 1024x1024 pixels in the input's aspect ratio,
    each side rounded to a multiple of 32 (e.g. 1024x768 in gives 1184x896 out).
    """
    if input_width <= 0 or input_height <= 0:
        raise ValueError(f"image size must be positive, got {input_width}x{input_height}")
    ratio = input_width / input_height
    width = math.sqrt(_EDIT_TARGET_AREA * ratio)
    height = width / ratio
    width = round(width / 32) * 32
    height = round(height / 32) * 32
    return width // 16 * 16, height // 16 * 16


def redraw_output_size(input_width: int, input_height: int) -> tuple[int, int]:
    """The default output of an image-to-image: the edit rule (the input's ratio at about a
    megapixel), brought within MAX_SIDE on the long side for very wide or tall inputs (a long
    outpainting), each side a multiple of 16."""
    width, height = edit_output_size(input_width, input_height)
    scale = min(1.0, MAX_SIDE / max(width, height))
    return max(SIDE_MULTIPLE, int(width * scale) // SIDE_MULTIPLE * SIDE_MULTIPLE), max(
        SIDE_MULTIPLE, int(height * scale) // SIDE_MULTIPLE * SIDE_MULTIPLE
    )
