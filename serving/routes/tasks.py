"""Live task endpoints: queue, status, result, cancel, and clean-up (contract § 5.1–5.4, 5.11)."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Annotated, Optional

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from sqlmodel import Session

from auth.deps import AdminUser, CurrentUser
from i18n import messages
from serving.protocol import AlreadyFinished, GenerationParameters, ResultLocation, TaskStatusView, task_status_view
from serving.routes.common import not_found, owned_record, owns, result_response
from serving.routes.event_streams import hub_for
from serving.state import ServiceState, StateDep
from storage import TaskRecord, TaskStatus, utcnow

router = APIRouter(prefix="/tasks", tags=["tasks"])


def status_from_record(record: TaskRecord) -> TaskStatusView:
    """``GET /tasks/{id}`` for a task the registry no longer keeps in memory."""
    return task_status_view(
        task_id=record.task_id,
        user_id=record.user_id,
        task_type=record.task_type,
        status=record.status,
        error=record.error_message,
        created_at=record.created_at,
        started_at=record.started_at,
        completed_at=record.completed_at,
        execution_time=record.execution_time,
        steps_done=0,
        total_steps=GenerationParameters.from_record(record).total_steps,
        seed=record.seed,
        position=0,
        now=utcnow(),
        image_count=record.image_count,
    )


async def task_status(state: ServiceState, user, task_id: str) -> TaskStatusView:
    """The live status (or the stored one), only for the owner or an admin.

    The owner's reads are answered from this ingress's status cache while it holds the task
    (kept current by the registry's change feed, see serving.status_cache); otherwise the registry
    answers, or the task's record once the registry no longer holds it.
    """
    cache = state.statuses
    token: Optional[int] = None
    if cache is not None:
        if not cache.live:
            hub_for(state).follow()  # the feed starts with the first read (and again after a failure)
        cached = cache.get(task_id, user.id, user.token_key)
        if cached is not None:
            state.metrics.status_read("cache")
            return cached
        token = cache.token()
    live = await state.registry.status(task_id)
    if live is None:

        def from_db() -> TaskStatusView:
            with Session(state.engine) as session:
                return status_from_record(owned_record(session, user, task_id))

        live = await asyncio.to_thread(from_db)
        state.metrics.status_read("record")
    elif not owns(user, live.user_id):
        raise not_found()
    else:
        state.metrics.status_read("registry")
    if cache is not None and live.user_id == user.id:
        cache.put(live, user.token_key, token)
    return live


@router.get("/queue")
async def queue(user: CurrentUser, state: StateDep) -> dict:
    """Queue and worker state."""
    snapshot, live = await asyncio.gather(state.deployment_status(), state.registry.queue())
    workers = sum(d["running_replicas"] for name, d in snapshot["deployments"].items() if name != "Ingress")
    return {
        "is_running": True,
        "gpu_count": snapshot["gpu_count"],
        "max_workers": workers,
        "queue_size": live.queue_size,
        "tasks": live.tasks,
    }


@router.get("/{task_id}", response_model=TaskStatusView)
async def get_task(task_id: str, user: CurrentUser, state: StateDep) -> TaskStatusView:
    """Status, queue position, timings, progress and seed of one task."""
    return await task_status(state, user, task_id)


@router.get("/{task_id}/result", responses={200: {"content": {"image/png": {}, "application/zip": {}}}})
async def get_result(
    task_id: str,
    user: CurrentUser,
    state: StateDep,
    wait: bool = False,
    timeout: Annotated[float, Query(gt=0, le=3600)] = 300.0,
) -> Response:
    """The PNG or ZIP; 202 with the status while not done; ``wait=true`` blocks up to ``timeout`` (then 408)."""
    current = await task_status(state, user, task_id)
    result: Optional[ResultLocation] = None
    if not current.finished:
        if not wait:
            return JSONResponse(status_code=status.HTTP_202_ACCEPTED, content=jsonable_encoder(current.model_dump()))
        with state.long_waits.hold(user.id):
            waited = await state.registry.wait(task_id, timeout)
        state.task_changed(task_id)
        if waited is not None:
            current, result = waited.status, waited.result
        else:  # it ended and left the registry's memory meanwhile: its record says how
            current = await task_status(state, user, task_id)
    elif current.status == TaskStatus.completed.value:
        # The registry still holds a task that ended lately, with its pipelines' time (the record
        # has none): X-Generation-Seconds, as on the answer of a wait.
        kept = await state.registry.wait(task_id, 0)
        result = kept.result if kept is not None else None
    return await result_response(state, task_id, current.status, current.error, result, current.seed)


@router.delete("/{task_id}")
async def cancel_task(task_id: str, user: CurrentUser, state: StateDep) -> dict:
    """Cancel: a pending task never starts; a running one stops at its next denoising step."""
    current = await task_status(state, user, task_id)
    if current.finished:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.TASK_ALREADY_FINISHED)
    outcome = await state.registry.cancel(task_id)
    state.task_changed(task_id)
    if outcome is None:
        raise not_found()
    if isinstance(outcome, AlreadyFinished):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.TASK_ALREADY_FINISHED)
    message = messages.TASK_CANCELLED if outcome.status == TaskStatus.cancelled.value else messages.CANCEL_REQUESTED
    return {"message": message, "task_id": task_id, "status": outcome.status}


@router.post("/cleanup")
async def cleanup(
    _: AdminUser,
    state: StateDep,
    max_age_hours: Annotated[float, Query(ge=0, le=24 * 365)] = 24,
    max_age_days: Annotated[float, Query(ge=0, le=3650)] = 30,
) -> dict:
    """Finished tasks older than ``max_age_hours`` leave memory; records older than ``max_age_days``
    are deleted with their files. Pending and running tasks are never touched."""
    counts = await state.registry.cleanup(max_age_hours, max_age_days)
    return {
        "message": messages.TASKS_CLEANED(memory_count=counts.memory_cleaned_count, db_count=counts.db_cleaned_count),
        **asdict(counts),
    }
