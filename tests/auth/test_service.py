"""AuthService with a real SQLite database: token revocation, default admin, timing-safe login."""

from __future__ import annotations

import logging
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from auth.security import Passwords, load_or_create_secret
from auth.service import AuthConfig, AuthError, AuthService
from storage import User, init_db, make_engine, session_scope
from storage.db import sqlite_url
from storage.users import get_user_by_username

pytestmark = pytest.mark.unit


@pytest.fixture
def service(tmp_path) -> AuthService:
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    svc = AuthService(engine, load_or_create_secret(tmp_path), AuthConfig(hash_profile="cheapest"))
    svc.ensure_default_admin()
    return svc


def _add_user(service, name="bob", password="pw123456") -> int:
    with session_scope(service.engine) as session:
        user = User(username=name, hashed_password=service.passwords.hash(password))
        session.add(user)
        session.flush()
        return user.id


def test_default_admin_is_created_once_and_warned_about(tmp_path, caplog):
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    svc = AuthService(engine, "k" * 48, AuthConfig(hash_profile="cheapest"))
    with caplog.at_level(logging.WARNING, logger="qwen_image.auth"):
        svc.ensure_default_admin()
        svc.ensure_default_admin()
    assert "default password" in caplog.text
    assert "admin123" not in caplog.text  # the warning never prints the password itself
    with session_scope(engine) as session:
        admin = get_user_by_username(session, "admin")
        assert admin.is_admin and svc.passwords.verify(admin.hashed_password, "admin123")[0]


def test_admin_password_setting_overrides_the_default_and_silences_the_warning(tmp_path, caplog):
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    svc = AuthService(engine, "k" * 48, AuthConfig(hash_profile="cheapest", admin_password="S3cure-admin"))
    with caplog.at_level(logging.WARNING, logger="qwen_image.auth"):
        svc.ensure_default_admin()
    assert "default password" not in caplog.text
    with session_scope(engine) as session:
        token = svc.login(session, "admin", "S3cure-admin", "127.0.0.1")
        assert svc.user_for_token(session, token).username == "admin"
        with pytest.raises(AuthError):
            svc.login(session, "admin", "admin123", "127.0.0.1")


def test_token_of_a_deleted_user_is_refused(service):
    user_id = _add_user(service)
    with session_scope(service.engine) as session:
        token = service.login(session, "bob", "pw123456", "1.2.3.4")
        session.delete(session.get(User, user_id))
    with session_scope(service.engine) as session, pytest.raises(AuthError):
        service.user_for_token(session, token)


def test_token_of_a_disabled_user_is_refused(service):
    user_id = _add_user(service)
    with session_scope(service.engine) as session:
        token = service.login(session, "bob", "pw123456", "1.2.3.4")
        user = session.get(User, user_id)
        user.is_active = False
        session.add(user)
    with session_scope(service.engine) as session, pytest.raises(AuthError):
        service.user_for_token(session, token)


def test_token_issued_before_a_password_change_is_refused(service):
    user_id = _add_user(service)
    with session_scope(service.engine) as session:
        old = service.login(session, "bob", "pw123456", "1.2.3.4")
        user = session.get(User, user_id)
        service.set_password(session, user, "new-password")
        session.add(user)
    with session_scope(service.engine) as session:
        with pytest.raises(AuthError):
            service.user_for_token(session, old)
        fresh = service.login(session, "bob", "new-password", "1.2.3.4")
        assert service.user_for_token(session, fresh).id == user_id


def test_failed_logins_are_throttled_per_account_and_address_and_per_address(tmp_path):
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    svc = AuthService(
        engine, "k" * 48, AuthConfig(hash_profile="cheapest", login_max_failures=2, login_max_failures_per_address=3)
    )
    _add_user(svc)
    with session_scope(engine) as session:
        for _ in range(2):
            with pytest.raises(AuthError) as err:
                svc.login(session, "bob", "wrong", "10.0.0.1")
            assert err.value.code == "bad_credentials"
        with pytest.raises(AuthError) as err:
            svc.login(session, "bob", "pw123456", "10.0.0.1")
        assert err.value.code == "throttled" and err.value.retry_after >= 1  # this account from this address
        with pytest.raises(AuthError) as err:
            svc.login(session, "carol", "wrong", "10.0.0.1")  # third failure from this address
        with pytest.raises(AuthError) as err:
            svc.login(session, "dave", "wrong", "10.0.0.1")
        assert err.value.code == "throttled"  # per address, whatever the username


def test_failed_logins_from_one_address_do_not_hold_up_the_owner_elsewhere(tmp_path):
    """Finding 7: ten failures used to lock the username (the admin's too) even for its owner."""
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    svc = AuthService(engine, "k" * 48, AuthConfig(hash_profile="cheapest", login_max_failures=2))
    _add_user(svc)
    with session_scope(engine) as session:
        for _ in range(4):
            with pytest.raises(AuthError):
                svc.login(session, "bob", "wrong", "203.0.113.7")
        token = svc.login(session, "BOB", "pw123456", "198.51.100.1")
        assert svc.user_for_token(session, token).username == "bob"


def test_failures_seen_by_one_replica_slow_down_the_next_attempt_on_another(tmp_path):
    """Finding 7: counters live in the database, not in one ingress replica's memory."""
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    config = AuthConfig(hash_profile="cheapest", login_max_failures=2)
    first, second = AuthService(engine, "k" * 48, config), AuthService(engine, "k" * 48, config)
    _add_user(first)
    with session_scope(engine) as session:
        for replica in (first, second):
            with pytest.raises(AuthError) as err:
                replica.login(session, "bob", "wrong", "203.0.113.7")
            assert err.value.code == "bad_credentials"
        for replica in (first, second):
            with pytest.raises(AuthError) as err:
                replica.login(session, "bob", "pw123456", "203.0.113.7")
            assert err.value.code == "throttled"


def test_throttle_delays_grow_after_the_free_failures_and_then_expire(tmp_path):
    from datetime import datetime, timedelta, timezone

    from auth.throttle import LoginThrottle

    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    now = [datetime(2026, 1, 1, tzinfo=timezone.utc)]
    throttle = LoginThrottle(engine, free_failures=2, window_seconds=300, max_delay_seconds=8, clock=lambda: now[0])
    waits = []
    for _ in range(6):
        throttle.record_failure("k")
        waits.append(throttle.retry_after("k"))
        now[0] += timedelta(seconds=waits[-1] or 0)  # the attacker waits exactly as told, then fails again
    assert waits == [None, 1, 2, 4, 8, 8]  # doubling, capped: slower and slower, never a lock
    assert throttle.retry_after("k") is None
    throttle.record_failure("k")
    now[0] += timedelta(seconds=301)
    assert throttle.retry_after("k") is None  # forgotten after the window
    throttle.record_failure("k")
    assert throttle.retry_after("k") is None  # and counting starts again


# ------------------------------------------------------------ audit findings (hardening)


def test_token_of_a_deleted_user_does_not_log_in_as_the_next_user_to_register(service):
    """Finding 1: SQLite used to hand the deleted user's id to the next user, and the old token with it."""
    old_id = _add_user(service, "mallory")
    with session_scope(service.engine) as session:
        token = service.login(session, "mallory", "pw123456", "1.2.3.4")
        session.delete(session.get(User, old_id))
    new_id = _add_user(service, "victim")
    assert new_id != old_id  # ids are never reused, so a deleted user's live tasks stay nobody's
    with session_scope(service.engine) as session, pytest.raises(AuthError):
        service.user_for_token(session, token)


def test_token_is_bound_to_the_account_not_only_to_its_id(service):
    """Finding 1, defence in depth: a token names a key unique to the account it was issued for."""
    user_id = _add_user(service, "carol")
    with session_scope(service.engine) as session:
        token = service.login(session, "carol", "pw123456", "1.2.3.4")
        user = session.get(User, user_id)
        user.token_key = "someone-else"  # what another account under the same id would have
        session.add(user)
    with session_scope(service.engine) as session, pytest.raises(AuthError):
        service.user_for_token(session, token)


def test_default_admin_is_not_recreated_once_any_user_exists(tmp_path):
    """Finding 9: renaming or deleting the admin must not bring back admin/admin123 on the next start."""
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    svc = AuthService(engine, "k" * 48, AuthConfig(hash_profile="cheapest", admin_password="S3cure-admin"))
    svc.ensure_default_admin()
    _add_user(svc, "boss")
    with session_scope(engine) as session:
        boss = get_user_by_username(session, "boss")
        boss.is_admin = True
        session.add(boss)
        session.delete(get_user_by_username(session, "admin"))
    AuthService(engine, "k" * 48, AuthConfig(hash_profile="cheapest")).ensure_default_admin()
    with session_scope(engine) as session:
        assert get_user_by_username(session, "admin") is None


def test_usernames_are_unique_case_insensitively_after_nfkc(service):
    """Finding 10: ``Admin`` and the full-width ``ａｄｍｉｎ`` are the same name as ``admin``."""
    from sqlalchemy.exc import IntegrityError

    for lookalike in ("Admin", "ＡＤＭＩＮ"):
        with pytest.raises(IntegrityError):
            _add_user(service, lookalike)
    with session_scope(service.engine) as session:
        assert get_user_by_username(session, "ADMIN").username == "admin"


def test_login_with_a_differently_cased_username_counts_against_the_same_account(service):
    _add_user(service, "Dora")
    with session_scope(service.engine) as session:
        token = service.login(session, "dora", "pw123456", "1.2.3.4")
        assert service.user_for_token(session, token).username == "Dora"


def test_token_issued_a_moment_in_the_future_is_accepted(service):
    """Finding 10: replicas' clocks differ a little; an ``iat`` a second ahead is not a 401."""
    import time

    user_id = _add_user(service)
    with session_scope(service.engine) as session:
        user = session.get(User, user_id)
        token = service.tokens.issue(user.id, user.token_version, now=time.time() + 2, key=user.token_key)
        assert service.user_for_token(session, token).id == user_id


def test_sqlite_database_file_is_private(tmp_path):
    """Finding 10: the database holds password hashes; it is created 0600, not 0644."""
    import stat

    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    mode = stat.S_IMODE((tmp_path / "qwen_image.db").stat().st_mode)
    assert mode == 0o600, oct(mode)


def test_log_ins_work_with_a_single_pooled_connection(tmp_path):
    # Each log-in used to hold its request's connection through the hash while the throttle asked
    # for another: with the pool drained, a burst of log-ins waited for each other until the pool's
    # timeout and answered 500. One connection in all must now be enough.
    engine = make_engine(sqlite_url(tmp_path), pool_size=1, max_overflow=0, pool_timeout=30)
    init_db(engine)
    svc = AuthService(engine, "k" * 48, AuthConfig(hash_profile="cheapest", login_max_failures=5))
    _add_user(svc, "bob", "pw123456")
    with session_scope(engine) as session:
        assert svc.login(session, "bob", "pw123456", "10.0.0.1")
    with session_scope(engine) as session, pytest.raises(AuthError):
        svc.login(session, "bob", "wrong-password", "10.0.0.1")

    def one_login(n: int) -> str:
        with session_scope(engine) as session:
            return svc.login(session, "bob", "pw123456", f"10.0.1.{n}")

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(one_login, range(16)))


def test_password_hashing_runs_a_bounded_number_at_once():
    passwords = Passwords("cheapest", max_concurrent=2)
    inner = passwords._hasher  # a recording wrapper around the real hasher, to watch concurrency
    running, most = 0, 0
    lock = threading.Lock()

    class Recording:
        def __getattr__(self, name):
            return getattr(inner, name)

        def verify(self, stored, password):
            nonlocal running, most
            with lock:
                running += 1
                most = max(most, running)
            time.sleep(0.05)
            with lock:
                running -= 1
            return inner.verify(stored, password)

    passwords._hasher = Recording()
    stored = inner.hash("pw123456")
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: passwords.verify(stored, "pw123456")[0], range(16)))
    assert all(results)
    assert most == 2


def test_admin_password_is_default_until_it_is_changed(service):
    with session_scope(service.engine) as session:
        assert service.admin_password_is_default(session)
        admin = get_user_by_username(session, "admin")
        admin.hashed_password = service.passwords.hash("a-better-one")
        session.add(admin)
    with session_scope(service.engine) as session:
        assert not service.admin_password_is_default(session)
