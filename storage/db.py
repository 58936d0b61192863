"""Engine set-up: SQLite under the data dir by default, any SQLAlchemy URL otherwise."""

from __future__ import annotations

import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

from sqlalchemy import event, text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlmodel import Session, SQLModel, create_engine

from storage import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

SQLITE_BUSY_TIMEOUT_MS = 10_000
# PostgreSQL advisory-lock key under which schema creation runs (any constant unique to this app).
SCHEMA_LOCK_KEY = 0x5157454E  # "QWEN"


def sqlite_url(data_dir: Path | str) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'qwen_image.db'}"


def make_engine(url: str, *, pool_size: int = 10) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys on every connection."""
    if url.startswith("sqlite"):
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def init_db(engine: Engine, attempts: int = 5) -> None:
    """Create missing tables and indexes. Idempotent; tolerates other processes doing the same.

    On PostgreSQL the creation runs in one transaction under an advisory lock, so concurrent
    starters (ingress replicas, the registry) wait for each other instead of colliding.
    """
    for attempt in range(attempts):
        try:
            if engine.dialect.name == "postgresql":
                with engine.begin() as conn:
                    conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
                    SQLModel.metadata.create_all(conn)
            else:
                SQLModel.metadata.create_all(engine)
            return
        except (OperationalError, ProgrammingError, IntegrityError):
            # Another process created the same table between our check and our CREATE: the
            # loser sees "already exists" (SQLite: OperationalError; PostgreSQL: DuplicateTable
            # or a unique violation in its catalog). The next attempt finds the tables there.
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


@contextmanager
def session_scope(engine: Engine) -> Iterator[Session]:
    """A session that commits on success and rolls back on error."""
    with Session(engine, expire_on_commit=False) as session:
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
