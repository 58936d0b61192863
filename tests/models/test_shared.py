"""The shared layout's model side: both pipelines over one text encoder and VAE (tiny profile).

Sharing must be exact (the same tensors, their dtype kept, the same images as separate loads) and
must be refused when the two checkpoints' components differ.
"""

from __future__ import annotations

import dataclasses
import json
import shutil
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from models import IMAGE_EDIT, TEXT_TO_IMAGE, GenerationRequest, ModelLoadError, generate, get_profile
from models.profiles import with_memory_options
from models.shared import load_shared
from models.tiny import ensure_tiny_pipeline

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def shared(tiny_profile):
    return load_shared(tiny_profile)


def test_shared_modules_are_the_same_tensors_and_keep_their_dtype(shared):
    t2i, edit = shared[TEXT_TO_IMAGE].pipeline, shared[IMAGE_EDIT].pipeline
    for name in ("text_encoder", "vae"):
        mine, theirs = getattr(t2i, name), getattr(edit, name)
        assert mine is theirs
        pointers = {p.data_ptr() for p in mine.parameters()}
        assert pointers == {p.data_ptr() for p in theirs.parameters()}
        assert {p.dtype for p in theirs.parameters()} == {torch.float32}
    assert t2i.transformer is not edit.transformer
    assert t2i.scheduler is not edit.scheduler  # a scheduler keeps per-run state


def test_shared_models_make_the_same_images_as_separate_ones(shared, text_to_image_model, image_edit_model):
    source = Image.fromarray(np.random.default_rng(3).integers(0, 255, (96, 128, 3), dtype=np.uint8))
    cases = [
        (
            TEXT_TO_IMAGE,
            text_to_image_model,
            GenerationRequest(prompt="a fox", width=256, height=256, num_inference_steps=2, seed=4),
        ),
        (
            IMAGE_EDIT,
            image_edit_model,
            GenerationRequest(prompt="snow", num_inference_steps=2, seed=4, images=[source]),
        ),
    ]
    for kind, separate, request in cases:
        together = generate(shared[kind], request).images[0]
        alone = generate(separate, request).images[0]
        assert np.array_equal(np.asarray(together), np.asarray(alone)), kind


def test_sharing_is_refused_when_the_vaes_differ(tiny_cache_dir, tmp_path):
    from diffusers import AutoencoderKLQwenImage

    cache = tmp_path / "cache"
    for kind in (TEXT_TO_IMAGE, IMAGE_EDIT):
        built = ensure_tiny_pipeline(kind, tiny_cache_dir)
        shutil.copytree(built, cache / Path(built).name)
    edit_vae = Path(ensure_tiny_pipeline(IMAGE_EDIT, str(cache))) / "vae"
    vae = AutoencoderKLQwenImage.from_pretrained(edit_vae)
    with torch.no_grad():
        next(vae.parameters()).add_(0.01)  # another checkpoint: the same architecture, other weights
    vae.save_pretrained(edit_vae)
    with pytest.raises(ModelLoadError, match=r"vae of .* differ .*MODEL_LAYOUT=separate"):
        load_shared(get_profile("tiny", cache_dir=str(cache)))


def test_shared_layout_refuses_model_cpu_offload(tiny_profile):
    with pytest.raises(ModelLoadError, match="group offload"):
        load_shared(dataclasses.replace(tiny_profile, cpu_offload=True))


@pytest.mark.parametrize(
    "options, message",
    [
        ({"fp8": True}, "qwen and qwen21 profiles on a CUDA GPU"),
        ({"group_offload": True}, "qwen and qwen21 profiles on a CUDA GPU"),
    ],
)
def test_memory_modes_that_cannot_work_here_are_refused(tiny_profile, options, message):
    with pytest.raises(ValueError, match=message):
        with_memory_options(tiny_profile, **options)


def test_group_offload_and_model_offload_exclude_each_other():
    with pytest.raises(ValueError, match="exclude each other"):
        with_memory_options(get_profile("qwen", cpu_offload=True), group_offload=True)


MEASURE = """
import json, resource, sys
import models
from models.shared import load_shared
profile = models.get_profile("tiny", cache_dir=sys.argv[2])
if sys.argv[1] == "shared":
    load_shared(profile)
else:
    models.load(profile, sys.argv[1])
print(json.dumps(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss))
"""


def test_one_shared_process_takes_less_memory_than_two_separate_ones(tiny_cache_dir):
    def peak_kib(what: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", MEASURE, what, tiny_cache_dir], cwd=ROOT, capture_output=True, text=True, timeout=300
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    # Three processes at once: each measures its own peak, so they need not wait for each other.
    with ThreadPoolExecutor(max_workers=3) as pool:
        shared, t2i, edit = pool.map(peak_kib, ("shared", TEXT_TO_IMAGE, IMAGE_EDIT))
    assert shared < t2i + edit, (shared, t2i, edit)
