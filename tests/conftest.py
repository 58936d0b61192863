"""Shared fixtures: one real Ray Serve instance per test session, reached over real HTTP.

Two applications run side by side on one proxy:
  * ``/``      the service on the tiny profile: real diffusers pipelines on the CPU, model
               deployments asking ``num_gpus: 1`` of the logical GPUs Ray is given here, two
               replicas each.
  * ``/open``  authentication off, registration off, the ``sleep`` benchmark profile with slow
               steps and a queue limit of 3, for switches and back-pressure.
Tests of failures add ``/faulty`` (``faulty_client``): the ``faulty`` profile, whose prompts starting
``__fault_…__`` make a model replica crash or fail (``models.faulty``). Tests of Qwen-Image 2.1 add
``/q21`` (``tiny21_client``): the ``tiny21`` profile, one CPU replica holding its one pipeline.
"""

from __future__ import annotations

import itertools
import os
import socket
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

os.environ.setdefault("TORCH_NUM_THREADS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Read by Serve's proxy (serving/proxy.py) when Ray starts it: a short body deadline for the stall tests.
os.environ.setdefault("REQUEST_BODY_TIMEOUT_SECONDS", "5")

LOGICAL_GPUS = 4
OPEN_QUEUE_LIMIT = 3
# The suite registers and logs in hundreds of users from 127.0.0.1: the per-address limits, whose
# defaults protect a deployment, are set out of its way (the tests of the limits set their own).
ADDRESS_LIMITS = {
    "register_max_per_address": 100_000,
    "login_max_per_address": 100_000,
    "image_fetch_max_per_address": 100_000,
}
ADDRESS_LIMITS_ENV = {name.upper(): str(value) for name, value in ADDRESS_LIMITS.items()}


@pytest.fixture(autouse=True)
def _unit_tests_start_no_ray(request):
    """A test marked ``unit`` (``make test-unit``) must run without Ray: fail it if it started Ray."""
    if request.node.get_closest_marker("unit") is None:
        yield
        return
    import ray

    before = ray.is_initialized()
    yield
    assert before or not ray.is_initialized(), "a test marked unit started Ray; unmark it or take Ray out"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(condition: Callable[[], object], timeout: float = 60.0, interval: float = 0.1, what: str = "condition"):
    """Poll until ``condition()`` is truthy; returns its value."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("service")


def main_app_args(data_root: Path) -> dict:
    return {
        "model_profile": "tiny",
        "model_num_gpus": 1,
        "model_replicas": 2,
        "model_num_cpus": 0.25,
        "data_dir": str(data_root / "main"),
        "model_cache_dir": str(data_root / "model_cache"),
        "password_hash_profile": "cheapest",
        "cleanup_interval_seconds": 0,
        "login_max_failures": 5,
        "login_window_seconds": 60,
        **ADDRESS_LIMITS,
    }


def open_app_args(data_root: Path) -> dict:
    return {
        "model_profile": "sleep",
        "sleep_seconds_per_step": 0.05,
        "model_num_gpus": 0,
        "model_replicas": 1,
        "model_num_cpus": 0.1,
        "data_dir": str(data_root / "open"),
        "password_hash_profile": "cheapest",
        "auth_enabled": False,
        "allow_registration": False,
        "max_queue_size": OPEN_QUEUE_LIMIT,
        "cleanup_interval_seconds": 0,
        **ADDRESS_LIMITS,
    }


@pytest.fixture(scope="session")
def serve_instance(data_root) -> Iterator[str]:
    """Ray (with logical GPUs) and Serve, started once; yields the base URL."""
    import ray
    from ray import serve

    from serving.app import build_app
    from serving.proxy import configure_environment

    configure_environment()
    port = free_port()
    ray.init(
        num_cpus=8,
        num_gpus=LOGICAL_GPUS,
        include_dashboard=False,
        namespace="tests",
        logging_level="WARNING",
        log_to_driver=bool(os.environ.get("TEST_RAY_LOGS")),
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port, "request_timeout_s": 300})
    serve.run(build_app(main_app_args(data_root)), name="main", route_prefix="/", blocking=False)
    serve.run(build_app(open_app_args(data_root)), name="open", route_prefix="/open", blocking=False)
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _healthy(base) and _healthy(base + "/open"), timeout=180, interval=0.5, what="healthy apps")
    yield base
    serve.shutdown()
    ray.shutdown()


def sleep_app_args(data_root: Path, name: str, **extra) -> dict:
    """A light application on the ``sleep`` benchmark profile (no torch work), with auth on."""
    return {
        "model_profile": "sleep",
        "sleep_seconds_per_step": 0.002,
        "model_num_gpus": 0,
        "model_replicas": 2,
        "model_num_cpus": 0.1,
        "data_dir": str(data_root / name),
        "password_hash_profile": "cheapest",
        "cleanup_interval_seconds": 0,
        **ADDRESS_LIMITS,
        **extra,
    }


@pytest.fixture(scope="session")
def deploy_app(serve_instance) -> Callable[[str, dict], str]:
    """Deploys one more application under ``/<name>`` on the session's Serve; returns its base URL."""
    from ray import serve

    from serving.app import build_app

    def deploy(name: str, args: dict) -> str:
        serve.run(build_app(args), name=name, route_prefix=f"/{name}", blocking=False)
        url = f"{serve_instance}/{name}"
        wait_for(lambda: _healthy(url), timeout=120, interval=0.5, what=f"app {name}")
        return url

    return deploy


@pytest.fixture(scope="session")
def faulty_client(deploy_app, data_root) -> Iterator[httpx.Client]:
    """A client of ``/faulty``: the ``faulty`` profile (sleep steps of 50 ms plus failures on request)."""
    url = deploy_app(
        "faulty",
        sleep_app_args(
            data_root,
            "faulty",
            model_profile="faulty",
            sleep_seconds_per_step=0.05,
            model_cache_dir=str(data_root / "faulty-state"),
        ),
    )
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def tiny21_client(deploy_app, data_root) -> Iterator[httpx.Client]:
    """A client of ``/q21``: the tiny Qwen-Image 2.1 profile, one replica serving both kinds on the CPU."""
    url = deploy_app(
        "q21",
        {
            "model_profile": "tiny21",
            "model_num_gpus": 0,
            "model_replicas": 1,
            "model_num_cpus": 0.25,
            "data_dir": str(data_root / "q21"),
            "model_cache_dir": str(data_root / "model_cache"),
            "password_hash_profile": "cheapest",
            "cleanup_interval_seconds": 0,
            **ADDRESS_LIMITS,
        },
    )
    with httpx.Client(base_url=url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def faulty_admin_headers(faulty_client) -> dict[str, str]:
    return bearer(login(faulty_client, "admin", "admin123"))


@pytest.fixture
def faulty_user(faulty_client) -> TestUser:
    return TestUser(faulty_client)


def _healthy(base: str) -> bool:
    try:
        return httpx.get(base + "/health", timeout=5).json().get("status") == "healthy"
    except (httpx.HTTPError, ValueError):
        return False


@pytest.fixture(scope="session")
def base_url(serve_instance) -> str:
    return serve_instance


@pytest.fixture(scope="session")
def client(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url, timeout=120) as c:
        yield c


@pytest.fixture(scope="session")
def open_client(base_url) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=base_url + "/open", timeout=120) as c:
        yield c


_names = itertools.count()


def unique_name(prefix: str = "user") -> str:
    return f"{prefix}{next(_names)}_{uuid.uuid4().hex[:6]}"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def login(client: httpx.Client, username: str, password: str) -> str:
    response = client.post("/auth/login", json={"username": username, "password": password})
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


@pytest.fixture(scope="session")
def admin_headers(client) -> dict[str, str]:
    return bearer(login(client, "admin", "admin123"))


class TestUser:
    __test__ = False  # a helper, not a test class, wherever it is imported

    def __init__(self, client: httpx.Client, prefix: str = "user"):
        self.username = unique_name(prefix)
        self.password = "secret-" + uuid.uuid4().hex[:8]
        response = client.post("/auth/register", json={"username": self.username, "password": self.password})
        assert response.status_code == 201, response.text
        self.id = response.json()["id"]
        self.headers = bearer(login(client, self.username, self.password))


@pytest.fixture
def make_user(client) -> Callable[..., TestUser]:
    return lambda prefix="user": TestUser(client, prefix)


@pytest.fixture
def user(make_user) -> TestUser:
    return make_user()
