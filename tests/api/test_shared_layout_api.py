"""The shared layout through the real service: one replica holds both tiny models over one text
encoder and VAE, serves both routes, and runs one generation at a time."""

from __future__ import annotations

import threading
import time
from datetime import datetime

import httpx
import pytest

from tests.api.helpers import image_bytes
from tests.conftest import ADDRESS_LIMITS, TestUser, wait_for


@pytest.fixture(scope="module")
def shared_url(deploy_app, data_root) -> str:
    return deploy_app(
        "shared",
        {
            "model_profile": "tiny",
            "model_layout": "shared",
            "model_num_gpus": 0,
            "model_replicas": 1,
            "model_num_cpus": 0.25,
            "data_dir": str(data_root / "shared"),
            "model_cache_dir": str(data_root / "model_cache"),
            "password_hash_profile": "cheapest",
            "cleanup_interval_seconds": 0,
            **ADDRESS_LIMITS,
        },
    )


@pytest.fixture(scope="module")
def shared(shared_url):
    with httpx.Client(base_url=shared_url, timeout=120) as client:
        yield client


def test_one_replica_serves_both_models_and_reports_them(shared):
    health = shared.get("/health").json()
    assert health["status"] == "healthy" and health["replicas"] == {"Ingress": 1, "Models": 1}
    assert health["model_layout"] == "shared"

    def reported():
        memory = shared.get("/health").json()["model_memory"]
        return memory if all(memory[kind]["replicas"] for kind in ("text_to_image", "image_edit")) else None

    memory = wait_for(reported, timeout=30, interval=0.5, what="the replica's report")
    [t2i], [edit] = memory["text_to_image"]["replicas"], memory["image_edit"]["replicas"]
    assert t2i["replica"] == edit["replica"] and t2i["deployment"] == "Models"
    assert (memory["text_to_image"]["layout"], memory["text_to_image"]["dtype"]) == ("shared", "float32")
    assert t2i["device"] == "cpu" and t2i["device_memory"] is None  # no GPU here
    models = shared.get("/models").json()
    assert (
        models["image_edit"]["layout"] == "shared" and models["image_edit"]["replicas"][0]["replica"] == t2i["replica"]
    )


def test_a_request_of_one_kind_waits_for_the_others_generation(shared):
    user = TestUser(shared)
    answers: dict[str, httpx.Response] = {}

    def text_to_image():
        answers["t2i"] = shared.post(
            "/text-to-image",
            headers=user.headers,
            data={"prompt": "a lighthouse", "num_inference_steps": "40", "async_mode": "false"},
        )

    def edit():
        answers["edit"] = shared.post(
            "/image-edit",
            headers=user.headers,
            files={"images": ("a.png", image_bytes((320, 240)), "image/png")},
            data={"prompt": "make it snow", "num_inference_steps": "20", "async_mode": "false"},
        )

    threads = [threading.Thread(target=text_to_image), threading.Thread(target=edit)]
    for thread in threads:
        thread.start()
        time.sleep(0.3)
    for thread in threads:
        thread.join(timeout=300)
    runs = []
    for name, response in answers.items():
        assert response.status_code == 200, (name, response.text)
        record = shared.get(f"/tasks/history/{response.headers['x-task-id']}", headers=user.headers).json()
        started = datetime.fromisoformat(record["started_at"]).timestamp()
        runs.append((started, started + float(response.headers["x-generation-seconds"])))
    (first_start, first_end), (second_start, _) = sorted(runs)
    # Never on the device at the same time. The start is stamped by the registry a Ray call after the
    # run began, which a busy machine delays by a varying fraction of a second: a tolerance of a quarter
    # of the first run, where running both at once would start the second near the first's start.
    assert len(runs) == 2 and second_start >= first_end - 0.25 * (first_end - first_start), runs
