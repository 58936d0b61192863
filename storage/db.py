"""Engine set-up (SQLite under the data dir by default, any SQLAlchemy URL otherwise) and schema upgrades."""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional

from sqlalchemy import event, inspect, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import OperationalError
from sqlalchemy.sql import Executable
from sqlmodel import Session, create_engine

from storage import tables  # noqa: F401  (registers the tables on SQLModel.metadata)

# alembic says "setup plugin …" at INFO for each of its plugins when imported, in every process of
# the service at every start: noise in a newcomer's first log
logging.getLogger("alembic.runtime.plugins").setLevel(logging.WARNING)

if TYPE_CHECKING:
    from alembic.config import Config

SQLITE_BUSY_TIMEOUT_MS = 10_000
PG_CONNECT_TIMEOUT_S = 5
PG_SILENT_CONNECTION_S = 25
POOL_TIMEOUT_S = 10
# PostgreSQL advisory-lock key under which schema upgrades run (any constant unique to this app).
SCHEMA_LOCK_KEY = 0x5157454E  # "QWEN"
MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# The revision equal to the schema that create_all made before migrations existed, and its tables.
BASELINE_REVISION = "0001"
BASELINE_TABLES = ("users", "task_records")
# Alembic keeps the running migration in module globals: one upgrade per process at a time.
_UPGRADE_IN_PROCESS = threading.Lock()


class DatabaseBusy(Exception):
    """The database did not take a write within the time its caller could wait: nothing was written."""


def sqlite_url(data_dir: Path | str) -> str:
    return f"sqlite:///{Path(data_dir).resolve() / 'qwen_image.db'}"


def make_engine(
    url: str, *, pool_size: int = 10, max_overflow: Optional[int] = None, pool_timeout: float = POOL_TIMEOUT_S
) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys on every connection.

    The pool holds ``pool_size`` connections plus ``max_overflow`` (default: as many again) at
    busy times; a caller waits ``pool_timeout`` seconds for one, then gets SQLAlchemy's TimeoutError
    (answered 503 by the API).
    """
    overflow = pool_size if max_overflow is None else max_overflow
    if url.startswith("sqlite"):
        _create_private_file(make_url(url).database)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_MS / 1000},
            pool_size=pool_size,
            max_overflow=overflow,
            pool_timeout=pool_timeout,
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
    # A database that does not answer fails a connection after PG_CONNECT_TIMEOUT_S, and a request
    # waiting for a pooled connection after POOL_TIMEOUT_S, instead of hanging its caller. A server
    # that goes silent on an open connection (a network partition, a stalled host) is noticed by
    # TCP keep-alives and the kernel's user timeout within ~PG_SILENT_CONNECTION_S, instead of the
    # hours of the system's defaults, so the registry's one writer thread is never stuck for good.
    connect_args: dict = {}
    if url.startswith("postgresql"):
        connect_args = {
            "connect_timeout": PG_CONNECT_TIMEOUT_S,
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": PG_SILENT_CONNECTION_S * 1000,
        }
    return create_engine(
        url,
        pool_size=pool_size,
        max_overflow=overflow,
        pool_pre_ping=True,
        pool_timeout=pool_timeout,
        connect_args=connect_args,
    )


def _create_private_file(path: str | None) -> None:
    """Create the SQLite file 0600 before SQLite does (it would use 0644): it holds password hashes.

    SQLite gives its ``-wal`` and ``-shm`` files the database file's permissions.
    """
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass


# Revision files are numbered in the order they apply: NNNN_what_changes.py. New revisions take the
# next number as their id too (`make revision` passes it); the first ones keep the ids they shipped
# with (databases record them), only their files were renamed.
MIGRATION_FILE_TEMPLATE = "%%(rev)s_%%(slug)s"


def alembic_config() -> Config:
    """The Alembic configuration of the migrations shipped in ``storage/migrations``."""
    from alembic.config import Config  # imported here: alembic takes a while to import

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("file_template", MIGRATION_FILE_TEMPLATE)
    return config


def init_db(engine: Engine, attempts: int = 5) -> None:
    """Bring the schema to the newest migration. Idempotent; safe when several processes (ingress
    replicas, the registry) start at once.

    The whole upgrade runs in one transaction that only one process holds at a time: on
    PostgreSQL under an advisory lock, on SQLite under ``BEGIN IMMEDIATE`` (the database's write
    lock). Whoever comes second finds the schema at head and changes nothing. A database created
    before migrations existed (the tables, no ``alembic_version``) is recognised and stamped as
    the baseline revision, keeping its rows.
    """
    for attempt in range(attempts):
        try:
            with _UPGRADE_IN_PROCESS, _schema_lock(engine) as connection:
                _upgrade(connection)
            return
        except OperationalError:
            # SQLite: another process held the write lock past the busy timeout. Try again.
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))


@contextmanager
def _schema_lock(engine: Engine) -> Iterator[Connection]:
    """A connection in a transaction that no other schema upgrade runs beside; commits on exit."""
    with engine.connect() as connection:
        if engine.dialect.name == "postgresql":
            connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": SCHEMA_LOCK_KEY})
            yield connection
            connection.commit()
        elif engine.dialect.name == "sqlite":
            with _sqlite_schema_transaction(connection):
                yield connection
        else:
            connection.begin()
            yield connection
            connection.commit()


@contextmanager
def _sqlite_schema_transaction(connection: Connection) -> Iterator[None]:
    """SQLite's procedure for schema changes: foreign keys off, one write transaction, a foreign
    key check before the commit, foreign keys back on.

    SQLite changes most columns by rebuilding the table (Alembic's batch mode: copy, drop, rename).
    With foreign keys on, dropping ``users`` would run ``ON DELETE SET NULL`` on every task's
    owner; the pragma only takes effect outside a transaction, so it is switched here, not in a
    revision. ``BEGIN IMMEDIATE`` takes the write lock at once, so two starters cannot both read
    "no tables yet" and then both create them (pysqlite issues no BEGIN before DDL by itself).
    """
    connection.exec_driver_sql("PRAGMA foreign_keys=OFF")
    try:
        connection.exec_driver_sql("BEGIN IMMEDIATE")
        yield
        broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
        if broken:
            raise RuntimeError(f"the schema upgrade would leave rows with dangling foreign keys: {broken[:5]}")
        connection.commit()
    finally:
        try:
            connection.rollback()  # nothing left after a commit; everything after a failure
            connection.exec_driver_sql("PRAGMA foreign_keys=ON")  # back to the pool as it came
            connection.commit()
        except Exception:
            connection.invalidate()  # never pool a connection that might have foreign keys off
            raise


def _upgrade(connection: Connection) -> None:
    from alembic import command

    config = alembic_config()
    # env.py runs the migrations on this connection, inside the transaction that holds the lock.
    config.attributes["connection"] = connection
    existing = set(inspect(connection).get_table_names())
    if "alembic_version" not in existing:
        present = existing & set(BASELINE_TABLES)
        if present == set(BASELINE_TABLES):
            command.stamp(config, BASELINE_REVISION)
        elif present:
            raise RuntimeError(
                f"the database has some of the service's tables ({', '.join(sorted(present))}) but not "
                f"all of them, and no alembic_version: it is not a schema this service created"
            )
    command.upgrade(config, "head")


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


# session.info key of the writes a transaction holds back (see hold_writes).
_HELD_WRITES = "held_writes"


def hold_writes(session: Session) -> None:
    """From now on, :func:`write_later` in ``session`` holds its writes back until
    :func:`run_held_writes`, which runs them with one ``executemany`` per statement: a transaction
    of many small writes (the task registry's writer thread) then makes a few round trips to the
    database server instead of one per write."""
    session.info[_HELD_WRITES] = []


def write_later(session: Session, statement: Executable, params: dict[str, Any]) -> None:
    """Run ``statement`` with ``params`` now, or, after :func:`hold_writes`, before the commit.

    Held writes run grouped by statement (and parameter names, which decide an UPDATE's SQL): the
    statements in the order each first came, each one's writes in the order they came. So hold back
    only writes that read nothing, and whose order across statements does not matter or follows
    that rule (a task's record, then its webhook).
    """
    held: Optional[list[tuple[Executable, dict[str, Any]]]] = session.info.get(_HELD_WRITES)
    if held is None:
        session.connection().execute(statement, params)
    else:
        held.append((statement, params))


def run_held_writes(session: Session) -> None:
    """Run the writes held back so far (see :func:`write_later`); later ones are held again."""
    held: Optional[list[tuple[Executable, dict[str, Any]]]] = session.info.get(_HELD_WRITES)
    if not held:
        return
    groups: dict[tuple[int, tuple[str, ...]], tuple[Executable, list[dict[str, Any]]]] = {}
    for statement, params in held:
        groups.setdefault((id(statement), tuple(params)), (statement, []))[1].append(params)
    held.clear()
    connection = session.connection()
    for statement, rows in groups.values():
        connection.execute(statement, rows)
