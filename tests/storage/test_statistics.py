"""Statistics equal counts computed here, independently, from the seeded records."""

from __future__ import annotations

import random
from datetime import timedelta

import pytest
from sqlmodel import Session

from storage import TaskStatus, TaskType
from storage.tasks import statistics
from tests.storage.seed import T0, add_tasks, add_user, task

pytestmark = pytest.mark.unit

STATUSES = [s.value for s in TaskStatus]
TYPES = [t.value for t in TaskType]
TODAY = T0.replace(hour=0)


@pytest.fixture
def seeded(engine):
    """60 records of four users (one later deleted: no owner) over three days, varied times."""
    rng = random.Random(20240615)
    users = [add_user(engine).id for _ in range(4)]
    records = []
    for i in range(60):
        status = rng.choice(STATUSES)
        # Failed and cancelled tasks may carry an execution time: it must not count.
        seconds = round(rng.uniform(1, 40), 2) if status in ("completed", "failed", "cancelled") else None
        records.append(
            task(
                rng.choice([*users, None]),
                TODAY - timedelta(days=2) + timedelta(hours=i),
                status=status,
                task_type=rng.choice(TYPES),
                execution_time=seconds,
            )
        )
    add_tasks(engine, *records)
    return users, records


def expected_stats(records) -> dict:
    completed = [r for r in records if r.status == "completed"]
    times = [r.execution_time for r in completed if r.execution_time is not None]
    return {
        "total_tasks": len(records),
        "completed_tasks": len(completed),
        "failed_tasks": sum(r.status == "failed" for r in records),
        "pending_tasks": sum(r.status == "pending" for r in records),
        "running_tasks": sum(r.status == "running" for r in records),
        "cancelled_tasks": sum(r.status == "cancelled" for r in records),
        "text_to_image_count": sum(r.task_type == "text_to_image" for r in records),
        "image_edit_count": sum(r.task_type == "image_edit" for r in records),
        "batch_edit_count": sum(r.task_type == "batch_edit" for r in records),
        "image_to_image_count": sum(r.task_type == "image_to_image" for r in records),
        "avg_execution_time": round(sum(times) / len(times), 3) if times else 0.0,
        "total_execution_time": round(sum(times), 3),
    }


def test_global_statistics_match_independent_counts(engine, seeded):
    _, records = seeded
    with Session(engine) as session:
        stats = statistics(session, today_start=TODAY)
    expected = expected_stats(records)
    expected["today_tasks"] = sum(r.created_at >= TODAY for r in records)
    expected["active_users"] = len({r.user_id for r in records if r.user_id is not None})
    assert stats == pytest.approx(expected)
    assert 0 < expected["today_tasks"] < len(records)


def test_each_users_statistics_match_their_own_records(engine, seeded):
    users, records = seeded
    for user_id in users:
        mine = [r for r in records if r.user_id == user_id]
        with Session(engine) as session:
            stats = statistics(session, user_id)
        assert stats == pytest.approx(expected_stats(mine))
        assert "today_tasks" not in stats and "active_users" not in stats


def test_average_is_over_completed_tasks_only(engine):
    user = add_user(engine).id
    add_tasks(
        engine,
        task(user, T0, status="completed", execution_time=10.0),
        task(user, T0, status="completed", execution_time=20.0),
        task(user, T0, status="failed", execution_time=1000.0),
        task(user, T0, status="cancelled", execution_time=500.0),
        task(user, T0, status="running"),
    )
    with Session(engine) as session:
        stats = statistics(session, user)
    assert stats["avg_execution_time"] == pytest.approx(15.0)
    assert stats["total_execution_time"] == pytest.approx(30.0)


def test_no_tasks_gives_zeros_not_nulls(engine):
    user = add_user(engine).id
    with Session(engine) as session:
        stats = statistics(session, user)
        overall = statistics(session, today_start=TODAY)
    assert stats["total_tasks"] == 0
    assert stats["avg_execution_time"] == 0.0 and stats["total_execution_time"] == 0.0
    assert overall["today_tasks"] == 0 and overall["active_users"] == 0


def test_today_counts_from_today_start_inclusive(engine):
    users = [add_user(engine).id for _ in range(2)]
    add_tasks(
        engine,
        task(users[0], TODAY - timedelta(microseconds=1)),
        task(users[0], TODAY),
        task(users[1], TODAY + timedelta(hours=5), status="pending"),
    )
    with Session(engine) as session:
        stats = statistics(session, today_start=TODAY)
    assert stats["today_tasks"] == 2
    assert stats["active_users"] == 2
