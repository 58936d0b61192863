"""List settings read from the environment as a user writes them: ``a,b`` as well as a JSON list."""

from __future__ import annotations

import pytest

from serving.settings import Settings

pytestmark = pytest.mark.unit


@pytest.mark.parametrize(
    "text, expected",
    [
        ("text_to_image", ["text_to_image"]),
        ("text_to_image, image_edit", ["text_to_image", "image_edit"]),
        ('["image_edit"]', ["image_edit"]),
    ],
)
def test_enabled_models_from_the_environment(monkeypatch, text, expected):
    monkeypatch.setenv("ENABLED_MODELS", text)
    assert Settings().enabled_models == expected


def test_an_unknown_model_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("ENABLED_MODELS", "text_to_image,video")
    with pytest.raises(ValueError, match="video"):
        Settings()


@pytest.mark.parametrize("text, expected", [("dall-e-3, gpt-image-1", ["dall-e-3", "gpt-image-1"]), ("", [])])
def test_openai_model_aliases_from_the_environment(monkeypatch, text, expected):
    monkeypatch.setenv("OPENAI_MODEL_ALIASES", text)
    assert Settings().openai_model_aliases == expected
