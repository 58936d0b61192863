"""Databases as version 2.0.0 wrote them, from before migrations existed, and schema probes.

``schema_2.0.0.<dialect>.sql`` hold the statements the 2.0.0 ``init_db``
(``SQLModel.metadata.create_all``) issued, recorded once per dialect, so the migration tests
keep testing that schema after ``storage/tables.py`` moves on.
"""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path
from typing import Any

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlmodel import SQLModel

from storage.db import alembic_config

LEGACY = Path(__file__).parent
REPO = Path(__file__).resolve().parents[3]
HEAD = ScriptDirectory.from_config(alembic_config()).get_current_head()

# Rows as the 2.0.0 code wrote them: naive UTC timestamps, JSON as text, every column used.
USERS = [
    {
        "id": 1,
        "username": "alice",
        "email": "alice@example.com",
        "hashed_password": "$argon2id$v=19$m=65536,t=3,p=4$abc",
        "is_active": True,
        "is_admin": True,
        "created_at": datetime(2024, 3, 1, 0, 30, 15, 250000),
        "token_version": 3,
        "daily_limit": 50,
        "monthly_limit": 900,
    },
    {
        "id": 2,
        "username": "李雷",
        "email": None,
        "hashed_password": "$argon2id$v=19$m=65536,t=3,p=4$def",
        "is_active": False,
        "is_admin": False,
        "created_at": datetime(2024, 3, 2, 23, 59, 59),
        "token_version": 0,
        "daily_limit": None,
        "monthly_limit": None,
    },
]
TASKS = [
    {
        "id": 1,
        "task_id": "6f1c2b1e-8a7d-4c36-9a57-0c9d8f1e2a3b",
        "user_id": 1,
        "task_type": "text_to_image",
        "prompt": "a cat, 一只猫",
        "negative_prompt": "blurry",
        "parameters": {"width": 1328, "height": 1328, "steps": 50},
        "status": "completed",
        "result_path": "results/6f1c.png",
        "result_filename": "6f1c.png",
        "error_message": None,
        "created_at": datetime(2024, 3, 1, 1, 0),
        "started_at": datetime(2024, 3, 1, 1, 0, 1),
        "completed_at": datetime(2024, 3, 1, 1, 0, 31),
        "execution_time": 30.25,
        "image_count": 2,
        "seed": 2**53 + 7,
        "attempts": 1,
        "input_keys": [],
    },
    {
        "id": 2,
        "task_id": "0b0e4b8e-3a44-4f55-8e0a-8d1a2c3b4d5e",
        "user_id": 2,
        "task_type": "batch_edit",
        "prompt": "make it snow",
        "negative_prompt": None,
        "parameters": {"prompts": ["snow", "rain"], "cfg": 4.0},
        "status": "failed",
        "result_path": None,
        "result_filename": None,
        "error_message": "out of memory",
        "created_at": datetime(2024, 3, 3, 8, 0),
        "started_at": datetime(2024, 3, 3, 8, 0, 2),
        "completed_at": datetime(2024, 3, 3, 8, 0, 3),
        "execution_time": None,
        "image_count": 2,
        "seed": None,
        "attempts": 2,
        "input_keys": ["inputs/a.png", "inputs/b.png"],
    },
    {
        "id": 3,
        "task_id": "9d2c5e6f-1111-4222-8333-944455566677",
        "user_id": None,
        "task_type": "image_edit",
        "prompt": "owner deleted",
        "negative_prompt": None,
        "parameters": {},
        "status": "pending",
        "result_path": None,
        "result_filename": None,
        "error_message": None,
        "created_at": datetime(2024, 3, 4, 12, 0),
        "started_at": None,
        "completed_at": None,
        "execution_time": None,
        "image_count": 1,
        "seed": 0,
        "attempts": 0,
        "input_keys": ["inputs/c.png"],
    },
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
        return {
            table: [dict(r._mapping) for r in conn.execute(text(f"SELECT * FROM {table} ORDER BY id"))]
            for table in TABLE_ROWS
        }


def schema_differences(engine: Engine) -> list:
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        return compare_metadata(context, SQLModel.metadata)


def revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()
