"""Queries the task registry runs at start-up (recovery) and at clean-up."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlmodel import Session

from storage.tasks import old_finished_tasks, unfinished_tasks
from tests.storage.seed import T0, add_tasks, add_user, task

pytestmark = pytest.mark.unit

CUTOFF = T0


def test_old_finished_tasks_are_the_finished_ones_created_before_the_cutoff(engine):
    me = add_user(engine).id
    old = [
        task(me, CUTOFF - timedelta(days=d), status=s)
        for d, s in [(40, "completed"), (35, "failed"), (31, "cancelled")]
    ]
    old_unfinished = [task(me, CUTOFF - timedelta(days=50), status=s) for s in ("pending", "running")]
    recent = [task(me, CUTOFF, status="completed"), task(me, CUTOFF + timedelta(days=1), status="failed")]
    add_tasks(engine, *old, *old_unfinished, *recent)
    with Session(engine) as session:
        found = old_finished_tasks(session, CUTOFF)
    assert sorted(r.task_id for r in found) == sorted(r.task_id for r in old)


def test_old_finished_tasks_never_include_pending_or_running_ones(engine):
    me = add_user(engine).id
    add_tasks(
        engine,
        *[task(me, CUTOFF - timedelta(days=100 + i), status=s) for i, s in enumerate(["pending", "running"] * 5)],
    )
    with Session(engine) as session:
        assert old_finished_tasks(session, CUTOFF + timedelta(days=365)) == []


def test_old_finished_tasks_come_in_batches_of_the_limit(engine):
    me = add_user(engine).id
    add_tasks(engine, *[task(me, CUTOFF - timedelta(days=1, minutes=i)) for i in range(7)])
    with Session(engine) as session:
        first = old_finished_tasks(session, CUTOFF, limit=5)
        everything = old_finished_tasks(session, CUTOFF)
    assert len(first) == 5 and len(everything) == 7
    assert [r.id for r in first] == sorted(r.id for r in everything)[:5]


def test_unfinished_tasks_are_pending_and_running_oldest_first(engine):
    me = add_user(engine).id
    records = add_tasks(
        engine,
        task(me, T0 + timedelta(minutes=3), status="pending"),
        task(me, T0 + timedelta(minutes=1), status="running"),
        task(me, T0, status="completed"),
        task(me, T0 + timedelta(minutes=2), status="pending"),
        task(None, T0 + timedelta(minutes=1), status="pending"),  # same instant as the running one
        task(me, T0 + timedelta(minutes=4), status="failed"),
        task(me, T0 + timedelta(minutes=5), status="cancelled"),
    )
    with Session(engine) as session:
        found = unfinished_tasks(session)
    expected = [records[1], records[4], records[3], records[0]]
    assert [r.task_id for r in found] == [r.task_id for r in expected]
    assert {r.status for r in found} == {"pending", "running"}


def test_no_unfinished_tasks(engine):
    add_tasks(engine, task(None, T0, status="completed"))
    with Session(engine) as session:
        assert unfinished_tasks(session) == []
