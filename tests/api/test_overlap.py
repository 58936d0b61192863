"""A model replica stores one result while the next task generates (docs/performance.md): a failure
while storing task n fails task n only, and a task's end is announced only once its result is stored.

The failure is made to happen by the ``faulty`` profile's ``__fault_disk_full__`` prompt (a fake
write failure in the encoding step, used here only to make it happen); everything else is real.
"""

from __future__ import annotations

import itertools
import uuid

from tests.api.helpers import png_size, submit_t2i, wait_status


def test_a_failed_write_fails_that_task_only_and_the_queued_ones_complete(faulty_client, faulty_user):
    client, user = faulty_client, faulty_user
    tag = uuid.uuid4().hex[:8]
    # Queued back to back, so that each starts while the one before it is being stored.
    before = submit_t2i(client, user.headers, prompt=f"before {tag}", num_inference_steps=20)
    broken = submit_t2i(client, user.headers, prompt=f"__fault_disk_full__ {tag}", num_inference_steps=20)
    after = [submit_t2i(client, user.headers, prompt=f"after {n} {tag}", num_inference_steps=20) for n in range(3)]

    assert wait_status(client, user.headers, broken)["status"] == "failed"
    failed = client.get(f"/tasks/{broken}", headers=user.headers).json()
    assert "结果写入失败" in failed["error"]
    for task_id in [before, *after]:
        final = wait_status(client, user.headers, task_id)
        assert final["status"] == "completed", final
        # Announced once stored: the result is there the moment the task says completed.
        result = client.get(f"/tasks/{task_id}/result", headers=user.headers)
        assert result.status_code == 200 and png_size(result.content) == (1024, 1024)


def test_the_replicas_clock_shows_one_generation_at_a_time(faulty_client, faulty_user):
    """``device_timeline`` (what ``make bench`` splits the device's idle time with) is in order."""
    from ray import serve

    client, user = faulty_client, faulty_user
    tasks = [submit_t2i(client, user.headers, prompt=f"clock {n}", num_inference_steps=20) for n in range(4)]
    for task_id in tasks:
        assert wait_status(client, user.headers, task_id)["status"] == "completed"
    turns = serve.get_deployment_handle("TextToImage", app_name="faulty").device_timeline.remote().result(timeout_s=30)
    assert turns, "the replica kept no record of its generations"
    for turn in turns:
        assert turn["arrived"] <= turn["at_lock"] <= turn["acquired"] <= turn["thread_done"] <= turn["released"]
    ordered = sorted(turns, key=lambda t: t["acquired"])
    for previous, following in itertools.pairwise(ordered):
        assert following["acquired"] >= previous["released"]  # never two on the device
