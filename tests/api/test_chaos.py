"""Chaos under load: fifty clients submit and poll while a model replica is killed, the registry is
killed, and the real PostgreSQL server is stopped for 20 s and started again (docs/reliability.md).

The service runs as ``python -m serving`` (what ``make run`` starts) in a Ray cluster of its own,
against a PostgreSQL server this test starts: the processes killed are real (SIGKILL to the model
replica's and the registry's worker processes, which Serve and Ray restart), and so is the outage
(``pg_ctl stop -m fast`` cuts every connection). The ``sleep`` profile keeps the model cheap.

Asserted: after the chaos every accepted task completed exactly once (none lost, none left
``pending``/``running``, each once in its user's history, its result downloadable), and each user's
quota counts exactly the tasks stored for them. During the outage every request got an answer
(never one that hangs past the client's timeout), and no request anywhere got a 500: a database
that is away or a registry that restarts is a 503 with ``Retry-After``; ``/health`` in the middle
of the outage says ``degraded``. The figures are printed (``-s`` shows them).
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import httpx
import psutil
import pytest

from tests import pg
from tests.conftest import ADDRESS_LIMITS_ENV, free_port, wait_for

ROOT = Path(__file__).resolve().parents[2]
CLIENTS = 50
DAILY_LIMIT = 4
# When each fault happens, in seconds after the load starts; the load runs LOAD_SECONDS.
KILL_REPLICA_AT, KILL_REGISTRY_AT, DATABASE_DOWN_AT, DATABASE_DOWN_FOR = 3.0, 8.0, 13.0, 20.0
LOAD_SECONDS = DATABASE_DOWN_AT + DATABASE_DOWN_FOR + 5.0
# A client waits this long for an answer; one that does not come is a hang.
CLIENT_TIMEOUT_S = 20.0
TERMINAL = {"completed", "failed", "cancelled"}


@dataclass
class Call:
    """One request of the load: when it was sent (s after the start), how long it took, what came back."""

    at: float
    seconds: float
    outcome: str  # the status code, or the exception's name when no answer came
    detail: str = ""  # what a 5xx said
    retry_after: Optional[str] = None  # a 503's Retry-After


@pytest.fixture(scope="module")
def database() -> pg.PostgresServer:
    server = pg.start_server()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def service(database, tmp_path_factory):
    """``python -m serving`` on the sleep profile against ``database``; yields (base URL, process)."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_ADDRESS")}
    env.update(
        PORT=str(port),
        DATA_DIR=str(tmp_path_factory.mktemp("chaos")),
        DATABASE_URL=database.url(),
        MODEL_PROFILE="sleep",
        SLEEP_SECONDS_PER_STEP="0.005",
        PASSWORD_HASH_PROFILE="cheapest",
        **ADDRESS_LIMITS_ENV,
        CLEANUP_INTERVAL_SECONDS="0",
        DEFAULT_DAILY_LIMIT=str(DAILY_LIMIT),
        MAX_QUEUE_SIZE="10000",
        ADMIN_PASSWORD="chaos-admin-pw",
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "serving"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for(lambda: _healthy(base), timeout=240, interval=0.5, what="the service to start")
        yield base, proc
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=90)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/health", timeout=3).json()["status"] == "healthy"
    except (httpx.HTTPError, ValueError, KeyError):
        return False


def kill_worker(service_proc: subprocess.Popen, title: str) -> int:
    """SIGKILL the one Ray worker process of the service whose title starts with ``title``."""
    for child in psutil.Process(service_proc.pid).children(recursive=True):
        try:
            if " ".join(child.cmdline()).startswith(title):
                child.kill()
                return child.pid
        except psutil.Error:
            continue
    raise AssertionError(f"no process {title!r} in the service")


async def _timed(calls: list[Call], start: float, request) -> Optional[httpx.Response]:
    sent = time.monotonic()
    try:
        response = await request
    except httpx.HTTPError as exc:
        calls.append(Call(sent - start, time.monotonic() - sent, type(exc).__name__))
        return None
    detail = response.text[:100] if response.status_code >= 500 else ""
    retry_after = response.headers.get("retry-after")
    calls.append(Call(sent - start, time.monotonic() - sent, str(response.status_code), detail, retry_after))
    return response


async def _patiently(send) -> httpx.Response:
    """What a well-behaved client does with a 503: waits the Retry-After it names, then asks again
    (fifty accounts made at once on a 2-core machine may find the service busy; that is allowed)."""
    for _ in range(20):
        response = await send()
        if response.status_code != 503 or not response.headers.get("retry-after"):
            return response
        await asyncio.sleep(float(response.headers["retry-after"]))
    return response


async def _register(http: httpx.AsyncClient, n: int) -> dict:
    name, password = f"chaos{n}", f"pw-chaos-{n}"
    made = await _patiently(lambda: http.post("/auth/register", json={"username": name, "password": password}))
    assert made.status_code == 201, (made.status_code, made.text)
    login = await _patiently(lambda: http.post("/auth/login", json={"username": name, "password": password}))
    assert login.status_code == 200, (login.status_code, login.text, login.headers.get("retry-after"))
    return {"Authorization": f"Bearer {login.json()['access_token']}"}


async def _client(http, headers, start: float, calls: list[Call]) -> list[str]:
    """Submit, poll to the end, submit again, until the quota refuses (429) or the load ends."""
    accepted: list[str] = []
    deadline = start + LOAD_SECONDS
    while time.monotonic() < deadline:
        data = {"prompt": "chaos", "num_inference_steps": "20"}
        response = await _timed(calls, start, http.post("/text-to-image", headers=headers, data=data))
        if response is None or response.status_code != 202:
            if response is not None and response.status_code == 429 and "quota" in response.text.lower():
                break
            await asyncio.sleep(0.5)
            continue
        task_id = response.json()["task_id"]
        accepted.append(task_id)
        while time.monotonic() < deadline:
            status = await _timed(calls, start, http.get(f"/tasks/{task_id}", headers=headers))
            if status is not None and status.status_code == 200 and status.json().get("status") in TERMINAL:
                break
            await asyncio.sleep(0.3)
    return accepted


async def _chaos(
    base: str, service_proc: subprocess.Popen, database: pg.PostgresServer, start: float, log: dict
) -> None:
    await asyncio.sleep(KILL_REPLICA_AT - (time.monotonic() - start))
    log["replica_killed"] = (time.monotonic() - start, kill_worker(service_proc, "ray::ServeReplica:qwen-image:"))
    await asyncio.sleep(KILL_REGISTRY_AT - (time.monotonic() - start))
    log["registry_killed"] = (time.monotonic() - start, kill_worker(service_proc, "ray::TaskRegistry"))
    await asyncio.sleep(DATABASE_DOWN_AT - (time.monotonic() - start))
    down = time.monotonic() - start
    await asyncio.to_thread(database.pause)
    await asyncio.sleep(DATABASE_DOWN_FOR / 2)
    async with httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT_S) as http:
        log["health_in_outage"] = (await http.get("/health")).json().get("status")
    await asyncio.sleep(DATABASE_DOWN_FOR / 2)
    await asyncio.to_thread(database.resume)
    log["database_down"] = (down, time.monotonic() - start)


async def _run(base: str, service_proc: subprocess.Popen, database: pg.PostgresServer):
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=CLIENTS + 10)
    async with httpx.AsyncClient(base_url=base, timeout=CLIENT_TIMEOUT_S, limits=limits) as http:
        users = await asyncio.gather(*(_register(http, n) for n in range(CLIENTS)))
        calls: list[Call] = []
        log: dict = {}
        start = time.monotonic()
        results = await asyncio.gather(
            _chaos(base, service_proc, database, start, log), *(_client(http, h, start, calls) for h in users)
        )
        return users, results[1:], calls, log


def _histories(base: str, users: list[dict]) -> Optional[list[dict]]:
    """Every user's history (None when one cannot be read)."""
    histories = []
    for headers in users:
        response = httpx.get(base + "/tasks/history/me", headers=headers, params={"page_size": 100}, timeout=10)
        if response.status_code != 200:
            return None
        histories.append(response.json())
    return histories


def _settled(base: str, users: list[dict], seconds: float) -> list[dict]:
    """The users' histories once no task is pending or running, or as they are after ``seconds``."""
    deadline = time.monotonic() + seconds
    while True:
        histories = _histories(base, users)
        if histories is not None:
            unfinished = [i for h in histories for i in h["items"] if i["status"] not in TERMINAL]
            if not unfinished or time.monotonic() > deadline:
                return histories
        elif time.monotonic() > deadline:
            raise AssertionError("the users' histories cannot be read after the chaos")
        time.sleep(1.0)


def test_killed_replica_killed_registry_and_a_database_outage_under_load_lose_nothing(service, database):
    base, proc = service
    users, accepted, calls, log = asyncio.run(_run(base, proc, database))
    histories = _settled(base, users, seconds=60)

    down_from, down_to = log["database_down"]
    outage = [c for c in calls if down_from <= c.at < down_to]
    codes = Counter(c.outcome for c in calls)
    all_ids = [t for ids in accepted for t in ids]
    lost, unfinished, quota_off, stored_twice = 0, Counter(), 0, 0
    stuck: list[tuple[str, dict]] = []
    for ids, history, headers in zip(accepted, histories, users, strict=True):
        stored = [item["task_id"] for item in history["items"]]
        stored_twice += len(stored) - len(set(stored))
        lost += len(set(ids) - set(stored))
        for item in history["items"]:
            if item["status"] != "completed":
                unfinished[item["status"]] += 1
                live = httpx.get(f"{base}/tasks/{item['task_id']}", headers=headers, timeout=10)
                stuck.append((item["status"], live.json() if live.status_code == 200 else {"code": live.status_code}))
        quota = httpx.get(base + "/tasks/quota/me", headers=headers, timeout=10).json()
        quota_off += quota["used_today"] != history["total"]  # exact: what is stored for them

    slowest_in_outage = max((c.seconds for c in outage), default=0.0)
    print(
        f"\nchaos: {len(calls)} requests, {sum(1 for c in calls if c.outcome.startswith('5'))} answered 5xx "
        f"({dict(sorted((k, v) for k, v in codes.items() if not k.startswith('2')))}), "
        f"{len(all_ids)} tasks accepted, {lost} lost, {dict(unfinished)} not completed, "
        f"{quota_off} quotas off, {stored_twice} stored twice; "
        f"replica killed at {log['replica_killed'][0]:.1f} s, registry at {log['registry_killed'][0]:.1f} s, "
        f"database down {down_from:.1f}-{down_to:.1f} s: {len(outage)} requests, "
        f"{dict(Counter(c.outcome for c in outage))}, slowest answer {slowest_in_outage:.1f} s, "
        f"/health in the outage: {log['health_in_outage']}"
    )
    elsewhere = [c for c in calls if c.outcome.startswith("5") and not down_from <= c.at < down_to]
    print(f"5xx outside the outage: {len(elsewhere)}, sent at (s): {sorted(round(c.at, 1) for c in elsewhere)}")
    print("what they said:", Counter((c.outcome, c.detail) for c in elsewhere).most_common(4))
    print("what the outage's said:", Counter((c.outcome, c.detail) for c in outage).most_common(4))
    for status, live in stuck[:5]:
        print("not completed:", status, live)
    assert all_ids, "no task was accepted"
    assert len(all_ids) == len(set(all_ids)) and not stored_twice, "a task was handed out or stored twice"
    assert lost == 0 and not unfinished and not quota_off
    sample = all_ids[:: max(1, len(all_ids) // 10)]
    for task_id in sample:  # results are there (every tenth, to keep the run short)
        owner = next(h for ids, h in zip(accepted, users, strict=True) if task_id in ids)
        assert httpx.get(f"{base}/tasks/{task_id}/result", headers=owner, timeout=10).status_code == 200
    assert outage, "no request was sent while the database was down"
    assert not [c for c in outage if not c.outcome.isdigit()], "a request got no answer during the outage"
    # A database that is away, a registry restarting: 503 + Retry-After, never a 500.
    assert not [c for c in calls if c.outcome == "500"], Counter((c.outcome, c.detail) for c in calls)
    assert all(c.retry_after for c in calls if c.outcome == "503")
    assert log["health_in_outage"] == "degraded"  # /health probes the database itself
