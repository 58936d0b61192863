"""The messages that cross process boundaries: ingress → task registry → model replicas, and back.

Every Ray call between the service's processes takes and returns one of these types, so both
sides agree on the fields and mypy checks them. They are plain dataclasses (pickled by Ray), except
:class:`TaskStatusView`, the body of ``GET /tasks/{id}``, a pydantic model that is also the routes'
``response_model``: the registry (a task in memory) and the routes (a task read from the database)
build it through :func:`task_status_view`, so the two answers cannot drift apart.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Optional, Union

from pydantic import BaseModel

from models.kinds import ModelKind
from storage.tables import TaskStatus

FINISHED_STATUSES = frozenset(status.value for status in TaskStatus if status.finished)


# ---------------------------------------------------------------------- ingress → registry


@dataclass(frozen=True)
class WebhookRequest:
    """Where a task's webhooks go and for which events (checked by serving.ssrf at submission)."""

    url: str
    events: tuple[str, ...]


@dataclass(frozen=True)
class TaskSpec:
    """A task as a route submits it (the registry adds the seed and the timestamps)."""

    task_id: str
    user_id: Optional[int]
    task_type: str
    kind: ModelKind
    prompt: str  # what history shows (a batch's prompts joined by " | ")
    prompts: list[str]  # one model request per prompt
    parameters: dict[str, Any]
    image_count: int
    input_keys: list[str] = field(default_factory=list)
    webhook: Optional[WebhookRequest] = None


@dataclass(frozen=True)
class QueueInfo:
    pending_tasks: int
    running_tasks: int


@dataclass(frozen=True)
class Accepted:
    """The task exists (now or already) and is dispatched."""

    task_id: str
    status: str
    queue_info: QueueInfo


@dataclass(frozen=True)
class QuotaRefused:
    """The user's daily or monthly quota has no room for the task; nothing was written."""

    period: str  # "daily" or "monthly"
    limit: int
    used: int
    resets_at: str  # ISO 8601


@dataclass(frozen=True)
class QueueFull:
    """Too many pending tasks; nothing was written."""

    retry_after: int


@dataclass(frozen=True)
class PendingLimit:
    """The user already has ``limit`` tasks waiting; nothing was written."""

    limit: int
    retry_after: int


CreateAnswer = Union[Accepted, QuotaRefused, QueueFull, PendingLimit]


@dataclass(frozen=True)
class AlreadyFinished:
    """A cancel arrived after the task had ended."""

    status: TaskStatusView


@dataclass(frozen=True)
class ResultLocation:
    """Where a completed task's file is, and the pipelines' own time for it."""

    result_path: str
    result_filename: str
    generation_seconds: Optional[float] = None


@dataclass(frozen=True)
class WaitAnswer:
    """A task's status after waiting for it, with its result's location once completed."""

    status: TaskStatusView
    result: Optional[ResultLocation]


@dataclass(frozen=True)
class QueueSnapshot:
    tasks: dict[str, int]  # count per status, plus "total"
    queue_size: int


@dataclass(frozen=True)
class CleanupCounts:
    memory_cleaned_count: int
    db_cleaned_count: int


@dataclass(frozen=True)
class RegistryIdentity:
    version: str  # code and settings the registry runs; a different one is replaced
    epoch: str  # changes with every restart


# ---------------------------------------------------------------------- registry → model replicas


@dataclass(frozen=True)
class AdapterRef:
    """A LoRA adapter a request runs with: its catalogue name and scale, and where its weights are
    (a hub repository id, or a folder under LORA_DIR) with the file in it."""

    name: str
    scale: float
    path: str
    weight_name: Optional[str] = None


@dataclass(frozen=True)
class ModelRequest:
    """One prompt of one task, sent to a replica of the task's model kind."""

    app_name: str
    task_id: str
    kind: ModelKind
    index: int  # which prompt of the task (a batch edit has several)
    prompt: str
    parameters: dict[str, Any]
    input_keys: list[str]
    output_key: Optional[str]  # where a single-image task's PNG goes; None: one key per image
    epoch: str = ""  # the registry incarnation that sent it; set at dispatch
    attempt: int = 0  # the dispatch generation; reports from older ones are ignored
    adapters: list[AdapterRef] = field(default_factory=list)  # parameters["loras"], resolved by the registry
    user_id: Optional[int] = None  # the task's owner, for the replica's log events only

    @property
    def stamp(self) -> tuple[str, str, int]:
        """What identifies this request's reports to the registry."""
        return self.task_id, self.epoch, self.attempt


@dataclass(frozen=True)
class Generated:
    index: int
    keys: list[str]
    seed: int
    seconds: float  # the pipeline's own time


@dataclass(frozen=True)
class Failed:
    index: int
    error: str  # a message a user can act on, no stack trace


@dataclass(frozen=True)
class Cancelled:
    """Stopped at a step because the task was cancelled."""

    index: int


@dataclass(frozen=True)
class Skipped:
    """Never started: the registry said no (cancelled while waiting, or superseded)."""

    index: int


ModelOutcome = Union[Generated, Failed, Cancelled, Skipped]


# ---------------------------------------------------------------------- GET /tasks/{id}


class Progress(BaseModel):
    current_step: int
    total_steps: int
    percent: float


class TaskStatusView(BaseModel):
    """The body of ``GET /tasks/{id}`` (contract § 5.2), whichever process read the task."""

    task_id: str
    user_id: Optional[int]
    task_type: str
    status: str
    error: Optional[str]
    created_at: datetime
    started_at: Optional[datetime]
    completed_at: Optional[datetime]
    position_in_queue: int
    wait_time_seconds: float
    execution_time_seconds: Optional[float]
    progress: Progress
    seed: Optional[int]

    @property
    def finished(self) -> bool:
        return self.status in FINISHED_STATUSES


def task_status_view(
    *,
    task_id: str,
    user_id: Optional[int],
    task_type: str,
    status: str,
    error: Optional[str],
    created_at: datetime,
    started_at: Optional[datetime],
    completed_at: Optional[datetime],
    execution_time: Optional[float],
    steps_done: int,
    total_steps: int,
    seed: Optional[int],
    position: int,
    now: datetime,
) -> TaskStatusView:
    """Build the status of a task from what both the registry and the database know of it.

    ``wait_time_seconds`` is the time the task spent queued: until it started, or until it ended
    without starting (cancelled while pending), or until ``now`` while it still waits.
    ``execution_time_seconds`` grows while it runs. A completed task shows all its steps done; a
    failed or cancelled one shows none, since where it stopped is not kept once it ended.
    """
    finished = status in FINISHED_STATUSES
    left_queue = started_at or (completed_at if finished else None) or now
    wait = round(max((left_queue - created_at).total_seconds(), 0.0), 3)
    execution = execution_time
    if execution is None and started_at is not None and status == TaskStatus.running.value:
        execution = (now - started_at).total_seconds()
    if status == TaskStatus.completed.value:
        done = total_steps
    elif finished:
        done = 0
    else:
        done = steps_done
    return TaskStatusView(
        task_id=task_id,
        user_id=user_id,
        task_type=task_type,
        status=status,
        error=error,
        created_at=created_at,
        started_at=started_at,
        completed_at=completed_at,
        position_in_queue=position if status == TaskStatus.pending.value else 0,
        wait_time_seconds=wait,
        execution_time_seconds=round(execution, 3) if execution is not None else None,
        progress=Progress(
            current_step=done,
            total_steps=total_steps,
            percent=round(100.0 * done / total_steps, 1) if total_steps else 0.0,
        ),
        seed=seed,
    )


def total_steps(parameters: dict[str, Any]) -> int:
    """Denoising steps of a whole task: steps per request times its prompts (a batch has several)."""
    return int(parameters.get("num_inference_steps", 0)) * len(parameters.get("prompts") or [1])
