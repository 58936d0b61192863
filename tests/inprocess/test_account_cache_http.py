"""Token checks of read requests answered from the ingress's kept account rows (auth.account_cache),
through the real app (no Ray; the registry is the in-process stand-in, its journal real)."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import update

from auth.account_cache import AccountsChanged
from storage.tables import User
from tests.inprocess.conftest import login, make_client, register
from tests.inprocess.test_http import finished, submit
from tests.inprocess.test_status_cache_http import break_the_feed, feed_caught_up

pytestmark = pytest.mark.unit


def count_row_reads(client) -> list[str]:
    auth = client.app.state.auth
    reads: list[str] = []
    original = auth.user_for_token

    def counted(session, token):
        reads.append(token)
        return original(session, token)

    auth.user_for_token = counted
    return reads


def user_id(client, headers) -> int:
    return client.get("/auth/me", headers=headers).json()["id"]


def test_read_requests_check_the_token_without_reading_the_row_again(client, alice):
    task_id = submit(client, alice)
    finished(client, alice, task_id)
    feed_caught_up(client)
    client.get("/auth/me", headers=alice)
    reads = count_row_reads(client)
    for _ in range(5):
        assert client.get(f"/tasks/{task_id}", headers=alice).status_code == 200
        assert client.get("/auth/me", headers=alice).status_code == 200
    assert reads == []
    assert client.post("/text-to-image", headers=alice, data={"prompt": "x"}).status_code == 202
    assert len(reads) == 1  # a request that changes state reads the row
    assert client.get("/auth/me", headers={"Authorization": "Bearer nope"}).status_code == 401


def test_a_disabled_account_or_changed_password_is_refused_at_once(client, alice, admin):
    feed_caught_up(client)
    assert client.get("/auth/me", headers=alice).status_code == 200  # kept now
    alice_id = user_id(client, alice)
    assert client.put(f"/auth/users/{alice_id}/toggle-active", headers=admin).status_code == 200
    assert client.get("/auth/me", headers=alice).status_code == 401
    assert client.put(f"/auth/users/{alice_id}/toggle-active", headers=admin).status_code == 200
    assert client.get("/auth/me", headers=alice).status_code == 401  # disabling ended its tokens
    assert client.get("/auth/me", headers=login(client, "alice", "secret-pass-1")).status_code == 200
    bob = register(client, "bob")
    assert client.get("/auth/me", headers=bob).status_code == 200
    changed = client.post(
        "/auth/change-password",
        headers=bob,
        json={"old_password": "secret-pass-1", "new_password": "another-pass-2"},
    )
    assert changed.status_code == 200
    assert client.get("/auth/me", headers=bob).status_code == 401  # tokens from before stop working
    assert client.get("/auth/me", headers=login(client, "bob", "another-pass-2")).status_code == 200


def test_a_change_made_by_another_replica_is_refused_once_the_feed_brings_it(client, alice):
    state = client.app.state.service
    feed_caught_up(client)
    alice_id = user_id(client, alice)
    assert client.get("/auth/me", headers=alice).status_code == 200
    # Another ingress disables alice: a plain UPDATE (this process's ORM hooks do not see it) ...
    with state.engine.begin() as connection:
        connection.execute(update(User).where(User.id == alice_id).values(is_active=False))
    # ... then announces it through the registry, as that ingress does after its commit.
    client.portal.call(state.registry.accounts_changed, [alice_id])
    feed_caught_up(client)
    assert client.get("/auth/me", headers=alice).status_code == 401


def test_own_changes_are_announced_to_the_other_replicas(client, alice, admin):
    core = client.app.state.service.registry.core
    feed_caught_up(client)
    alice_id = user_id(client, alice)
    client.put(f"/auth/users/{alice_id}/toggle-admin", headers=admin)
    deadline = time.monotonic() + 10
    while not any(
        isinstance(event, AccountsChanged) and alice_id in event.user_ids for _, event in core.journal.entries
    ):
        assert time.monotonic() < deadline
        time.sleep(0.01)


def test_a_deleted_account_is_refused_at_once(client, alice, admin):
    feed_caught_up(client)
    assert client.get("/auth/me", headers=alice).status_code == 200
    assert client.delete(f"/auth/users/{user_id(client, alice)}", headers=admin).status_code == 200
    assert client.get("/auth/me", headers=alice).status_code == 401


def test_nothing_is_kept_while_the_feed_fails_or_when_turned_off(tmp_path):
    with make_client(tmp_path) as client:
        alice = register(client, "alice")
        feed_caught_up(client)
        restore = break_the_feed(client, client.app.state.auth.accounts)
        reads = count_row_reads(client)
        client.get("/auth/me", headers=alice)
        client.get("/auth/me", headers=alice)
        assert len(reads) == 2
        restore()
        feed_caught_up(client)
        client.get("/auth/me", headers=alice)
        client.get("/auth/me", headers=alice)
        assert len(reads) == 3
    (tmp_path / "off").mkdir()
    with make_client(tmp_path / "off", account_cache_size=0) as client:
        alice = register(client, "alice")
        reads = count_row_reads(client)
        for _ in range(3):
            assert client.get("/auth/me", headers=alice).status_code == 200
        assert len(reads) == 3 and client.app.state.auth.accounts is None


def test_changes_are_announced_to_the_other_replicas_even_with_no_rows_kept(tmp_path):
    # With ACCOUNT_CACHE_SIZE=0 the other replicas keep no rows, but their open event streams still
    # end on the announcement (before, none was made and such streams lasted until their 60 s check).
    with make_client(tmp_path, account_cache_size=0) as client:
        core = client.app.state.service.registry.core
        admin = login(client, "admin", "admin123")
        alice = register(client, "alice")
        alice_id = user_id(client, alice)
        assert client.put(f"/auth/users/{alice_id}/toggle-active", headers=admin).status_code == 200
        deadline = time.monotonic() + 5
        while not any(
            isinstance(event, AccountsChanged) and alice_id in event.user_ids for _, event in core.journal.entries
        ):
            assert time.monotonic() < deadline, "the disabled account was not announced"
            time.sleep(0.01)
        assert client.app.state.auth.accounts is None
