"""The service's own Prometheus metrics, made with Ray Serve's metrics API.

Ray exports them on every node's metrics endpoint beside Serve's built-in ``ray_serve_*`` metrics,
with Ray's ``ray_`` prefix: ``qis_tasks_submitted`` is scraped as ``ray_qis_tasks_submitted_total``
(docs/deploy.md says how Prometheus finds the endpoint; deploy/grafana/ has a dashboard).

Every metric carries the ``application`` tag. In a Serve replica (Ingress, TextToImage, ImageEdit)
``ray.serve.metrics`` adds it with ``deployment`` and ``replica``; the task registry is a plain Ray
actor, so it sets ``application`` itself. Task metrics are tagged by ``kind`` (text_to_image or
image_edit). Metric objects belong to the process that records them, so each process makes its own,
and a process without Ray (a unit test of the registry core, a benchmark) records nothing.
"""

from __future__ import annotations

from typing import cast

import ray
from ray.serve import metrics

PREFIX = "qis_"

# Seconds a task waits for a GPU: from sub-second on an idle fleet to many minutes behind a queue.
QUEUE_WAIT_BUCKETS = [0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1200, 1800]
# Seconds of one pipeline run: tiny CPU pipelines take ~0.1 s, Qwen-Image on a GPU ~10–60 s.
GENERATION_BUCKETS = [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 8, 10, 12, 15, 20, 30, 45, 60, 90, 120, 300]


def _enabled() -> bool:
    return ray.is_initialized()


def _tag_keys(*keys: str) -> tuple[str]:
    """``keys`` as Serve's metric classes take them: they annotate ``tag_keys`` as ``Tuple[str]`` (one
    key) though they take any number, as ``ray.util.metrics`` under them says (``Tuple[str, ...]``)."""
    return cast("tuple[str]", keys)


class TaskMetrics:
    """What the task registry records: task life cycles, queue depth, queue wait and refusals."""

    def __init__(self, app_name: str):
        self.enabled = _enabled()
        if not self.enabled:
            return
        tags = _tag_keys("application", "kind")
        default = {"application": app_name}

        def counter(name: str, description: str, keys: tuple[str] = tags) -> metrics.Counter:
            made = metrics.Counter(PREFIX + name, description=description, tag_keys=keys)
            made.set_default_tags(default)
            return made

        self._submitted = counter("tasks_submitted", "Tasks accepted (persisted and queued).")
        self._completed = counter("tasks_completed", "Tasks that finished with a result.")
        self._failed = counter("tasks_failed", "Tasks that finished with an error.")
        self._cancelled = counter("tasks_cancelled", "Tasks cancelled by their owner.")
        self._refused = counter(
            "tasks_refused",
            "Submissions refused, by reason (quota, queue_full).",
            keys=_tag_keys("application", "kind", "reason"),
        )
        self._pending = metrics.Gauge(
            PREFIX + "tasks_pending", description="Tasks waiting for a model replica.", tag_keys=tags
        )
        self._running = metrics.Gauge(
            PREFIX + "tasks_running", description="Tasks a model replica is running.", tag_keys=tags
        )
        self._queue_wait = metrics.Histogram(
            PREFIX + "queue_wait_seconds",
            description="Seconds from submission to the start of generation.",
            boundaries=QUEUE_WAIT_BUCKETS,
            tag_keys=tags,
        )
        for made in (self._pending, self._running, self._queue_wait):
            made.set_default_tags(default)
        self._finished = {"completed": self._completed, "failed": self._failed, "cancelled": self._cancelled}

    def submitted(self, kind: str) -> None:
        if self.enabled:
            self._submitted.inc(1, {"kind": kind})

    def finished(self, kind: str, status: str) -> None:
        if self.enabled:
            self._finished[status].inc(1, {"kind": kind})

    def refused(self, kind: str, reason: str) -> None:
        if self.enabled:
            self._refused.inc(1, {"kind": kind, "reason": reason})

    def started(self, kind: str, waited_seconds: float) -> None:
        if self.enabled:
            self._queue_wait.observe(max(waited_seconds, 0.0), {"kind": kind})

    def depth(self, kind: str, pending: int, running: int) -> None:
        """The queue of one kind now (set after every status change of one of its tasks)."""
        if self.enabled:
            self._pending.set(pending, {"kind": kind})
            self._running.set(running, {"kind": kind})


class ModelMetrics:
    """What a model replica records about each pipeline run (Serve adds deployment and replica)."""

    def __init__(self) -> None:
        self.enabled = _enabled()
        if not self.enabled:
            return
        self._seconds = metrics.Histogram(
            PREFIX + "generation_seconds",
            description="Seconds one pipeline run held the device.",
            boundaries=GENERATION_BUCKETS,
            tag_keys=("kind",),
        )
        self._steps_per_second = metrics.Gauge(
            PREFIX + "denoising_steps_per_second",
            description="Denoising steps per second of the last run.",
            tag_keys=("kind",),
        )
        self._steps = metrics.Counter(
            PREFIX + "denoising_steps", description="Denoising steps run.", tag_keys=("kind",)
        )

    def generated(self, kind: str, steps: int, seconds: float) -> None:
        if not self.enabled:
            return
        tags = {"kind": kind}
        self._seconds.observe(seconds, tags)
        self._steps.inc(steps, tags)
        if seconds > 0:
            self._steps_per_second.set(steps / seconds, tags)


class IngressMetrics:
    """What an Ingress replica records; one per app, on its ``ServiceState.metrics``.

    A second one in the same process (two apps built by one test) registers nothing twice: Ray
    keys a metric by its name, so both record into the same series.
    """

    def __init__(self) -> None:
        self.enabled = _enabled()
        if not self.enabled:
            return
        self._login_failures = metrics.Counter(
            PREFIX + "login_failures",
            description="Refused log-ins, by reason (bad_credentials, throttled, disabled).",
            tag_keys=("reason",),
        )

        self._status_reads = metrics.Counter(
            PREFIX + "status_reads",
            description="GET /tasks/{id} answers, by what answered: cache (this ingress's status cache), "
            "registry, or record (the database, for tasks the registry no longer holds).",
            tag_keys=("answered_by",),
        )
        self._replicas = metrics.Gauge(
            PREFIX + "deployment_replicas",
            description="Replicas of each deployment by state: running, starting, and waiting_for_resources "
            "(no node has the GPUs or CPUs they ask for; the cluster is short of GPUs).",
            tag_keys=_tag_keys("deployment_name", "state"),
        )

    def replicas(self, deployment: str, running: int, starting: int, waiting: int) -> None:
        if self.enabled:
            for state, count in (("running", running), ("starting", starting), ("waiting_for_resources", waiting)):
                self._replicas.set(count, {"deployment_name": deployment, "state": state})

    def login_failed(self, reason: str) -> None:
        if self.enabled:
            self._login_failures.inc(1, {"reason": reason})

    def status_read(self, answered_by: str) -> None:
        if self.enabled:
            self._status_reads.inc(1, {"answered_by": answered_by})


# Metrics of parts built elsewhere, named here so that every metric of the service is in one file:
#   qis_event_streams_open (Gauge, tag kind: task or user)        — the task event streams
#   qis_webhook_deliveries (Counter, tag outcome: delivered, retried, failed) — webhook deliveries
# Each is made by its part the way the classes above make theirs, and added to the dashboard once
# the scrape test (tests/api/test_metrics.py) sees it.
