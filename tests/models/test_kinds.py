"""The model-kind table: every part that needs a kind derives it from models.kinds."""

from __future__ import annotations

import pytest

from i18n import messages
from models.kinds import KIND_NAMES, ModelKind, kind_for_task_type
from models.profiles import PIPELINE_CLASSES, get_profile
from serving.settings import Settings

pytestmark = pytest.mark.unit


def test_each_kind_has_one_deployment_and_runs_its_task_types():
    assert len({kind.deployment for kind in ModelKind}) == len(ModelKind)
    for kind in ModelKind:
        for task_type in kind.spec.task_types:
            assert kind_for_task_type(task_type) is kind
    assert kind_for_task_type("batch_edit") is ModelKind.image_edit
    with pytest.raises(ValueError):
        kind_for_task_type("video")


def test_settings_profiles_deployments_and_messages_follow_the_table():
    from serving.deployments import DEPLOYMENTS

    assert Settings().enabled_models == list(KIND_NAMES)
    with pytest.raises(ValueError, match="text_to_image and/or image_edit"):
        Settings(enabled_models="video")
    assert {name: d.name for name, d in DEPLOYMENTS.items()} == {k.value: k.deployment for k in ModelKind}
    assert set(PIPELINE_CLASSES) == set(get_profile("sleep").models) == set(KIND_NAMES)
    for kind in ModelKind:
        assert messages.render(kind.spec.not_loaded, "en") == kind.spec.not_loaded_en
        assert messages.MODEL_NOT_LOADED[kind] == kind.spec.not_loaded
