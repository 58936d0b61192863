"""The ``faulty`` profile: the sleep profile plus the failures a prompt asks for (models.faulty)."""

from __future__ import annotations

import errno
import time

import pytest

from models import GenerationRequest, encode_result, generate, get_profile, load
from models.faulty import FaultHooks, _crash_step
from models.hooks import GenerationHooks

pytestmark = pytest.mark.unit


@pytest.fixture
def faulty(tmp_path):
    return load(get_profile("faulty", sleep_seconds_per_step=0.0, cache_dir=str(tmp_path)), "text_to_image")


def test_only_the_faulty_profile_fails_on_request(tmp_path):
    assert isinstance(get_profile("faulty", cache_dir=str(tmp_path)).hooks, FaultHooks)
    assert all(type(get_profile(name).hooks) is GenerationHooks for name in ("tiny", "sleep", "qwen"))
    plain = load(get_profile("sleep", sleep_seconds_per_step=0.0), "text_to_image")
    request = GenerationRequest(prompt="__fault_raise__", num_inference_steps=2, width=16, height=16)
    result = generate(plain, request)
    assert len(encode_result(plain, request, result)) == 1


def test_exceptions_and_out_of_memory_happen_before_the_first_step(faulty):
    steps = []
    with pytest.raises(RuntimeError, match="injected pipeline failure"):
        generate(
            faulty,
            GenerationRequest(prompt="__fault_raise__ x", num_inference_steps=2, width=16, height=16),
            on_step=lambda step, total: steps.append(step),
        )
    with pytest.raises(MemoryError, match="out of memory"):
        generate(faulty, GenerationRequest(prompt="__fault_oom__", num_inference_steps=2, width=16, height=16))
    assert steps == []


def test_a_write_failure_happens_when_the_result_is_encoded(faulty):
    request = GenerationRequest(prompt="__fault_disk_full__", num_inference_steps=2, width=16, height=16)
    result = generate(faulty, request)
    assert len(result.images) == 1
    with pytest.raises(OSError) as failure:
        encode_result(faulty, request, result)
    assert failure.value.errno == errno.ENOSPC


def test_a_crash_happens_at_its_step_every_time_or_only_the_first_time(tmp_path):
    assert _crash_step("__fault_crash_at_step_3__ x", str(tmp_path)) == 3
    assert _crash_step("__fault_crash_at_step_3__ x", str(tmp_path)) == 3
    assert _crash_step("__fault_crash_once_at_step_2__ y", str(tmp_path)) == 2
    assert _crash_step("__fault_crash_once_at_step_2__ y", str(tmp_path)) is None
    assert _crash_step("an ordinary prompt", str(tmp_path)) is None


def test_a_slow_step_prompt_slows_every_step_and_a_cancel_still_stops_it(faulty):
    seen: list[int] = []
    started = time.monotonic()
    result = generate(
        faulty,
        GenerationRequest(prompt="__fault_slow_step_0.05__ x", num_inference_steps=4, width=16, height=16),
        on_step=lambda step, total: seen.append(step),
        should_stop=lambda: len(seen) >= 2,
    )
    assert time.monotonic() - started >= 0.1  # two steps of at least 0.05 s each (a lower bound only)
    assert seen == [1, 2] and result.interrupted and result.steps_completed == 2
