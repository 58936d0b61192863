"""serve_config.workstation.yaml: one GPU, both models in one replica (the shared layout)."""

from __future__ import annotations

import pytest
import yaml
from ray.serve import Application
from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

from serving.app import build_app
from serving.settings import SECRET_FIELDS, SHARED_DEPLOYMENT
from tests.deploy.config import ROOT, deployments, walk_keys

pytestmark = pytest.mark.unit

WORKSTATION = ROOT / "serve_config.workstation.yaml"


@pytest.fixture(scope="module")
def config() -> dict:
    return yaml.safe_load(WORKSTATION.read_text())


@pytest.fixture
def app(config, monkeypatch) -> dict:
    for name in ("ENABLED_MODELS", "MODEL_PROFILE", "CPU_OFFLOAD", "MODEL_LAYOUT", "QUANTIZATION", "OFFLOAD"):
        monkeypatch.delenv(name, raising=False)
    [app] = config["applications"]
    return app


def test_workstation_config_validates_against_serves_schema_with_no_ignored_keys(config, app):
    ServeDeploySchema.model_validate(config)
    known = set(ServeApplicationSchema.model_fields)
    assert set(app) <= known
    for deployment in app["deployments"]:
        assert set(deployment) <= set(DeploymentSchema.model_fields), deployment["name"]


def test_both_models_share_one_gpu_replica(app):
    assert app["args"]["model_layout"] == "shared" and app["args"]["model_profile"] == "qwen"
    model = deployments(app)[SHARED_DEPLOYMENT]
    assert model["num_replicas"] == 1 and model["ray_actor_options"]["num_gpus"] == 1
    assert model["max_ongoing_requests"] == 3


def test_the_configured_deployments_are_the_ones_the_builder_makes(app):
    from ray.serve._private.build_app import build_app as build_deployments

    application = build_app(dict(app["args"]))
    assert isinstance(application, Application)
    built = build_deployments(application, name=app["name"])
    assert set(deployments(app)) == {d.name for d in built.deployments} == {"Ingress", SHARED_DEPLOYMENT}


def test_no_secret_in_the_workstation_config(config):
    assert {key.lower() for key in walk_keys(config)} & SECRET_FIELDS == set()
