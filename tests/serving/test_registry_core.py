"""The registry's recovery and clean-up logic on a real SQLite database, without Ray."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlmodel import select

from serving import messages
from serving.registry import RegistryCore
from storage import TaskRecord, session_scope, utcnow


def _core(tmp_path, **settings) -> RegistryCore:
    return RegistryCore("unit", {"data_dir": str(tmp_path), "cleanup_interval_seconds": 0, **settings}, "v1")


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
    answer = asyncio.run(core.create({"task_id": "new", "parameters": {}, "kind": "text_to_image", "prompts": ["p"],
                                      "image_count": 1, "user_id": None, "task_type": "text_to_image",
                                      "prompt": "p"}))
    assert answer["error"] == "queue_full" and answer["retry_after"] > 0
    with session_scope(core.engine) as session:
        assert session.exec(select(TaskRecord).where(TaskRecord.task_id == "new")).first() is None
