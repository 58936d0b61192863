"""The HTTP application: FastAPI routes, error handlers and middleware over one ServiceState.

:func:`create_app` builds the app around the state its routes share (``app.state.service``, and
``app.state.auth`` for the auth dependencies); :func:`build_service_state` wires that state from
the settings. The ingress deployment does both in each replica; the in-process test tier does the
same with a stand-in registry, without Ray.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Optional

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

from auth.account_cache import AccountCache
from auth.admin_checks import router as admin_checks_router
from auth.api_keys import router as api_keys_router
from auth.registration import router as registration_router
from auth.routes import router as auth_router
from auth.security import load_or_create_secret
from auth.service import AuthConfig, AuthService
from auth.throttle import AddressRateLimit
from serving.docs import add_api_docs
from serving.errors import install_error_handlers
from serving.metrics import IngressMetrics
from serving.middleware import BodyLimitMiddleware, SecurityHeadersMiddleware
from serving.openai import routes as openai_routes
from serving.openai.images import ConvertedImages
from serving.registry.interface import Registry
from serving.routes import adapters, event_streams, generate, history, system, task_images, tasks, webhook_settings
from serving.routes.event_streams import connect_account_cache
from serving.settings import Settings
from serving.signed_urls import UrlSigner
from serving.state import LongWaits, ServiceState, read_deployment_status
from serving.status_cache import StatusCache
from storage import init_db, make_engine, open_result_store
from web import INDEX_HTML, PAGE_CSP, STATIC_DIR

log = logging.getLogger("qwen_image.ingress")

MULTIPART_OVERHEAD = 1024 * 1024
# Files each upload route takes at most (images and a mask): its body limit is that many uploads.
UPLOAD_FILES = {
    "/image-edit": 2,
    "/image-edit/batch": 1,
    "/image-to-image": 2,
    "/v1/images/edits": 2,
    "/v1/images/variations": 1,
}


def create_app(state: Optional[ServiceState] = None) -> FastAPI:
    """The service's FastAPI app; routes answer 503 "starting" until it has a ``state``."""
    app = FastAPI(
        title="Qwen Image Service",
        version="2.0.0",
        description="Text-to-image (Qwen-Image-2512) and image editing (Qwen-Image-Edit-2511) on Ray Serve. "
        "Compatible with the v1.3.0 API.",
        docs_url=None,  # serving.docs serves both pages from installed files instead of a CDN
        redoc_url=None,
    )
    install_error_handlers(app)
    add_api_docs(app)
    app.include_router(system.router)
    app.include_router(auth_router)
    app.include_router(api_keys_router)
    app.include_router(registration_router)
    app.include_router(admin_checks_router)
    app.include_router(history.router)  # before tasks: /tasks/history/… must not match /tasks/{task_id}
    app.include_router(event_streams.router)  # before tasks too: /tasks/events
    app.include_router(webhook_settings.router)
    app.include_router(tasks.router)
    app.include_router(task_images.router)
    app.include_router(generate.router)
    app.include_router(openai_routes.router)
    app.include_router(adapters.router)
    add_web_page(app)
    # the state read when a request comes: an ingress replica gives its app the state once the registry answers
    app.add_middleware(
        BodyLimitMiddleware, limit_for=lambda path: body_limit_for(getattr(app.state, "service", None), path)
    )
    app.add_middleware(SecurityHeadersMiddleware)
    if state is not None:
        app.state.service = state
        app.state.auth = state.auth
    return app


def add_web_page(app: FastAPI) -> None:
    """The web page at ``/`` and its assets under ``/static``; it talks to the API like any client."""
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/", include_in_schema=False)
    def web_page() -> FileResponse:
        # The page's CSP replaces the API's ``default-src 'none'`` (SecurityHeadersMiddleware keeps a
        # header a route already set) and is still strict: no inline scripts or styles.
        return FileResponse(INDEX_HTML, media_type="text/html", headers={"Content-Security-Policy": PAGE_CSP})


def body_limit_for(state: Optional[ServiceState], path: str) -> int:
    """Upload routes may carry their files (≤ max_upload_mb each); everything else 1 MiB."""
    per_file = state.settings.max_upload_bytes if state else 20 * 1024 * 1024
    if path.rstrip("/") == "/admin/loras" and state:
        return state.settings.lora_max_upload_bytes + MULTIPART_OVERHEAD
    return UPLOAD_FILES.get(path.rstrip("/"), 0) * per_file + MULTIPART_OVERHEAD


def build_service_state(
    settings: Settings, registry: Registry, app_name: str, read_status: Callable[[str], dict] = read_deployment_status
) -> ServiceState:
    """The database, the auth service (with the default admin) and the result store, from ``settings``."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(settings.resolved_database_url)
    init_db(engine)
    secret = settings.jwt_secret.get_secret_value() if settings.jwt_secret else load_or_create_secret(settings.data_dir)
    ingress_metrics = IngressMetrics()
    auth = AuthService(
        engine,
        secret,
        AuthConfig(
            enabled=settings.auth_enabled,
            allow_registration=settings.allow_registration,
            admin_username=settings.admin_username,
            admin_password=settings.admin_password.get_secret_value() if settings.admin_password else None,
            token_ttl_seconds=settings.token_ttl_seconds,
            hash_profile=settings.password_hash_profile,
            login_max_failures=settings.login_max_failures,
            login_max_failures_per_address=settings.login_max_failures_per_address,
            login_window_seconds=settings.login_window_seconds,
            login_max_delay_seconds=settings.login_max_delay_seconds,
            register_max_per_address=settings.register_max_per_address,
            register_window_seconds=settings.register_window_seconds,
            login_max_per_address=settings.login_max_per_address,
            login_rate_window_seconds=settings.login_rate_window_seconds,
        ),
        on_login_failure=ingress_metrics.login_failed,
        accounts=AccountCache(settings.account_cache_size) if settings.account_cache_size else None,
    )
    auth.ensure_default_admin()
    if not settings.auth_enabled:
        log.warning("AUTH_ENABLED=false: every request acts as %r", settings.admin_username)
    state = ServiceState(
        settings=settings,
        engine=engine,
        auth=auth,
        store=open_result_store(settings.result_store_url, settings.data_dir),
        registry=registry,
        app_name=app_name,
        read_status=read_status,
        long_waits=LongWaits(settings.max_waits_per_user, settings.max_waits),
        url_signer=UrlSigner(secret, settings.image_url_ttl_seconds),
        statuses=StatusCache(settings.status_cache_size) if settings.status_cache_size else None,
        metrics=ingress_metrics,
        converted_images=ConvertedImages(settings.image_file_cache_mb * 2**20),
        image_fetch_limit=AddressRateLimit(
            engine, settings.image_fetch_max_per_address, settings.image_fetch_window_seconds
        ),
    )
    connect_account_cache(state)
    return state
