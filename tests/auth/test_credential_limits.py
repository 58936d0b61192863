"""What a credential may still do after log-out or a password change, with a real SQLite database:
a logged-out token ends at once (the kept account rows included), and API keys follow the password."""

from __future__ import annotations

import pytest

from auth.account_cache import AccountCache, watch
from auth.security import hash_api_key, new_api_key
from auth.service import AuthConfig, AuthError, AuthService
from storage import User, init_db, make_engine, session_scope
from storage.db import sqlite_url
from storage.tables import ApiKey

pytestmark = pytest.mark.unit


@pytest.fixture
def service(tmp_path) -> AuthService:
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    accounts = AccountCache()
    accounts.reset(live=True)  # as if the change feed were followed
    svc = AuthService(engine, "s" * 40, AuthConfig(hash_profile="cheapest"), accounts=accounts)
    watch(accounts, engine, lambda user_ids: None)
    return svc


def _user_with_key(service: AuthService, version: int | None = None) -> tuple[int, str]:
    with session_scope(service.engine) as session:
        user = User(username="carol", hashed_password=service.passwords.hash("pw123456"))
        session.add(user)
        session.flush()
        key = new_api_key()
        session.add(
            ApiKey(
                user_id=user.id,
                name="script",
                prefix=key[:12],
                key_hash=hash_api_key(key),
                token_version=user.token_version if version is None else version,
            )
        )
        return user.id, key


def _check(service: AuthService, token: str) -> User:
    with session_scope(service.engine) as session:
        return service.user_for_token(session, token)


def _login(service: AuthService) -> str:
    with session_scope(service.engine) as session:
        return service.login(session, "carol", "pw123456", "1.2.3.4")


def test_a_logged_out_token_is_refused_before_it_expires(service):
    _user_with_key(service)
    token, other = _login(service), _login(service)
    with session_scope(service.engine) as session:
        service.logout(session, token)
    with pytest.raises(AuthError):
        _check(service, token)
    assert _check(service, other).username == "carol"  # the user's other sessions go on


def test_a_logged_out_token_is_not_answered_from_the_kept_account_row(service):
    _user_with_key(service)
    token, other = _login(service), _login(service)
    for t in (token, other):  # both read once and kept, as the read requests of the ingress do
        service.keep(_check(service, t), service.accounts.token(), t)
    assert service.kept_user_for_token(token) is not None
    with session_scope(service.engine) as session:
        service.logout(session, token)
    service.keep(_check(service, other), service.accounts.token(), other)  # the other session re-reads the row
    assert service.kept_user_for_token(other) is not None
    assert service.kept_user_for_token(token) is None  # the database decides, and refuses it
    with pytest.raises(AuthError):
        _check(service, token)


def test_a_password_change_ends_the_api_keys_made_before_it(service):
    user_id, key = _user_with_key(service)
    assert _check(service, key).id == user_id
    with session_scope(service.engine) as session:
        service.set_password(session, session.get(User, user_id), "new-password")
    with pytest.raises(AuthError):
        _check(service, key)


def test_a_password_change_that_asks_to_keep_api_keys_keeps_them(service):
    user_id, key = _user_with_key(service)
    with session_scope(service.engine) as session:
        service.set_password(session, session.get(User, user_id), "new-password", keep_api_keys=True)
    assert _check(service, key).id == user_id


def test_an_api_key_from_before_the_accounts_token_version_is_refused(service):
    # A key written with the version it was made under, racing a password change that bumped it.
    _, key = _user_with_key(service, version=-1)
    with pytest.raises(AuthError):
        _check(service, key)
