"""The service's metrics on Ray's Prometheus endpoint, scraped after tasks of every outcome; and the
Grafana dashboard, whose every query names a metric seen in that scrape."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

import httpx
import pytest
import ray
from prometheus_client.parser import text_string_to_metric_families

from tests.api.helpers import submit_t2i, wait_status
from tests.conftest import TestUser, sleep_app_args, wait_for

APP = "metrics"
DAILY_LIMIT = 4
DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "qwen-image-dashboard.json"
KIND = {"kind": "text_to_image"}
STATUS_READS = 3


def scrape() -> dict[str, list[tuple[dict, float]]]:
    """Every sample on this node's metrics endpoint, by sample name."""
    port = ray._private.worker._global_node.metrics_export_port
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    samples: dict[str, list[tuple[dict, float]]] = defaultdict(list)
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[sample.name].append((sample.labels, sample.value))
    return samples


def value(samples, name: str, **labels) -> float:
    """The sum of ``name``'s samples of this application that carry ``labels``."""
    wanted = {"application": APP, **labels}
    return sum(v for found, v in samples.get(name, []) if wanted.items() <= found.items())


@pytest.fixture(scope="module")
def scraped(deploy_app, data_root) -> dict:
    """Tasks of every outcome and every refusal on a fresh application, then the scrape that shows them."""
    # The faulty profile: the sleep profile, plus a failure when a prompt asks for one.
    url = deploy_app(
        APP,
        sleep_app_args(
            data_root,
            APP,
            model_profile="faulty",
            model_replicas=1,
            sleep_seconds_per_step=0.02,
            max_queue_size=1,
            default_daily_limit=DAILY_LIMIT,
            model_cache_dir=str(data_root / f"{APP}-state"),
        ),
    )
    with httpx.Client(base_url=url, timeout=60) as client:
        first, second = TestUser(client, "metered"), TestUser(client, "metered")
        assert client.post("/auth/login", json={"username": first.username, "password": "wrong"}).status_code == 401

        completed = submit_t2i(client, first.headers, num_inference_steps=20)
        assert wait_status(client, first.headers, completed)["status"] == "completed"
        for _ in range(STATUS_READS):  # the owner's repeated reads: the ingress's status cache answers
            assert client.get(f"/tasks/{completed}", headers=first.headers).status_code == 200
        failing = submit_t2i(client, first.headers, prompt="__fault_raise__ boom", num_inference_steps=20)
        assert wait_status(client, first.headers, failing)["status"] == "failed"

        # Slowed (0.5 s more per step) so that it is still running while the queue fills, on any machine.
        running = submit_t2i(client, first.headers, prompt="__fault_slow_step_0.5__ held", num_inference_steps=100)
        wait_status(client, first.headers, running, statuses={"running"})
        queued = submit_t2i(client, first.headers, num_inference_steps=20)
        full = client.post("/text-to-image", headers=first.headers, data={"prompt": "one too many"})
        assert full.status_code == 503, full.text
        assert client.delete(f"/tasks/{queued}", headers=first.headers).json()["status"] == "cancelled"
        client.delete(f"/tasks/{running}", headers=first.headers)
        assert wait_status(client, first.headers, running)["status"] == "cancelled"

        whole_day = submit_t2i(client, second.headers, num_inference_steps=20, num_images=DAILY_LIMIT)
        assert wait_status(client, second.headers, whole_day)["status"] == "completed"
        over = client.post("/text-to-image", headers=second.headers, data={"prompt": "over the limit"})
        assert over.status_code == 429, over.text

    # Ray's metrics agent exports what each process reported at its last interval (seconds), and each
    # process reports on its own clock: the scrape is taken once every count the tests check is there,
    # not just some of them (the quota refusal, the last thing done, may come a report later).
    last: dict = {}

    def settled():
        last["samples"] = samples = scrape()
        counted = all(value(samples, name, **labels) >= want for name, labels, want in EXPECTED)
        idle = all(value(samples, gauge, **KIND) == 0 for gauge in ("ray_qis_tasks_pending", "ray_qis_tasks_running"))
        return samples if counted and idle and "ray_qis_tasks_pending" in samples else None

    try:
        return wait_for(settled, timeout=90, interval=2, what="the tasks' metrics on the endpoint")
    except AssertionError:
        return last["samples"]  # each test then names the count that never came


# (sample, labels, count) the fixture's actions must bring onto the endpoint (the tests check these counts).
EXPECTED = [
    ("ray_qis_tasks_submitted_total", KIND, 5),
    ("ray_qis_tasks_completed_total", KIND, 2),
    ("ray_qis_tasks_failed_total", KIND, 1),
    ("ray_qis_tasks_cancelled_total", KIND, 2),
    ("ray_qis_tasks_refused_total", {"reason": "queue_full", **KIND}, 1),
    ("ray_qis_tasks_refused_total", {"reason": "quota", **KIND}, 1),
    ("ray_qis_login_failures_total", {"reason": "bad_credentials"}, 1),
    ("ray_qis_status_reads_total", {"answered_by": "cache"}, STATUS_READS),
    ("ray_qis_queue_wait_seconds_count", KIND, 4),
    ("ray_qis_generation_seconds_count", KIND, 2),
    ("ray_qis_denoising_steps_total", KIND, 40),
]


def test_task_outcomes_are_counted_by_kind(scraped):
    assert value(scraped, "ray_qis_tasks_submitted_total", **KIND) == 5
    assert value(scraped, "ray_qis_tasks_completed_total", **KIND) == 2
    assert value(scraped, "ray_qis_tasks_failed_total", **KIND) == 1
    assert value(scraped, "ray_qis_tasks_cancelled_total", **KIND) == 2
    assert value(scraped, "ray_qis_tasks_submitted_total", kind="image_edit") == 0


def test_refusals_are_counted_by_reason(scraped):
    assert value(scraped, "ray_qis_tasks_refused_total", reason="queue_full", **KIND) == 1
    assert value(scraped, "ray_qis_tasks_refused_total", reason="quota", **KIND) == 1
    assert value(scraped, "ray_qis_login_failures_total", reason="bad_credentials") == 1


def test_status_reads_are_counted_by_what_answered_them(scraped):
    assert value(scraped, "ray_qis_status_reads_total", answered_by="cache") >= STATUS_READS
    assert value(scraped, "ray_qis_status_reads_total", answered_by="registry") >= 1  # the first of each task


def test_queue_depth_is_zero_once_everything_has_finished(scraped):
    kinds = {labels.get("kind") for labels, _ in scraped["ray_qis_tasks_pending"] if labels.get("application") == APP}
    assert "text_to_image" in kinds
    assert value(scraped, "ray_qis_tasks_pending", **KIND) == 0
    assert value(scraped, "ray_qis_tasks_running", **KIND) == 0


def test_queue_wait_counts_each_started_task_and_generation_each_finished_run(scraped):
    # Started: the two finished ones, the failing one and the cancelled running one (never the one
    # cancelled while queued). Whole pipeline runs: the two that completed.
    assert value(scraped, "ray_qis_queue_wait_seconds_count", **KIND) == 4
    assert value(scraped, "ray_qis_queue_wait_seconds_sum", **KIND) >= 0
    assert value(scraped, "ray_qis_generation_seconds_count", **KIND) == 2
    # 20 steps of 0.02 s each: every run in a bucket above 0.25 s (Ray's exporter derives the sum from
    # the buckets, so the buckets are what can be checked).
    assert value(scraped, "ray_qis_generation_seconds_bucket", le="0.25", **KIND) == 0
    assert value(scraped, "ray_qis_generation_seconds_bucket", le="+Inf", **KIND) == 2
    assert value(scraped, "ray_qis_generation_seconds_sum", **KIND) > 0
    assert value(scraped, "ray_qis_denoising_steps_total", **KIND) == 40
    [(labels, rate)] = [
        (found, v) for found, v in scraped["ray_qis_denoising_steps_per_second"] if found.get("application") == APP
    ]
    assert 0 < rate <= 1 / 0.02
    assert labels["deployment"] == "TextToImage" and labels["replica"]


def dashboard_queries() -> list[str]:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    return [target["expr"] for panel in panels for target in panel.get("targets", [])]


def test_every_dashboard_query_names_only_metrics_the_scrape_saw(scraped):
    queries = dashboard_queries()
    assert len(queries) >= 6
    seen = set(scraped)
    for query in queries:
        names = set(re.findall(r"\bray_[a-z_]+\b", query))
        assert names, query
        assert names <= seen, f"{query}: {sorted(names - seen)} not on the endpoint"


def test_the_ingress_shows_its_model_replicas_by_state(scraped):
    """What the ingress read of its model deployments: the one TextToImage replica running, none waiting."""

    def replicas(state: str) -> set[float]:
        return {
            v
            for labels, v in scraped["ray_qis_deployment_replicas"]
            if labels.get("application") == APP
            and labels.get("deployment_name") == "TextToImage"
            and labels.get("state") == state
        }

    assert replicas("running") == {1.0}
    assert replicas("waiting_for_resources") == {0.0}
