"""AuthService with a real SQLite database: token revocation, default admin, timing-safe login."""

from __future__ import annotations

import logging

import pytest

from auth.security import load_or_create_secret
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
        service.set_password(user, "new-password")
        session.add(user)
    with session_scope(service.engine) as session:
        with pytest.raises(AuthError):
            service.user_for_token(session, old)
        fresh = service.login(session, "bob", "new-password", "1.2.3.4")
        assert service.user_for_token(session, fresh).id == user_id


def test_failed_logins_are_throttled_per_username_and_per_address(tmp_path):
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    svc = AuthService(engine, "k" * 48, AuthConfig(hash_profile="cheapest", login_max_failures=2,
                                                   login_max_failures_per_address=3))
    _add_user(svc)
    with session_scope(engine) as session:
        for _ in range(2):
            with pytest.raises(AuthError) as err:
                svc.login(session, "bob", "wrong", "10.0.0.1")
            assert err.value.code == "bad_credentials"
        with pytest.raises(AuthError) as err:
            svc.login(session, "bob", "pw123456", "10.0.0.2")
        assert err.value.code == "throttled"  # per username, whatever the address
        with pytest.raises(AuthError) as err:
            svc.login(session, "carol", "wrong", "10.0.0.1")  # third failure from this address
        with pytest.raises(AuthError) as err:
            svc.login(session, "dave", "wrong", "10.0.0.1")
        assert err.value.code == "throttled"  # per address, whatever the username
