"""Generation with the tiny pipelines: sizes, seeds, true CFG, progress, interruption, edit inputs.

Small sizes and 2 steps wherever the behaviour does not depend on them; one full 1024x1024,
20-step run checks the real shape of a production request.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models import ASPECT_RATIOS, GenerationRequest, edit_output_size, generate


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def small(**overrides) -> GenerationRequest:
    values = dict(prompt="a red fox in snow", width=256, height=256, num_inference_steps=2, seed=7)
    values.update(overrides)
    return GenerationRequest(**values)


@pytest.fixture(scope="module")
def input_image() -> Image.Image:
    gradient = np.linspace(0, 255, 96 * 128, dtype=np.uint8).reshape(96, 128)
    return Image.fromarray(np.stack([gradient, gradient[::-1], np.full_like(gradient, 90)], axis=-1))


def test_full_size_text_to_image_runs_every_step_with_progress(text_to_image_model):
    seen = []
    request = GenerationRequest(prompt="a lighthouse at dusk", negative_prompt="blurry", num_inference_steps=20)
    result = generate(text_to_image_model, request, on_step=lambda step, total: seen.append((step, total)))
    assert seen == [(step, 20) for step in range(1, 21)]
    assert (result.steps_completed, result.interrupted) == (20, False)
    assert [image.size for image in result.images] == [(1024, 1024)]
    assert result.images[0].mode == "RGB"
    assert pixels(result.images[0]).std() > 0  # not a blank frame
    assert result.seconds > 0


@pytest.mark.parametrize("ratio", sorted(ASPECT_RATIOS))
def test_text_to_image_makes_the_contract_size_for_every_aspect_ratio(text_to_image_model, ratio):
    width, height = ASPECT_RATIOS[ratio]
    result = generate(text_to_image_model, small(width=width, height=height))
    assert [image.size for image in result.images] == [(width, height)]


def test_same_seed_gives_identical_pixels_and_another_seed_does_not(text_to_image_model):
    first = generate(text_to_image_model, small(seed=11)).images[0]
    again = generate(text_to_image_model, small(seed=11)).images[0]
    other = generate(text_to_image_model, small(seed=12)).images[0]
    assert np.array_equal(pixels(first), pixels(again))
    assert not np.array_equal(pixels(first), pixels(other))


def test_random_seed_is_recorded_and_reproduces_the_image(text_to_image_model):
    random_run = generate(text_to_image_model, small(seed=-1))
    assert 0 <= random_run.seed < 2**32
    replay = generate(text_to_image_model, small(seed=random_run.seed))
    assert np.array_equal(pixels(random_run.images[0]), pixels(replay.images[0]))


def test_true_cfg_runs_with_the_default_empty_negative_prompt(text_to_image_model):
    assert GenerationRequest(prompt="x").negative_prompt == ""
    without_cfg = generate(text_to_image_model, small(true_cfg_scale=1.0)).images[0]
    with_cfg = generate(text_to_image_model, small(true_cfg_scale=4.0)).images[0]
    assert not np.array_equal(pixels(without_cfg), pixels(with_cfg))


def test_negative_prompt_changes_the_image(text_to_image_model):
    empty = generate(text_to_image_model, small(negative_prompt="")).images[0]
    worded = generate(text_to_image_model, small(negative_prompt="low quality, watermark")).images[0]
    assert not np.array_equal(pixels(empty), pixels(worded))


def test_several_images_per_request_differ_from_each_other(text_to_image_model):
    result = generate(text_to_image_model, small(num_images=2))
    assert len(result.images) == 2
    assert not np.array_equal(pixels(result.images[0]), pixels(result.images[1]))


def test_should_stop_after_step_k_stops_there_and_returns_no_images(text_to_image_model):
    seen = []
    result = generate(
        text_to_image_model,
        small(num_inference_steps=6),
        on_step=lambda step, total: seen.append(step),
        should_stop=lambda: len(seen) >= 2,
    )
    assert seen == [1, 2]
    assert (result.steps_completed, result.interrupted, result.images) == (2, True, [])


def test_stop_requested_before_the_start_runs_no_step(text_to_image_model):
    seen = []
    result = generate(text_to_image_model, small(), on_step=lambda *a: seen.append(a), should_stop=lambda: True)
    assert (result.steps_completed, result.interrupted, result.images, seen) == (0, True, [], [])


def test_a_stopped_run_leaves_without_decoding_and_the_model_is_usable_again(text_to_image_model, monkeypatch):
    vae = text_to_image_model.pipeline.vae
    decodes = []
    original = vae.decode
    monkeypatch.setattr(vae, "decode", lambda *a, **k: decodes.append(1) or original(*a, **k))  # counts, then decodes
    seen = []
    stopped = generate(
        text_to_image_model,
        small(num_inference_steps=4),
        on_step=lambda step, total: seen.append(step),
        should_stop=lambda: bool(seen),
    )
    assert (stopped.steps_completed, stopped.interrupted, decodes) == (1, True, [])
    result = generate(text_to_image_model, small(num_inference_steps=3))
    assert (result.steps_completed, result.interrupted, len(result.images), len(decodes)) == (3, False, 1, 1)


def test_edit_with_one_input_follows_the_pipelines_size_rule_and_depends_on_the_input(image_edit_model, input_image):
    seen = []
    request = dict(prompt="make it blue", num_inference_steps=2, seed=3)
    result = generate(
        image_edit_model,
        GenerationRequest(images=[input_image], **request),
        on_step=lambda step, total: seen.append(step),
    )
    assert seen == [1, 2]
    assert [image.size for image in result.images] == [edit_output_size(*input_image.size)] == [(1184, 896)]
    flipped = input_image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    other = generate(image_edit_model, GenerationRequest(images=[flipped], **request))
    assert not np.array_equal(pixels(result.images[0]), pixels(other.images[0]))


def test_edit_with_two_inputs_takes_the_size_of_the_last(image_edit_model, input_image):
    square = Image.new("RGB", (64, 64), (20, 200, 40))
    request = GenerationRequest(prompt="put both together", num_inference_steps=2, seed=3, images=[input_image, square])
    result = generate(image_edit_model, request)
    assert [image.size for image in result.images] == [(1024, 1024)]


@pytest.mark.parametrize(
    "change, message",
    [
        (dict(images=[]), "1-2 input images"),
        (dict(images=[Image.new("RGB", (8, 8))] * 3), "1-2 input images"),
        (dict(num_images=5), "num_images"),
        (dict(num_inference_steps=0), "num_inference_steps"),
    ],
)
def test_bad_edit_requests_are_refused_before_running(image_edit_model, input_image, change, message):
    values = dict(prompt="x", images=[input_image])
    values.update(change)
    with pytest.raises(ValueError, match=message):
        generate(image_edit_model, GenerationRequest(**values))


def test_text_to_image_sizes_must_be_multiples_of_16(text_to_image_model):
    with pytest.raises(ValueError, match="multiples of 16"):
        generate(text_to_image_model, small(width=1000))
