"""Storage fixtures: every ``engine`` test runs twice, on SQLite and on a real PostgreSQL.

The PostgreSQL server (see :mod:`tests.pg`) starts once per session; each test gets an empty
schema of its own, dropped afterwards, and each SQLite test a file of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.engine import Engine

from storage import init_db, make_engine
from tests.pg import PostgresServer, start_server

BACKENDS = ["sqlite", "postgresql"]


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    server = start_server()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def blank_engine_factory(request, tmp_path) -> Iterator[Callable[[str], Engine]]:
    """Makes engines on empty databases (no tables) of a backend; cleans them all up."""
    made: list[tuple[Engine, Callable[[], None]]] = []

    def make(backend: str) -> Engine:
        if backend == "sqlite":
            engine = make_engine(f"sqlite:///{tmp_path / f'db{len(made)}.sqlite'}")
            made.append((engine, lambda: None))
        else:
            server: PostgresServer = request.getfixturevalue("pg_server")
            schema = server.create_schema()
            engine = make_engine(server.url(schema))
            made.append((engine, lambda: server.drop_schema(schema)))
        return engine

    yield make
    for engine, drop in made:
        engine.dispose()
        drop()


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture
def blank_engine(blank_engine_factory, backend) -> Engine:
    """An engine on an empty database: no tables yet."""
    return blank_engine_factory(backend)


@pytest.fixture
def engine(blank_engine) -> Engine:
    """An engine on a fresh database with the schema created."""
    init_db(blank_engine)
    return blank_engine


@pytest.fixture
def sqlite_engine(blank_engine_factory) -> Engine:
    engine = blank_engine_factory("sqlite")
    init_db(engine)
    return engine


@pytest.fixture
def pg_engine(blank_engine_factory) -> Engine:
    """PostgreSQL only, for behaviour SQLite does not have (row locks)."""
    engine = blank_engine_factory("postgresql")
    init_db(engine)
    return engine
