"""How tasks reach model replicas: least busy replica first, one generation per replica at a time.

Each replica admits a second request that waits on the replica's lock (see serving.deployments);
these tests check what that must not change: an idle replica is used before a busy one, a replica
never runs two generations at once, and a task waiting on a replica is still pending and can be
cancelled without ever running.
"""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.helpers import TERMINAL, submit_t2i, wait_status
from tests.conftest import TestUser as User
from tests.conftest import sleep_app_args

SECONDS_PER_STEP = 0.2
LONG_STEPS, SHORT_STEPS = 100, 20  # the contract allows 20–100; a short task takes 4 s here
# On the faulty profile (the sleep profile plus failures on request) this prompt adds 2 s to each step:
# a long task runs for minutes unless cancelled, so it is still running when the short ones are done
# however slow the machine running the tests, and a cancel still stops it within a step.
LONG_PROMPT = "__fault_slow_step_2__ a replica kept busy"


def _app(deploy_app, data_root, name: str, replicas: int) -> Iterator[httpx.Client]:
    from ray import serve

    url = deploy_app(
        name,
        sleep_app_args(
            data_root,
            name,
            model_profile="faulty",
            sleep_seconds_per_step=SECONDS_PER_STEP,
            model_replicas=replicas,
            enabled_models="text_to_image",
        ),
    )
    with httpx.Client(base_url=url, timeout=60) as http:
        yield http
    # Not waited for: the replicas drain and stop while the next tests run (the session's shutdown
    # waits for whatever is left).
    serve.delete(name, _blocking=False)


@pytest.fixture(scope="module")
def four_replicas(deploy_app, data_root) -> Iterator[httpx.Client]:
    yield from _app(deploy_app, data_root, "routing4", 4)


@pytest.fixture(scope="module")
def one_replica(deploy_app, data_root) -> Iterator[httpx.Client]:
    yield from _app(deploy_app, data_root, "routing1", 1)


def _wait_running(http, headers, task_id: str) -> None:
    wait_status(http, headers, task_id, statuses={"running"} | TERMINAL, timeout=60)


def test_an_idle_replica_is_used_before_a_busy_one(four_replicas):
    http, owner = four_replicas, User(four_replicas, "route")
    long_tasks = []
    for _ in range(3):
        long_tasks.append(submit_t2i(http, owner.headers, prompt=LONG_PROMPT, num_inference_steps=LONG_STEPS))
        _wait_running(http, owner.headers, long_tasks[-1])
    # Three of four replicas are generating. Serve's default router samples two replicas at random
    # and would put each short task behind a running one half of the time (1 in 8 to pass all three).
    for _ in range(3):
        short = submit_t2i(http, owner.headers, num_inference_steps=SHORT_STEPS)
        assert wait_status(http, owner.headers, short)["status"] == "completed"
        running = [http.get(f"/tasks/{t}", headers=owner.headers).json()["status"] for t in long_tasks]
        assert running == ["running"] * 3, "a short task waited for a long one to finish"
    for task_id in long_tasks:
        assert http.delete(f"/tasks/{task_id}", headers=owner.headers).status_code == 200
        assert wait_status(http, owner.headers, task_id)["status"] == "cancelled"


def test_a_replica_generates_one_task_at_a_time_and_its_waiting_task_can_be_cancelled(one_replica):
    http, owner = one_replica, User(one_replica, "route")
    # 30 steps of 0.4 s (a slowed step): 12 s, still running while the next two are sent and one cancelled.
    first = submit_t2i(http, owner.headers, prompt="__fault_slow_step_0.2__ first", num_inference_steps=30)
    _wait_running(http, owner.headers, first)
    waiting = submit_t2i(http, owner.headers, num_inference_steps=SHORT_STEPS)  # held by the replica, on its lock
    behind = submit_t2i(http, owner.headers, num_inference_steps=SHORT_STEPS)  # in Serve's queue
    assert http.delete(f"/tasks/{waiting}", headers=owner.headers).status_code == 200

    seen_together = []
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        a, c = (http.get(f"/tasks/{t}", headers=owner.headers).json() for t in (first, behind))
        if (
            c["status"] == "running"
            and a["status"] == "running"
            and a["progress"]["current_step"] < a["progress"]["total_steps"]
        ):
            seen_together.append((a["progress"], c["progress"]))
        if c["status"] in TERMINAL:
            break
        time.sleep(0.05)
    assert not seen_together, f"two generations at once on one replica: {seen_together[:3]}"

    cancelled = wait_status(http, owner.headers, waiting)
    assert cancelled["status"] == "cancelled" and cancelled["started_at"] is None  # never ran
    assert wait_status(http, owner.headers, first)["status"] == "completed"
    assert wait_status(http, owner.headers, behind)["status"] == "completed"
