"""Submissions: the queue limits, the record written within the user's quota (with its webhook),
and one answer per task id however often the same submission arrives."""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from datetime import datetime
from typing import Any, Optional

from models.seeds import resolve_seed
from serving.metrics import TaskMetrics
from serving.protocol import (
    Accepted,
    AdapterRef,
    CreateAnswer,
    GenerationParameters,
    PendingLimit,
    QueueFull,
    QueueInfo,
    QuotaRefused,
    TaskSpec,
)
from serving.registry.queue import PENDING, TaskQueue
from serving.registry.task import LiveTask
from serving.settings import Settings
from storage import utcnow
from storage.db import DatabaseBusy, write_later
from storage.tables import TaskWebhook
from storage.tasks import QuotaExceeded, insert_task_within_quota
from storage.writer import BatchWriter

# A submission whose record the writer has not begun to write after this long is given up (nothing
# written, the caller told the database is busy): it stays below the ingress's 15 s call timeout
# (serving.registry_client.REGISTRY_CALL_TIMEOUT_S), so no task is created for a client already
# answered 503.
CREATE_DEADLINE_S = 10.0

_INSERT_WEBHOOK = TaskWebhook.__table__.insert()  # type: ignore[attr-defined]

# The registry's side of a stored submission: (spec, parameters, seed, input keys, created at, adapters)
# -> the live task, tracked and dispatched.
Admit = Callable[[TaskSpec, GenerationParameters, int, list[str], datetime, list[AdapterRef]], LiveTask]
AdaptersOf = Callable[[GenerationParameters, Any], list[AdapterRef]]


def accepted(task: LiveTask, task_queue: TaskQueue) -> Accepted:
    """The answer to a submission of ``task``, with the queue as it is now."""
    counts = task_queue.counts()
    return Accepted(
        task_id=task.task_id,
        status=task.status,
        queue_info=QueueInfo(pending_tasks=counts["pending"], running_tasks=counts["running"]),
    )


class Intake:
    """Creates tasks: refuses what the limits or the quota refuse, writes the rest, then admits them."""

    def __init__(
        self,
        tasks: dict[str, LiveTask],
        task_queue: TaskQueue,
        writer: BatchWriter,
        settings: Settings,
        metrics: TaskMetrics,
        adapters_of: AdaptersOf,
        admit: Admit,
    ):
        self.tasks = tasks  # the registry's live tasks (shared, not copied)
        self.task_queue = task_queue
        self.writer = writer
        self.settings = settings
        self.metrics = metrics
        self.adapters_of = adapters_of
        self.admit = admit
        # Submissions whose record is being written (task id -> the write): counted toward the queue
        # limits, and a second submission of the same id waits for the first.
        self.creating: dict[str, asyncio.Future] = {}
        self.creating_by_user: Counter[Optional[int]] = Counter()

    async def create(self, spec: TaskSpec) -> CreateAnswer:
        """Create a task (idempotent by ``task_id``) and dispatch it; a refusal writes nothing. The
        answer comes once the record is committed (by the writer thread, with other writes)."""
        task_id = spec.task_id
        if task_id in self.creating:  # the same submission again while its record is written: the same answer
            return await asyncio.shield(self.creating[task_id])
        if task_id in self.tasks:
            return accepted(self.tasks[task_id], self.task_queue)
        # Submissions being written count toward the limits: they are pending once stored.
        if self.task_queue.status_counts[PENDING] + len(self.creating) >= self.settings.max_queue_size:
            self.metrics.refused(spec.kind.value, "queue_full")
            return QueueFull(retry_after=10)
        per_user = self.settings.max_pending_per_user
        if per_user and self.task_queue.pending_by_user[spec.user_id] + self.creating_by_user[spec.user_id] >= per_user:
            return PendingLimit(limit=per_user, retry_after=10)
        seed = resolve_seed(spec.parameters.seed)
        params = spec.parameters.model_copy(update={"seed": seed})
        input_keys = list(spec.input_keys)
        now = utcnow()
        row = dict(
            task_id=task_id,
            user_id=spec.user_id,
            task_type=spec.task_type,
            prompt=spec.prompt,
            negative_prompt=params.negative_prompt or None,
            parameters=params.to_record(),
            status=PENDING,
            result_path=None,
            result_filename=None,
            error_message=None,
            created_at=now,
            started_at=None,
            completed_at=None,
            execution_time=None,
            image_count=spec.image_count,
            seed=seed,
            attempts=0,
            input_keys=input_keys,
        )
        settings = self.settings
        # Past this the caller has been answered 503 (its call timed out): the record is then not
        # written at all, rather than created behind the back of a client told it failed.
        deadline = time.monotonic() + CREATE_DEADLINE_S

        def insert(session: Any) -> tuple[Optional[QuotaExceeded], list[AdapterRef]]:
            if time.monotonic() > deadline:
                raise DatabaseBusy(f"task {task_id} was not written within {CREATE_DEADLINE_S} s")
            # The adapters are read in the record's transaction: a failed read writes nothing.
            adapters = self.adapters_of(params, session) if params.loras else []
            try:
                insert_task_within_quota(
                    session,
                    row,
                    default_daily=settings.default_daily_limit,
                    default_monthly=settings.default_monthly_limit,
                    now=now,
                    tz_name=settings.quota_timezone,
                )
            except QuotaExceeded as exc:  # nothing written: the batch goes on
                return exc, adapters
            if spec.webhook is not None:
                # After the record (held back with it in the writer's batch: see storage.db.write_later).
                webhook = dict(task_id=task_id, url=spec.webhook.url, events=list(spec.webhook.events))
                write_later(session, _INSERT_WEBHOOK, webhook)
            return None, adapters

        # Independent: it writes a new record and reads none that a held-back status UPDATE changes.
        written = self.writer.submit(insert, independent=True, hint=(spec.user_id, now))
        self.creating_by_user[spec.user_id] += 1
        # Tracked and dispatched once stored even if this caller goes away meanwhile: a stored task
        # must never be left undispatched. A second call for the same task waits for this answer.
        created = self.creating[task_id] = asyncio.ensure_future(
            self._created(spec, written, params, seed, input_keys, now)
        )
        return await asyncio.shield(created)

    async def _created(
        self,
        spec: TaskSpec,
        written: asyncio.Future,
        params: GenerationParameters,
        seed: int,
        input_keys: list[str],
        now: datetime,
    ) -> CreateAnswer:
        task_id = spec.task_id
        try:
            refused, adapters = await written
        finally:
            del self.creating[task_id]
            self.creating_by_user[spec.user_id] -= 1
            if not self.creating_by_user[spec.user_id]:
                del self.creating_by_user[spec.user_id]
        if refused is not None:
            self.metrics.refused(spec.kind.value, "quota")
            return QuotaRefused(
                period=refused.period, limit=refused.limit, used=refused.used, resets_at=refused.resets_at.isoformat()
            )
        task = self.admit(spec, params, seed, input_keys, now, adapters)
        return accepted(task, self.task_queue)
