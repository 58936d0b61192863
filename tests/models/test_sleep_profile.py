"""The sleep profile: a benchmark stand-in that keeps the generation contract without any torch work."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from models import IMAGE_EDIT, TEXT_TO_IMAGE, GenerationRequest, generate, get_profile, load

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def sleep_profile():
    return get_profile("sleep", sleep_seconds_per_step=0.01)


def test_sleep_profile_reports_every_step_and_takes_the_configured_time(sleep_profile):
    model = load(sleep_profile, TEXT_TO_IMAGE)
    seen = []
    started = time.perf_counter()
    result = generate(model, GenerationRequest(prompt="x", num_inference_steps=10), on_step=lambda *a: seen.append(a))
    assert time.perf_counter() - started >= 10 * 0.01
    assert seen == [(step, 10) for step in range(1, 11)]
    assert (result.steps_completed, result.interrupted) == (10, False)


def test_sleep_profile_makes_images_of_the_requested_and_edit_sizes(sleep_profile):
    text = generate(
        load(sleep_profile, TEXT_TO_IMAGE),
        GenerationRequest(prompt="x", width=1664, height=928, num_inference_steps=1, num_images=3),
    )
    assert [image.size for image in text.images] == [(1664, 928)] * 3
    edit = generate(
        load(sleep_profile, IMAGE_EDIT),
        GenerationRequest(prompt="x", num_inference_steps=1, images=[Image.new("RGB", (1024, 768))]),
    )
    assert [image.size for image in edit.images] == [(1184, 896)]


def test_sleep_profile_honours_stopping(sleep_profile):
    seen = []
    result = generate(
        load(sleep_profile, TEXT_TO_IMAGE),
        GenerationRequest(prompt="x", num_inference_steps=10),
        on_step=lambda step, total: seen.append(step),
        should_stop=lambda: len(seen) == 4,
    )
    assert (result.steps_completed, result.interrupted, result.images) == (4, True, [])


def test_sleep_profile_never_imports_torch():
    code = (
        "import sys; from models import *; "
        "m = load(get_profile('sleep', sleep_seconds_per_step=0), TEXT_TO_IMAGE); "
        "generate(m, GenerationRequest(prompt='x', num_inference_steps=2)); "
        "assert 'torch' not in sys.modules"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr
