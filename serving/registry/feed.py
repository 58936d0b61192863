"""The registry's events (serving.events): each task's latest event of each kind, the journal the
ingresses poll for them, and the webhook deliveries they cause."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any, Optional

from auth.account_cache import ACCOUNT_CHANGED
from serving import events as ev
from serving.protocol import FINISHED_STATUSES
from serving.registry.task import LiveTask
from serving.settings import Settings
from serving.webhooks import WebhookSender, outbox_rows, webhook_data
from storage import utcnow
from storage.writer import BatchWriter

log = logging.getLogger("qwen_image.registry")


class TaskFeed:
    """Publishes the live tasks' events, and answers the ingresses' polls and new streams."""

    def __init__(
        self,
        epoch: str,
        tasks: dict[str, LiveTask],
        settings: Settings,
        writer: BatchWriter,
        webhooks: WebhookSender,
    ):
        self.tasks = tasks  # the registry's live tasks (shared, not copied)
        self.settings = settings
        self.writer = writer
        self.webhooks = webhooks
        self.clock = ev.EventClock()
        self.journal = ev.EventJournal(epoch)

    # ------------------------------------------------------------------ publishing

    def emit(self, task: LiveTask, event: str, event_id: Optional[int] = None, **data: Any) -> dict:
        """Keep the event as the task's latest of its kind and publish it to the ingresses."""
        record = ev.make_event(event_id or self.clock.next(), event, task.task_id, task.user_id, **data)
        task.events.keep(record)
        self.journal.publish(record)
        return record

    def queued(self, task: LiveTask, position: int) -> None:
        self.emit(task, ev.QUEUED, position=position)

    def queue_moved(self, task: LiveTask) -> None:
        """Tell the ingresses that positions in this task's queue changed (they ask only if they care)."""
        self.journal.publish({"event": ev.QUEUE_MOVED, "kind": task.kind.value, "task_id": None, "user_id": None})

    def accounts_changed(self, user_ids: list[int]) -> None:
        """Every ingress drops the rows it keeps of these accounts (auth.account_cache)."""
        self.journal.publish({"event": ACCOUNT_CHANGED, "task_id": None, "user_id": None, "user_ids": list(user_ids)})

    def statuses_reset(self) -> None:
        """The ingresses forget the statuses they keep (some are of tasks that are gone)."""
        self.journal.publish({"event": ev.STATUSES_RESET, "task_id": None, "user_id": None})

    # ------------------------------------------------------------------ webhooks

    def webhook_rows(self, task: LiveTask, event: str, moment: datetime, **extra: Any) -> list:
        """The outbox rows of ``event`` when the task's submission asked for it (none otherwise)."""
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

    def progress_webhook(self, task: LiveTask, progress: dict) -> None:
        """Progress webhooks, at most one per ``webhook_progress_interval_seconds`` (own transaction:
        progress changes no record)."""
        if task.webhook is None or ev.PROGRESS not in task.webhook.events:
            return
        now = asyncio.get_running_loop().time()
        if now - task.last_progress_webhook < self.settings.webhook_progress_interval_seconds:
            return
        task.last_progress_webhook = now
        rows = self.webhook_rows(task, ev.PROGRESS, utcnow(), **progress)
        written = self.writer.submit(lambda session: session.add_all(rows))
        written.add_done_callback(self._progress_webhook_written)

    def _progress_webhook_written(self, written: asyncio.Future) -> None:
        if written.cancelled() or written.exception() is not None:
            # A progress event is superseded by the next one: no retry, as before (own transaction).
            log.warning("progress webhook rows not stored: %r", None if written.cancelled() else written.exception())
            return
        self.webhooks.wake()

    # ------------------------------------------------------------------ reading

    async def poll(self, epoch: Optional[str], cursor: Optional[int], timeout: float, previews: bool = True) -> dict:
        """The ingresses' long poll: events after ``cursor`` (see serving.events.EventJournal)."""
        return await self.journal.poll(epoch, cursor, timeout, previews)

    def task_events(self, task_id: str, after_id: int = 0) -> Optional[dict]:
        """What a stream of one task starts with: the events describing its state after ``after_id``."""
        task = self.tasks.get(task_id)
        if task is None:
            return None
        return {
            "user_id": task.user_id,
            "finished": task.status in FINISHED_STATUSES,
            "events": task.events.retained(after_id),
        }

    def user_events(self, user_id: Optional[int], after_id: int = 0) -> list[dict]:
        """What a stream of all of a user's tasks starts with: without ``after_id`` the state of their
        unfinished tasks; with it, everything after it that memory still holds."""
        out: list[dict] = []
        for task in self.tasks.values():
            if task.user_id != user_id or (not after_id and task.status in FINISHED_STATUSES):
                continue
            out.extend(task.events.retained(after_id))
        return sorted(out, key=lambda e: e["id"])
