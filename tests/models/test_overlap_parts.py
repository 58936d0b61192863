"""What lets a replica start the next generation early: images made from the decoded bytes later
(``defer_pixels``), and prompt embeddings kept between runs (``models.prompt_cache``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from models import GenerationRequest, generate
from models.prompt_cache import PromptCache


def small(**overrides) -> GenerationRequest:
    values = dict(prompt="a red fox in snow", width=256, height=256, num_inference_steps=2, seed=7, num_images=2)
    values.update(overrides)
    return GenerationRequest(**values)


def test_deferred_pixels_are_the_same_images_as_made_at_once(text_to_image_model):
    at_once = generate(text_to_image_model, small())
    deferred = generate(text_to_image_model, small(), defer_pixels=True)
    assert deferred.images == [] and deferred.finish is not None  # nothing made yet
    images = deferred.pixels()
    assert [i.size for i in images] == [(256, 256), (256, 256)]
    for a, b in zip(at_once.images, images, strict=True):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    assert deferred.pixels() is images  # made once


def test_deferred_pixels_of_an_edit_are_the_same_images(image_edit_model):
    source = Image.fromarray(np.full((96, 128, 3), 120, dtype=np.uint8))
    request = dict(prompt="make it blue", images=[source], num_inference_steps=2, seed=3)
    at_once = generate(image_edit_model, GenerationRequest(**request))
    deferred = generate(image_edit_model, GenerationRequest(**request), defer_pixels=True).pixels()
    assert np.array_equal(np.asarray(at_once.images[0]), np.asarray(deferred[0]))


def test_a_stopped_deferred_run_has_nothing_to_finish(text_to_image_model):
    result = generate(text_to_image_model, small(), should_stop=lambda: True, defer_pixels=True)
    assert result.interrupted and result.finish is None and result.pixels() == []


def test_repeated_and_negative_prompts_are_encoded_once_and_the_image_is_unchanged(text_to_image_model):
    cache = text_to_image_model.prompt_cache
    assert cache is not None
    first = generate(text_to_image_model, small(prompt="a cached lighthouse", negative_prompt="blurry", num_images=1))
    misses, hits = cache.misses, cache.hits
    again = generate(text_to_image_model, small(prompt="a cached lighthouse", negative_prompt="blurry", num_images=1))
    assert cache.misses == misses  # both prompts came from the cache
    assert cache.hits == hits + 2
    assert np.array_equal(np.asarray(first.images[0]), np.asarray(again.images[0]))
    other = generate(text_to_image_model, small(prompt="an uncached harbour", negative_prompt="blurry", num_images=1))
    assert cache.misses == misses + 1  # only the new prompt was encoded
    assert not np.array_equal(np.asarray(other.images[0]), np.asarray(first.images[0]))


def test_the_cache_drops_the_least_recently_used_beyond_its_bytes():
    cache = PromptCache(max_bytes=3 * 400)  # three entries of 100 float32 each
    encoded = []

    def encoder(name):
        def encode():
            encoded.append(name)
            return torch.zeros(1, 100), None

        return encode

    for name in ("a", "b", "c"):
        cache.get((name,), encoder(name))
    cache.get(("a",), encoder("a"))  # a is now the most recently used
    cache.get(("d",), encoder("d"))  # b goes
    assert cache.bytes == 1200 and len(cache) == 3
    cache.get(("a",), encoder("a"))
    cache.get(("b",), encoder("b"))
    assert encoded == ["a", "b", "c", "d", "b"]


def test_an_entry_larger_than_the_cache_is_not_kept():
    cache = PromptCache(max_bytes=100)
    cache.get(("big",), lambda: (torch.zeros(1, 100), None))
    assert len(cache) == 0 and cache.bytes == 0


@pytest.mark.parametrize("max_bytes", [0])
def test_a_cache_of_no_bytes_leaves_the_pipeline_alone(max_bytes):
    class Pipeline:
        def _get_qwen_prompt_embeds(self, prompt=None, device=None, dtype=None):
            return "original"

    pipeline = Pipeline()
    PromptCache(max_bytes).install(pipeline)
    assert "_get_qwen_prompt_embeds" not in vars(pipeline)
