"""The in-process tier: the real FastAPI app and a real SQLite file, no Ray.

The app is built exactly as an ingress replica builds it (``serving.api``), but the task registry
is :class:`StandInRegistry`, a fake: the real registry logic (``RegistryCore``: quotas, records,
status, cancel, clean-up) runs in the test's event loop and its model requests go to
:class:`StandInModel`, a fake model deployment, instead of Ray Serve replicas.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Iterator
from typing import Any, Optional, Union

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from models.kinds import ModelKind
from serving.api import build_service_state, create_app
from serving.protocol import (
    AlreadyFinished,
    CleanupCounts,
    CreateAnswer,
    EventPoll,
    Failed,
    Generated,
    ModelOutcome,
    ModelRequest,
    QueueSnapshot,
    RegistryIdentity,
    Skipped,
    TaskEvent,
    TaskEvents,
    TaskSpec,
    TaskStatusView,
    WaitAnswer,
)
from serving.registry.core import RegistryCore
from serving.settings import load_settings
from tests.conftest import ADDRESS_LIMITS

APP_NAME = "inprocess"
HOLD = "hold"  # a prompt starting with this waits until the task is cancelled
FAIL = "fail"  # a prompt starting with this fails


class StandInModel:
    """Fake of a model deployment's handle (``handle.run.remote(request)``): no pipeline.

    Like a replica, it runs one request at a time (the others stay pending) and starts it through
    the registry; then it answers at once: a small PNG per image written to the real result store,
    or a failure when the prompt says so.
    """

    def __init__(self, core: RegistryCore):
        self.core = core
        self.run = self  # handle.run.remote(...)
        self._device = asyncio.Lock()

    def remote(self, request: ModelRequest) -> asyncio.Future[ModelOutcome]:
        return asyncio.ensure_future(self._run(request))

    async def _run(self, request: ModelRequest) -> ModelOutcome:
        async with self._device:
            return await self._generate(request)

    async def _generate(self, request: ModelRequest) -> ModelOutcome:
        if not await self.core.mark_running(*request.stamp):
            return Skipped(index=request.index)
        if request.prompt.startswith(HOLD):
            while not await self.core.report_progress(*request.stamp, request.index, 1):
                await asyncio.sleep(0.01)
            return Skipped(index=request.index)
        if request.prompt.startswith(FAIL):
            return Failed(index=request.index, error="生成失败 (RuntimeError: stand-in failure)")
        keys = []
        for n in range(request.parameters.num_images):
            key = request.output_key or f"results/{request.task_id}/image_{request.index}_{n}.png"
            buffer = io.BytesIO()
            Image.new("RGB", (16, 16), (n * 40, 0, 0)).save(buffer, format="PNG")
            self.core.store.put(key, buffer.getvalue())
            keys.append(key)
        return Generated(index=request.index, keys=keys, seed=request.parameters.seed, seconds=0.01)


class StandInRegistry:
    """Fake of the registry actor: :class:`RegistryCore` in this process, models stood in for."""

    def __init__(self, settings_dict: dict[str, Any]):
        self.core = RegistryCore(APP_NAME, settings_dict, "inprocess")
        model = StandInModel(self.core)
        self.core._handles = dict.fromkeys(ModelKind, model)
        self._started: Optional[asyncio.Task] = None

    async def _ready(self) -> RegistryCore:
        if self._started is None:
            self._started = asyncio.ensure_future(self.core.start())
        await self._started
        return self.core

    async def create(self, spec: TaskSpec) -> CreateAnswer:
        return await (await self._ready()).create(spec)

    async def status(self, task_id: str) -> Optional[TaskStatusView]:
        return await (await self._ready()).status(task_id)

    async def wait(self, task_id: str, timeout: float) -> Optional[WaitAnswer]:
        return await (await self._ready()).wait(task_id, timeout)

    async def queue(self) -> QueueSnapshot:
        return await (await self._ready()).queue()

    async def cancel(self, task_id: str) -> Union[TaskStatusView, AlreadyFinished, None]:
        return await (await self._ready()).cancel(task_id, grace_seconds=2.0)

    async def cleanup(self, max_age_hours: float, max_age_days: float) -> CleanupCounts:
        return await (await self._ready()).cleanup(max_age_hours, max_age_days)

    async def ping(self) -> RegistryIdentity:
        return await (await self._ready()).ping()

    async def poll_events(
        self, epoch: Optional[str], cursor: Optional[int], timeout: float, previews: bool = True
    ) -> EventPoll:
        return await (await self._ready()).poll_events(epoch, cursor, timeout, previews)

    async def accounts_changed(self, user_ids: list[int]) -> None:
        return await (await self._ready()).accounts_changed(user_ids)

    async def task_events(self, task_id: str, after_id: int = 0) -> Optional[TaskEvents]:
        return await (await self._ready()).task_events(task_id, after_id)

    async def user_events(self, user_id: Optional[int], after_id: int = 0) -> list[TaskEvent]:
        return await (await self._ready()).user_events(user_id, after_id)

    async def refresh_positions(self, task_ids: list[str]) -> int:
        return await (await self._ready()).refresh_positions(task_ids)

    async def replica_info(self) -> dict[str, dict[str, Any]]:
        return await (await self._ready()).replica_info()


def every_model_running(app_name: str) -> dict:
    """Stand-in for Serve's controller: one running replica per model deployment."""
    return {
        "gpu_count": 1,
        "deployments": {kind.deployment: {"status": "HEALTHY", "running_replicas": 1} for kind in ModelKind},
    }


def make_client(tmp_path, **settings: Any) -> TestClient:
    values = {
        "data_dir": str(tmp_path),
        "password_hash_profile": "cheapest",
        "cleanup_interval_seconds": 0,
        "model_profile": "sleep",
        **ADDRESS_LIMITS,
        **settings,
    }
    loaded = load_settings(values)
    registry = StandInRegistry(loaded.public_dict())
    return TestClient(create_app(build_service_state(loaded, registry, APP_NAME, read_status=every_model_running)))


@pytest.fixture
def client(tmp_path) -> Iterator[TestClient]:
    with make_client(tmp_path) as c:
        yield c


@pytest.fixture
def admin(client) -> dict[str, str]:
    return login(client, "admin", "admin123")


def login(client: TestClient, username: str, password: str) -> dict[str, str]:
    response = client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def register(client: TestClient, username: str, password: str = "secret-pass-1") -> dict[str, str]:
    response = client.post("/auth/register", json={"username": username, "password": password})
    assert response.status_code == 201, response.text
    return login(client, username, password)


@pytest.fixture
def alice(client) -> dict[str, str]:
    return register(client, "alice")


@pytest.fixture
def bob(client) -> dict[str, str]:
    return register(client, "bob")


def png(size=(32, 24)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (1, 2, 3)).save(buffer, format="PNG")
    return buffer.getvalue()
