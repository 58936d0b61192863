"""An ingress replica starting while the task registry restarts: it answers at once (503 with
``Retry-After``), waits for the registry in the background with a log line every few seconds, and
serves once the registry answers. And ``/health`` reads where the registry runs one read at a time.

The registry lookup here is a fake that fails (a registry that does not answer) until the test lets
it through; the app, its state and the registry logic behind the stand-in are the real ones.
"""

from __future__ import annotations

import asyncio
import logging
import threading

import httpx
import pytest

from serving.api import build_service_state, create_app
from serving.ingress import serve_when_ready
from serving.registry.actor import wait_for_registry
from serving.routes import system
from serving.settings import load_settings
from tests.inprocess.conftest import APP_NAME, StandInRegistry, every_model_running

pytestmark = pytest.mark.unit


def _settings(tmp_path):
    return load_settings(
        {
            "data_dir": str(tmp_path),
            "password_hash_profile": "cheapest",
            "cleanup_interval_seconds": 0,
            "model_profile": "sleep",
        }
    )


def test_an_ingress_answers_503_while_it_waits_for_the_registry_then_serves(tmp_path, caplog):
    settings = _settings(tmp_path)
    registry = StandInRegistry(settings.public_dict())
    app = create_app()
    attempts = 0

    async def scenario():
        nonlocal attempts
        registry_back = asyncio.Event()

        async def lookup():  # the fake: a registry restarting until registry_back
            nonlocal attempts
            attempts += 1
            if not registry_back.is_set():
                raise asyncio.TimeoutError
            return registry

        starting = asyncio.create_task(
            serve_when_ready(
                app,
                lambda: wait_for_registry(lookup, "task-registry:test", limit_s=30, retry_s=0.01, log_every_s=0),
                lambda r: build_service_state(settings, r, APP_NAME, read_status=every_model_running),
            )
        )
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://ingress") as client:
            while attempts < 3:
                await asyncio.sleep(0.01)
            meanwhile = [
                await client.get("/health"),
                await client.post("/auth/login", json={"username": "admin", "password": "admin123"}),
                await client.get("/tasks/some-task"),
            ]
            registry_back.set()
            await asyncio.wait_for(starting, 30)
            login = await client.post("/auth/login", json={"username": "admin", "password": "admin123"})
            health = await client.get("/health")
        return meanwhile, login, health

    with caplog.at_level(logging.INFO, logger="qwen_image"):
        meanwhile, login, health = asyncio.run(scenario())

    for response in meanwhile:
        assert response.status_code == 503, response.text
        assert response.headers["Retry-After"] and response.json()["detail"]
    assert login.status_code == 200, login.text
    assert health.status_code == 200 and health.json()["task_registry"] == "up"
    messages = [r.getMessage() for r in caplog.records]
    assert any(m.startswith("waiting for the task registry task-registry:test (TimeoutError)") for m in messages)
    assert any(m.startswith("task registry task-registry:test answered after") for m in messages)
    assert attempts > 3


def test_the_wait_for_a_registry_is_bounded():
    async def never():  # the fake: a registry that never answers
        raise asyncio.TimeoutError

    with pytest.raises(RuntimeError, match="could not start the task registry task-registry:test within"):
        asyncio.run(wait_for_registry(never, "task-registry:test", limit_s=0.2, retry_s=0.01))


def test_health_joins_a_pending_registry_lookup_instead_of_starting_another(tmp_path, monkeypatch):
    settings = _settings(tmp_path)
    state = build_service_state(settings, StandInRegistry(settings.public_dict()), APP_NAME, every_model_running)
    state.registry.handle = object()  # a registry that is a Ray actor, as far as /health can tell
    gcs_back = threading.Event()
    lookups = []

    def stuck_lookup(handle, resource):  # the fake: a GCS that does not answer until gcs_back
        lookups.append(handle)
        gcs_back.wait(30)
        return {"state": "ALIVE"}

    monkeypatch.setattr(system, "registry_location", stuck_lookup)
    monkeypatch.setattr(system, "HEALTH_PING_TIMEOUT_S", 0.05)

    async def scenario():
        stuck = [await system._registry_location(state) for _ in range(3)]
        threads = len(lookups)
        gcs_back.set()
        await asyncio.sleep(0.1)
        return stuck, threads, await system._registry_location(state)

    try:
        stuck, threads, after = asyncio.run(scenario())
    finally:
        gcs_back.set()
    assert stuck == [None, None, None]
    assert threads == 1  # three polls while the GCS was away: one thread
    assert after == {"state": "ALIVE"}
