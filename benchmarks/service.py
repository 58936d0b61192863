"""Starting the service for a benchmark: Ray, Serve on a loopback port, applications, clients.

Everything runs on this machine: Ray is started by ``ray.init`` (no dashboard), Serve's proxy
listens on 127.0.0.1 on a free port, and each application gets its own temporary DATA_DIR.
"""

from __future__ import annotations

import logging
import os
import socket
import sqlite3
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Optional

import httpx

REPO = Path(__file__).resolve().parents[1]
APP_PREFIX = "bench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(condition: Callable[[], Any], timeout: float, interval: float = 0.2, what: str = "condition") -> Any:
    """Poll ``condition`` until it returns something truthy; raise ``TimeoutError`` after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def base_settings(data_dir: Path) -> dict[str, Any]:
    """Builder args every benchmark application shares: cheap password hashing, no periodic
    clean-up, quotas and queue limits out of the way (the figures measure speed, not policy)."""
    return {
        "data_dir": str(data_dir),
        "model_cache_dir": str(data_dir.parent / "model_cache"),
        "password_hash_profile": "cheapest",
        "cleanup_interval_seconds": 0,
        "default_daily_limit": 1_000_000,
        "default_monthly_limit": 10_000_000,
        "max_queue_size": 100_000,
        "max_pending_per_user": 0,
        "max_waits_per_user": 10_000,
        "max_waits": 10_000,
        "register_max_per_address": 0,  # every benchmark user comes from 127.0.0.1
        "login_max_per_address": 0,
        "image_fetch_max_per_address": 0,
        "login_max_failures": 0,
        "login_max_failures_per_address": 0,
    }


@dataclass
class App:
    """One deployed application of the service."""

    name: str
    base_url: str
    data_dir: Path
    token: Optional[str] = None
    user_id: Optional[int] = None
    client: httpx.Client = field(default=None, repr=False)  # type: ignore[assignment]

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    @property
    def database(self) -> Path:
        return self.data_dir / "qwen_image.db"

    # ------------------------------------------------------------------ users and tasks

    def sign_up(self) -> None:
        """Register a fresh user and log in as it."""
        username = f"bench_{uuid.uuid4().hex[:8]}"
        password = "bench-" + uuid.uuid4().hex[:12]
        response = self.client.post("/auth/register", json={"username": username, "password": password})
        response.raise_for_status()
        self.user_id = response.json()["id"]
        response = self.client.post("/auth/login", json={"username": username, "password": password})
        response.raise_for_status()
        self.token = response.json()["access_token"]

    def submit(self, steps: int = 20, async_mode: bool = True, **fields: Any) -> httpx.Response:
        data = {
            "prompt": "a lighthouse at dusk",
            "negative_prompt": "blurry",
            "num_inference_steps": steps,
            "true_cfg_scale": 4.0,
            "seed": 1,
            "async_mode": "true" if async_mode else "false",
            **fields,
        }
        return self.client.post(
            "/text-to-image", headers=self.headers, data={k: str(v) for k, v in data.items()}, timeout=600
        )

    def wait_task(self, task_id: str, timeout: float = 120.0) -> dict:
        def finished() -> Optional[dict]:
            body = self.client.get(f"/tasks/{task_id}", headers=self.headers).json()
            return body if body.get("status") in ("completed", "failed", "cancelled") else None

        return wait_until(finished, timeout, 0.05, f"task {task_id}")

    # ------------------------------------------------------------------ the database, read directly

    def task_rows(self) -> list[dict]:
        """Every task record (read-only, straight from SQLite), oldest first."""
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10) as db:
            db.row_factory = sqlite3.Row
            rows = db.execute(
                "SELECT task_id, status, created_at, started_at, completed_at, execution_time "
                "FROM task_records ORDER BY id"
            ).fetchall()
        # keys(): iterating a sqlite3.Row gives its values, not its column names
        return [{k: (_parse_time(row[k]) if k.endswith("_at") else row[k]) for k in row.keys()} for row in rows]  # noqa: SIM118

    def count_unfinished(self) -> int:
        with sqlite3.connect(f"file:{self.database}?mode=ro", uri=True, timeout=10) as db:
            return db.execute("SELECT COUNT(*) FROM task_records WHERE status IN ('pending', 'running')").fetchone()[0]


def _parse_time(value: Optional[str]) -> Optional[float]:
    """SQLite stores naive UTC datetimes as text; return POSIX seconds."""
    if value is None:
        return None
    return datetime.fromisoformat(value).replace(tzinfo=timezone.utc).timestamp()


class Cluster:
    """Ray (no dashboard, logical GPUs) and Serve on a free loopback port."""

    def __init__(
        self,
        root: Path,
        num_gpus: int,
        num_cpus: Optional[int] = None,
        log: Callable[[str], None] = lambda message: None,
        blocking_delete: bool = True,
    ):
        import ray
        from ray import serve

        self.root = root
        self.log = log
        self.blocking_delete = blocking_delete
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        started = time.perf_counter()
        ray.init(
            include_dashboard=False,
            num_cpus=num_cpus or os.cpu_count(),
            num_gpus=num_gpus,
            namespace="benchmarks",
            logging_level=logging.WARNING,
            log_to_driver=False,
        )
        self.port = free_port()
        serve.start(http_options={"host": "127.0.0.1", "port": self.port, "request_timeout_s": 900})
        self.start_seconds = time.perf_counter() - started
        self.log(f"    Ray and Serve started in {self.start_seconds:.1f} s")
        self.apps: dict[str, App] = {}

    def deploy(self, name: str, args: dict[str, Any], route_prefix: str = "/", timeout: float = 300) -> App:
        """Run the service's application under ``name`` and wait until ``/health`` says healthy."""
        from ray import serve

        from serving.app import build_app

        data_dir = self.root / name
        data_dir.mkdir(parents=True, exist_ok=True)
        full_args = {**base_settings(data_dir), **args}
        started = time.perf_counter()
        serve.run(build_app(full_args), name=name, route_prefix=route_prefix, blocking=False)
        base = f"http://127.0.0.1:{self.port}{route_prefix.rstrip('/')}"
        client = httpx.Client(base_url=base, timeout=60, trust_env=False)

        def healthy() -> bool:
            try:
                return client.get("/health", timeout=5).json().get("status") == "healthy"
            except (httpx.HTTPError, ValueError):
                return False

        submitted = time.perf_counter() - started
        wait_until(healthy, timeout, 0.1, f"application {name} to be healthy")
        self.log(f"    deployed {name} in {time.perf_counter() - started:.1f} s (serve.run {submitted:.1f} s)")
        app = App(name=name, base_url=base, data_dir=data_dir, client=client)
        self.apps[name] = app
        return app

    def remove(self, app: App) -> None:
        """Delete the application and its task registry (a detached actor that outlives the app)."""
        import ray
        from ray import serve

        from serving.registry.ids import NAMESPACE, registry_name

        app.client.close()
        started = time.perf_counter()
        # Not blocking: the next application deploys while this one's replicas shut down
        # (--quick only; a full run waits, so that nothing else runs during a figure).
        serve.delete(app.name, _blocking=self.blocking_delete)
        self.log(f"    deleted {app.name} in {time.perf_counter() - started:.1f} s")
        try:
            ray.kill(ray.get_actor(registry_name(app.name), namespace=NAMESPACE), no_restart=True)
        except ValueError:
            pass
        self.apps.pop(app.name, None)

    def replica_counts(self, app_name: str, deployment: str) -> dict[str, int]:
        from ray import serve

        app = serve.status().applications.get(app_name)
        if app is None or deployment not in app.deployments:
            return {}
        states = app.deployments[deployment].replica_states or {}
        return {str(getattr(k, "value", k)): v for k, v in states.items()}

    def shutdown(self) -> None:
        import ray
        from ray import serve

        for app in list(self.apps.values()):
            app.client.close()
        try:
            serve.shutdown()
        finally:
            ray.shutdown()


def python_module(module: str, *args: str, nice: int = 0, **popen: Any) -> subprocess.Popen:
    """Start ``python -m module args`` from the repository root (optionally at a lower priority)."""
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    from benchmarks.meter import HELPER_PIDS

    preexec = (lambda: os.nice(nice)) if nice else None
    proc = subprocess.Popen([sys.executable, "-m", module, *args], cwd=REPO, env=env, preexec_fn=preexec, **popen)
    HELPER_PIDS.add(proc.pid)
    return proc
