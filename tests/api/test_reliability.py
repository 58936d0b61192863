"""Faults injected into a running service: it keeps its promises (docs/reliability.md).

Failures are made to happen by prompts starting with ``__fault_…__`` on an application of the
``faulty`` profile (``faulty_client``), or by killing real Ray actors.
"""

from __future__ import annotations

import time
import uuid

import httpx
import pytest
import ray

from serving.registry.ids import NAMESPACE, registry_name
from tests.api.helpers import SLOW, submit_t2i, wait_status


def test_replica_crash_mid_task_is_retried_once_on_another_replica(faulty_client, faulty_user):
    client, user = faulty_client, faulty_user
    # "once" is remembered per prompt: a fresh one, whatever ran before
    task_id = submit_t2i(client, user.headers, prompt=f"__fault_crash_once_at_step_3__ cat {uuid.uuid4()}")
    final = wait_status(client, user.headers, task_id, timeout=180)
    assert final["status"] == "completed", final
    record = client.get(f"/tasks/history/{task_id}", headers=user.headers).json()
    assert record["status"] == "completed" and record["attempts"] == 2
    assert client.get(f"/tasks/{task_id}/result", headers=user.headers).status_code == 200


def test_replica_crashing_twice_fails_the_task_with_a_clear_error_and_the_deployment_recovers(
    faulty_client, faulty_user
):
    client, user = faulty_client, faulty_user
    task_id = submit_t2i(client, user.headers, prompt="__fault_crash_at_step_2__ cat")
    final = wait_status(client, user.headers, task_id, timeout=180)
    assert final["status"] == "failed"
    assert "崩溃" in final["error"]
    result = client.get(f"/tasks/{task_id}/result", headers=user.headers)
    assert result.status_code == 500 and "崩溃" in result.json()["detail"]
    after = [submit_t2i(client, user.headers) for _ in range(2)]
    assert all(wait_status(client, user.headers, t, timeout=180)["status"] == "completed" for t in after)


def test_pipeline_exception_fails_the_task_and_the_replica_keeps_serving(faulty_client, faulty_user):
    client, user = faulty_client, faulty_user
    task_id = submit_t2i(client, user.headers, prompt="__fault_raise__")
    final = wait_status(client, user.headers, task_id)
    assert final["status"] == "failed" and "injected pipeline failure" in final["error"]
    assert "Traceback" not in final["error"]
    assert wait_status(client, user.headers, submit_t2i(client, user.headers))["status"] == "completed"


def test_out_of_memory_fails_the_task_with_an_understandable_error(faulty_client, faulty_user):
    client, user = faulty_client, faulty_user
    final = wait_status(client, user.headers, submit_t2i(client, user.headers, prompt="__fault_oom__"))
    assert final["status"] == "failed" and "内存不足" in final["error"]


def test_failed_result_write_fails_the_task_and_serves_no_partial_file(faulty_client, faulty_user, data_root):
    client, user = faulty_client, faulty_user
    task_id = submit_t2i(client, user.headers, prompt="__fault_disk_full__")
    final = wait_status(client, user.headers, task_id)
    assert final["status"] == "failed" and "结果写入失败" in final["error"]
    record = client.get(f"/tasks/history/{task_id}", headers=user.headers).json()
    assert record["result_path"] is None
    store_dir = data_root / "faulty" / "store" / "results" / task_id
    assert not store_dir.exists() or not any(store_dir.iterdir())
    assert client.get(f"/tasks/{task_id}/result", headers=user.headers).status_code == 500


def test_client_disconnecting_from_a_sync_request_does_not_lose_the_task(faulty_client, faulty_user):
    client, user = faulty_client, faulty_user
    with pytest.raises(httpx.TimeoutException):
        httpx.post(
            str(client.base_url).rstrip("/") + "/text-to-image",
            headers=user.headers,
            # Long enough for the task to be made on a slow machine; the task (60 steps of 0.15 s) outlasts it.
            timeout=2.0,
            data={"prompt": f"{SLOW} impatient", "num_inference_steps": "60", "async_mode": "false"},
        )
    items = []
    deadline = time.monotonic() + 10
    while not items and time.monotonic() < deadline:
        items = client.get("/tasks/history/me", headers=user.headers).json()["items"]
    task_id = items[0]["task_id"]
    assert wait_status(client, user.headers, task_id, timeout=180)["status"] == "completed"
    assert client.get(f"/tasks/{task_id}/result", headers=user.headers).status_code == 200


def test_registry_restart_recovers_every_task_and_answers_503_meanwhile(faulty_client, faulty_user):
    client, user = faulty_client, faulty_user
    ids = [submit_t2i(client, user.headers, num_inference_steps=40) for _ in range(4)]
    wait_status(client, user.headers, ids[0], statuses={"running"})
    registry = ray.get_actor(registry_name("faulty"), namespace=NAMESPACE)
    ray.kill(registry, no_restart=False)
    seen = set()
    deadline = time.monotonic() + 240
    finals = {}
    while len(finals) < len(ids):
        assert time.monotonic() < deadline, finals
        for task_id in ids:
            if task_id in finals:
                continue
            response = client.get(f"/tasks/{task_id}", headers=user.headers)
            seen.add(response.status_code)
            assert response.status_code in (200, 503), response.text
            if response.status_code == 503:
                assert response.headers["retry-after"]
            elif response.json()["status"] in ("completed", "failed", "cancelled"):
                finals[task_id] = response.json()
        time.sleep(0.1)
    assert all(f["status"] == "completed" for f in finals.values()), finals
    for task_id in ids:
        record = client.get(f"/tasks/history/{task_id}", headers=user.headers).json()
        assert record["status"] == "completed" and record["result_path"]
        assert client.get(f"/tasks/{task_id}/result", headers=user.headers).status_code == 200


def test_backpressure_answers_503_with_retry_after_when_the_queue_is_full(open_client):
    from tests.conftest import OPEN_QUEUE_LIMIT

    accepted, refused = [], []
    for _ in range(OPEN_QUEUE_LIMIT + 4):
        response = open_client.post("/text-to-image", data={"prompt": "x", "num_inference_steps": "100"})
        (accepted if response.status_code == 202 else refused).append(response)
    assert refused, "the queue limit was never reached"
    assert all(r.status_code == 503 and int(r.headers["retry-after"]) > 0 for r in refused)
    assert "队列已满" in refused[0].json()["detail"]
    for response in accepted:
        open_client.delete(f"/tasks/{response.json()['task_id']}")
