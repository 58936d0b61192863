"""Fixtures for the models tests: the tiny pipelines, built once per session into a temporary cache."""

from __future__ import annotations

import pytest

from models import IMAGE_EDIT, TEXT_TO_IMAGE, get_profile, load


@pytest.fixture(scope="session")
def tiny_cache_dir(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tiny_models"))


@pytest.fixture(scope="session")
def tiny_profile(tiny_cache_dir):
    return get_profile("tiny", cache_dir=tiny_cache_dir)


@pytest.fixture(scope="session")
def text_to_image_model(tiny_profile):
    return load(tiny_profile, TEXT_TO_IMAGE)


@pytest.fixture(scope="session")
def image_edit_model(tiny_profile):
    return load(tiny_profile, IMAGE_EDIT)
