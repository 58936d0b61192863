"""Live task endpoints: queue, status, result, cancel, and clean-up (contract § 5.1–5.4, 5.11)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Any, Optional

from fastapi import APIRouter, HTTPException, Query, status
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse, Response
from sqlmodel import Session

from auth.deps import AdminUser, CurrentUser
from serving import messages
from serving.routes.common import not_found, owned_record, owns, result_response
from serving.state import ServiceState, StateDep
from storage import TaskRecord, TaskStatus

router = APIRouter(prefix="/tasks", tags=["tasks"])


def status_from_record(record: TaskRecord) -> dict[str, Any]:
    """``GET /tasks/{id}`` for a task the registry no longer keeps in memory."""
    wait = (record.started_at - record.created_at).total_seconds() if record.started_at else None
    steps = int(record.parameters.get("num_inference_steps", 0)) * len(record.parameters.get("prompts") or [1])
    done = steps if record.status == TaskStatus.completed.value else 0
    return {
        "task_id": record.task_id, "user_id": record.user_id, "task_type": record.task_type,
        "status": record.status, "error": record.error_message, "created_at": record.created_at,
        "started_at": record.started_at, "completed_at": record.completed_at, "position_in_queue": 0,
        "wait_time_seconds": wait, "execution_time_seconds": record.execution_time,
        "progress": {"current_step": done, "total_steps": steps, "percent": 100.0 if done and steps else 0.0},
        "seed": record.seed,
    }


async def task_status(state: ServiceState, user, task_id: str) -> dict[str, Any]:
    """The live status (or the stored one), only for the owner or an admin."""
    live = await state.call_registry("status", task_id)
    if live is not None:
        if not owns(user, live["user_id"]):
            raise not_found()
        return live

    def from_db() -> dict[str, Any]:
        with Session(state.engine) as session:
            return status_from_record(owned_record(session, user, task_id))

    return await asyncio.to_thread(from_db)


@router.get("/queue")
async def queue(user: CurrentUser, state: StateDep) -> dict:
    """Queue and worker state."""
    snapshot, live = await asyncio.gather(state.deployment_status(), state.call_registry("queue"))
    workers = sum(d["running_replicas"] for name, d in snapshot["deployments"].items() if name != "Ingress")
    return {"is_running": True, "gpu_count": snapshot["gpu_count"], "max_workers": workers,
            "queue_size": live["queue_size"], "tasks": live["tasks"]}


@router.get("/{task_id}")
async def get_task(task_id: str, user: CurrentUser, state: StateDep) -> dict:
    """Status, queue position, timings, progress and seed of one task."""
    return await task_status(state, user, task_id)


@router.get("/{task_id}/result", responses={200: {"content": {"image/png": {}, "application/zip": {}}}})
async def get_result(
    task_id: str, user: CurrentUser, state: StateDep,
    wait: bool = False,
    timeout: Annotated[float, Query(gt=0, le=3600)] = 300.0,
) -> Response:
    """The PNG or ZIP; 202 with the status while not done; ``wait=true`` blocks up to ``timeout`` (then 408)."""
    current = await task_status(state, user, task_id)
    if current["status"] in (TaskStatus.pending.value, TaskStatus.running.value):
        if not wait:
            return JSONResponse(status_code=status.HTTP_202_ACCEPTED, content=jsonable_encoder(current))
        current = await state.call_registry("wait", task_id, timeout) or current
    return await result_response(state, task_id, current["status"], current.get("error"), current.get("result"),
                                 current.get("seed"))


@router.delete("/{task_id}")
async def cancel_task(task_id: str, user: CurrentUser, state: StateDep) -> dict:
    """Cancel: a pending task never starts; a running one stops at its next denoising step."""
    current = await task_status(state, user, task_id)
    if current["status"] not in (TaskStatus.pending.value, TaskStatus.running.value):
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.TASK_ALREADY_FINISHED)
    outcome: Optional[dict] = await state.call_registry("cancel", task_id)
    if outcome is None:
        raise not_found()
    if outcome.get("error") == "finished":
        raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.TASK_ALREADY_FINISHED)
    message = messages.TASK_CANCELLED if outcome["status"] == TaskStatus.cancelled.value else "已请求取消，任务将在下一步停止"
    return {"message": message, "task_id": task_id, "status": outcome["status"]}


@router.post("/cleanup")
async def cleanup(
    _: AdminUser, state: StateDep,
    max_age_hours: Annotated[float, Query(ge=0, le=24 * 365)] = 24,
    max_age_days: Annotated[float, Query(ge=0, le=3650)] = 30,
) -> dict:
    """Finished tasks older than ``max_age_hours`` leave memory; records older than ``max_age_days``
    are deleted with their files. Pending and running tasks are never touched."""
    counts = await state.call_registry("cleanup", max_age_hours, max_age_days)
    return {"message": f"已清理 {counts['memory_cleaned_count']} 个内存任务记录，{counts['db_cleaned_count']} 个数据库历史记录",
            **counts}
