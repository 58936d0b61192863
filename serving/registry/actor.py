"""The registry as a Ray actor: :class:`TaskRegistry` around :class:`~serving.registry.core.RegistryCore`,
started (and restarted) by Ray, created by the ingress and found by name by the model replicas."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Optional, TypeVar, Union

import ray
from ray.actor import ActorHandle

from serving.logs import registry_events
from serving.placement import (
    REGISTRY_PING_TIMEOUT_S,
    REGISTRY_RESTART_WAIT_S,
    REGISTRY_WAIT_LOG_S,
    registry_placement,
)
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
from serving.registry.core import RegistryCore
from serving.registry.ids import NAMESPACE, code_version, registry_name
from serving.registry.interface import RegistryService

log = logging.getLogger("qwen_image.registry")

# Between a failed start and the exit that has Ray restart the actor: no hot loop while the
# database stays away.
RESTART_DELAY_S = 1.0


async def start_or_exit(
    core: RegistryCore, exit: Callable[[int], Any] = os._exit, delay_s: float = RESTART_DELAY_S
) -> None:
    """``core.start()``; when it fails, the process exits so Ray restarts the actor from scratch.

    A failed start must not be kept and re-raised to every caller (a 500 on every request until
    someone restarts the registry); a restart retries it with a fresh process, and callers
    meanwhile see the actor as unavailable, which the ingress answers with a retryable 503.
    """
    try:
        await core.start()
    except Exception:
        log.exception("registry %s: start failed; exiting so that Ray restarts it", core.epoch)
        await asyncio.sleep(delay_s)
        exit(1)
        raise


@ray.remote(num_cpus=0, max_restarts=-1, max_concurrency=10_000)  # type: ignore[call-overload]
class TaskRegistry:
    """The Ray actor around :class:`RegistryCore` (methods are async: one event loop). Its methods are
    those of :class:`serving.registry.interface.RegistryService`, each forwarded to the core once it
    has started."""

    def __init__(self, app_name: str, settings_dict: dict, version: str):
        logging.basicConfig(level=logging.INFO)
        registry_events(registry_name(app_name))
        self.core = RegistryCore(app_name, settings_dict, version)
        self._started: Optional[asyncio.Task] = None
        # Start (recovery, pending webhook deliveries) as soon as this actor runs, not at the first
        # caller's request: after a crash restart nobody may call for a while. The call is queued
        # until this constructor has returned.
        try:
            ray.get_runtime_context().current_actor.ping.remote()
        except Exception:  # not running as an actor (plain construction): start on first use
            pass

    async def _ready(self) -> RegistryCore:
        if self._started is None:
            self._started = asyncio.create_task(start_or_exit(self.core))
        await self._started
        return self.core

    async def ping(self) -> RegistryIdentity:
        return await (await self._ready()).ping()

    async def report_replica(self, replica_id: str, info: dict[str, Any]) -> None:
        return await (await self._ready()).report_replica(replica_id, info)

    async def replica_info(self) -> dict[str, dict[str, Any]]:
        return await (await self._ready()).replica_info()

    async def create(self, spec: TaskSpec) -> CreateAnswer:
        return await (await self._ready()).create(spec)

    async def mark_running(self, task_id: str, epoch: str, attempt: int) -> bool:
        return await (await self._ready()).mark_running(task_id, epoch, attempt)

    async def report_progress(self, task_id: str, epoch: str, attempt: int, index: int, step: int) -> bool:
        return await (await self._ready()).report_progress(task_id, epoch, attempt, index, step)

    async def status(self, task_id: str) -> Optional[TaskStatusView]:
        return await (await self._ready()).status(task_id)

    async def report_preview(self, task_id: str, epoch: str, attempt: int, index: int, preview: dict) -> bool:
        return await (await self._ready()).report_preview(task_id, epoch, attempt, index, preview)

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

    async def wait(self, task_id: str, timeout: float) -> Optional[WaitAnswer]:
        return await (await self._ready()).wait(task_id, timeout)

    async def queue(self) -> QueueSnapshot:
        return await (await self._ready()).queue()

    async def cancel(self, task_id: str) -> Union[TaskStatusView, AlreadyFinished, None]:
        return await (await self._ready()).cancel(task_id)

    async def cleanup(self, max_age_hours: float, max_age_days: float) -> CleanupCounts:
        return await (await self._ready()).cleanup(max_age_hours, max_age_days)


# The handle the ingress and the replicas hold: calls are ``handle.<method>.remote(...)``.
RegistryHandle = ActorHandle[TaskRegistry]


async def get_or_create_registry_async(
    app_name: str, settings_dict: dict, limit_s: float = REGISTRY_RESTART_WAIT_S
) -> RegistryHandle:
    """The application's registry actor, replacing one that runs other code or settings. One that is
    restarting (its node lost) is waited for, up to ``limit_s``, with a log line every few seconds."""
    version = code_version() + hashlib.sha256(repr(sorted(settings_dict.items())).encode()).hexdigest()[:8]
    name = registry_name(app_name)
    # On a node advertising the control-plane resource, never on a GPU node by chance (serving.placement).
    placement = registry_placement(settings_dict)

    async def attempt() -> Optional[RegistryHandle]:
        actor: Any = TaskRegistry.options(  # type: ignore[attr-defined]
            name=name, namespace=NAMESPACE, lifetime="detached", get_if_exists=True, **placement
        ).remote(app_name, settings_dict, version)
        running = (await asyncio.wait_for(actor.ping.remote(), REGISTRY_PING_TIMEOUT_S)).version
        if running == version:
            return actor
        log.info("replacing task registry %s (version %s -> %s)", name, running, version)
        ray.kill(actor, no_restart=True)
        return None

    return await wait_for_registry(attempt, name, limit_s)


T = TypeVar("T")


async def wait_for_registry(
    attempt: Callable[[], Awaitable[Optional[T]]],
    name: str,
    limit_s: float = REGISTRY_RESTART_WAIT_S,
    retry_s: float = 0.5,
    log_every_s: float = REGISTRY_WAIT_LOG_S,
) -> T:
    """``attempt()`` until it returns a registry: a registry that does not answer (restarting, or not
    placed yet) is tried again every ``retry_s``, with a warning every ``log_every_s``; ``None``
    (a registry just replaced) is tried again too. After ``limit_s`` a RuntimeError says so."""
    started = time.monotonic()
    last_log = -float("inf")
    failures = 0
    while True:
        try:
            found = await attempt()
        except (ray.exceptions.RayActorError, asyncio.TimeoutError) as exc:
            failures += 1
            now = time.monotonic()
            if now - started >= limit_s:
                raise RuntimeError(f"could not start the task registry {name} within {now - started:.0f} s") from exc
            if now - last_log >= log_every_s:
                log.warning(
                    "waiting for the task registry %s (%s), %.0f s so far", name, type(exc).__name__, now - started
                )
                last_log = now
            await asyncio.sleep(retry_s)
            continue
        if found is not None:
            if failures:
                log.info("task registry %s answered after %.1f s", name, time.monotonic() - started)
            return found
        if time.monotonic() - started >= limit_s:
            raise RuntimeError(f"the task registry {name} was replaced but did not come back within {limit_s:.0f} s")
        await asyncio.sleep(retry_s)


def lookup_registry(app_name: str) -> RegistryHandle:
    """The running registry actor of ``app_name`` (ValueError when there is none)."""
    return ray.get_actor(registry_name(app_name), namespace=NAMESPACE)


def _conforms(actor: TaskRegistry) -> RegistryService:
    return actor  # mypy checks that the actor forwards every method of the registry's interface
