"""Image-to-image, inpainting and outpainting over the weights a replica already holds.

diffusers has the pipelines over the very components the replicas load:
``QwenImageImg2ImgPipeline`` and ``QwenImageInpaintPipeline`` take the text-to-image model's,
``QwenImageEditInpaintPipeline`` the edit model's (with its processor). Built over the loaded
pipeline's modules they share every one of them: no weights are copied, no memory is added.

Pure Python here except :func:`derived_pipeline` (which imports diffusers when called) and the
canvas helpers (PIL): the ingress imports the step and size rules.
"""

from __future__ import annotations

import enum
import math
from typing import Any, Optional

from PIL import Image

# Strength when a request gives none: a redraw that keeps the composition (AUTOMATIC1111 uses
# 0.75, diffusers 0.6), and a full repaint of a masked region (a mask says "new content here").
DEFAULT_STRENGTH = 0.6
DEFAULT_MASKED_STRENGTH = 1.0
# Outpainting: the new area's mask reaches this many pixels into the original, so the seam is
# repainted too and does not show (blurred over the same width).
OUTPAINT_OVERLAP = 32
MAX_EXTEND = 2048  # pixels on one side


class Mode(str, enum.Enum):
    """Which pipeline of a model kind runs a request."""

    base = "base"  # the loaded pipeline: text-to-image, or edit
    image_to_image = "image_to_image"
    inpaint = "inpaint"


# (kind, mode) → the diffusers class derived from that kind's loaded pipeline.
DERIVED_CLASSES = {
    ("text_to_image", Mode.image_to_image): "QwenImageImg2ImgPipeline",
    ("text_to_image", Mode.inpaint): "QwenImageInpaintPipeline",
    ("image_edit", Mode.inpaint): "QwenImageEditInpaintPipeline",
}


def steps_run(num_inference_steps: int, strength: Optional[float]) -> int:
    """The denoising steps a run makes: all of them, or under ``strength`` the last
    ``strength × steps`` (diffusers' ``get_timesteps``), at least one."""
    if strength is None:
        return num_inference_steps
    start = int(max(num_inference_steps - min(num_inference_steps * strength, num_inference_steps), 0))
    return max(1, num_inference_steps - start)


def derived_pipeline(pipeline: Any, class_name: str) -> Any:
    """``class_name`` built over ``pipeline``'s own modules: nothing is copied, nothing is moved.

    Not ``from_pipe``: it ends with ``.to(dtype=…)`` (float32 unless told), which would cast the
    shared bfloat16 transformer and text encoder in place (tens of GB on a GPU) and is refused
    under group offloading. The constructor only registers the modules it is given; offloading
    hooks, adapters, a step cache and compiled regions live on those modules and come along.
    """
    import diffusers

    cls = getattr(diffusers, class_name)
    expected, _ = cls._get_signature_keys(cls)
    derived = cls(**{name: pipeline.components[name] for name in expected if name in pipeline.components})
    derived.set_progress_bar_config(disable=True)
    return derived


def extend_canvas(
    image: Image.Image, left: int, top: int, right: int, bottom: int, overlap: int = OUTPAINT_OVERLAP
) -> tuple[Image.Image, Image.Image]:
    """The canvas of an outpainting and its mask (white = generate): the image in the middle of a
    larger canvas whose new border is filled with the image's edge pixels stretched outwards (a
    better start for the denoiser than a flat colour), and a mask over the border that reaches
    ``overlap`` pixels into the original, feathered, so that the seam is repainted."""
    from PIL import ImageFilter

    width, height = image.size
    canvas_size = (width + left + right, height + top + bottom)
    canvas = image.convert("RGB").resize(canvas_size, Image.Resampling.BILINEAR)
    canvas.paste(image.convert("RGB"), (left, top))
    mask = Image.new("L", canvas_size, 255)
    keep = (
        left + (overlap if left else 0),
        top + (overlap if top else 0),
        left + width - (overlap if right else 0),
        top + height - (overlap if bottom else 0),
    )
    if keep[2] > keep[0] and keep[3] > keep[1]:
        mask.paste(0, keep)
    if overlap:
        mask = mask.filter(ImageFilter.GaussianBlur(overlap / 4))
        mask.paste(255, (0, 0, canvas_size[0], top))
        mask.paste(255, (0, top + height, canvas_size[0], canvas_size[1]))
        mask.paste(255, (0, 0, left, canvas_size[1]))
        mask.paste(255, (left + width, 0, canvas_size[0], canvas_size[1]))
    return canvas, mask


def extension_for_ratio(width: int, height: int, ratio: tuple[int, int]) -> tuple[int, int, int, int]:
    """Pixels to add on (left, top, right, bottom) so that ``width × height`` reaches ``ratio``,
    centred, never cropping (the short dimension grows)."""
    target = ratio[0] / ratio[1]
    if width / height < target:
        extra = math.ceil(height * target) - width
        return extra // 2, 0, extra - extra // 2, 0
    extra = math.ceil(width / target) - height
    return 0, extra // 2, 0, extra - extra // 2
