"""The service on a several-node Ray cluster, started the way KubeRay runs one (``ray start``).

A head (no GPUs, the ``control_plane`` resource, Redis-backed GCS when ``redis-server`` is there), a
CPU worker with the ``control_plane`` resource too (as a KubeRay CPU worker group could), and two GPU
workers (2 logical GPUs each), PostgreSQL as ``DATABASE_URL``, ``moto_server`` as the S3 of
``RESULT_STORE_URL=s3://…``, and the production ``serve_config.yaml`` changed only where one CPU
machine needs it (tiny profile, ``num_cpus: 0.25``, the proxy on the head at a free port), deployed
with ``serve deploy``. The tests run in order on that one cluster, each leaving it healthy:

1. a task of each kind end to end, results in S3, the registry on a control-plane node without GPUs,
   replicas on GPU nodes;
2. a GPU worker running a task SIGKILLed under load: no task lost, stuck or completed twice, the
   running one started again (its second attempt);
3. the registry's node killed: the registry was created on the CPU worker (a placeholder held the
   head's ``control_plane`` while the application deployed), every process of that node is
   SIGKILLed; Ray restarts the registry on the head (never on a GPU node), it recovers its tasks
   from PostgreSQL, clients get only 200 or 503 + Retry-After meanwhile;
4. the head's GCS SIGKILLed and restarted (Redis keeps its state) while tasks run.

The timings each step measures are printed (docs/deploy.md quotes them).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from tests.api.helpers import TERMINAL, image_bytes, png_size
from tests.cluster.harness import BUCKET, Cluster, task_log_events, task_log_events_of, unavailable, wait_for

pytestmark = [pytest.mark.cluster, pytest.mark.timeout(900)]

APP = "qwen-image"
REGISTRY = f"task-registry:{APP}"
MODEL_DEPLOYMENTS = ("TextToImage", "ImageEdit")
INGRESS = f"SERVE_REPLICA::{APP}#Ingress#"


@pytest.fixture(scope="module")
def cluster(request):
    redis = shutil.which("redis-server") is not None
    started = time.monotonic()
    cluster = Cluster(redis=redis)
    # A SIGTERM (a CI job cancelled, `timeout`) still runs the clean-up below.
    previous = signal.signal(signal.SIGTERM, _terminated)
    try:
        cluster.start()
        cluster.timings["nodes started (s)"] = time.monotonic() - started
        # The registry created on the CPU worker, so that test 3 can kill its node without the head:
        # a placeholder holds the head's control_plane until the application is up.
        cluster.control_plane("hold", _node_of(cluster, cluster.nodes["head"]))
        cluster.deploy()
        wait_for(lambda: (cluster.health() or {}).get("status") == "healthy", 300, "a healthy application", 1)
        cluster.control_plane("release")
        cluster.timings["cluster + application healthy (s)"] = time.monotonic() - started
        yield cluster
    finally:
        capture = request.config.pluginmanager.getplugin("capturemanager")
        with capture.global_and_fixture_disabled():
            print("\ncluster timings:")
            for what, seconds in cluster.timings.items():
                print(f"  {what}: {round(seconds, 1)}")
        cluster.close()
        signal.signal(signal.SIGTERM, previous)


def _terminated(signum, frame):
    raise SystemExit(f"terminated by signal {signum}")


@pytest.fixture(scope="module")
def http(cluster):
    with httpx.Client(base_url=cluster.base_url, timeout=30) as client:
        token = client.post("/auth/login", json={"username": "admin", "password": cluster.admin_password})
        assert token.status_code == 200, token.text
        client.headers["Authorization"] = f"Bearer {token.json()['access_token']}"
        yield client


def submit_t2i(http: httpx.Client, prompt: str = "一只猫") -> str:
    response = http.post("/text-to-image", data={"prompt": prompt, "num_inference_steps": "20"})
    assert response.status_code == 202, response.text
    return response.json()["task_id"]


def submit_edit(http: httpx.Client) -> str:
    response = http.post(
        "/image-edit",
        files=[("images", ("in.png", image_bytes((96, 64)), "image/png"))],
        data={"prompt": "把背景换成蓝色", "num_inference_steps": "20"},
    )
    assert response.status_code == 202, response.text
    return response.json()["task_id"]


def status_of(http: httpx.Client, task_id: str) -> dict:
    """The task's status; a 503 (registry restarting) must say when to come back."""
    response = http.get(f"/tasks/{task_id}")
    if response.status_code == 503:
        assert response.headers.get("Retry-After"), response.headers
        assert "detail" in response.json()
        return {"status": "unavailable"}
    assert response.status_code == 200, response.text
    return response.json()


def wait_all_done(http: httpx.Client, task_ids: list[str], timeout: float) -> dict[str, dict]:
    finished: dict[str, dict] = {}

    def done() -> bool:
        for task_id in task_ids:
            if task_id not in finished:
                body = status_of(http, task_id)
                if body["status"] in TERMINAL:
                    finished[task_id] = body
        return len(finished) == len(task_ids)

    wait_for(done, timeout, f"{len(task_ids)} tasks to finish ({len(finished)} so far)", 0.5)
    return finished


def assert_each_completed_once(cluster: Cluster, finished: dict[str, dict]) -> Counter:
    """Every task completed; the registry logged exactly one completion per task; returns the
    attempts (generation starts) per task."""
    assert {t: b["status"] for t, b in finished.items()} == dict.fromkeys(finished, "completed")
    events = [e for e in task_log_events(cluster.logs) if e["task_id"] in finished]
    completions = Counter(e["task_id"] for e in events if e["event"] == "completed")
    assert completions == Counter(dict.fromkeys(finished, 1)), completions
    return Counter(e["task_id"] for e in events if e["event"] == "started")


def s3_keys(cluster: Cluster) -> list[str]:
    import s3fs

    fs = s3fs.S3FileSystem(
        key="testing", secret="testing", client_kwargs={"endpoint_url": cluster.s3_endpoint, "region_name": "us-east-1"}
    )
    return list(fs.find(BUCKET))


def model_replicas_by_node(cluster: Cluster, seen: dict | None = None) -> tuple[dict, dict]:
    """Live nodes and model replicas, and the registry actor; from ``seen`` (an ``inspect()``) if given."""
    seen = seen or cluster.inspect()
    nodes = {n["node_id"]: n for n in seen["nodes"] if n["alive"]}
    replicas = [
        a
        for a in seen["actors"]
        if a["state"] == "ALIVE" and any(a["name"].startswith(f"SERVE_REPLICA::{APP}#{d}#") for d in MODEL_DEPLOYMENTS)
    ]
    registry = next(a for a in seen["actors"] if a["name"] == REGISTRY)
    return {"nodes": nodes, "replicas": replicas}, registry


def test_a_task_of_each_kind_lands_in_s3_with_the_registry_on_a_cpu_node_and_models_on_gpu_nodes(cluster, http):
    started = time.monotonic()
    task_ids = {"text_to_image": submit_t2i(http), "image_edit": submit_edit(http)}
    batch = http.post(
        "/image-edit/batch",
        files=[("image", ("in.png", image_bytes((64, 64)), "image/png"))],
        data={"prompts": "红色|蓝色", "num_inference_steps": "20"},
    )
    assert batch.status_code == 202, batch.text
    task_ids["batch_edit"] = batch.json()["task_id"]
    finished = wait_all_done(http, list(task_ids.values()), 240)
    cluster.timings["one task of each kind, submitted to all done (s)"] = time.monotonic() - started
    assert_each_completed_once(cluster, finished)

    keys = s3_keys(cluster)
    for kind, task_id in task_ids.items():
        assert any(task_id in key for key in keys), f"no {kind} result in S3: {keys}"
    image = http.get(f"/tasks/{task_ids['text_to_image']}/result")
    assert image.status_code == 200 and png_size(image.content)
    assert http.get(f"/tasks/{task_ids['batch_edit']}/result").headers["content-type"] == "application/zip"

    health = cluster.health()
    assert health is not None
    where = health["task_registry_node"]
    assert where["control_plane"] is True and where["node_gpus"] == 0, where
    assert set(MODEL_DEPLOYMENTS) <= set(health["deployments"])

    seen, registry = model_replicas_by_node(cluster)
    assert seen["nodes"][registry["node_id"]]["gpus"] == 0
    assert seen["replicas"] and all(seen["nodes"][r["node_id"]]["gpus"] > 0 for r in seen["replicas"])


def test_a_gpu_worker_killed_under_load_loses_no_task_and_runs_none_twice(cluster, http):
    task_ids = [submit_t2i(http, f"负载 {i}") for i in range(12)]
    # the victim: the node of a replica that is running one of them right now (its log says it started
    # a task it has not finished)
    running_on = wait_for(lambda: replicas_running_a_task(cluster, task_ids), 120, "a replica running a task", 0.5)
    # One read of the cluster between seeing the replica busy and killing its node (each read starts a
    # driver process, seconds on a slow machine), so that the replica is still busy when it is killed.
    inspected = cluster.inspect()
    seen, registry = model_replicas_by_node(cluster, inspected)
    busy = {r["node_id"] for r in seen["replicas"] if r["name"].rsplit("#", 1)[-1] in running_on}
    alive = {n["node_manager_port"]: n["node_id"] for n in inspected["nodes"] if n["alive"]}
    victim = next(
        n for n in cluster.nodes.values() if n.name.startswith("gpu") and alive.get(n.node_manager_port) in busy
    )
    victim_id = alive[victim.node_manager_port]
    assert victim_id != registry["node_id"]
    killed = time.monotonic()
    victim.kill()
    wait_for(lambda: not node_alive(cluster, victim_id), 90, "the killed node to be marked dead", 0.5)
    cluster.timings["GPU worker killed -> marked dead (s)"] = time.monotonic() - killed
    # Two GPUs are left, and the autoscaler may hold both for one model (downscale_delay_s: 20 min):
    # /health says which replicas wait for GPUs. KubeRay replaces the lost pod; so does the test.
    short = (cluster.health() or {}).get("deployments", {})
    cluster.timings["replicas waiting for GPUs, seen by /health meanwhile"] = sum(
        d["waiting_for_resources"] for d in short.values()
    )
    cluster.start_gpu_worker("gpu3")
    cluster.timings["GPU worker killed -> replacement joined (s)"] = time.monotonic() - killed

    finished = wait_all_done(http, task_ids, 300)
    cluster.timings["GPU worker killed -> its 12 tasks all done (s)"] = time.monotonic() - killed
    wait_for(lambda: (cluster.health() or {}).get("status") == "healthy", 180, "healthy again", 1)
    cluster.timings["GPU worker killed -> /health healthy again (s)"] = time.monotonic() - killed
    starts = assert_each_completed_once(cluster, finished)
    assert max(starts.values()) <= 2, starts  # at most the one run again (task_retries: 1)
    retried = [t for t, n in starts.items() if n == 2]
    assert retried, f"no task was running on the killed node: {starts}"
    cluster.timings["tasks started again after the GPU worker was killed"] = len(retried)

    seen, registry = model_replicas_by_node(cluster)
    assert seen["nodes"][registry["node_id"]]["gpus"] == 0
    assert all(seen["nodes"][r["node_id"]]["gpus"] > 0 for r in seen["replicas"])


def replicas_running_a_task(cluster: Cluster, task_ids: list[str]) -> set[str]:
    """Ids of the TextToImage replicas whose log shows one of ``task_ids`` started and not yet ended."""
    wanted, running = set(task_ids), set()
    for path in (cluster.logs / "serve").glob(f"replica_{APP}_TextToImage_*.log"):
        last: dict[str, str] = {}
        for event in task_log_events_of(path):
            if event["task_id"] in wanted and event["event"].startswith("generation_"):
                last[event["task_id"]] = event["event"]
        if "generation_started" in last.values():
            running.add(path.stem.rsplit("_", 1)[-1])
    return running


def node_alive(cluster: Cluster, node_id: str) -> bool:
    return any(n["node_id"] == node_id and n["alive"] for n in cluster.inspect()["nodes"])


def _node_of(cluster: Cluster, node) -> str:
    """The Ray node id of one of our nodes (found by its node manager port)."""
    return next(n["node_id"] for n in cluster.inspect()["nodes"] if n["node_manager_port"] == node.node_manager_port)


def ingress_running(cluster: Cluster) -> int:
    return ((cluster.health() or {}).get("deployments", {}).get("Ingress") or {}).get("running", 0)


def registry_node(cluster: Cluster) -> str:
    return model_replicas_by_node(cluster)[1]["node_id"]


def registry_actor(cluster: Cluster) -> dict:
    return next(a for a in cluster.inspect()["actors"] if a["name"] == REGISTRY and a["state"] == "ALIVE")


def test_the_registrys_node_killed_brings_it_back_on_the_head_with_its_tasks(cluster, http):
    head, cpu = _node_of(cluster, cluster.nodes["head"]), _node_of(cluster, cluster.nodes["cpu1"])
    assert registry_node(cluster) == cpu  # created there while the head's share was held (fixture)
    task_ids = [submit_t2i(http, f"恢复 {i}") for i in range(6)]
    seen = cluster.inspect()
    # and one ingress replica elsewhere: Serve starts another while the registry restarts, which must wait
    ingress = next(
        (a for a in seen["actors"] if a["name"].startswith(INGRESS) and a["state"] == "ALIVE" and a["node_id"] != cpu),
        None,
    )
    killed = time.monotonic()
    cluster.nodes["cpu1"].kill()
    if ingress is not None:
        os.kill(ingress["pid"], signal.SIGKILL)

    codes: Counter = Counter()

    def registry_back() -> bool:
        response = http.get(f"/tasks/{task_ids[0]}")
        codes[response.status_code] += 1
        if response.status_code == 503:
            assert response.headers.get("Retry-After") and response.json().get("detail")
        return response.status_code == 200

    wait_for(registry_back, 180, "the registry to answer again", 0.25)
    cluster.timings["registry's node killed -> registry answering again (s)"] = time.monotonic() - killed
    assert set(codes) <= {200, 503}, codes
    assert not node_alive(cluster, cpu)

    finished = wait_all_done(http, task_ids, 240)
    cluster.timings["registry's node killed -> its 6 tasks all done (s)"] = time.monotonic() - killed
    assert_each_completed_once(cluster, finished)
    back = registry_actor(cluster)
    assert back["node_id"] == head, back  # the one control-plane node left: never a GPU node
    health = wait_for(lambda: cluster.health(), 60, "/health")
    where = health["task_registry_node"]
    assert where["node_id"] == head and where["control_plane"] is True and where["node_gpus"] == 0, where
    assert where["restarts"] >= 1
    wait_for(lambda: ingress_running(cluster) == 2, 120, "two ingress replicas")
    gave_up = [
        path.name
        for path in (cluster.logs / "serve").glob("replica_*Ingress*.log")
        if "could not start the task registry" in path.read_text(errors="replace")
    ]
    assert gave_up == [], gave_up


def test_the_heads_gcs_killed_and_restarted_while_tasks_run_loses_nothing(cluster, http):
    if not cluster.redis:
        unavailable("no redis-server for the GCS's fault tolerance", "apt-get install redis-server")
    task_ids = [submit_t2i(http, f"GCS {i}") for i in range(6)]
    argv, env = cluster.kill_gcs()
    killed = time.monotonic()
    # Without a GCS the data plane goes on: the proxy, the ingress, the registry and the replicas are up.
    with ThreadPoolExecutor(2) as pool:
        during = list(pool.map(lambda t: status_of(http, t)["status"], task_ids[:2]))
    assert all(s != "unavailable" for s in during), during
    time.sleep(5)
    cluster.restart_gcs(argv, env)
    cluster.timings["GCS down (s)"] = time.monotonic() - killed

    finished = wait_all_done(http, task_ids, 240)
    cluster.timings["GCS restarted -> its 6 tasks all done (s)"] = time.monotonic() - killed
    assert_each_completed_once(cluster, finished)
    after = submit_t2i(http, "GCS 之后")
    assert wait_all_done(http, [after], 120)[after]["status"] == "completed"
    wait_for(lambda: (cluster.health() or {}).get("status") == "healthy", 120, "healthy after the GCS restart", 1)
    cluster.timings["GCS killed -> a new task done and /health healthy (s)"] = time.monotonic() - killed
    _, registry = model_replicas_by_node(cluster)
    assert registry["state"] == "ALIVE"
