"""How the ingress talks to the task registry: typed methods over the registry actor's handle.

:class:`Registry` is what the routes need from a registry; :class:`RegistryClient` provides it over
Ray. While the registry actor restarts, every call answers a retryable 503 rather than a 500.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any, Optional, Protocol, TypeVar, Union

import ray
from fastapi import HTTPException, status

from serving import messages
from serving.protocol import (
    AlreadyFinished,
    CleanupCounts,
    CreateAnswer,
    QueueSnapshot,
    RegistryIdentity,
    TaskSpec,
    TaskStatusView,
    WaitAnswer,
)
from serving.registry import lookup_registry

T = TypeVar("T")
_RAY_UNAVAILABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ValueError)


class Registry(Protocol):
    """The task registry as the routes see it."""

    async def create(self, spec: TaskSpec) -> CreateAnswer: ...

    async def status(self, task_id: str) -> Optional[TaskStatusView]: ...

    async def wait(self, task_id: str, timeout: float) -> Optional[WaitAnswer]: ...

    async def queue(self) -> QueueSnapshot: ...

    async def cancel(self, task_id: str) -> Union[TaskStatusView, AlreadyFinished, None]: ...

    async def cleanup(self, max_age_hours: float, max_age_days: float) -> CleanupCounts: ...

    async def ping(self) -> RegistryIdentity: ...

    async def replica_info(self) -> dict[str, dict[str, Any]]: ...


class RegistryClient:
    """:class:`Registry` over the registry actor of one application."""

    def __init__(self, handle: Any, app_name: str):
        self.handle = handle
        self.app_name = app_name

    async def _call(self, call: Callable[[Any], Awaitable[T]]) -> T:
        """``call(handle)``; while the registry restarts the client gets a retryable 503, never a 500."""
        for attempt in range(2):
            try:
                return await call(self.handle)
            except _RAY_UNAVAILABLE:
                if attempt == 0:
                    # A replaced (not restarted) registry has a new handle under the same name.
                    try:
                        self.handle = await asyncio.to_thread(lookup_registry, self.app_name)
                        continue
                    except ValueError:
                        pass
                break
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, messages.REGISTRY_UNAVAILABLE,
                            headers={"Retry-After": "2"})

    async def create(self, spec: TaskSpec) -> CreateAnswer:
        return await self._call(lambda h: h.create.remote(spec))

    async def status(self, task_id: str) -> Optional[TaskStatusView]:
        return await self._call(lambda h: h.status.remote(task_id))

    async def wait(self, task_id: str, timeout: float) -> Optional[WaitAnswer]:
        return await self._call(lambda h: h.wait.remote(task_id, timeout))

    async def queue(self) -> QueueSnapshot:
        return await self._call(lambda h: h.queue.remote())

    async def cancel(self, task_id: str) -> Union[TaskStatusView, AlreadyFinished, None]:
        return await self._call(lambda h: h.cancel.remote(task_id))

    async def cleanup(self, max_age_hours: float, max_age_days: float) -> CleanupCounts:
        return await self._call(lambda h: h.cleanup.remote(max_age_hours, max_age_days))

    async def ping(self) -> RegistryIdentity:
        return await self._call(lambda h: h.ping.remote())

    async def replica_info(self) -> dict[str, dict[str, Any]]:
        return await self._call(lambda h: h.replica_info.remote())
