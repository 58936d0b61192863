"""The benchmark figures. Each takes the run's :class:`Context`, records flat JSON keys (the unit
in the key) and table rows, and keeps every load loop bounded in request count and time."""

from __future__ import annotations

import concurrent.futures
import itertools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import httpx
import psutil

from benchmarks.meter import CpuMeter, process_title, service_processes
from benchmarks.service import REPO, App, Cluster, free_port, python_module, wait_until
from benchmarks.stats import percentile, ratio, summary_ms

SLEEP_STEP_S = 0.01  # the sleep profile's step for the serving-layer figures: 20 steps = 200 ms
# Ray's own spelling of the variable (its config names are lower case); 15 is its default for workers.
RAY_WORKER_NICE = int(os.environ.get("RAY_worker_niceness", "15"))  # noqa: SIM112
PLAIN_SERVER_NICE = RAY_WORKER_NICE  # the comparison server runs at the same priority as Serve's workers


@dataclass
class Sizes:
    """How long and how many, per mode."""

    status_s: float
    submit_s: float
    submit_max: int
    overhead_runs: int
    duty_tasks: int
    scale_ns: tuple[int, ...]
    scale_tasks: int
    scale_step_s: float
    autoscale_ns: tuple[int, ...]
    autoscale_task_step_s: float
    autoscale_up_bound_s: float
    autoscale_down_bound_s: float
    tiny_runs: int
    tiny_steps: int


FULL = Sizes(
    status_s=15,
    submit_s=10,
    submit_max=2000,
    overhead_runs=8,
    duty_tasks=12,
    scale_ns=(1, 2, 4, 8, 16),
    scale_tasks=96,
    scale_step_s=0.05,
    autoscale_ns=(2, 4, 8),
    autoscale_task_step_s=0.1,
    autoscale_up_bound_s=90,
    autoscale_down_bound_s=120,
    tiny_runs=3,
    tiny_steps=20,
)
QUICK = Sizes(
    status_s=0.5,
    submit_s=0.5,
    submit_max=100,
    overhead_runs=1,
    duty_tasks=4,
    scale_ns=(1, 2),
    scale_tasks=8,
    scale_step_s=0.01,
    autoscale_ns=(2,),
    autoscale_task_step_s=0.01,
    autoscale_up_bound_s=2,
    autoscale_down_bound_s=2,
    tiny_runs=0,
    tiny_steps=2,
)


@dataclass
class Row:
    figure: str
    label: str
    value: str
    goal: str = ""
    ok: Optional[bool] = None


@dataclass
class Context:
    quick: bool
    root: Path
    sizes: Sizes
    results: dict[str, Any] = field(default_factory=dict)
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    cluster: Optional[Cluster] = None
    log: Callable[[str], None] = print

    def put(self, key: str, value: Any) -> Any:
        self.results[key] = value
        return value

    def row(self, figure: str, label: str, value: str, goal: str = "", ok: Optional[bool] = None) -> None:
        self.rows.append(Row(figure, label, value, goal, ok))


def fmt(value: Optional[float], unit: str = "", digits: int = 1) -> str:
    if value is None:
        return "n/a"
    return f"{value:.{digits}f}{(' ' + unit) if unit else ''}"


def run_json(module: str, *args: str, timeout: float, nice: int = 0) -> dict:
    """Run ``python -m module args`` and parse the JSON object on its last stdout line."""
    proc = python_module(module, *args, nice=nice, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    lines = out.decode().strip().splitlines()
    if proc.returncode != 0 or not lines:
        raise RuntimeError(f"{module} failed ({proc.returncode}): {err.decode()[-2000:]}")
    return json.loads(lines[-1])


def load(
    url: str,
    clients: int,
    duration_s: float,
    *,
    max_requests: int = 1_000_000,
    headers: dict | None = None,
    method: str = "GET",
    form: dict | None = None,
    expect: str = "200",
    warmup: int = 2,
) -> dict:
    """One bounded run of the load generator in its own process."""
    args = [
        "--url",
        url,
        "--clients",
        str(clients),
        "--duration",
        str(duration_s),
        "--max-requests",
        str(max_requests),
        "--method",
        method,
        "--expect",
        expect,
        "--warmup",
        str(warmup),
    ]
    for key, value in (headers or {}).items():
        args += ["--header", f"{key}: {value}"]
    for key, value in (form or {}).items():
        args += ["--form", f"{key}={value}"]
    return run_json("benchmarks.load", *args, timeout=duration_s + 180)


def idle_service_cpu_pct(seconds: float) -> float:
    """CPU the idle service uses anyway (controller loops, health checks, metrics), % of a core."""
    with CpuMeter() as meter:
        time.sleep(seconds)
    return meter.use.pct(meter.use.service_s) or 0.0


def metered_load(
    ctx: Context, url: str, clients: int, duration_s: float, server_pid: Optional[int] = None, **kwargs: Any
) -> dict:
    """A load run plus who used the CPU meanwhile. The service's CPU per request leaves out what
    the idle service uses anyway (``ctx.results['service_idle_cpu_pct_of_core']``)."""
    with CpuMeter(watch=[server_pid] if server_pid else ()) as meter:
        result = load(url, clients, duration_s, **kwargs)
    use = meter.use
    sent = result["requests"] + clients * kwargs.get("warmup", 2)
    if server_pid:
        server_cpu = use.watched_s
    else:
        idle = ctx.results.get("service_idle_cpu_pct_of_core", 0.0) / 100.0 * use.wall_s
        server_cpu = max(use.service_s - idle, 0.0)
    result["server_cpu_ms_per_request"] = 1000.0 * server_cpu / sent if sent else None
    result["server_cpu_pct_of_core"] = use.pct(server_cpu)
    result["other_processes_cpu_pct_of_core"] = use.pct(use.others_s)
    result["server_cpu_ms_per_request_by_process"] = {
        t: 1000.0 * v / sent for t, v in use.by_title.items() if sent and v / sent > 1e-5
    }
    if (result["other_processes_cpu_pct_of_core"] or 0) > 25:
        ctx.notes.append(
            f"{url} ({clients} clients): processes outside the benchmark used "
            f"{result['other_processes_cpu_pct_of_core']:.0f}% of a core meanwhile "
            f"(CPU seconds: {use.top_others})"
        )
    if result["statuses"] and set(result["statuses"]) - set(kwargs.get("expect", "200").split(",")):
        ctx.notes.append(f"{url} ({clients} clients): unexpected answers {result['statuses']} {result['errors'][:2]}")
    return result


# ---------------------------------------------------------------------------------------------
# Figure 1: status poll against the platform's floor


def figure_status(ctx: Context, app: App, task_id: str) -> None:
    s = ctx.sizes
    plain_port = free_port()
    plain_log = tempfile.TemporaryFile()  # noqa: SIM115 - the server's output, read after it stops
    plain = python_module(
        "benchmarks.plain_server",
        "--data-dir",
        str(app.data_dir),
        "--port",
        str(plain_port),
        nice=PLAIN_SERVER_NICE,
        stdout=subprocess.DEVNULL,
        stderr=plain_log,
    )
    try:
        plain_base = f"http://127.0.0.1:{plain_port}"
        _wait_http(plain_base + "/ping", plain, 60, plain_log)
        targets = {
            "ping": (app.base_url + "/ping", {}, None),
            "task": (app.base_url + f"/tasks/{task_id}", app.headers, None),
            "plain": (plain_base + f"/tasks/{task_id}", app.headers, plain.pid),
        }
        # The plain server must give the service's answer, or the comparison means nothing.
        ours = httpx.get(targets["task"][0], headers=app.headers, timeout=30, trust_env=False).json()
        theirs = httpx.get(targets["plain"][0], headers=app.headers, timeout=30, trust_env=False).json()
        for key in ("task_id", "status", "created_at", "started_at", "completed_at", "execution_time_seconds"):
            if ours.get(key) != theirs.get(key):
                ctx.notes.append(
                    f"plain server and service disagree on {key}: {theirs.get(key)!r} vs {ours.get(key)!r}"
                )
        for clients in (1, 32):
            for name, (url, headers, pid) in targets.items():
                ctx.log(f"  status poll: {name}, {clients} client(s), {s.status_s:.0f} s")
                r = metered_load(ctx, url, clients, s.status_s, server_pid=pid, headers=headers)
                prefix = f"status_{name}_c{clients}"
                ctx.put(f"{prefix}_rps", r["rps"])
                ctx.put(f"{prefix}_p50_ms", r["latency_ms"]["p50"])
                ctx.put(f"{prefix}_p99_ms", r["latency_ms"]["p99"])
                ctx.put(f"{prefix}_requests", r["requests"])
                ctx.put(f"{prefix}_client_cpu_pct_of_core", r["client_cpu_pct_of_core"])
                ctx.put(f"{prefix}_server_cpu_ms_per_request", r["server_cpu_ms_per_request"])
                ctx.put(f"{prefix}_server_cpu_pct_of_core", r["server_cpu_pct_of_core"])
                ctx.put(f"{prefix}_other_processes_cpu_pct_of_core", r["other_processes_cpu_pct_of_core"])
                if name != "plain":
                    ctx.put(f"{prefix}_server_cpu_ms_per_request_by_process", r["server_cpu_ms_per_request_by_process"])
    finally:
        plain.terminate()
        try:
            plain.wait(timeout=10)
        except subprocess.TimeoutExpired:
            plain.kill()
            plain.wait()
        plain_log.close()
    res = ctx.results
    ctx.put("status_poll_p50_ms", res["status_task_c1_p50_ms"])
    ctx.put("status_poll_p99_ms", res["status_task_c1_p99_ms"])
    for clients in (1, 32):
        ctx.put(
            f"status_task_over_ping_c{clients}_rps_ratio",
            ratio(res[f"status_task_c{clients}_rps"], res[f"status_ping_c{clients}_rps"]),
        )
        ctx.put(
            f"status_task_over_plain_c{clients}_rps_ratio",
            ratio(res[f"status_task_c{clients}_rps"], res[f"status_plain_c{clients}_rps"]),
        )
    labels = {
        "ping": "(a) GET /ping        proxy→ingress",
        "task": "(b) GET /tasks/{id}  proxy→ingress",
        "plain": "(c) GET /tasks/{id}  plain uvicorn+SQLite",
    }
    fig = "1 status poll"
    for clients in (1, 32):
        for name, label in labels.items():
            p = f"status_{name}_c{clients}"
            ctx.row(
                fig,
                f"{label}, {clients:>2} client(s)",
                f"{fmt(res[p + '_rps'], 'req/s', 0)}, p50 {fmt(res[p + '_p50_ms'], 'ms')}, "
                f"p99 {fmt(res[p + '_p99_ms'], 'ms')}; server {fmt(res[p + '_server_cpu_ms_per_request'], 'ms', 2)}"
                f" CPU/req; client {fmt(res[p + '_client_cpu_pct_of_core'], '%', 0)} of a core",
            )
    p50, floor_p50 = res["status_task_c1_p50_ms"], res["status_ping_c1_p50_ms"]
    ctx.row(fig, "(b) p50 with one client", fmt(p50, "ms"), "< 10 ms", p50 is not None and p50 < 10)
    over_floor = ratio(p50, floor_p50)
    ctx.put("status_task_over_ping_c1_p50_ratio", over_floor)
    ctx.row(
        fig,
        "(b) p50 / (a) p50 with one client",
        fmt(over_floor, "×", 2),
        "≤ 1.3×",
        over_floor is not None and over_floor <= 1.3,
    )
    for clients in (1, 32):
        ba = res[f"status_task_over_ping_c{clients}_rps_ratio"]
        bc = res[f"status_task_over_plain_c{clients}_rps_ratio"]
        goal = ("≥ 0.8", ba is not None and ba >= 0.8) if clients == 32 else ("", None)
        ctx.row(fig, f"b/a throughput, {clients} client(s)", fmt(ba, "", 2), *goal)
        ctx.row(fig, f"b/c throughput, {clients} client(s)", fmt(bc, "", 2))


def _wait_http(url: str, proc: subprocess.Popen, timeout: float, log=None) -> None:
    def up() -> bool:
        if proc.poll() is not None:
            if log is not None:
                log.seek(0)
            raise RuntimeError(f"{url}: server exited: {log.read().decode()[-2000:] if log is not None else ''}")
        try:
            return httpx.get(url, timeout=2, trust_env=False).status_code == 200
        except httpx.HTTPError:
            return False

    wait_until(up, timeout, 0.2, url)


# ---------------------------------------------------------------------------------------------
# Figure 2: submission latency


def figure_submit(ctx: Context, app: App) -> None:
    s = ctx.sizes
    form = {"prompt": "a lighthouse at dusk", "num_inference_steps": "20", "async_mode": "true"}
    fig = "2 submission"
    for clients in (1, 32):
        ctx.log(f"  submission: {clients} client(s), ≤ {s.submit_s:.0f} s, ≤ {s.submit_max} tasks")
        r = metered_load(
            ctx,
            app.base_url + "/text-to-image",
            clients,
            s.submit_s,
            max_requests=s.submit_max,
            headers=app.headers,
            method="POST",
            form=form,
            expect="202",
            warmup=1,
        )
        prefix = f"submit_c{clients}"
        ctx.put(f"{prefix}_p50_ms", r["latency_ms"]["p50"])
        ctx.put(f"{prefix}_p99_ms", r["latency_ms"]["p99"])
        ctx.put(f"{prefix}_rps", r["ok_rps"])
        ctx.put(f"{prefix}_tasks", r["ok"])
        ctx.put(f"{prefix}_first_fifth_p50_ms", r["first_fifth_p50_ms"])
        ctx.put(f"{prefix}_last_fifth_p50_ms", r["last_fifth_p50_ms"])
        ctx.put(f"{prefix}_client_cpu_pct_of_core", r["client_cpu_pct_of_core"])
        ctx.put(f"{prefix}_server_cpu_ms_per_request", r["server_cpu_ms_per_request"])
        ctx.put(f"{prefix}_server_cpu_ms_per_request_by_process", r["server_cpu_ms_per_request_by_process"])
        ctx.row(
            fig,
            f"POST /text-to-image (async), {clients:>2} client(s)",
            f"p50 {fmt(r['latency_ms']['p50'], 'ms')}, p99 {fmt(r['latency_ms']['p99'], 'ms')}, "
            f"{fmt(r['ok_rps'], 'tasks/s', 0)} ({r['ok']} tasks; p50 first/last fifth "
            f"{fmt(r['first_fifth_p50_ms'])}/{fmt(r['last_fifth_p50_ms'])} ms); "
            f"server {fmt(r['server_cpu_ms_per_request'], 'ms', 1)} CPU/req",
        )
    ctx.put("submit_unfinished_after_tasks", app.count_unfinished())


# ---------------------------------------------------------------------------------------------
# Figure 3: overhead per task


def sync_request(app: App) -> dict:
    """One sync request: end-to-end time, the task's own timings from ``GET /tasks/{id}``, the PNG."""
    sent_at = time.time()
    started = time.perf_counter()
    response = app.submit(async_mode=False)
    e2e = time.perf_counter() - started
    received_at = time.time()
    if response.status_code != 200:
        raise RuntimeError(f"sync request answered {response.status_code}: {response.text[:300]}")
    task_id = response.headers["x-task-id"]
    status = app.client.get(f"/tasks/{task_id}", headers=app.headers).json()
    created, began, ended = (_posix(status[k]) for k in ("created_at", "started_at", "completed_at"))
    return {
        "e2e_s": e2e,
        "execution_s": status["execution_time_seconds"],
        "png": response.content,
        # the pipeline's own time as the model replica measured it (no cross-process guess)
        "generation_s": float(response.headers["x-generation-seconds"]),
        # the same clock on both sides (one machine): where the time outside the run goes
        "to_created_s": created - sent_at,
        "created_to_started_s": began - created,
        "completed_to_received_s": received_at - ended,
    }


def _posix(iso: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def png_encode_ms(png: bytes, repeats: int = 3) -> float:
    """How long the model replica's PNG encoding of this image takes (same code, here)."""
    import io

    from PIL import Image

    import models

    with Image.open(io.BytesIO(png)) as image:
        image.load()
        metadata = dict(image.text) if hasattr(image, "text") else {}
        times = []
        for _ in range(repeats):
            started = time.perf_counter()
            models.encode_png(image, metadata)
            times.append(time.perf_counter() - started)
    return 1000.0 * percentile(times, 50)


def figure_overhead(ctx: Context, app: App, profile: str) -> None:
    """Sync requests, one at a time (the first a warm-up): end-to-end time minus the pipeline's
    own time, which the model replica measures and returns in ``X-Generation-Seconds``. Rows come
    from :func:`overhead_rows` once both profiles have run."""
    warmup = 0 if ctx.quick else 1
    runs = [sync_request(app) for _ in range(ctx.sizes.overhead_runs + warmup)][warmup:]
    put_overhead(ctx, f"overhead_{profile}", runs)


def put_overhead(ctx: Context, key: str, runs: list[dict]) -> None:
    """The overhead keys under ``key`` from sync requests' timings (:func:`sync_request`)."""
    ctx.put(f"{key}_e2e_p50_ms", summary_ms([r["e2e_s"] for r in runs])["p50"])
    ctx.put(f"{key}_pipeline_p50_ms", summary_ms([r["generation_s"] for r in runs])["p50"])
    overhead = [r["e2e_s"] - r["generation_s"] for r in runs]
    ctx.put(f"{key}_p50_ms", summary_ms(overhead)["p50"])
    ctx.put(f"{key}_p99_ms", summary_ms(overhead)["p99"])
    # Before started_at and after completed_at: HTTP, auth, quota, task record, dispatch, waiting
    # for completion, reading the result back.
    outside = [r["e2e_s"] - r["execution_s"] for r in runs]
    ctx.put(f"{key}_outside_run_p50_ms", summary_ms(outside)["p50"])
    for part in ("to_created", "created_to_started", "completed_to_received"):
        ctx.put(f"{key}_{part}_p50_ms", summary_ms([r[f"{part}_s"] for r in runs])["p50"])
    # Inside started_at..completed_at beyond the pipeline: thread hand-off, PNG encoding and
    # storing, the result's way back to the registry.
    inside = [r["execution_s"] - r["generation_s"] for r in runs]
    ctx.put(f"{key}_inside_run_p50_ms", summary_ms(inside)["p50"])
    ctx.put(f"{key}_png_encode_ms", png_encode_ms(runs[0]["png"]) if runs else None)
    ctx.put(f"{key}_response_bytes", len(runs[0]["png"]) if runs else None)


def overhead_rows(ctx: Context) -> None:
    """The overhead figure's rows: per profile, sync end-to-end minus the replica-measured
    pipeline time, then where it goes."""
    res = ctx.results
    fig = "3 overhead per task"
    labels = {
        "sleep_before": f"before: sleep profile (20×{SLEEP_STEP_S * 1000:.0f} ms)",
        "sleep": f"sleep profile (20×{SLEEP_STEP_S * 1000:.0f} ms)",
        "tiny": "tiny profile (1024², 20 steps, CFG)",
    }
    for profile in ("sleep_before", "sleep", "tiny"):
        p50 = res.get(f"overhead_{profile}_p50_ms")
        goals = {
            "tiny": ("< 50 ms p50", p50 is not None and p50 < 50),
            "sleep": ("≤ 25 ms p50", p50 is not None and p50 <= 25),
        }
        key = f"overhead_{profile}"
        if f"{key}_p50_ms" not in res:
            continue
        p50 = res[f"{key}_p50_ms"]
        ctx.row(
            fig,
            f"{labels[profile]}: sync e2e − pipeline",
            f"p50 {fmt(p50, 'ms')}, p99 {fmt(res[f'{key}_p99_ms'], 'ms')}"
            f" (e2e p50 {fmt(res[f'{key}_e2e_p50_ms'], 'ms', 0)},"
            f" pipeline {fmt(res[f'{key}_pipeline_p50_ms'], 'ms', 0)})",
            *goals.get(profile, ()),
        )
        ctx.row(
            fig,
            "  outside started..completed / inside beyond the pipeline (PNG encoding in it)",
            f"p50 {fmt(res[f'{key}_outside_run_p50_ms'], 'ms')} / {fmt(res[f'{key}_inside_run_p50_ms'], 'ms')}"
            f" ({fmt(res[f'{key}_png_encode_ms'], 'ms')}, {res[f'{key}_response_bytes'] / 1e6:.2f} MB)",
        )
        ctx.row(
            fig,
            "  outside: request→created / created→started / completed→response",
            f"p50 {fmt(res[f'{key}_to_created_p50_ms'], 'ms')} / {fmt(res[f'{key}_created_to_started_p50_ms'], 'ms')}"
            f" / {fmt(res[f'{key}_completed_to_received_p50_ms'], 'ms')}",
        )


# ---------------------------------------------------------------------------------------------
# Figure 8: the OpenAI-compatible API against the native sync call


def openai_request(app: App) -> tuple[float, float]:
    """One ``POST /v1/images/generations`` doing what :meth:`App.submit` asks of ``/text-to-image``
    (1024², 20 steps, the same prompts, CFG and seed), answered as base64 JSON:
    (end-to-end s, the pipeline's own s)."""
    body = {
        "prompt": "a lighthouse at dusk",
        "negative_prompt": "blurry",
        "num_inference_steps": 20,
        "true_cfg_scale": 4.0,
        "seed": 1,
        "size": "1024x1024",
        "response_format": "b64_json",
    }
    started = time.perf_counter()
    response = app.client.post("/v1/images/generations", headers=app.headers, json=body, timeout=600)
    e2e = time.perf_counter() - started
    if response.status_code != 200 or not response.json()["data"][0]["b64_json"]:
        raise RuntimeError(f"/v1/images/generations answered {response.status_code}: {response.text[:300]}")
    return e2e, float(response.headers["x-generation-seconds"])


def figure_openai(ctx: Context, app: App, profile: str) -> None:
    """Sync native calls and /v1 calls for the same work, alternating (so both meet the same
    machine), one at a time; each one's overhead is end-to-end minus the pipeline's own time."""
    runs = 2 if ctx.quick else (6 if profile == "tiny" else 20)
    native, compatible = [], []
    for n in range(runs + 1):  # the first pair warms both paths up
        sync = sync_request(app)
        e2e, generation = openai_request(app)
        if n:
            native.append(sync["e2e_s"] - sync["generation_s"])
            compatible.append(e2e - generation)
    key = f"openai_{profile}"
    native_p50 = ctx.put(f"{key}_native_overhead_p50_ms", summary_ms(native)["p50"])
    v1_p50 = ctx.put(f"{key}_v1_overhead_p50_ms", summary_ms(compatible)["p50"])
    extra = ctx.put(f"{key}_extra_p50_ms", v1_p50 - native_p50)
    paired = ctx.put(
        f"{key}_paired_extra_p50_ms", summary_ms([b - a for a, b in zip(native, compatible, strict=False)])["p50"]
    )
    labels = {
        "sleep": f"sleep profile (1024², 20×{SLEEP_STEP_S * 1000:.0f} ms)",
        "tiny": "tiny profile (1024², 20 steps, CFG)",
    }
    ctx.row(
        "8 OpenAI API overhead",
        f"{labels[profile]}: /v1 b64_json − native sync PNG",
        f"p50 {fmt(extra, 'ms')} (paired p50 {fmt(paired, 'ms')}; overhead {fmt(v1_p50, 'ms')} vs "
        f"{fmt(native_p50, 'ms')}, {len(native)} pairs)",
        *(("< 10 ms p50", extra < 10) if profile == "sleep" else ()),
    )


def sleep_pipeline_seconds(runs: int) -> list[float]:
    """The sleep profile's own time for the service's request (no torch: measured right here)."""
    from benchmarks.pipeline_time import service_request

    return service_request("sleep", runs, 20, None, SLEEP_STEP_S)["seconds"]


# ---------------------------------------------------------------------------------------------
# Figure 4: model duty cycle


def submit_many(app: App, count: int, concurrency: int = 8, **fields: Any) -> list[str]:
    """Submit ``count`` async tasks, ``concurrency`` at a time; returns their ids."""

    def one(_: int) -> str:
        response = app.submit(**fields)
        if response.status_code != 202:
            raise RuntimeError(f"submission answered {response.status_code}: {response.text[:300]}")
        return response.json()["task_id"]

    with concurrent.futures.ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(count)))


def wait_all_finished(app: App, timeout: float) -> None:
    wait_until(lambda: app.count_unfinished() == 0, timeout, 0.1, f"{app.name}: every task to finish")


def figure_duty(ctx: Context, app: App, pipeline_s: list[float]) -> None:
    n = ctx.sizes.duty_tasks
    ids = set(submit_many(app, n, concurrency=n))
    wait_all_finished(app, 60 + n * 2)
    rows = sorted((r for r in app.task_rows() if r["task_id"] in ids), key=lambda r: r["started_at"])
    pipe = percentile(pipeline_s, 50)
    # The device is idle from one task's last step (its start plus the pipeline's own time) to the
    # next task's start, both stamped by the registry when the replica reports them.
    gaps = [b["started_at"] - a["started_at"] - pipe for a, b in itertools.pairwise(rows)]
    # A negative figure here: the next task started while the previous one's PNG was being written.
    finish_gaps = [b["started_at"] - a["completed_at"] for a, b in itertools.pairwise(rows)]
    span = rows[-1]["completed_at"] - rows[0]["started_at"]
    ctx.put("duty_gap_p50_ms", summary_ms(gaps)["p50"])
    ctx.put("duty_gap_p99_ms", summary_ms(gaps)["p99"])
    ctx.put("duty_gap_max_ms", summary_ms(gaps)["max"])
    ctx.put("duty_completed_to_next_started_p50_ms", summary_ms(finish_gaps)["p50"])
    ctx.put("duty_cycle_pct", 100.0 * n * pipe / span)
    ctx.put("duty_task_period_ms", 1000.0 * span / n)
    ctx.put("duty_execution_p50_ms", summary_ms([r["execution_time"] for r in rows])["p50"])
    fig = "4 duty cycle"
    gap = ctx.results["duty_gap_p50_ms"]
    ctx.row(
        fig,
        f"idle gap last step→next started ({n} queued, 1 replica)",
        f"p50 {fmt(gap, 'ms')}, p99 {fmt(ctx.results['duty_gap_p99_ms'], 'ms')}",
        "< 20 ms p50",
        gap is not None and gap < 20,
    )
    ctx.row(
        fig,
        "  completed→next started (< 0: PNG written while the next one runs)",
        f"p50 {fmt(ctx.results['duty_completed_to_next_started_p50_ms'], 'ms')}",
    )
    ctx.row(
        fig,
        "  model busy (pipeline time / span)",
        f"{fmt(ctx.results['duty_cycle_pct'], '%')} (one task every {fmt(ctx.results['duty_task_period_ms'], 'ms', 0)}"
        f", pipeline {fmt(pipe * 1000, 'ms', 0)},"
        f" started..completed p50 {fmt(ctx.results['duty_execution_p50_ms'], 'ms', 0)})",
    )


# Before/after on one machine in one run: the replicas as they were (pixels made inside the
# device's turn, two requests held, no prompt cache) beside today's, measured interleaved.
BEFORE_ARGS = {"replica_overlap": False, "model_max_ongoing_requests": 2, "prompt_cache_mb": 0}
# (label, steps of SLEEP_STEP_S, tasks queued at once)
DUTY_CASES = (("250 ms", 25, 12), ("1 s", 100, 8))


def duty_run(app: App, n: int, steps: int, pipe: float) -> dict[str, Any]:
    """``n`` tasks of ``steps`` queued at once on one replica: the gaps and the busy fraction."""
    ids = set(submit_many(app, n, concurrency=n, steps=steps))
    wait_all_finished(app, 60 + n * 3)
    rows = sorted((r for r in app.task_rows() if r["task_id"] in ids), key=lambda r: r["started_at"])
    span = rows[-1]["completed_at"] - rows[0]["started_at"]
    turns = device_timeline(app)[-n:]
    return {
        "gaps": [b["started_at"] - a["started_at"] - pipe for a, b in itertools.pairwise(rows)],
        "finish_gaps": [b["started_at"] - a["completed_at"] for a, b in itertools.pairwise(rows)],
        "busy": n * pipe / span,
        "execution": [r["execution_time"] for r in rows],
        **device_gaps(turns),
        # The device's occupancy by the replica's clock: generating, from the first start to the last end.
        "device_busy": sum(t["thread_done"] - t["acquired"] for t in turns)
        / (turns[-1]["thread_done"] - turns[0]["acquired"]),
    }


def device_timeline(app: App, deployment: str = "TextToImage") -> list[dict[str, float]]:
    """The model replica's own record of its last generations (``ModelWorker.device_timeline``);
    one replica here, so every call reaches the one that ran the tasks."""
    from ray import serve

    handle = serve.get_deployment_handle(deployment, app_name=app.name)
    return sorted(handle.device_timeline.remote().result(timeout_s=30), key=lambda t: t["acquired"])


def device_gaps(turns: list[dict[str, float]]) -> dict[str, list[float]]:
    """The device's idle time between consecutive generations, from the replica's own clock:
    ``idle`` = the next generation's lock acquired − the previous generation's thread done, split
    into done → lock released (the loop noticing the thread, the start's answer) and released → the
    next acquired; ``late`` = how long after the previous generation ended the next request reached
    the lock (> 0: it was not on the replica yet, the device waited for the router)."""
    pairs = list(itertools.pairwise(turns))
    return {
        "device_idle": [b["acquired"] - a["thread_done"] for a, b in pairs],
        "device_done_to_released": [a["released"] - a["thread_done"] for a, _ in pairs],
        "device_released_to_acquired": [b["acquired"] - a["released"] for a, b in pairs],
        "device_late": [b["at_lock"] - a["thread_done"] for a, b in pairs],
        "device_generation": [t["thread_done"] - t["acquired"] for t in turns],
    }


def figure_duty_compare(ctx: Context, apps: dict[str, App]) -> None:
    """The duty figure at 250 ms and 1 s tasks for each of ``apps`` (before, after), rounds
    interleaved so both meet the same machine; medians of the rounds' busy fractions, gaps pooled."""
    from benchmarks.pipeline_time import service_request

    rounds = 1 if ctx.quick else 3
    fig = "4 duty cycle"
    for label, steps, n in DUTY_CASES:
        n = min(n, ctx.sizes.duty_tasks)
        pipe = percentile(service_request("sleep", 3, steps, None, SLEEP_STEP_S)["seconds"], 50) or 0.0
        runs: dict[str, list[dict]] = {name: [] for name in apps}
        for r in range(rounds):
            order = list(apps) if r % 2 == 0 else list(reversed(apps))
            for name in order:
                runs[name].append(duty_run(apps[name], n, steps, pipe))
        for name, results in runs.items():
            key = f"duty_{steps}steps_{name}"
            gaps = [g for run in results for g in run["gaps"]]
            busy = ctx.put(f"{key}_cycle_pct", 100.0 * (percentile([run["busy"] for run in results], 50) or 0.0))
            ctx.put(f"{key}_gap_p50_ms", summary_ms(gaps)["p50"])
            ctx.put(f"{key}_gap_p99_ms", summary_ms(gaps)["p99"])
            finish = [g for run in results for g in run["finish_gaps"]]
            ctx.put(f"{key}_completed_to_next_started_p50_ms", summary_ms(finish)["p50"])
            device = {
                part: summary_ms([g for run in results for g in run[f"device_{part}"]])
                for part in ("idle", "done_to_released", "released_to_acquired", "late", "generation")
            }
            for part, summary in device.items():
                ctx.put(f"{key}_device_{part}_p50_ms", summary["p50"])
                ctx.put(f"{key}_device_{part}_p99_ms", summary["p99"])
            late = sum(g > 0 for run in results for g in run["device_late"])
            ctx.put(f"{key}_device_late_count", late)
            occupied = ctx.put(
                f"{key}_device_busy_pct", 100.0 * (percentile([run["device_busy"] for run in results], 50) or 0.0)
            )
            goal = 95.0 if steps == 25 else 98.0
            ctx.row(
                fig,
                f"{label} tasks ({n} queued, 1 replica), {name}: busy / gap",
                f"{fmt(busy, '%')}; gap p50 {fmt(ctx.results[f'{key}_gap_p50_ms'], 'ms')},"
                f" p99 {fmt(ctx.results[f'{key}_gap_p99_ms'], 'ms')}; completed→next started p50"
                f" {fmt(ctx.results[f'{key}_completed_to_next_started_p50_ms'], 'ms')} ({rounds} rounds)",
                *((f"≥ {goal:.0f} %, gap p99 < 20 ms", busy >= goal) if name == "after" else ()),
            )
            ctx.row(
                fig,
                f"  {name}, the replica's own clock: device busy; idle p50 / p99",
                f"{fmt(occupied, '%')}; {fmt(device['idle']['p50'], 'ms')} / {fmt(device['idle']['p99'], 'ms')}"
                f" (thread done→lock released p50 {fmt(device['done_to_released']['p50'], 'ms')},"
                f" released→next acquired p50 {fmt(device['released_to_acquired']['p50'], 'ms')});"
                f" generation p50 {fmt(device['generation']['p50'], 'ms')} vs {fmt(pipe * 1000, 'ms')} alone;"
                f" next request not yet on the replica {late}×",
            )
            if steps == 25 and name == "after":  # the figure's earlier keys
                ctx.put("duty_gap_p50_ms", ctx.results[f"{key}_gap_p50_ms"])
                ctx.put("duty_gap_p99_ms", ctx.results[f"{key}_gap_p99_ms"])
                ctx.put("duty_cycle_pct", busy)


def figure_overhead_compare(ctx: Context, apps: dict[str, App]) -> None:
    """The sleep profile's overhead per task for each of ``apps``, one sync request of each in
    turn; keys ``overhead_sleep_*`` (after) and ``overhead_sleep_before_*``."""
    warmup = 0 if ctx.quick else 1
    runs: dict[str, list[dict]] = {name: [] for name in apps}
    for n in range(ctx.sizes.overhead_runs + warmup):
        for name in apps if n % 2 == 0 else reversed(apps):
            run = sync_request(apps[name])
            if n >= warmup:
                runs[name].append(run)
    for name, results in runs.items():
        put_overhead(ctx, "overhead_sleep" if name == "after" else f"overhead_sleep_{name}", results)


# ---------------------------------------------------------------------------------------------
# Figure 5: the tiny pipeline


class TinyPipelineRun:
    """The tiny-pipeline figure in its own process: ``benchmarks/tiny_pipeline.py --json`` for the
    full figure; its functions at a few steps (``pipeline_time tiny-cases``) with ``--quick``,
    where it runs beside the service's start-up to save time (a smoke test, not a figure)."""

    def __init__(self, ctx: Context, cache_dir: Path):
        s = ctx.sizes
        self.ctx = ctx
        self.path = ctx.root / "tiny_pipeline.json"
        if ctx.quick:
            args = [
                "-m",
                "benchmarks.pipeline_time",
                "tiny-cases",
                "--runs",
                str(s.tiny_runs),
                "--steps",
                str(s.tiny_steps),
                "--cache-dir",
                str(cache_dir),
            ]
        else:
            args = [
                str(REPO / "benchmarks" / "tiny_pipeline.py"),
                "--runs",
                str(s.tiny_runs),
                "--json",
                str(self.path),
                "--cache-dir",
                str(cache_dir),
            ]
        # The process's output, read when it ends (closed then).
        self._out = tempfile.TemporaryFile()  # noqa: SIM115
        self._err = tempfile.TemporaryFile()  # noqa: SIM115
        env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
        self.proc = subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=self._out, stderr=self._err)
        from benchmarks.meter import HELPER_PIDS

        HELPER_PIDS.add(self.proc.pid)

    def finish(self, timeout: float = 900) -> None:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
            raise
        self._out.seek(0)
        self._err.seek(0)
        if code != 0:
            raise RuntimeError(f"tiny pipeline figure failed ({code}): {self._err.read().decode()[-2000:]}")
        if self.ctx.quick:
            out = json.loads(self._out.read().decode().strip().splitlines()[-1])
        else:
            out = json.loads(self.path.read_text())
        s = self.ctx.sizes
        fig = "5 tiny pipeline"
        labels = {
            "tiny_t2i_1024_s": "text-to-image 1024²",
            "tiny_edit_1img_s": "edit, 1 input 1024²",
            "tiny_edit_2img_s": "edit, 2 inputs 1024²",
        }
        for key, label in labels.items():
            value = out.get(key)
            self.ctx.put(key, value)
            self.ctx.row(fig, f"{label}, {s.tiny_steps} steps, true CFG", fmt(value, "s/image", 2))


# ---------------------------------------------------------------------------------------------
# Figure 6: scale by simulation


def scale_app_args(step_s: float) -> dict[str, Any]:
    return {
        "model_profile": "sleep",
        "sleep_seconds_per_step": step_s,
        "model_num_gpus": 1,
        "model_num_cpus": 0.1,
        "enabled_models": ["text_to_image"],
    }


# Tasks per second the simulation offers at most: beyond SCALE_RATE_REPLICAS replicas, tasks get
# longer instead of more frequent. 8 one-second tasks per second (as many as 96 GPUs at 12 s per
# image) is what this 2-core machine carries through the whole HTTP path with the load generator
# on the same cores; what one registry carries alone is `python -m benchmarks.registry`.
SCALE_RATE_REPLICAS = 8


def figure_scale(ctx: Context) -> None:
    s = ctx.sizes
    cluster = ctx.cluster
    fig = "6 scale by simulation"
    base_efficiency = None
    for n in s.scale_ns:
        step_s = s.scale_step_s * max(1.0, n / SCALE_RATE_REPLICAS)
        task_s = 20 * step_s
        # At least 6 tasks per replica: with fewer, the ramp-up of submissions weighs on the ratio.
        tasks = max(s.scale_tasks, 6 * n)
        ctx.log(f"  throughput: {n} replica(s) on {n} logical GPU(s), {tasks} tasks of {task_s:.2f} s")
        app = cluster.deploy(f"scale{n}", {**scale_app_args(step_s), "model_replicas": n}, route_prefix=f"/scale{n}")
        try:
            app.sign_up()
            warm_up(app)
            form = {"prompt": "a lighthouse at dusk", "num_inference_steps": "20", "async_mode": "true"}
            with CpuMeter() as meter:
                r = load(
                    app.base_url + "/text-to-image",
                    min(16, tasks),
                    120,
                    max_requests=tasks,
                    headers=app.headers,
                    method="POST",
                    form=form,
                    expect="202",
                    warmup=0,
                )
                if r["ok"] != tasks:
                    ctx.notes.append(f"scale N={n}: {r['ok']} of {tasks} submissions accepted: {r['statuses']}")
                wait_all_finished(app, 60 + tasks * task_s * 2)
            rows = [row for row in app.task_rows() if row["status"] == "completed"][1:]  # not the warm-up
            first = min(row["created_at"] for row in rows)
            last = max(row["completed_at"] for row in rows)
            per_min = 60.0 * len(rows) / (last - first)
            # How much of the N replicas' time went to tasks (started..completed) over the span.
            busy = sum(row["completed_at"] - row["started_at"] for row in rows) / (n * (last - first))
        finally:
            cluster.remove(app)
        ideal = 60.0 * n / task_s
        efficiency = per_min / ideal  # of N replicas' ideal throughput
        base_efficiency = base_efficiency or efficiency
        ctx.put(f"scale_n{n}_tasks_per_min", per_min)
        ctx.put(f"scale_n{n}_task_s", task_s)
        ctx.put(f"scale_n{n}_ideal_tasks_per_min", ideal)
        ctx.put(f"scale_n{n}_submit_s", r["wall_s"])
        ctx.put(f"scale_n{n}_replica_busy_pct", 100.0 * busy)
        ctx.put(f"scale_n{n}_service_cpu_pct_of_core", meter.use.pct(meter.use.service_s))
        ctx.put(f"scale_n{n}_service_cpu_ms_per_task", 1000.0 * meter.use.service_s / max(len(rows), 1))
        ctx.put(f"scale_n{n}_service_cpu_s_by_process", meter.use.by_title)
        ctx.put(f"scale_n{n}_other_processes_cpu_pct_of_core", meter.use.pct(meter.use.others_s))
        # N times N=1's throughput, for tasks of the same length (N=1's efficiency times N's ideal).
        linear = efficiency / base_efficiency
        ctx.put(f"scale_n{n}_vs_linear_ratio", linear)
        ok = linear >= 0.95 if n > 1 else None
        ctx.row(
            fig,
            f"{n} replica(s): tasks/min ({tasks} tasks × {task_s:.2f} s)",
            f"{fmt(per_min, '', 1)} (ideal {fmt(ideal, '', 0)}); ×{fmt(linear, '', 2)} of {n}×N=1; "
            f"replicas busy {fmt(100.0 * busy, '%', 0)}; service CPU {fmt(meter.use.pct(meter.use.service_s), '%', 0)}"
            f" of a core",
            "≥ 0.95·N×" if n > 1 else "",
            ok,
        )


def warm_up(app: App) -> None:
    """One task through the whole path first: the registry's first call to a model deployment
    sets up its handle (about half a second), which is start-up, not throughput."""
    app.wait_task(app.submit().json()["task_id"], timeout=120)


def figure_autoscale_all(ctx: Context) -> None:
    for n in ctx.sizes.autoscale_ns:
        figure_autoscale(ctx, n)


def figure_autoscale(ctx: Context, n: int) -> None:
    """From 1 to ``n`` replicas under a queue, and back to 1 after it drains."""
    s = ctx.sizes
    cluster = ctx.cluster
    step = s.autoscale_task_step_s
    tasks = 6 + 3 * n
    upscale_delay, downscale_delay, look_back = 1.0, 5.0, 5.0
    name = f"auto{n}"
    ctx.log(
        f"  autoscaling 1→{n}→1: {tasks} tasks of {20 * step:.1f} s, upscale/downscale delay "
        f"{upscale_delay:.0f}/{downscale_delay:.0f} s, look-back {look_back:.0f} s"
    )
    app = cluster.deploy(
        name,
        {
            **scale_app_args(step),
            "model_min_replicas": 1,
            "model_max_replicas": n,
            "upscale_delay_s": upscale_delay,
            "downscale_delay_s": downscale_delay,
            "look_back_period_s": look_back,
        },
        route_prefix=f"/{name}",
    )
    up_s = first_new_s = down_s = None
    try:
        app.sign_up()
        warm_up(app)
        started = time.monotonic()
        submit_many(app, tasks, concurrency=8)
        deadline = started + s.autoscale_up_bound_s
        while time.monotonic() < deadline:
            counts = cluster.replica_counts(name, "TextToImage")
            if first_new_s is None and sum(counts.values()) > 1:
                first_new_s = time.monotonic() - started
            if counts.get("RUNNING", 0) >= n:
                up_s = time.monotonic() - started
                break
            time.sleep(0.1)
        wait_all_finished(app, 60 + tasks * 20 * step * 2)
        drained = max(r["completed_at"] for r in app.task_rows())
        deadline = time.monotonic() + s.autoscale_down_bound_s
        while first_new_s is not None and time.monotonic() < deadline:
            counts = cluster.replica_counts(name, "TextToImage")
            if counts == {"RUNNING": 1}:
                down_s = time.time() - drained
                break
            time.sleep(0.1)
    finally:
        cluster.remove(app)
    ctx.put(f"autoscale_n{n}_first_new_replica_s", first_new_s)
    ctx.put(f"autoscale_n{n}_up_s", up_s)
    ctx.put(f"autoscale_n{n}_down_s", down_s)
    ctx.put(f"autoscale_n{n}_upscale_delay_s", upscale_delay)
    ctx.put(f"autoscale_n{n}_downscale_delay_s", downscale_delay)
    ctx.row(
        "6 scale by simulation",
        f"autoscale 1→{n}: first new replica / all {n} running",
        f"{fmt(first_new_s, 's')} / {fmt(up_s, 's') if up_s else f'not within {s.autoscale_up_bound_s:.0f} s'}"
        f" (upscale_delay_s {upscale_delay:.0f})",
    )
    if first_new_s is None:
        down_text = "n/a (never scaled up)"
    elif down_s is None:
        down_text = f"not within {s.autoscale_down_bound_s:.0f} s"
    else:
        down_text = fmt(down_s, "s")
    ctx.row(
        "6 scale by simulation",
        f"autoscale {n}→1 after the queue drained",
        f"{down_text} (downscale_delay_s {downscale_delay:.0f}, look_back_period_s {look_back:.0f})",
    )


# ---------------------------------------------------------------------------------------------
# Figure 7: memory


_title = process_title


def memory_snapshot() -> list[dict]:
    out = []
    for p in service_processes():
        try:
            full = p.memory_full_info()
            out.append(
                {
                    "pid": p.pid,
                    "title": _title(p),
                    "rss": full.rss,
                    "pss": getattr(full, "pss", full.rss),
                    "uss": full.uss,
                }
            )
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return out


def replica_process(app_name: str, deployment: str) -> Optional[psutil.Process]:
    for p in service_processes():
        if _title(p) == f"ray::ServeReplica:{app_name}:{deployment}":
            return p
    return None


def peak_rss(p: psutil.Process) -> Optional[int]:
    try:
        for line in Path(f"/proc/{p.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


def figure_memory_idle(ctx: Context, app: App) -> None:
    time.sleep(1 if ctx.quick else 3)  # let start-up settle
    snap = memory_snapshot()
    mib = 1024 * 1024
    ctx.put("memory_service_rss_mib", sum(p["rss"] for p in snap) / mib)
    ctx.put("memory_service_pss_mib", sum(p["pss"] for p in snap) / mib)
    ctx.put("memory_service_processes", len(snap))
    ctx.put("memory_driver_rss_mib", psutil.Process().memory_info().rss / mib)
    by_title: dict[str, float] = {}
    for p in snap:
        by_title[p["title"]] = by_title.get(p["title"], 0) + p["rss"] / mib
    ctx.put("memory_by_process_rss_mib", dict(sorted(by_title.items(), key=lambda kv: -kv[1])))
    replica = replica_process(app.name, "TextToImage")
    rss = replica.memory_info().rss / mib if replica else None
    ctx.put("memory_tiny_replica_idle_rss_mib", rss)
    fig = "7 memory"
    ctx.row(
        fig,
        f"whole service at idle (tiny profile, {len(snap)} Ray processes)",
        f"RSS {fmt(ctx.results['memory_service_rss_mib'], 'MiB', 0)},"
        f" PSS {fmt(ctx.results['memory_service_pss_mib'], 'MiB', 0)}"
        f" (+ launcher process {fmt(ctx.results['memory_driver_rss_mib'], 'MiB', 0)})",
    )
    ctx.row(fig, "one tiny TextToImage replica, idle after start", fmt(rss, "MiB RSS", 0))


def figure_memory_after(ctx: Context, app: App) -> None:
    replica = replica_process(app.name, "TextToImage")
    if replica is None:
        return
    mib = 1024 * 1024
    ctx.put("memory_tiny_replica_after_rss_mib", replica.memory_info().rss / mib)
    hwm = peak_rss(replica)
    ctx.put("memory_tiny_replica_peak_rss_mib", hwm / mib if hwm else None)
    ctx.row(
        "7 memory",
        "one tiny TextToImage replica after 1024² generations",
        f"RSS {fmt(ctx.results['memory_tiny_replica_after_rss_mib'], 'MiB', 0)}, "
        f"peak {fmt(ctx.results['memory_tiny_replica_peak_rss_mib'], 'MiB', 0)}",
    )
