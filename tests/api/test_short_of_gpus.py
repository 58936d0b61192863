"""Short of GPUs: an application whose model replicas ask for more GPUs than the session's Ray has
(4 logical GPUs) is seen by /health and the metrics as replicas waiting for resources, before any
user meets a refusal."""

from __future__ import annotations

import httpx
import pytest
from ray import serve
from ray.serve.api import RunTarget, _run_many

from serving.app import build_app
from tests.api.test_metrics import scrape
from tests.conftest import LOGICAL_GPUS, sleep_app_args, wait_for

APP = "short"


@pytest.fixture(scope="module")
def short_app(serve_instance, data_root):
    """The app deployed without waiting for it to be healthy: it never is, no node can place its models."""
    args = sleep_app_args(data_root, APP, model_num_gpus=LOGICAL_GPUS * 2, model_replicas=1)
    # serve.run waits for the application to be RUNNING even with blocking=False; Serve's own
    # developer API deploys it without waiting.
    _run_many([RunTarget(build_app(args), name=APP, route_prefix=f"/{APP}")], wait_for_applications_running=False)
    try:
        yield f"{serve_instance}/{APP}"
    finally:
        serve.delete(APP, _blocking=False)  # its pending replicas go with it; nothing waits for that


def test_health_and_metrics_show_replicas_waiting_for_gpus(short_app):
    def waiting() -> dict:
        try:
            response = httpx.get(short_app + "/health", timeout=10)
        except httpx.HTTPError:
            return {}
        if response.status_code != 200:
            return {}
        body = response.json()
        return body if body["deployments"].get("TextToImage", {}).get("waiting_for_resources") else {}

    health = wait_for(waiting, timeout=120, interval=1, what="/health to show replicas waiting for GPUs")
    assert health["status"] != "healthy"
    for deployment in ("TextToImage", "ImageEdit"):
        replicas = health["deployments"][deployment]
        assert replicas["running"] == 0
        assert replicas["waiting_for_resources"] == 1 and replicas["starting"] >= 1, replicas

    def gauge() -> float:
        return sum(
            v
            for labels, v in scrape().get("ray_qis_deployment_replicas", [])
            if labels.get("application") == APP
            and labels.get("deployment_name") == "TextToImage"
            and labels.get("state") == "waiting_for_resources"
        )

    assert wait_for(gauge, timeout=60, interval=2, what="the metric of replicas waiting for resources") == 1
