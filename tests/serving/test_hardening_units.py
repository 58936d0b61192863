"""Unit properties from the audit: no server paths in task errors, credentials never in Serve's config."""

from __future__ import annotations

import pytest

from serving.app import build_app
from serving.deployments import describe_failure
from serving.messages import without_server_paths
from serving.settings import load_settings


def test_task_errors_do_not_carry_absolute_server_paths():
    error = FileNotFoundError(2, "No such file or directory", "/srv/qwen/data/model_cache/tiny/model.safetensors")
    message = describe_failure(error)
    assert "/srv/qwen" not in message and "model.safetensors" in message
    assert without_server_paths("write failed: /var/lib/qwen/store/results/a.png.tmp") == \
        "write failed: …/a.png.tmp"


@pytest.mark.parametrize("url", ["s3://AKIA:secret@bucket/prefix", "az://container/p?sig=token"])
def test_a_result_store_url_with_credentials_is_never_a_builder_arg_nor_in_servess_config(url, monkeypatch):
    with pytest.raises(ValueError, match="result_store_url"):
        build_app({"result_store_url": url, "model_profile": "sleep"})
    monkeypatch.setenv("RESULT_STORE_URL", url)
    settings = load_settings({"model_profile": "sleep"})
    assert settings.result_store_url == url  # each process still reads it from its environment
    assert "result_store_url" not in settings.public_dict()


def test_a_result_store_url_without_credentials_may_be_a_builder_arg():
    settings = load_settings({"result_store_url": "s3://bucket/prefix"})
    assert settings.public_dict()["result_store_url"] == "s3://bucket/prefix"
