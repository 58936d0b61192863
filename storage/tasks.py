"""Task-record queries: creation under quota, history pages, statistics, clean-up."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Any, Optional, Protocol
from zoneinfo import ZoneInfo

from sqlalchemy import and_, case, not_
from sqlmodel import Session, col, func, select

from storage.db import write_later
from storage.tables import UNFINISHED, TaskRecord, TaskStatus, TaskType
from storage.usage import Usage, add_usage, counted_usage, counter_zone, limits_and_usage, records_added

# ---------------------------------------------------------------- quota periods and usage


@dataclass(frozen=True)
class Periods:
    """Start of today and of this month (and when they end), in UTC, for one time zone."""

    day_start: datetime
    day_end: datetime
    month_start: datetime
    month_end: datetime


def quota_periods(now: datetime, tz_name: str = "UTC") -> Periods:
    tz = ZoneInfo(tz_name)
    local = now.astimezone(tz)
    day = local.replace(hour=0, minute=0, second=0, microsecond=0)
    next_day = (day + timedelta(days=1)).replace(hour=0)
    month = day.replace(day=1)
    next_month = (month + timedelta(days=32)).replace(day=1)
    to_utc = lambda d: d.replace(tzinfo=tz).astimezone(timezone.utc)  # noqa: E731
    return Periods(
        to_utc(day.replace(tzinfo=None)),
        to_utc(next_day.replace(tzinfo=None)),
        to_utc(month.replace(tzinfo=None)),
        to_utc(next_month.replace(tzinfo=None)),
    )


def _counts_toward_quota():
    """Failed tasks and cancelled tasks that never started give their quota back."""
    return and_(
        col(TaskRecord.status) != TaskStatus.failed.value,
        not_(and_(col(TaskRecord.status) == TaskStatus.cancelled.value, col(TaskRecord.started_at).is_(None))),
    )


def quota_usage(session: Session, user_id: int, periods: Periods) -> Usage:
    """Usage counted over the user's rows: the reference the counters (:mod:`storage.usage`) equal,
    and what they are rebuilt from; it reads the whole history, so the quota check reads counters."""
    counted = func.coalesce(func.sum(TaskRecord.image_count), 0)
    base = and_(col(TaskRecord.user_id) == user_id, _counts_toward_quota())

    def counted_since(start: datetime) -> Any:
        return func.coalesce(func.sum(case((col(TaskRecord.created_at) >= start, TaskRecord.image_count), else_=0)), 0)

    today, month, total = session.exec(
        select(
            counted_since(periods.day_start),
            counted_since(periods.month_start),
            counted,
        ).where(base)
    ).one()
    return Usage(int(today), int(month), int(total))


def current_usage(session: Session, user_id: int, now: datetime, tz_name: str = "UTC") -> Usage:
    """What ``/tasks/quota/me`` shows: the counters when they are kept in ``tz_name`` (a read only;
    the registry's next quota check rebuilds them otherwise), else the count over the rows."""
    if counter_zone(session.connection()) == tz_name:
        return counted_usage(session, user_id, now, tz_name)
    return quota_usage(session, user_id, quota_periods(now, tz_name))


class QuotaExceeded(Exception):
    """A submission would go over a limit. ``period`` is "daily" or "monthly"."""

    def __init__(self, period: str, limit: int, used: int, resets_at: datetime):
        self.period, self.limit, self.used, self.resets_at = period, limit, used, resets_at
        super().__init__(f"{period} quota of {limit} reached ({used} used), resets at {resets_at.isoformat()}")


class HasLimits(Protocol):
    """A user, or a row of its limit columns."""

    daily_limit: Optional[int]
    monthly_limit: Optional[int]


def effective_limits(user: HasLimits, default_daily: int, default_monthly: int) -> tuple[int, int]:
    """The user's own daily and monthly limits, the defaults where they have none."""
    daily = user.daily_limit if user.daily_limit is not None else default_daily
    monthly = user.monthly_limit if user.monthly_limit is not None else default_monthly
    return daily, monthly


_INSERT_TASK = TaskRecord.__table__.insert()  # type: ignore[attr-defined]


def check_quota(
    session: Session,
    user_id: int,
    image_count: int,
    *,
    default_daily: int,
    default_monthly: int,
    now: datetime,
    tz_name: str = "UTC",
) -> None:
    """Raise :class:`QuotaExceeded` when ``image_count`` more images would exceed the user's daily or
    monthly limit. Locks the user's row (``SELECT … FOR UPDATE``) until the transaction ends; reads
    the usage counters (one statement with the limits, whatever the user's history)."""
    limits, usage = limits_and_usage(session, user_id, now, tz_name)
    daily, monthly = effective_limits(limits, default_daily, default_monthly)
    if usage.used_today + image_count > daily:
        raise QuotaExceeded("daily", daily, usage.used_today, quota_periods(now, tz_name).day_end)
    if usage.used_this_month + image_count > monthly:
        raise QuotaExceeded("monthly", monthly, usage.used_this_month, quota_periods(now, tz_name).month_end)


def create_task_within_quota(
    session: Session,
    record: TaskRecord,
    *,
    default_daily: int,
    default_monthly: int,
    now: datetime,
    tz_name: str = "UTC",
) -> TaskRecord:
    """Insert ``record`` unless its images would exceed the user's daily or monthly limit, and count
    them in the user's usage counters in the same transaction.

    The user's row is locked (``SELECT … FOR UPDATE`` on PostgreSQL; on SQLite the transaction
    starts with ``BEGIN IMMEDIATE``, taking the write lock before the usage is read) so two
    concurrent submissions cannot both take the last unit.
    """
    if record.user_id is not None:
        _begin_immediate_on_sqlite(session)
        check_quota(
            session,
            record.user_id,
            record.image_count,
            default_daily=default_daily,
            default_monthly=default_monthly,
            now=now,
            tz_name=tz_name,
        )
    session.add(record)
    session.flush()
    records_added(session, [record])
    return record


def insert_task_within_quota(
    session: Session,
    row: dict[str, Any],
    *,
    default_daily: int,
    default_monthly: int,
    now: datetime,
    tz_name: str = "UTC",
) -> None:
    """:func:`create_task_within_quota` for a transaction begun with :func:`begin_write` that makes
    many writes (the registry's writer thread): ``row`` holds every column of the record, and it
    is inserted without building an ORM object (most of the cost of a small write)."""
    if row["user_id"] is not None:
        check_quota(
            session,
            row["user_id"],
            row["image_count"],
            default_daily=default_daily,
            default_monthly=default_monthly,
            now=now,
            tz_name=tz_name,
        )
    # Held back in the registry's writer (storage.db.write_later): its batch's records are written
    # in one statement. The counters move in the same transaction either way.
    write_later(session, _INSERT_TASK, row)
    add_usage(session, [(row["user_id"], row["created_at"], row["image_count"])], zone=tz_name)


def begin_write(session: Session) -> None:
    """Start the session's transaction holding SQLite's write lock (``BEGIN IMMEDIATE``), as a quota
    check needs; nothing on other databases (the check locks the user's row there)."""
    _begin_immediate_on_sqlite(session)


def _begin_immediate_on_sqlite(session: Session) -> None:
    connection = session.connection()
    if connection.dialect.name != "sqlite":
        return
    dbapi_connection = connection.connection.dbapi_connection
    if dbapi_connection is None or dbapi_connection.in_transaction:
        raise RuntimeError("create_task_within_quota must start its own transaction on SQLite")
    connection.exec_driver_sql("BEGIN IMMEDIATE")


# ---------------------------------------------------------------- history


@dataclass(frozen=True)
class HistoryFilter:
    user_id: Optional[int] = None
    status: Optional[str] = None
    task_type: Optional[str] = None
    start_date: Optional[datetime] = None
    end_date: Optional[datetime] = None


def _where(f: HistoryFilter) -> list[Any]:
    clauses: list[Any] = []
    if f.user_id is not None:
        clauses.append(TaskRecord.user_id == f.user_id)
    if f.status:
        clauses.append(TaskRecord.status == f.status)
    if f.task_type:
        clauses.append(TaskRecord.task_type == f.task_type)
    if f.start_date:
        clauses.append(TaskRecord.created_at >= f.start_date)
    if f.end_date:
        clauses.append(TaskRecord.created_at <= f.end_date)
    return clauses


@dataclass(frozen=True)
class Page:
    items: Sequence[TaskRecord]
    total: int
    page: int
    page_size: int

    @property
    def total_pages(self) -> int:
        return math.ceil(self.total / self.page_size) if self.total else 0


def history_page(session: Session, f: HistoryFilter, page: int = 1, page_size: int = 20) -> Page:
    """One page of task records, newest first, counted and sliced in SQL."""
    clauses = _where(f)
    total = session.exec(select(func.count()).select_from(TaskRecord).where(*clauses)).one()
    items = session.exec(
        select(TaskRecord)
        .where(*clauses)
        .order_by(col(TaskRecord.created_at).desc(), col(TaskRecord.id).desc())
        .offset((page - 1) * page_size)
        .limit(page_size)
    ).all()
    return Page(items, int(total), page, page_size)


def get_task_record(session: Session, task_id: str, user_id: Optional[int] = None) -> Optional[TaskRecord]:
    """A record by task id; with ``user_id``, only if that user owns it."""
    query = select(TaskRecord).where(TaskRecord.task_id == task_id)
    if user_id is not None:
        query = query.where(TaskRecord.user_id == user_id)
    return session.exec(query).first()


# ---------------------------------------------------------------- statistics


def statistics(session: Session, user_id: Optional[int] = None, *, today_start: Optional[datetime] = None) -> dict:
    """Counts per status and type, and execution-time sums over completed tasks, in one query."""
    completed = col(TaskRecord.status) == TaskStatus.completed.value

    def count_if(cond):
        return func.coalesce(func.sum(case((cond, 1), else_=0)), 0)

    columns = [
        func.count(col(TaskRecord.id)),
        count_if(completed),
        count_if(TaskRecord.status == TaskStatus.failed.value),
        count_if(TaskRecord.status == TaskStatus.pending.value),
        count_if(TaskRecord.status == TaskStatus.running.value),
        count_if(TaskRecord.status == TaskStatus.cancelled.value),
        *(count_if(TaskRecord.task_type == task_type.value) for task_type in TaskType),
        func.avg(case((and_(completed, col(TaskRecord.execution_time).is_not(None)), TaskRecord.execution_time))),
        func.coalesce(func.sum(case((completed, TaskRecord.execution_time), else_=0.0)), 0.0),
    ]
    if today_start is not None:
        columns.append(count_if(TaskRecord.created_at >= today_start))
        columns.append(func.count(func.distinct(TaskRecord.user_id)))
    query = select(*columns)
    if user_id is not None:
        query = query.where(TaskRecord.user_id == user_id)
    row = session.exec(query).one()
    stats: dict[str, Any] = {
        "total_tasks": int(row[0]),
        "completed_tasks": int(row[1]),
        "failed_tasks": int(row[2]),
        "pending_tasks": int(row[3]),
        "running_tasks": int(row[4]),
        "cancelled_tasks": int(row[5]),
        # One count per task type (the kind table's): text_to_image_count, image_edit_count, …
        **{f"{task_type.value}_count": int(row[6 + n]) for n, task_type in enumerate(TaskType)},
    }
    rest = 6 + len(TaskType)
    stats["avg_execution_time"] = round(float(row[rest]), 3) if row[rest] is not None else 0.0
    stats["total_execution_time"] = round(float(row[rest + 1] or 0.0), 3)
    if today_start is not None:
        stats["today_tasks"] = int(row[rest + 2])
        stats["active_users"] = int(row[rest + 3])
    return stats


# ---------------------------------------------------------------- registry support


def unfinished_tasks(session: Session) -> Sequence[TaskRecord]:
    """Tasks a restarted registry must pick up again, oldest first."""
    return session.exec(
        select(TaskRecord).where(col(TaskRecord.status).in_(UNFINISHED)).order_by(TaskRecord.created_at, TaskRecord.id)
    ).all()


def old_finished_tasks(session: Session, before: datetime, limit: int = 1000) -> Sequence[TaskRecord]:
    """Finished records created before ``before`` (never pending or running ones)."""
    return session.exec(
        select(TaskRecord)
        .where(TaskRecord.created_at < before, not_(col(TaskRecord.status).in_(UNFINISHED)))
        .order_by(TaskRecord.id)
        .limit(limit)
    ).all()


__all__ = [
    "Periods",
    "quota_periods",
    "Usage",
    "quota_usage",
    "current_usage",
    "QuotaExceeded",
    "effective_limits",
    "check_quota",
    "create_task_within_quota",
    "insert_task_within_quota",
    "begin_write",
    "HistoryFilter",
    "Page",
    "history_page",
    "get_task_record",
    "statistics",
    "unfinished_tasks",
    "old_finished_tasks",
]
