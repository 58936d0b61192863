"""The ingress deployment: the FastAPI app (auth, validation, routing) under ``@serve.ingress``."""

from __future__ import annotations

import logging
from typing import Any, Optional

from fastapi import FastAPI
from ray import serve

from auth.routes import router as auth_router
from auth.security import load_or_create_secret
from auth.service import AuthConfig, AuthService
from serving.errors import install_error_handlers
from serving.middleware import BodyLimitMiddleware, SecurityHeadersMiddleware
from serving.registry import get_or_create_registry_async
from serving.routes import events, generate, history, system, tasks, webhooks
from serving.settings import load_settings
from auth import deps as auth_deps
from serving import state as service_state
from serving.state import ServiceState, current_state
from storage import init_db, make_engine, open_result_store

log = logging.getLogger("qwen_image.ingress")

app = FastAPI(
    title="Qwen Image Service",
    version="2.0.0",
    description="Text-to-image (Qwen-Image-2512) and image editing (Qwen-Image-Edit-2511) on Ray Serve. "
                "Compatible with the v1.3.0 API.",
)
install_error_handlers(app)
app.include_router(system.router)
app.include_router(auth_router)
app.include_router(history.router)  # before tasks: /tasks/history/… must not match /tasks/{task_id}
app.include_router(events.router)  # before tasks too: /tasks/events
app.include_router(webhooks.router)
app.include_router(tasks.router)
app.include_router(generate.router)

MULTIPART_OVERHEAD = 1024 * 1024
UPLOAD_FILES = {"/image-edit": 2, "/image-edit/batch": 1}


def body_limit_for(path: str) -> int:
    """Upload routes may carry their files (≤ max_upload_mb each); everything else 1 MiB."""
    state = current_state()
    settings = state.settings if state else None
    per_file = settings.max_upload_bytes if settings else 20 * 1024 * 1024
    return UPLOAD_FILES.get(path.rstrip("/"), 0) * per_file + MULTIPART_OVERHEAD


app.add_middleware(BodyLimitMiddleware, limit_for=body_limit_for)
app.add_middleware(SecurityHeadersMiddleware)


@serve.deployment(name="Ingress", max_ongoing_requests=256)
@serve.ingress(app)
class Ingress:
    """Holds the shared state the routes use; the routes themselves live in serving/routes and auth/."""

    async def __init__(self, settings_dict: dict, text_to_image: Optional[Any] = None,
                       image_edit: Optional[Any] = None):
        logging.basicConfig(level=logging.INFO)
        settings = load_settings(settings_dict)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        engine = make_engine(settings.resolved_database_url)
        init_db(engine)
        secret = (settings.jwt_secret.get_secret_value() if settings.jwt_secret
                  else load_or_create_secret(settings.data_dir))
        auth = AuthService(engine, secret, AuthConfig(
            enabled=settings.auth_enabled, allow_registration=settings.allow_registration,
            admin_username=settings.admin_username,
            admin_password=settings.admin_password.get_secret_value() if settings.admin_password else None,
            token_ttl_seconds=settings.token_ttl_seconds, hash_profile=settings.password_hash_profile,
            login_max_failures=settings.login_max_failures,
            login_max_failures_per_address=settings.login_max_failures_per_address,
            login_window_seconds=settings.login_window_seconds,
        ))
        auth.ensure_default_admin()
        if not settings.auth_enabled:
            log.warning("AUTH_ENABLED=false: every request acts as %r", settings.admin_username)
        app_name = serve.get_replica_context().app_name
        registry = await get_or_create_registry_async(app_name, settings_dict)
        auth_deps.configure(auth)
        service_state.configure(ServiceState(
            settings=settings, engine=engine, auth=auth,
            store=open_result_store(settings.result_store_url, settings.data_dir),
            registry=registry, app_name=app_name,
        ))
