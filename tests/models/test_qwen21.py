"""The tiny Qwen-Image 2.1 profile (``tiny21``): one pipeline for both kinds, Turbo, RGBA, previews."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from models import IMAGE_EDIT, TEXT_TO_IMAGE, GenerationRequest, PreviewOptions, encode_result, generate, get_profile
from models.profiles import QWEN_RESEARCH_LICENSE
from models.shared import load_shared

SIZE = 256


@pytest.fixture(scope="module")
def qwen21(tiny_cache_dir):
    return load_shared(get_profile("tiny21", cache_dir=tiny_cache_dir))


def _request(**fields) -> GenerationRequest:
    values = dict(prompt="a red fox", width=SIZE, height=SIZE, num_inference_steps=3, seed=7, true_cfg_scale=1.0)
    return GenerationRequest(**{**values, **fields})


@pytest.mark.unit
def test_profiles_name_the_weights_and_the_licence():
    real = get_profile("qwen21", qwen21_path="./weights/qwen21", qwen21_turbo_path="org/turbo")
    assert real.unified and real.transparent and real.device == "cuda"
    assert real.sources[TEXT_TO_IMAGE] == real.sources[IMAGE_EDIT] and real.sources[IMAGE_EDIT].endswith(
        "weights/qwen21"
    )
    assert real.turbo_source == "org/turbo"
    assert real.license == QWEN_RESEARCH_LICENSE == real.info(IMAGE_EDIT).license
    assert get_profile("qwen21").sources[TEXT_TO_IMAGE] == "Qwen/Qwen-Image-2.1"
    assert get_profile("qwen21").turbo_source == ""  # no fast mode until the Turbo checkpoint is named
    assert get_profile("qwen").license == "Apache-2.0" and not get_profile("qwen").transparent


def test_one_pipeline_serves_both_kinds(qwen21):
    assert qwen21[TEXT_TO_IMAGE].pipeline is qwen21[IMAGE_EDIT].pipeline
    assert qwen21[TEXT_TO_IMAGE].adapters is qwen21[IMAGE_EDIT].adapters
    assert type(qwen21[TEXT_TO_IMAGE].pipeline).__name__ == "QwenImage21Pipeline"
    assert qwen21[TEXT_TO_IMAGE].pipeline.vae.config.z_dim == 64
    assert qwen21[IMAGE_EDIT].describe()["fast_mode"] is True


def test_text_to_image_seeds_progress_and_opaque_output(qwen21):
    model = qwen21[TEXT_TO_IMAGE]
    steps: list[tuple[int, int]] = []
    first = generate(model, _request(), on_step=lambda s, t: steps.append((s, t)))
    again = generate(model, _request())
    other = generate(model, _request(seed=8))
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert first.images[0].mode == "RGB" and first.images[0].size == (SIZE, SIZE)
    assert first.images[0].tobytes() == again.images[0].tobytes()
    assert first.images[0].tobytes() != other.images[0].tobytes()


def test_transparent_output_is_rgba_with_its_alpha(qwen21):
    model = qwen21[TEXT_TO_IMAGE]
    request = _request(transparent=True)
    result = generate(model, request)
    image = result.images[0]
    assert image.mode == "RGBA"
    low, high = image.getchannel("A").getextrema()
    assert high > low  # the model's own alpha, not a constant
    png = Image.open(io.BytesIO(encode_result(model, request, result)[0]))
    assert png.mode == "RGBA" and png.text["seed"] == "7"


def test_edit_with_several_rgba_references(qwen21):
    model = qwen21[IMAGE_EDIT]
    references = [
        Image.new("RGBA", (320, 256), (0, 200, 0, 90)),
        Image.new("RGB", (256, 256), (10, 10, 200)),
        Image.new("L", (256, 320), 128),
    ]
    result = generate(
        model,
        GenerationRequest(
            prompt="put them together",
            images=references,
            num_inference_steps=1,
            seed=1,
            true_cfg_scale=1.0,
            edit_size=(SIZE, SIZE),
            transparent=True,
        ),
    )
    assert result.images[0].size == (SIZE, SIZE) and result.images[0].mode == "RGBA"
    with pytest.raises(ValueError, match="1-4 input images"):
        generate(model, GenerationRequest(prompt="x", images=references * 2, num_inference_steps=1))


def test_turbo_fast_mode_runs_its_own_grid(qwen21):
    steps: list[tuple[int, int]] = []
    base_transformer = qwen21[TEXT_TO_IMAGE].pipeline.transformer
    result = generate(
        qwen21[TEXT_TO_IMAGE], _request(fast=True, num_inference_steps=40), on_step=lambda s, t: steps.append((s, t))
    )
    assert steps[-1] == (8, 8) and result.steps_completed == 8
    assert qwen21[TEXT_TO_IMAGE].pipeline.transformer is base_transformer  # Turbo's was swapped in for the run only
    base = generate(qwen21[TEXT_TO_IMAGE], _request(num_inference_steps=8))
    assert base.images[0].tobytes() != result.images[0].tobytes()  # other transformer weights


def test_cancel_at_the_next_step_and_previews(qwen21):
    steps: list[int] = []
    previews: list[dict] = []
    result = generate(
        qwen21[TEXT_TO_IMAGE],
        _request(num_inference_steps=6),
        on_step=lambda s, t: steps.append(s),
        should_stop=lambda: len(steps) >= 4,
        previews=PreviewOptions(every=2, sink=previews.append),
    )
    assert result.interrupted and result.steps_completed == 4 and result.images == []
    assert previews and previews[0]["width"] == SIZE // 16  # one preview pixel per 16x16 token
    assert qwen21[TEXT_TO_IMAGE].preview_map().channels == 64


def test_redraws_and_masks_are_refused_naming_the_profile(qwen21):
    image = Image.new("RGB", (SIZE, SIZE))
    with pytest.raises(ValueError, match="tiny21 profile"):
        generate(qwen21[TEXT_TO_IMAGE], _request(images=[image], strength=0.5))
    with pytest.raises(ValueError, match="tiny21 profile"):
        generate(qwen21[IMAGE_EDIT], _request(images=[image], mask=Image.new("L", (SIZE, SIZE))))


def test_the_pair_refuses_transparency_naming_qwen21(text_to_image_model):
    with pytest.raises(ValueError, match="qwen21 profile"):
        generate(text_to_image_model, _request(transparent=True))


def test_first_block_step_cache_is_refused_at_load_with_the_reason(tiny_cache_dir):
    from models import load
    from models.profiles import ModelLoadError, with_speed_options

    profile = with_speed_options(get_profile("tiny21", cache_dir=tiny_cache_dir), step_cache="first_block")
    with pytest.raises(ModelLoadError, match="FirstBlockCache does not support QwenImage21TransformerBlock"):
        load(profile, TEXT_TO_IMAGE)


def test_taylorseer_step_cache_and_regional_compilation_run_on_2_1(tiny_cache_dir, monkeypatch):
    """Compiled with ``aot_eager`` (dynamo's tracing, no inductor code generation: see test_adapters)."""
    import numpy as np
    from torch._dynamo.utils import counters

    import models.adapters as adapters_module
    from models import load
    from models.profiles import with_speed_options

    base = get_profile("tiny21", cache_dir=tiny_cache_dir)
    cached = load(with_speed_options(base, step_cache="taylorseer"), TEXT_TO_IMAGE)
    plain = load(base, TEXT_TO_IMAGE)
    assert cached.describe()["step_cache"] == "taylorseer"
    steps = _request(num_inference_steps=6)
    with_cache = np.asarray(generate(cached, steps).images[0], dtype=np.float32)
    without = np.asarray(generate(plain, steps).images[0], dtype=np.float32)
    assert with_cache.shape == without.shape and np.abs(with_cache - without).mean() < 40  # an approximation

    monkeypatch.setattr(adapters_module, "COMPILE_BACKEND", "aot_eager")
    side = 64
    compiled = load(with_speed_options(base, compile=True, compile_warm_up_size=side), TEXT_TO_IMAGE)
    assert counters["stats"]["unique_graphs"] >= 1  # the blocks were compiled at load (warm-up)
    small = _request(width=side, height=side, num_inference_steps=2)
    assert (
        np.abs(
            np.asarray(generate(compiled, small).images[0], dtype=np.float32)
            - np.asarray(generate(plain, small).images[0], dtype=np.float32)
        ).max()
        <= 2
    )
