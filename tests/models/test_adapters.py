"""LoRA adapters per request, fast mode and step caching on the tiny pipelines (real diffusers + peft).

Adapters are real ``.safetensors`` LoRA files for the tiny transformer, built in code
(``models.tiny_adapter``) and loaded through ``load_lora_weights`` like published ones.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

import models.adapters as adapters_module
from models import TEXT_TO_IMAGE, GenerationRequest, ModelLoadError, generate, get_profile, load
from models.adapters import AdapterError, AdapterSource, AdapterUse, parse_adapter_uses
from models.profiles import with_speed_options
from models.tiny_adapter import WEIGHT_NAME, ensure_tiny_lora


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


def request(**overrides) -> GenerationRequest:
    values = dict(
        prompt="a red fox in snow", negative_prompt="blurry", width=256, height=256, num_inference_steps=3, seed=11
    )
    values.update(overrides)
    return GenerationRequest(**values)


@pytest.fixture(scope="module")
def sources(tiny_cache_dir) -> dict[str, AdapterSource]:
    return {
        name: AdapterSource(name, ensure_tiny_lora(TEXT_TO_IMAGE, tiny_cache_dir, name), WEIGHT_NAME)
        for name in ("ink", "neon", "clay")
    }


def use(sources, name: str, scale: float = 1.0) -> AdapterUse:
    return AdapterUse(name, scale, sources[name])


def fresh_model(tiny_cache_dir, **options):
    return load(with_speed_options(get_profile("tiny", cache_dir=tiny_cache_dir), **options), TEXT_TO_IMAGE)


@pytest.fixture(scope="module")
def model(tiny_cache_dir):
    """A model of its own: these tests load and evict adapters in it."""
    return fresh_model(tiny_cache_dir, adapter_capacity=2)


def run(model, *uses: AdapterUse, **overrides) -> np.ndarray:
    return pixels(generate(model, request(adapters=list(uses), **overrides)).images[0])


def test_an_adapter_changes_the_output_and_scale_zero_is_the_base(model, sources):
    base = run(model)
    styled = run(model, use(sources, "ink"))
    assert np.abs(styled - base).mean() > 0.01
    assert np.array_equal(run(model, use(sources, "ink", 0.0)), base)
    assert np.array_equal(run(model), base)  # a request without adapters runs the base model again


def test_requests_switching_adapters_each_get_exactly_theirs(model, sources, tiny_cache_dir):
    sequence = [run(model, use(sources, "ink")), run(model, use(sources, "neon", 0.8)), run(model, use(sources, "ink"))]
    for (name, scale), image in zip([("ink", 1.0), ("neon", 0.8), ("ink", 1.0)], sequence, strict=False):
        alone = fresh_model(tiny_cache_dir)
        assert np.array_equal(run(alone, use(sources, name, scale)), image), name


def test_two_adapters_with_weights_combine(model, sources, tiny_cache_dir):
    both = run(model, use(sources, "ink", 0.7), use(sources, "neon", 0.5))
    assert not np.array_equal(both, run(model, use(sources, "ink", 0.7)))
    assert not np.array_equal(both, run(model, use(sources, "neon", 0.5)))
    assert np.array_equal(both, run(fresh_model(tiny_cache_dir), use(sources, "ink", 0.7), use(sources, "neon", 0.5)))


def test_the_least_recently_used_adapter_is_evicted(tiny_cache_dir, sources):
    model = fresh_model(tiny_cache_dir, adapter_capacity=1)  # room for 2: one + the Lightning adapter
    for name in ("ink", "neon", "clay"):
        run(model, use(sources, name))
    assert model.adapters.loaded == ["neon", "clay"]
    assert sorted(model.pipeline.get_list_adapters()["transformer"]) == ["clay", "neon"]
    reloaded = run(model, use(sources, "ink"))  # evicted adapters load again on demand
    assert model.adapters.loaded == ["clay", "ink"]
    assert np.array_equal(reloaded, run(fresh_model(tiny_cache_dir), use(sources, "ink")))


class UnknownSize(AdapterSource):
    """A source whose size is unknown before loading, as a hub adapter's is until it is in the local
    Hugging Face cache (a stand-in: no hub is reachable here). Its weights are a local file."""

    def size_bytes(self) -> int:
        return 0


def test_the_byte_bound_counts_what_adapters_take_once_loaded_whatever_their_source(tiny_cache_dir, sources):
    from models.adapters import AdapterSet

    model = fresh_model(tiny_cache_dir)
    model.adapters.activate([use(sources, "ink")])
    one = model.adapters.loaded_bytes
    assert one > 0 and model.adapters.loaded == ["ink"]
    model.adapters.activate([])
    model.adapters._evict("ink")
    # Room for one adapter by bytes (three by count): a second one pushes the first out.
    model.adapters = AdapterSet(model.pipeline, capacity=3, max_bytes=one + one // 2)
    for name in ("ink", "neon", "clay"):
        unknown = AdapterUse(name, 1.0, UnknownSize(name, sources[name].path, WEIGHT_NAME))
        image = run(model, unknown)
        assert model.adapters.loaded == [name] and model.adapters.loaded_bytes == one
    assert np.array_equal(image, run(fresh_model(tiny_cache_dir), use(sources, "clay")))
    assert sorted(model.pipeline.get_list_adapters()["transformer"]) == ["clay"]


def test_a_name_that_now_means_other_weights_loads_them(model, sources, tiny_cache_dir):
    # A catalogue entry deleted and registered again under its name with another file: a replica
    # that still holds the old weights under that name must not run them.
    run(model, use(sources, "ink"))
    renamed = AdapterUse("ink", 1.0, sources["clay"])
    assert np.array_equal(run(model, renamed), run(fresh_model(tiny_cache_dir), use(sources, "clay")))
    assert model.adapters.loaded.count("ink") == 1


def test_a_file_that_is_not_a_lora_is_refused_and_the_model_keeps_working(model, sources, tmp_path):
    bogus = tmp_path / "bogus.safetensors"
    bogus.write_bytes(b"not a safetensors file")
    with pytest.raises(AdapterError, match="cannot be loaded"):
        run(model, AdapterUse("bogus", 1.0, AdapterSource("bogus", str(tmp_path), "bogus.safetensors")))
    assert "bogus" not in model.adapters.loaded
    assert np.array_equal(run(model, use(sources, "ink", 0.0)), run(model))


def test_fast_mode_runs_the_lightning_adapter_and_scheduler_without_cfg(model):
    schedulers, steps = [], []

    def on_step(step, total):
        steps.append((step, total))
        schedulers.append(model.pipeline.scheduler)

    fast = generate(model, request(fast=True, num_inference_steps=4), on_step=on_step)
    assert steps == [(step, 4) for step in range(1, 5)]
    lightning = schedulers[0].config
    assert math.isclose(lightning.base_shift, math.log(3)) and math.isclose(lightning.max_shift, math.log(3))
    assert lightning.shift_terminal is None and lightning.time_shift_type == "exponential"
    assert model.pipeline.scheduler is not schedulers[0]  # the base scheduler is back after the run
    assert model.pipeline.scheduler.config.base_shift == 0.5
    # CFG is off: the negative prompt no longer changes anything.
    other_negative = generate(model, request(fast=True, num_inference_steps=4, negative_prompt="sharp"))
    assert np.array_equal(pixels(fast.images[0]), pixels(other_negative.images[0]))
    # ... and the Lightning adapter is what made it differ from a plain 4-step CFG-off run.
    plain = generate(model, request(num_inference_steps=4, true_cfg_scale=1.0))
    assert not np.array_equal(pixels(fast.images[0]), pixels(plain.images[0]))


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ink", [AdapterUse("ink", 1.0)]),
        ("ink:0.5, neon:-1", [AdapterUse("ink", 0.5), AdapterUse("neon", -1.0)]),
        (" ink:2 ,", [AdapterUse("ink", 2.0)]),
        ("", []),
    ],
)
def test_adapter_lists_parse(text, expected):
    assert parse_adapter_uses(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("a,b,c,d", "at most 3"),
        ("ink:3", "between"),
        ("ink:nan", "between"),
        ("ink:x", "not a number"),
        ("ink,ink:0.5", "twice"),
        (":0.5", "missing adapter name"),
    ],
)
def test_bad_adapter_lists_are_refused(text, message):
    with pytest.raises(AdapterError, match=message):
        parse_adapter_uses(text)


def test_taylorseer_step_cache_hooks_the_transformer_and_keeps_sizes(tiny_cache_dir):
    model = fresh_model(tiny_cache_dir, step_cache="taylorseer")
    assert model.pipeline.transformer.is_cache_enabled
    result = generate(model, request(width=320, height=192, num_inference_steps=6))
    assert [image.size for image in result.images] == [(320, 192)]


def test_first_block_cache_is_refused_at_load_where_it_cannot_apply(tiny_cache_dir):
    # The tiny transformer has one block; FirstBlockCache needs a first block and a rest.
    with pytest.raises(ModelLoadError, match="at least 2 blocks"):
        fresh_model(tiny_cache_dir, step_cache="first_block")


@pytest.mark.parametrize(
    "options, message",
    [
        ({"step_cache": "teacache"}, "unknown step cache"),
        ({"step_cache": "taylorseer", "step_cache_threshold": 0.1}, "first_block step cache only"),
        ({"adapter_capacity": 0}, "at least 1"),
    ],
)
def test_speed_options_that_cannot_work_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        with_speed_options(get_profile("tiny"), **options)


def test_with_compilation_adapters_swap_in_without_recompiling(tiny_cache_dir, sources, monkeypatch):
    """Compiled at load with prepared hotswap slots: swapping adapters in and out, changing their
    scales, running the base model and fast mode never recompile, and each run matches a fresh
    uncompiled pipeline with the same adapters (to within the compiler's rounding).

    Compiled with the ``aot_eager`` backend: dynamo's tracing and guards, which decide whether a
    swap recompiles, are those of the real compilation; inductor's code generation is left out (it
    took ~90 s on this CPU and changes nothing about recompiling)."""
    import torch._dynamo
    from torch._dynamo.utils import counters

    monkeypatch.setattr(adapters_module, "COMPILE_BACKEND", "aot_eager")

    side = 64  # the warm-up's size: every run below has the shapes the warm-up compiled
    model = fresh_model(tiny_cache_dir, adapter_capacity=2, compile=True, max_adapter_rank=8, compile_warm_up_size=side)
    assert model.adapters.hotswap and model.adapters.slot_bytes > 0

    def sized(*uses, **overrides):
        return run(model, *uses, width=side, height=side, **overrides)

    sized(use(sources, "ink"))  # this prompt's text length: the one shape the warm-up could not know
    graphs = counters["stats"]["unique_graphs"]
    assert graphs >= 1  # the blocks were compiled
    runs = [
        (),
        (use(sources, "neon", 0.8),),
        (use(sources, "clay"),),
        (use(sources, "ink", 0.7), use(sources, "neon", 0.5)),
    ]
    with torch._dynamo.config.patch(error_on_recompile=True):
        compiled = [sized(*uses) for uses in runs]  # 3 adapters through 2 slots: one is swapped out
        fast = pixels(generate(model, request(fast=True, num_inference_steps=4, width=side, height=side)).images[0])
    assert counters["stats"]["unique_graphs"] == graphs  # nor was anything new compiled beside
    assert len(model.adapters.loaded) <= 3  # 2 slots + the Lightning adapter's
    eager = fresh_model(tiny_cache_dir)
    for uses, image in zip(runs, compiled, strict=True):
        expected = run(eager, *uses, width=side, height=side)
        assert np.abs(image - expected).max() <= 2, [u.name for u in uses]
    assert np.abs(compiled[1] - compiled[0]).mean() > 0.01  # the adapters really changed the output
    fast_request = request(fast=True, num_inference_steps=4, width=side, height=side)
    assert np.abs(fast - pixels(generate(eager, fast_request).images[0])).max() <= 2


def test_with_compilation_slots_larger_than_the_adapter_cache_are_refused_at_load(tiny_cache_dir):
    # The slots' memory is taken at load; over ADAPTER_CACHE_MB the replica says so instead of starting.
    with pytest.raises(ModelLoadError, match="ADAPTER_CACHE_MB"):
        fresh_model(tiny_cache_dir, adapter_capacity=4, adapter_max_mb=1, compile=True, max_adapter_rank=1024)
