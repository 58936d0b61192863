"""The ingress deployment: the FastAPI app (auth, validation, routing) under ``@serve.ingress``."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, Optional

from fastapi import FastAPI
from ray import serve

from serving.api import build_service_state, create_app
from serving.registry.actor import get_or_create_registry_async
from serving.registry.interface import Registry
from serving.registry_client import RegistryClient
from serving.settings import load_settings
from serving.state import ServiceState

log = logging.getLogger("qwen_image.ingress")


async def serve_when_ready(
    app: FastAPI, find_registry: Callable[[], Awaitable[Registry]], build: Callable[[Registry], ServiceState]
) -> None:
    """Finds the registry (waiting while it restarts), then gives ``app`` its state. Until then the
    app's routes answer 503 with ``Retry-After`` (``get_state``): the replica serves while it waits."""
    started = time.monotonic()
    registry = await find_registry()
    state = build(registry)
    app.state.auth = state.auth
    app.state.service = state
    log.info("ingress ready: task registry found, %.1f s after start", time.monotonic() - started)


@serve.deployment(name="Ingress", max_ongoing_requests=256)
@serve.ingress()
class Ingress:
    """Builds, in each replica, the app of :mod:`serving.api` around that replica's shared state."""

    # Serve awaits an async constructor (the background start needs the replica's event loop);
    # Python's typing has no such thing, so the checker's rule that __init__ returns None is waived here.
    async def __init__(self, settings_dict: dict, **model_deployments: Any):  # type: ignore[misc]
        # ``model_deployments`` (one handle per enabled kind) only tie the model deployments into
        # the application graph; the registry reaches them by name.
        logging.basicConfig(level=logging.INFO)
        settings = load_settings(settings_dict)
        app_name = serve.get_replica_context().app_name
        # The constructor returns at once so that Serve routes to this replica, which answers 503 +
        # Retry-After while the registry restarts (a replica in __init__ gets no traffic at all).
        self._app = create_app()

        async def find_registry() -> Registry:
            return RegistryClient(await get_or_create_registry_async(app_name, settings_dict), app_name)

        self._starting: Optional[asyncio.Task] = asyncio.get_running_loop().create_task(
            serve_when_ready(self._app, find_registry, lambda r: build_service_state(settings, r, app_name))
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve's hook for an app built at replica start (after ``__init__``), with this replica's state."""
        return self._app

    def check_health(self) -> None:
        """Serve's health check: a replica whose start failed (no registry within the bounded wait)
        is replaced by a fresh one."""
        starting = self._starting
        if starting is None or not starting.done():
            return
        failure = "cancelled" if starting.cancelled() else starting.exception()
        if failure is not None:
            raise RuntimeError(f"ingress start failed: {failure!r}")
        self._starting = None
