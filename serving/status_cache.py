"""The ingress's own view of task statuses, so that ``GET /tasks/{id}`` need not cross to the registry.

Every status read used to be a call to the registry actor: one more process hop than the platform's
floor, and every poll of every client on the registry's one event loop. This cache keeps the last
status each owner read and keeps it current from the registry's change feed (the event journal the
ingress already follows for event streams, :mod:`serving.event_hub`).

What it promises: **never a status older than the last change this ingress was told of.** A cached
status is served only while the feed has run without a gap since it was read; every change the
feed brings either updates it exactly (a running task's progress, which is all the registry itself
would add) or drops it (anything else), and a status read from the registry while a change of its
task was on the way is not kept. Which events change what:

- ``progress`` of a running task: its step count, the only field the registry's answer would change.
- ``queued``, a ``QueueMoved`` notice, ``completed``, ``failed``, ``cancelled`` (a task entered, left or
  started, or ended): every cached *pending* status is dropped, since fair share may have moved any
  position; and the task's own status.
- ``started``, anything unknown: that task's status is dropped.
- a ``StatusesReset`` notice (records deleted by the clean-up) and any gap in the feed (a registry restart,
  a cursor that fell out of the journal, a failed poll): everything is dropped, and nothing is
  cached until the feed runs again.
- ``preview``: nothing (it changes no status).

The routes also drop a task's status when they learn of a change themselves (their own cancel, a
result wait that ended), so a client that changed a task through this ingress reads the change
back at once, even before the feed brings it. Another ingress replica learns of it a few
milliseconds later, with the feed.

Only the task's owner is answered from the cache (an admin reading another user's task takes the
full path), and only while the owner's account is the one that read it (its ``token_key``): a
deleted account's tasks are never answered to anybody from here. Time-dependent fields (the wait
of a pending task, the run time of a running one) are computed afresh at every answer.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from typing import Optional

from serving import event_journal as ev
from serving.protocol import (
    FeedItem,
    Progress,
    QueueMoved,
    StatusesReset,
    TaskEvent,
    TaskStatusView,
    task_status_view,
)
from storage import TaskStatus, utcnow

_PENDING = TaskStatus.pending.value
_RUNNING = TaskStatus.running.value


@dataclass
class _Entry:
    view: TaskStatusView
    owner_key: str  # the token_key of the account that read it


class StatusCache:
    """Task statuses of one ingress replica, bounded (least recently read leave first)."""

    def __init__(self, capacity: int = 20_000, changes_kept: int = 100_000):
        self.capacity = capacity
        self.changes_kept = changes_kept
        self.entries: OrderedDict[str, _Entry] = OrderedDict()
        self.pending: set[str] = set()  # cached statuses that are pending (positions move without their events)
        # Every change heard gets the next generation; a status read from the registry is kept only
        # when no change of its task (nor a reset) came after the read was sent.
        self.generation = 0
        self.changed: OrderedDict[str, int] = OrderedDict()  # task id -> generation of its last change
        self.floor = 0  # changes up to this generation are forgotten: reads sent before it are not kept
        self.pending_moved = 0  # generation of the last change to queue positions
        self.live = False  # the feed runs without a gap: only then is anything kept

    # ------------------------------------------------------------------ reads

    def get(self, task_id: str, user_id: Optional[int], owner_key: str) -> Optional[TaskStatusView]:
        """The status of ``task_id`` as of now, when cached for this owner; else None."""
        entry = self.entries.get(task_id) if self.live else None
        if entry is None or entry.view.user_id != user_id or entry.owner_key != owner_key:
            return None
        self.entries.move_to_end(task_id)
        return retimed(entry.view, utcnow())

    def token(self) -> Optional[int]:
        """Taken before reading a status elsewhere, and given back to :meth:`put` with what was read."""
        return self.generation if self.live else None

    def put(self, view: TaskStatusView, owner_key: str, token: Optional[int]) -> None:
        """Keep ``view`` (read by its owner after :meth:`token` gave ``token``) unless something
        changed since: a change of the task, a reset, or (for a pending task) any queue move."""
        task_id = view.task_id
        if token is None or not self.live or token < self.floor or self.changed.get(task_id, -1) > token:
            return
        if view.status == _PENDING and self.pending_moved > token:
            return
        self.entries[task_id] = _Entry(view, owner_key)
        self.entries.move_to_end(task_id)
        if view.status == _PENDING:
            self.pending.add(task_id)
        else:
            self.pending.discard(task_id)
        while len(self.entries) > self.capacity:
            old, _ = self.entries.popitem(last=False)
            self.pending.discard(old)

    # ------------------------------------------------------------------ changes

    def task_changed(self, task_id: str) -> None:
        """Something about ``task_id`` changed (or may have): its status is read afresh next time."""
        self.generation += 1
        self.changed[task_id] = self.generation
        self.changed.move_to_end(task_id)
        while len(self.changed) > self.changes_kept:
            _, generation = self.changed.popitem(last=False)
            self.floor = max(self.floor, generation)
        self._drop(task_id)

    def apply(self, event: FeedItem) -> None:
        """One item of the registry's feed, in the order the registry published them."""
        if isinstance(event, StatusesReset):
            self.reset(live=self.live)
            return
        if isinstance(event, QueueMoved):
            self._positions_moved()
            return
        if not isinstance(event, TaskEvent) or event.type == ev.PREVIEW:
            return
        task_id = event.task_id
        if event.type == ev.QUEUED or event.terminal:
            # A task entered or left the queue, or ended (its user runs one fewer: fair share may
            # move their waiting tasks ahead): any position may have changed.
            self._positions_moved()
            self.task_changed(task_id)
            return
        entry = self.entries.get(task_id)
        if isinstance(event.data, Progress) and entry is not None and entry.view.status == _RUNNING:
            # Exactly what the registry would answer now: the same status with this step count.
            self.task_changed(task_id)
            # Never backwards: a poll's answer may bring a report older than a read already kept.
            steps = max(event.data.current_step, entry.view.progress.current_step)
            self.entries[task_id] = _Entry(retimed(entry.view, utcnow(), steps), entry.owner_key)
            return
        self.task_changed(task_id)

    def reset(self, live: bool) -> None:
        """Forget every status (a gap in the feed, a registry restart, deleted records)."""
        self.generation += 1
        self.floor = self.generation
        self.changed.clear()
        self.entries.clear()
        self.pending.clear()
        self.live = live

    def _positions_moved(self) -> None:
        self.generation += 1
        self.pending_moved = self.generation
        for task_id in self.pending:
            self.entries.pop(task_id, None)
        self.pending.clear()

    def _drop(self, task_id: str) -> None:
        self.entries.pop(task_id, None)
        self.pending.discard(task_id)


def retimed(view: TaskStatusView, now: datetime, steps_done: Optional[int] = None) -> TaskStatusView:
    """``view`` as the registry would build it at ``now`` (with ``steps_done`` after a progress report);
    a finished task's answer never changes."""
    if view.finished:
        return view
    return task_status_view(
        task_id=view.task_id,
        user_id=view.user_id,
        task_type=view.task_type,
        status=view.status,
        error=view.error,
        created_at=view.created_at,
        started_at=view.started_at,
        completed_at=view.completed_at,
        execution_time=None,
        steps_done=view.progress.current_step if steps_done is None else steps_done,
        total_steps=view.progress.total_steps,
        seed=view.seed,
        position=view.position_in_queue,
        now=now,
    )


__all__ = ["StatusCache", "retimed"]
