"""What the ingress routes share: one ServiceState per app, on ``app.state``, reached through ``StateDep``."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated, Any, Optional

import ray
from fastapi import Depends, HTTPException, Request, status
from sqlalchemy.engine import Engine

from auth.service import AuthService
from i18n import messages
from serving.event_hub import EventHub
from serving.metrics import IngressMetrics
from serving.registry.interface import Registry
from serving.settings import Settings
from serving.signed_urls import UrlSigner
from serving.status_cache import StatusCache
from storage.results import ResultStore

if TYPE_CHECKING:
    from auth.throttle import AddressRateLimit
    from serving.openai.images import ConvertedImages

log = logging.getLogger("qwen_image.ingress")
STATUS_READ_TIMEOUT_S = 10.0


class LongWaits:
    """Counts requests that wait long (sync submissions, result waits, event streams), per user and in all.

    One user may hold ``per_user`` at once (beyond: 429), everyone together ``total`` (beyond: 503),
    so long waits never take all of the ingress's request slots: ``/health`` and short requests
    always find one. Counted per ingress replica.
    """

    def __init__(self, per_user: int = 4, total: int = 192):
        self.per_user = per_user
        self.total = total
        self._by_user: Counter = Counter()
        self._all = 0

    @contextlib.contextmanager
    def hold(self, user_id: Optional[int]) -> Iterator[None]:
        if self._by_user[user_id] >= self.per_user:
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS,
                messages.TOO_MANY_WAITS.format(limit=self.per_user),
                headers={"Retry-After": "5"},
            )
        if self._all >= self.total:
            raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, messages.SERVER_BUSY, headers={"Retry-After": "5"})
        self._by_user[user_id] += 1
        self._all += 1
        try:
            yield
        finally:
            self._all -= 1
            self._by_user[user_id] -= 1
            if not self._by_user[user_id]:
                del self._by_user[user_id]


@dataclass
class ServiceState:
    settings: Settings
    engine: Engine
    auth: AuthService
    store: ResultStore
    registry: Registry
    app_name: str
    url_signer: UrlSigner  # signs /v1 result URLs (its key never leaves this process)
    # how replica counts are read (Serve's controller; a stand-in where no Ray runs)
    read_status: Callable[[str], dict] = field(default=lambda app_name: read_deployment_status(app_name))
    long_waits: LongWaits = field(default_factory=LongWaits)
    statuses: Optional[StatusCache] = None  # task statuses kept current by the change feed (None: off)
    metrics: IngressMetrics = field(default_factory=IngressMetrics)
    # A probe of the database still waiting, per event loop (a future belongs to its loop): a database
    # that does not answer is asked once at a time, so /health polled often never piles up threads.
    database_probes: dict[int, asyncio.Future[None]] = field(default_factory=dict, repr=False)
    # Likewise one read of where the registry runs (the GCS's actor table) at a time, per event loop.
    registry_lookups: dict[int, asyncio.Future[dict[str, Any]]] = field(default_factory=dict, repr=False)
    events: Optional[EventHub] = None  # the change feed and the event streams (serving.routes.event_streams.hub_for)
    announcing: set[asyncio.Future] = field(default_factory=set)  # account changes on their way to the feed
    converted_images: Optional[ConvertedImages] = None  # /v1 image files converted once (None: off)
    image_fetch_limit: Optional[AddressRateLimit] = None  # /v1 image file fetches per client address
    _status_cache: tuple[float, dict] = field(default=(0.0, {}))
    _status_refresh: Optional[asyncio.Task] = field(default=None, repr=False)
    _status_read: Optional[asyncio.Future] = field(default=None, repr=False)

    def task_changed(self, task_id: str) -> None:
        """This ingress learnt of a change of ``task_id`` itself (its cancel, a wait that ended): the
        next status read asks the registry, even before the change feed brings the change."""
        if self.statuses is not None:
            self.statuses.task_changed(task_id)

    async def deployment_status(self, max_age: float = 2.0, stale_ok: bool = True) -> dict:
        """Replica counts of this application's model deployments, at most ``max_age`` seconds old.

        Reading them asks Serve's controller (a few ms to tens of ms). Once there is an answer, an
        older one is served at once and refreshed beside the request, so a submission never waits
        for the controller; ``stale_ok=False`` waits for a fresh one (``/health``), ``max_age=0``
        always reads afresh.
        """
        stamp, cached = self._status_cache
        if time.monotonic() - stamp < max_age:
            return cached
        if stamp and stale_ok and max_age > 0:
            if self._status_refresh is None or self._status_refresh.done():
                self._status_refresh = asyncio.create_task(self._refresh_in_background())
            return cached
        return await self._refresh_status()

    async def _refresh_status(self) -> dict:
        # One read of the controller at a time: a stuck one is joined, not doubled (a thread cannot
        # be stopped, and each would hold one of the ingress's few pool threads). After
        # STATUS_READ_TIMEOUT_S the caller gets the last answer, or "nothing running", not an error.
        if self._status_read is None or self._status_read.done():
            self._status_read = asyncio.ensure_future(asyncio.to_thread(self.read_status, self.app_name))
        try:
            fresh = await asyncio.wait_for(asyncio.shield(self._status_read), STATUS_READ_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.warning("Serve's controller did not answer within %.0f s", STATUS_READ_TIMEOUT_S)
            stamp, cached = self._status_cache
            return cached if stamp else {"gpu_count": 0, "deployments": {}}
        self._status_cache = (time.monotonic(), fresh)
        self._record_replicas(fresh)
        return fresh

    def _record_replicas(self, snapshot: dict) -> None:
        for name, dep in snapshot["deployments"].items():
            self.metrics.replicas(
                name,
                dep.get("running_replicas", 0),
                dep.get("starting_replicas", 0),
                dep.get("waiting_for_resources", 0),
            )

    async def _refresh_in_background(self) -> None:
        try:
            await self._refresh_status()
        except Exception as exc:  # the last answer stays; the next request tries again
            log.warning("reading the deployments' status failed: %r", exc)


def read_deployment_status(app_name: str) -> dict:
    """Replica counts of ``app_name``'s deployments and the cluster's GPUs, from Serve's controller."""
    from ray import serve

    result: dict[str, Any] = {"gpu_count": int(ray.cluster_resources().get("GPU", 0)), "deployments": {}}
    try:
        app = serve.status().applications.get(app_name)
    except Exception:  # the controller is briefly unreachable: report nothing as loaded
        app = None
    if app is not None:
        for name, dep in app.deployments.items():
            states = {str(getattr(k, "value", k)): v for k, v in (dep.replica_states or {}).items()}
            result["deployments"][name] = {
                "status": str(getattr(dep.status, "value", dep.status)),
                "running_replicas": states.get("RUNNING", 0),
                "starting_replicas": states.get("STARTING", 0),
                "waiting_for_resources": 0,
            }
        _add_waiting_replicas(app_name, result["deployments"])
    return result


def _add_waiting_replicas(app_name: str, deployments: dict[str, dict]) -> None:
    """Starting replicas that Ray cannot place (short of GPUs), from its actor table; shown on the metrics."""
    from serving.placement import waiting_replicas

    try:
        waiting = waiting_replicas(app_name)
    except Exception as exc:  # the GCS is briefly unreachable: counts of running/starting still stand
        log.warning("reading the replicas waiting for resources failed: %r", exc)
        waiting = {}
    for name, dep in deployments.items():
        dep["waiting_for_resources"] = min(waiting.get(name, 0), dep["starting_replicas"])


async def get_state(request: Request) -> ServiceState:
    """The ServiceState of the app serving ``request`` (``app.state.service``); 503 until it has one."""
    state = getattr(request.app.state, "service", None)
    if state is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, messages.SERVICE_STARTING, headers={"Retry-After": "2"}
        )
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


def model_available(status_snapshot: dict, deployment: str) -> bool:
    dep = status_snapshot["deployments"].get(deployment)
    return bool(dep and dep["running_replicas"] > 0)
