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


def test_username_lookup_ignores_case_and_compatibility_forms_only(engine):
    add_user(engine, "alice")
    with Session(engine) as session:
        assert get_user_by_username(session, "Alice").username == "alice"
        assert get_user_by_username(session, "ａｌｉｃｅ").username == "alice"  # full-width, NFKC
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


def test_a_search_matches_part_of_a_name_or_address_in_any_case_and_wildcards_are_characters(engine):
    alice = add_user(engine, "Alice_Smith", email="alice@Example.com")
    bob = add_user(engine, "bob", email="bob@other.org")
    carol = add_user(engine, "carol100%", email=None)
    add_user(engine, "dave")

    def found(search, **page):
        with Session(engine) as session:
            return [u.id for u in list_users(session, search=search, **page)], count_users(session, search)

    assert found("ALICE") == ([alice.id], 1)
    assert found("ｓｍｉｔｈ") == ([alice.id], 1)  # full-width, as names are compared
    assert found("example.COM") == ([alice.id], 1)
    assert found("r") == ([bob.id, carol.id], 2)
    assert found("r", skip=1, limit=1) == ([carol.id], 2)  # the count is of every match, not the page
    assert found("%") == ([carol.id], 1)  # a character, not "anything"
    assert found("e_s") == ([alice.id], 1)
    assert found("e_e") == ([], 0)  # as a wildcard _ would match "alice@example.com"'s "e@e"
    assert found("")[1] == 4  # no search: everyone


def test_count_users(engine):
    with Session(engine) as session:
        assert count_users(session) == 0
    for i in range(3):
        add_user(engine, f"c{i}")
    with Session(engine) as session:
        assert count_users(session) == 3


def test_look_alike_usernames_are_refused_by_the_database(engine):
    """Finding 10: unique up to case and NFKC, on both backends (a unique column, not a check in Python)."""
    add_user(engine, "alice")
    with pytest.raises(IntegrityError):
        add_user(engine, "ALİCE".replace("İ", "I"))


def test_ids_of_deleted_users_are_never_reused(engine):
    """Finding 1: a new user never inherits a deleted user's id (and with it live tasks or tokens)."""
    add_user(engine, "first")
    last = add_user(engine, "second")
    with Session(engine) as session:
        session.delete(session.get(type(last), last.id))
        session.commit()
    assert add_user(engine, "third").id > last.id
