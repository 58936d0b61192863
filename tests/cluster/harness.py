"""A several-node Ray cluster on one machine, started the way KubeRay starts one: ``ray start``.

A head with no GPUs and a CPU worker, both advertising the ``control_plane`` resource (where the
task registry must run), then GPU workers (``--num-gpus=2`` logical GPUs: the tiny profile runs on the CPU inside them),
started one after another (two at once collide on the raylet socket name). Beside it: a throw-away
PostgreSQL (``tests/pg.py``), ``moto_server`` as the S3 API, and, when Debian's ``redis-server`` is
there, Redis for the GCS's fault tolerance (``RAY_REDIS_ADDRESS`` on the head).

Every process the harness starts, and every process Ray starts under it (raylets, agents, workers,
replicas), carries ``QIS_CLUSTER_TAG=<node tag>`` in its environment: a node is killed by finding
exactly its processes (never ``ray stop``, which stops every Ray on the machine), and :meth:`close`
kills whatever is left even after a failure. Each cluster has its own temp dir and ports and its
own token (``RAY_AUTH_MODE=token``); nothing of it enters this process's environment, so the
suite's other tests keep their own local Ray.
"""

from __future__ import annotations

import json
import os
import random
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import httpx
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
TAG = "QIS_CLUSTER_TAG"
CONTROL_PLANE = "control_plane"
BUCKET = "qwen-image-results"
WORKER_GPUS = 2


def unavailable(what: str, install: str) -> None:
    """Skip outside CI with the reason; fail in CI, which installs everything this test needs (.ci/run)."""
    if os.environ.get("CI"):
        pytest.fail(f"the cluster test cannot run in CI: {what}", pytrace=False)
    pytest.skip(f"cluster test skipped: {what} ({install})")


# Ports handed out in this run. A port is free when drawn but released before Ray binds it, so the
# kernel may hand it out again: a second draw must never return one already given to a node.
_handed_out: set[int] = set()
_worker_blocks: set[int] = set()


def free_port() -> int:
    """A free loopback port that no earlier call in this run returned."""
    for _ in range(1000):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _handed_out:
            _handed_out.add(port)
            return port
    raise RuntimeError("no free port left that was not handed out already")


def wait_for(condition: Callable[[], Any], timeout: float, what: str, interval: float = 0.25) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment holds ``QIS_CLUSTER_TAG=<tag>`` exactly."""
    needle = f"{TAG}={tag}".encode() + b"\0"
    found = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            with open(f"/proc/{entry.name}/environ", "rb") as f:
                environ = f.read() + b"\0"
        except OSError:
            continue
        if b"\0" + needle in b"\0" + environ:
            found.append(int(entry.name))
    return found


def with_descendants(pids: list[int]) -> list[int]:
    """``pids`` and every process below them: Ray's workers rename themselves (``ray::…``), which may
    overwrite the environment /proc shows, but they stay children of their node's raylet."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                with open(f"/proc/{entry.name}/stat") as f:
                    ppid = int(f.read().rsplit(") ", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(entry.name))
    found, todo = set(), list(pids)
    while todo:
        pid = todo.pop()
        if pid not in found:
            found.add(pid)
            todo.extend(children.get(pid, []))
    return sorted(found)


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [part.decode() for part in f.read().split(b"\0") if part]
    except OSError:
        return []


def environ_of(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/environ", "rb") as f:
        pairs = [part.decode(errors="replace").split("=", 1) for part in f.read().split(b"\0") if b"=" in part]
    return dict(pairs)  # type: ignore[arg-type]


def kill_tagged(tag: str, timeout: float = 20) -> None:
    """SIGKILL every process carrying ``tag`` until none is left (workers may spawn while we kill)."""
    deadline = time.monotonic() + timeout
    while pids := with_descendants(tagged_pids(tag)):
        for pid in pids:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"processes tagged {tag} survive SIGKILL: {pids}")
        time.sleep(0.2)


def worker_port_range() -> tuple[int, int]:
    """A block of 100 ports for one node's workers, below Linux's ephemeral range (where :func:`free_port`
    draws) and above Ray's default; never a block another node of this run has."""
    start = random.choice([b for b in range(20_000, 32_000, 100) if b not in _worker_blocks])
    _worker_blocks.add(start)
    return start, start + 99


@dataclass
class RayNode:
    name: str
    tag: str
    args: list[str]
    env: dict[str, str] = field(repr=False)

    @property
    def node_manager_port(self) -> int:
        return int(next(a for a in self.args if a.startswith("--node-manager-port=")).split("=", 1)[1])

    def start(self, log_dir: Path) -> None:
        log_path = log_dir / f"ray-start-{self.name}.log"
        with open(log_path, "w") as log:
            done = subprocess.run(
                [sys.executable, "-m", "ray.scripts.scripts", "start", *self.args],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                timeout=180,
            )
        if done.returncode != 0:
            logs = log_dir / "ray" / "session_latest" / "logs"
            tails = "".join(
                f"\n--- {path.name}:\n" + "\n".join(path.read_text(errors="replace").splitlines()[-15:])
                for pattern in ("gcs_server.*", "raylet*.err", "raylet*.out")
                for path in sorted(logs.glob(pattern))
            )
            raise RuntimeError(f"ray start ({self.name}) failed: {log_path.read_text()[-3000:]}{tails}")

    def kill(self) -> None:
        kill_tagged(self.tag)


@dataclass
class Cluster:
    """The cluster and its services. :meth:`start` brings it all up; :meth:`close` takes it all down."""

    redis: bool
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="qis-cl-", dir="/tmp")))
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    # drawn in start(), once PostgreSQL holds its port (tests/pg.py draws its own)
    gcs_port: int = 0
    dashboard_port: int = 0
    http_port: int = 0
    nodes: dict[str, RayNode] = field(default_factory=dict)
    services: list[subprocess.Popen] = field(default_factory=list)
    env: dict[str, str] = field(default_factory=dict, repr=False)  # holds the cluster's secrets
    pg: Any = None
    s3_endpoint: str = ""
    redis_port: int = 0
    admin_password: str = field(default_factory=lambda: secrets.token_urlsafe(12), repr=False)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def tag_prefix(self) -> str:
        return f"qis-{self.run_id}"

    def tag(self, name: str) -> str:
        return f"{self.tag_prefix}-{name}"

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def logs(self) -> Path:
        return self.root / "ray" / "session_latest" / "logs"

    # ------------------------------------------------------------------ start

    def start(self) -> Cluster:
        from tests.pg import start_server

        (self.root / "data").mkdir()
        self.pg = start_server()
        self.gcs_port, self.dashboard_port, self.http_port = free_port(), free_port(), free_port()
        self._start_s3()
        if self.redis:
            self._start_redis()
        self.env = self._shared_env()
        head_env = dict(self.env)
        if self.redis:
            # GCS fault tolerance: the GCS keeps its tables in Redis and a restarted GCS reads them back.
            head_env["RAY_REDIS_ADDRESS"] = f"127.0.0.1:{self.redis_port}"
            head_env["RAY_external_storage_namespace"] = self.run_id
        self._start_node(
            "head",
            head_env,
            [
                "--head",
                f"--port={self.gcs_port}",
                "--num-gpus=0",
                "--num-cpus=2",
                *_control_plane(),
                f"--temp-dir={self.root / 'ray'}",
                "--include-dashboard=true",
                "--dashboard-host=127.0.0.1",
                f"--dashboard-port={self.dashboard_port}",
                f"--ray-client-server-port={free_port()}",
                "--disable-usage-stats",
            ],
        )
        # A CPU worker that advertises the control-plane resource too (as a KubeRay CPU worker group
        # could): the registry may run there, and the test kills that node to see it come back.
        self._start_node(
            "cpu1",
            dict(self.env),
            [f"--address=127.0.0.1:{self.gcs_port}", "--num-gpus=0", "--num-cpus=1", *_control_plane()],
        )
        for name in ("gpu1", "gpu2"):  # one after another: two at once collide on the raylet socket name
            self.start_gpu_worker(name)
        return self

    def start_gpu_worker(self, name: str) -> RayNode:
        """A GPU worker joining the cluster (at start, or replacing a lost one as KubeRay does)."""
        self._start_node(
            name, dict(self.env), [f"--address=127.0.0.1:{self.gcs_port}", f"--num-gpus={WORKER_GPUS}", "--num-cpus=2"]
        )
        return self.nodes[name]

    def _node_ports(self) -> list[str]:
        low, high = worker_port_range()
        return [
            "--node-ip-address=127.0.0.1",
            f"--node-manager-port={free_port()}",
            f"--object-manager-port={free_port()}",
            f"--runtime-env-agent-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--dashboard-agent-listen-port={free_port()}",
            f"--metrics-export-port={free_port()}",
            f"--min-worker-port={low}",
            f"--max-worker-port={high}",
            "--object-store-memory=100000000",
        ]

    def _start_node(self, name: str, env: dict[str, str], args: list[str]) -> None:
        tag = self.tag(name)
        node = RayNode(name, tag, [*args, *self._node_ports()], {**env, TAG: tag})
        self.nodes[name] = node
        node.start(self.root)

    def _shared_env(self) -> dict[str, str]:
        """What every node must share (docs/deploy.md lists the same), on top of a clean environment."""
        keep = {"PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "USER", "LOGNAME", "SHELL", "CI"}
        env = {k: v for k, v in os.environ.items() if k in keep}
        env["PATH"] = f"{BIN}{os.pathsep}{env.get('PATH', '')}"
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "RAY_AUTH_MODE": "token",
                "RAY_AUTH_TOKEN": secrets.token_hex(32),
                "JWT_SECRET": secrets.token_urlsafe(32),
                "ADMIN_PASSWORD": self.admin_password,
                "DATABASE_URL": self.pg.url(),
                "DATA_DIR": str(self.root / "data"),
                "RESULT_STORE_URL": f"s3://{BUCKET}/results",
                "AWS_ENDPOINT_URL": self.s3_endpoint,
                "AWS_ACCESS_KEY_ID": "testing",
                "AWS_SECRET_ACCESS_KEY": "testing",
                "AWS_DEFAULT_REGION": "us-east-1",
                "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": "serving.proxy:proxy_middlewares",
                "FORWARDED_ALLOW_IPS": "127.0.0.1",
                # cheap password hashing and one torch thread per replica: two CPU cores run it all
                "PASSWORD_HASH_PROFILE": "cheapest",
                "TORCH_NUM_THREADS": "1",
                "HF_HUB_OFFLINE": "1",
                "REGISTER_MAX_PER_ADDRESS": "100000",  # every test user comes from 127.0.0.1
                "LOGIN_MAX_PER_ADDRESS": "100000",
                "IMAGE_FETCH_MAX_PER_ADDRESS": "100000",
            }
        )
        return env

    def _start_s3(self) -> None:
        moto = BIN / "moto_server"
        if not moto.exists():
            unavailable("moto_server is not installed", "pip install -e '.[dev]'")
        port = free_port()
        self._service("s3", [str(moto), "-H", "127.0.0.1", "-p", str(port)])
        self.s3_endpoint = f"http://127.0.0.1:{port}"
        wait_for(lambda: _answers(self.s3_endpoint), 30, "moto_server")
        import boto3

        boto3.client(
            "s3",
            endpoint_url=self.s3_endpoint,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",
            region_name="us-east-1",
        ).create_bucket(Bucket=BUCKET)

    def _start_redis(self) -> None:
        self.redis_port = free_port()
        (self.root / "redis").mkdir()
        self._service(
            "redis",
            [
                shutil.which("redis-server") or "redis-server",
                "--port",
                str(self.redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root / "redis"),
            ],
        )
        wait_for(lambda: _tcp_open(self.redis_port), 30, "redis-server")

    def _service(self, name: str, argv: list[str]) -> None:
        log = open(self.root / f"{name}.log", "w")  # noqa: SIM115 (closed with the process)
        env = {**os.environ, TAG: self.tag(name)}
        self.services.append(subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env))

    # ------------------------------------------------------------------ the application

    def serve_config(self) -> dict:
        """The production serve_config.yaml with only what a CPU machine needs changed."""
        config = yaml.safe_load((ROOT / "serve_config.yaml").read_text())
        # One machine, one port: the proxy runs on the head only (every node would bind the same port).
        config["proxy_location"] = "HeadOnly"
        config["http_options"].update(host="127.0.0.1", port=self.http_port)
        app = config["applications"][0]
        app["args"]["model_profile"] = "tiny"  # no weights here: the tiny pipelines on the CPU
        for deployment in app["deployments"]:
            deployment["ray_actor_options"]["num_cpus"] = 0.25  # two cores run every replica
        return config

    def deploy(self) -> None:
        path = self.root / "serve_config.cluster.yaml"
        path.write_text(yaml.safe_dump(self.serve_config(), sort_keys=False))
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "ray.serve.scripts",
                "deploy",
                str(path),
                "--address",
                f"http://127.0.0.1:{self.dashboard_port}",
            ],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stdout + done.stderr

    def health(self) -> Optional[dict]:
        try:
            response = httpx.get(self.base_url + "/health", timeout=5)
        except httpx.HTTPError:
            return None
        return response.json() if response.status_code == 200 else None

    def inspect(self) -> dict:
        """Nodes and actors as the GCS knows them, read by a driver in a subprocess (this process stays
        out of the cluster)."""
        done = subprocess.run(
            [sys.executable, "-m", "tests.cluster.inspect_cluster", f"127.0.0.1:{self.gcs_port}"],
            env={**self.env, TAG: self.tag("inspect")},
            capture_output=True,
            text=True,
            timeout=90,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr[-3000:]
        return json.loads(done.stdout.strip().splitlines()[-1])

    def control_plane(self, *args: str) -> None:
        """``tests/cluster/control_plane.py`` against this cluster: hold or release a node's share."""
        done = subprocess.run(
            [sys.executable, "-m", "tests.cluster.control_plane", f"127.0.0.1:{self.gcs_port}", *args],
            env={**self.env, TAG: self.tag("inspect")},
            capture_output=True,
            text=True,
            timeout=120,
            cwd=ROOT,
        )
        assert done.returncode == 0, done.stderr[-3000:]

    # ------------------------------------------------------------------ faults

    def head_gcs_pid(self) -> int:
        pids = [p for p in tagged_pids(self.tag("head")) if any("gcs_server" in w for w in cmdline(p)[:1])]
        assert len(pids) == 1, pids
        return pids[0]

    def kill_gcs(self) -> tuple[list[str], dict[str, str]]:
        """SIGKILL the head's GCS server; returns what :meth:`restart_gcs` needs to start it again."""
        pid = self.head_gcs_pid()
        argv, env = cmdline(pid), environ_of(pid)
        os.kill(pid, signal.SIGKILL)
        wait_for(lambda: not os.path.exists(f"/proc/{pid}") or _zombie(pid), 10, "the GCS to die")
        return argv, env

    def restart_gcs(self, argv: list[str], env: dict[str, str]) -> None:
        """The GCS again, as Ray started it (same ports, session, Redis): what a restarted head does."""
        log = open(self.root / "gcs-restarted.log", "w")  # noqa: SIM115 (closed with the process)
        subprocess.Popen(argv, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    # ------------------------------------------------------------------ stop

    def close(self) -> None:
        for name in [*self.nodes, "inspect"]:
            try:
                kill_tagged(self.tag(name))
            except Exception as exc:  # keep going: the rest must stop too
                print(f"cleanup of {name}: {exc}", file=sys.stderr)
        for process in self.services:
            process.kill()
            process.wait(timeout=10)
        if self.pg is not None:
            self.pg.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _control_plane() -> list[str]:
    return [f"--resources={json.dumps({CONTROL_PLANE: 1})}"]


def _answers(url: str) -> bool:
    try:
        httpx.get(url, timeout=2)
        return True
    except httpx.HTTPError:
        return False


def _tcp_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(1)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _zombie(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def task_log_events(logs: Path, app_prefix: str = "") -> list[dict]:
    """Every task event line (JSON with ``event`` and ``task_id``) in the cluster's Ray logs: the
    registry's in ``worker-*.err``, the replicas' in ``serve/replica_*.log``."""
    events = []
    for path in [*logs.glob("worker-*.err"), *logs.glob("serve/replica_*.log")]:
        events.extend(task_log_events_of(path))
    return events


def task_log_events_of(path: Path) -> list[dict]:
    """The task event lines of one log file, in order."""
    events = []
    for line in path.read_text(errors="replace").splitlines():
        start = line.find("{")
        if start < 0 or '"task_id"' not in line:
            continue
        try:
            record = json.loads(line[start:])
        except ValueError:
            continue
        if isinstance(record, dict) and "event" in record and record.get("task_id"):
            events.append(record)
    return events
