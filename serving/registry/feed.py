"""The registry's events (serving.event_journal): each task's latest event of each kind, the journal the
ingresses poll for them, and the webhook deliveries they cause."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Optional

from auth.account_cache import AccountsChanged
from serving import event_journal as ev
from serving.protocol import (
    FINISHED_STATUSES,
    EventData,
    EventPoll,
    EventType,
    QueueMoved,
    StatusesReset,
    TaskEvent,
    TaskEvents,
    TaskQueued,
)
from serving.registry.task import LiveTask
from serving.settings import Settings
from serving.webhook_sender import WebhookSender, outbox_rows, webhook_data
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

    def event(self, task: LiveTask, type_: EventType, data: EventData, event_id: Optional[int] = None) -> TaskEvent:
        """A new event of ``task`` (the next id unless one is given)."""
        return TaskEvent(event_id or self.clock.next(), type_, task.task_id, task.user_id, data)

    def publish(self, task: LiveTask, event: TaskEvent) -> None:
        """Keep the event as the task's latest of its type and publish it to the ingresses."""
        task.events.keep(event)
        self.journal.publish(event)

    def emit(self, task: LiveTask, type_: EventType, data: EventData, event_id: Optional[int] = None) -> TaskEvent:
        """Make, keep and publish an event of ``task``."""
        event = self.event(task, type_, data, event_id)
        self.publish(task, event)
        return event

    def queued(self, task: LiveTask, position: int) -> None:
        self.emit(task, ev.QUEUED, TaskQueued(position=position))

    def queue_moved(self, task: LiveTask) -> None:
        """Tell the ingresses that positions in this task's queue changed (they ask only if they care)."""
        self.journal.publish(QueueMoved(kind=task.kind.value))

    def accounts_changed(self, user_ids: list[int]) -> None:
        """Every ingress drops the rows it keeps of these accounts (auth.account_cache)."""
        self.journal.publish(AccountsChanged(user_ids=tuple(user_ids)))

    def statuses_reset(self) -> None:
        """The ingresses forget the statuses they keep (some are of tasks that are gone)."""
        self.journal.publish(StatusesReset())

    # ------------------------------------------------------------------ webhooks

    def webhook_rows(self, task: LiveTask, event: TaskEvent, moment: datetime) -> list:
        """The outbox rows of ``event`` when the task's submission asked for it (none otherwise)."""
        if task.webhook is None or event.type not in task.webhook.events:
            return []
        data = webhook_data(
            event, task.status, seed=task.seed, error=task.error, base_url=self.settings.public_base_url
        )
        return outbox_rows(
            task.webhook, event.type, task_id=task.task_id, user_id=task.user_id, moment=moment, data=data
        )

    def progress_webhook(self, task: LiveTask, event: TaskEvent) -> None:
        """Progress webhooks, at most one per ``webhook_progress_interval_seconds`` (own transaction:
        progress changes no record)."""
        if task.webhook is None or ev.PROGRESS not in task.webhook.events:
            return
        now = asyncio.get_running_loop().time()
        if now - task.last_progress_webhook < self.settings.webhook_progress_interval_seconds:
            return
        task.last_progress_webhook = now
        rows = self.webhook_rows(task, event, utcnow())
        written = self.writer.submit(lambda session: session.add_all(rows))
        written.add_done_callback(self._progress_webhook_written)

    def _progress_webhook_written(self, written: asyncio.Future) -> None:
        if written.cancelled() or written.exception() is not None:
            # A progress event is superseded by the next one: no retry, as before (own transaction).
            log.warning("progress webhook rows not stored: %r", None if written.cancelled() else written.exception())
            return
        self.webhooks.wake()

    # ------------------------------------------------------------------ reading

    async def poll(
        self, epoch: Optional[str], cursor: Optional[int], timeout: float, previews: bool = True
    ) -> EventPoll:
        """The ingresses' long poll: events after ``cursor`` (see serving.event_journal.EventJournal)."""
        return await self.journal.poll(epoch, cursor, timeout, previews)

    def task_events(self, task_id: str, after_id: int = 0) -> Optional[TaskEvents]:
        """What a stream of one task starts with: the events describing its state after ``after_id``."""
        task = self.tasks.get(task_id)
        if task is None:
            return None
        return TaskEvents(
            user_id=task.user_id, finished=task.status in FINISHED_STATUSES, events=task.events.retained(after_id)
        )

    def user_events(self, user_id: Optional[int], after_id: int = 0) -> list[TaskEvent]:
        """What a stream of all of a user's tasks starts with: without ``after_id`` the state of their
        unfinished tasks; with it, everything after it that memory still holds."""
        out: list[TaskEvent] = []
        for task in self.tasks.values():
            if task.user_id != user_id or (not after_id and task.status in FINISHED_STATUSES):
                continue
            out.extend(task.events.retained(after_id))
        return sorted(out, key=lambda e: e.id)
