"""The messages that cross process boundaries: ingress → task registry → model replicas, and back.

Every Ray call between the service's processes takes and returns one of these types, so both
sides agree on the fields and mypy checks them. They are plain dataclasses (pickled by Ray), except
:class:`TaskStatusView`, the body of ``GET /tasks/{id}``, a pydantic model that is also the routes'
``response_model``: the registry (a task in memory) and the routes (a task read from the database)
build it through :func:`task_status_view`, so the two answers cannot drift apart.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Annotated, Any, Literal, Optional, Union

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, model_validator

from auth.account_cache import AccountsChanged
from i18n import messages
from models.adapters import MAX_SCALE, MIN_SCALE
from models.derived import extend_canvas, steps_run
from models.kinds import ModelKind, kind_for_task_type
from models.runtime import GenerationRequest
from models.seeds import MAX_SEED
from storage.tables import TaskRecord, TaskStatus

FINISHED_STATUSES = frozenset(status.value for status in TaskStatus if status.finished)


# ---------------------------------------------------------------------- generation parameters

MAX_PROMPT = 2000
MAX_BATCH_PROMPTS = 10


def _without_nul(text: str) -> str:
    # PostgreSQL cannot store NUL in text: refused here rather than failing as a 500 when written.
    if "\x00" in text:
        raise ValueError(messages.REASON_NUL)
    return text


def _not_blank(text: str) -> str:
    text = text.strip()
    if not text:
        raise ValueError(messages.REASON_EMPTY)
    return text


PromptText = Annotated[str, Field(max_length=MAX_PROMPT), AfterValidator(_without_nul), AfterValidator(_not_blank)]
NegativePromptText = Annotated[str, Field(max_length=MAX_PROMPT), AfterValidator(_without_nul)]


class AdapterChoice(BaseModel):
    """A LoRA adapter of the catalogue a task runs with, and its scale (``loras=name:scale``)."""

    model_config = ConfigDict(frozen=True)

    name: str
    scale: float = Field(ge=MIN_SCALE, le=MAX_SCALE)


# Pixels an outpainting adds on one side (the route also caps the whole canvas's pixels).
CanvasSide = Annotated[int, Field(ge=0, le=65536)]


class GenerationParameters(BaseModel):
    """How to generate a task's images: built once by each route from its own request schema,
    carried to the replica in :class:`TaskSpec` and :class:`ModelRequest`, and turned into the
    pipeline's arguments by :meth:`pipeline_request`. A new parameter is a field here.

    Left out, ``num_inference_steps``, ``true_cfg_scale`` and ``guidance_scale`` take the kind
    table's defaults (``models.kinds``). The task record stores :meth:`to_record` (its JSON
    ``parameters``, which history shows) and :meth:`from_record` reads it back. ``kind`` and
    ``prompt`` have columns of their own there and are not among the stored parameters.
    """

    model_config = ConfigDict(frozen=True, extra="ignore")

    kind: ModelKind = Field(exclude=True)
    # What to draw: one prompt, or a batch edit's several (one model request each).
    prompt: Optional[PromptText] = Field(default=None, exclude=True)
    prompts: Optional[list[PromptText]] = Field(default=None, min_length=1, max_length=MAX_BATCH_PROMPTS)
    negative_prompt: NegativePromptText = ""
    num_inference_steps: int = Field(default=None, ge=1, le=100, validate_default=True)
    true_cfg_scale: float = Field(default=None, ge=1.0, le=10.0, validate_default=True)
    guidance_scale: Optional[float] = Field(default=None, ge=1.0, le=10.0)  # the edit pipelines' only
    seed: int = Field(default=-1, ge=-1, le=MAX_SEED)  # -1: the registry draws one before recording
    num_images: int = Field(default=1, ge=1, le=4)
    # Text-to-image: the output size (and the aspect ratio it came from, on the native route).
    aspect_ratio: Optional[str] = None
    width: Optional[int] = Field(default=None, ge=16, le=4096)
    height: Optional[int] = Field(default=None, ge=16, le=4096)
    # Edit: the inputs' sizes, and the output's when one was asked for (else the last input's shape).
    input_count: Optional[int] = Field(default=None, ge=1)
    input_sizes: Optional[list[tuple[int, int]]] = None
    output_size: Optional[tuple[int, int]] = None
    # Image-to-image and inpainting (models.derived): how much of the input is redrawn; whether the
    # last input is the mask (white = repaint); the pixels an outpainting adds (left, top, right,
    # bottom) around the first input.
    strength: Optional[float] = Field(default=None, gt=0.0, le=1.0)
    mask: Optional[bool] = None
    outpaint: Optional[tuple[CanvasSide, CanvasSide, CanvasSide, CanvasSide]] = None
    loras: Optional[list[AdapterChoice]] = None
    speed: Optional[Literal["fast"]] = None  # the Lightning adapter and scheduler, true CFG off
    # RGBA output with a transparent background (the qwen21/tiny21 profiles; others refuse it)
    background: Optional[Literal["transparent"]] = None
    # Full-size pictures of the run decoded by the VAE while it runs (a /v1 stream's partial images).
    partial_images: Optional[int] = Field(default=None, ge=1, le=3)
    # What a /v1 request asked for, kept for history; the pipeline does not read these.
    api: Optional[Literal["openai"]] = None
    model: Optional[str] = None
    size: Optional[str] = None
    quality: Optional[str] = None
    output_format: Optional[str] = None
    response_format: Optional[str] = None
    end_user: Optional[str] = None

    @model_validator(mode="before")
    @classmethod
    def _kind_defaults(cls, data: Any) -> Any:
        if not isinstance(data, dict) or "kind" not in data:
            return data
        spec = ModelKind(data["kind"]).spec
        defaults = {
            "num_inference_steps": spec.default_steps,
            "true_cfg_scale": spec.default_true_cfg_scale,
            "guidance_scale": spec.default_guidance_scale,
        }
        return {**data, **{key: value for key, value in defaults.items() if data.get(key) is None}}

    @model_validator(mode="after")
    def _one_kind_of_prompt(self) -> GenerationParameters:
        if (self.prompt is None) == (self.prompts is None):
            raise ValueError("give either prompt or prompts")
        return self

    @property
    def prompt_list(self) -> list[str]:
        """One model request per prompt."""
        return list(self.prompts) if self.prompts is not None else [str(self.prompt)]

    @property
    def task_prompt(self) -> str:
        """The prompt the task's record and history show (a batch's prompts joined by " | ")."""
        return " | ".join(self.prompts) if self.prompts is not None else str(self.prompt)

    @property
    def total_steps(self) -> int:
        """Denoising steps of the whole task: steps per request times its prompts."""
        return steps_run(self.num_inference_steps, self.strength) * len(self.prompt_list)

    def to_record(self) -> dict[str, Any]:
        """The task record's JSON ``parameters``: the fields that are set."""
        return self.model_dump(mode="json", exclude_none=True)

    @classmethod
    def from_record(cls, record: TaskRecord) -> GenerationParameters:
        """The parameters of a task record (its ``prompt`` column is the prompt, unless its parameters
        list a batch's prompts)."""
        stored = record.parameters
        return cls.model_validate(
            {
                **stored,
                "kind": kind_for_task_type(record.task_type),
                "prompt": None if stored.get("prompts") else record.prompt,
            }
        )

    def pipeline_request(self, prompt: str, images: list[Any], adapters: list[Any]) -> GenerationRequest:
        """The pipeline's arguments for one of the task's prompts, with its decoded input images and
        its adapters (``models.adapters.AdapterUse``, where the registry found their weights)."""
        defaults = GenerationRequest(prompt=prompt)
        images, mask = list(images), None
        if self.mask:
            mask = images.pop().convert("L")
        if self.outpaint is not None:
            canvas, mask = extend_canvas(images[0], *self.outpaint)
            images = [canvas]
        return GenerationRequest(
            prompt=prompt,
            negative_prompt=self.negative_prompt,
            width=self.width or defaults.width,
            height=self.height or defaults.height,
            num_inference_steps=self.num_inference_steps,
            true_cfg_scale=self.true_cfg_scale,
            guidance_scale=self.guidance_scale if self.guidance_scale is not None else defaults.guidance_scale,
            seed=self.seed,
            num_images=self.num_images,
            images=images,
            adapters=adapters,
            fast=self.speed == "fast",
            edit_size=self.output_size,
            strength=self.strength,
            mask=mask,
            transparent=self.background == "transparent",
            partial_images=self.partial_images or 0,
        )


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
    parameters: GenerationParameters
    image_count: int
    input_keys: list[str] = field(default_factory=list)
    webhook: Optional[WebhookRequest] = None

    @property
    def prompt(self) -> str:
        """What history shows (a batch's prompts joined by " | ")."""
        return self.parameters.task_prompt

    @property
    def prompts(self) -> list[str]:
        """One model request per prompt."""
        return self.parameters.prompt_list


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
    parameters: GenerationParameters
    input_keys: list[str]
    output_key: Optional[str]  # where a single-image task's PNG goes; None: one key per image
    epoch: str = ""  # the registry incarnation that sent it; set at dispatch
    attempt: int = 0  # the dispatch generation; reports from older ones are ignored
    adapters: list[AdapterRef] = field(default_factory=list)  # parameters.loras, resolved by the registry
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


# ---------------------------------------------------------------------- task events (registry → ingress)
#
# What the registry publishes and the ingresses read by their long poll (``poll_events``), start a
# stream from (``task_events``/``user_events``), keep their caches current with, stream as SSE and
# what webhooks carry. The builders and the journal are in serving.event_journal.

EventType = Literal["queued", "started", "progress", "preview", "completed", "failed", "cancelled"]


@dataclass(frozen=True)
class TaskQueued:
    position: int


@dataclass(frozen=True)
class TaskStarted:
    started_at: str  # ISO 8601


@dataclass(frozen=True)
class Progress:
    """How far a task is, in the one vocabulary of the status (``progress``), the ``progress`` event
    and its webhook."""

    current_step: int
    total_steps: int
    percent: float

    @classmethod
    def of(cls, done: int, total: int) -> Progress:
        return cls(current_step=done, total_steps=total, percent=round(100.0 * done / total, 1) if total else 0.0)


@dataclass(frozen=True)
class PreviewImage:
    """A small picture of the latents at ``current_step`` (of one request's ``total_steps``);
    ``index`` says which prompt of a batch it is of (None: a single request). ``decoded``: a
    full-size picture decoded by the VAE (a /v1 partial image), which only /v1 streams carry."""

    current_step: int
    total_steps: int
    width: int
    height: int
    media_type: str
    b64: str
    index: Optional[int] = None
    decoded: bool = False


@dataclass(frozen=True)
class TaskCompleted:
    seed: Optional[int]
    result_url: str
    generation_seconds: Optional[float] = None


@dataclass(frozen=True)
class TaskFailed:
    error: Optional[str]


@dataclass(frozen=True)
class TaskCancelled:
    pass


EventData = Union[TaskQueued, TaskStarted, Progress, PreviewImage, TaskCompleted, TaskFailed, TaskCancelled]


@dataclass(frozen=True)
class TaskEvent:
    """One event of one task: ``id`` grows per task (microseconds since the epoch, serving.event_journal),
    ``type`` names it, ``data`` is its payload of that type's class."""

    id: int
    type: EventType
    task_id: str
    user_id: Optional[int]
    data: EventData

    @property
    def terminal(self) -> bool:
        return self.type in ("completed", "failed", "cancelled")

    def payload(self) -> dict[str, Any]:
        """The ``data:`` of the stream's event (and a webhook's fields): ``task_id`` and the payload's."""
        fields = dataclasses.asdict(self.data)
        if isinstance(self.data, PreviewImage):
            if self.data.index is None:
                del fields["index"]
            if not self.data.decoded:
                del fields["decoded"]
        return {"task_id": self.task_id, **fields}


@dataclass(frozen=True)
class QueueMoved:
    """Not a stream's event: positions in this kind's queue changed; the ingresses streaming queued
    tasks ask for new ones (``refresh_positions``)."""

    kind: str


@dataclass(frozen=True)
class StatusesReset:
    """Not a stream's event: records were deleted; the ingresses forget the statuses they keep."""


# What the journal carries: the tasks' events and the notices for the ingresses' caches.
FeedItem = Union[TaskEvent, QueueMoved, StatusesReset, AccountsChanged]


@dataclass(frozen=True)
class EventPoll:
    """The answer to an ingress's long poll: the feed after ``cursor``; ``reset``: the ingress's
    cursor was of another registry incarnation or fell out of the journal (read the state again)."""

    epoch: str
    cursor: int
    events: list[FeedItem]
    reset: bool = False


@dataclass(frozen=True)
class TaskEvents:
    """What a stream of one task starts with: the events that describe its state now."""

    user_id: Optional[int]
    finished: bool
    events: list[TaskEvent]


# ---------------------------------------------------------------------- GET /tasks/{id}


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
    # Beyond the contract: one URL per image of a completed task (``GET /tasks/{id}/images/{n}``).
    image_urls: Optional[list[str]] = None

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
    image_count: int = 0,
) -> TaskStatusView:
    """Build the status of a task from what both the registry and the database know of it.

    ``wait_time_seconds`` is the time the task spent queued: until it started, or until it ended
    without starting (cancelled while pending), or until ``now`` while it still waits.
    ``execution_time_seconds`` grows while it runs. A completed task shows all its steps done; a
    failed or cancelled one shows none, since where it stopped is not kept once it ended.
    A completed task lists the URLs of its ``image_count`` images.
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
        progress=Progress.of(done, total_steps),
        seed=seed,
        image_urls=image_urls(task_id, image_count) if status == TaskStatus.completed.value else None,
    )


def image_urls(task_id: str, image_count: int) -> list[str]:
    """The paths of a completed task's images, numbered from 0 (like ``status_url``, without a route prefix)."""
    return [f"/tasks/{task_id}/images/{n}" for n in range(image_count)]
