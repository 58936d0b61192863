"""serve_config.qwen21.yaml: Qwen-Image 2.1, one pipeline for both kinds, one GPU per replica."""

from __future__ import annotations

import pytest
import yaml
from ray.serve import Application
from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

from models.profiles import QWEN_RESEARCH_LICENSE
from serving.app import build_app
from serving.settings import SECRET_FIELDS, SHARED_DEPLOYMENT, load_settings
from tests.deploy.config import ROOT, deployments, walk_keys

pytestmark = pytest.mark.unit

QWEN21 = ROOT / "serve_config.qwen21.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(QWEN21.read_text())


@pytest.fixture
def app(config, monkeypatch) -> dict:
    for name in ("ENABLED_MODELS", "MODEL_PROFILE", "MODEL_LAYOUT", "QWEN21_MODEL_PATH", "QWEN21_TURBO_PATH"):
        monkeypatch.delenv(name, raising=False)
    [app] = config["applications"]
    return app


def test_qwen21_config_validates_against_serves_schema_with_no_ignored_keys(config, app):
    ServeDeploySchema.model_validate(config)
    assert set(app) <= set(ServeApplicationSchema.model_fields)
    for deployment in app["deployments"]:
        assert set(deployment) <= set(DeploymentSchema.model_fields), deployment["name"]


def test_one_gpu_replica_runs_the_2_1_profile_with_turbo_and_says_its_licence(config, app):
    settings = load_settings(dict(app["args"]))
    assert settings.model_profile == "qwen21" and settings.model_layout == "shared"
    assert settings.qwen21_model_path and settings.qwen21_turbo_path
    model = deployments(app)[SHARED_DEPLOYMENT]
    assert model["num_replicas"] == 1 and model["ray_actor_options"]["num_gpus"] == 1
    assert QWEN_RESEARCH_LICENSE.split(" (")[0] in QWEN21.read_text()


def test_the_configured_deployments_are_the_ones_the_builder_makes(app):
    from ray.serve._private.build_app import build_app as build_deployments

    application = build_app(dict(app["args"]))
    assert isinstance(application, Application)
    built = build_deployments(application, name=app["name"])
    assert set(deployments(app)) == {d.name for d in built.deployments} == {"Ingress", SHARED_DEPLOYMENT}


def test_no_secret_in_the_qwen21_config(config):
    assert {key.lower() for key in walk_keys(config)} & SECRET_FIELDS == set()
