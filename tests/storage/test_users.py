"""User queries."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from storage.users import count_users, get_user, get_user_by_username, list_users
from tests.storage.seed import add_user

pytestmark = pytest.mark.unit


def test_get_user_by_id_and_by_username(engine):
    alice = add_user(engine, "alice", email="alice@example.com")
    add_user(engine, "bob")
    with Session(engine) as session:
        assert get_user(session, alice.id).username == "alice"
        found = get_user_by_username(session, "alice")
        assert (found.id, found.email) == (alice.id, "alice@example.com")


def test_unknown_user_is_none(engine):
    add_user(engine, "alice")
    with Session(engine) as session:
        assert get_user(session, 424242) is None
        assert get_user_by_username(session, "nobody") is None


def test_username_lookup_is_exact(engine):
    add_user(engine, "alice")
    with Session(engine) as session:
        assert get_user_by_username(session, "Alice") is None
        assert get_user_by_username(session, "alic") is None


def test_new_user_defaults(engine):
    user = add_user(engine, "fresh")
    with Session(engine) as session:
        stored = get_user(session, user.id)
    assert (stored.is_active, stored.is_admin, stored.token_version) == (True, False, 0)
    assert stored.daily_limit is None and stored.monthly_limit is None
    assert stored.created_at.tzinfo is not None


def test_duplicate_username_is_refused(engine):
    add_user(engine, "twin")
    with pytest.raises(IntegrityError):
        add_user(engine, "twin")


def test_list_users_in_id_order_with_skip_and_limit(engine):
    ids = [add_user(engine, f"u{i}").id for i in range(5)]
    with Session(engine) as session:
        assert [u.id for u in list_users(session)] == ids
        assert [u.id for u in list_users(session, skip=1, limit=2)] == ids[1:3]
        assert [u.id for u in list_users(session, skip=4, limit=10)] == ids[4:]
        assert list_users(session, skip=5) == []


def test_count_users(engine):
    with Session(engine) as session:
        assert count_users(session) == 0
    for i in range(3):
        add_user(engine, f"c{i}")
    with Session(engine) as session:
        assert count_users(session) == 3
