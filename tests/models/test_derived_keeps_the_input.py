"""Image-to-image and inpainting keep what they should of the input (tiny profile, real pipelines).

The tiny VAE is a low-pass autoencoder (latents hold each 8x8 block's mean colour), so the
pipelines' plumbing shows in the pixels. Figures measured when the thresholds were set (a smooth
128x128 picture, 10 steps, mean absolute difference in 0-255): output from input 6.1 / 44.4 / 72.0
at strength 0.1 / 0.5 / 0.9; another input (46.7 away) moves the output by 28.4 at strength 0.5;
inpainting the left half leaves the right half 5.7 from the input against 72.8 for the left, the
same through ``generate`` and the raw pipeline (256x256: 3.4 / 44.6 / 72.7, kept half 2.8).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models import GenerationRequest, generate
from models.derived import derived_pipeline
from tests.pixels import pixel_difference

pytestmark = pytest.mark.unit

SIZE = 128
STEPS = 10
# An output this close to its input kept it (measured 3-6); one this far was redrawn (44-73).
KEPT = 15.0
REDRAWN = 30.0
# A different input moves the output by more than this (measured 28.4).
CHANGED = 10.0


def smooth_picture(phase: float = 0.0) -> Image.Image:
    """Slow colour waves and a ramp: a picture an 8x8 low-pass keeps almost intact (3.3 away)."""
    y, x = np.mgrid[0:SIZE, 0:SIZE] / SIZE
    red = 127.5 + 110 * np.sin(2 * np.pi * (x + phase))
    green = 40 + 180 * y
    blue = 127.5 + 90 * np.cos(2 * np.pi * (x + y))
    return Image.fromarray(np.stack([red, green, blue], axis=-1).round().astype(np.uint8))


def left_half_mask() -> Image.Image:
    mask = Image.new("L", (SIZE, SIZE), 0)  # white = repaint
    mask.paste(255, (0, 0, SIZE // 2, SIZE))
    return mask


def halves(image: Image.Image) -> tuple[Image.Image, Image.Image]:
    return image.crop((0, 0, SIZE // 2, SIZE)), image.crop((SIZE // 2, 0, SIZE, SIZE))


def redraw(model, image: Image.Image, **options) -> Image.Image:
    values = dict(prompt="a hat", width=SIZE, height=SIZE, num_inference_steps=STEPS, seed=5, images=[image])
    values.update(options)
    return generate(model, GenerationRequest(**values)).images[0]


def test_a_light_redraw_stays_near_its_input_and_a_strong_one_does_not(text_to_image_model):
    picture = smooth_picture()
    light, strong = (pixel_difference(redraw(text_to_image_model, picture, strength=s), picture) for s in (0.1, 0.9))
    assert light < KEPT < REDRAWN < strong, (light, strong)


def test_another_input_image_gives_another_redraw(text_to_image_model):
    first = redraw(text_to_image_model, smooth_picture(), strength=0.5)
    second = redraw(text_to_image_model, smooth_picture(phase=0.5), strength=0.5)
    assert pixel_difference(first, second) > CHANGED


def test_inpainting_repaints_the_masked_half_and_keeps_the_other(text_to_image_model):
    # The raw pipeline, so that no compositing of the original pixels afterwards can help.
    picture = smooth_picture()
    pipeline = derived_pipeline(text_to_image_model.pipeline, "QwenImageInpaintPipeline")
    output = pipeline(
        prompt="a hat",
        image=picture,
        mask_image=left_half_mask(),
        strength=1.0,
        width=SIZE,
        height=SIZE,
        num_inference_steps=STEPS,
        generator=torch.Generator().manual_seed(5),
    ).images[0]
    (masked, kept), (original_left, original_right) = halves(output), halves(picture)
    kept_distance, masked_distance = pixel_difference(kept, original_right), pixel_difference(masked, original_left)
    assert kept_distance < KEPT < REDRAWN < masked_distance, (kept_distance, masked_distance)


def test_inpainting_through_the_service_keeps_the_unmasked_half(text_to_image_model):
    picture = smooth_picture()
    output = redraw(text_to_image_model, picture, mask=left_half_mask(), strength=1.0)
    (masked, kept), (original_left, original_right) = halves(output), halves(picture)
    assert pixel_difference(kept, original_right) < KEPT < REDRAWN < pixel_difference(masked, original_left)
