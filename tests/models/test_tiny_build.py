"""The tiny profile: built in code, saved once, loaded back through diffusers' from_pretrained."""

from __future__ import annotations

import hashlib
import json
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import diffusers
import pytest

from models import IMAGE_EDIT, TEXT_TO_IMAGE, ModelLoadError, get_profile, load
from models.tiny import ImageOnlyQwen2VLProcessor, ensure_tiny_pipeline, tiny_pipeline_dir


def _weights_digest(directory: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(Path(directory).rglob("*.safetensors")):
        digest.update(path.relative_to(directory).as_posix().encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


def test_tiny_pipelines_are_saved_as_diffusers_folders(text_to_image_model, image_edit_model, tiny_cache_dir):
    for kind, class_name in ((TEXT_TO_IMAGE, "QwenImagePipeline"), (IMAGE_EDIT, "QwenImageEditPlusPipeline")):
        folder = tiny_pipeline_dir(tiny_cache_dir, kind)
        index = json.loads((Path(folder) / "model_index.json").read_text())
        assert index["_class_name"] == class_name
        assert (Path(folder) / "transformer" / "diffusion_pytorch_model.safetensors").is_file()
    edit_index = json.loads((Path(tiny_pipeline_dir(tiny_cache_dir, IMAGE_EDIT)) / "model_index.json").read_text())
    assert edit_index["processor"] == ["models.tiny", "ImageOnlyQwen2VLProcessor"]
    assert isinstance(image_edit_model.pipeline.processor, ImageOnlyQwen2VLProcessor)


def test_tiny_load_goes_through_from_pretrained_on_the_saved_folder(tiny_profile, tiny_cache_dir, monkeypatch):
    calls = []
    original = diffusers.QwenImagePipeline.from_pretrained.__func__

    def recording_from_pretrained(cls, path, **kwargs):
        calls.append((path, kwargs))
        return original(cls, path, **kwargs)

    monkeypatch.setattr(diffusers.QwenImagePipeline, "from_pretrained", classmethod(recording_from_pretrained))
    model = load(tiny_profile, TEXT_TO_IMAGE)
    assert len(calls) == 1
    path, kwargs = calls[0]
    assert path == tiny_pipeline_dir(tiny_cache_dir, TEXT_TO_IMAGE)
    assert kwargs["local_files_only"] is True
    assert type(model.pipeline) is diffusers.QwenImagePipeline


def test_tiny_vae_compresses_eight_times_like_the_real_one(text_to_image_model):
    pipeline = text_to_image_model.pipeline
    assert pipeline.vae_scale_factor == 8
    assert pipeline.transformer.config.in_channels == 4 * pipeline.vae.config.z_dim


def test_tiny_tokenizer_template_prefix_is_exactly_what_each_pipeline_drops(text_to_image_model, image_edit_model):
    for model in (text_to_image_model, image_edit_model):
        pipeline = model.pipeline
        prefix = pipeline.prompt_template_encode.split("{}")[0]
        assert len(pipeline.tokenizer(prefix).input_ids) == pipeline.prompt_template_encode_start_idx
    assert text_to_image_model.pipeline.prompt_template_encode_start_idx == 34
    assert image_edit_model.pipeline.prompt_template_encode_start_idx == 64


def test_tiny_tokenizer_reads_any_text_back(text_to_image_model):
    tokenizer = text_to_image_model.pipeline.tokenizer
    text = "一只可爱的猫 wearing a 🎩"
    assert tokenizer.decode(tokenizer(text).input_ids) == text


def test_tiny_builds_are_identical_and_concurrent_builders_leave_one_folder(tiny_cache_dir, tmp_path):
    builders = 3
    with ThreadPoolExecutor(builders) as pool:
        paths = list(pool.map(lambda _: ensure_tiny_pipeline(TEXT_TO_IMAGE, str(tmp_path)), range(builders)))
    assert len(set(paths)) == 1
    assert os.listdir(tmp_path) == [os.path.basename(paths[0])]
    assert _weights_digest(paths[0]) == _weights_digest(tiny_pipeline_dir(tiny_cache_dir, TEXT_TO_IMAGE))


def test_tiny_folder_already_built_is_reused(tiny_cache_dir, text_to_image_model):
    folder = tiny_pipeline_dir(tiny_cache_dir, TEXT_TO_IMAGE)
    before = os.stat(os.path.join(folder, "model_index.json")).st_mtime_ns
    assert ensure_tiny_pipeline(TEXT_TO_IMAGE, tiny_cache_dir) == folder
    assert os.stat(os.path.join(folder, "model_index.json")).st_mtime_ns == before


def test_torch_num_threads_setting_is_applied_at_load(tiny_profile, text_to_image_model):
    import torch

    before = torch.get_num_threads()
    wanted = 1 if before != 1 else 2
    try:
        load(tiny_profile, TEXT_TO_IMAGE, num_threads=wanted)
        assert torch.get_num_threads() == wanted
    finally:
        torch.set_num_threads(before)


def test_bad_torch_num_threads_setting_fails_the_load_clearly(tiny_profile):
    with pytest.raises(ModelLoadError, match="TORCH_NUM_THREADS must be a positive integer"):
        load(tiny_profile, TEXT_TO_IMAGE, num_threads=0)


def test_unwritable_tiny_cache_fails_the_load_with_the_setting_to_change(tmp_path):
    blocker = tmp_path / "not-a-directory"
    blocker.write_text("")
    with pytest.raises(ModelLoadError, match="MODEL_CACHE_DIR"):
        load(get_profile("tiny", cache_dir=str(blocker / "cache")), TEXT_TO_IMAGE)
