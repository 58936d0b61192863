"""Fifty concurrent clients submitting and polling for a minute (loopback, bounded in time).

On the ``sleep`` profile so the serving layer, not the model, is what is loaded. Every client
has its own user with a small daily quota and keeps submitting past it.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections import Counter

import httpx
import pytest

from tests.conftest import sleep_app_args

CLIENTS = 50
DAILY_LIMIT = 6
SECONDS = float(os.environ.get("LOAD_TEST_SECONDS", "60"))


@pytest.fixture(scope="module")
def load_url(deploy_app, data_root) -> str:
    return deploy_app(
        "load",
        sleep_app_args(
            data_root, "load", sleep_seconds_per_step=0.002, default_daily_limit=DAILY_LIMIT, max_queue_size=10_000
        ),
    )


async def _register(http: httpx.AsyncClient, n: int) -> dict:
    name, password = f"load{n}", f"pw-load-{n}"
    assert (await http.post("/auth/register", json={"username": name, "password": password})).status_code == 201
    login = await http.post("/auth/login", json={"username": name, "password": password})
    assert login.status_code == 200, login.text
    token = login.json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


async def _client(http: httpx.AsyncClient, headers: dict, deadline: float, codes: Counter) -> list[str]:
    accepted: list[str] = []
    while time.monotonic() < deadline:
        response = await http.post(
            "/text-to-image", headers=headers, data={"prompt": "load", "num_inference_steps": "20"}
        )
        codes[response.status_code] += 1
        if response.status_code == 202:
            task_id = response.json()["task_id"]
            accepted.append(task_id)
            while time.monotonic() < deadline + 60:
                status = await http.get(f"/tasks/{task_id}", headers=headers)
                codes[status.status_code] += 1
                if status.json().get("status") in ("completed", "failed", "cancelled"):
                    break
                await asyncio.sleep(0.3)
        else:
            await asyncio.sleep(0.5)
            codes[(await http.get("/tasks/queue", headers=headers)).status_code] += 1
    # One more past the minute: however slowly this client went, it has used its day and is refused.
    last = await http.post("/text-to-image", headers=headers, data={"prompt": "load", "num_inference_steps": "20"})
    codes[last.status_code] += 1
    assert last.status_code == 429, last.text
    return accepted


async def _run(load_url: str):
    limits = httpx.Limits(max_connections=CLIENTS + 10, max_keepalive_connections=CLIENTS + 10)
    async with httpx.AsyncClient(base_url=load_url, timeout=60, limits=limits) as http:
        users = await asyncio.gather(*(_register(http, n) for n in range(CLIENTS)))
        codes: Counter = Counter()
        deadline = time.monotonic() + SECONDS
        accepted = await asyncio.gather(*(_client(http, h, deadline, codes) for h in users))
        histories = await asyncio.gather(
            *(http.get("/tasks/history/me", headers=h, params={"page_size": 100}) for h in users)
        )
        quotas = await asyncio.gather(*(http.get("/tasks/quota/me", headers=h) for h in users))
    return accepted, codes, [r.json() for r in histories], [q.json() for q in quotas]


def test_fifty_clients_for_a_minute_lose_nothing_and_quotas_stay_exact(load_url):
    accepted, codes, histories, quotas = asyncio.run(_run(load_url))
    assert not [c for c in codes if c >= 500], codes
    all_ids = [t for ids in accepted for t in ids]
    assert len(all_ids) == len(set(all_ids)), "a task id was handed out twice"
    for ids, history, quota in zip(accepted, histories, quotas, strict=False):
        assert len(ids) == DAILY_LIMIT  # each client reached its quota exactly, never past it
        assert {i["task_id"] for i in history["items"]} == set(ids) and history["total"] == len(ids)
        assert all(i["status"] == "completed" for i in history["items"])
        assert quota["used_today"] == DAILY_LIMIT and quota["remaining_today"] == 0
    assert codes[429] >= CLIENTS  # everyone was refused past the limit (each one's last try, at least)
