"""The PostgreSQL test server: skipped with a reason where it cannot run, never in CI."""

from __future__ import annotations

import pytest

from tests import pg

pytestmark = pytest.mark.unit


def test_missing_server_binaries_skip_with_the_reason(monkeypatch):
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(pg, "find_server_bindir", lambda: None)
    with pytest.raises(pytest.skip.Exception, match="no PostgreSQL server binaries"):
        pg.start_server()


def test_missing_server_binaries_fail_in_ci(monkeypatch):
    monkeypatch.setenv("CI", "true")
    monkeypatch.setattr(pg, "find_server_bindir", lambda: None)
    with pytest.raises(pytest.fail.Exception, match="cannot run in CI"):
        pg.start_server()


def test_the_server_listens_on_loopback_only(pg_server):
    import psycopg

    with psycopg.connect(pg_server.url().replace("postgresql+psycopg", "postgresql")) as conn:
        assert conn.execute("SHOW listen_addresses").fetchone()[0] == "127.0.0.1"
        assert conn.execute("SHOW port").fetchone()[0] == str(pg_server.port)


def test_connections_detect_a_server_gone_silent(pg_server):
    # TCP keep-alives and the kernel's user timeout on every pooled connection: a server that stops
    # answering on an open connection fails the statement within ~25 s instead of the hours of the
    # system's defaults, so the registry's writer thread is never stuck on it for good.
    from sqlalchemy import text

    from storage.db import PG_SILENT_CONNECTION_S, make_engine

    engine = make_engine(pg_server.url())
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT 1")).scalar() == 1
            info = connection.connection.dbapi_connection.info.get_parameters()
            dsn = connection.connection.dbapi_connection.info.dsn
    finally:
        engine.dispose()
    assert info["dbname"]
    assert "keepalives=1" in dsn and f"tcp_user_timeout={PG_SILENT_CONNECTION_S * 1000}" in dsn
    assert "keepalives_idle=10" in dsn and "connect_timeout=5" in dsn
