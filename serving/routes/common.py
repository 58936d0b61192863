"""Pieces the task routes share: submission, ownership checks and result responses."""

from __future__ import annotations

import asyncio
from dataclasses import asdict
from typing import Any, Optional, Union

from fastapi import HTTPException, status
from fastapi.responses import JSONResponse, Response
from PIL import Image
from sqlmodel import Session

from models.kinds import ModelKind
from serving import messages
from serving.protocol import Accepted, QueueFull, QuotaRefused, ResultLocation, TaskSpec, WebhookRequest
from serving.registry import new_task_id
from serving.state import ServiceState, model_available
from serving.uploads import encode_input
from storage import TaskRecord, TaskStatus
from storage.tables import User
from storage.tasks import get_task_record

MEDIA_TYPES = {"png": "image/png", "zip": "application/zip"}


def not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, messages.TASK_NOT_FOUND)


async def require_model(state: ServiceState, kind: ModelKind) -> None:
    """503 with the contract's message when the model deployment has no running replica."""
    if kind.value not in state.settings.enabled_models:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, kind.spec.not_loaded)
    snapshot = await state.deployment_status()
    if not model_available(snapshot, state.settings.deployment_for(kind)):
        snapshot = await state.deployment_status(max_age=0)
        if not model_available(snapshot, state.settings.deployment_for(kind)):
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, kind.spec.not_loaded,
                                headers={"Retry-After": "30"})


async def submit(
    state: ServiceState, user: User, *, task_type: str, kind: ModelKind, prompt: str, prompts: list[str],
    parameters: dict[str, Any], image_count: int, inputs: list[Image.Image], async_mode: bool,
    webhook: Optional[WebhookRequest] = None,
) -> Response:
    """Store the inputs, have the registry create and dispatch the task, answer 202 or the result.

    ``webhook`` (from serving.webhooks.webhook_spec) asks for signed callbacks."""
    await require_model(state, kind)
    task_id = new_task_id()
    input_keys = [f"inputs/{task_id}/{i}.png" for i in range(len(inputs))]
    if inputs:
        await asyncio.to_thread(_store_inputs, state, input_keys, inputs)
    spec = TaskSpec(task_id=task_id, user_id=user.id, task_type=task_type, kind=kind, prompt=prompt,
                    prompts=prompts, parameters=parameters, image_count=image_count, input_keys=input_keys,
                    webhook=webhook)
    try:
        answer = await state.registry.create(spec)
    except BaseException:
        await asyncio.to_thread(state.store.delete_prefix, f"inputs/{task_id}")
        raise
    if not isinstance(answer, Accepted):
        await asyncio.to_thread(state.store.delete_prefix, f"inputs/{task_id}")
        raise refusal(answer)
    if async_mode:
        return JSONResponse(
            status_code=status.HTTP_202_ACCEPTED,
            content={"message": messages.TASK_ACCEPTED, "task_id": task_id, "status_url": f"/tasks/{task_id}",
                     "result_url": f"/tasks/{task_id}/result", "queue_info": asdict(answer.queue_info)},
        )
    final = await state.registry.wait(task_id, state.settings.sync_timeout_seconds)
    if final is None:  # forgotten between creation and the wait (a clean-up with max age 0)
        raise not_found()
    return await result_response(state, task_id, final.status.status, final.status.error, final.result,
                                 final.status.seed)


def refusal(answer: Union[QuotaRefused, QueueFull]) -> HTTPException:
    if isinstance(answer, QuotaRefused):
        template = messages.QUOTA_DAILY if answer.period == "daily" else messages.QUOTA_MONTHLY
        return HTTPException(status.HTTP_429_TOO_MANY_REQUESTS,
                             template.format(limit=answer.limit, resets_at=answer.resets_at))
    return HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, messages.QUEUE_FULL,
                         headers={"Retry-After": str(answer.retry_after)})


def _store_inputs(state: ServiceState, keys: list[str], images: list[Image.Image]) -> None:
    for key, image in zip(keys, images):
        state.store.put(key, encode_input(image))


def owns(user: User, owner_id: Optional[int]) -> bool:
    return user.is_admin or owner_id == user.id


def owned_record(session: Session, user: User, task_id: str) -> TaskRecord:
    record = get_task_record(session, task_id, None if user.is_admin else user.id)
    if record is None:
        raise not_found()
    return record


async def result_response(state: ServiceState, task_id: str, task_status: str, error: Optional[str],
                          result: Optional[ResultLocation] = None, seed: Optional[int] = None) -> Response:
    """The PNG or ZIP of a completed task; a clear error for failed or cancelled ones.

    ``result`` (where the file is) and ``seed`` come from the registry when it just finished the
    task; otherwise the task's record is read.
    """
    if task_status == TaskStatus.failed.value:
        raise HTTPException(status.HTTP_500_INTERNAL_SERVER_ERROR,
                            messages.TASK_FAILED_BECAUSE(error=messages.recognise(error)) if error
                            else messages.TASK_FAILED)
    if task_status == TaskStatus.cancelled.value:
        raise HTTPException(status.HTTP_409_CONFLICT, messages.TASK_CANCELLED)
    if task_status != TaskStatus.completed.value:
        raise HTTPException(status.HTTP_408_REQUEST_TIMEOUT, messages.WAIT_TIMEOUT)
    if result is None:
        record = await asyncio.to_thread(_load_record, state, task_id)
        if record is None or not record.result_path:
            raise HTTPException(status.HTTP_404_NOT_FOUND, messages.RESULT_MISSING)
        result = ResultLocation(result_path=record.result_path,
                                result_filename=record.result_filename or record.result_path.rsplit("/", 1)[-1])
        seed = record.seed
    path = result.result_path
    try:
        data = await asyncio.to_thread(state.store.get, path)
    except FileNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, messages.RESULT_MISSING) from None
    filename = result.result_filename or path.rsplit("/", 1)[-1]
    media_type = MEDIA_TYPES.get(filename.rsplit(".", 1)[-1], "application/octet-stream")
    headers = {"Content-Disposition": f'attachment; filename="{filename}"', "X-Task-Id": task_id,
               "X-Seed": str(seed if seed is not None else "")}
    if result.generation_seconds is not None:
        headers["X-Generation-Seconds"] = f"{result.generation_seconds:.4f}"
    return Response(data, media_type=media_type, headers=headers)


def _load_record(state: ServiceState, task_id: str) -> Optional[TaskRecord]:
    with Session(state.engine) as session:
        return get_task_record(session, task_id)
