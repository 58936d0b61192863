"""Task events: their format, what the registry keeps of them, and how it hands them out.

An event is ``{"id", "event", "task_id", "user_id", "data"}`` where ``event`` is one of
``queued``, ``started``, ``progress``, ``preview``, ``completed``, ``failed``, ``cancelled`` and
``data`` always carries ``task_id`` (the streams' format is fixed in the API documentation).

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
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from typing import Any, Optional

QUEUED, STARTED, PROGRESS, PREVIEW = "queued", "started", "progress", "preview"
COMPLETED, FAILED, CANCELLED = "completed", "failed", "cancelled"
TERMINAL = (COMPLETED, FAILED, CANCELLED)
EVENT_TYPES = (QUEUED, STARTED, PROGRESS, PREVIEW, *TERMINAL)
# Not an event of any stream: "the queue of this model kind moved", so that ingresses holding
# streams on queued tasks ask for the new positions (only then, and only theirs).
QUEUE_MOVED = "_queue_moved"
# Not an event of any stream either: "records were deleted", so that ingresses forget the statuses
# they keep (serving.status_cache).
STATUSES_RESET = "_statuses_reset"


EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
ONE_MICROSECOND = timedelta(microseconds=1)


def micros(moment: datetime) -> int:
    """Microseconds since the epoch, exactly (integer arithmetic: ids must round-trip)."""
    return (moment - EPOCH) // ONE_MICROSECOND


def from_micros(value: int) -> datetime:
    return EPOCH + timedelta(microseconds=value)


def result_url(task_id: str) -> str:
    return f"/tasks/{task_id}/result"


def make_event(event_id: int, event: str, task_id: str, user_id: Optional[int], **data: Any) -> dict:
    return {
        "id": event_id,
        "event": event,
        "task_id": task_id,
        "user_id": user_id,
        "data": {"task_id": task_id, **data},
    }


def terminal_event(
    task_id: str,
    user_id: Optional[int],
    status: str,
    completed_at: datetime,
    *,
    seed: Optional[int] = None,
    error: Optional[str] = None,
    generation_seconds: Optional[float] = None,
) -> dict:
    """The one terminal event of a finished task (the same from memory and from its record)."""
    event_id = micros(completed_at)
    if status == COMPLETED:
        return make_event(
            event_id,
            COMPLETED,
            task_id,
            user_id,
            seed=seed,
            result_url=result_url(task_id),
            generation_seconds=generation_seconds,
        )
    if status == FAILED:
        return make_event(event_id, FAILED, task_id, user_id, error=error)
    return make_event(event_id, CANCELLED, task_id, user_id)


def terminal_event_from_record(record: Any) -> Optional[dict]:
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

    latest: dict[str, dict] = field(default_factory=dict)

    def keep(self, event: dict) -> None:
        self.latest[event["event"]] = event

    def retained(self, after_id: int = 0, previews: bool = True) -> list[dict]:
        """What a client that saw ``after_id`` is missing, in order (a terminal event always last)."""
        events = [e for e in self.latest.values() if e["id"] > after_id and (previews or e["event"] != PREVIEW)]
        return sorted(events, key=lambda e: e["id"])

    def reset_run(self) -> None:
        """A task queued again (a retry after a crash) drops the events of the run that failed."""
        for name in (STARTED, PROGRESS, PREVIEW):
            self.latest.pop(name, None)


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
        self.entries: deque[tuple[int, dict]] = deque(maxlen=capacity)
        self._changed = asyncio.Event()

    def publish(self, event: dict) -> None:
        self.seq += 1
        self.entries.append((self.seq, event))
        # Wake every waiting poll once; each starts a fresh wait after it has read.
        self._changed.set()
        self._changed = asyncio.Event()

    def _since(self, cursor: int, limit: int) -> Optional[list[dict]]:
        if cursor >= self.seq:
            return []
        oldest = self.entries[0][0] if self.entries else self.seq + 1
        if cursor + 1 < oldest:
            return None  # fell behind the journal
        start = cursor + 1 - oldest
        return [event for _, event in itertools.islice(self.entries, start, start + limit)]

    async def poll(
        self, epoch: Optional[str], cursor: Optional[int], timeout: float, previews: bool = True, limit: int = 2000
    ) -> dict:
        """Events after ``cursor``, waiting up to ``timeout`` for one; ``previews=False`` leaves the
        (large, stream-only) preview events out and goes on waiting while only those come."""
        if epoch != self.epoch or cursor is None or cursor > self.seq:
            return {"epoch": self.epoch, "cursor": self.seq, "events": [], "reset": True}
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(timeout, 0.0)
        while True:
            events = self._since(cursor, limit)
            if events is None:
                return {"epoch": self.epoch, "cursor": self.seq, "events": [], "reset": True}
            if events:
                cursor += len(events)
                if not previews:
                    events = [event for event in events if event["event"] != PREVIEW]
                if events:
                    return {"epoch": self.epoch, "cursor": cursor, "events": events, "reset": False}
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), timeout=max(deadline - loop.time(), 0.0))
            except asyncio.TimeoutError:
                return {"epoch": self.epoch, "cursor": cursor, "events": [], "reset": False}


def format_sse(event: dict) -> str:
    """One event in ``text/event-stream`` framing (JSON data has no newlines)."""
    import json

    data = json.dumps(event["data"], ensure_ascii=False, separators=(",", ":"))
    return f"id: {event['id']}\nevent: {event['event']}\ndata: {data}\n\n"


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
    "QUEUE_MOVED",
    "STATUSES_RESET",
    "EventClock",
    "EventJournal",
    "TaskEventState",
    "make_event",
    "terminal_event",
    "terminal_event_from_record",
    "micros",
    "from_micros",
    "format_sse",
    "result_url",
]
