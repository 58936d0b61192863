"""Exploits from the security and reliability audit, run against the real service over HTTP.

Most run on a light application of their own (``/hard``: the ``sleep`` profile, auth on, small
login and wait limits), so counters they push up do not disturb other suites. The proxy settings
(body deadline 5 s, X-Forwarded-For trusted from no one) come from ``tests/conftest.py``.
"""

from __future__ import annotations

import socket
import threading
import time
import uuid
from urllib.parse import urlsplit

import httpx
import pytest

from tests.api.helpers import SLOW, submit_t2i, wait_status
from tests.conftest import bearer, login, sleep_app_args, wait_for

WAITS_PER_USER = 2
FREE_FAILURES = 2
FREE_FAILURES_PER_ADDRESS = 4


@pytest.fixture(scope="module")
def hard_url(deploy_app, data_root) -> str:
    return deploy_app(
        "hard",
        sleep_app_args(
            data_root,
            "hard",
            model_profile="faulty",  # the sleep profile, whose prompts can also ask for a slower step
            sleep_seconds_per_step=0.05,
            max_waits_per_user=WAITS_PER_USER,
            login_max_failures=FREE_FAILURES,
            login_max_failures_per_address=FREE_FAILURES_PER_ADDRESS,
            login_window_seconds=120,
        ),
    )


@pytest.fixture(scope="module")
def hard(hard_url):
    with httpx.Client(base_url=hard_url, timeout=60) as client:
        yield client


def _register(client: httpx.Client, prefix: str = "h") -> tuple[str, str, dict]:
    name, password = f"{prefix}{uuid.uuid4().hex[:10]}", "pw-" + uuid.uuid4().hex[:10]
    response = client.post("/auth/register", json={"username": name, "password": password})
    assert response.status_code == 201, response.text
    return name, password, bearer(login(client, name, password))


def _client_from(base_url: str, address: str) -> httpx.Client:
    """A client whose connections come from ``address`` (any 127.x.y.z is loopback on Linux)."""
    return httpx.Client(base_url=base_url, timeout=60, transport=httpx.HTTPTransport(local_address=address))


# ------------------------------------------------------------ finding 1


def test_a_deleted_users_token_never_logs_in_as_the_next_user(hard, client, admin_headers):
    """On the main application (SQLite): delete a user, register the next, replay the old token."""
    _, _, old_headers = _register(client, "gone")
    gone_id = client.get("/auth/me", headers=old_headers).json()["id"]
    assert client.delete(f"/auth/users/{gone_id}", headers=admin_headers).status_code == 200
    _, _, new_headers = _register(client, "next")
    assert client.get("/auth/me", headers=new_headers).json()["id"] != gone_id
    assert client.get("/auth/me", headers=old_headers).status_code == 401


# ------------------------------------------------------------ finding 10: input that used to be a 500


def test_a_date_filter_past_the_calendars_end_is_not_a_500(client, user):
    response = client.get(
        "/tasks/history/me",
        headers=user.headers,
        params={"end_date": "9999-12-31T23:00:00-14:00", "start_date": "0001-01-01T00:30:00+14:00"},
    )
    assert response.status_code == 200, response.text


def test_nul_in_a_prompt_or_a_username_is_a_clear_400(client, user):
    prompt = client.post("/text-to-image", headers=user.headers, data={"prompt": "cat\x00dog"})
    assert prompt.status_code == 400 and "prompt" in prompt.json()["detail"]
    register = client.post("/auth/register", json={"username": "nul\x00name", "password": "secret-123"})
    assert register.status_code == 400
    login_ = client.post("/auth/login", json={"username": "nul\x00name", "password": "secret-123"})
    assert login_.status_code == 400


def test_a_username_differing_only_in_case_or_width_is_taken(client):
    assert client.post("/auth/register", json={"username": "Admin", "password": "secret-123"}).status_code == 400
    assert client.post("/auth/register", json={"username": "ＡＤＭＩＮ", "password": "secret-123"}).status_code == 400


# ------------------------------------------------------------ finding 7


def test_failures_from_one_address_slow_that_address_only_not_the_owner(hard_url, hard):
    name, password, _ = _register(hard, "own")
    with _client_from(hard_url, "127.0.0.2") as attacker, _client_from(hard_url, "127.0.0.3") as owner:
        codes = [
            attacker.post("/auth/login", json={"username": name, "password": "wrong"}).status_code
            for _ in range(FREE_FAILURES + 1)
        ]
        assert codes[:FREE_FAILURES] == [401] * FREE_FAILURES and codes[-1] == 429
        slowed = attacker.post("/auth/login", json={"username": name, "password": password})
        assert slowed.status_code == 429 and int(slowed.headers["retry-after"]) >= 1
        assert owner.post("/auth/login", json={"username": name, "password": password}).status_code == 200


# ------------------------------------------------------------ finding 2


def test_a_client_header_cannot_shorten_or_switch_off_the_proxys_timeout(hard):
    _, _, headers = _register(hard, "hdr")
    response = hard.post(
        "/text-to-image",
        headers={**headers, "x-request-timeout-seconds": "0.2", "x-request-disconnect-disabled": "?1"},
        data={"prompt": "slow", "num_inference_steps": "20", "async_mode": "false"},
    )
    assert response.status_code == 200, response.text  # the proxy's own timeout (300 s) applied, not 0.2 s


def test_one_users_long_waits_are_capped_with_429_and_others_still_wait(hard):
    _, _, headers = _register(hard, "wait")
    _, _, other = _register(hard, "other")
    # 60 steps of 0.15 s (a slowed step): 9 s, still running through the refusals below on a slow machine.
    task_id = submit_t2i(hard, headers, prompt=f"{SLOW} awaited", num_inference_steps=60)
    results: list[int] = []

    def wait_for_result(h) -> None:
        response = hard.get(f"/tasks/{task_id}/result", headers=h, params={"wait": "true", "timeout": 60})
        results.append(response.status_code)

    waiters = [threading.Thread(target=wait_for_result, args=(headers,)) for _ in range(WAITS_PER_USER)]
    for waiter in waiters:
        waiter.start()
    time.sleep(3.0)  # let them reach the registry's wait (milliseconds; nothing shows when they have)
    refused = hard.get(f"/tasks/{task_id}/result", headers=headers, params={"wait": "true", "timeout": 60})
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) > 0
    sync_refused = hard.post("/text-to-image", headers=headers, data={"prompt": "x", "async_mode": "false"})
    assert sync_refused.status_code == 429
    other_task = submit_t2i(hard, other)
    waited = hard.get(f"/tasks/{other_task}/result", headers=other, params={"wait": "true", "timeout": 60})
    assert waited.status_code == 200
    for waiter in waiters:
        waiter.join(60)
    assert results == [200] * WAITS_PER_USER
    wait_status(hard, headers, task_id)


def _stalled_upload(host: str, port: int, path: str) -> socket.socket:
    """Headers promising a body, a tenth of it sent, then nothing."""
    sock = socket.create_connection((host, port), timeout=30)
    sock.sendall(
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 1000\r\n\r\n".encode()
        + b"{"
        + b" " * 99
    )
    return sock


def test_hundreds_of_stalled_uploads_do_not_stop_health_or_other_users(hard_url, hard):
    _, _, headers = _register(hard, "calm")
    parts = urlsplit(hard_url)
    stalled = [_stalled_upload(parts.hostname, parts.port, parts.path + "/auth/login") for _ in range(300)]
    try:
        time.sleep(1.0)  # all of them have reached the proxy
        with httpx.Client(base_url=hard_url, timeout=10) as fresh:  # a new connection, like a new user's
            assert fresh.get("/health").json()["status"] == "healthy"
            assert fresh.get("/auth/me", headers=headers).status_code == 200
            task_id = submit_t2i(fresh, headers)
        assert wait_status(hard, headers, task_id)["status"] == "completed"
        # A body that does not arrive within the deadline (5 s here) is answered 408.
        stalled[0].settimeout(30)
        assert stalled[0].recv(200).startswith(b"HTTP/1.1 408")
    finally:
        for sock in stalled:
            sock.close()


# ------------------------------------------------------------ finding 3


def test_a_registry_whose_start_fails_recovers_by_itself_once_the_database_is_back(hard, data_root):
    """A database error during the registry's start used to be kept: a 500 on every call until a manual restart."""
    import ray
    from sqlalchemy import text

    from serving.registry.ids import NAMESPACE, registry_name
    from storage import make_engine
    from storage.db import sqlite_url

    _, _, headers = _register(hard, "reg")
    engine = make_engine(sqlite_url(data_root / "hard"))
    with engine.begin() as conn:  # the start's first read fails: a real database error, not a mock
        conn.execute(text("ALTER TABLE task_records RENAME TO task_records_away"))
    try:
        ray.kill(ray.get_actor(registry_name("hard"), namespace=NAMESPACE), no_restart=False)
        failing = hard.get("/tasks/queue", headers=headers)
        assert failing.status_code in (500, 503)
    finally:
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE task_records_away RENAME TO task_records"))
        engine.dispose()
    wait_for(
        lambda: hard.get("/tasks/queue", headers=headers).status_code == 200,
        timeout=60,
        what="the registry to start again",
    )
    task_id = submit_t2i(hard, headers)
    assert wait_status(hard, headers, task_id)["status"] == "completed"


# ------------------------------------------------------------ finding 7, last: it slows logins from 127.0.0.1 here


def test_x_forwarded_for_from_an_untrusted_client_does_not_change_its_address(hard):
    """Spraying accounts with a new X-Forwarded-For each time is still one address, and is slowed.

    From loopback, which uvicorn trusts by default: the service trusts only ``TRUSTED_PROXIES``.
    """
    codes = [
        hard.post(
            "/auth/login",
            headers={"X-Forwarded-For": f"198.51.100.{n}"},
            json={"username": f"nobody{n}", "password": "wrong"},
        ).status_code
        for n in range(FREE_FAILURES_PER_ADDRESS + 1)
    ]
    assert codes[-1] == 429, codes
