"""The ingress's status cache (serving.status_cache) on its own: what it keeps, what drops it."""

from __future__ import annotations

from datetime import timedelta

import pytest

from serving import event_journal as ev
from serving.protocol import (
    PreviewImage,
    Progress,
    QueueMoved,
    StatusesReset,
    TaskCancelled,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
    TaskQueued,
    TaskStarted,
    task_status_view,
)
from serving.status_cache import StatusCache, retimed
from storage import utcnow

pytestmark = pytest.mark.unit
KEY = "owner-key"


def view(task_id="t1", user_id=1, status="completed", steps=0, position=0, created_ago=5.0, started_ago=None):
    now = utcnow()
    started = now - timedelta(seconds=started_ago) if started_ago is not None else None
    return task_status_view(
        task_id=task_id,
        user_id=user_id,
        task_type="text_to_image",
        status=status,
        error=None,
        created_at=now - timedelta(seconds=created_ago),
        started_at=started,
        completed_at=now if status == "completed" else None,
        execution_time=1.5 if status == "completed" else None,
        steps_done=steps,
        total_steps=20,
        seed=7,
        position=position,
        now=now,
    )


def live_cache(**kw) -> StatusCache:
    cache = StatusCache(**kw)
    cache.reset(live=True)
    return cache


def event(kind, task_id="t1", data=None) -> TaskEvent:
    payloads = {
        ev.QUEUED: TaskQueued(position=1),
        ev.STARTED: TaskStarted(started_at=utcnow().isoformat()),
        ev.COMPLETED: TaskCompleted(seed=7, result_url=f"/tasks/{task_id}/result"),
        ev.FAILED: TaskFailed(error="boom"),
        ev.CANCELLED: TaskCancelled(),
    }
    return TaskEvent(1, kind, task_id, 1, data if data is not None else payloads[kind])


def preview(step: int) -> PreviewImage:
    return PreviewImage(current_step=step, total_steps=20, width=1, height=1, media_type="image/webp", b64="AA==")


def test_a_read_is_kept_for_its_owner_only():
    cache = live_cache()
    done = view()
    cache.put(done, KEY, cache.token())
    assert cache.get("t1", 1, KEY) == done
    assert cache.get("t1", 2, KEY) is None  # another user
    assert cache.get("t1", 1, "another account's key") is None  # a deleted account's id in new hands
    assert cache.get("t2", 1, KEY) is None


def test_nothing_is_kept_while_the_feed_is_not_running():
    cache = StatusCache()
    assert cache.token() is None
    cache.put(view(), KEY, None)
    assert not cache.entries
    live = live_cache()
    live.put(view(), KEY, live.token())
    live.reset(live=False)  # a failed poll
    assert live.get("t1", 1, KEY) is None


def test_a_read_sent_before_a_change_of_its_task_is_not_kept():
    cache = live_cache()
    token = cache.token()
    cache.apply(event(ev.COMPLETED))  # arrives while the read is on its way
    cache.put(view(status="running", started_ago=1), KEY, token)
    assert cache.get("t1", 1, KEY) is None
    # another task's change does not matter
    token = cache.token()
    cache.apply(event(ev.STARTED, task_id="t9"))
    cache.put(view(), KEY, token)
    assert cache.get("t1", 1, KEY) is not None


def test_a_read_sent_before_a_reset_is_not_kept():
    cache = live_cache()
    token = cache.token()
    cache.apply(StatusesReset())
    cache.put(view(), KEY, token)
    assert cache.get("t1", 1, KEY) is None


@pytest.mark.parametrize("kind", [ev.STARTED, ev.COMPLETED, ev.FAILED, ev.CANCELLED])
def test_any_change_of_a_task_drops_its_status(kind):
    cache = live_cache()
    cache.put(view(status="running", started_ago=1), KEY, cache.token())
    cache.apply(event(kind))
    assert cache.get("t1", 1, KEY) is None


def test_progress_updates_a_running_status_exactly_and_previews_change_nothing():
    cache = live_cache()
    cache.put(view(status="running", steps=3, started_ago=1), KEY, cache.token())
    cache.apply(event(ev.PREVIEW, data=preview(5)))
    assert cache.get("t1", 1, KEY).progress.current_step == 3
    cache.apply(event(ev.PROGRESS, data=Progress.of(6, 20)))
    answer = cache.get("t1", 1, KEY)
    assert answer.status == "running"
    assert answer.progress.current_step == 6 and answer.progress.percent == 30.0
    cache.apply(event(ev.PROGRESS, data=Progress.of(5, 20)))  # an older report, late
    assert cache.get("t1", 1, KEY).progress.current_step == 6


def test_any_queue_move_drops_every_pending_status_but_not_the_others():
    cache = live_cache()
    cache.put(view("p1", status="pending", position=2), KEY, cache.token())
    cache.put(view("p2", status="pending", position=3), KEY, cache.token())
    cache.put(view("d1"), KEY, cache.token())
    token = cache.token()
    cache.apply(QueueMoved(kind="text_to_image"))
    assert cache.get("p1", 1, KEY) is None and cache.get("p2", 1, KEY) is None
    assert cache.get("d1", 1, KEY) is not None
    cache.put(view("p1", status="pending", position=2), KEY, token)  # read before the move
    assert cache.get("p1", 1, KEY) is None
    cache.put(view("p1", status="pending", position=1), KEY, cache.token())
    cache.apply(event(ev.QUEUED, task_id="new", data=TaskQueued(position=4)))  # a new task may go ahead (fair share)
    assert cache.get("p1", 1, KEY) is None
    cache.put(view("p1", status="pending", position=1), KEY, cache.token())
    cache.apply(event(ev.COMPLETED, task_id="another users running task"))  # fair share may reorder
    assert cache.get("p1", 1, KEY) is None


def test_time_dependent_fields_are_computed_at_each_answer():
    cache = live_cache()
    pending = view(status="pending", position=1, created_ago=5.0)
    running = view("r", status="running", started_ago=2.0, created_ago=3.0, steps=4)
    cache.put(pending, KEY, cache.token())
    cache.put(running, KEY, cache.token())
    later = utcnow() + timedelta(seconds=10)
    assert retimed(pending, later).wait_time_seconds >= pending.wait_time_seconds + 9.9
    assert retimed(running, later).execution_time_seconds >= running.execution_time_seconds + 9.9
    assert retimed(running, later).wait_time_seconds == running.wait_time_seconds  # it left the queue
    done = view("d")
    assert retimed(done, later) == done
    assert cache.get("t1", 1, KEY).position_in_queue == 1


def test_own_changes_drop_a_status_and_refuse_reads_sent_before_them():
    cache = live_cache()
    cache.put(view(status="pending", position=1), KEY, cache.token())
    token = cache.token()
    cache.task_changed("t1")  # this ingress cancelled it
    assert cache.get("t1", 1, KEY) is None
    cache.put(view(status="pending", position=1), KEY, token)
    assert cache.get("t1", 1, KEY) is None


def test_capacity_bounds_entries_and_forgotten_changes_refuse_older_reads():
    cache = live_cache(capacity=3, changes_kept=2)
    for n in range(5):
        cache.put(view(f"t{n}"), KEY, cache.token())
    assert list(cache.entries) == ["t2", "t3", "t4"]
    token = cache.token()
    for n in range(3):
        cache.task_changed(f"x{n}")  # the oldest change is forgotten: reads from before it are refused
    assert len(cache.changed) == 2
    cache.put(view("t9"), KEY, token)
    assert cache.get("t9", 1, KEY) is None
