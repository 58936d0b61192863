"""The ingress deployment: the FastAPI app (auth, validation, routing) under ``@serve.ingress``."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI
from ray import serve

from serving.api import build_service_state, create_app
from serving.registry.actor import get_or_create_registry_async
from serving.registry_client import RegistryClient
from serving.settings import load_settings


@serve.deployment(name="Ingress", max_ongoing_requests=256)
@serve.ingress()
class Ingress:
    """Builds, in each replica, the app of :mod:`serving.api` around that replica's shared state."""

    # Serve awaits an async constructor (the registry is looked up with await); Python's typing has
    # no such thing, so the checker's rule that __init__ returns None is waived here.
    async def __init__(self, settings_dict: dict, **model_deployments: Any):  # type: ignore[misc]
        # ``model_deployments`` (one handle per enabled kind) only tie the model deployments into
        # the application graph; the registry reaches them by name.
        logging.basicConfig(level=logging.INFO)
        settings = load_settings(settings_dict)
        app_name = serve.get_replica_context().app_name
        registry = await get_or_create_registry_async(app_name, settings_dict)
        self._app = create_app(build_service_state(settings, RegistryClient(registry, app_name), app_name))

    def __serve_build_asgi_app__(self) -> FastAPI:
        """Serve's hook for an app built at replica start (after ``__init__``), with this replica's state."""
        return self._app
