"""Schema migrations: a fresh database, a database from before migrations, a table rebuild.

The databases "written by today's code" come from ``tests/storage/legacy`` (the 2.0.0 schema's
own statements, per dialect). Several processes starting at once: ``test_concurrent_startup.py``.
"""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect
from sqlmodel import Session

from storage import TaskRecord, User, init_db
from storage.db import BASELINE_REVISION, alembic_config
from tests.storage.legacy import (
    HEAD,
    TABLE_ROWS,
    TASKS,
    USERS,
    create_legacy_database,
    read_rows,
    revision,
    schema_differences,
)

pytestmark = pytest.mark.unit


def test_head_is_reached_from_the_baseline():
    assert BASELINE_REVISION in {s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()}


def test_revision_files_are_numbered_in_the_order_they_apply():
    """One naming scheme: NNNN_what_changes.py, numbered along the one linear chain from the baseline."""
    import re

    from storage.db import MIGRATIONS_DIR

    script = ScriptDirectory.from_config(alembic_config())
    assert len(script.get_heads()) == 1
    chain = list(reversed(list(script.walk_revisions())))  # baseline first
    names = [Path(s.path).name for s in chain]
    assert all(re.fullmatch(r"\d{4}_[a-z0-9_]+\.py", name) for name in names), names
    assert [int(name[:4]) for name in names] == list(range(1, len(chain) + 1))
    on_disk = sorted(p.name for p in (MIGRATIONS_DIR / "versions").glob("*.py") if p.name != "__init__.py")
    assert on_disk == sorted(names)


@pytest.mark.parametrize("start", [s.revision for s in ScriptDirectory.from_config(alembic_config()).walk_revisions()])
def test_every_released_revision_upgrades_to_head(blank_engine_factory, start):
    """A database left at any revision this project shipped reaches head with the models' schema."""
    from alembic import command

    engine = blank_engine_factory("sqlite")
    config = alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, start)
    assert revision(engine) == start
    init_db(engine)
    assert revision(engine) == HEAD
    assert schema_differences(engine) == []


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


def test_users_revision_keys_existing_accounts_and_stops_id_reuse(blank_engine):
    """Revision 0003 on a 2.0.0 database: keys for every user, look-alikes resolved, ids not reused."""
    from sqlalchemy import text

    from tests.storage.seed import add_user

    create_legacy_database(blank_engine)
    with blank_engine.begin() as conn:  # a look-alike pair the 2.0.0 code allowed
        conn.execute(
            text(
                "INSERT INTO users (id, username, hashed_password, is_active, is_admin, created_at, "
                "token_version) VALUES (3, 'ALICE', 'x', true, false, :t, 0)"
            ),
            {"t": datetime(2024, 3, 5)},
        )
        if blank_engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SELECT setval(pg_get_serial_sequence('users', 'id'), 3)")
    init_db(blank_engine)
    with Session(blank_engine) as session:
        users = {u.id: u for u in session.exec(sa.select(User)).scalars()}
    assert users[1].username_key == "alice" and users[3].username_key == "alice#3"  # the older keeps the name
    assert users[2].username_key == "李雷"
    assert len({u.token_key for u in users.values()}) == 3 and all(u.token_key for u in users.values())
    newest = add_user(blank_engine, "newest")
    with Session(blank_engine) as session:
        session.delete(session.get(User, newest.id))
        session.commit()
    assert add_user(blank_engine, "after-delete").id > newest.id


def test_usage_counters_revision_fills_the_counters_from_existing_rows(blank_engine):
    """The counters of the rows written before the revision equal a count over those rows."""
    from alembic import command

    from storage.db import _schema_lock
    from storage.tasks import quota_periods, quota_usage
    from storage.usage import counted_usage, counter_zone
    from tests.storage.seed import T0, add_user, task

    config = alembic_config()
    with _schema_lock(blank_engine) as connection:  # the schema as it was before the counters
        config.attributes["connection"] = connection
        command.upgrade(config, "4a6fa33687a0")
    owner, other = add_user(blank_engine, "owner").id, add_user(blank_engine, "other").id
    rows = [
        task(owner, T0, image_count=2),
        task(owner, T0.replace(day=1), image_count=3),
        task(owner, T0.replace(month=5), image_count=4),
        task(owner, T0, status="failed", image_count=5),
        task(owner, T0, status="cancelled", started=False, image_count=6),
        task(owner, T0, status="cancelled", started=True, image_count=7),
        task(owner, T0, status="pending"),
        task(other, T0, status="running", image_count=8),
        task(None, T0, image_count=9),
    ]
    with Session(blank_engine) as session:  # straight rows: no counters exist yet
        session.add_all(rows)
        session.commit()
    init_db(blank_engine)
    assert revision(blank_engine) == HEAD
    with Session(blank_engine) as session:
        assert counter_zone(session.connection()) == "UTC"
        for user in (owner, other):
            counted = counted_usage(session, user, T0, "UTC")
            assert counted == quota_usage(session, user, quota_periods(T0)), user
        mine = counted_usage(session, owner, T0, "UTC")
    assert (mine.used_today, mine.used_this_month, mine.total_used) == (2 + 7 + 1, 2 + 3 + 7 + 1, 2 + 3 + 4 + 7 + 1)
