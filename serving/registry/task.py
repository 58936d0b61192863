"""A task as the registry keeps it in memory, and the model requests it is run as."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Optional

from sqlalchemy.engine import Engine

from models.kinds import ModelKind
from serving import event_journal as ev
from serving.protocol import (
    AdapterRef,
    GenerationParameters,
    ModelRequest,
    Progress,
    ResultLocation,
    TaskStatusView,
    WebhookRequest,
    task_status_view,
)
from serving.registry.ids import result_key
from storage import TaskRecord, session_scope, utcnow
from storage.adapters import adapters_named


def model_requests(
    app_name: str,
    task_id: str,
    kind: ModelKind,
    prompts: list[str],
    params: GenerationParameters,
    input_keys: list[str],
    image_count: int,
    adapters: Optional[list[AdapterRef]] = None,
    user_id: Optional[int] = None,
) -> list[ModelRequest]:
    """The model requests of a task: one per prompt (a batch edit has several)."""
    return [
        ModelRequest(
            app_name=app_name,
            task_id=task_id,
            kind=kind,
            index=i,
            prompt=prompt,
            parameters=params,
            input_keys=input_keys,
            output_key=result_key(task_id, 1) if image_count == 1 else None,
            adapters=list(adapters or []),
            user_id=user_id,
        )
        for i, prompt in enumerate(prompts)
    ]


def adapters_of(params: GenerationParameters, engine: Engine, lora_dir: Path, session: Any = None) -> list[AdapterRef]:
    """Where the weights of the task's adapters (``parameters.loras``) are, from the catalogue.
    An adapter deleted since the task was accepted is left out; the replica then fails the task
    saying so rather than running it without. A database read: call it off the event loop (in
    ``session`` when given, else in a session of its own)."""
    named = params.loras or []
    if not named:
        return []
    if session is None:
        with session_scope(engine) as own:
            rows = adapters_named(own, [entry.name for entry in named])
    else:
        rows = adapters_named(session, [entry.name for entry in named])
    refs = []
    for entry in named:
        row = rows.get(entry.name)
        if row is None:
            continue
        if row.source_type == "hub":
            refs.append(AdapterRef(row.name, entry.scale, row.source, row.weight_name))
        else:
            path = lora_dir / row.source
            refs.append(AdapterRef(row.name, entry.scale, str(path.parent), path.name))
    return refs


@dataclass
class LiveTask:
    """What the registry keeps in memory about one task."""

    task_id: str
    user_id: Optional[int]
    task_type: str
    kind: ModelKind  # which model deployment runs it
    status: str
    created_at: datetime
    requests: list[ModelRequest]  # a batch has one per prompt
    image_count: int
    seed: Optional[int]
    total_steps: int  # of all its requests (GenerationParameters.total_steps)
    started_at: Optional[datetime] = None
    completed_at: Optional[datetime] = None
    error: Optional[str] = None
    execution_time: Optional[float] = None
    attempt: int = 0  # dispatch generation; reports from older generations are ignored
    attempts_started: int = 0
    cancel_requested: bool = False
    progress: dict[int, int] = field(default_factory=dict)  # request index → steps done
    done: asyncio.Event = field(default_factory=asyncio.Event)
    runner: Optional[asyncio.Task] = None
    # A completed task's file, and the pipelines' own time as the replicas measured it
    result: Optional[ResultLocation] = None
    events: ev.TaskEventState = field(default_factory=ev.TaskEventState)
    webhook: Optional[WebhookRequest] = None  # where and which events, when the submission asked
    last_progress_webhook: float = 0.0
    # The latest write of this task's state handed to the writer thread, until it is committed:
    # answers about the task wait for it, so nothing is reported that the database does not hold.
    saving: Optional[asyncio.Future] = None

    def progress_now(self) -> Progress:
        """Steps done of the whole task (its requests together) and how many there are."""
        return Progress.of(sum(self.progress.values()), self.total_steps)

    def view(self, position: int) -> TaskStatusView:
        """``GET /tasks/{id}`` of this task (built like the one read from its record)."""
        return task_status_view(
            task_id=self.task_id,
            user_id=self.user_id,
            task_type=self.task_type,
            status=self.status,
            error=self.error,
            created_at=self.created_at,
            started_at=self.started_at,
            completed_at=self.completed_at,
            execution_time=self.execution_time,
            steps_done=sum(self.progress.values()),
            total_steps=self.total_steps,
            seed=self.seed,
            position=position,
            now=utcnow(),
            image_count=self.image_count,
        )


def live_from_record(app_name: str, record: TaskRecord, adapters: list[AdapterRef]) -> LiveTask:
    """The live task of a stored record (a registry recovering, or a test), with its adapters."""
    params = GenerationParameters.from_record(record)
    kind = params.kind
    requests = model_requests(
        app_name,
        record.task_id,
        kind,
        params.prompt_list,
        params,
        list(record.input_keys),
        record.image_count,
        adapters,
        user_id=record.user_id,
    )
    return LiveTask(
        task_id=record.task_id,
        user_id=record.user_id,
        task_type=record.task_type,
        kind=kind,
        status=record.status,
        created_at=record.created_at,
        requests=requests,
        image_count=record.image_count,
        seed=record.seed,
        total_steps=params.total_steps,
        started_at=record.started_at,
        attempts_started=record.attempts,
    )
