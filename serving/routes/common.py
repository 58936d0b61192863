"""Pieces the task routes share: submission, ownership checks and result responses."""

from __future__ import annotations

import asyncio
import functools
import os
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass
from typing import BinaryIO, Optional, Union

from fastapi import HTTPException, status
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ValidationError
from sqlmodel import Session

from i18n import messages
from models.kinds import ModelKind
from serving.logs import replica_events, task_event
from serving.protocol import (
    Accepted,
    GenerationParameters,
    PendingLimit,
    QueueFull,
    QuotaRefused,
    ResultLocation,
    TaskSpec,
    WebhookRequest,
)
from serving.registry.ids import new_task_id
from serving.state import ServiceState, model_available
from serving.uploads import ValidatedUpload
from storage import TaskRecord, TaskStatus
from storage.tables import User
from storage.tasks import get_task_record

MEDIA_TYPES = {"png": "image/png", "zip": "application/zip"}


class QueueInfoBody(BaseModel):
    pending_tasks: int
    running_tasks: int


class TaskAcceptedBody(BaseModel):
    """The 202 of every generation route (contract § 2.3)."""

    message: str
    task_id: str
    status_url: str
    result_url: str
    queue_info: QueueInfoBody


def _operation(path: str, method: str) -> str:
    """An OpenAPI ``operationRef`` (RFC 6901 pointer, braces percent-encoded)."""
    pointer = path.replace("~", "~0").replace("/", "~1").replace("{", "%7B").replace("}", "%7D")
    return f"#/paths/{pointer}/{method}"


# What a client (or a schema-driven tester) can do next with the ``task_id`` of a 202: OpenAPI links.
TASK_LINKS = {
    name: {
        "operationRef": _operation(path, method),
        "parameters": {"task_id": "$response.body#/task_id"},
        "description": description,
    }
    for name, path, method, description in (
        ("status", "/tasks/{task_id}", "get", "the task's status and progress"),
        ("result", "/tasks/{task_id}/result", "get", "the image(s) once done"),
        ("cancel", "/tasks/{task_id}", "delete", "cancel it"),
        ("record", "/tasks/history/{task_id}", "get", "its full record"),
        ("webhooks", "/tasks/{task_id}/webhooks", "get", "its webhook deliveries"),
    )
}
ACCEPTED_RESPONSE = {"description": "task accepted", "model": TaskAcceptedBody, "links": TASK_LINKS}


def not_found() -> HTTPException:
    return HTTPException(status.HTTP_404_NOT_FOUND, messages.TASK_NOT_FOUND)


async def require_model(state: ServiceState, kind: ModelKind) -> None:
    """503 with the contract's message when the model deployment has no running replica."""
    if kind.value not in state.settings.enabled_models:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, messages.MODEL_NOT_LOADED[kind])
    snapshot = await state.deployment_status()
    if not model_available(snapshot, state.settings.deployment_for(kind)):
        snapshot = await state.deployment_status(max_age=0)
        if not model_available(snapshot, state.settings.deployment_for(kind)):
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, messages.MODEL_NOT_LOADED[kind], headers={"Retry-After": "30"}
            )


def generation_parameters(build: Callable[[], GenerationParameters]) -> GenerationParameters:
    """The parameters ``build`` makes, its validation errors answered like a request's own (400 with
    ``detail`` on the native routes, OpenAI's error body on ``/v1``)."""
    try:
        return build()
    except ValidationError as exc:
        raise RequestValidationError(exc.errors(include_url=False)) from None


async def create_task(
    state: ServiceState,
    user: User,
    *,
    task_type: str,
    parameters: GenerationParameters,
    image_count: int,
    inputs: list[ValidatedUpload],
    async_mode: bool = True,
    webhook: Optional[WebhookRequest] = None,
) -> Accepted:
    """Store the inputs and have the registry create and dispatch the task; raises 503 (model,
    queue) or 429 (quota, pending limit, too many long waits when ``async_mode`` is false).
    ``webhook`` (from serving.webhook_sender.webhook_spec) asks for signed callbacks."""
    kind = parameters.kind
    await require_model(state, kind)
    if not async_mode:
        with state.long_waits.hold(user.id):  # refused before a task exists, not after
            pass
    task_id = new_task_id()
    input_keys = [f"inputs/{task_id}/{i}.{upload.extension}" for i, upload in enumerate(inputs)]
    if inputs:
        await asyncio.to_thread(_store_inputs, state, input_keys, inputs)
    spec = TaskSpec(
        task_id=task_id,
        user_id=user.id,
        task_type=task_type,
        kind=kind,
        parameters=parameters,
        image_count=image_count,
        input_keys=input_keys,
        webhook=webhook,
    )
    try:
        answer = await state.registry.create(spec)
    except BaseException:
        await asyncio.to_thread(state.store.delete_prefix, f"inputs/{task_id}")
        raise
    if not isinstance(answer, Accepted):
        task_event(
            replica_events(),
            "refused",
            task_id=task_id,
            user_id=user.id,
            kind=kind.value,
            reason="quota" if isinstance(answer, QuotaRefused) else "queue_full",
        )
        await asyncio.to_thread(state.store.delete_prefix, f"inputs/{task_id}")
        raise refusal(answer)
    task_event(
        replica_events(),
        "submitted",
        task_id=task_id,
        user_id=user.id,
        kind=kind.value,
        task_type=task_type,
        image_count=image_count,
        async_mode=async_mode,
    )
    return answer


async def submit(
    state: ServiceState,
    user: User,
    *,
    task_type: str,
    parameters: GenerationParameters,
    image_count: int,
    inputs: list[ValidatedUpload],
    async_mode: bool,
    webhook: Optional[WebhookRequest] = None,
) -> Response:
    """Create the task, answer 202 or (``async_mode=False``) wait and answer with the result."""
    answer = await create_task(
        state,
        user,
        task_type=task_type,
        parameters=parameters,
        image_count=image_count,
        inputs=inputs,
        async_mode=async_mode,
        webhook=webhook,
    )
    task_id = answer.task_id
    if async_mode:
        return JSONResponse(
            status_code=status.HTTP_202_ACCEPTED,
            content=TaskAcceptedBody(
                message=messages.TASK_ACCEPTED,
                task_id=task_id,
                status_url=f"/tasks/{task_id}",
                result_url=f"/tasks/{task_id}/result",
                queue_info=QueueInfoBody(**asdict(answer.queue_info)),
            ).model_dump(),
        )
    with state.long_waits.hold(user.id):
        final = await state.registry.wait(task_id, state.settings.sync_timeout_seconds)
    state.task_changed(task_id)
    if final is None:  # forgotten between creation and the wait (a clean-up with max age 0)
        raise not_found()
    return await result_response(
        state, task_id, final.status.status, final.status.error, final.result, final.status.seed
    )


def refusal(answer: Union[QuotaRefused, QueueFull, PendingLimit]) -> HTTPException:
    if isinstance(answer, PendingLimit):
        return HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS,
            messages.TOO_MANY_PENDING.format(limit=answer.limit),
            headers={"Retry-After": str(answer.retry_after)},
        )
    if isinstance(answer, QuotaRefused):
        template = messages.QUOTA_DAILY if answer.period == "daily" else messages.QUOTA_MONTHLY
        return HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, template.format(limit=answer.limit, resets_at=answer.resets_at)
        )
    return HTTPException(
        status.HTTP_503_SERVICE_UNAVAILABLE, messages.QUEUE_FULL, headers={"Retry-After": str(answer.retry_after)}
    )


def _store_inputs(state: ServiceState, keys: list[str], uploads: list[ValidatedUpload]) -> None:
    for key, upload in zip(keys, uploads, strict=True):
        state.store.put(key, upload.data)  # as sent: validated, never larger than the upload limit


def owns(user: User, owner_id: Optional[int]) -> bool:
    return user.is_admin or owner_id == user.id


def owned_record(session: Session, user: User, task_id: str) -> TaskRecord:
    record = get_task_record(session, task_id, None if user.is_admin else user.id)
    if record is None:
        raise not_found()
    return record


@dataclass
class TaskResult:
    """A completed task's result file (one PNG, or a ZIP of PNGs), open for reading."""

    stream: BinaryIO
    filename: str
    seed: Optional[int]
    generation_seconds: Optional[float] = None

    @property
    def media_type(self) -> str:
        return MEDIA_TYPES.get(self.filename.rsplit(".", 1)[-1], "application/octet-stream")

    @functools.cached_property
    def data(self) -> bytes:
        """The whole file, for answers that embed it (base64); blocking, so read it in a thread."""
        with self.stream:
            return self.stream.read()


async def read_result(
    state: ServiceState,
    task_id: str,
    task_status: str,
    error: Optional[str],
    result: Optional[ResultLocation] = None,
    seed: Optional[int] = None,
) -> TaskResult:
    """The result of a completed task; a clear error for failed, cancelled or unfinished ones.

    ``result`` (where the file is) and ``seed`` come from the registry when it just finished the
    task; otherwise the task's record is read.
    """
    if task_status == TaskStatus.failed.value:
        raise HTTPException(
            status.HTTP_500_INTERNAL_SERVER_ERROR,
            messages.TASK_FAILED_BECAUSE(error=messages.recognise(error)) if error else messages.TASK_FAILED,
        )
    if task_status == TaskStatus.cancelled.value:
        raise HTTPException(status.HTTP_409_CONFLICT, messages.TASK_CANCELLED)
    if task_status != TaskStatus.completed.value:
        raise HTTPException(status.HTTP_408_REQUEST_TIMEOUT, messages.WAIT_TIMEOUT)
    if result is None:
        record = await asyncio.to_thread(_load_record, state, task_id)
        if record is None or not record.result_path:
            raise HTTPException(status.HTTP_404_NOT_FOUND, messages.RESULT_MISSING)
        result = ResultLocation(
            result_path=record.result_path,
            result_filename=record.result_filename or record.result_path.rsplit("/", 1)[-1],
        )
        seed = record.seed
    path = result.result_path
    try:
        stream = await asyncio.to_thread(state.store.open, path)
    except FileNotFoundError:
        raise HTTPException(status.HTTP_404_NOT_FOUND, messages.RESULT_MISSING) from None
    return TaskResult(stream, result.result_filename or path.rsplit("/", 1)[-1], seed, result.generation_seconds)


def result_headers(task_id: str, found: TaskResult) -> dict[str, str]:
    """``X-Task-Id``, ``X-Seed`` and (when the registry reported it) ``X-Generation-Seconds``."""
    headers = {"X-Task-Id": task_id, "X-Seed": str(found.seed if found.seed is not None else "")}
    if found.generation_seconds is not None:
        headers["X-Generation-Seconds"] = f"{found.generation_seconds:.4f}"
    return headers


async def result_response(
    state: ServiceState,
    task_id: str,
    task_status: str,
    error: Optional[str],
    result: Optional[ResultLocation] = None,
    seed: Optional[int] = None,
) -> Response:
    """The PNG or ZIP of a completed task, streamed; a clear error for failed or cancelled ones."""
    found = await read_result(state, task_id, task_status, error, result, seed)
    headers = {"Content-Disposition": f'attachment; filename="{found.filename}"', **result_headers(task_id, found)}
    size = _size_of(found.stream)
    if size is not None:
        headers["Content-Length"] = str(size)
    return StreamingResponse(_chunks(found.stream), media_type=found.media_type, headers=headers)


RESULT_CHUNK = 256 * 1024


def _chunks(stream: BinaryIO) -> Iterator[bytes]:
    """The result in pieces (Starlette reads a plain iterator in its thread pool): never whole in memory."""
    with stream:
        while chunk := stream.read(RESULT_CHUNK):
            yield chunk


def _size_of(stream: BinaryIO) -> Optional[int]:
    try:
        return os.fstat(stream.fileno()).st_size
    except (AttributeError, OSError, ValueError):  # not a file: an object store's or memory's stream
        size = getattr(stream, "size", None)
        return size if isinstance(size, int) else None


def _load_record(state: ServiceState, task_id: str) -> Optional[TaskRecord]:
    with Session(state.engine) as session:
        return get_task_record(session, task_id)
