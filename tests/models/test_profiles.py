"""Profiles, aspect ratios and the qwen profile's loading errors; nothing here downloads anything."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models import (
    ASPECT_RATIOS,
    IMAGE_EDIT,
    TEXT_TO_IMAGE,
    ModelLoadError,
    edit_output_size,
    get_profile,
    load,
)

pytestmark = pytest.mark.unit

REPO_ROOT = Path(__file__).resolve().parents[2]


def test_aspect_ratios_match_the_contract_table():
    assert ASPECT_RATIOS == {
        "1:1": (1024, 1024),
        "16:9": (1664, 928),
        "9:16": (928, 1664),
        "4:3": (1472, 1104),
        "3:4": (1104, 1472),
        "3:2": (1584, 1056),
        "2:3": (1056, 1584),
    }


@pytest.mark.parametrize(
    "size, expected",
    [((1024, 768), (1184, 896)), ((1024, 1024), (1024, 1024)), ((768, 1024), (896, 1184)), ((64, 64), (1024, 1024))],
)
def test_edit_output_size_is_about_one_megapixel_in_the_input_ratio(size, expected):
    assert edit_output_size(*size) == expected


def test_qwen_profile_names_the_published_models_pipelines_and_bfloat16_on_cuda():
    profile = get_profile("qwen")
    assert profile.sources == {TEXT_TO_IMAGE: "Qwen/Qwen-Image-2512", IMAGE_EDIT: "Qwen/Qwen-Image-Edit-2511"}
    assert profile.pipeline_classes == {
        TEXT_TO_IMAGE: "QwenImagePipeline",
        IMAGE_EDIT: "QwenImageEditPlusPipeline",
    }
    assert (profile.dtype, profile.device, profile.cpu_offload) == ("bfloat16", "cuda", False)
    assert profile.text_to_image.name == "Qwen/Qwen-Image-2512"
    assert profile.image_edit.capabilities == ["image-to-image", "image editing", "multi-image composition"]
    assert not profile.is_local_source(TEXT_TO_IMAGE)


def test_qwen_profile_takes_local_directories_cache_dir_and_offload(tmp_path):
    weights = tmp_path / "Qwen-Image-2512"
    weights.mkdir()
    profile = get_profile("qwen", cache_dir=str(tmp_path / "hf"), text_to_image_path=str(weights), cpu_offload=True)
    assert profile.sources[TEXT_TO_IMAGE] == str(weights)
    assert profile.is_local_source(TEXT_TO_IMAGE)
    assert profile.sources[IMAGE_EDIT] == "Qwen/Qwen-Image-Edit-2511"
    assert not profile.is_local_source(IMAGE_EDIT)
    assert profile.cache_dir == str(tmp_path / "hf")
    assert profile.cpu_offload


def test_tiny_and_sleep_profiles_run_on_the_cpu_and_only_sleep_is_for_benchmarks(tmp_path):
    tiny = get_profile("tiny", cache_dir=str(tmp_path))
    sleep = get_profile("sleep", sleep_seconds_per_step=0.5)
    assert (tiny.device, tiny.dtype, tiny.cache_dir, tiny.benchmark_only) == ("cpu", "float32", str(tmp_path), False)
    assert tiny.pipeline_classes == get_profile("qwen").pipeline_classes
    assert (sleep.sleep_seconds_per_step, sleep.benchmark_only) == (0.5, True)


def test_unknown_profile_is_rejected_with_the_known_names():
    with pytest.raises(ValueError, match="qwen, tiny, sleep"):
        get_profile("large")


def test_profiles_and_aspect_ratios_import_without_torch():
    code = (
        "import sys, models, models.profiles, models.aspect; "
        "assert 'torch' not in sys.modules and 'diffusers' not in sys.modules, 'heavy import'"
    )
    completed = subprocess.run([sys.executable, "-c", code], cwd=REPO_ROOT, capture_output=True, text=True)
    assert completed.returncode == 0, completed.stderr


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_qwen_load_without_a_gpu_says_so_and_points_at_the_tiny_profile():
    with pytest.raises(ModelLoadError) as error:
        load(get_profile("qwen"), TEXT_TO_IMAGE)
    message = str(error.value)
    assert "no CUDA device" in message
    assert "MODEL_PROFILE=tiny" in message


@pytest.mark.parametrize(
    "kind, setting, model_id",
    [
        (TEXT_TO_IMAGE, "TEXT_TO_IMAGE_MODEL_PATH", "Qwen/Qwen-Image-2512"),
        (IMAGE_EDIT, "IMAGE_EDIT_MODEL_PATH", "Qwen/Qwen-Image-Edit-2511"),
    ],
)
def test_qwen_load_from_a_directory_without_weights_says_how_to_download(tmp_path, kind, setting, model_id):
    empty = tmp_path / "weights"
    empty.mkdir()
    profile = get_profile("qwen", text_to_image_path=str(empty), image_edit_path=str(empty))
    with pytest.raises(ModelLoadError) as error:
        load(profile, kind, device="cpu")
    message = str(error.value)
    assert str(empty) in message
    assert f"hf download {model_id}" in message
    assert setting in message
