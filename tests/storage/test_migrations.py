"""Schema migrations: a fresh database, a database from before migrations, and many starters.

The databases "written by today's code" come from ``tests/storage/legacy/schema_2.0.0.*.sql``:
the statements the 2.0.0 ``init_db`` (``SQLModel.metadata.create_all``) issued, recorded once per
dialect, so these tests keep testing that schema after ``storage/tables.py`` moves on.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Engine
from sqlmodel import Session, SQLModel

from storage import TaskRecord, User, init_db
from storage.db import BASELINE_REVISION, alembic_config

LEGACY = Path(__file__).parent / "legacy"
REPO = Path(__file__).resolve().parents[2]
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()

# Rows as the 2.0.0 code wrote them: naive UTC timestamps, JSON as text, every column used.
USERS = [
    {"id": 1, "username": "alice", "email": "alice@example.com",
     "hashed_password": "$argon2id$v=19$m=65536,t=3,p=4$abc", "is_active": True, "is_admin": True,
     "created_at": datetime(2024, 3, 1, 0, 30, 15, 250000),
     "token_version": 3, "daily_limit": 50, "monthly_limit": 900},
    {"id": 2, "username": "李雷", "email": None, "hashed_password": "$argon2id$v=19$m=65536,t=3,p=4$def",
     "is_active": False, "is_admin": False, "created_at": datetime(2024, 3, 2, 23, 59, 59),
     "token_version": 0, "daily_limit": None, "monthly_limit": None},
]
TASKS = [
    {"id": 1, "task_id": "6f1c2b1e-8a7d-4c36-9a57-0c9d8f1e2a3b", "user_id": 1, "task_type": "text_to_image",
     "prompt": "a cat, 一只猫", "negative_prompt": "blurry", "parameters": {"width": 1328, "height": 1328, "steps": 50},
     "status": "completed", "result_path": "results/6f1c.png", "result_filename": "6f1c.png", "error_message": None,
     "created_at": datetime(2024, 3, 1, 1, 0), "started_at": datetime(2024, 3, 1, 1, 0, 1),
     "completed_at": datetime(2024, 3, 1, 1, 0, 31), "execution_time": 30.25, "image_count": 2,
     "seed": 2**53 + 7, "attempts": 1, "input_keys": []},
    {"id": 2, "task_id": "0b0e4b8e-3a44-4f55-8e0a-8d1a2c3b4d5e", "user_id": 2, "task_type": "batch_edit",
     "prompt": "make it snow", "negative_prompt": None, "parameters": {"prompts": ["snow", "rain"], "cfg": 4.0},
     "status": "failed", "result_path": None, "result_filename": None, "error_message": "out of memory",
     "created_at": datetime(2024, 3, 3, 8, 0), "started_at": datetime(2024, 3, 3, 8, 0, 2),
     "completed_at": datetime(2024, 3, 3, 8, 0, 3), "execution_time": None, "image_count": 2,
     "seed": None, "attempts": 2, "input_keys": ["inputs/a.png", "inputs/b.png"]},
    {"id": 3, "task_id": "9d2c5e6f-1111-4222-8333-944455566677", "user_id": None, "task_type": "image_edit",
     "prompt": "owner deleted", "negative_prompt": None, "parameters": {}, "status": "pending",
     "result_path": None, "result_filename": None, "error_message": None, "created_at": datetime(2024, 3, 4, 12, 0),
     "started_at": None, "completed_at": None, "execution_time": None, "image_count": 1, "seed": 0, "attempts": 0,
     "input_keys": ["inputs/c.png"]},
]
TABLE_ROWS = {"users": USERS, "task_records": TASKS}
JSON_COLUMNS = {"parameters", "input_keys"}


def create_legacy_database(engine: Engine) -> None:
    """The 2.0.0 schema, made by its own statements, with a row of every kind in every table."""
    lines = (LEGACY / f"schema_2.0.0.{engine.dialect.name}.sql").read_text().splitlines()
    ddl = "\n".join(line for line in lines if not line.startswith("--"))
    statements = [s.strip() for s in ddl.split(";\n") if s.strip()]
    with engine.begin() as conn:
        for statement in statements:
            conn.exec_driver_sql(statement)
        for table, rows in TABLE_ROWS.items():
            columns = list(rows[0])
            insert = text(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join(':' + c for c in columns)})")
            for row in rows:
                conn.execute(insert, {c: json.dumps(v) if c in JSON_COLUMNS else v for c, v in row.items()})
        if engine.dialect.name == "postgresql":  # explicit ids leave the sequences behind
            for table, rows in TABLE_ROWS.items():
                conn.exec_driver_sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), {len(rows)})")


def read_rows(engine: Engine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the 2.0.0 tables, as the driver returns them (no ORM in between)."""
    with engine.connect() as conn:
        return {table: [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
                for table in TABLE_ROWS}


def schema_differences(engine: Engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, SQLModel.metadata)


def revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def test_head_is_reached_from_the_baseline():
    assert BASELINE_REVISION in {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def test_fresh_database_is_upgraded_to_head(blank_engine):
    assert revision(blank_engine) is None
    init_db(blank_engine)
    assert revision(blank_engine) == HEAD
    assert set(TABLE_ROWS) | {"alembic_version"} <= set(inspect(blank_engine).get_table_names())


def test_models_and_head_revision_agree(blank_engine):
    """A change to storage/tables.py without a revision that makes it fails here."""
    init_db(blank_engine)
    assert schema_differences(blank_engine) == []


def test_database_from_before_migrations_is_stamped_and_keeps_every_row(blank_engine):
    create_legacy_database(blank_engine)
    before = read_rows(blank_engine)
    assert [len(rows) for rows in before.values()] == [len(USERS), len(TASKS)]

    init_db(blank_engine)

    assert revision(blank_engine) == HEAD
    after = read_rows(blank_engine)
    for table, rows in before.items():
        # Later revisions may add columns; every value that was there is still there.
        assert [{c: row[c] for c in rows[0]} for row in after[table]] == rows
    # The 2.0.0 schema upgraded is the schema the models describe.
    assert schema_differences(blank_engine) == []
    # And the models read the old rows back as written.
    with Session(blank_engine) as session:
        alice = session.get(User, 1)
        assert alice is not None and alice.username == "alice" and alice.is_admin and alice.monthly_limit == 900
        assert alice.created_at == datetime(2024, 3, 1, 0, 30, 15, 250000, tzinfo=timezone.utc)
        batch = session.get(TaskRecord, 2)
        assert batch is not None and batch.parameters == {"prompts": ["snow", "rain"], "cfg": 4.0}
        assert batch.input_keys == ["inputs/a.png", "inputs/b.png"]
        assert session.get(TaskRecord, 1).seed == 2**53 + 7
    # New rows still get fresh ids after the ones written before.
    from tests.storage.seed import add_user

    assert add_user(blank_engine, "after-upgrade").id == len(USERS) + 1


def test_upgrading_twice_changes_nothing(blank_engine):
    create_legacy_database(blank_engine)
    init_db(blank_engine)
    first = read_rows(blank_engine)
    init_db(blank_engine)
    assert read_rows(blank_engine) == first and revision(blank_engine) == HEAD


def test_some_but_not_all_tables_without_a_version_is_refused(blank_engine):
    with blank_engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE users (id INTEGER PRIMARY KEY, username VARCHAR(50))")
    with pytest.raises(RuntimeError, match="not a schema this service created"):
        init_db(blank_engine)
    assert "task_records" not in inspect(blank_engine).get_table_names()


STARTERS = 3
STARTER = """
import sys, time
from pathlib import Path
from storage import init_db, make_engine
engine = make_engine(sys.argv[1])
ready, go = Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():
    time.sleep(0.01)
init_db(engine, attempts=1)  # the lock alone must make this work, without retries
"""


# A fresh SQLite file and a 2.0.0 PostgreSQL database: each backend's lock, and both the create
# and the stamp path, without paying for all four combinations (each run starts Python 3 times).
@pytest.mark.parametrize(("backend", "legacy"), [("sqlite", False), ("postgresql", True)],
                         ids=["sqlite-fresh", "postgresql-from-2.0.0"])
def test_several_processes_starting_at_once_all_succeed(blank_engine, legacy, tmp_path):
    """Ingress replicas and the registry start together; each upgrades the same database."""
    if legacy:
        create_legacy_database(blank_engine)
    url = blank_engine.url.render_as_string(hide_password=False)
    go = tmp_path / "go"
    starters = [subprocess.Popen([sys.executable, "-c", STARTER, url, str(tmp_path / f"ready{i}"), str(go)],
                                 cwd=REPO, stderr=subprocess.PIPE, text=True) for i in range(STARTERS)]
    try:
        deadline = time.monotonic() + 120
        while not all((tmp_path / f"ready{i}").exists() for i in range(STARTERS)):
            assert time.monotonic() < deadline and all(p.poll() is None for p in starters), "a starter died early"
            time.sleep(0.05)
        go.touch()  # all imported and connected: release them together
        outcomes = [(p.wait(timeout=120), p.stderr.read()) for p in starters]
    finally:
        for p in starters:
            if p.poll() is None:
                p.kill()
    assert outcomes == [(0, "")] * STARTERS
    assert revision(blank_engine) == HEAD
    assert schema_differences(blank_engine) == []
    if legacy:
        assert [len(rows) for rows in read_rows(blank_engine).values()] == [len(USERS), len(TASKS)]


def test_sqlite_table_rebuild_during_an_upgrade_keeps_every_task_owner(sqlite_engine):
    """Changing a column on SQLite rebuilds the table; dropping the old ``users`` must not run
    ``ON DELETE SET NULL`` on the tasks that point at it."""
    from alembic.operations import Operations

    from storage.db import _schema_lock
    from tests.storage.seed import T0, add_tasks, add_user, task

    owner = add_user(sqlite_engine, "owner")
    add_tasks(sqlite_engine, task(owner.id, T0), task(owner.id, T0))
    with _schema_lock(sqlite_engine) as conn:
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 0
        operations = Operations(MigrationContext.configure(conn))
        with operations.batch_alter_table("users", recreate="always") as batch:
            batch.alter_column("email", existing_type=sa.String(length=255), type_=sa.String(length=320))
    with sqlite_engine.connect() as conn:
        owners = conn.exec_driver_sql("SELECT user_id FROM task_records").scalars().all()
        assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    assert owners == [owner.id, owner.id]
