"""The tiny profile's pictures show cause and effect: each input visibly changes the result.

Every test runs the real tiny pipelines, loaded as the service loads them. A changed prompt,
negative prompt (under true CFG), seed or input image must move the mean absolute pixel
difference above ``CHANGED``; the same inputs again must give identical pixels; no image may be
one flat colour. Figures measured when the thresholds were set (256x256 text-to-image, 4 steps;
edit at 256x256 output, 4 steps), with the low-pass tiny VAE (TINY_FORMAT 3): prompt ~23, negative
prompt ~20, seed ~75, input image ~16; per-channel spread 60-70. Before the tiny weights were
shaped they were 0.006, 0.006, 0.06, 0.00002 and a spread of ~1: a flat colour that no input reached.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models import GenerationRequest, generate
from tests.pixels import channel_spread, pixel_difference

# A change of input must move the mean absolute difference (0-255) above this; the smallest
# figure measured (~16, the edit input) is 3x larger.
CHANGED = 5.0
# Each RGB channel's standard deviation (0-255) must exceed this; measured 35-60.
NOT_FLAT = 10.0


def t2i(**overrides) -> GenerationRequest:
    values = dict(prompt="a red fox in snow", width=256, height=256, num_inference_steps=4, seed=7)
    values.update(overrides)
    return GenerationRequest(**values)


def edit(image: Image.Image, **overrides) -> GenerationRequest:
    values = dict(prompt="make it blue", images=[image], num_inference_steps=4, seed=3, edit_size=(256, 256))
    values.update(overrides)
    return GenerationRequest(**values)


@pytest.fixture(scope="module")
def input_image() -> Image.Image:
    gradient = np.linspace(0, 255, 96 * 128, dtype=np.uint8).reshape(96, 128)
    return Image.fromarray(np.stack([gradient, gradient[::-1], np.full_like(gradient, 90)], axis=-1))


def one(model, request: GenerationRequest) -> Image.Image:
    return generate(model, request).images[0]


def assert_cause_and_effect(model, base: GenerationRequest, changed: GenerationRequest) -> None:
    first = one(model, base)
    assert pixel_difference(first, one(model, base)) == 0.0
    assert pixel_difference(first, one(model, changed)) > CHANGED


@pytest.mark.parametrize(
    "base, changed",
    [
        pytest.param(t2i(), t2i(prompt="a blue whale at night"), id="prompt"),
        pytest.param(
            t2i(true_cfg_scale=4.0, negative_prompt=""),
            t2i(true_cfg_scale=4.0, negative_prompt="blurry, low quality"),
            id="negative-prompt",
        ),
        pytest.param(t2i(), t2i(seed=8), id="seed"),
    ],
)
def test_each_text_to_image_input_changes_the_pixels_and_repeats_exactly(text_to_image_model, base, changed):
    assert_cause_and_effect(text_to_image_model, base, changed)


def test_the_edit_input_image_changes_the_pixels_and_repeats_exactly(image_edit_model, input_image):
    # Top to bottom: this gradient's rows hardly change left to right, so a mirror barely differs.
    flipped = input_image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
    assert_cause_and_effect(image_edit_model, edit(input_image), edit(flipped))


def test_text_to_image_at_full_size_and_an_edit_are_not_flat(text_to_image_model, image_edit_model, input_image):
    full = one(text_to_image_model, t2i(width=1024, height=1024, num_inference_steps=2))
    edited = one(image_edit_model, edit(input_image))
    for image in (full, edited, one(text_to_image_model, t2i())):
        assert min(channel_spread(image)) > NOT_FLAT, channel_spread(image)


def test_pixel_difference_is_the_mean_absolute_difference_in_0_to_255():
    black = Image.new("RGB", (4, 4), (0, 0, 0))
    assert pixel_difference(black, Image.new("RGB", (4, 4), (30, 60, 90))) == 60.0
    assert pixel_difference(black, black.copy()) == 0.0
    with pytest.raises(ValueError, match="differ in size"):
        pixel_difference(black, Image.new("RGB", (4, 5)))
