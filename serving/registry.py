"""The task registry: a named async Ray actor, one per application.

It owns live task state (queue order, progress, cancel flags, completion events), dispatches work
to the model deployments through their DeploymentHandles, and is the only writer of task records.
Every status transition is written to the database before it is acknowledged, so a restarted
registry rebuilds itself from the database: pending tasks are dispatched again, tasks that were
running are re-run while retries remain, or failed with a clear reason.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import secrets
import time
import uuid
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any, Optional, Union

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy
from sqlalchemy import bindparam

from auth.account_cache import ACCOUNT_CHANGED
from models.kinds import ModelKind
from models.seeds import resolve_seed
from serving import events as ev
from serving import messages
from serving.fair_share import fair_order
from serving.logs import REGISTRY_LOGGER, registry_events, task_event
from serving.metrics import TaskMetrics
from serving.protocol import (
    FINISHED_STATUSES,
    Accepted,
    AdapterRef,
    AlreadyFinished,
    Cancelled,
    CleanupCounts,
    CreateAnswer,
    Failed,
    Generated,
    GenerationParameters,
    ModelOutcome,
    ModelRequest,
    PendingLimit,
    QueueFull,
    QueueInfo,
    QueueSnapshot,
    QuotaRefused,
    RegistryIdentity,
    ResultLocation,
    Skipped,
    TaskSpec,
    TaskStatusView,
    WaitAnswer,
    WebhookRequest,
    task_status_view,
)
from serving.replica_router import observe_replica
from serving.settings import load_settings
from serving.webhooks import WebhookSender, outbox_rows, webhook_data
from storage import TaskRecord, TaskStatus, init_db, make_engine, open_result_store, session_scope, utcnow
from storage.adapters import adapters_named
from storage.db import DatabaseBusy, write_later
from storage.results import write_zip
from storage.tables import TaskWebhook
from storage.tasks import QuotaExceeded, insert_task_within_quota, old_finished_tasks, unfinished_tasks
from storage.usage import counts_toward_quota, ensure_counters, read_quotas, records_deleted, task_changed
from storage.webhooks import task_webhooks
from storage.writer import BatchWriter

log = logging.getLogger("qwen_image.registry")
# Task events as JSON lines (serving.logs); the actor gives this logger its handler.
events = logging.getLogger(REGISTRY_LOGGER)

# A model replica reports what it holds every REPLICA_REPORT_INTERVAL_S; one not heard from for
# this long is gone (stopped, crashed) and leaves /health's replica list.
REPLICA_REPORT_TTL_S = 60.0

NAMESPACE = "qwen_image"
FINISHED = FINISHED_STATUSES
# A task is dispatched again after a replica crash while it has retries left (``attempts_started``
# counts the runs a replica started, across registry restarts). A request can also be lost before
# any replica started it (it waited on a replica that died), which uses no retry; this many such
# losses are allowed per registry life beyond one dispatch per run, so a request that kills every
# replica before its first step is not re-sent forever.
UNSTARTED_LOSSES_ALLOWED = 2
# A task state the database refused is written again this often until it is stored.
SAVE_RETRY_S = 2.0
# A submission whose record the writer has not begun to write after this long is given up (nothing
# written, the caller told the database is busy): it stays below the ingress's 15 s call timeout
# (serving.registry_client.REGISTRY_CALL_TIMEOUT_S), so no task is created for a client already
# answered 503.
CREATE_DEADLINE_S = 10.0


def registry_name(app_name: str) -> str:
    return f"task-registry:{app_name}"


def code_version() -> str:
    """A digest of the code the registry runs, so a redeploy replaces an old detached actor."""
    digest = hashlib.sha256()
    for package in ("serving", "storage"):
        root = Path(__file__).resolve().parent.parent / package
        for path in sorted(root.glob("*.py")):
            digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def result_filename(task_id: str, count: int) -> str:
    return f"generated_{task_id}.{'png' if count == 1 else 'zip'}"


def result_key(task_id: str, count: int) -> str:
    return f"results/{task_id}/{result_filename(task_id, count)}"


TASKS = TaskRecord.__table__
_UPDATE_TASK = TASKS.update().where(TASKS.c.task_id == bindparam("_task_id"))
_INSERT_WEBHOOK = TaskWebhook.__table__.insert()  # type: ignore[attr-defined]


def _outbox(changes: dict[str, Any]) -> tuple:
    return tuple(changes.get("outbox", ()))


def _write_task_state(session: Any, *, task_id: str, values: dict[str, Any], outbox: tuple) -> None:
    """A status change of one task, on the writer thread: the usage it gives back, the record, and the
    webhook deliveries it causes, in the writer's transaction."""
    task_changed(session, task_id, values)
    # A Core UPDATE built once (the columns set are those of ``values``): the ORM's bulk update costs
    # several times more than the write itself.
    session.connection().execute(_UPDATE_TASK, {**values, "_task_id": task_id})
    if outbox:
        session.add_all(outbox)


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
    steps_per_request: int
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

    @property
    def total_steps(self) -> int:
        return self.steps_per_request * len(self.requests)

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
            total_steps=self.steps_per_request * len(self.requests),
            seed=self.seed,
            position=position,
            now=utcnow(),
        )


class RegistryCore:
    """The registry's logic, independent of Ray so it can be read (and tested) as plain code."""

    def __init__(self, app_name: str, settings_dict: dict, version: str):
        self.app_name = app_name
        self.version = version
        self.settings = load_settings(settings_dict)
        self.engine = make_engine(self.settings.resolved_database_url)
        # Never fail here: a Ray actor whose constructor raises is dead for good, not restarted. With
        # the database away (a registry restarted during an outage) the schema is brought up to date
        # in start(), which exits the process on failure so that Ray starts the actor again.
        try:
            init_db(self.engine)
            self._schema_ready = True
        except Exception as exc:
            log.warning("database not ready while the registry starts (trying again at its start): %r", exc)
            self._schema_ready = False
        self.store = open_result_store(self.settings.result_store_url, self.settings.data_dir)
        # A fresh id per incarnation: replicas still running work for a dead registry are told to stop.
        self.epoch = secrets.token_hex(4)
        self.tasks: dict[str, LiveTask] = {}
        # Kept in step with every status change so queries never scan all tasks.
        self._status_counts: Counter[str] = Counter()
        self._pending: dict[ModelKind, dict[str, None]] = {kind: {} for kind in ModelKind}
        self._pending_by_user: Counter[Optional[int]] = Counter()
        self._running: Counter[ModelKind] = Counter()  # running tasks by kind, for the queue-depth gauges
        # Fair share (serving.fair_share): running tasks by (kind, user), when a user's task last started,
        # and the queue order they give, rebuilt when the queue or the running tasks change.
        self._running_by_user: Counter[tuple[ModelKind, Optional[int]]] = Counter()
        self._last_start: dict[tuple[ModelKind, Optional[int]], int] = {}
        self._starts = itertools.count(1)
        self._order: dict[ModelKind, dict[str, int]] = {}
        self.metrics = TaskMetrics(app_name)
        self._handles: dict[ModelKind, Any] = {}
        self._replicas: dict[str, tuple[float, dict[str, Any]]] = {}  # replica id -> (when, its report)
        self._cleanup_loop: Optional[asyncio.Task] = None
        # Tasks whose last state the database has not taken yet (task id -> extra columns to write).
        self._unsaved: dict[str, dict[str, Any]] = {}
        self._save_retry: Optional[asyncio.Task] = None
        # Every database write of the registry, in order, batched, off the event loop (storage.writer).
        # The quota checks of a batch of submissions read their users' limits and counters at once
        # (one round trip for all of them: storage.usage.read_quotas); the hint is (user, moment).
        self.writer = BatchWriter(
            self.engine,
            name=f"registry-writer:{app_name}",
            prepare=lambda session, hints: read_quotas(
                session, (user for user, _ in hints), hints[0][1], self.settings.quota_timezone
            ),
        )
        # Submissions whose record is being written (task id -> the write): counted toward the queue
        # limits, and a second submission of the same id waits for the first.
        self._creating: dict[str, asyncio.Future] = {}
        self._creating_by_user: Counter[Optional[int]] = Counter()
        # Finished tasks still in memory, oldest first (task id -> when it finished, monotonic): they
        # leave after ``finished_task_memory_seconds`` or beyond ``finished_tasks_in_memory``, and
        # are then answered from their records, so memory follows what is live, not throughput.
        self._finished: OrderedDict[str, float] = OrderedDict()
        self.clock = ev.EventClock()
        self.journal = ev.EventJournal(self.epoch)
        self.webhooks = WebhookSender(self.engine, self.settings)

    # ------------------------------------------------------------------ helpers

    def _handle(self, kind: ModelKind) -> Any:
        if kind not in self._handles:
            from ray import serve

            self._handles[kind] = serve.get_deployment_handle(
                self.settings.deployment_for(kind), app_name=self.app_name
            )
        return self._handles[kind]

    def _persist(self, task: LiveTask, outbox: tuple = (), **extra: Any) -> asyncio.Future:
        """Hand the writer thread the task's current state for its record (status, times, error,
        result): one UPDATE, and in the same transaction the webhook deliveries (``outbox``) the
        change causes and the usage counters it moves. The values are taken now, on the event loop;
        the returned future resolves once they are committed."""
        values = {
            "status": task.status,
            "started_at": task.started_at,
            "completed_at": task.completed_at,
            "error_message": task.error,
            "execution_time": task.execution_time,
            "attempts": task.attempts_started,
            # Every UPDATE sets the same columns, so the writer runs a batch's status changes in one
            # executemany (the result is set once, when the task completes; None before, as stored).
            "result_path": task.result.result_path if task.result else None,
            "result_filename": task.result.result_filename if task.result else None,
            **extra,
        }
        if not outbox and counts_toward_quota(task.status, task.started_at):
            # The usual change (started, completed, back in the queue) moves no usage and reads
            # nothing: a statement write, batched with the others (storage.writer).
            return self.writer.submit_statement(_UPDATE_TASK, {**values, "_task_id": task.task_id})
        return self.writer.submit(partial(_write_task_state, task_id=task.task_id, values=values, outbox=outbox))

    # ------------------------------------------------------------------ events

    def _emit(self, task: LiveTask, event: str, event_id: Optional[int] = None, **data: Any) -> dict:
        """Keep the event as the task's latest of its kind and publish it to the ingresses."""
        record = ev.make_event(event_id or self.clock.next(), event, task.task_id, task.user_id, **data)
        task.events.keep(record)
        self.journal.publish(record)
        return record

    def _emit_queued(self, task: LiveTask) -> None:
        self._emit(task, ev.QUEUED, position=self._position(task))

    def _queue_moved(self, task: LiveTask) -> None:
        """Tell the ingresses that positions in this task's queue changed (they ask only if they care)."""
        self.journal.publish({"event": ev.QUEUE_MOVED, "kind": task.kind.value, "task_id": None, "user_id": None})

    def _webhook_rows(self, task: LiveTask, event: str, moment: datetime, **extra: Any) -> list:
        if task.webhook is None or event not in task.webhook.events:
            return []
        data = webhook_data(
            event,
            task.status,
            task.task_id,
            seed=task.seed,
            error=task.error,
            base_url=self.settings.public_base_url,
            **extra,
        )
        return outbox_rows(task.webhook, event, task_id=task.task_id, user_id=task.user_id, moment=moment, data=data)

    def _save(self, task: LiveTask, **extra: Any) -> asyncio.Future:
        """``_persist``, never raising: a failed write is retried in the background until it is stored,
        so no task is left hanging on a database error (waiters are released by the caller). Returns
        the write (``task.saving``), which resolves when it is stored or has failed."""
        earlier = self._unsaved.pop(task.task_id, {})
        # Webhook deliveries of an earlier unsaved change go out with this one; nothing is dropped.
        pending = {**earlier, **extra, "outbox": _outbox(earlier) + _outbox(extra)}
        try:
            saving = self._persist(task, **pending)
        except Exception as exc:  # not even handed over
            saving = asyncio.get_running_loop().create_future()
            saving.set_exception(exc)
        task.saving = saving
        saving.add_done_callback(partial(self._saved, task, pending))
        return saving

    def _saved(self, task: LiveTask, pending: dict[str, Any], saving: asyncio.Future) -> None:
        """A write of ``task`` ended: on failure its changes wait in ``_unsaved`` for the next try."""
        error = saving.exception() if not saving.cancelled() else asyncio.CancelledError()
        if error is None:
            if pending["outbox"]:
                self.webhooks.wake()
            return
        log.warning("task %s: could not store its state (%r); retrying every %.0f s", task.task_id, error, SAVE_RETRY_S)
        later = self._unsaved.pop(task.task_id, {})
        self._unsaved[task.task_id] = {**pending, **later, "outbox": _outbox(pending) + _outbox(later)}
        if self._save_retry is None or self._save_retry.done():
            self._save_retry = asyncio.get_running_loop().create_task(self._retry_saves())

    async def _retry_saves(self) -> None:
        while self._unsaved:
            await asyncio.sleep(SAVE_RETRY_S)
            writes = []
            for task_id in list(self._unsaved):
                task = self.tasks.get(task_id)
                extra = self._unsaved.pop(task_id)
                if task is not None:
                    writes.append(self._save(task, **extra))
            # A failed one is back in _unsaved (its callback runs first) before the loop looks again;
            # wait, not gather: stopping this loop must not cancel the writes.
            if writes:
                await asyncio.wait(writes)

    @staticmethod
    async def _stored(task: LiveTask) -> None:
        """Returns once the task's latest write has been committed (or has failed: then memory answers)."""
        saving = task.saving
        if saving is not None and not saving.done():
            await asyncio.wait([saving])

    def _track(self, task: LiveTask) -> None:
        self.tasks[task.task_id] = task
        self._status_counts[task.status] += 1
        if task.status == TaskStatus.pending.value:
            self._pending[task.kind][task.task_id] = None
            self._pending_by_user[task.user_id] += 1
        self._running[task.kind] += task.status == TaskStatus.running.value
        self._running_by_user[task.kind, task.user_id] += task.status == TaskStatus.running.value
        self._depth_changed(task.kind)

    def _forget(self, task_id: str) -> None:
        task = self.tasks.get(task_id)
        if task_id in self._unsaved or (task is not None and task.saving is not None and not task.saving.done()):
            return  # its final state is not stored yet: it stays answerable from memory until it is
        task = self.tasks.pop(task_id, None)
        self._finished.pop(task_id, None)
        if task is not None:
            self._status_counts[task.status] -= 1
            self._pending[task.kind].pop(task_id, None)
            if task.status == TaskStatus.pending.value:
                self._pending_by_user[task.user_id] -= 1
            self._running[task.kind] -= task.status == TaskStatus.running.value
            self._running_by_user[task.kind, task.user_id] -= task.status == TaskStatus.running.value
            self._depth_changed(task.kind)

    def _set_status(self, task: LiveTask, status: str) -> None:
        self._status_counts[task.status] -= 1
        self._status_counts[status] += 1
        pending = TaskStatus.pending.value
        self._pending_by_user[task.user_id] += (status == pending) - (task.status == pending)
        self._pending[task.kind].pop(task.task_id, None)
        if status == TaskStatus.pending.value:
            self._pending[task.kind][task.task_id] = None
        started = (status == TaskStatus.running.value) - (task.status == TaskStatus.running.value)
        self._running[task.kind] += started
        self._running_by_user[task.kind, task.user_id] += started
        if started > 0:
            self._last_start[task.kind, task.user_id] = next(self._starts)
        task.status = status
        self._depth_changed(task.kind)

    def _depth_changed(self, kind: ModelKind) -> None:
        self._order.pop(kind, None)  # the queue or the running tasks changed: positions are rebuilt
        self.metrics.depth(kind.value, len(self._pending[kind]), self._running[kind])

    def _event(self, task: LiveTask, event: str, level: int = logging.INFO, **fields: Any) -> None:
        task_event(
            events,
            event,
            task_id=task.task_id,
            user_id=task.user_id,
            kind=task.kind.value,
            level=level,
            attempt=task.attempt,
            **fields,
        )

    def _position(self, task: LiveTask) -> int:
        """1-based place among pending tasks of the same model in the order the fair share will start
        them (serving.fair_share); 0 once running or finished."""
        if task.status != TaskStatus.pending.value:
            return 0
        return self._queue_order(task.kind)[task.task_id]

    def _queue_order(self, kind: ModelKind) -> dict[str, int]:
        """Positions of the pending tasks of ``kind``: the router's rule applied to the running tasks."""
        order = self._order.get(kind)
        if order is None:
            waiting = ((task_id, self.tasks[task_id].user_id) for task_id in self._pending[kind])
            running = {user: n for (k, user), n in self._running_by_user.items() if k == kind and n > 0}
            last = {user: turn for (k, user), turn in self._last_start.items() if k == kind}
            order = self._order[kind] = fair_order(waiting, running, last)
        return order

    def _forget_finished(self) -> None:
        """Finished tasks past their time in memory, or beyond the count kept, leave it (oldest first)."""
        keep = self.settings.finished_tasks_in_memory
        cutoff = time.monotonic() - self.settings.finished_task_memory_seconds
        while self._finished:
            task_id, finished_at = next(iter(self._finished.items()))
            if finished_at > cutoff and len(self._finished) <= keep:
                return
            task = self.tasks.get(task_id)
            if task is not None and (task_id in self._unsaved or (task.saving is not None and not task.saving.done())):
                return  # not stored yet; it leaves with a later pass
            self._finished.pop(task_id)
            self._forget(task_id)

    def _counts(self) -> dict[str, int]:
        counts = {s.value: self._status_counts[s.value] for s in TaskStatus}
        counts["total"] = len(self.tasks)
        return counts

    def _finish(self, task: LiveTask, status: str, error: Optional[str] = None, **extra: Any) -> None:
        self._set_status(task, status)
        task.error = error
        # The terminal event's id is completed_at in microseconds: the same event can be rebuilt
        # from the record, with the same id, once the task has left memory.
        event_id = self.clock.next()
        task.completed_at = ev.from_micros(event_id)
        if task.started_at is not None:
            task.execution_time = round((task.completed_at - task.started_at).total_seconds(), 3)
        generation_seconds = task.result.generation_seconds if task.result else None
        extra_data = {"generation_seconds": generation_seconds} if status == TaskStatus.completed.value else {}
        outbox = self._webhook_rows(task, status, task.completed_at, **extra_data)
        terminal = ev.terminal_event(
            task.task_id,
            task.user_id,
            status,
            task.completed_at,
            seed=task.seed,
            error=error,
            generation_seconds=generation_seconds,
        )

        def release(_saving: Optional[asyncio.Future] = None) -> None:
            # Once the end is stored (or its write failed, and is retried): waiters and event streams
            # learn of it, so whoever hears "completed" finds the record saying so.
            task.events.keep(terminal)
            self.journal.publish(terminal)
            # Pending: it leaves the queue. Running: its user now runs one task fewer, and fair
            # share may move that user's waiting tasks ahead. Either way positions may change.
            self._queue_moved(task)
            task.done.set()
            self._finished[task.task_id] = time.monotonic()
            self._forget_finished()

        try:
            saving = self._save(task, outbox=tuple(outbox), **extra)
        except BaseException:
            release()
            raise
        saving.add_done_callback(release)
        self.metrics.finished(task.kind.value, status)
        self._event(
            task,
            status,
            level=logging.WARNING if status == TaskStatus.failed.value else logging.INFO,
            error=error,
            execution_seconds=task.execution_time,
        )

    # ------------------------------------------------------------------ life cycle

    async def start(self) -> None:
        """Reload unfinished tasks from the database and dispatch them again."""
        if not self._schema_ready:
            await asyncio.to_thread(init_db, self.engine)
            self._schema_ready = True

        def load() -> tuple[list[TaskRecord], dict, dict[str, list[AdapterRef]]]:
            with session_scope(self.engine) as session:
                records = list(unfinished_tasks(session))
                hooks = task_webhooks(session, [r.task_id for r in records])
                adapters = {r.task_id: self._adapters_of(GenerationParameters.from_record(r), session) for r in records}
            return records, hooks, adapters

        records, hooks, adapters = await asyncio.to_thread(load)
        # The usage counters in the quota's time zone now, not at the first submission (a change of
        # QUOTA_TIMEZONE rebuilds them from the records once).
        await self.writer.submit(partial(ensure_counters, zone=self.settings.quota_timezone))
        for record in records:
            task = self._live_from_record(record, adapters[record.task_id])
            hook = hooks.get(record.task_id)
            task.webhook = WebhookRequest(url=hook.url, events=tuple(hook.events)) if hook else None
            self._track(task)
            if task.kind.value not in self.settings.enabled_models:
                # Its model was switched off across the restart: nothing would ever run it.
                self._finish(task, TaskStatus.failed.value, messages.MODEL_DISABLED)
                continue
            if record.status == TaskStatus.running.value:
                if record.attempts > self.settings.task_retries:
                    self._finish(task, TaskStatus.failed.value, messages.INTERRUPTED_BY_RESTART)
                    continue
                self._set_status(task, TaskStatus.pending.value)
                task.started_at = None
                self._emit_queued(task)
                self._dispatch(task)
                self._save(task)
                continue
            self._emit_queued(task)
            self._dispatch(task)
        await self.writer.flush()  # what recovery changed is stored before the registry answers
        if records:
            log.info("registry %s: recovered %d unfinished task(s)", self.epoch, len(records))
        if self.settings.cleanup_interval_seconds > 0:
            self._cleanup_loop = asyncio.create_task(self._periodic_cleanup())
        # Deliveries left pending by an earlier registry go out now.
        self.webhooks.start()

    def _live_from_record(self, record: TaskRecord, adapters: Optional[list[AdapterRef]] = None) -> LiveTask:
        """The live task of a record; ``adapters`` as :meth:`_adapters_of` gives them (read here when
        not given: a database read, so the event loop passes them)."""
        params = GenerationParameters.from_record(record)
        kind = params.kind
        requests = model_requests(
            self.app_name,
            record.task_id,
            kind,
            params.prompt_list,
            params,
            list(record.input_keys),
            record.image_count,
            self._adapters_of(params) if adapters is None else adapters,
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
            steps_per_request=params.num_inference_steps,
            started_at=record.started_at,
            attempts_started=record.attempts,
        )

    async def _periodic_cleanup(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cleanup_interval_seconds)
            try:
                await self.cleanup(self.settings.cleanup_max_age_hours, self.settings.cleanup_max_age_days)
            except Exception:  # keep the loop alive; the next run tries again
                log.exception("periodic clean-up failed")

    # ------------------------------------------------------------------ creation and dispatch

    def _adapters_of(self, params: GenerationParameters, session: Any = None) -> list[AdapterRef]:
        """Where the weights of the task's adapters (``parameters.loras``) are, from the catalogue.
        An adapter deleted since the task was accepted is left out; the replica then fails the task
        saying so rather than running it without. A database read: call it off the event loop (in
        ``session`` when given, else in a session of its own)."""
        named = params.loras or []
        if not named:
            return []
        if session is None:
            with session_scope(self.engine) as own:
                rows = adapters_named(own, [entry.name for entry in named])
        else:
            rows = adapters_named(session, [entry.name for entry in named])
        lora_dir = self.settings.resolved_lora_dir
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

    async def create(self, spec: TaskSpec) -> CreateAnswer:
        """Create a task (idempotent by ``task_id``) and dispatch it; a refusal writes nothing. The
        answer comes once the record is committed (by the writer thread, with other writes)."""
        task_id = spec.task_id
        if task_id in self._creating:  # the same submission again while its record is written: the same answer
            return await asyncio.shield(self._creating[task_id])
        if task_id in self.tasks:
            return self._accepted(self.tasks[task_id])
        # Submissions being written count toward the limits: they are pending once stored.
        if self._status_counts[TaskStatus.pending.value] + len(self._creating) >= self.settings.max_queue_size:
            self.metrics.refused(spec.kind.value, "queue_full")
            return QueueFull(retry_after=10)
        per_user = self.settings.max_pending_per_user
        if per_user and self._pending_by_user[spec.user_id] + self._creating_by_user[spec.user_id] >= per_user:
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
            status=TaskStatus.pending.value,
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
            adapters = self._adapters_of(params, session) if params.loras else []
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
        self._creating_by_user[spec.user_id] += 1
        # Tracked and dispatched once stored even if this caller goes away meanwhile: a stored task
        # must never be left undispatched. A second call for the same task waits for this answer.
        created = self._creating[task_id] = asyncio.ensure_future(
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
            del self._creating[task_id]
            self._creating_by_user[spec.user_id] -= 1
            if not self._creating_by_user[spec.user_id]:
                del self._creating_by_user[spec.user_id]
        if refused is not None:
            self.metrics.refused(spec.kind.value, "quota")
            return QuotaRefused(
                period=refused.period, limit=refused.limit, used=refused.used, resets_at=refused.resets_at.isoformat()
            )
        requests = model_requests(
            self.app_name,
            task_id,
            spec.kind,
            spec.prompts,
            params,
            input_keys,
            spec.image_count,
            adapters,
            user_id=spec.user_id,
        )
        task = LiveTask(
            task_id=task_id,
            user_id=spec.user_id,
            task_type=spec.task_type,
            kind=spec.kind,
            status=TaskStatus.pending.value,
            created_at=now,
            requests=requests,
            image_count=spec.image_count,
            seed=seed,
            steps_per_request=params.num_inference_steps,
            webhook=spec.webhook,
        )
        self._track(task)
        self.metrics.submitted(task.kind.value)
        self._event(task, "queued", position=self._position(task))
        self._emit_queued(task)
        self._dispatch(task)
        return self._accepted(task)

    def _accepted(self, task: LiveTask) -> Accepted:
        counts = self._counts()
        return Accepted(
            task_id=task.task_id,
            status=task.status,
            queue_info=QueueInfo(pending_tasks=counts["pending"], running_tasks=counts["running"]),
        )

    def _dispatch(self, task: LiveTask) -> None:
        task.attempt += 1
        task.progress.clear()
        task.runner = asyncio.create_task(self._run(task, task.attempt))
        self._event(task, "dispatched", requests=len(task.requests))

    async def _run(self, task: LiveTask, attempt: int) -> None:
        """Send the task's requests to its model deployment and record how they end."""
        handle = self._handle(task.kind)
        responses = [
            handle.run.remote(replace(request, epoch=self.epoch, attempt=attempt)) for request in task.requests
        ]
        answers: list[Union[ModelOutcome, BaseException]] = await asyncio.gather(*responses, return_exceptions=True)
        if task.status in FINISHED or attempt != task.attempt:
            return  # cancelled while pending, or superseded
        crashed = [o for o in answers if isinstance(o, BaseException)]
        if crashed:
            self._event(task, "model_request_failed", level=logging.WARNING, error=repr(crashed[0]))
            retries = self.settings.task_retries
            if task.cancel_requested:
                self._finish(task, TaskStatus.cancelled.value)
            elif task.attempts_started <= retries and task.attempt < 1 + retries + UNSTARTED_LOSSES_ALLOWED:
                self._set_status(task, TaskStatus.pending.value)
                task.started_at = None
                task.events.reset_run()
                self._emit_queued(task)
                self._dispatch(task)  # first: a failed write must not leave it pending and never sent
                self._save(task)
            else:
                self._finish(task, TaskStatus.failed.value, messages.REPLICA_CRASHED)
            return
        outcomes = [o for o in answers if not isinstance(o, BaseException)]
        if task.cancel_requested or any(isinstance(o, (Cancelled, Skipped)) for o in outcomes):
            self._finish(task, TaskStatus.cancelled.value)
            return
        errors = [o.error for o in outcomes if isinstance(o, Failed)]
        if errors:
            self._finish(task, TaskStatus.failed.value, errors[0])
            return
        generated = sorted((o for o in outcomes if isinstance(o, Generated)), key=lambda o: o.index)
        keys = [key for o in generated for key in o.keys]
        try:
            key = keys[0] if len(keys) == 1 else await asyncio.to_thread(self._zip_results, task, keys)
        except OSError as exc:
            self._finish(
                task, TaskStatus.failed.value, messages.without_server_paths(f"{messages.RESULT_WRITE_FAILED}: {exc}")
            )
            return
        task.result = ResultLocation(
            result_path=key,
            result_filename=key.rsplit("/", 1)[-1],
            generation_seconds=round(sum(o.seconds for o in generated), 4),
        )
        self._finish(
            task,
            TaskStatus.completed.value,
            result_path=task.result.result_path,
            result_filename=task.result.result_filename,
        )

    def _zip_results(self, task: LiveTask, keys: list[str]) -> str:
        """The batch's PNGs as one ZIP in the store, built piece by piece (storage.results.write_zip)."""
        key = result_key(task.task_id, len(keys))
        write_zip(self.store, key, keys)
        return key

    # ------------------------------------------------------------------ reports from model replicas

    def _current(self, task_id: str, epoch: str, attempt: int) -> Optional[LiveTask]:
        task = self.tasks.get(task_id)
        if task is None or epoch != self.epoch or attempt != task.attempt:
            return None
        return task

    async def mark_running(self, task_id: str, epoch: str, attempt: int) -> bool:
        """A replica is about to start; False tells it to skip (cancelled or stale)."""
        task = self._current(task_id, epoch, attempt)
        if task is None or task.cancel_requested or task.status in FINISHED:
            return False
        if task.status == TaskStatus.pending.value:
            self._set_status(task, TaskStatus.running.value)
            event_id = self.clock.next()
            task.started_at = ev.from_micros(event_id)
            task.attempts_started += 1
            started_at = task.started_at.isoformat()
            self._save(task, outbox=tuple(self._webhook_rows(task, ev.STARTED, task.started_at, started_at=started_at)))
            self._emit(task, ev.STARTED, event_id, started_at=started_at)
            self._queue_moved(task)
            waited = (task.started_at - task.created_at).total_seconds()
            self.metrics.started(task.kind.value, waited)
            self._event(task, "started", wait_seconds=round(waited, 3))
        return True

    async def report_progress(self, task_id: str, epoch: str, attempt: int, index: int, step: int) -> bool:
        """Records progress; returns True when the replica should stop."""
        task = self._current(task_id, epoch, attempt)
        if task is None:
            return True
        task.progress[index] = step
        if task.status == TaskStatus.running.value:
            done, total = sum(task.progress.values()), task.total_steps
            progress = {"step": done, "total": total, "percent": round(100.0 * done / total, 1) if total else 0.0}
            self._emit(task, ev.PROGRESS, **progress)
            self._progress_webhook(task, progress)
        return task.cancel_requested

    def _progress_webhook(self, task: LiveTask, progress: dict) -> None:
        """Progress webhooks, at most one per ``webhook_progress_interval_seconds`` (own transaction:
        progress changes no record)."""
        if task.webhook is None or ev.PROGRESS not in task.webhook.events:
            return
        now = asyncio.get_running_loop().time()
        if now - task.last_progress_webhook < self.settings.webhook_progress_interval_seconds:
            return
        task.last_progress_webhook = now
        rows = self._webhook_rows(task, ev.PROGRESS, utcnow(), **progress)
        written = self.writer.submit(lambda session: session.add_all(rows))
        written.add_done_callback(self._progress_webhook_written)

    def _progress_webhook_written(self, written: asyncio.Future) -> None:
        if written.cancelled() or written.exception() is not None:
            # A progress event is superseded by the next one: no retry, as before (own transaction).
            log.warning("progress webhook rows not stored: %r", None if written.cancelled() else written.exception())
            return
        self.webhooks.wake()

    async def report_preview(self, task_id: str, epoch: str, attempt: int, index: int, preview: dict) -> bool:
        """A replica's preview of the latents ({step, total, width, height, media_type, b64})."""
        task = self._current(task_id, epoch, attempt)
        if task is None or task.status != TaskStatus.running.value:
            return False
        fields = {k: preview[k] for k in ("step", "total", "width", "height", "media_type", "b64")}
        if len(task.requests) > 1:
            fields["index"] = index
        self._emit(task, ev.PREVIEW, **fields)
        return True

    # ------------------------------------------------------------------ event streams

    async def poll_events(
        self, epoch: Optional[str], cursor: Optional[int], timeout: float, previews: bool = True
    ) -> dict:
        """The ingresses' long poll: events after ``cursor`` (see serving.events.EventJournal)."""
        return await self.journal.poll(epoch, cursor, timeout, previews)

    async def accounts_changed(self, user_ids: list[int]) -> None:
        """An ingress changed these accounts: every ingress drops the rows it keeps (auth.account_cache)."""
        self.journal.publish({"event": ACCOUNT_CHANGED, "task_id": None, "user_id": None, "user_ids": list(user_ids)})

    async def task_events(self, task_id: str, after_id: int = 0) -> Optional[dict]:
        """What a stream of one task starts with: the events describing its state after ``after_id``."""
        task = self.tasks.get(task_id)
        if task is None:
            return None
        return {"user_id": task.user_id, "finished": task.status in FINISHED, "events": task.events.retained(after_id)}

    async def user_events(self, user_id: Optional[int], after_id: int = 0) -> list[dict]:
        """What a stream of all of a user's tasks starts with: without ``after_id`` the state of their
        unfinished tasks; with it, everything after it that memory still holds."""
        out: list[dict] = []
        for task in self.tasks.values():
            if task.user_id != user_id or (not after_id and task.status in FINISHED):
                continue
            out.extend(task.events.retained(after_id))
        return sorted(out, key=lambda e: e["id"])

    async def refresh_positions(self, task_ids: list[str]) -> int:
        """New ``queued`` events for those of ``task_ids`` whose queue position changed."""
        orders: dict[ModelKind, dict[str, int]] = {}
        changed = 0
        for task_id in task_ids:
            task = self.tasks.get(task_id)
            if task is None or task.status != TaskStatus.pending.value:
                continue
            if task.kind not in orders:
                orders[task.kind] = self._queue_order(task.kind)
            position = orders[task.kind][task_id]
            last = task.events.latest.get(ev.QUEUED)
            if last is None or last["data"].get("position") != position:
                self._emit(task, ev.QUEUED, position=position)
                changed += 1
        return changed

    # ------------------------------------------------------------------ queries

    async def status(self, task_id: str) -> Optional[TaskStatusView]:
        task = self.tasks.get(task_id)
        if task is None:
            return None
        if task.saving is not None and not task.saving.done():
            await self._stored(task)  # a few milliseconds: the state answered is the state stored
        return task.view(self._position(task))

    async def wait(self, task_id: str, timeout: float) -> Optional[WaitAnswer]:
        """Waits until the task ends or ``timeout`` passes; returns its status either way, and
        where its result is (``result``) so that a sync request need not read the record."""
        task = self.tasks.get(task_id)
        if task is None:
            return None
        try:
            await asyncio.wait_for(task.done.wait(), timeout=max(timeout, 0.0))
        except asyncio.TimeoutError:
            pass
        await self._stored(task)
        return WaitAnswer(status=task.view(self._position(task)), result=task.result)

    async def queue(self) -> QueueSnapshot:
        counts = self._counts()
        return QueueSnapshot(tasks=counts, queue_size=counts["pending"])

    async def ping(self) -> RegistryIdentity:
        return RegistryIdentity(version=self.version, epoch=self.epoch)

    async def report_replica(self, replica_id: str, info: dict[str, Any]) -> None:
        """A model replica says what it holds and how much device memory it uses (every few seconds)."""
        self._replicas[replica_id] = (time.monotonic(), info)
        observe_replica(replica_id, info)  # the routers in this process learn which adapters it holds

    async def replica_info(self) -> dict[str, dict[str, Any]]:
        """The latest report of each model replica heard from in the last ``REPLICA_REPORT_TTL_S``."""
        now = time.monotonic()
        for replica_id in [r for r, (stamp, _) in self._replicas.items() if now - stamp > REPLICA_REPORT_TTL_S]:
            del self._replicas[replica_id]
        return {replica_id: info for replica_id, (_, info) in self._replicas.items()}

    # ------------------------------------------------------------------ cancel and clean-up

    async def cancel(self, task_id: str, grace_seconds: float = 10.0) -> Union[TaskStatusView, AlreadyFinished, None]:
        """Pending: cancelled at once and never started. Running: stopped at the next step."""
        task = self.tasks.get(task_id)
        if task is None:
            return None
        if task.status in FINISHED:
            return AlreadyFinished(status=task.view(0))
        task.cancel_requested = True
        self._event(task, "cancel_requested", status=task.status)
        if task.status == TaskStatus.pending.value:
            self._finish(task, TaskStatus.cancelled.value)
            await self._stored(task)
        else:
            try:
                await asyncio.wait_for(task.done.wait(), timeout=grace_seconds)
            except asyncio.TimeoutError:
                pass
        return task.view(self._position(task))

    async def cleanup(self, max_age_hours: float, max_age_days: float) -> CleanupCounts:
        """Finished tasks older than ``max_age_hours`` leave memory; records older than
        ``max_age_days`` are deleted with their result and input files."""
        now = utcnow()
        memory_cutoff = now - timedelta(hours=max_age_hours)
        forget = [
            t.task_id
            for t in self.tasks.values()
            if t.status in FINISHED and (t.completed_at or t.created_at) < memory_cutoff
        ]
        for task_id in forget:
            self._forget(task_id)
        self._forget_finished()
        deleted = await asyncio.to_thread(self._delete_old_records, now - timedelta(days=max_age_days))
        for task_id in deleted:  # the live state changes here, on the event loop, never in the worker thread
            self._forget(task_id)
        if deleted:  # the ingresses forget the statuses they keep: some are of tasks that are gone
            self.journal.publish({"event": ev.STATUSES_RESET, "task_id": None, "user_id": None})
        return CleanupCounts(memory_cleaned_count=len(forget), db_cleaned_count=len(deleted))

    def _delete_old_records(self, before: datetime) -> list[str]:
        """Deletes finished records older than ``before`` with their files (in a worker thread: it
        touches only the database and the store); returns their task ids."""
        deleted: list[str] = []
        while True:
            with session_scope(self.engine) as session:
                batch = list(old_finished_tasks(session, before))
                records_deleted(session, batch)  # their images leave the usage counters with them
                for record in batch:
                    self.store.delete_prefix(f"results/{record.task_id}")
                    self.store.delete_prefix(f"inputs/{record.task_id}")
                    session.delete(record)
            deleted.extend(record.task_id for record in batch)
            if not batch:
                return deleted


# Between a failed start and the exit that has Ray restart the actor: no hot loop while the
# database stays away.
RESTART_DELAY_S = 1.0


async def start_or_exit(
    core: RegistryCore, exit: Callable[[int], Any] = os._exit, delay_s: float = RESTART_DELAY_S
) -> None:
    """``core.start()``; when it fails, the process exits so Ray restarts the actor from scratch.

    A failed start must not be kept and re-raised to every caller (a 500 on every request until
    someone restarts the registry); a restart retries it with a fresh process, and callers
    meanwhile see the actor as unavailable, which the ingress answers with a retryable 503.
    """
    try:
        await core.start()
    except Exception:
        log.exception("registry %s: start failed; exiting so that Ray restarts it", core.epoch)
        await asyncio.sleep(delay_s)
        exit(1)
        raise


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=10_000)
class TaskRegistry:
    """The Ray actor around :class:`RegistryCore` (methods are async: one event loop)."""

    def __init__(self, app_name: str, settings_dict: dict, version: str):
        logging.basicConfig(level=logging.INFO)
        registry_events(registry_name(app_name))
        self.core = RegistryCore(app_name, settings_dict, version)
        self._started: Optional[asyncio.Task] = None
        # Start (recovery, pending webhook deliveries) as soon as this actor runs, not at the first
        # caller's request: after a crash restart nobody may call for a while. The call is queued
        # until this constructor has returned.
        try:
            ray.get_runtime_context().current_actor.ping.remote()
        except Exception:  # not running as an actor (plain construction): start on first use
            pass

    async def _ready(self) -> RegistryCore:
        if self._started is None:
            self._started = asyncio.create_task(start_or_exit(self.core))
        await self._started
        return self.core

    async def ping(self) -> RegistryIdentity:
        return await (await self._ready()).ping()

    async def report_replica(self, replica_id: str, info: dict[str, Any]) -> None:
        return await (await self._ready()).report_replica(replica_id, info)

    async def replica_info(self) -> dict[str, dict[str, Any]]:
        return await (await self._ready()).replica_info()

    async def create(self, spec: TaskSpec) -> CreateAnswer:
        return await (await self._ready()).create(spec)

    async def mark_running(self, task_id: str, epoch: str, attempt: int) -> bool:
        return await (await self._ready()).mark_running(task_id, epoch, attempt)

    async def report_progress(self, task_id: str, epoch: str, attempt: int, index: int, step: int) -> bool:
        return await (await self._ready()).report_progress(task_id, epoch, attempt, index, step)

    async def status(self, task_id: str) -> Optional[TaskStatusView]:
        return await (await self._ready()).status(task_id)

    async def report_preview(self, task_id: str, epoch: str, attempt: int, index: int, preview: dict) -> bool:
        return await (await self._ready()).report_preview(task_id, epoch, attempt, index, preview)

    async def poll_events(
        self, epoch: Optional[str], cursor: Optional[int], timeout: float, previews: bool = True
    ) -> dict:
        return await (await self._ready()).poll_events(epoch, cursor, timeout, previews)

    async def accounts_changed(self, user_ids: list[int]) -> None:
        return await (await self._ready()).accounts_changed(user_ids)

    async def task_events(self, task_id: str, after_id: int = 0) -> Optional[dict]:
        return await (await self._ready()).task_events(task_id, after_id)

    async def user_events(self, user_id: Optional[int], after_id: int = 0) -> list[dict]:
        return await (await self._ready()).user_events(user_id, after_id)

    async def refresh_positions(self, task_ids: list[str]) -> int:
        return await (await self._ready()).refresh_positions(task_ids)

    async def webhook_lags(self) -> list[float]:
        """Milliseconds from outbox row to delivered, first attempts (for benchmarks)."""
        return list((await self._ready()).webhooks.lags_ms)

    async def wait(self, task_id: str, timeout: float) -> Optional[WaitAnswer]:
        return await (await self._ready()).wait(task_id, timeout)

    async def queue(self) -> QueueSnapshot:
        return await (await self._ready()).queue()

    async def cancel(self, task_id: str) -> Union[TaskStatusView, AlreadyFinished, None]:
        return await (await self._ready()).cancel(task_id)

    async def cleanup(self, max_age_hours: float, max_age_days: float) -> CleanupCounts:
        return await (await self._ready()).cleanup(max_age_hours, max_age_days)


async def get_or_create_registry_async(app_name: str, settings_dict: dict):
    """The application's registry actor, replacing one that runs other code or settings."""
    version = code_version() + hashlib.sha256(repr(sorted(settings_dict.items())).encode()).hexdigest()[:8]
    name = registry_name(app_name)
    # Beside the ingress that creates it (the head node on Kubernetes), never on a GPU node by chance:
    # a registry asks for no resources, so without this Ray may place it anywhere.
    near_caller = NodeAffinitySchedulingStrategy(node_id=ray.get_runtime_context().get_node_id(), soft=True)
    for _ in range(5):
        actor = TaskRegistry.options(
            name=name,
            namespace=NAMESPACE,
            lifetime="detached",
            get_if_exists=True,
            scheduling_strategy=near_caller,
        ).remote(app_name, settings_dict, version)
        try:
            running = (await actor.ping.remote()).version
        except ray.exceptions.RayActorError:
            await asyncio.sleep(0.5)
            continue
        if running == version:
            return actor
        log.info("replacing task registry %s (version %s -> %s)", name, running, version)
        ray.kill(actor, no_restart=True)
        await asyncio.sleep(0.5)
    raise RuntimeError(f"could not start the task registry {name}")


def lookup_registry(app_name: str):
    return ray.get_actor(registry_name(app_name), namespace=NAMESPACE)


def new_task_id() -> str:
    return str(uuid.uuid4())


__all__ = [
    "TaskRegistry",
    "RegistryCore",
    "get_or_create_registry_async",
    "lookup_registry",
    "new_task_id",
    "registry_name",
    "NAMESPACE",
]
