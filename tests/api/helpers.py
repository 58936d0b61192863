"""Helpers for API tests: images to upload, waiting for tasks, reading results."""

from __future__ import annotations

import io
import time
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
from PIL import Image

TERMINAL = {"completed", "failed", "cancelled"}

# Prompt prefixes for applications on the ``faulty`` profile (models.faulty): every step takes that
# much longer, so a task is still pending or running for as long as a test needs it to be, however
# slow the machine, instead of for a few seconds of sleep-profile steps that a slow machine outlasts.
SLOW = "__fault_slow_step_0.1__"  # 0.1 s more a step
HELD = "__fault_slow_step_1__"  # 1 s more a step: minutes at 100 steps, for a task the test cancels


def image_bytes(size=(64, 48), color=(200, 30, 30), fmt="PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=fmt)
    return buffer.getvalue()


@contextmanager
def cancelled_at_the_end(client: httpx.Client, headers, task_ids: list[str]) -> Iterator[list[str]]:
    """Cancels ``task_ids`` (as they are when the block ends) however the block ends: a held task left
    behind by a failed assertion would keep a shared application's replica busy for minutes."""
    try:
        yield task_ids
    finally:
        for task_id in task_ids:
            client.delete(f"/tasks/{task_id}", headers=headers)


def wait_idle(client: httpx.Client, headers, timeout: float = 120) -> None:
    """Until the application has no task pending or running, anyone's: a test that needs one task on
    each replica starts from idle replicas, not beside an earlier test's last task."""
    from tests.conftest import wait_for

    def idle() -> bool:
        tasks = client.get("/tasks/queue", headers=headers).json()["tasks"]
        return tasks["pending"] == 0 and tasks["running"] == 0

    wait_for(idle, timeout=timeout, interval=0.2, what="the application to have no task pending or running")


@contextmanager
def both_replicas_held(client: httpx.Client, headers) -> Iterator[list[str]]:
    """Both replicas of a two-replica faulty-profile application each running a held task (from idle,
    so that one lands on each), cancelled however the block ends: nothing else starts meanwhile."""
    wait_idle(client, headers)
    blockers = [submit_t2i(client, headers, prompt=f"{HELD} {n}", num_inference_steps=60) for n in range(2)]
    with cancelled_at_the_end(client, headers, blockers):
        for blocker in blockers:
            wait_status(client, headers, blocker, statuses={"running"}, timeout=60)
        yield blockers


def wait_status(client: httpx.Client, headers, task_id: str, statuses=TERMINAL, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/tasks/{task_id}", headers=headers).json()
        if body.get("status") in statuses:
            return body
        assert time.monotonic() < deadline, f"task {task_id} still {body.get('status')}"
        time.sleep(0.1)


def png_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        return image.size


def zip_pngs(data: bytes) -> list[bytes]:
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        return [archive.read(name) for name in sorted(archive.namelist())]


def submit_t2i(client, headers, **fields) -> str:
    data = {"prompt": "一只可爱的猫", "num_inference_steps": 20, **fields}
    response = client.post("/text-to-image", headers=headers, data={k: str(v) for k, v in data.items()})
    assert response.status_code == 202, response.text
    return response.json()["task_id"]
