"""The registry's logic, independent of Ray so it can be read (and tested) as plain code.

It owns live task state (queue order, progress, cancel flags, completion events), dispatches work
to the model deployments through their DeploymentHandles, and is the only writer of task records.
Every status transition is written to the database before it is acknowledged, so a restarted
registry rebuilds itself from the database: pending tasks are dispatched again, tasks that were
running are re-run while retries remain, or failed with a clear reason.

:class:`RegistryCore` is the task life cycle; the queue's counts and order (:mod:`.queue`), the
writes (:mod:`.saver`), the events (:mod:`.feed`), what memory keeps (:mod:`.retention`) and the
replicas' reports (:mod:`.replicas`) are its collaborators.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
from dataclasses import replace
from datetime import datetime, timedelta
from functools import partial
from typing import Any, Optional, Union

from i18n import messages
from models.kinds import ModelKind
from serving import event_journal as ev
from serving.logs import REGISTRY_LOGGER, task_event
from serving.metrics import TaskMetrics
from serving.protocol import (
    FINISHED_STATUSES,
    AdapterRef,
    AlreadyFinished,
    Cancelled,
    CleanupCounts,
    CreateAnswer,
    EventPoll,
    Failed,
    Generated,
    GenerationParameters,
    ModelOutcome,
    PreviewImage,
    QueueSnapshot,
    RegistryIdentity,
    ResultLocation,
    Skipped,
    TaskEvent,
    TaskEvents,
    TaskQueued,
    TaskSpec,
    TaskStarted,
    TaskStatusView,
    WaitAnswer,
    WebhookRequest,
)
from serving.registry.feed import TaskFeed
from serving.registry.ids import result_key
from serving.registry.intake import Intake
from serving.registry.interface import RegistryService
from serving.registry.queue import TaskQueue
from serving.registry.replicas import ReplicaBoard
from serving.registry.retention import Retention
from serving.registry.saver import TaskSaver
from serving.registry.task import LiveTask, adapters_of, live_from_record, model_requests
from serving.settings import load_settings
from serving.webhook_sender import WebhookSender
from storage import TaskRecord, TaskStatus, init_db, make_engine, open_result_store, session_scope, utcnow
from storage.results import write_zip
from storage.tasks import unfinished_tasks
from storage.usage import ensure_counters, read_quotas
from storage.webhook_outbox import task_webhooks
from storage.writer import BatchWriter

log = logging.getLogger("qwen_image.registry")
# Task events as JSON lines (serving.logs); the actor gives this logger its handler.
events = logging.getLogger(REGISTRY_LOGGER)

FINISHED = FINISHED_STATUSES
PENDING, RUNNING = TaskStatus.pending.value, TaskStatus.running.value
# A task is dispatched again after a replica crash while it has retries left (``attempts_started``
# counts the runs a replica started, across registry restarts). A request can also be lost before
# any replica started it (it waited on a replica that died), which uses no retry; this many such
# losses are allowed per registry life beyond one dispatch per run, so a request that kills every
# replica before its first step is not re-sent forever.
UNSTARTED_LOSSES_ALLOWED = 2


class RegistryCore:
    """The task life cycle: creation, dispatch, the replicas' reports, cancel, recovery, clean-up."""

    def __init__(self, app_name: str, settings_dict: dict, version: str):
        self.app_name = app_name
        self.version = version
        self.settings = load_settings(settings_dict)
        # The SQLite file's folder may not exist yet: the registry can start before any ingress or
        # model replica has made it, and a constructor that raises is not restarted (below).
        self.settings.data_dir.mkdir(parents=True, exist_ok=True)
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
        self.metrics = TaskMetrics(app_name)
        self.task_queue = TaskQueue(self.tasks, self.metrics)
        self._handles: dict[ModelKind, Any] = {}
        self.replicas = ReplicaBoard()
        self._cleanup_loop: Optional[asyncio.Task] = None
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
        self.webhooks = WebhookSender(self.engine, self.settings)
        self.saver = TaskSaver(self.tasks, self.writer, self.webhooks)
        self.feed = TaskFeed(self.epoch, self.tasks, self.settings, self.writer, self.webhooks)
        self.journal = self.feed.journal
        self.intake = Intake(
            self.tasks, self.task_queue, self.writer, self.settings, self.metrics, self._adapters_of, self._admit
        )
        self.retention = Retention(self.tasks, self.task_queue, self.saver, self.settings, self.engine, self.store)

    # ------------------------------------------------------------------ helpers

    def _handle(self, kind: ModelKind) -> Any:
        if kind not in self._handles:
            from ray import serve

            self._handles[kind] = serve.get_deployment_handle(
                self.settings.deployment_for(kind), app_name=self.app_name
            )
        return self._handles[kind]

    def _track(self, task: LiveTask) -> None:
        self.tasks[task.task_id] = task
        self.task_queue.track(task)

    def _position(self, task: LiveTask) -> int:
        return self.task_queue.position(task)

    def _emit_queued(self, task: LiveTask) -> None:
        self.feed.queued(task, self._position(task))

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

    def _adapters_of(self, params: GenerationParameters, session: Any = None) -> list[AdapterRef]:
        return adapters_of(params, self.engine, self.settings.resolved_lora_dir, session)

    def _live_from_record(self, record: TaskRecord, adapters: Optional[list[AdapterRef]] = None) -> LiveTask:
        """The live task of a record; ``adapters`` as :func:`.task.adapters_of` gives them (read here
        when not given: a database read, so the event loop passes them)."""
        return live_from_record(
            self.app_name,
            record,
            self._adapters_of(GenerationParameters.from_record(record)) if adapters is None else adapters,
        )

    def _finish(self, task: LiveTask, status: str, error: Optional[str] = None, **extra: Any) -> None:
        self.task_queue.set_status(task, status)
        task.error = error
        # The terminal event's id is completed_at in microseconds: the same event can be rebuilt
        # from the record, with the same id, once the task has left memory.
        event_id = self.feed.clock.next()
        task.completed_at = ev.from_micros(event_id)
        if task.started_at is not None:
            task.execution_time = round((task.completed_at - task.started_at).total_seconds(), 3)
        terminal = ev.terminal_event(
            task.task_id,
            task.user_id,
            status,
            task.completed_at,
            seed=task.seed,
            error=error,
            generation_seconds=task.result.generation_seconds if task.result else None,
        )
        outbox = self.feed.webhook_rows(task, terminal, task.completed_at)

        def release(_saving: Optional[asyncio.Future] = None) -> None:
            # Once the end is stored (or its write failed, and is retried): waiters and event streams
            # learn of it, so whoever hears "completed" finds the record saying so.
            self.feed.publish(task, terminal)
            # Pending: it leaves the queue. Running: its user now runs one task fewer, and fair
            # share may move that user's waiting tasks ahead. Either way positions may change.
            self.feed.queue_moved(task)
            task.done.set()
            self.retention.finished_now(task.task_id)

        try:
            saving = self.saver.save(task, outbox=tuple(outbox), **extra)
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

    def _requeue(self, task: LiveTask) -> None:
        """A task whose run was lost goes back to the queue and is dispatched again."""
        self.task_queue.set_status(task, PENDING)
        task.started_at = None
        task.events.reset_run()
        self._emit_queued(task)
        self._dispatch(task)  # first: a failed write must not leave it pending and never sent
        self.saver.save(task)

    # ------------------------------------------------------------------ start and recovery

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
            if record.status == RUNNING:
                if record.attempts > self.settings.task_retries:
                    self._finish(task, TaskStatus.failed.value, messages.INTERRUPTED_BY_RESTART)
                    continue
                self._requeue(task)
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

    async def _periodic_cleanup(self) -> None:
        while True:
            await asyncio.sleep(self.settings.cleanup_interval_seconds)
            try:
                await self.cleanup(self.settings.cleanup_max_age_hours, self.settings.cleanup_max_age_days)
            except Exception:  # keep the loop alive; the next run tries again
                log.exception("periodic clean-up failed")

    # ------------------------------------------------------------------ creation and dispatch

    async def create(self, spec: TaskSpec) -> CreateAnswer:
        """Create a task (idempotent by ``task_id``) and dispatch it; a refusal writes nothing. The
        answer comes once the record is committed (serving.registry.intake)."""
        return await self.intake.create(spec)

    def _admit(
        self,
        spec: TaskSpec,
        params: GenerationParameters,
        seed: int,
        input_keys: list[str],
        now: datetime,
        adapters: list[AdapterRef],
    ) -> LiveTask:
        """A submission is stored: its live task is tracked, announced and dispatched."""
        requests = model_requests(
            self.app_name,
            spec.task_id,
            spec.kind,
            spec.prompts,
            params,
            input_keys,
            spec.image_count,
            adapters,
            user_id=spec.user_id,
        )
        task = LiveTask(
            task_id=spec.task_id,
            user_id=spec.user_id,
            task_type=spec.task_type,
            kind=spec.kind,
            status=PENDING,
            created_at=now,
            requests=requests,
            image_count=spec.image_count,
            seed=seed,
            total_steps=params.total_steps,
            webhook=spec.webhook,
        )
        self._track(task)
        self.metrics.submitted(task.kind.value)
        self._event(task, "queued", position=self._position(task))
        self._emit_queued(task)
        self._dispatch(task)
        return task

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
                self._requeue(task)
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
        if task.status == PENDING:
            self.task_queue.set_status(task, RUNNING)
            event_id = self.feed.clock.next()
            task.started_at = ev.from_micros(event_id)
            task.attempts_started += 1
            started = self.feed.event(task, ev.STARTED, TaskStarted(started_at=task.started_at.isoformat()), event_id)
            self.saver.save(task, outbox=tuple(self.feed.webhook_rows(task, started, task.started_at)))
            self.feed.publish(task, started)
            self.feed.queue_moved(task)
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
        if task.status == RUNNING:
            event = self.feed.emit(task, ev.PROGRESS, task.progress_now())
            self.feed.progress_webhook(task, event)
        return task.cancel_requested

    async def report_preview(self, task_id: str, epoch: str, attempt: int, index: int, preview: dict) -> bool:
        """A replica's preview of the latents (models.preview: {step, total, width, height, media_type, b64})."""
        task = self._current(task_id, epoch, attempt)
        if task is None or task.status != RUNNING:
            return False
        image = PreviewImage(
            current_step=preview["step"],
            total_steps=preview["total"],
            width=preview["width"],
            height=preview["height"],
            media_type=preview["media_type"],
            b64=preview["b64"],
            index=index if len(task.requests) > 1 else None,
            decoded=bool(preview.get("decoded")),
        )
        self.feed.emit(task, ev.PREVIEW, image)
        return True

    async def report_replica(self, replica_id: str, info: dict[str, Any]) -> None:
        """A model replica says what it holds and how much device memory it uses (every few seconds)."""
        self.replicas.report(replica_id, info)

    # ------------------------------------------------------------------ event streams

    async def poll_events(
        self, epoch: Optional[str], cursor: Optional[int], timeout: float, previews: bool = True
    ) -> EventPoll:
        """The ingresses' long poll: events after ``cursor`` (see serving.event_journal.EventJournal)."""
        return await self.feed.poll(epoch, cursor, timeout, previews)

    async def accounts_changed(self, user_ids: list[int]) -> None:
        """An ingress changed these accounts: every ingress drops the rows it keeps (auth.account_cache)."""
        self.feed.accounts_changed(user_ids)

    async def task_events(self, task_id: str, after_id: int = 0) -> Optional[TaskEvents]:
        """What a stream of one task starts with: the events describing its state after ``after_id``."""
        return self.feed.task_events(task_id, after_id)

    async def user_events(self, user_id: Optional[int], after_id: int = 0) -> list[TaskEvent]:
        """What a stream of all of a user's tasks starts with (serving.registry.feed)."""
        return self.feed.user_events(user_id, after_id)

    async def refresh_positions(self, task_ids: list[str]) -> int:
        """New ``queued`` events for those of ``task_ids`` whose queue position changed."""
        orders: dict[ModelKind, dict[str, int]] = {}
        changed = 0
        for task_id in task_ids:
            task = self.tasks.get(task_id)
            if task is None or task.status != PENDING:
                continue
            if task.kind not in orders:
                orders[task.kind] = self.task_queue.order(task.kind)
            position = orders[task.kind][task_id]
            last = task.events.latest.get(ev.QUEUED)
            if last is None or not isinstance(last.data, TaskQueued) or last.data.position != position:
                self.feed.queued(task, position)
                changed += 1
        return changed

    # ------------------------------------------------------------------ queries

    async def status(self, task_id: str) -> Optional[TaskStatusView]:
        task = self.tasks.get(task_id)
        if task is None:
            return None
        if task.saving is not None and not task.saving.done():
            await self.saver.stored(task)  # a few milliseconds: the state answered is the state stored
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
        await self.saver.stored(task)
        return WaitAnswer(status=task.view(self._position(task)), result=task.result)

    async def queue(self) -> QueueSnapshot:
        counts = self.task_queue.counts()
        return QueueSnapshot(tasks=counts, queue_size=counts["pending"])

    async def ping(self) -> RegistryIdentity:
        return RegistryIdentity(version=self.version, epoch=self.epoch)

    async def replica_info(self) -> dict[str, dict[str, Any]]:
        """The latest report of each model replica heard from lately (serving.registry.replicas)."""
        return self.replicas.latest()

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
        if task.status == PENDING:
            self._finish(task, TaskStatus.cancelled.value)
            await self.saver.stored(task)
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
            self.retention.forget(task_id)
        self.retention.forget_finished()
        deleted = await asyncio.to_thread(self.retention.delete_old_records, now - timedelta(days=max_age_days))
        for task_id in deleted:  # the live state changes here, on the event loop, never in the worker thread
            self.retention.forget(task_id)
        if deleted:  # the ingresses forget the statuses they keep: some are of tasks that are gone
            self.feed.statuses_reset()
        return CleanupCounts(memory_cleaned_count=len(forget), db_cleaned_count=len(deleted))


def _conforms(core: RegistryCore) -> RegistryService:
    return core  # mypy checks that the core has every method of the registry's interface
