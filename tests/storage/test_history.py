"""History pages: newest first, every filter, exact totals, against directly inserted records."""

from __future__ import annotations

import itertools
import math
from datetime import timedelta
from zoneinfo import ZoneInfo

import pytest
from sqlmodel import Session

from storage import TaskStatus, TaskType
from storage.tasks import HistoryFilter, get_task_record, history_page
from tests.storage.seed import T0, add_tasks, add_user, task

pytestmark = pytest.mark.unit

STATUSES = [s.value for s in TaskStatus]
TYPES = [t.value for t in TaskType]


@pytest.fixture
def seeded(engine):
    """31 records over three users, every status and type, one hour apart, two sharing a timestamp."""
    users = [add_user(engine).id for _ in range(3)]
    combos = itertools.cycle(itertools.product(STATUSES, TYPES))
    records = []
    for i in range(30):
        status, task_type = next(combos)
        records.append(task(users[i % 3], T0 + timedelta(hours=i), status=status, task_type=task_type))
    records.append(task(users[0], T0 + timedelta(hours=29), status="completed"))  # same instant as #29
    add_tasks(engine, *records)
    return users, records


def newest_first(records):
    return sorted(records, key=lambda r: (r.created_at, r.id), reverse=True)


def all_pages(session, f: HistoryFilter, page_size: int):
    first = history_page(session, f, 1, page_size)
    items = list(first.items)
    for page in range(2, first.total_pages + 1):
        items += history_page(session, f, page, page_size).items
    return first, items


def test_unfiltered_history_is_every_record_newest_first(engine, seeded):
    _, records = seeded
    with Session(engine) as session:
        page = history_page(session, HistoryFilter(), 1, 100)
    assert [r.task_id for r in page.items] == [r.task_id for r in newest_first(records)]
    assert page.total == 31


def test_records_created_at_the_same_instant_come_newest_id_first(engine, seeded):
    _, records = seeded
    with Session(engine) as session:
        top = history_page(session, HistoryFilter(), 1, 2).items
    assert top[0].created_at == top[1].created_at
    assert top[0].id > top[1].id
    assert top[0].task_id == records[-1].task_id


@pytest.mark.parametrize("page_size", [1, 7, 10, 31, 100])
def test_pages_partition_the_history_with_exact_totals(engine, seeded, page_size):
    _, records = seeded
    with Session(engine) as session:
        first, items = all_pages(session, HistoryFilter(), page_size)
    assert first.total == 31
    assert first.total_pages == math.ceil(31 / page_size)
    assert (first.page, first.page_size) == (1, page_size)
    assert [r.task_id for r in items] == [r.task_id for r in newest_first(records)]


def test_last_page_holds_the_remainder_and_a_page_past_the_end_is_empty(engine, seeded):
    with Session(engine) as session:
        last = history_page(session, HistoryFilter(), 4, 10)
        beyond = history_page(session, HistoryFilter(), 5, 10)
    assert len(last.items) == 1
    assert beyond.items == [] and beyond.total == 31 and beyond.total_pages == 4


def test_empty_history_has_zero_pages(engine):
    with Session(engine) as session:
        page = history_page(session, HistoryFilter(), 1, 20)
    assert (page.items, page.total, page.total_pages) == ([], 0, 0)


@pytest.mark.parametrize("status", STATUSES)
def test_filter_by_status(engine, seeded, status):
    _, records = seeded
    expected = newest_first([r for r in records if r.status == status])
    with Session(engine) as session:
        first, items = all_pages(session, HistoryFilter(status=status), 4)
    assert expected, "the seed covers every status"
    assert first.total == len(expected)
    assert [r.task_id for r in items] == [r.task_id for r in expected]


@pytest.mark.parametrize("task_type", TYPES)
def test_filter_by_task_type(engine, seeded, task_type):
    _, records = seeded
    expected = newest_first([r for r in records if r.task_type == task_type])
    with Session(engine) as session:
        first, items = all_pages(session, HistoryFilter(task_type=task_type), 4)
    assert first.total == len(expected) > 0
    assert [r.task_id for r in items] == [r.task_id for r in expected]


def test_filter_by_user_sees_only_that_users_records(engine, seeded):
    users, records = seeded
    for user_id in users:
        expected = newest_first([r for r in records if r.user_id == user_id])
        with Session(engine) as session:
            first, items = all_pages(session, HistoryFilter(user_id=user_id), 5)
        assert first.total == len(expected)
        assert {r.user_id for r in items} == {user_id}
        assert [r.task_id for r in items] == [r.task_id for r in expected]


def test_filters_combine(engine, seeded):
    users, records = seeded
    f = HistoryFilter(
        user_id=users[1], status="completed", task_type="text_to_image", start_date=T0 + timedelta(hours=3)
    )
    expected = newest_first(
        [
            r
            for r in records
            if r.user_id == users[1]
            and r.status == "completed"
            and r.task_type == "text_to_image"
            and r.created_at >= f.start_date
        ]
    )
    with Session(engine) as session:
        page = history_page(session, f, 1, 100)
    assert [r.task_id for r in page.items] == [r.task_id for r in expected]
    assert page.total == len(expected)


def test_start_date_includes_a_record_created_exactly_then(engine, seeded):
    _, _records = seeded
    boundary = T0 + timedelta(hours=10)
    with Session(engine) as session:
        at = history_page(session, HistoryFilter(start_date=boundary), 1, 100)
        after = history_page(session, HistoryFilter(start_date=boundary + timedelta(microseconds=1)), 1, 100)
    assert at.total == 21 and at.items[-1].created_at == boundary
    assert after.total == 20 and min(r.created_at for r in after.items) == T0 + timedelta(hours=11)


def test_end_date_includes_a_record_created_exactly_then(engine, seeded):
    boundary = T0 + timedelta(hours=10)
    with Session(engine) as session:
        at = history_page(session, HistoryFilter(end_date=boundary), 1, 100)
        before = history_page(session, HistoryFilter(end_date=boundary - timedelta(microseconds=1)), 1, 100)
    assert at.total == 11 and at.items[0].created_at == boundary
    assert before.total == 10 and max(r.created_at for r in before.items) == T0 + timedelta(hours=9)


def test_date_range_is_inclusive_at_both_ends(engine, seeded):
    start, end = T0 + timedelta(hours=5), T0 + timedelta(hours=8)
    with Session(engine) as session:
        page = history_page(session, HistoryFilter(start_date=start, end_date=end), 1, 100)
    assert [r.created_at for r in page.items] == [T0 + timedelta(hours=h) for h in (8, 7, 6, 5)]


def test_dates_in_another_time_zone_mean_the_same_instant(engine, seeded):
    shanghai = ZoneInfo("Asia/Shanghai")
    start = (T0 + timedelta(hours=5)).astimezone(shanghai)
    end = (T0 + timedelta(hours=8)).astimezone(shanghai)
    with Session(engine) as session:
        page = history_page(session, HistoryFilter(start_date=start, end_date=end), 1, 100)
    assert page.total == 4


def test_get_task_record_by_id_and_owner(engine, seeded):
    users, records = seeded
    record = records[4]
    with Session(engine) as session:
        assert get_task_record(session, record.task_id).id == record.id
        assert get_task_record(session, record.task_id, user_id=record.user_id).id == record.id
        other = next(u for u in users if u != record.user_id)
        assert get_task_record(session, record.task_id, user_id=other) is None
        assert get_task_record(session, "no-such-task") is None
