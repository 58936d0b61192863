"""The account rows an ingress keeps (auth.account_cache), and how changes made in this process reach them."""

from __future__ import annotations

import pytest
from sqlmodel import Session

from auth.account_cache import AccountCache, AccountsChanged, watch
from storage import init_db, make_engine
from storage.db import sqlite_url
from storage.tables import User

pytestmark = pytest.mark.unit


def user(user_id=1, **fields) -> User:
    return User(id=user_id, username=f"u{user_id}", hashed_password="x", **fields)


def live_cache(**kw) -> AccountCache:
    cache = AccountCache(**kw)
    cache.reset(live=True)
    return cache


def test_a_row_is_kept_only_while_the_feed_runs_and_nothing_changed_since_it_was_read():
    cache = AccountCache()
    assert cache.token() is None  # not live: nothing kept
    cache.put(user(), None)
    assert cache.get(1) is None
    cache.reset(live=True)
    cache.put(user(), cache.token())
    assert cache.get(1).username == "u1"
    token = cache.token()
    cache.apply(AccountsChanged(user_ids=(1,)))
    assert cache.get(1) is None
    cache.put(user(), token)  # read before the change: refused
    assert cache.get(1) is None
    cache.put(user(), cache.token())
    cache.reset(live=False)  # a gap in the feed
    assert cache.get(1) is None


def test_rows_are_read_again_after_their_maximum_age():
    now = [100.0]
    cache = live_cache(max_age_s=30, clock=lambda: now[0])
    cache.put(user(), cache.token())
    now[0] += 29
    assert cache.get(1) is not None
    now[0] += 2
    assert cache.get(1) is None


def test_capacity_bounds_the_rows():
    cache = live_cache(capacity=2)
    for n in range(1, 5):
        cache.put(user(n), cache.token())
    assert list(cache.entries) == [3, 4]


def test_changes_committed_in_this_process_drop_the_row_and_are_announced(tmp_path):
    engine = make_engine(sqlite_url(tmp_path))
    init_db(engine)
    with Session(engine, expire_on_commit=False) as session:
        alice = User(username="alice", hashed_password="x")
        session.add(alice)
        session.commit()
    (tmp_path / "other").mkdir()
    other_engine = make_engine(sqlite_url(tmp_path / "other"))
    init_db(other_engine)
    cache, unrelated = live_cache(), live_cache()
    announced: list[set[int]] = []
    watch(cache, engine, announced.append)
    watch(unrelated, other_engine, lambda ids: None)
    cache.put(alice, cache.token())
    unrelated.put(alice, unrelated.token())
    with Session(engine) as session:
        row = session.get(User, alice.id)
        row.is_active = False
        session.add(row)
        session.flush()
        assert cache.get(alice.id) is None  # dropped at the flush already
        cache.put(alice, cache.token())  # read again before the commit: still the old row
        session.commit()
    assert cache.get(alice.id) is None  # and dropped again at the commit
    assert announced == [{alice.id}]
    assert unrelated.get(alice.id) is not None  # another database's cache is not concerned
    with Session(engine) as session:  # a rolled-back change announces nothing
        row = session.get(User, alice.id)
        row.email = "a@example.com"
        session.add(row)
        session.flush()
        session.rollback()
    assert announced == [{alice.id}]


def test_reads_sent_before_a_feed_gap_or_before_forgotten_changes_are_refused():
    cache = live_cache()
    ticket = cache.token()
    cache.reset(live=True)  # the feed started afresh: what was read before may be older than a missed change
    cache.put(user(), ticket)
    assert cache.get(1) is None
    small = live_cache(capacity=1)
    ticket = small.token()
    small.accounts_changed([7, 8, 9, 10, 11])  # more changes than it remembers: it forgets them all
    assert not small.changed
    small.put(user(1), ticket)  # 1 may have been among the forgotten ones
    assert small.get(1) is None
    small.put(user(1), small.token())
    assert small.get(1) is not None


def test_no_bulk_statement_writes_user_rows_where_the_flush_hooks_cannot_see_it():
    """auth.account_cache learns of account changes from the ORM's flushes; a bulk UPDATE/DELETE
    of users would change rows behind its back."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    pattern = re.compile(r"\b(update|delete)\(\s*User\b")
    offenders = [
        f"{path.relative_to(root)}:{n}"
        for package in ("auth", "serving", "storage", "cli", "models")
        for path in (root / package).rglob("*.py")
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if pattern.search(line)
    ]
    assert offenders == []
