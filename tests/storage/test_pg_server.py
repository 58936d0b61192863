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
