"""Rows written straight into the database, so query tests start from a known state."""

from __future__ import annotations

import itertools
import uuid
from datetime import datetime, timedelta, timezone
from typing import Optional

from sqlalchemy.engine import Engine

from storage import TaskRecord, TaskStatus, TaskType, User, session_scope
from storage.usage import records_added

T0 = datetime(2024, 6, 15, 12, 0, tzinfo=timezone.utc)
_names = itertools.count()


def add_user(engine: Engine, username: Optional[str] = None, **fields) -> User:
    with session_scope(engine) as session:
        user = User(username=username or f"user{next(_names)}", hashed_password="x", **fields)
        session.add(user)
        session.flush()
        return user


def task(
    user_id: Optional[int],
    created_at: datetime,
    status: str = TaskStatus.completed.value,
    task_type: str = TaskType.text_to_image.value,
    image_count: int = 1,
    execution_time: Optional[float] = None,
    started: Optional[bool] = None,
    **fields,
) -> TaskRecord:
    """A record with consistent times: started unless pending (or cancelled with ``started=False``)."""
    if started is None:
        started = status not in (TaskStatus.pending.value, TaskStatus.cancelled.value)
    started_at = created_at + timedelta(seconds=1) if started else None
    finished = status in (TaskStatus.completed.value, TaskStatus.failed.value, TaskStatus.cancelled.value)
    if execution_time is None and status == TaskStatus.completed.value:
        execution_time = 10.0
    completed_at = (started_at or created_at) + timedelta(seconds=execution_time or 0) if finished else None
    return TaskRecord(
        task_id=str(uuid.uuid4()),
        user_id=user_id,
        task_type=task_type,
        prompt="a cat",
        status=status,
        created_at=created_at,
        started_at=started_at,
        completed_at=completed_at,
        execution_time=execution_time,
        image_count=image_count,
        **fields,
    )


def add_tasks(engine: Engine, *records: TaskRecord) -> list[TaskRecord]:
    """Insert ``records``, counting their images in the usage counters as every writer of records does."""
    with session_scope(engine) as session:
        session.add_all(records)
        session.flush()
        records_added(session, records)
        return list(records)
