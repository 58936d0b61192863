"""The profile a model replica loads follows the memory settings (no model is loaded: the qwen
profile only describes where its weights would come from until ``models.load`` runs)."""

from __future__ import annotations

import pytest

from serving.deployments import replica_profile
from serving.settings import load_settings

pytestmark = pytest.mark.unit


def profile_for(tmp_path, **values):
    return replica_profile(load_settings({"model_profile": "qwen", "data_dir": str(tmp_path), **values}))


@pytest.mark.parametrize("values", [{"offload": "model"}, {"cpu_offload": True}])
def test_model_cpu_offload_is_applied_whichever_setting_asks_for_it(tmp_path, values):
    profile = profile_for(tmp_path, **values)
    assert profile.cpu_offload and not profile.group_offload


def test_group_offload_and_fp8_reach_the_profile(tmp_path):
    profile = profile_for(tmp_path, offload="group", quantization="fp8")
    assert profile.group_offload and profile.fp8 and not profile.cpu_offload


def test_cpu_offload_and_group_offload_together_are_refused(tmp_path):
    with pytest.raises(ValueError, match="exclude each other"):
        profile_for(tmp_path, cpu_offload=True, offload="group")


def refusals() -> list[str]:
    """The memory-mode refusals start-up can give (none of them loads a model)."""
    import dataclasses

    from models import ModelLoadError, get_profile
    from models.profiles import with_memory_options
    from models.shared import load_shared

    messages = []
    for attempt in (
        lambda: with_memory_options(get_profile("tiny"), fp8=True),
        lambda: with_memory_options(get_profile("qwen", cpu_offload=True), group_offload=True),
        lambda: load_shared(dataclasses.replace(get_profile("tiny"), cpu_offload=True)),
    ):
        with pytest.raises((ValueError, ModelLoadError)) as refused:
            attempt()
        messages.append(str(refused.value))
    return messages


def test_refusals_name_settings_that_exist():
    import re

    from serving.settings import Settings

    for message in refusals():
        named = re.findall(r"\b([A-Z][A-Z_]+)=", message)
        assert named, message
        assert {name.lower() for name in named} <= set(Settings.model_fields), message
