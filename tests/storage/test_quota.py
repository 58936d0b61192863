"""Quota periods, usage and the quota check at task creation, concurrency included."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session, func, select

from storage import TaskRecord, session_scope
from storage.tasks import QuotaExceeded, create_task_within_quota, quota_periods, quota_usage
from tests.storage.seed import add_tasks, add_user, task

pytestmark = pytest.mark.unit

UTC = timezone.utc


def utc(*args) -> datetime:
    return datetime(*args, tzinfo=UTC)


# ------------------------------------------------------------------ periods

PERIOD_CASES = {
    "utc mid-month": (
        "UTC",
        utc(2024, 6, 15, 12),
        utc(2024, 6, 15),
        utc(2024, 6, 16),
        utc(2024, 6, 1),
        utc(2024, 7, 1),
    ),
    "utc last instant of the year": (
        "UTC",
        utc(2024, 12, 31, 23, 59, 59, 999999),
        utc(2024, 12, 31),
        utc(2025, 1, 1),
        utc(2024, 12, 1),
        utc(2025, 1, 1),
    ),
    "utc first instant of the year": (
        "UTC",
        utc(2025, 1, 1),
        utc(2025, 1, 1),
        utc(2025, 1, 2),
        utc(2025, 1, 1),
        utc(2025, 2, 1),
    ),
    "utc leap day": ("UTC", utc(2024, 2, 29, 10), utc(2024, 2, 29), utc(2024, 3, 1), utc(2024, 2, 1), utc(2024, 3, 1)),
    "utc 31st of a month": (
        "UTC",
        utc(2025, 1, 31, 18),
        utc(2025, 1, 31),
        utc(2025, 2, 1),
        utc(2025, 1, 1),
        utc(2025, 2, 1),
    ),
    "shanghai evening": (
        "Asia/Shanghai",
        utc(2024, 6, 15, 12),
        utc(2024, 6, 14, 16),
        utc(2024, 6, 15, 16),
        utc(2024, 5, 31, 16),
        utc(2024, 6, 30, 16),
    ),
    "shanghai new year already, utc not yet": (
        "Asia/Shanghai",
        utc(2024, 12, 31, 16, 30),
        utc(2024, 12, 31, 16),
        utc(2025, 1, 1, 16),
        utc(2024, 12, 31, 16),
        utc(2025, 1, 31, 16),
    ),
    "shanghai last second of december": (
        "Asia/Shanghai",
        utc(2024, 12, 31, 15, 59, 59),
        utc(2024, 12, 30, 16),
        utc(2024, 12, 31, 16),
        utc(2024, 11, 30, 16),
        utc(2024, 12, 31, 16),
    ),
    "shanghai first of a leap february": (
        "Asia/Shanghai",
        utc(2024, 1, 31, 16, 30),
        utc(2024, 1, 31, 16),
        utc(2024, 2, 1, 16),
        utc(2024, 1, 31, 16),
        utc(2024, 2, 29, 16),
    ),
    "new york spring-forward day is 23 h": (
        "America/New_York",
        utc(2024, 3, 10, 12),
        utc(2024, 3, 10, 5),
        utc(2024, 3, 11, 4),
        utc(2024, 3, 1, 5),
        utc(2024, 4, 1, 4),
    ),
    "new york fall-back day is 25 h": (
        "America/New_York",
        utc(2024, 11, 3, 12),
        utc(2024, 11, 3, 4),
        utc(2024, 11, 4, 5),
        utc(2024, 11, 1, 4),
        utc(2024, 12, 1, 5),
    ),
}


@pytest.mark.parametrize(
    "tz, now, day_start, day_end, month_start, month_end", PERIOD_CASES.values(), ids=PERIOD_CASES.keys()
)
def test_quota_periods(tz, now, day_start, day_end, month_start, month_end):
    periods = quota_periods(now, tz)
    assert (periods.day_start, periods.day_end, periods.month_start, periods.month_end) == (
        day_start,
        day_end,
        month_start,
        month_end,
    )
    for edge in (periods.day_start, periods.day_end, periods.month_start, periods.month_end):
        assert edge.utcoffset() == timedelta(0)
    assert periods.month_start <= periods.day_start <= now < periods.day_end <= periods.month_end


def test_quota_periods_accept_now_in_any_zone():
    now = utc(2024, 6, 15, 12)
    assert quota_periods(now.astimezone(ZoneInfo("America/Los_Angeles")), "Asia/Shanghai") == quota_periods(
        now, "Asia/Shanghai"
    )


# ------------------------------------------------------------------ usage

NOW = utc(2024, 6, 15, 12)


def test_quota_usage_counts_images_and_gives_back_failed_and_never_started(engine):
    me, other = add_user(engine).id, add_user(engine).id
    today, yesterday, last_month = NOW - timedelta(hours=2), NOW - timedelta(days=1), NOW - timedelta(days=20)
    add_tasks(
        engine,
        task(me, today, status="completed", image_count=2),
        task(me, today, status="completed", task_type="batch_edit", image_count=3),
        task(me, today, status="pending"),
        task(me, today, status="running"),
        task(me, today, status="cancelled", started=True),  # it ran: it counts
        task(me, today, status="failed", image_count=4),  # given back
        task(me, today, status="cancelled", started=False, image_count=4),  # never started: given back
        task(me, yesterday, status="completed", image_count=2),
        task(me, last_month, status="completed", image_count=10),
        task(me, last_month, status="failed", image_count=10),
        task(other, today, status="completed", image_count=7),
    )
    with Session(engine) as session:
        usage = quota_usage(session, me, quota_periods(NOW))
    assert (usage.used_today, usage.used_this_month, usage.total_used) == (8, 10, 20)


def test_quota_usage_of_a_user_without_tasks_is_zero(engine):
    me = add_user(engine).id
    with Session(engine) as session:
        usage = quota_usage(session, me, quota_periods(NOW))
    assert (usage.used_today, usage.used_this_month, usage.total_used) == (0, 0, 0)


def test_quota_day_boundary_is_inclusive(engine):
    me = add_user(engine).id
    periods = quota_periods(NOW)
    add_tasks(engine, task(me, periods.day_start), task(me, periods.day_start - timedelta(microseconds=1)))
    with Session(engine) as session:
        usage = quota_usage(session, me, periods)
    assert (usage.used_today, usage.used_this_month) == (1, 2)


# ------------------------------------------------------------------ creation under quota


def submit(engine, user_id, now=NOW, image_count=1, daily=3, monthly=100, tz="UTC") -> TaskRecord:
    with session_scope(engine) as session:
        return create_task_within_quota(
            session,
            task(user_id, now, status="pending", image_count=image_count),
            default_daily=daily,
            default_monthly=monthly,
            now=now,
            tz_name=tz,
        )


def count_tasks(engine, user_id) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(TaskRecord).where(TaskRecord.user_id == user_id)).one()


def test_submission_under_the_limit_is_stored(engine):
    me = add_user(engine).id
    record = submit(engine, me)
    assert record.id is not None
    with Session(engine) as session:
        assert session.get(TaskRecord, record.id).status == "pending"


def test_daily_limit_refuses_with_period_limit_and_reset_time(engine):
    me = add_user(engine).id
    for _ in range(3):
        submit(engine, me)
    with pytest.raises(QuotaExceeded) as refused:
        submit(engine, me)
    assert (refused.value.period, refused.value.limit, refused.value.used) == ("daily", 3, 3)
    assert refused.value.resets_at == utc(2024, 6, 16)
    assert count_tasks(engine, me) == 3


def test_a_batch_needs_room_for_all_its_images(engine):
    me = add_user(engine).id
    submit(engine, me, image_count=2)
    with pytest.raises(QuotaExceeded):
        submit(engine, me, image_count=2)
    submit(engine, me, image_count=1)
    assert count_tasks(engine, me) == 2


def test_monthly_limit_refuses_with_the_month_end_as_reset(engine):
    me = add_user(engine).id
    for day in range(1, 6):
        submit(engine, me, now=utc(2024, 6, day, 9), monthly=5)
    with pytest.raises(QuotaExceeded) as refused:
        submit(engine, me, monthly=5)
    assert (refused.value.period, refused.value.limit, refused.value.used) == ("monthly", 5, 5)
    assert refused.value.resets_at == utc(2024, 7, 1)
    submit(engine, me, now=utc(2024, 7, 1), monthly=5)  # a new month


def test_a_new_day_resets_the_daily_quota(engine):
    me = add_user(engine).id
    for _ in range(3):
        submit(engine, me)
    with pytest.raises(QuotaExceeded):
        submit(engine, me, now=NOW + timedelta(hours=11, minutes=59))
    submit(engine, me, now=utc(2024, 6, 16))
    assert count_tasks(engine, me) == 4


def test_the_day_follows_the_quota_time_zone(engine):
    me = add_user(engine).id
    late_evening_in_shanghai = utc(2024, 6, 15, 15, 30)  # 23:30 local
    for _ in range(3):
        submit(engine, me, now=late_evening_in_shanghai, tz="Asia/Shanghai")
    after_midnight_in_shanghai = utc(2024, 6, 15, 16, 30)  # 00:30 local, still the 15th in UTC
    with pytest.raises(QuotaExceeded):
        submit(engine, me, now=after_midnight_in_shanghai, tz="UTC")
    submit(engine, me, now=after_midnight_in_shanghai, tz="Asia/Shanghai")


def test_failed_tasks_give_their_quota_back(engine):
    me = add_user(engine).id
    add_tasks(engine, task(me, NOW - timedelta(hours=1), status="failed", image_count=3))
    add_tasks(engine, task(me, NOW - timedelta(hours=1), status="cancelled", started=False, image_count=3))
    for _ in range(3):
        submit(engine, me)
    with pytest.raises(QuotaExceeded):
        submit(engine, me)


def test_per_user_limits_override_the_defaults(engine):
    generous = add_user(engine, daily_limit=5).id
    stingy = add_user(engine, daily_limit=1, monthly_limit=1).id
    for _ in range(5):
        submit(engine, generous)
    submit(engine, stingy)
    with pytest.raises(QuotaExceeded) as refused:
        submit(engine, stingy)
    assert refused.value.limit == 1


def test_a_zero_limit_refuses_everything(engine):
    me = add_user(engine).id
    with pytest.raises(QuotaExceeded) as refused:
        submit(engine, me, daily=0)
    assert refused.value.used == 0


def test_a_task_without_user_is_not_counted_against_anyone(engine):
    record = submit(engine, None, daily=0, monthly=0)
    assert record.id is not None


# ------------------------------------------------------------------ concurrency


def race(engine, user_id: int, submitters: int, daily: int, one_at_a_time: bool = False):
    """``submitters`` threads, each with its own session, submit at the same moment.

    With ``one_at_a_time`` each whole transaction runs under one lock, as in the service, where
    the task registry (a single async actor) is the only caller of ``create_task_within_quota``.
    """
    barrier = threading.Barrier(submitters)
    serial = threading.Lock() if one_at_a_time else None
    accepted, refused, errors = [], [], []

    def transaction() -> None:
        with session_scope(engine) as session:
            create_task_within_quota(
                session, task(user_id, NOW, status="pending"), default_daily=daily, default_monthly=1000, now=NOW
            )

    def submit_one() -> None:
        try:
            barrier.wait()
            if serial is None:
                transaction()
            else:
                with serial:
                    transaction()
            accepted.append(1)
        except QuotaExceeded:
            refused.append(1)
        except BaseException as exc:  # reported by the caller
            errors.append(exc)

    threads = [threading.Thread(target=submit_one) for _ in range(submitters)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    return len(accepted), len(refused), errors


@pytest.mark.parametrize("remaining", [1, 3])
def test_concurrent_submissions_never_exceed_the_quota(engine, remaining):
    """``SELECT … FOR UPDATE`` on the user's row (PostgreSQL) or ``BEGIN IMMEDIATE`` (SQLite)
    makes the check-then-insert atomic."""
    me = add_user(engine).id
    daily = 5
    add_tasks(engine, *[task(me, NOW - timedelta(hours=1)) for _ in range(daily - remaining)])
    accepted, refused, errors = race(engine, me, submitters=12, daily=daily)
    assert errors == []
    assert (accepted, refused) == (remaining, 12 - remaining)
    assert count_tasks(engine, me) == daily


@pytest.mark.parametrize("remaining", [1, 3])
def test_submissions_from_separate_sessions_one_at_a_time_stop_at_the_quota(engine, remaining):
    """Every backend, submissions serialised as the registry serialises them."""
    me = add_user(engine).id
    daily = 5
    add_tasks(engine, *[task(me, NOW - timedelta(hours=1)) for _ in range(daily - remaining)])
    accepted, refused, errors = race(engine, me, submitters=8, daily=daily, one_at_a_time=True)
    assert errors == []
    assert (accepted, refused) == (remaining, 8 - remaining)
    assert count_tasks(engine, me) == daily


# ------------------------------------------------------------------ usage counters


def counters_and_rows(engine, user_id: int, now=NOW, tz="UTC"):
    """(what the counters say, what a count over the rows says) for ``user_id`` at ``now``."""
    from storage.usage import counted_usage

    with session_scope(engine) as session:
        counted = counted_usage(session, user_id, now, tz)
        recounted = quota_usage(session, user_id, quota_periods(now, tz))
    return counted, recounted


def test_usage_counters_equal_a_recount_from_the_rows_after_creations_failures_cancellations_and_cleanup(engine):
    """Every write that moves usage, as the registry makes it; the counters never drift from the rows."""
    from sqlalchemy import update

    from storage.tasks import old_finished_tasks
    from storage.usage import records_deleted, task_changed

    me, other = add_user(engine).id, add_user(engine).id
    moments = [NOW - timedelta(days=40), NOW - timedelta(days=20), NOW - timedelta(days=1), NOW - timedelta(hours=1)]
    created = []
    for n, moment in enumerate(moments * 3):
        user = me if n % 4 else other
        created.append(submit(engine, user, now=moment, image_count=1 + n % 3, daily=100, monthly=1000))

    def change(record, **values):
        with session_scope(engine) as session:
            task_changed(session, record.task_id, values)
            session.exec(update(TaskRecord).where(TaskRecord.task_id == record.task_id).values(**values))

    started = NOW - timedelta(minutes=30)
    change(created[0], status="running", started_at=started)
    change(created[0], status="completed", started_at=started)
    change(created[1], status="failed", started_at=None)  # failed before starting: given back
    change(created[2], status="running", started_at=started)
    change(created[2], status="failed", started_at=started)  # failed while running: given back too
    change(created[2], status="failed", started_at=started)  # the same write again (a retried save)
    change(created[3], status="cancelled", started_at=None)  # cancelled while pending: given back
    change(created[5], status="running", started_at=started)
    change(created[5], status="cancelled", started_at=started)  # it ran: it counts
    change(created[6], status="completed", started_at=started)
    for user in (me, other):
        counted, recounted = counters_and_rows(engine, user)
        assert counted == recounted and counted.total_used > 0

    with session_scope(engine) as session:  # clean-up deletes finished records older than 30 days
        old = list(old_finished_tasks(session, NOW - timedelta(days=30)))
        assert old
        records_deleted(session, old)
        for record in old:
            session.delete(record)
    for user in (me, other):
        counted, recounted = counters_and_rows(engine, user)
        assert counted == recounted
    for later in (NOW + timedelta(days=1), NOW + timedelta(days=40)):  # other days and months
        assert counters_and_rows(engine, me, now=later)[0] == counters_and_rows(engine, me, now=later)[1]


def test_counters_follow_a_change_of_the_quota_time_zone_by_rebuilding_from_the_rows(engine):
    me = add_user(engine).id
    late_evening_in_shanghai = utc(2024, 6, 15, 15, 30)  # 23:30 local
    for _ in range(2):
        submit(engine, me, now=late_evening_in_shanghai, tz="UTC", daily=10)
    counted, recounted = counters_and_rows(engine, me, now=utc(2024, 6, 15, 16, 30), tz="Asia/Shanghai")
    assert counted == recounted and counted.used_today == 0  # a new day in Shanghai
    counted, recounted = counters_and_rows(engine, me, now=utc(2024, 6, 15, 16, 30), tz="UTC")
    assert counted == recounted and counted.used_today == 2


def test_the_quota_check_reads_counters_not_rows(engine):
    """Rows written behind the counters' back are not seen: the check no longer sums the history."""
    me = add_user(engine).id
    submit(engine, me)
    with session_scope(engine) as session:  # a row inserted without counting it (no writer does this)
        session.add(task(me, NOW, status="completed"))
    counted, recounted = counters_and_rows(engine, me)
    assert (counted.used_today, recounted.used_today) == (1, 2)
