"""The registry's queue: counters kept in step with every status change, the fair order in which
pending tasks will start (serving.fair_share), their positions, and the queue-depth gauges."""

from __future__ import annotations

import itertools
from collections import Counter
from collections.abc import Hashable
from typing import Optional

from models.kinds import ModelKind
from serving.fair_share import fair_order
from serving.metrics import TaskMetrics
from serving.registry.task import LiveTask
from storage import TaskStatus

PENDING = TaskStatus.pending.value
RUNNING = TaskStatus.running.value


class TaskQueue:
    """Counts of the tasks in memory by status, kind and user, so that no query scans all tasks."""

    def __init__(self, tasks: dict[str, LiveTask], metrics: TaskMetrics):
        self.tasks = tasks  # the registry's live tasks (shared, not copied)
        self.metrics = metrics
        self.status_counts: Counter[str] = Counter()
        self.pending: dict[ModelKind, dict[str, None]] = {kind: {} for kind in ModelKind}
        self.pending_by_user: Counter[Optional[int]] = Counter()
        self.running: Counter[ModelKind] = Counter()  # running tasks by kind, for the queue-depth gauges
        # Fair share (serving.fair_share): running tasks by (kind, user), when a user's task last started,
        # and the queue order they give, rebuilt when the queue or the running tasks change.
        self.running_by_user: Counter[tuple[ModelKind, Optional[int]]] = Counter()
        self._last_start: dict[tuple[ModelKind, Optional[int]], int] = {}
        self._starts = itertools.count(1)
        self._order: dict[ModelKind, dict[str, int]] = {}

    def track(self, task: LiveTask) -> None:
        """Count a task that has just entered memory."""
        self.status_counts[task.status] += 1
        if task.status == PENDING:
            self.pending[task.kind][task.task_id] = None
            self.pending_by_user[task.user_id] += 1
        self.running[task.kind] += task.status == RUNNING
        self.running_by_user[task.kind, task.user_id] += task.status == RUNNING
        self.depth_changed(task.kind)

    def untrack(self, task: LiveTask) -> None:
        """Stop counting a task that has left memory."""
        self.status_counts[task.status] -= 1
        self.pending[task.kind].pop(task.task_id, None)
        if task.status == PENDING:
            self.pending_by_user[task.user_id] -= 1
        self.running[task.kind] -= task.status == RUNNING
        self.running_by_user[task.kind, task.user_id] -= task.status == RUNNING
        self.depth_changed(task.kind)

    def set_status(self, task: LiveTask, status: str) -> None:
        """Change a task's status and every count it is in."""
        self.status_counts[task.status] -= 1
        self.status_counts[status] += 1
        self.pending_by_user[task.user_id] += (status == PENDING) - (task.status == PENDING)
        self.pending[task.kind].pop(task.task_id, None)
        if status == PENDING:
            self.pending[task.kind][task.task_id] = None
        started = (status == RUNNING) - (task.status == RUNNING)
        self.running[task.kind] += started
        self.running_by_user[task.kind, task.user_id] += started
        if started > 0:
            self._last_start[task.kind, task.user_id] = next(self._starts)
        task.status = status
        self.depth_changed(task.kind)

    def depth_changed(self, kind: ModelKind) -> None:
        self._order.pop(kind, None)  # the queue or the running tasks changed: positions are rebuilt
        self.metrics.depth(kind.value, len(self.pending[kind]), self.running[kind])

    def position(self, task: LiveTask) -> int:
        """1-based place among pending tasks of the same model in the order the fair share will start
        them (serving.fair_share); 0 once running or finished."""
        if task.status != PENDING:
            return 0
        return self.order(task.kind)[task.task_id]

    def order(self, kind: ModelKind) -> dict[str, int]:
        """Positions of the pending tasks of ``kind``: the router's rule applied to the running tasks."""
        order = self._order.get(kind)
        if order is None:
            waiting = ((task_id, self.tasks[task_id].user_id) for task_id in self.pending[kind])
            running: dict[Hashable, int] = {
                user: n for (k, user), n in self.running_by_user.items() if k == kind and n > 0
            }
            last: dict[Hashable, int] = {user: turn for (k, user), turn in self._last_start.items() if k == kind}
            order = self._order[kind] = fair_order(waiting, running, last)
        return order

    def counts(self) -> dict[str, int]:
        """Tasks in memory by status, and their total."""
        counts = {s.value: self.status_counts[s.value] for s in TaskStatus}
        counts["total"] = len(self.tasks)
        return counts
