"""Registrations and log-ins per client address (auth.throttle.AddressRateLimit) over a real SQLite
database: a fixed window, shared by every replica, and limiters of different windows side by side."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone

import pytest

from auth.service import AuthConfig, AuthError, AuthService
from auth.throttle import AddressRateLimit
from storage import init_db, make_engine
from storage.db import sqlite_url

pytestmark = pytest.mark.unit


@pytest.fixture
def engine(tmp_path):
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    return engine


def test_a_limit_allows_its_share_per_window_then_says_when_the_window_ends(engine):
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    limit = AddressRateLimit(engine, limit=3, window_seconds=600, clock=lambda: now[0])
    assert [limit.hit("a") for _ in range(3)] == [None, None, None]
    now[0] += timedelta(seconds=100)
    assert limit.hit("a") == 500  # refused until the window that began with the first hit ends
    assert limit.hit("b") is None  # another address has its own share
    now[0] += timedelta(seconds=500)
    assert limit.hit("a") is None  # a new window
    assert [limit.hit("a") for _ in range(2)] == [None, None]
    assert limit.hit("a") == 600


def test_replicas_share_the_count(engine):
    replicas = [AddressRateLimit(engine, limit=5, window_seconds=60) for _ in range(3)]
    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(lambda i: replicas[i % 3].hit("addr"), range(12)))
    assert answers.count(None) == 5
    assert all(isinstance(wait, int) and wait > 0 for wait in answers if wait is not None)


def test_a_short_windowed_limit_does_not_forget_a_long_windowed_ones_count(engine):
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    hourly = AddressRateLimit(engine, limit=1, window_seconds=3600, clock=lambda: now[0])
    per_minute = AddressRateLimit(engine, limit=1, window_seconds=60, clock=lambda: now[0])
    assert hourly.hit("register") is None
    now[0] += timedelta(seconds=120)
    assert per_minute.hit("login") is None  # its clean-up removes only rows whose window is over
    assert hourly.hit("register") == 3480


def test_log_in_attempts_past_the_address_limit_are_refused_before_the_password_is_checked(tmp_path, engine):
    service = AuthService(
        engine, "k" * 48, AuthConfig(hash_profile="cheapest", login_max_per_address=3, login_max_failures=0)
    )
    service.ensure_default_admin()
    checked = []
    verify = service.passwords.verify
    service.passwords.verify = lambda *args: checked.append(1) or verify(*args)
    from sqlmodel import Session

    with Session(engine) as session:
        for _ in range(3):
            assert service.login(session, "admin", "admin123", "10.0.0.1")
        with pytest.raises(AuthError) as refused:
            service.login(session, "admin", "admin123", "10.0.0.1")
        assert refused.value.code == "rate_limited" and refused.value.retry_after > 0
        assert len(checked) == 3  # no hash for the refused attempt
        assert service.login(session, "admin", "admin123", "10.0.0.2")  # another address logs in
