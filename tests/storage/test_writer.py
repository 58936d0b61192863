"""The registry's writer thread (storage.writer.BatchWriter): many writes per transaction, the writes
that read nothing held back and run together, and still the same results as one write at a time.

Each test holds the writer on a first job until every write of the test is queued, so they all run
in one batch: the case where held-back writes and quota checks meet.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from storage import TaskRecord, session_scope
from storage.db import write_later
from storage.tables import TaskWebhook
from storage.tasks import QuotaExceeded, insert_task_within_quota, quota_periods, quota_usage
from storage.usage import counted_usage, read_quotas
from storage.writer import BatchWriter
from tests.storage.seed import add_user
from tests.storage.test_quota import NOW, count_tasks, utc

pytestmark = pytest.mark.unit

TASKS = TaskRecord.__table__  # type: ignore[attr-defined]
INSERT_WEBHOOK = TaskWebhook.__table__.insert()  # type: ignore[attr-defined]


def row(user_id: int, task_id: str | None = None, image_count: int = 1, now=NOW) -> dict[str, Any]:
    """Every column of a new record, as the registry hands them to ``insert_task_within_quota``."""
    return dict(
        task_id=task_id or str(uuid.uuid4()),
        user_id=user_id,
        task_type="text_to_image",
        prompt="p",
        negative_prompt=None,
        parameters={"num_inference_steps": 2},
        status="pending",
        result_path=None,
        result_filename=None,
        error_message=None,
        created_at=now,
        started_at=None,
        completed_at=None,
        execution_time=None,
        image_count=image_count,
        seed=1,
        attempts=0,
        input_keys=[],
    )


def create(record: dict[str, Any], daily: int = 100, tz: str = "UTC"):
    """The registry's creation job: the quota check and the record, or the refusal (nothing written)."""

    def job(session) -> Any:
        try:
            insert_task_within_quota(
                session, record, default_daily=daily, default_monthly=1000, now=record["created_at"], tz_name=tz
            )
        except QuotaExceeded as exc:
            return exc
        return record["task_id"]

    return job


async def in_one_batch(writer: BatchWriter, queue_writes) -> list[Any]:
    """Queue the writes ``queue_writes(writer)`` returns while the writer is held, so they form one
    batch; their outcomes (a result or the exception), in order."""
    entered, release = threading.Event(), threading.Event()

    def hold(session) -> None:
        entered.set()
        release.wait(30)

    held = writer.submit(hold)
    await asyncio.to_thread(entered.wait, 30)
    futures = queue_writes(writer)
    release.set()
    await held
    return await asyncio.gather(*futures, return_exceptions=True)


def status_of(engine, task_id: str) -> str:
    with session_scope(engine) as session:
        return session.exec(select(TASKS.c.status).where(TASKS.c.task_id == task_id)).one()[0]


def counters_equal_rows(engine, user_id: int, tz: str = "UTC") -> bool:
    with session_scope(engine) as session:
        counted = counted_usage(session, user_id, NOW, tz)
        return counted == quota_usage(session, user_id, quota_periods(NOW, tz))


def quota_writer(engine, tz: str = "UTC") -> BatchWriter:
    """A writer that reads the quotas of a batch's submissions at once, as the registry's does."""

    def prepare(session, hints) -> None:
        read_quotas(session, [user for user, _ in hints], hints[0][1], tz)

    return BatchWriter(engine, prepare=prepare)


def submit_create(writer: BatchWriter, record: dict[str, Any], daily: int = 100, tz: str = "UTC"):
    return writer.submit(create(record, daily, tz), independent=True, hint=(record["user_id"], record["created_at"]))


@pytest.mark.parametrize("read_at_once", [False, True], ids=["each-check-reads", "quotas-read-for-the-batch"])
def test_quota_checks_in_one_batch_count_the_records_created_before_them_in_it(engine, read_at_once):
    """Records and counters of a batch are written at its end; the checks in it are exact still,
    whether each reads its counters or all of them were read first."""
    me, other = add_user(engine).id, add_user(engine).id
    writer = quota_writer(engine) if read_at_once else BatchWriter(engine)
    records = [row(me, image_count=2) if n % 2 else row(other) for n in range(8)]

    outcomes = asyncio.run(in_one_batch(writer, lambda w: [submit_create(w, r, daily=5) for r in records]))

    mine = [o for r, o in zip(records, outcomes, strict=True) if r["user_id"] == me]
    assert [isinstance(o, QuotaExceeded) for o in mine] == [False, False, True, True]  # 2 + 2, then 6 > 5
    assert mine[2].used == 4
    assert count_tasks(engine, me) == 2 and count_tasks(engine, other) == 4
    assert counters_equal_rows(engine, me) and counters_equal_rows(engine, other)
    assert writer.batches == 2  # the holding job's, then all of these together


def test_held_status_writes_run_in_order_and_before_a_job_that_reads_them(engine):
    me = add_user(engine).id
    writer = BatchWriter(engine)
    first = row(me)
    asyncio.run(in_one_batch(writer, lambda w: [w.submit(create(first), independent=True)]))
    task_id = first["task_id"]
    update = TASKS.update().where(TASKS.c.task_id == task_id)

    def read_status(session) -> str:
        return session.connection().execute(select(TASKS.c.status).where(TASKS.c.task_id == task_id)).scalar()

    outcomes = asyncio.run(
        in_one_batch(
            writer,
            lambda w: [
                w.submit_statement(update, {"status": "running"}),
                w.submit(read_status),  # not independent: the write before it is made first
                w.submit_statement(update, {"status": "completed"}),
            ],
        )
    )
    assert outcomes == [None, "running", None]
    assert status_of(engine, task_id) == "completed"  # the later write of the same shape last


def test_a_webhook_held_back_with_its_record_is_written_after_it(engine):
    """The webhook row refers to the record (a foreign key): held writes keep that order."""
    me = add_user(engine).id
    writer = BatchWriter(engine)
    records = [row(me) for _ in range(3)]

    def with_webhook(record):
        def job(session) -> None:
            create(record)(session)
            webhook = dict(task_id=record["task_id"], url="https://x.test/h", events=["completed"])
            write_later(session, INSERT_WEBHOOK, webhook)

        return job

    outcomes = asyncio.run(
        in_one_batch(writer, lambda w: [w.submit(with_webhook(r), independent=True) for r in records])
    )
    assert outcomes == [None, None, None]
    with session_scope(engine) as session:
        assert len(session.exec(select(TaskWebhook)).all()) == 3


def test_a_held_write_that_fails_fails_alone_and_the_others_of_its_batch_are_stored(engine):
    """A duplicate record fails when the batch's records are written, at its end: the batch is then
    written again one job at a time, and only the duplicate is refused (its usage not counted)."""
    me = add_user(engine).id
    writer = BatchWriter(engine)
    existing = row(me)
    asyncio.run(in_one_batch(writer, lambda w: [w.submit(create(existing), independent=True)]))
    records = [row(me), row(me, task_id=existing["task_id"]), row(me)]

    outcomes = asyncio.run(in_one_batch(writer, lambda w: [w.submit(create(r), independent=True) for r in records]))
    assert outcomes[0] == records[0]["task_id"] and outcomes[2] == records[2]["task_id"]
    assert isinstance(outcomes[1], IntegrityError)
    assert count_tasks(engine, me) == 3
    assert counters_equal_rows(engine, me)


@pytest.mark.parametrize("read_at_once", [False, True], ids=["each-check-reads", "quotas-read-for-the-batch"])
def test_a_rebuild_of_the_counters_within_a_batch_counts_its_held_records_once(engine, read_at_once):
    """A check in another time zone rebuilds the counters from the records: those of the batch held
    back so far are written first, and their held counts dropped (the rebuild has counted them)."""
    me = add_user(engine).id
    writer = quota_writer(engine, tz="UTC") if read_at_once else BatchWriter(engine)
    records = [row(me, now=NOW - timedelta(hours=n)) for n in range(3)]

    outcomes = asyncio.run(
        in_one_batch(
            writer,
            lambda w: [
                submit_create(w, records[0], tz="UTC"),
                submit_create(w, records[1], tz="UTC"),
                submit_create(w, records[2], tz="Asia/Shanghai"),
            ],
        )
    )
    assert outcomes == [r["task_id"] for r in records]
    assert count_tasks(engine, me) == 3
    assert counters_equal_rows(engine, me, tz="Asia/Shanghai")
    with session_scope(engine) as session:
        assert counted_usage(session, me, NOW, "Asia/Shanghai").total_used == 3


def test_a_check_in_another_time_zone_than_the_batch_read_does_not_answer_from_that_read(engine):
    """The batch's quotas were read in UTC; a check in Shanghai on a day of the same date must count
    Shanghai's day (the evening before, in UTC), so it reads again, after a rebuild."""
    me = add_user(engine).id
    writer = quota_writer(engine, tz="UTC")
    evening_before = utc(2024, 6, 14, 20)  # 04:00 on the 15th in Shanghai
    earlier = [row(me, now=evening_before) for _ in range(2)]
    asyncio.run(in_one_batch(writer, lambda w: [submit_create(w, r, tz="UTC") for r in earlier]))
    late_morning = row(me, now=utc(2024, 6, 15, 10))  # the 15th in UTC and in Shanghai

    [outcome] = asyncio.run(
        in_one_batch(writer, lambda w: [submit_create(w, late_morning, daily=2, tz="Asia/Shanghai")])
    )
    assert isinstance(outcome, QuotaExceeded) and outcome.used == 2
    assert count_tasks(engine, me) == 2
