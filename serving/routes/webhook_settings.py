"""The webhook signing secret (``GET``/``POST /auth/webhook-secret``), a task's delivery log
(``GET /tasks/{id}/webhooks``) and the caller's recent deliveries (``GET /auth/webhook-deliveries``)."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Annotated, Optional

from fastapi import APIRouter, Query
from pydantic import BaseModel
from sqlmodel import Session

from auth.deps import CurrentUser, FreshUser, LoginUser
from serving.routes.common import owned_record
from serving.state import StateDep
from storage import session_scope
from storage.webhook_outbox import delivery_log, get_or_create_secret, recent_deliveries, rotate_secret

router = APIRouter(tags=["webhooks"])


class WebhookSecretPublic(BaseModel):
    secret: str
    created_at: datetime


class WebhookAttemptPublic(BaseModel):
    attempt: int
    started_at: datetime
    duration_ms: float
    status_code: Optional[int]
    error: Optional[str]


class WebhookDeliveryPublic(BaseModel):
    webhook_id: str
    event_type: str
    url: str
    status: str
    attempt_count: int
    created_at: datetime
    finished_at: Optional[datetime]
    next_attempt_at: Optional[datetime]
    last_status_code: Optional[int]
    last_error: Optional[str]
    attempts: list[WebhookAttemptPublic]


class WebhookDeliveryOfTask(WebhookDeliveryPublic):
    task_id: str


MAX_RECENT_DELIVERIES = 100


class WebhookLog(BaseModel):
    task_id: str
    deliveries: list[WebhookDeliveryPublic]


@router.get("/auth/webhook-secret", response_model=WebhookSecretPublic)
async def read_webhook_secret(user: FreshUser, state: StateDep) -> WebhookSecretPublic:
    """The caller's Standard Webhooks secret (``whsec_…``), made on first read."""

    def read() -> WebhookSecretPublic:
        assert user.id is not None  # a user row read from the database has its id
        with session_scope(state.engine) as session:
            row = get_or_create_secret(session, user.id)
            return WebhookSecretPublic(secret=row.secret, created_at=row.created_at)

    return await asyncio.to_thread(read)


@router.post("/auth/webhook-secret", response_model=WebhookSecretPublic)
async def rotate_webhook_secret(user: LoginUser, state: StateDep) -> WebhookSecretPublic:
    """A new secret; every delivery attempt from now on (retries included) is signed with it."""

    def rotate() -> WebhookSecretPublic:
        assert user.id is not None  # a user row read from the database has its id
        with session_scope(state.engine) as session:
            row = rotate_secret(session, user.id)
            return WebhookSecretPublic(secret=row.secret, created_at=row.created_at)

    return await asyncio.to_thread(rotate)


@router.get("/tasks/{task_id}/webhooks", response_model=WebhookLog)
async def task_webhook_log(task_id: str, user: CurrentUser, state: StateDep) -> WebhookLog:
    """Every webhook delivery of the task: status, attempts with their times and answers."""

    def read() -> WebhookLog:
        with Session(state.engine) as session:
            owned_record(session, user, task_id)  # 404 unless the caller's (or an admin's)
            return WebhookLog(task_id=task_id, deliveries=delivery_log(session, task_id))

    return await asyncio.to_thread(read)


@router.get("/auth/webhook-deliveries", response_model=list[WebhookDeliveryOfTask])
async def recent_webhook_deliveries(
    user: CurrentUser,
    state: StateDep,
    limit: Annotated[int, Query(ge=1, le=MAX_RECENT_DELIVERIES, description="how many, newest first")] = 20,
) -> list[WebhookDeliveryOfTask]:
    """The caller's most recent webhook deliveries over all their tasks, newest first, with their
    attempts: what the account page shows."""

    def read() -> list[WebhookDeliveryOfTask]:
        assert user.id is not None  # a user row read from the database has its id
        with Session(state.engine) as session:
            return [WebhookDeliveryOfTask.model_validate(d) for d in recent_deliveries(session, user.id, limit)]

    return await asyncio.to_thread(read)


__all__ = ["router"]
