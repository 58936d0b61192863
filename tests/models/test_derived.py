"""Image-to-image, inpainting and outpainting over the loaded weights (tiny profile, real pipelines).

The derived pipelines must add no memory (every parameter is a tensor the loaded pipeline already
holds, in the separate and in the shared layout), run the steps ``strength`` leaves, and honour
the mask and the output size.
"""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from models import IMAGE_EDIT, TEXT_TO_IMAGE, GenerationRequest, generate
from models.derived import Mode, extend_canvas, extension_for_ratio, steps_run
from models.shared import load_shared

pytestmark = pytest.mark.unit


def picture(size=(128, 96), seed=3) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8))


def left_half_mask(size=(128, 96)) -> Image.Image:
    mask = Image.new("L", size, 0)
    mask.paste(255, (0, 0, size[0] // 2, size[1]))
    return mask


def pointers(module) -> set[int]:
    return {p.data_ptr() for p in module.parameters()}


def assert_shares_every_weight(model, mode: Mode) -> None:
    base, derived = model.pipeline, model.pipeline_for(mode)
    assert type(derived) is not type(base)
    for name in ("transformer", "vae", "text_encoder"):
        assert getattr(derived, name) is getattr(base, name)
        assert pointers(getattr(derived, name)) == pointers(getattr(base, name))
    assert model.pipeline_for(mode) is derived  # made once


def test_derived_pipelines_hold_no_weight_of_their_own_in_the_separate_layout(text_to_image_model, image_edit_model):
    assert_shares_every_weight(text_to_image_model, Mode.image_to_image)
    assert_shares_every_weight(text_to_image_model, Mode.inpaint)
    assert_shares_every_weight(image_edit_model, Mode.inpaint)
    assert text_to_image_model.modes() == (Mode.base, Mode.image_to_image, Mode.inpaint)
    assert image_edit_model.modes() == (Mode.base, Mode.inpaint)


def test_derived_pipelines_hold_no_weight_of_their_own_in_the_shared_layout(tiny_profile):
    shared = load_shared(tiny_profile)
    for kind, modes in ((TEXT_TO_IMAGE, (Mode.image_to_image, Mode.inpaint)), (IMAGE_EDIT, (Mode.inpaint,))):
        for mode in modes:
            assert_shares_every_weight(shared[kind], mode)
    assert shared[TEXT_TO_IMAGE].pipeline_for(Mode.inpaint).vae is shared[IMAGE_EDIT].pipeline_for(Mode.inpaint).vae


@pytest.mark.parametrize(("strength", "steps"), [(1.0, 8), (0.5, 4), (0.3, 3), (0.01, 1)])
def test_a_redraw_runs_the_steps_strength_leaves_and_reports_them(text_to_image_model, strength, steps):
    seen = []
    request = GenerationRequest(
        prompt="a fox", width=128, height=96, num_inference_steps=8, seed=1, images=[picture()], strength=strength
    )
    result = generate(text_to_image_model, request, on_step=lambda step, total: seen.append((step, total)))
    assert steps_run(8, strength) == steps == result.steps_completed
    assert seen == [(n, steps) for n in range(1, steps + 1)]
    assert result.images[0].size == (128, 96)


def test_a_redraw_takes_the_output_size_asked_for(text_to_image_model):
    request = GenerationRequest(
        prompt="a fox", width=64, height=128, num_inference_steps=2, seed=1, images=[picture()], strength=0.5
    )
    assert generate(text_to_image_model, request).images[0].size == (64, 128)


def test_an_inpainting_runs_and_the_same_seed_repeats(text_to_image_model):
    # The masked edit's pipeline works at about a megapixel whatever the output size (~10 s a run on
    # two cores): it runs once, outside the fast tier, in test_masked_edit.py.
    request = GenerationRequest(
        prompt="a hat",
        num_inference_steps=2,
        seed=5,
        images=[picture()],
        mask=left_half_mask(),
        strength=1.0,
        width=128,
        height=96,
    )
    first, again = generate(text_to_image_model, request), generate(text_to_image_model, request)
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))


def test_a_mask_of_another_size_is_refused_before_any_work(text_to_image_model):
    request = GenerationRequest(prompt="x", images=[picture()], mask=left_half_mask((64, 64)), strength=1.0)
    with pytest.raises(ValueError, match="mask"):
        generate(text_to_image_model, request)


def test_outpainting_canvas_keeps_the_image_and_masks_the_border_with_an_overlap():
    image = picture((100, 80))
    canvas, mask = extend_canvas(image, 40, 0, 20, 10, overlap=16)
    assert canvas.size == mask.size == (160, 90)
    assert np.array_equal(np.asarray(canvas)[0:80, 40:140], np.asarray(image))
    m = np.asarray(mask)
    assert (m[:, :40] == 255).all() and (m[:, 140:] == 255).all() and (m[80:, :] == 255).all()
    assert m[40, 90] == 0  # the middle of the original is kept
    assert m[40, 44] == 255 and 0 < m[40, 56] < 255  # the seam is repainted, feathered into the original
    assert extension_for_ratio(320, 240, (16, 9)) == (53, 0, 54, 0)
    assert extension_for_ratio(320, 240, (1, 1)) == (0, 40, 0, 40)


def test_an_adapter_and_fast_mode_reach_a_redraw_through_the_shared_transformer(tiny_cache_dir):
    from models import get_profile, load
    from models.adapters import AdapterSource, AdapterUse
    from models.profiles import with_speed_options
    from models.tiny_adapter import WEIGHT_NAME, ensure_tiny_lora

    model = load(with_speed_options(get_profile("tiny", cache_dir=tiny_cache_dir), adapter_capacity=1), TEXT_TO_IMAGE)
    ink = AdapterUse(
        "ink", 1.0, AdapterSource("ink", ensure_tiny_lora(TEXT_TO_IMAGE, tiny_cache_dir, "ink"), WEIGHT_NAME)
    )

    def run(**options) -> np.ndarray:
        request = GenerationRequest(
            prompt="a fox", width=128, height=96, num_inference_steps=4, seed=2, images=[picture()], strength=1.0
        )
        for key, value in options.items():
            setattr(request, key, value)
        return np.asarray(generate(model, request).images[0], dtype=np.float32)

    base = run()
    assert np.abs(run(adapters=[ink]) - base).mean() > 0.01  # the adapter changed the redraw
    assert np.abs(run(fast=True) - base).mean() > 0.01  # Lightning adapter and its scheduler
    assert np.array_equal(run(), base)  # and nothing stays behind


def test_a_step_cache_on_the_transformer_serves_a_redraw_and_an_inpainting(tiny_cache_dir):
    from models import get_profile, load
    from models.profiles import with_speed_options

    model = load(
        with_speed_options(get_profile("tiny", cache_dir=tiny_cache_dir), step_cache="taylorseer"), TEXT_TO_IMAGE
    )
    for mask in (None, left_half_mask()):
        request = GenerationRequest(
            prompt="a fox",
            width=128,
            height=96,
            num_inference_steps=6,
            seed=2,
            images=[picture()],
            strength=0.5,
            mask=mask,
        )
        result = generate(model, request)
        assert result.steps_completed == 3 and result.images[0].size == (128, 96)


def test_an_inpainting_keeps_the_originals_own_pixels_outside_the_mask(text_to_image_model):
    assert_keeps_the_unmasked_side(text_to_image_model, dict(width=128, height=96))


def assert_keeps_the_unmasked_side(model, size: dict) -> None:
    source = picture((128, 96))
    request = GenerationRequest(
        prompt="a hat", num_inference_steps=2, seed=5, images=[source], mask=left_half_mask(), strength=1.0, **size
    )
    out = generate(model, request).images[0]
    kept = np.asarray(source.resize(out.size, Image.Resampling.LANCZOS), dtype=np.float32)
    got = np.asarray(out, dtype=np.float32)
    quarter = out.size[0] // 4
    assert np.abs(got[:, -quarter:] - kept[:, -quarter:]).max() <= 1  # the unmasked side is the original
    assert np.abs(got[:, :quarter] - kept[:, :quarter]).mean() > 5  # the masked side was redrawn


def test_deriving_from_a_bfloat16_pipeline_casts_nothing_and_copies_nothing():
    import torch

    from models.derived import DERIVED_CLASSES, derived_pipeline
    from models.tiny import build_tiny_pipeline

    for kind in (TEXT_TO_IMAGE, IMAGE_EDIT):
        base = build_tiny_pipeline(kind).to(dtype=torch.bfloat16)
        before = {name: pointers(getattr(base, name)) for name in ("transformer", "vae", "text_encoder")}
        for (owner, _), class_name in DERIVED_CLASSES.items():
            if owner != kind:
                continue
            derived = derived_pipeline(base, class_name)
            for name in ("transformer", "vae", "text_encoder"):
                module = getattr(derived, name)
                assert module is getattr(base, name) and pointers(module) == before[name]
                assert {p.dtype for p in module.parameters()} == {torch.bfloat16}, (class_name, name)
