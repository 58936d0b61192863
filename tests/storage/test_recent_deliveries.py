"""A user's recent webhook deliveries (``GET /auth/webhook-deliveries``): only their tasks', newest
first, limited, each with its attempts and task id."""

from __future__ import annotations

from datetime import timedelta

import pytest

from storage import session_scope
from storage.tables import WebhookAttempt, WebhookDelivery
from storage.webhook_outbox import recent_deliveries
from tests.storage.seed import T0, add_tasks, add_user, task

pytestmark = pytest.mark.unit


def add_delivery(engine, task_id: str, user_id: int, n: int, attempts: int = 0) -> None:
    with session_scope(engine) as session:
        delivery = WebhookDelivery(
            webhook_id=f"msg_{task_id[:8]}_{n}",
            task_id=task_id,
            user_id=user_id,
            event_type="task.completed",
            url="https://hooks.example.com/qwen",
            body="{}",
            status="delivered" if attempts else "pending",
            attempts=attempts,
            created_at=T0 + timedelta(minutes=n),
            last_status_code=200 if attempts else None,
        )
        session.add(delivery)
        session.flush()
        for attempt in range(1, attempts + 1):
            session.add(
                WebhookAttempt(
                    delivery_id=delivery.id,
                    attempt=attempt,
                    started_at=T0 + timedelta(minutes=n, seconds=attempt),
                    duration_ms=12.5,
                    status_code=500 if attempt < attempts else 200,
                )
            )


def test_recent_deliveries_are_the_users_own_newest_first_and_limited(engine):
    maria, other = add_user(engine), add_user(engine)
    mine = add_tasks(engine, task(maria.id, T0), task(maria.id, T0 + timedelta(hours=1)))
    theirs = add_tasks(engine, task(other.id, T0))
    add_delivery(engine, mine[0].task_id, maria.id, 1, attempts=2)
    add_delivery(engine, theirs[0].task_id, other.id, 2, attempts=1)
    add_delivery(engine, mine[1].task_id, maria.id, 3)
    add_delivery(engine, mine[1].task_id, maria.id, 4, attempts=1)

    with session_scope(engine) as session:
        rows = recent_deliveries(session, maria.id, 10)
        assert [(r["task_id"], r["webhook_id"]) for r in rows] == [
            (mine[1].task_id, f"msg_{mine[1].task_id[:8]}_4"),
            (mine[1].task_id, f"msg_{mine[1].task_id[:8]}_3"),
            (mine[0].task_id, f"msg_{mine[0].task_id[:8]}_1"),
        ]
        oldest = rows[-1]
        assert [(a["attempt"], a["status_code"]) for a in oldest["attempts"]] == [(1, 500), (2, 200)]
        assert rows[1]["attempts"] == [] and rows[1]["next_attempt_at"] is not None  # pending
        assert len(recent_deliveries(session, maria.id, 2)) == 2
        assert [r["task_id"] for r in recent_deliveries(session, other.id, 10)] == [theirs[0].task_id]
