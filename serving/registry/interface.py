"""The task registry's methods, written once.

:class:`Registry` is what the ingress's routes ask of it; :class:`ModelReports` is what a model
replica tells it; :class:`RegistryService` is both, the whole of the actor's API. The actor
(:class:`serving.registry.actor.TaskRegistry`), its logic (:class:`serving.registry.core.RegistryCore`),
the ingress's client (:class:`serving.registry_client.RegistryClient`) and the tests' stand-in
registry are checked against these: by mypy (each module assigns itself to its protocol) and by
``tests/serving/test_registry_interface.py``, which compares every method's signature.
"""

from __future__ import annotations

from typing import Any, Optional, Protocol, Union

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


class Registry(Protocol):
    """The task registry as the routes see it."""

    async def create(self, spec: TaskSpec) -> CreateAnswer: ...

    async def status(self, task_id: str) -> Optional[TaskStatusView]: ...

    async def wait(self, task_id: str, timeout: float) -> Optional[WaitAnswer]: ...

    async def queue(self) -> QueueSnapshot: ...

    async def cancel(self, task_id: str) -> Union[TaskStatusView, AlreadyFinished, None]: ...

    async def cleanup(self, max_age_hours: float, max_age_days: float) -> CleanupCounts: ...

    async def ping(self) -> RegistryIdentity: ...

    # Task events (serving.event_journal): the ingress's long poll and the state a new stream starts from.
    async def poll_events(
        self, epoch: Optional[str], cursor: Optional[int], timeout: float, previews: bool = True
    ) -> EventPoll: ...

    async def accounts_changed(self, user_ids: list[int]) -> None: ...

    async def task_events(self, task_id: str, after_id: int = 0) -> Optional[TaskEvents]: ...

    async def user_events(self, user_id: Optional[int], after_id: int = 0) -> list[TaskEvent]: ...

    async def refresh_positions(self, task_ids: list[str]) -> int: ...

    async def replica_info(self) -> dict[str, dict[str, Any]]: ...


class ModelReports(Protocol):
    """What a model replica tells the registry (serving.deployments)."""

    async def mark_running(self, task_id: str, epoch: str, attempt: int) -> bool: ...

    async def report_progress(self, task_id: str, epoch: str, attempt: int, index: int, step: int) -> bool: ...

    async def report_preview(self, task_id: str, epoch: str, attempt: int, index: int, preview: dict) -> bool: ...

    async def report_replica(self, replica_id: str, info: dict[str, Any]) -> None: ...


class RegistryService(Registry, ModelReports, Protocol):
    """The whole registry: the actor's API and its core's."""
