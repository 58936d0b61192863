"""Webhook queries: users' signing secrets, the outbox of deliveries and their attempt log."""

from __future__ import annotations

import base64
import secrets
from collections.abc import Sequence
from datetime import datetime
from typing import Optional

from sqlalchemy import update
from sqlmodel import Session, col, func, select

from storage.tables import TaskRecord, TaskWebhook, WebhookAttempt, WebhookDelivery, WebhookSecret, utcnow

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32
PENDING, DELIVERED, FAILED, GONE = "pending", "delivered", "failed", "gone"


def new_secret() -> str:
    """A Standard Webhooks secret: ``whsec_`` and 32 random bytes in base64."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode("ascii")


def get_or_create_secret(session: Session, user_id: int) -> WebhookSecret:
    """The user's secret, made on first use (the caller commits)."""
    row = session.get(WebhookSecret, user_id)
    if row is None:
        row = WebhookSecret(user_id=user_id, secret=new_secret())
        session.add(row)
        session.flush()
    return row


def rotate_secret(session: Session, user_id: int) -> WebhookSecret:
    """Replace the user's secret; deliveries from now on are signed with the new one."""
    row = session.get(WebhookSecret, user_id)
    if row is None:
        row = WebhookSecret(user_id=user_id, secret=new_secret())
    else:
        row.secret, row.created_at = new_secret(), utcnow()
    session.add(row)
    session.flush()
    return row


def secret_for(session: Session, user_id: Optional[int]) -> Optional[str]:
    """The secret to sign with now, creating it when the user has none yet."""
    if user_id is None:
        return None
    return get_or_create_secret(session, user_id).secret


def task_webhooks(session: Session, task_ids: Sequence[str]) -> dict[str, TaskWebhook]:
    if not task_ids:
        return {}
    rows = session.exec(select(TaskWebhook).where(col(TaskWebhook.task_id).in_(list(task_ids)))).all()
    return {row.task_id: row for row in rows}


def due_deliveries(session: Session, now: datetime, limit: int, exclude: Sequence[int] = ()) -> list[WebhookDelivery]:
    """Pending deliveries whose time has come, oldest first, leaving out those in flight."""
    query = (
        select(WebhookDelivery)
        .where(WebhookDelivery.status == PENDING, WebhookDelivery.next_attempt_at <= now)
        .order_by(WebhookDelivery.next_attempt_at, WebhookDelivery.id)
        .limit(limit)
    )
    if exclude:
        query = query.where(col(WebhookDelivery.id).not_in(list(exclude)))
    return list(session.exec(query).all())


def next_due_time(session: Session, exclude: Sequence[int] = ()) -> Optional[datetime]:
    """When the next pending delivery (not in flight) is due; None when there is none."""
    query = select(func.min(WebhookDelivery.next_attempt_at)).where(WebhookDelivery.status == PENDING)
    if exclude:
        query = query.where(col(WebhookDelivery.id).not_in(list(exclude)))
    value = session.exec(query).one()
    if value is not None and value.tzinfo is None:  # an aggregate skips the column's type
        from datetime import timezone

        value = value.replace(tzinfo=timezone.utc)
    return value


def record_attempt(
    session: Session,
    delivery: WebhookDelivery,
    *,
    started_at: datetime,
    duration_ms: float,
    status_code: Optional[int],
    error: Optional[str],
    status: str,
    next_attempt_at: Optional[datetime],
) -> None:
    """Log one attempt and move the delivery on (the caller commits)."""
    attempt = delivery.attempts + 1
    session.add(
        WebhookAttempt(
            delivery_id=delivery.id,
            attempt=attempt,
            started_at=started_at,
            duration_ms=round(duration_ms, 1),
            status_code=status_code,
            error=error[:500] if error else None,
        )
    )
    values = {
        "attempts": attempt,
        "status": status,
        "last_status_code": status_code,
        "last_error": error[:500] if error else None,
    }
    if next_attempt_at is not None:
        values["next_attempt_at"] = next_attempt_at
    if status != PENDING:
        values["finished_at"] = utcnow()
    session.exec(update(WebhookDelivery).where(col(WebhookDelivery.id) == delivery.id).values(**values))


def stop_pending_for(session: Session, task_id: str, url: str, reason: str) -> int:
    """After a 410: the task's other pending deliveries to that URL stop too."""
    result = session.exec(
        update(WebhookDelivery)
        .where(
            col(WebhookDelivery.task_id) == task_id,
            col(WebhookDelivery.url) == url,
            col(WebhookDelivery.status) == PENDING,
        )
        .values(status=GONE, last_error=reason, finished_at=utcnow())
    )
    return int(result.rowcount or 0)


def gone_before(session: Session, task_id: str, url: str) -> bool:
    """Whether the receiver at ``url`` already answered 410 Gone to one of this task's deliveries."""
    return (
        session.exec(
            select(func.count())
            .select_from(WebhookDelivery)
            .where(
                col(WebhookDelivery.task_id) == task_id,
                col(WebhookDelivery.url) == url,
                col(WebhookDelivery.status) == GONE,
            )
        ).one()
        > 0
    )


def delivery_log(session: Session, task_id: str) -> list[dict]:
    """Every delivery of a task with its attempts, oldest first (``GET /tasks/{id}/webhooks``)."""
    deliveries = session.exec(
        select(WebhookDelivery).where(WebhookDelivery.task_id == task_id).order_by(WebhookDelivery.id)
    ).all()
    return _with_attempts(session, deliveries)


def recent_deliveries(session: Session, user_id: int, limit: int) -> list[dict]:
    """The newest ``limit`` deliveries of the user's tasks, newest first, each with its task id and
    attempts (``GET /auth/webhook-deliveries``). Found through the user's tasks (an indexed
    column), so it reads no other user's rows."""
    deliveries = session.exec(
        select(WebhookDelivery)
        .join(TaskRecord, col(TaskRecord.task_id) == col(WebhookDelivery.task_id))
        .where(TaskRecord.user_id == user_id)
        .order_by(col(WebhookDelivery.id).desc())
        .limit(limit)
    ).all()
    return _with_attempts(session, deliveries)


def _with_attempts(session: Session, deliveries: Sequence[WebhookDelivery]) -> list[dict]:
    if not deliveries:
        return []
    attempts = session.exec(
        select(WebhookAttempt)
        .where(col(WebhookAttempt.delivery_id).in_([d.id for d in deliveries]))
        .order_by(WebhookAttempt.delivery_id, WebhookAttempt.attempt)
    ).all()
    by_delivery: dict[int, list[dict]] = {}
    for a in attempts:
        by_delivery.setdefault(a.delivery_id, []).append(
            {
                "attempt": a.attempt,
                "started_at": a.started_at,
                "duration_ms": a.duration_ms,
                "status_code": a.status_code,
                "error": a.error,
            }
        )
    return [
        {
            "task_id": d.task_id,
            "webhook_id": d.webhook_id,
            "event_type": d.event_type,
            "url": d.url,
            "status": d.status,
            "attempt_count": d.attempts,
            "created_at": d.created_at,
            "finished_at": d.finished_at,
            "next_attempt_at": d.next_attempt_at if d.status == PENDING else None,
            "last_status_code": d.last_status_code,
            "last_error": d.last_error,
            "attempts": by_delivery.get(d.id, []) if d.id is not None else [],
        }
        for d in deliveries
    ]


__all__ = [
    "new_secret",
    "get_or_create_secret",
    "rotate_secret",
    "secret_for",
    "task_webhooks",
    "due_deliveries",
    "next_due_time",
    "record_attempt",
    "stop_pending_for",
    "gone_before",
    "delivery_log",
    "recent_deliveries",
    "PENDING",
    "DELIVERED",
    "FAILED",
    "GONE",
    "SECRET_PREFIX",
]
