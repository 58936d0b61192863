"""Every status change of a task written to its record through the writer thread (storage.writer),
with the webhook deliveries it causes; a write the database refused is retried until it is stored."""

from __future__ import annotations

import asyncio
import logging
from functools import partial
from typing import Any, Optional

from sqlalchemy import bindparam

from serving.registry.task import LiveTask
from serving.webhook_sender import WebhookSender
from storage import TaskRecord
from storage.usage import counts_toward_quota, task_changed
from storage.writer import BatchWriter

log = logging.getLogger("qwen_image.registry")

# A task state the database refused is written again this often until it is stored.
SAVE_RETRY_S = 2.0

TASKS = TaskRecord.__table__  # type: ignore[attr-defined]
_UPDATE_TASK = TASKS.update().where(TASKS.c.task_id == bindparam("_task_id"))


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


class TaskSaver:
    """Writes the live tasks' states; ``unsaved`` holds those the database has not taken yet."""

    def __init__(self, tasks: dict[str, LiveTask], writer: BatchWriter, webhooks: WebhookSender):
        self.tasks = tasks  # the registry's live tasks (shared, not copied)
        self.writer = writer
        self.webhooks = webhooks
        # Tasks whose last state the database has not taken yet (task id -> extra columns to write).
        self.unsaved: dict[str, dict[str, Any]] = {}
        self.retry: Optional[asyncio.Task] = None

    def holds(self, task: Optional[LiveTask], task_id: str) -> bool:
        """True while the task's latest state is not stored yet (it must stay answerable from memory)."""
        return task_id in self.unsaved or (task is not None and task.saving is not None and not task.saving.done())

    def persist(self, task: LiveTask, outbox: tuple = (), **extra: Any) -> asyncio.Future:
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

    def save(self, task: LiveTask, **extra: Any) -> asyncio.Future:
        """:meth:`persist`, never raising: a failed write is retried in the background until it is
        stored, so no task is left hanging on a database error (waiters are released by the caller).
        Returns the write (``task.saving``), which resolves when it is stored or has failed."""
        earlier = self.unsaved.pop(task.task_id, {})
        # Webhook deliveries of an earlier unsaved change go out with this one; nothing is dropped.
        pending = {**earlier, **extra, "outbox": _outbox(earlier) + _outbox(extra)}
        saving: asyncio.Future
        try:
            saving = self.persist(task, **pending)
        except Exception as exc:  # not even handed over
            saving = asyncio.get_running_loop().create_future()
            saving.set_exception(exc)
        task.saving = saving
        saving.add_done_callback(partial(self._saved, task, pending))
        return saving

    def _saved(self, task: LiveTask, pending: dict[str, Any], saving: asyncio.Future) -> None:
        """A write of ``task`` ended: on failure its changes wait in ``unsaved`` for the next try."""
        error = saving.exception() if not saving.cancelled() else asyncio.CancelledError()
        if error is None:
            if pending["outbox"]:
                self.webhooks.wake()
            return
        log.warning("task %s: could not store its state (%r); retrying every %.0f s", task.task_id, error, SAVE_RETRY_S)
        later = self.unsaved.pop(task.task_id, {})
        self.unsaved[task.task_id] = {**pending, **later, "outbox": _outbox(pending) + _outbox(later)}
        if self.retry is None or self.retry.done():
            self.retry = asyncio.get_running_loop().create_task(self._retry_saves())

    async def _retry_saves(self) -> None:
        while self.unsaved:
            await asyncio.sleep(SAVE_RETRY_S)
            writes = []
            for task_id in list(self.unsaved):
                task = self.tasks.get(task_id)
                extra = self.unsaved.pop(task_id)
                if task is not None:
                    writes.append(self.save(task, **extra))
            # A failed one is back in unsaved (its callback runs first) before the loop looks again;
            # wait, not gather: stopping this loop must not cancel the writes.
            if writes:
                await asyncio.wait(writes)

    @staticmethod
    async def stored(task: LiveTask) -> None:
        """Returns once the task's latest write has been committed (or has failed: then memory answers)."""
        saving = task.saving
        if saving is not None and not saving.done():
            await asyncio.wait([saving])
