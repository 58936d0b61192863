"""serve_config.yaml: a valid Serve config whose application builds, with no secrets in it."""

from __future__ import annotations

import pytest
from ray.serve import Application
from ray.serve.config import AutoscalingConfig
from ray.serve.schema import (
    DeploymentSchema,
    HTTPOptionsSchema,
    RayActorOptionsSchema,
    ServeApplicationSchema,
    ServeDeploySchema,
)

from serving.app import build_app
from serving.settings import SECRET_FIELDS
from tests.deploy.config import MODEL_DEPLOYMENTS, deployments, serve_config, walk_keys

pytestmark = pytest.mark.unit


@pytest.fixture(scope="module")
def config() -> dict:
    return serve_config()


@pytest.fixture(scope="module")
def app(config) -> dict:
    [app] = config["applications"]
    return app


@pytest.fixture
def clean_env(monkeypatch):
    """The builder also reads settings from the environment; keep this machine's out of it."""
    for name in ("ENABLED_MODELS", "MODEL_PROFILE", "CPU_OFFLOAD"):
        monkeypatch.delenv(name, raising=False)


def unknown_keys(mapping: dict, schema) -> set[str]:
    """Serve's schemas silently ignore keys they do not know: a typo would go unnoticed."""
    known = set(schema.model_fields) | {f.alias for f in schema.model_fields.values() if f.alias}
    return set(mapping) - known


def test_serve_config_validates_against_serves_schema(config):
    schema = ServeDeploySchema.model_validate(config)
    assert [a.name for a in schema.applications] == ["qwen-image"]


def test_serve_config_has_no_keys_serve_would_ignore(config, app):
    assert unknown_keys(config, ServeDeploySchema) == set()
    assert unknown_keys(config["http_options"], HTTPOptionsSchema) == set()
    assert unknown_keys(app, ServeApplicationSchema) == set()
    for deployment in app["deployments"]:
        assert unknown_keys(deployment, DeploymentSchema) == set(), deployment["name"]
        assert unknown_keys(deployment.get("ray_actor_options", {}), RayActorOptionsSchema) == set()
        assert unknown_keys(deployment.get("autoscaling_config", {}), AutoscalingConfig) == set()


def test_http_listens_on_every_interface_of_port_8000_with_a_timeout(config):
    http = config["http_options"]
    assert (http["host"], http["port"]) == ("0.0.0.0", 8000)
    assert http["request_timeout_s"] > 600  # longer than a synchronous request may wait


def test_one_application_at_the_root_built_by_the_app_builder(app):
    assert (app["name"], app["route_prefix"], app["import_path"]) == ("qwen-image", "/", "serving.app:build_app")
    assert app["args"]["model_profile"] == "qwen"


def test_the_builder_builds_the_application_from_the_configs_args(app, clean_env):
    assert isinstance(build_app(dict(app["args"])), Application)


def test_every_configured_deployment_exists_in_the_built_application(app, clean_env):
    # Serve refuses a config naming a deployment the application lacks; check before deploying.
    from ray.serve._private.build_app import build_app as build_deployments  # what `serve deploy` runs

    built = build_deployments(build_app(dict(app["args"])), name=app["name"])
    assert set(deployments(app)) == {d.name for d in built.deployments} == {"Ingress", *MODEL_DEPLOYMENTS}


def test_no_secret_appears_in_the_config(config):
    keys = {key.lower() for key in walk_keys(config)}
    assert keys & SECRET_FIELDS == set()
    assert "env_vars" not in keys  # runtime_env variables are stored and shown like the rest


def test_the_builder_refuses_secrets_as_args(app, clean_env):
    for secret in SECRET_FIELDS:
        with pytest.raises(ValueError, match="must come from the environment"):
            build_app({**app["args"], secret: "x"})


@pytest.mark.parametrize("name", MODEL_DEPLOYMENTS)
def test_model_deployments_take_one_gpu_and_hold_requests_beside_the_running_one(app, name):
    model = deployments(app)[name]
    assert model["max_ongoing_requests"] == 3  # one generating, one being stored, one waiting on the lock
    assert model["request_router_config"]["request_router_class"] == "serving.replica_router.LeastBusyRouter"
    assert model["ray_actor_options"]["num_gpus"] == 1


@pytest.mark.parametrize("name", MODEL_DEPLOYMENTS)
def test_model_deployments_autoscale_on_queued_requests_and_keep_slow_loading_replicas(app, name):
    model = deployments(app)[name]
    scaling = AutoscalingConfig(**model["autoscaling_config"])
    assert scaling.target_ongoing_requests == 1
    assert 1 <= scaling.min_replicas <= scaling.initial_replicas <= scaling.max_replicas
    assert scaling.downscale_delay_s >= 600 > scaling.upscale_delay_s
    assert model["graceful_shutdown_timeout_s"] >= 300
    assert model["health_check_timeout_s"] > model["health_check_period_s"]


def test_ingress_takes_no_gpu(app):
    ingress = deployments(app)["Ingress"]
    assert ingress["ray_actor_options"].get("num_gpus", 0) == 0
