"""The registry's recovery and clean-up logic on a real SQLite database, without Ray."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlmodel import select

from models.kinds import ModelKind
from serving import messages
from serving.protocol import Accepted, QueueFull, TaskSpec
from serving.registry import RegistryCore
from serving.routes.tasks import status_from_record
from storage import TaskRecord, session_scope, utcnow

pytestmark = pytest.mark.unit


def _core(tmp_path, **settings) -> RegistryCore:
    return RegistryCore("unit", {"data_dir": str(tmp_path), "cleanup_interval_seconds": 0, **settings}, "v1")


def _spec(task_id: str, steps: int = 20) -> TaskSpec:
    return TaskSpec(task_id=task_id, user_id=None, task_type="text_to_image", kind=ModelKind.text_to_image,
                    prompt="p", prompts=["p"], parameters={"num_inference_steps": steps, "seed": -1}, image_count=1)


def _record(task_id: str, status: str, age: timedelta = timedelta(0), attempts: int = 0) -> TaskRecord:
    return TaskRecord(task_id=task_id, user_id=None, task_type="text_to_image", prompt="p", status=status,
                      parameters={"num_inference_steps": 20}, created_at=utcnow() - age, attempts=attempts)


def test_task_running_when_the_registry_died_with_no_retries_left_is_failed_with_a_reason(tmp_path):
    core = _core(tmp_path, task_retries=1)
    with session_scope(core.engine) as session:
        session.add(_record("t-running", "running", attempts=2))
    asyncio.run(core.start())
    with session_scope(core.engine) as session:
        record = session.exec(select(TaskRecord).where(TaskRecord.task_id == "t-running")).one()
    assert record.status == "failed" and record.error_message == messages.INTERRUPTED_BY_RESTART
    assert record.completed_at is not None
    assert core.tasks["t-running"].done.is_set()


def test_periodic_cleanup_runs_by_itself_and_spares_unfinished_tasks(tmp_path):
    core = _core(tmp_path, cleanup_interval_seconds=0.05, cleanup_max_age_days=1, cleanup_max_age_hours=1)
    with session_scope(core.engine) as session:
        session.add(_record("old-done", "completed", age=timedelta(days=3)))
        session.add(_record("old-failed", "failed", age=timedelta(days=3)))
        session.add(_record("new-done", "completed"))
    core.store.put("results/old-done/generated_old-done.png", b"png")

    async def scenario():
        await core.start()
        await asyncio.sleep(0.3)
        core._cleanup_loop.cancel()

    asyncio.run(scenario())
    with session_scope(core.engine) as session:
        left = {r.task_id for r in session.exec(select(TaskRecord))}
    assert left == {"new-done"}
    assert not core.store.exists("results/old-done/generated_old-done.png")


def test_queue_full_refuses_before_writing_anything(tmp_path):
    core = _core(tmp_path, max_queue_size=1)
    with session_scope(core.engine) as session:
        session.add(_record("waiting", "pending"))
    core._track(core._live_from_record(_record("waiting", "pending")))
    answer = asyncio.run(core.create(_spec("new")))
    assert isinstance(answer, QueueFull) and answer.retry_after > 0
    with session_scope(core.engine) as session:
        assert session.exec(select(TaskRecord).where(TaskRecord.task_id == "new")).first() is None


def _stored(core: RegistryCore, task_id: str) -> TaskRecord:
    with session_scope(core.engine) as session:
        return session.exec(select(TaskRecord).where(TaskRecord.task_id == task_id)).one()


def test_a_finished_task_reads_the_same_from_memory_and_from_the_database(tmp_path):
    """``GET /tasks/{id}`` is built by the registry while the task is in memory and from its record
    afterwards; both must give the same body. No model replica runs here: the dispatch is replaced
    (a stand-in that records nothing), and the task is cancelled while pending, then one is failed."""
    core = _core(tmp_path)
    core._dispatch = lambda task: None  # stand-in: nothing runs the task

    async def scenario():
        await core.start()
        for task_id in ("cancelled", "failed"):
            assert isinstance(await core.create(_spec(task_id)), Accepted)
        await asyncio.sleep(0.05)  # a measurable wait in the queue
        await core.cancel("cancelled")
        await core.mark_running("failed", core.epoch, core.tasks["failed"].attempt)
        core.tasks["failed"].progress[0] = 7
        core._finish(core.tasks["failed"], "failed", "boom")
        return [(await core.status(t), t) for t in ("cancelled", "failed")]

    for live, task_id in asyncio.run(scenario()):
        assert live is not None
        from_db = status_from_record(_stored(core, task_id))
        assert from_db.model_dump() == live.model_dump(), task_id
    cancelled = status_from_record(_stored(core, "cancelled"))
    assert cancelled.status == "cancelled" and cancelled.started_at is None
    assert cancelled.wait_time_seconds is not None and cancelled.wait_time_seconds >= 0.05
    assert cancelled.seed is not None and 0 <= cancelled.seed < 2**32
