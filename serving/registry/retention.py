"""How long tasks stay in memory and in the database: finished tasks leave memory after a while
(answered from their records then), and old records are deleted with their result and input files."""

from __future__ import annotations

import time
from collections import OrderedDict
from datetime import datetime

from sqlalchemy.engine import Engine

from serving.registry.queue import TaskQueue
from serving.registry.saver import TaskSaver
from serving.registry.task import LiveTask
from serving.settings import Settings
from storage import session_scope
from storage.results import ResultStore
from storage.tasks import old_finished_tasks
from storage.usage import records_deleted


class Retention:
    """Keeps memory following what is live, not throughput."""

    def __init__(
        self,
        tasks: dict[str, LiveTask],
        queue: TaskQueue,
        saver: TaskSaver,
        settings: Settings,
        engine: Engine,
        store: ResultStore,
    ):
        self.tasks = tasks  # the registry's live tasks (shared, not copied)
        self.queue = queue
        self.saver = saver
        self.settings = settings
        self.engine = engine
        self.store = store
        # Finished tasks still in memory, oldest first (task id -> when it finished, monotonic): they
        # leave after ``finished_task_memory_seconds`` or beyond ``finished_tasks_in_memory``, and
        # are then answered from their records, so memory follows what is live, not throughput.
        self.finished: OrderedDict[str, float] = OrderedDict()

    def finished_now(self, task_id: str) -> None:
        """The task has ended: it leaves memory in its turn."""
        self.finished[task_id] = time.monotonic()
        self.forget_finished()

    def forget(self, task_id: str) -> None:
        """The task leaves memory, unless its final state is not stored yet."""
        task = self.tasks.get(task_id)
        if self.saver.holds(task, task_id):
            return  # its final state is not stored yet: it stays answerable from memory until it is
        task = self.tasks.pop(task_id, None)
        self.finished.pop(task_id, None)
        if task is not None:
            self.queue.untrack(task)

    def forget_finished(self) -> None:
        """Finished tasks past their time in memory, or beyond the count kept, leave it (oldest first)."""
        keep = self.settings.finished_tasks_in_memory
        cutoff = time.monotonic() - self.settings.finished_task_memory_seconds
        while self.finished:
            task_id, finished_at = next(iter(self.finished.items()))
            if finished_at > cutoff and len(self.finished) <= keep:
                return
            task = self.tasks.get(task_id)
            if task is not None and self.saver.holds(task, task_id):
                return  # not stored yet; it leaves with a later pass
            self.finished.pop(task_id)
            self.forget(task_id)

    def delete_old_records(self, before: datetime) -> list[str]:
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
