"""Task endpoints (contract § 5.1–5.4): queue, order, cancel, wait, ownership.

Queueing, cancelling, waiting and ownership do not depend on what the model computes: those tests
run on ``/faulty`` (``faulty_client``: the ``sleep`` profile at 50 ms a step, two replicas, auth on),
so a 40-step task takes 2 s of no CPU instead of a tiny pipeline's 1024² steps. The queue's view of
the logical GPUs is the main application's.
"""

from __future__ import annotations

import time

from tests.api.helpers import HELD, SLOW, both_replicas_held, cancelled_at_the_end, submit_t2i, wait_status
from tests.conftest import TestUser


def test_queue_reports_gpus_workers_and_counts(client, user):
    body = client.get("/tasks/queue", headers=user.headers).json()
    assert body["is_running"] is True
    assert body["gpu_count"] == 4  # the logical GPUs Ray was started with
    assert body["max_workers"] == 4  # two replicas of each model deployment
    assert set(body["tasks"]) >= {"pending", "running", "completed", "failed", "total"}
    assert body["queue_size"] == body["tasks"]["pending"]


def test_tasks_beyond_the_replicas_wait_in_order_with_positions(faulty_client, faulty_user):
    client, user = faulty_client, faulty_user
    # 40 steps of 0.15 s (a slowed step): the first two still run while all five are read.
    ids = [submit_t2i(client, user.headers, prompt=f"{SLOW} {n}", num_inference_steps=40) for n in range(5)]
    statuses = [client.get(f"/tasks/{t}", headers=user.headers).json() for t in ids]
    pending = [s for s in statuses if s["status"] == "pending"]
    assert len(pending) >= 2, statuses  # two replicas, five tasks
    positions = [s["position_in_queue"] for s in pending]
    assert positions == sorted(positions) and len(set(positions)) == len(positions) and min(positions) >= 1
    assert all(s["position_in_queue"] == 0 for s in statuses if s["status"] == "running")
    finals = [wait_status(client, user.headers, t, timeout=180) for t in ids]
    assert all(f["status"] == "completed" for f in finals)
    starts = [f["started_at"] for f in finals]
    assert starts[-1] == max(starts)  # the last submitted starts last


def test_cancel_pending_task_never_runs(faulty_client, faulty_user):
    client, user = faulty_client, faulty_user
    # Slowed blockers keep both replicas busy for minutes, however slow the machine; once the victim
    # is cancelled they are cancelled too, which frees the replicas as their finishing would.
    with both_replicas_held(client, user.headers) as blockers:
        victim = submit_t2i(client, user.headers)
        assert client.get(f"/tasks/{victim}", headers=user.headers).json()["status"] == "pending"
        response = client.delete(f"/tasks/{victim}", headers=user.headers)
        assert response.status_code == 200
        assert response.json()["status"] == "cancelled"
    for t in blockers:
        wait_status(client, user.headers, t, timeout=180)
    time.sleep(0.5)
    final = client.get(f"/tasks/{victim}", headers=user.headers).json()
    assert final["status"] == "cancelled" and final["started_at"] is None
    assert client.get(f"/tasks/{victim}/result", headers=user.headers).status_code == 409
    assert client.delete(f"/tasks/{victim}", headers=user.headers).status_code == 400


def test_cancel_running_task_stops_at_the_next_step(faulty_client, faulty_user):
    client, user = faulty_client, faulty_user
    task_id = submit_t2i(client, user.headers, prompt=f"{SLOW} cancel me", num_inference_steps=100)
    deadline = time.monotonic() + 120
    while True:
        status = client.get(f"/tasks/{task_id}", headers=user.headers).json()
        if status["status"] == "running" and status["progress"]["current_step"] >= 2:
            break
        assert time.monotonic() < deadline
        time.sleep(0.05)
    response = client.delete(f"/tasks/{task_id}", headers=user.headers)
    assert response.status_code == 200
    final = wait_status(client, user.headers, task_id)
    assert final["status"] == "cancelled"
    assert final["progress"]["current_step"] < 100
    assert client.get(f"/tasks/{task_id}/result", headers=user.headers).status_code == 409
    record = client.get(f"/tasks/history/{task_id}", headers=user.headers).json()
    assert record["status"] == "cancelled" and record["result_path"] is None


def test_result_of_unfinished_task_is_202_and_wait_times_out_with_408(faulty_client, faulty_user):
    client, user = faulty_client, faulty_user
    task_id = submit_t2i(client, user.headers, prompt=f"{HELD} unfinished", num_inference_steps=100)
    with cancelled_at_the_end(client, user.headers, [task_id]):
        early = client.get(f"/tasks/{task_id}/result", headers=user.headers)
        assert early.status_code == 202 and early.json()["status"] in ("pending", "running")
        timed_out = client.get(
            f"/tasks/{task_id}/result", headers=user.headers, params={"wait": "true", "timeout": "0.3"}
        )
        assert timed_out.status_code == 408
    assert wait_status(client, user.headers, task_id)["status"] == "cancelled"


def test_another_users_task_is_404_everywhere(faulty_client, faulty_user, faulty_admin_headers):
    client, user, admin_headers = faulty_client, faulty_user, faulty_admin_headers
    task_id = submit_t2i(client, user.headers)
    intruder = TestUser(client, "intruder")
    for method, path in (
        ("GET", f"/tasks/{task_id}"),
        ("GET", f"/tasks/{task_id}/result"),
        ("DELETE", f"/tasks/{task_id}"),
        ("GET", f"/tasks/history/{task_id}"),
    ):
        response = intruder_response = client.request(method, path, headers=intruder.headers)
        assert response.status_code == 404, path
        assert intruder_response.json() == {"detail": "任务不存在"}
    assert client.get(f"/tasks/{task_id}", headers=admin_headers).status_code == 200
    wait_status(client, user.headers, task_id)


def test_unknown_task_is_404(client, user):
    assert client.get("/tasks/00000000-0000-0000-0000-000000000000", headers=user.headers).status_code == 404
