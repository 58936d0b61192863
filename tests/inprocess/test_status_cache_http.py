"""``GET /tasks/{id}`` answered from the ingress's status cache, through the real app (no Ray).

The registry is the in-process stand-in (``conftest.py``): its real logic and journal, so the
ingress's change feed is the real long poll. ``registry.status`` is wrapped to count the reads
that still cross to the registry.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from serving.protocol import QueueMoved
from serving.routes.event_streams import hub_for
from tests.inprocess.conftest import HOLD, make_client, register
from tests.inprocess.test_http import finished, submit

pytestmark = pytest.mark.unit


def count_registry_reads(client) -> list[str]:
    state = client.app.state.service
    reads: list[str] = []
    original = state.registry.status

    async def counted(task_id: str):
        reads.append(task_id)
        return await original(task_id)

    state.registry.status = counted
    return reads


def feed_caught_up(client) -> None:
    """Until this ingress has been told of everything the registry published so far."""
    state = client.app.state.service
    journal = state.registry.core.journal
    hub = hub_for(state)
    client.portal.call(hub.follow)
    target = journal.seq
    deadline = time.monotonic() + 10
    while not (state.statuses.live and hub._cursor is not None and hub._cursor >= target):
        assert time.monotonic() < deadline, (hub._cursor, target)
        time.sleep(0.005)


def break_the_feed(client, cache) -> Callable[[], None]:
    """Make every poll of the change feed fail (a registry restarting) until ``cache`` is off; returns
    what puts the feed back."""
    registry = client.app.state.service.registry
    original = registry.poll_events

    async def unreachable(*args, **kwargs):
        raise ConnectionError("the registry is restarting")

    registry.poll_events = unreachable
    moved = QueueMoved(kind="x")
    client.portal.call(registry.core.journal.publish, moved)  # on the loop: it wakes the waiting poll
    deadline = time.monotonic() + 10
    while cache.live:  # the waiting poll returns, the next one fails
        assert time.monotonic() < deadline
        time.sleep(0.01)
    return lambda: setattr(registry, "poll_events", original)


def without_clock_fields(body: dict) -> dict:
    return {k: v for k, v in body.items() if k not in ("wait_time_seconds", "execution_time_seconds")}


def test_an_owners_repeated_reads_are_answered_by_the_ingress_with_the_registrys_answer(client, alice):
    task_id = submit(client, alice)
    first = finished(client, alice, task_id)
    feed_caught_up(client)
    reads = count_registry_reads(client)
    answers = [client.get(f"/tasks/{task_id}", headers=alice).json() for _ in range(5)]
    assert answers == [first] * 5
    assert len(reads) <= 1  # at most the read that filled the cache
    client.app.state.service.statuses.reset(live=True)  # forget: the registry answers the same
    assert client.get(f"/tasks/{task_id}", headers=alice).json() == first
    assert len(reads) <= 2


def test_another_user_gets_404_and_an_admin_always_reads_through(client, alice, bob, admin):
    task_id = submit(client, alice)
    finished(client, alice, task_id)
    feed_caught_up(client)
    client.get(f"/tasks/{task_id}", headers=alice)  # cached now for alice
    assert client.get(f"/tasks/{task_id}", headers=bob).status_code == 404
    reads = count_registry_reads(client)
    for _ in range(3):
        assert client.get(f"/tasks/{task_id}", headers=admin).status_code == 200
    assert len(reads) == 3


def test_a_change_made_elsewhere_is_answered_once_the_feed_told_this_ingress(client, alice):
    state = client.app.state.service
    core = state.registry.core
    held = submit(client, alice, prompt=f"{HOLD} still")
    deadline = time.monotonic() + 10
    while client.get(f"/tasks/{held}", headers=alice).json()["status"] != "running":
        assert time.monotonic() < deadline
        time.sleep(0.01)
    feed_caught_up(client)
    running = client.get(f"/tasks/{held}", headers=alice).json()
    assert running["status"] == "running"
    registry_view = client.portal.call(core.status, held).model_dump(mode="json")
    assert without_clock_fields(running) == without_clock_fields(registry_view)
    # Cancelled by another ingress (straight on the registry): once this ingress heard of it, its
    # very next answer says so.
    client.portal.call(core.cancel, held, 2.0)
    feed_caught_up(client)
    assert client.get(f"/tasks/{held}", headers=alice).json()["status"] == "cancelled"


def test_own_cancel_is_read_back_at_once(client, alice):
    held = submit(client, alice, prompt=f"{HOLD} pending")
    queued = submit(client, alice, prompt=f"{HOLD} behind it")
    assert client.get(f"/tasks/{queued}", headers=alice).json()["status"] == "pending"
    assert client.delete(f"/tasks/{queued}", headers=alice).json()["status"] == "cancelled"
    assert client.get(f"/tasks/{queued}", headers=alice).json()["status"] == "cancelled"
    client.delete(f"/tasks/{held}", headers=alice)
    assert finished(client, alice, held)["status"] == "cancelled"


def test_a_pending_tasks_position_follows_the_queue(client, alice):
    held = submit(client, alice, prompt=f"{HOLD} first")
    second = submit(client, alice, prompt=f"{HOLD} second")
    third = submit(client, alice, prompt=f"{HOLD} third")
    feed_caught_up(client)
    assert client.get(f"/tasks/{third}", headers=alice).json()["position_in_queue"] == 2
    client.delete(f"/tasks/{second}", headers=alice)
    feed_caught_up(client)
    assert client.get(f"/tasks/{third}", headers=alice).json()["position_in_queue"] == 1
    for task_id in (third, held):
        client.delete(f"/tasks/{task_id}", headers=alice)


def test_deleted_records_are_404_once_the_feed_told_of_the_clean_up(client, alice, admin):
    task_id = submit(client, alice)
    finished(client, alice, task_id)
    feed_caught_up(client)
    assert client.get(f"/tasks/{task_id}", headers=alice).status_code == 200  # cached
    cleaned = client.post("/tasks/cleanup", headers=admin, params={"max_age_hours": 0, "max_age_days": 0})
    assert cleaned.json()["db_cleaned_count"] >= 1
    feed_caught_up(client)
    assert client.get(f"/tasks/{task_id}", headers=alice).status_code == 404


def test_a_failing_feed_turns_the_cache_off_until_it_runs_again(tmp_path):
    with make_client(tmp_path) as client:
        alice = register(client, "alice")
        task_id = submit(client, alice)
        finished(client, alice, task_id)
        feed_caught_up(client)
        state = client.app.state.service
        restore = break_the_feed(client, state.statuses)
        reads = count_registry_reads(client)
        client.get(f"/tasks/{task_id}", headers=alice)
        client.get(f"/tasks/{task_id}", headers=alice)
        assert len(reads) == 2  # nothing answered (or kept) from the cache meanwhile
        restore()
        feed_caught_up(client)
        client.get(f"/tasks/{task_id}", headers=alice)
        client.get(f"/tasks/{task_id}", headers=alice)
        assert len(reads) == 3


def test_the_cache_can_be_turned_off(tmp_path):
    with make_client(tmp_path, status_cache_size=0) as client:
        alice = register(client, "alice")
        task_id = submit(client, alice)
        finished(client, alice, task_id)
        reads = count_registry_reads(client)
        for _ in range(3):
            client.get(f"/tasks/{task_id}", headers=alice)
        assert len(reads) == 3 and client.app.state.service.statuses is None
