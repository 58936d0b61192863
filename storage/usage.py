"""Quota usage counters: what a user has used today, this month and in total, read in three primary-key
look-ups instead of summed over their whole history.

Every change of a task record that moves usage calls in here in its own transaction: a task created
(+ its images), a task failed or cancelled before it started (its images given back), records deleted
by clean-up (their images leave the counts, as they leave a count of the rows). The counters then
always equal :func:`storage.tasks.quota_usage`, the count over the rows, which stays as the reference.

Days and months are those of one time zone (``QUOTA_TIMEZONE``), named in ``usage_counter_zone``. A
check in another zone rebuilds the counters from the records once (under the write lock the quota
check holds), so the counts are exact after a change of the setting too.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, Optional
from zoneinfo import ZoneInfo

from sqlalchemy import Integer, Table, any_, bindparam, delete, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, NoResultFound
from sqlmodel import Session

from storage.db import run_held_writes
from storage.tables import TaskRecord, TaskStatus, UsageCounter, UsageCounterZone, User

# The tables as SQLAlchemy Core sees them (SQLModel sets __table__, which its stubs do not declare).
COUNTERS: Table = UsageCounter.__table__  # type: ignore[attr-defined]
ZONE: Table = UsageCounterZone.__table__  # type: ignore[attr-defined]
TASKS: Table = TaskRecord.__table__  # type: ignore[attr-defined]
USERS: Table = User.__table__  # type: ignore[attr-defined]

# Statements built once: a quota check runs on every submission, and building a statement costs more
# than running it on SQLite.
_ZONE_OF_COUNTERS = select(ZONE.c.zone).where(ZONE.c.id == 1)
_USAGE_OF_USER = select(COUNTERS.c.period, COUNTERS.c.images).where(
    COUNTERS.c.user_id == bindparam("user_id"),
    ((COUNTERS.c.period == "day") & (COUNTERS.c.start == bindparam("day")))
    | ((COUNTERS.c.period == "month") & (COUNTERS.c.start == bindparam("month")))
    | (COUNTERS.c.period == "total"),
)
_ADD_TO_COUNTER: dict[str, Any] = {}


def _images_counted(period: str, start: Any) -> Any:
    return (
        select(COUNTERS.c.images)
        .where(COUNTERS.c.user_id == USERS.c.id, COUNTERS.c.period == period, COUNTERS.c.start == start)
        .scalar_subquery()
    )


def _quota_statements(users: Any) -> tuple[Any, Any]:
    """(lock, read) of the quota check for the users ``users`` selects. The read: their limits, the
    counters' zone and their three counters, in one statement. The lock: on PostgreSQL their rows
    are locked first (in id order, as every batch does: no deadlock between two), until the
    transaction ends, so two checks of one user never overlap. Not in the read: a statement reads
    what was committed when it began, so counters read by the statement that waited for the lock
    would miss what the holder of the lock wrote; the read after the lock sees it. (SQLite holds its
    write lock from the start: BEGIN IMMEDIATE.)"""
    read = select(
        USERS.c.id,
        USERS.c.daily_limit,
        USERS.c.monthly_limit,
        select(ZONE.c.zone).where(ZONE.c.id == 1).scalar_subquery().label("zone"),
        _images_counted("day", bindparam("day")).label("day"),
        _images_counted("month", bindparam("month")).label("month"),
        _images_counted("total", "").label("total"),
    ).where(users)
    lock = select(USERS.c.id).where(users).order_by(USERS.c.id).with_for_update()
    return lock, read


_LOCK_USERS, _READ_USERS = _quota_statements(USERS.c.id.in_(bindparam("user_ids", expanding=True)))
# psycopg: the ids as one array, so that the SQL is the same for any number of users (compiled once).
_LOCK_USERS_PG, _READ_USERS_PG = _quota_statements(
    USERS.c.id == any_(bindparam("user_ids", type_=postgresql.ARRAY(Integer)))
)

# session.info key of the counter changes a transaction holds back (see buffer_usage).
_HELD_BACK = "usage_held_back"
# session.info key of the quota reads made for a batch of checks (see read_quotas).
_QUOTAS_READ = "quotas_read"


def _add_to_counter(dialect: str) -> Any:
    """``INSERT … ON CONFLICT DO UPDATE SET images = images + :images``, run with many rows at once."""
    if dialect not in _ADD_TO_COUNTER:
        insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
        statement = insert(COUNTERS).values(
            user_id=bindparam("user_id"), period=bindparam("period"), start=bindparam("start"), images=bindparam("n")
        )
        _ADD_TO_COUNTER[dialect] = statement.on_conflict_do_update(
            index_elements=["user_id", "period", "start"],
            set_={"images": COUNTERS.c.images + statement.excluded.images},
        )
    return _ADD_TO_COUNTER[dialect]


@dataclass(frozen=True)
class Usage:
    used_today: int
    used_this_month: int
    total_used: int


def counts_toward_quota(status: str, started_at: Optional[datetime]) -> bool:
    """Failed tasks and cancelled tasks that never started give their quota back."""
    if status == TaskStatus.failed.value:
        return False
    return not (status == TaskStatus.cancelled.value and started_at is None)


def period_keys(moment: datetime, zone: str) -> tuple[str, str]:
    """The day (``YYYY-MM-DD``) and month (``YYYY-MM``) of ``moment`` in ``zone``."""
    if moment.tzinfo is None:  # a naive value read without the column type is UTC
        moment = moment.replace(tzinfo=timezone.utc)
    local = moment.astimezone(ZoneInfo(zone))
    return local.date().isoformat(), local.strftime("%Y-%m")


def _keys(user_id: int, created_at: datetime, zone: str) -> list[tuple[int, str, str]]:
    day, month = period_keys(created_at, zone)
    return [(user_id, "day", day), (user_id, "month", month), (user_id, "total", "")]


def _upsert(connection: Connection, amounts: Counter[tuple[int, str, str]]) -> None:
    """Add each amount to its counter, creating counters that do not exist yet."""
    rows = [dict(user_id=u, period=p, start=s, n=n) for (u, p, s), n in amounts.items() if n]
    if rows:
        connection.execute(_add_to_counter(connection.dialect.name), rows)


def counter_zone(connection: Connection) -> str:
    """The zone the counters are kept in; "" while they have not been built."""
    return connection.execute(_ZONE_OF_COUNTERS).scalar() or ""


def buffer_usage(session: Session) -> None:
    """Hold back the counter changes of ``session``'s transaction until :func:`flush_usage`, which
    writes them all in one statement: a transaction that creates many tasks (the registry's writer
    thread) then moves the counters once instead of once per task. Quota checks made meanwhile in
    the same transaction add what is held back to what they read, so they stay exact."""
    session.info[_HELD_BACK] = Counter()


def flush_usage(session: Session) -> None:
    """Write the counter changes held back since :func:`buffer_usage` (call it before the commit)."""
    held: Optional[Counter[tuple[int, str, str]]] = session.info.pop(_HELD_BACK, None)
    session.info.pop(_QUOTAS_READ, None)  # the counters now hold what was held back
    if held:
        _upsert(session.connection(), held)


def add_usage(
    session: Session, changes: Iterable[tuple[Optional[int], datetime, int]], zone: Optional[str] = None
) -> None:
    """Move the counters by ``(user_id, created_at, images)`` (images < 0 gives them back); ``zone``:
    the counters' zone when the caller has just read it."""
    connection = session.connection()
    zone = zone if zone is not None else counter_zone(connection)
    if not zone:
        return  # not built yet: the first quota check builds them from the records, these included
    held: Optional[Counter[tuple[int, str, str]]] = session.info.get(_HELD_BACK)
    amounts: Counter[tuple[int, str, str]] = Counter() if held is None else held
    for user_id, created_at, images in changes:
        if user_id is not None and images:
            for key in _keys(user_id, created_at, zone):
                amounts[key] += images
    if held is None:
        session.info.pop(_QUOTAS_READ, None)
        _upsert(connection, amounts)


def _rebuild(session: Session, zone: str) -> None:
    """:func:`rebuild_counters` within ``session``: what it holds back is already in the records it
    counts (every change held back came with its record's write), so it is dropped, not added again."""
    run_held_writes(session)  # the records it counts are all written first
    rebuild_counters(session.connection(), zone)
    session.info.pop(_QUOTAS_READ, None)
    if _HELD_BACK in session.info:
        session.info[_HELD_BACK] = Counter()


def _with_held_back(session: Session, user_id: int, day: str, month: str, usage: Usage) -> Usage:
    held: Optional[Counter[tuple[int, str, str]]] = session.info.get(_HELD_BACK)
    if not held:
        return usage
    return Usage(
        usage.used_today + held[(user_id, "day", day)],
        usage.used_this_month + held[(user_id, "month", month)],
        usage.total_used + held[(user_id, "total", "")],
    )


def rebuild_counters(connection: Connection, zone: str) -> None:
    """Every counter recounted from the task records, days and months in ``zone``."""
    amounts: Counter[tuple[int, str, str]] = Counter()
    rows = connection.execute(
        select(TASKS.c.user_id, TASKS.c.created_at, TASKS.c.image_count, TASKS.c.status, TASKS.c.started_at).where(
            TASKS.c.user_id.is_not(None)
        )
    )
    for user_id, created_at, images, status, started_at in rows:
        if counts_toward_quota(status, started_at):
            for key in _keys(user_id, created_at, zone):
                amounts[key] += images
    connection.execute(delete(COUNTERS))
    _upsert(connection, amounts)
    if connection.execute(update(ZONE).where(ZONE.c.id == 1).values(zone=zone)).rowcount == 0:
        connection.execute(ZONE.insert().values(id=1, zone=zone))


def ensure_counters(session: Session, zone: str) -> None:
    """Counters kept in ``zone``, rebuilt from the records when they are not (first use, or the quota
    time zone changed). Call it holding the write lock (the quota check does)."""
    if counter_zone(session.connection()) != zone:
        _rebuild(session, zone)


def counted_usage(session: Session, user_id: int, now: datetime, zone: str) -> Usage:
    """``user_id``'s usage today, this month (in ``zone``, at ``now``) and in total: three look-ups."""
    ensure_counters(session, zone)
    day, month = period_keys(now, zone)
    rows = session.connection().execute(_USAGE_OF_USER, dict(user_id=user_id, day=day, month=month))
    found = dict(rows.tuples().all())
    usage = Usage(int(found.get("day", 0)), int(found.get("month", 0)), int(found.get("total", 0)))
    return _with_held_back(session, user_id, day, month, usage)


def read_quotas(session: Session, user_ids: Iterable[Optional[int]], now: datetime, zone: str) -> None:
    """Before a batch of quota checks in one transaction that holds its counter changes back
    (:func:`buffer_usage`): lock all their users at once and read their limits and counters, so
    that each check (:func:`limits_and_usage`) answers from this read, plus what the transaction
    has held back since, instead of reading on its own. Exact: the users stay locked until the
    commit, and the counters move only by what is held back meanwhile (a rebuild drops the read)."""
    ids = sorted({user_id for user_id in user_ids if user_id is not None})
    if not ids or _HELD_BACK not in session.info:
        return
    day, month = period_keys(now, zone)
    rows = _lock_and_read(session.connection(), ids, day, month)
    if all(row.zone == zone for row in rows.values()):  # else the first check rebuilds the counters
        session.info[_QUOTAS_READ] = (zone, day, month, rows)


def limits_and_usage(session: Session, user_id: int, now: datetime, zone: str) -> tuple[Any, Usage]:
    """What a quota check reads: the row of ``user_id``'s limits (``daily_limit``, ``monthly_limit``;
    locked until the transaction ends) and its usage as :func:`counted_usage` gives it (counters
    rebuilt first when they are not kept in ``zone``). From :func:`read_quotas` when it read them."""
    day, month = period_keys(now, zone)
    read = session.info.get(_QUOTAS_READ)
    row = read[3].get(user_id) if read is not None and read[:3] == (zone, day, month) else None
    if row is None:
        row = _lock_and_read(session.connection(), [user_id], day, month).get(user_id)
        if row is None:
            raise NoResultFound(f"no user {user_id}")
        if row.zone != zone:
            _rebuild(session, zone)
            row = _lock_and_read(session.connection(), [user_id], day, month)[user_id]
    usage = Usage(int(row.day or 0), int(row.month or 0), int(row.total or 0))
    return row, _with_held_back(session, user_id, day, month, usage)


def _lock_and_read(connection: Connection, user_ids: list[int], day: str, month: str) -> dict[int, Any]:
    """The quota rows of ``user_ids`` (see _quota_statements), by user id, their rows locked."""
    params = dict(user_ids=user_ids, day=day, month=month)
    rows: Sequence[Any]
    if connection.dialect.driver == "psycopg" and _pipelines_supported():
        rows = _lock_and_read_in_one_trip(connection, params)
    else:
        if connection.dialect.name != "sqlite":
            connection.execute(_LOCK_USERS, {"user_ids": user_ids})
        rows = connection.execute(_READ_USERS, params).all()
    return {row.id: row for row in rows}


def _pipelines_supported() -> bool:
    """psycopg's pipeline mode needs libpq 14 or later (the psycopg[binary] wheels bundle one)."""
    import psycopg

    return psycopg.Pipeline.is_supported()


# The statements of _lock_and_read_in_one_trip as psycopg takes them, compiled once per dialect.
_COMPILED_FOR_PSYCOPG: dict[int, tuple[str, str, dict[str, Any]]] = {}


def _lock_and_read_in_one_trip(connection: Connection, params: dict[str, Any]) -> list[Any]:
    """PostgreSQL through psycopg: the lock and the read after it, sent in one pipeline. The server
    still runs them one after the other (the read begins once the locks are held, and sees what
    their last holder committed), but the client waits for the network once, not twice."""
    import psycopg
    from psycopg.rows import namedtuple_row

    compiled = _COMPILED_FOR_PSYCOPG.get(id(connection.dialect))
    if compiled is None:
        read = _READ_USERS_PG.compile(dialect=connection.dialect)
        compiled = str(_LOCK_USERS_PG.compile(dialect=connection.dialect)), str(read), dict(read.params)
        _COMPILED_FOR_PSYCOPG[id(connection.dialect)] = compiled
    lock_sql, read_sql, literals = compiled
    driver: Any = connection.connection.driver_connection  # a psycopg.Connection
    try:
        with driver.pipeline(), driver.cursor(row_factory=namedtuple_row) as cursor:
            cursor.execute(lock_sql, {"user_ids": params["user_ids"]})
            cursor.execute(read_sql, {**literals, **params})
            return cursor.fetchall()
    except psycopg.Error as exc:  # as SQLAlchemy would have raised it (the writer tells "unreachable" by it)
        raise DBAPIError.instance(read_sql, params, exc, psycopg.Error, dialect=connection.dialect) from exc


def task_changed(session: Session, task_id: str, values: dict[str, Any]) -> None:
    """Before ``values`` (status, started_at, …) are written to the task's record: give its images
    back when the change makes it stop counting (a task failed, or cancelled before it started).
    A finished record never changes status again, so a record that stopped counting stays so."""
    status = values.get("status")
    if status is None or counts_toward_quota(status, values.get("started_at")):
        return
    old = (
        session.connection()
        .execute(
            select(TASKS.c.user_id, TASKS.c.created_at, TASKS.c.image_count, TASKS.c.status, TASKS.c.started_at).where(
                TASKS.c.task_id == task_id
            )
        )
        .first()
    )
    if old is not None and counts_toward_quota(old.status, old.started_at):
        add_usage(session, [(old.user_id, old.created_at, -old.image_count)])


def records_deleted(session: Session, records: Iterable[TaskRecord]) -> None:
    """Before ``records`` are deleted: their images leave the counts."""
    add_usage(
        session,
        [(r.user_id, r.created_at, -r.image_count) for r in records if counts_toward_quota(r.status, r.started_at)],
    )


def records_added(session: Session, records: Iterable[TaskRecord]) -> None:
    """After ``records`` were inserted by other means than the quota check (imports, fixtures)."""
    add_usage(
        session,
        [(r.user_id, r.created_at, r.image_count) for r in records if counts_toward_quota(r.status, r.started_at)],
    )


__all__ = [
    "Usage",
    "counts_toward_quota",
    "period_keys",
    "add_usage",
    "buffer_usage",
    "flush_usage",
    "limits_and_usage",
    "read_quotas",
    "counter_zone",
    "rebuild_counters",
    "ensure_counters",
    "counted_usage",
    "task_changed",
    "records_deleted",
    "records_added",
]
