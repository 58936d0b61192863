"""How the ingress talks to the task registry: typed methods over the registry actor's handle.

:class:`~serving.registry.interface.Registry` is what the routes need from a registry;
:class:`RegistryClient` provides it over Ray. While the registry actor restarts, every call answers a
retryable 503 rather than a 500.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import Any, Optional, TypeVar, Union

import ray
from fastapi import HTTPException, status

from i18n import messages
from serving.protocol import (
    AlreadyFinished,
    CleanupCounts,
    CreateAnswer,
    EventPoll,
    QueueSnapshot,
    RegistryIdentity,
    TaskEvent,
    TaskEvents,
    TaskSpec,
    TaskStatusView,
    WaitAnswer,
)
from serving.registry.actor import RegistryHandle, lookup_registry
from serving.registry.interface import Registry

T = TypeVar("T")
log = logging.getLogger("qwen_image.ingress")
# Longest an ingress waits for the registry to answer (beyond what a call itself asks to wait):
# a registry stuck on a slow database makes requests a 503 after this, never hang.
REGISTRY_CALL_TIMEOUT_S = 15.0
_RAY_UNAVAILABLE = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError, ValueError)


class RegistryClient:
    """:class:`Registry` over the registry actor of one application."""

    def __init__(self, handle: RegistryHandle, app_name: str, timeout_s: float = REGISTRY_CALL_TIMEOUT_S):
        self.handle = handle
        self.app_name = app_name
        self.timeout_s = timeout_s

    # ``call`` takes the handle as Any: Ray types an actor's methods on its handle as Never.
    async def _call(self, call: Callable[[Any], Awaitable[T]], waits_s: float = 0.0) -> T:
        """``call(handle)``; while the registry restarts, or when it does not answer within
        ``timeout_s`` (plus ``waits_s`` the call itself waits), the client gets a retryable 503."""
        for attempt in range(2):
            try:
                return await asyncio.wait_for(_awaited(call(self.handle)), self.timeout_s + waits_s)
            except asyncio.TimeoutError:
                log.warning("the task registry did not answer within %.0f s", self.timeout_s + waits_s)
                break
            except _RAY_UNAVAILABLE:
                if attempt == 0:
                    # A replaced (not restarted) registry has a new handle under the same name.
                    try:
                        self.handle = await asyncio.to_thread(lookup_registry, self.app_name)
                        continue
                    except ValueError:
                        pass
                break
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, messages.REGISTRY_UNAVAILABLE, headers={"Retry-After": "2"}
        )

    async def create(self, spec: TaskSpec) -> CreateAnswer:
        return await self._call(lambda h: h.create.remote(spec))

    async def status(self, task_id: str) -> Optional[TaskStatusView]:
        return await self._call(lambda h: h.status.remote(task_id))

    async def wait(self, task_id: str, timeout: float) -> Optional[WaitAnswer]:
        return await self._call(lambda h: h.wait.remote(task_id, timeout), waits_s=timeout)

    async def queue(self) -> QueueSnapshot:
        return await self._call(lambda h: h.queue.remote())

    async def cancel(self, task_id: str) -> Union[TaskStatusView, AlreadyFinished, None]:
        return await self._call(lambda h: h.cancel.remote(task_id))

    async def cleanup(self, max_age_hours: float, max_age_days: float) -> CleanupCounts:
        return await self._call(lambda h: h.cleanup.remote(max_age_hours, max_age_days))

    async def ping(self) -> RegistryIdentity:
        return await self._call(lambda h: h.ping.remote())

    async def poll_events(
        self, epoch: Optional[str], cursor: Optional[int], timeout: float, previews: bool = True
    ) -> EventPoll:
        return await self._call(lambda h: h.poll_events.remote(epoch, cursor, timeout, previews), waits_s=timeout)

    async def accounts_changed(self, user_ids: list[int]) -> None:
        return await self._call(lambda h: h.accounts_changed.remote(user_ids))

    async def task_events(self, task_id: str, after_id: int = 0) -> Optional[TaskEvents]:
        return await self._call(lambda h: h.task_events.remote(task_id, after_id))

    async def user_events(self, user_id: Optional[int], after_id: int = 0) -> list[TaskEvent]:
        return await self._call(lambda h: h.user_events.remote(user_id, after_id))

    async def refresh_positions(self, task_ids: list[str]) -> int:
        return await self._call(lambda h: h.refresh_positions.remote(task_ids))

    async def replica_info(self) -> dict[str, dict[str, Any]]:
        return await self._call(lambda h: h.replica_info.remote())


async def _awaited(awaitable: Awaitable[T]) -> T:
    return await awaitable


def _conforms(client: RegistryClient) -> Registry:
    return client  # mypy checks that the client has every method of the registry's interface
