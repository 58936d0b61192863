"""Task events: how they are built, what the registry keeps of them, and how it hands them out.

An event is a :class:`serving.protocol.TaskEvent`: ``type`` is one of ``queued``, ``started``,
``progress``, ``preview``, ``completed``, ``failed``, ``cancelled`` and ``data`` that type's payload;
on the streams its ``data:`` always carries ``task_id`` (the streams' format is fixed in the API
documentation).

Event ids are microseconds since the Unix epoch, made strictly increasing per registry. They grow
per task across registry restarts too, so a client resuming with ``Last-Event-ID`` after a
restart never has newer events mistaken for old ones; and a terminal event's id is its task's
``completed_at`` in microseconds, so the same terminal event can be rebuilt from the database
with the same id once the registry has forgotten the task.

The registry keeps, per live task, only the events that describe its state now (the latest
``queued``, ``started``, latest ``progress``, latest ``preview``, the terminal one): a resuming
client gets what it missed of the *state*, not every intermediate step. All events also go into
one bounded journal, read by each ingress replica through a long poll (:meth:`EventJournal.poll`)
that is answered at once when events are waiting and otherwise when the next one is published.
"""

from __future__ import annotations

import asyncio
import itertools
import json
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Final, Optional

from serving.protocol import (
    EventData,
    EventPoll,
    FeedItem,
    TaskCancelled,
    TaskCompleted,
    TaskEvent,
    TaskFailed,
)

QUEUED: Final = "queued"
STARTED: Final = "started"
PROGRESS: Final = "progress"
PREVIEW: Final = "preview"
COMPLETED: Final = "completed"
FAILED: Final = "failed"
CANCELLED: Final = "cancelled"
TERMINAL = (COMPLETED, FAILED, CANCELLED)
EVENT_TYPES = (QUEUED, STARTED, PROGRESS, PREVIEW, *TERMINAL)


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (integer arithmetic: ids must round-trip)."""
    return (moment - EPOCH) // ONE_MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def result_url(task_id: str) -> str:
    return f"/tasks/{task_id}/result"


def terminal_event(
    task_id: str,
    user_id: Optional[int],
    status: str,
    completed_at: datetime,
    *,
    seed: Optional[int] = None,
    error: Optional[str] = None,
    generation_seconds: Optional[float] = None,
) -> TaskEvent:
    """The one terminal event of a finished task (the same from memory and from its record)."""
    event_id = micros(completed_at)
    data: EventData
    if status == COMPLETED:
        data = TaskCompleted(seed=seed, result_url=result_url(task_id), generation_seconds=generation_seconds)
        return TaskEvent(event_id, COMPLETED, task_id, user_id, data)
    if status == FAILED:
        return TaskEvent(event_id, FAILED, task_id, user_id, TaskFailed(error=error))
    return TaskEvent(event_id, CANCELLED, task_id, user_id, TaskCancelled())


def terminal_event_from_record(record: Any) -> Optional[TaskEvent]:
    """A stored task's terminal event, or None while it is unfinished."""
    if record.status not in TERMINAL or record.completed_at is None:
        return None
    return terminal_event(
        record.task_id, record.user_id, record.status, record.completed_at, seed=record.seed, error=record.error_message
    )


class EventClock:
    """Strictly increasing event ids (microseconds since the epoch)."""

    def __init__(self) -> None:
        self.last = 0

    def next(self) -> int:
        self.last = max(micros(datetime.now(timezone.utc)), self.last + 1)
        return self.last


@dataclass
class TaskEventState:
    """The events that describe one live task's state, by type (each the latest of its type)."""

    latest: dict[str, TaskEvent] = field(default_factory=dict)

    def keep(self, event: TaskEvent) -> None:
        self.latest[event.type] = event

    def retained(self, after_id: int = 0, previews: bool = True) -> list[TaskEvent]:
        """What a client that saw ``after_id`` is missing, in order (a terminal event always last)."""
        events = [e for e in self.latest.values() if e.id > after_id and (previews or e.type != PREVIEW)]
        return sorted(events, key=lambda e: e.id)

    def reset_run(self) -> None:
        """A task queued again (a retry after a crash) drops the events of the run that failed."""
        for name in (STARTED, PROGRESS, PREVIEW):
            self.latest.pop(name, None)


def _is_preview(item: FeedItem) -> bool:
    return isinstance(item, TaskEvent) and item.type == PREVIEW


class EventJournal:
    """The registry's recent events, numbered, for the ingresses' long polls.

    ``poll(epoch, cursor, timeout)`` returns the events after ``cursor``; when there are none it
    waits (without any work) until one is published or ``timeout`` passes. A cursor from another
    registry incarnation, or one that fell out of the bounded journal, gets ``reset: true``: the
    ingress then reads the current state of the tasks it streams again.
    """

    def __init__(self, epoch: str, capacity: int = 4096):
        self.epoch = epoch
        self.capacity = capacity
        self.seq = 0
        self.entries: deque[tuple[int, FeedItem]] = deque(maxlen=capacity)
        self._changed = asyncio.Event()

    def publish(self, event: FeedItem) -> None:
        self.seq += 1
        self.entries.append((self.seq, event))
        # Wake every waiting poll once; each starts a fresh wait after it has read.
        self._changed.set()
        self._changed = asyncio.Event()

    def _since(self, cursor: int, limit: int) -> Optional[list[FeedItem]]:
        if cursor >= self.seq:
            return []
        oldest = self.entries[0][0] if self.entries else self.seq + 1
        if cursor + 1 < oldest:
            return None  # fell behind the journal
        start = cursor + 1 - oldest
        return [event for _, event in itertools.islice(self.entries, start, start + limit)]

    async def poll(
        self, epoch: Optional[str], cursor: Optional[int], timeout: float, previews: bool = True, limit: int = 2000
    ) -> EventPoll:
        """Events after ``cursor``, waiting up to ``timeout`` for one; ``previews=False`` leaves the
        (large, stream-only) preview events out and goes on waiting while only those come."""
        if epoch != self.epoch or cursor is None or cursor > self.seq:
            return EventPoll(self.epoch, self.seq, [], reset=True)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            events = self._since(cursor, limit)
            if events is None:
                return EventPoll(self.epoch, self.seq, [], reset=True)
            if events:
                cursor += len(events)
                if not previews:
                    events = [event for event in events if not _is_preview(event)]
                if events:
                    return EventPoll(self.epoch, cursor, events)
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout=max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                return EventPoll(self.epoch, cursor, [])


def sse_data(event: TaskEvent) -> str:
    """An event's ``data:`` line as JSON (compact, no newlines, text as written)."""
    return json.dumps(event.payload(), ensure_ascii=False, separators=(",", ":"))


__all__ = [
    "EVENT_TYPES",
    "TERMINAL",
    "QUEUED",
    "STARTED",
    "PROGRESS",
    "PREVIEW",
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "EventClock",
    "EventJournal",
    "TaskEventState",
    "terminal_event",
    "terminal_event_from_record",
    "micros",
    "from_micros",
    "sse_data",
    "result_url",
]
