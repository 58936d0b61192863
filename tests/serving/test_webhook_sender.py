"""The webhook sender against a real local receiver, over real HTTP, on a real SQLite outbox."""

from __future__ import annotations

import asyncio
import random
from datetime import datetime, timedelta, timezone

import pytest
from sqlmodel import Session, select

from serving.protocol import TaskCompleted, TaskEvent, TaskStarted
from serving.settings import load_settings
from serving.webhook_sender import (
    WebhookSender,
    next_delay,
    outbox_row,
    parse_webhook_events,
    retry_after_seconds,
    webhook_body,
    webhook_data,
)
from storage import TaskRecord, User, init_db, make_engine, session_scope, utcnow
from storage.tables import WebhookDelivery
from storage.webhook_outbox import delivery_log, get_or_create_secret, rotate_secret
from tests.webhook_receiver import Receiver


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(f"sqlite:///{tmp_path / 'hooks.db'}")
    init_db(engine)
    return engine


def settings(tmp_path, **extra):
    return load_settings(
        {
            "data_dir": str(tmp_path),
            "webhook_allow_private_networks": True,
            "webhook_retry_schedule": [0.05, 0.05, 0.05],
            "webhook_retry_jitter": 0.0,
            "webhook_timeout_seconds": 1.0,
            **extra,
        }
    )


def make_user_and_task(engine, name: str) -> tuple[int, str, str]:
    with session_scope(engine) as session:
        user = User(username=name, hashed_password="x")
        session.add(user)
        session.flush()
        task = TaskRecord(
            task_id=f"task-{name}", user_id=user.id, task_type="text_to_image", prompt="p", status="completed"
        )
        session.add(task)
        secret = get_or_create_secret(session, user.id).secret
        return user.id, task.task_id, secret


def enqueue(engine, user_id, task_id, url, event="completed") -> WebhookDelivery:
    moment = utcnow()
    payload = (
        TaskCompleted(seed=7, result_url=f"/tasks/{task_id}/result", generation_seconds=1.5)
        if event == "completed"
        else TaskStarted(started_at=moment.isoformat())
    )
    data = webhook_data(TaskEvent(1, event, task_id, user_id, payload), event, seed=7)
    row = outbox_row(task_id=task_id, user_id=user_id, url=url, event=event, moment=moment, data=data)
    with session_scope(engine) as session:
        session.add(row)
    return row


def deliveries(engine, task_id) -> list[dict]:
    with Session(engine) as session:
        return delivery_log(session, task_id)


async def until(condition, timeout=30.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met"
        await asyncio.sleep(0.02)


def run(coro):
    return asyncio.run(coro)


def test_500_twice_then_200_is_delivered_three_times_with_one_id_and_valid_signatures(engine, tmp_path):
    user_id, task_id, secret = make_user_and_task(engine, "alice")
    with Receiver(secret) as receiver:
        receiver.answers["/flaky"] = [500, 500, 200]
        row = enqueue(engine, user_id, task_id, receiver.url("/flaky"))

        async def main():
            sender = WebhookSender(engine, settings(tmp_path))
            sender.start()
            await until(lambda: deliveries(engine, task_id)[0]["status"] == "delivered")
            await sender.close()

        run(main())
        got = receiver.at("/flaky")
    assert [r.webhook_id for r in got] == [row.webhook_id] * 3
    assert all(r.verified for r in got)
    assert len({r.body for r in got}) == 1  # the same bytes every time
    assert got[0].payload == {
        "type": "task.completed",
        "timestamp": got[0].payload["timestamp"],
        "data": {
            "task_id": task_id,
            "status": "completed",
            "seed": 7,
            "result_url": f"/tasks/{task_id}/result",
            "error": None,
            "generation_seconds": 1.5,
        },
    }
    log = deliveries(engine, task_id)[0]
    assert log["attempt_count"] == 3 and [a["status_code"] for a in log["attempts"]] == [500, 500, 200]


def test_410_stops_the_delivery_and_the_tasks_other_pending_ones_to_that_url(engine, tmp_path):
    user_id, task_id, secret = make_user_and_task(engine, "bob")
    with Receiver(secret) as receiver:
        receiver.answers["/gone"] = [410]
        enqueue(engine, user_id, task_id, receiver.url("/gone"), "started")

        async def main():
            sender = WebhookSender(engine, settings(tmp_path, webhook_max_per_user=1))
            sender.start()
            await until(lambda: deliveries(engine, task_id)[0]["status"] == "gone")
            # One more event for that URL after the 410: it is not sent.
            enqueue(engine, user_id, task_id, receiver.url("/gone"), "completed")
            sender.wake()
            await until(lambda: [d["status"] for d in deliveries(engine, task_id)] == ["gone", "gone"])
            await sender.close()

        run(main())
        assert len(receiver.at("/gone")) == 1
    log = deliveries(engine, task_id)
    assert [d["status"] for d in log] == ["gone", "gone"] and log[0]["attempt_count"] == 1


def test_a_row_written_while_the_outbox_is_being_read_is_sent_without_waiting_for_the_idle_timer(engine, tmp_path):
    """The row arrives (and wake() is called) while the sender's read is in flight: the read
    misses it, so only the wake can bring it out before the 30 s idle timer. The pause inside
    the read is a stand-in that makes that interleaving certain."""
    user_id, task_id, secret = make_user_and_task(engine, "carol")
    with Receiver(secret) as receiver:
        receiver.answers["/late"] = [200]

        async def main():
            sender = WebhookSender(engine, settings(tmp_path))
            real = sender._dispatch_due
            reads = 0

            async def dispatch_with_a_row_arriving_mid_read() -> float:
                nonlocal reads
                reads += 1
                wait = await real()  # finds nothing due on the first read
                if reads == 1:
                    enqueue(engine, user_id, task_id, receiver.url("/late"))
                    sender.wake()
                return wait

            sender._dispatch_due = dispatch_with_a_row_arriving_mid_read
            sender.start()
            await until(
                lambda: deliveries(engine, task_id)[:1] and deliveries(engine, task_id)[0]["status"] == "delivered",
                timeout=10.0,
            )
            await sender.close()

        run(main())
        assert len(receiver.at("/late")) == 1


def test_a_hanging_receiver_times_out_and_does_not_hold_other_users_deliveries(engine, tmp_path):
    slow_user, slow_task, slow_secret = make_user_and_task(engine, "slow")
    fast_user, fast_task, _ = make_user_and_task(engine, "fast")
    with Receiver(slow_secret) as receiver:
        receiver.answers["/hang"] = [("hang", 30)]
        for _ in range(3):
            enqueue(engine, slow_user, slow_task, receiver.url("/hang"))

        async def main():
            sender = WebhookSender(
                engine,
                settings(tmp_path, webhook_max_per_user=2, webhook_max_concurrency=3, webhook_retry_schedule=[60]),
            )
            sender.start()
            await until(lambda: len(receiver.at("/hang")) == 2)
            # The slow user's receiver holds two attempts (its cap); another user's goes through.
            enqueue(engine, fast_user, fast_task, receiver.url("/fast"))
            sender.wake()
            await until(lambda: deliveries(engine, fast_task)[0]["status"] == "delivered")
            assert all(d["attempt_count"] == 0 for d in deliveries(engine, slow_task))  # still hanging
            await until(lambda: sum(d["attempt_count"] for d in deliveries(engine, slow_task)) >= 2)
            await sender.close()

        run(main())
    slow = [d for d in deliveries(engine, slow_task) if d["attempt_count"]]
    assert all(d["status"] == "pending" and "timed out" in d["last_error"] for d in slow)  # retried later


def test_closing_the_sender_mid_attempt_records_nothing_and_leaves_the_row_pending(engine, tmp_path):
    user_id, task_id, secret = make_user_and_task(engine, "dana")
    with Receiver(secret) as receiver:
        receiver.answers["/hang"] = [("hang", 30)]
        enqueue(engine, user_id, task_id, receiver.url("/hang"))

        async def main():
            sender = WebhookSender(engine, settings(tmp_path, webhook_timeout_seconds=20.0))
            sender.start()
            await until(lambda: len(receiver.at("/hang")) == 1)  # the attempt is in flight
            await sender.close()
            await asyncio.sleep(1.0)  # time for an attempt that outlived close() to record itself

        run(main())
        receiver.release.set()
    [row] = deliveries(engine, task_id)
    assert row["status"] == "pending" and row["attempt_count"] == 0  # sent again by the next sender


def test_retry_after_is_honoured_and_the_schedule_ends_in_failure(engine, tmp_path):
    user_id, task_id, secret = make_user_and_task(engine, "carol")
    with Receiver(secret) as receiver:
        receiver.answers["/busy"] = [(503, {"Retry-After": "120"})]
        enqueue(engine, user_id, task_id, receiver.url("/busy"))

        async def main():
            sender = WebhookSender(engine, settings(tmp_path))
            sender.start()
            await until(lambda: deliveries(engine, task_id)[0]["attempt_count"] == 1)
            await sender.close()

        run(main())
    log = deliveries(engine, task_id)[0]
    waited = log["next_attempt_at"] - log["attempts"][0]["started_at"]
    assert log["status"] == "pending" and waited >= timedelta(seconds=119)


def test_secret_rotation_signs_later_attempts_with_the_new_secret(engine, tmp_path):
    user_id, task_id, old = make_user_and_task(engine, "dave")
    with session_scope(engine) as session:
        new = rotate_secret(session, user_id).secret
    assert new != old and new.startswith("whsec_")
    with Receiver(new) as receiver:
        enqueue(engine, user_id, task_id, receiver.url("/r"))

        async def main():
            sender = WebhookSender(engine, settings(tmp_path))
            sender.start()
            await until(lambda: deliveries(engine, task_id)[0]["status"] == "delivered")
            await sender.close()

        run(main())
        assert receiver.at("/r")[0].verified


def test_a_url_refused_at_delivery_fails_without_a_request(engine, tmp_path):
    user_id, task_id, _ = make_user_and_task(engine, "erin")
    enqueue(engine, user_id, task_id, "http://127.0.0.1:9/never")

    async def main():
        sender = WebhookSender(engine, settings(tmp_path, webhook_allow_private_networks=False))
        sender.start()
        await until(lambda: deliveries(engine, task_id)[0]["status"] == "failed")
        await sender.close()

    run(main())
    assert "loopback" in deliveries(engine, task_id)[0]["last_error"]


def test_schedule_jitter_and_retry_after_parsing(tmp_path):
    s = settings(
        tmp_path, webhook_retry_schedule=[10, 100], webhook_retry_jitter=0.2, webhook_max_retry_after_seconds=50
    )
    rng = random.Random(1)
    delays = [next_delay(s, 1, None, rng) for _ in range(200)]
    assert 8 <= min(delays) < max(delays) <= 12 and len(set(delays)) > 100
    assert 80 <= next_delay(s, 2, None, rng) <= 120
    assert next_delay(s, 3, None, rng) is None  # 1 + 2 retries: done
    assert next_delay(s, 1, 500.0, rng) == 50  # Retry-After, capped
    now = datetime(2026, 1, 1, tzinfo=timezone.utc)
    assert retry_after_seconds("7") == 7
    assert retry_after_seconds("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30
    assert retry_after_seconds("soon") is None and retry_after_seconds(None) is None


def test_webhook_events_parsing_and_body_shape():
    assert parse_webhook_events(None) == ["completed", "failed", "cancelled"]
    assert parse_webhook_events("started, progress,completed") == ["started", "progress", "completed"]
    assert parse_webhook_events(["failed", "failed"]) == ["failed"]
    with pytest.raises(Exception) as refused:
        parse_webhook_events("queued")
    assert getattr(refused.value, "status_code", None) == 400
    body = webhook_body("completed", datetime(2026, 1, 1, tzinfo=timezone.utc), {"task_id": "t"})
    assert body == '{"type":"task.completed","timestamp":"2026-01-01T00:00:00Z","data":{"task_id":"t"}}'


def test_deleting_a_task_record_deletes_its_deliveries_and_attempts(engine, tmp_path):
    user_id, task_id, secret = make_user_and_task(engine, "frank")
    with Receiver(secret) as receiver:
        enqueue(engine, user_id, task_id, receiver.url("/x"))

        async def main():
            sender = WebhookSender(engine, settings(tmp_path))
            sender.start()
            await until(lambda: deliveries(engine, task_id)[0]["status"] == "delivered")
            await sender.close()

        run(main())
    with session_scope(engine) as session:
        session.delete(session.exec(select(TaskRecord).where(TaskRecord.task_id == task_id)).one())
    assert deliveries(engine, task_id) == []
