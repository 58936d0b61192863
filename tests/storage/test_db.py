"""Engine set-up, schema creation and how timestamps are stored."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.exc import IntegrityError, StatementError
from sqlmodel import Session, select

from storage import TaskRecord, User, init_db, session_scope
from storage.db import SQLITE_BUSY_TIMEOUT_MS
from tests.storage.seed import add_tasks, add_user, task

pytestmark = pytest.mark.unit

TABLES = {"users", "task_records"}


def test_sqlite_connections_have_wal_busy_timeout_and_foreign_keys(sqlite_engine):
    with sqlite_engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == SQLITE_BUSY_TIMEOUT_MS
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1


def test_sqlite_pragmas_hold_on_every_pooled_connection(sqlite_engine):
    connections = [sqlite_engine.connect() for _ in range(3)]
    try:
        assert [c.exec_driver_sql("PRAGMA foreign_keys").scalar() for c in connections] == [1, 1, 1]
    finally:
        for c in connections:
            c.close()


def test_init_db_creates_the_tables_and_indexes(blank_engine):
    assert not TABLES & set(inspect(blank_engine).get_table_names())
    init_db(blank_engine)
    inspector = inspect(blank_engine)
    assert set(inspector.get_table_names()) >= TABLES
    indexes = {ix["name"] for ix in inspector.get_indexes("task_records")}
    assert {"ix_task_records_user_created", "ix_task_records_status_created", "ix_task_records_type_created"} <= indexes


def test_init_db_twice_keeps_existing_rows(engine):
    user = add_user(engine, "keeper")
    init_db(engine)
    with Session(engine) as session:
        assert session.get(User, user.id).username == "keeper"


def test_init_db_from_several_threads_at_once_succeeds(blank_engine):
    barrier = threading.Barrier(6)
    errors: list[BaseException] = []

    def create() -> None:
        try:
            barrier.wait()
            init_db(blank_engine)
        except BaseException as exc:  # reported below with the others
            errors.append(exc)

    threads = [threading.Thread(target=create) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert set(inspect(blank_engine).get_table_names()) >= TABLES
    add_user(blank_engine, "after-concurrent-init")


def test_aware_timestamps_come_back_aware_in_utc(engine):
    shanghai = datetime(2024, 3, 1, 8, 30, 15, 250000, tzinfo=ZoneInfo("Asia/Shanghai"))
    [record] = add_tasks(engine, task(None, shanghai))
    with Session(engine) as session:
        stored = session.exec(select(TaskRecord).where(TaskRecord.id == record.id)).one()
    assert stored.created_at.tzinfo == timezone.utc
    assert stored.created_at == shanghai
    assert stored.created_at.hour == 0 and stored.created_at.microsecond == 250000
    assert stored.started_at == shanghai + timedelta(seconds=1)


def test_raw_stored_value_is_the_utc_wall_time(engine):
    add_tasks(engine, task(None, datetime(2024, 3, 1, 8, 30, tzinfo=ZoneInfo("Asia/Shanghai"))))
    with engine.connect() as conn:
        raw = conn.execute(text("SELECT created_at FROM task_records")).scalar()
    assert str(raw).startswith("2024-03-01 00:30:00")


def test_naive_timestamps_are_refused(engine):
    with pytest.raises(StatementError, match="naive datetimes are ambiguous"), session_scope(engine) as session:
        session.add(task(None, datetime(2024, 3, 1, 8, 30)))


def test_naive_timestamps_are_refused_in_filters_too(engine):
    with Session(engine) as session, pytest.raises(StatementError, match="naive"):
        session.exec(select(TaskRecord).where(TaskRecord.created_at >= datetime(2024, 1, 1))).all()


def test_task_of_unknown_user_is_refused_by_the_foreign_key(engine):
    with pytest.raises(IntegrityError):
        add_tasks(engine, task(999_999, datetime(2024, 1, 1, tzinfo=timezone.utc)))


def test_deleting_a_user_keeps_their_tasks_without_owner(engine):
    user = add_user(engine)
    [record] = add_tasks(engine, task(user.id, datetime(2024, 1, 1, tzinfo=timezone.utc)))
    with session_scope(engine) as session:
        session.delete(session.get(User, user.id))
    with Session(engine) as session:
        assert session.get(TaskRecord, record.id).user_id is None


def test_session_scope_rolls_back_on_error(engine):
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        session.add(User(username="ghost", hashed_password="x"))
        session.flush()
        raise RuntimeError("boom")
    with Session(engine) as session:
        assert session.exec(select(User).where(User.username == "ghost")).first() is None
