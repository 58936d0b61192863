"""Several processes upgrading one database at once (ingress replicas and the registry starting
together), on SQLite and on PostgreSQL.

Not marked ``unit``: each run starts three Python processes, which takes seconds, not
milliseconds. The rest of the migration tests are in ``test_migrations.py``.
"""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.storage.legacy import (
    HEAD,
    REPO,
    TASKS,
    USERS,
    create_legacy_database,
    read_rows,
    revision,
    schema_differences,
)

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
@pytest.mark.parametrize(
    ("backend", "legacy"), [("sqlite", False), ("postgresql", True)], ids=["sqlite-fresh", "postgresql-from-2.0.0"]
)
def test_several_processes_starting_at_once_all_succeed(blank_engine, legacy, tmp_path):
    """Ingress replicas and the registry start together; each upgrades the same database."""
    if legacy:
        create_legacy_database(blank_engine)
    url = blank_engine.url.render_as_string(hide_password=False)
    go = tmp_path / "go"
    starters = [
        subprocess.Popen(
            [sys.executable, "-c", STARTER, url, str(tmp_path / f"ready{i}"), str(go)],
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(STARTERS)
    ]
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
