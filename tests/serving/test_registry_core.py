"""The registry's recovery and clean-up logic on a real SQLite database, without Ray."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from datetime import timedelta

import pytest
from sqlmodel import select

from i18n import messages
from models.kinds import ModelKind
from serving.protocol import Accepted, AdapterChoice, GenerationParameters, QueueFull, TaskSpec
from serving.registry.core import RegistryCore
from serving.routes.tasks import status_from_record
from storage import TaskRecord, session_scope, utcnow

pytestmark = pytest.mark.unit


def _core(tmp_path, **settings) -> RegistryCore:
    return RegistryCore("unit", {"data_dir": str(tmp_path), "cleanup_interval_seconds": 0, **settings}, "v1")


def _spec(task_id: str, steps: int = 20) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        user_id=None,
        task_type="text_to_image",
        kind=ModelKind.text_to_image,
        parameters=GenerationParameters(kind=ModelKind.text_to_image, prompt="p", num_inference_steps=steps),
        image_count=1,
    )


def _record(task_id: str, status: str, age: timedelta = timedelta(0), attempts: int = 0) -> TaskRecord:
    return TaskRecord(
        task_id=task_id,
        user_id=None,
        task_type="text_to_image",
        prompt="p",
        status=status,
        parameters={"num_inference_steps": 20},
        created_at=utcnow() - age,
        attempts=attempts,
    )


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


def test_a_failed_start_exits_the_process_so_ray_restarts_the_registry(tmp_path):
    """Finding 3: the failure used to be kept and re-raised to every caller, a 500 until a manual restart."""
    from sqlalchemy import text

    from serving.registry.actor import start_or_exit

    core = _core(tmp_path)
    with core.engine.begin() as conn:  # a real database error on the start's first read
        conn.execute(text("ALTER TABLE task_records RENAME TO task_records_away"))
    exits: list[int] = []
    with pytest.raises(Exception, match="task_records"):
        asyncio.run(start_or_exit(core, exit=exits.append, delay_s=0))
    assert exits == [1]
    with core.engine.begin() as conn:
        conn.execute(text("ALTER TABLE task_records_away RENAME TO task_records"))
    fresh = _core(tmp_path)  # what Ray's restart builds
    asyncio.run(start_or_exit(fresh, exit=exits.append, delay_s=0))
    assert exits == [1]


def test_a_registry_built_while_the_database_is_away_starts_once_it_is_back(tmp_path):
    """A Ray actor whose constructor raises is never restarted: a registry restarted during a database
    outage was dead for good (every request a 503 until someone redeployed). Building it must not
    touch the database; its start does, and exits the process (so Ray restarts it) while that fails."""
    from serving.registry.actor import start_or_exit

    away = RegistryCore(
        "unit",
        {
            "data_dir": str(tmp_path),
            "database_url": "postgresql+psycopg://qis@127.0.0.1:1/none",
            "cleanup_interval_seconds": 0,
        },
        "v1",
    )
    assert away._schema_ready is False
    exits: list[int] = []
    with pytest.raises(Exception, match=r"127\.0\.0\.1"):
        asyncio.run(start_or_exit(away, exit=exits.append, delay_s=0))
    assert exits == [1]
    back = _core(tmp_path)  # the restarted actor, with the database there
    asyncio.run(start_or_exit(back, exit=exits.append, delay_s=0))
    assert exits == [1] and back._schema_ready


def test_old_records_are_deleted_in_a_worker_thread_that_leaves_the_live_state_alone(tmp_path):
    """Finding 10: the worker thread used to remove tasks from the registry's memory, beside its event loop."""
    core = _core(tmp_path)
    old = _record("old-done", "completed", age=timedelta(days=40))
    with session_scope(core.engine) as session:
        session.add(old)
    core._track(core._live_from_record(old))
    deleted = core.retention.delete_old_records(utcnow() - timedelta(days=30))  # what the worker thread runs
    assert list(deleted) == ["old-done"] and "old-done" in core.tasks  # memory untouched by the thread
    core.tasks.clear()
    core._track(core._live_from_record(_record("old-done", "completed", age=timedelta(days=40))))
    with session_scope(core.engine) as session:
        session.add(_record("old-done", "completed", age=timedelta(days=40)))
    counts = asyncio.run(core.cleanup(max_age_hours=24 * 365, max_age_days=30))
    assert counts.db_cleaned_count == 1 and "old-done" not in core.tasks  # forgotten on the event loop


def _rename(core, old: str, new: str) -> None:
    from sqlalchemy import text

    with core.engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE {old} RENAME TO {new}"))


def test_a_failed_write_of_a_finished_task_releases_its_waiters_and_is_stored_later(tmp_path, monkeypatch):
    """Finding 4: _finish changed memory, then the write raised, and `done` was never set: waiters hung."""
    from serving.registry import saver

    monkeypatch.setattr(saver, "SAVE_RETRY_S", 0.05)
    core = _core(tmp_path)
    record = _record("t-1", "running", attempts=1)
    with session_scope(core.engine) as session:
        session.add(record)
    task = core._live_from_record(record)
    core._track(task)

    async def scenario():
        waiter = asyncio.create_task(core.wait("t-1", 30))
        await asyncio.sleep(0)
        _rename(core, "task_records", "task_records_away")  # the database refuses the write
        core._finish(task, "failed", "boom")
        answer = await asyncio.wait_for(waiter, 5)  # released at once, not after 30 s
        assert answer.status.status == "failed"
        core.retention.forget("t-1")  # what a clean-up does with an old finished task
        assert "t-1" in core.tasks  # kept, answerable from memory, until its state is stored
        _rename(core, "task_records_away", "task_records")
        for _ in range(100):
            await asyncio.sleep(0.05)
            if not core.saver.unsaved and task.saving.done():  # written again, and that write finished
                break

    asyncio.run(scenario())
    with session_scope(core.engine) as session:
        stored = session.exec(select(TaskRecord).where(TaskRecord.task_id == "t-1")).one()
    assert (stored.status, stored.error_message) == ("failed", "boom")


def test_a_failed_write_when_a_replica_starts_a_task_does_not_raise_into_the_replica(tmp_path):
    core = _core(tmp_path)
    record = _record("t-2", "pending")
    with session_scope(core.engine) as session:
        session.add(record)
    task = core._live_from_record(record)
    core._track(task)

    async def scenario():
        _rename(core, "task_records", "task_records_away")
        assert await core.mark_running("t-2", core.epoch, task.attempt) is True
        await core.writer.flush()  # the write is made on the writer thread; its failure comes back
        assert core.tasks["t-2"].status == "running" and "t-2" in core.saver.unsaved
        core.saver.retry.cancel()

    asyncio.run(scenario())


def test_tasks_of_a_model_disabled_across_a_restart_fail_with_a_clear_reason(tmp_path):
    """Finding 4: they were reloaded as pending and dispatched to a deployment that no longer exists."""
    core = _core(tmp_path, enabled_models=["text_to_image"])
    with session_scope(core.engine) as session:
        session.add(
            TaskRecord(
                task_id="edit-1",
                user_id=None,
                task_type="image_edit",
                prompt="p",
                status="pending",
                parameters={"num_inference_steps": 20},
                input_keys=["inputs/x.png"],
            )
        )
    asyncio.run(core.start())
    with session_scope(core.engine) as session:
        stored = session.exec(select(TaskRecord).where(TaskRecord.task_id == "edit-1")).one()
    assert (stored.status, stored.error_message) == ("failed", messages.MODEL_DISABLED)
    assert core.tasks["edit-1"].done.is_set()


def test_one_user_cannot_fill_the_queue_others_still_get_in(tmp_path):
    """Finding 8: with a global FIFO limit only, a few accounts filled the queue and everyone else got 503."""
    from dataclasses import replace as _replace

    from serving.protocol import PendingLimit
    from tests.storage.seed import add_user

    core = _core(tmp_path, max_queue_size=10, max_pending_per_user=3)
    flooder, other_user = add_user(core.engine, "flooder").id, add_user(core.engine, "other").id
    core._handles[ModelKind.text_to_image] = _NeverAnswers()  # a stand-in deployment: tasks stay pending

    async def scenario():
        flood = [await core.create(_replace(_spec(f"flood-{n}"), user_id=flooder)) for n in range(5)]
        other = await core.create(_replace(_spec("other"), user_id=other_user))
        return flood, other

    flood, other = asyncio.run(scenario())
    assert [type(a).__name__ for a in flood] == ["Accepted"] * 3 + ["PendingLimit"] * 2
    assert isinstance(flood[-1], PendingLimit) and flood[-1].limit == 3 and flood[-1].retry_after > 0
    assert isinstance(other, Accepted)


class _NeverAnswers:
    """Stands in for a model deployment handle whose replicas are all busy: requests never finish."""

    class _Method:
        def remote(self, request):
            return asyncio.get_running_loop().create_future()

    run = _Method()


def test_a_batch_zip_is_built_member_by_member_never_whole_in_memory(tmp_path):
    """A batch's ZIP is written from its PNGs piece by piece: the registry's peak of allocated memory
    while it builds a ZIP of three 4 MiB members stays below one member (read whole, or built in a
    buffer, it would be several times that). Real files in a real local store."""
    import io
    import os
    import tracemalloc
    import zipfile
    from types import SimpleNamespace

    core = _core(tmp_path)
    member = 4 * 1024 * 1024
    contents = {f"results/t/image_{n}_0.png": os.urandom(member) for n in range(3)}
    for key, data in contents.items():
        core.store.put(key, data)
    tracemalloc.start()
    try:
        key = core._zip_results(SimpleNamespace(task_id="t"), list(contents))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert key == "results/t/generated_t.zip"
    assert peak < member, peak
    with zipfile.ZipFile(io.BytesIO(core.store.get(key))) as archive:
        assert archive.testzip() is None
        assert archive.namelist() == [k.rsplit("/", 1)[-1] for k in contents]
        assert [archive.read(name) for name in archive.namelist()] == list(contents.values())


# ------------------------------------------------------------------ persistence off the event loop


def test_status_reads_answer_while_the_database_holds_a_write_and_the_submission_waits_for_its_commit(tmp_path):
    """Issue 15, finding 5: SQL ran on the registry's event loop, so one slow write held every call.
    Here a second connection holds SQLite's write lock (a real database that is slow to take writes):
    a submission waits for its commit, while status reads and the queue still answer."""
    import sqlite3

    core = _core(tmp_path)
    core._handles[ModelKind.text_to_image] = _NeverAnswers()  # a stand-in deployment: tasks stay pending
    database = str(tmp_path / "qwen_image.db")

    async def scenario():
        await core.start()
        assert isinstance(await core.create(_spec("first")), Accepted)
        blocker = sqlite3.connect(database, isolation_level=None)
        blocker.execute("BEGIN IMMEDIATE")  # the write lock, held until the commit below
        try:
            submission = asyncio.create_task(core.create(_spec("second")))
            for _ in range(20):  # the loop turns while the writer thread waits for the lock
                await asyncio.sleep(0.01)
                status = await core.status("first")
                assert status is not None and status.status == "pending"
                assert (await core.queue()).tasks["pending"] == 1
            assert not submission.done()  # not acknowledged before its record is committed
        finally:
            blocker.execute("COMMIT")
            blocker.close()
        assert isinstance(await submission, Accepted)
        return (await core.status("second")).status

    assert asyncio.run(scenario()) == "pending"
    assert _stored(core, "second").status == "pending"


def test_usage_counters_equal_a_recount_after_the_registry_creates_runs_fails_cancels_and_cleans_up(tmp_path):
    """The counters the quota check reads follow every write of the registry (batched with others)."""
    from dataclasses import replace as _replace

    from storage.tasks import quota_periods, quota_usage
    from storage.usage import counted_usage
    from tests.storage.seed import add_tasks, add_user, task

    core = _core(tmp_path, default_daily_limit=1000, default_monthly_limit=1000)
    core._dispatch = lambda task: None  # stand-in: nothing runs the tasks; the test moves them
    users = [add_user(core.engine, f"counted{n}").id for n in range(3)]
    add_tasks(core.engine, *[task(users[0], utcnow() - timedelta(days=40), image_count=3) for _ in range(2)])

    async def scenario():
        await core.start()
        specs = [_replace(_spec(f"t-{n}"), user_id=users[n % 3], image_count=1 + n % 2) for n in range(12)]
        assert all(isinstance(a, Accepted) for a in await asyncio.gather(*(core.create(s) for s in specs)))
        for n in (0, 1, 2, 3):
            await core.mark_running(f"t-{n}", core.epoch, core.tasks[f"t-{n}"].attempt)
        core._finish(core.tasks["t-0"], "completed")
        core._finish(core.tasks["t-1"], "failed", "boom")  # it ran, and failed: given back
        core._finish(core.tasks["t-2"], "cancelled")  # it ran: it counts
        core._finish(core.tasks["t-4"], "failed", "never started")  # given back
        await core.cancel("t-5")  # cancelled while pending: given back
        await core.cleanup(max_age_hours=24 * 365, max_age_days=30)  # the 40-day-old records go
        await core.writer.flush()

    asyncio.run(scenario())
    now = utcnow()
    with session_scope(core.engine) as session:
        for user in users:
            counted = counted_usage(session, user, now, "UTC")
            assert counted == quota_usage(session, user, quota_periods(now)), user
            assert counted.total_used > 0


def test_finished_tasks_leave_memory_beyond_the_count_kept_and_read_the_same_from_their_records(tmp_path):
    """The registry's memory follows what is live: past ``finished_tasks_in_memory`` the oldest finished
    task is forgotten, and its status, now built from its record, is the one memory answered."""
    core = _core(tmp_path, finished_tasks_in_memory=1)
    core._dispatch = lambda task: None

    async def scenario():
        await core.start()
        for task_id in ("a", "b"):
            assert isinstance(await core.create(_spec(task_id)), Accepted)
        await core.mark_running("a", core.epoch, core.tasks["a"].attempt)
        core._finish(core.tasks["a"], "completed", result_path="results/a/x.png", result_filename="x.png")
        from_memory = await core.status("a")
        core._finish(core.tasks["b"], "failed", "boom")
        await core.status("b")
        return from_memory

    from_memory = asyncio.run(scenario())
    assert "a" not in core.tasks and "b" in core.tasks
    assert asyncio.run(core.status("a")) is None  # the ingress then reads the record
    assert status_from_record(_stored(core, "a")).model_dump() == from_memory.model_dump()


def test_a_submission_given_up_or_failing_its_adapter_read_writes_nothing_and_a_repeat_gets_one_answer(
    tmp_path, monkeypatch
):
    """A create whose catalogue read fails, or that the writer reaches only after the caller's
    deadline, stores no record (before: the read ran beside the insert, so a failed read answered an
    error while the insert went on to commit a pending task nobody tracked or dispatched). The same
    submission sent twice while it is written gets the first call's answer, and one record."""
    from sqlalchemy.exc import OperationalError

    from serving.registry import intake
    from serving.registry import task as task_module
    from storage.db import DatabaseBusy

    core = _core(tmp_path)
    core._handles[ModelKind.text_to_image] = _NeverAnswers()  # a stand-in deployment: tasks stay pending

    def catalogue_unreachable(session, names):  # a fake: the database fails this one read
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    async def scenario():
        await core.start()
        with monkeypatch.context() as patch:
            patch.setattr(task_module, "adapters_named", catalogue_unreachable)
            spec = _spec("with-lora")
            spec = replace(
                spec, parameters=spec.parameters.model_copy(update={"loras": [AdapterChoice(name="ink", scale=1.0)]})
            )
            with pytest.raises(OperationalError):
                await core.create(spec)
        with monkeypatch.context() as patch:
            patch.setattr(intake, "CREATE_DEADLINE_S", -1.0)  # the caller's deadline already past
            with pytest.raises(DatabaseBusy):
                await core.create(_spec("too-late"))
        first, again = await asyncio.gather(core.create(_spec("twice")), core.create(_spec("twice")))
        return first, again

    first, again = asyncio.run(scenario())
    assert isinstance(first, Accepted) and isinstance(again, Accepted) and first.task_id == again.task_id == "twice"
    with session_scope(core.engine) as session:
        stored = [row.task_id for row in session.exec(select(TaskRecord))]
    assert stored == ["twice"]
    assert "with-lora" not in core.tasks and "too-late" not in core.tasks and not core.intake.creating
