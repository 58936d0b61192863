"""The ``events`` figure: live events and webhooks.

- progress-event lag: registry publish → client, p50/p95, read from the event id (the registry's
  clock, microseconds) against the client's clock on the same machine. The replica → registry hop
  before it is one actor call (``registry_call_ms``, measured beside it);
- CPU of the ingress and the registry (and the proxy, shown apart) with 1,000 open streams on
  queued tasks, against the same queue with no stream open; goal < 10 % of a core;
- webhook delivery lag: a task's completion (the payload's ``timestamp``) → the local receiver,
  p50; goal < 100 ms;
- what a preview costs a tiny-profile step (``benchmarks/preview_cost.py``); goal < 2 %.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import httpx

from benchmarks.figures import Context, fmt, run_json, submit_many
from benchmarks.meter import CpuMeter
from benchmarks.service import python_module
from benchmarks.stats import percentile

STREAMS = 1000
HOLD_S = 20.0


def _parse_sse(response: httpx.Response):
    fields: dict[str, str] = {}
    for line in response.iter_lines():
        if line == "":
            if "event" in fields:
                yield int(fields["id"]), fields["event"], json.loads(fields.get("data", "{}")), time.time()
            fields = {}
        elif not line.startswith(":"):
            name, _, value = line.partition(":")
            fields[name] = value.lstrip(" ")


def progress_lag(ctx: Context, app, tasks: int) -> None:
    lags: list[float] = []
    for _ in range(tasks):
        task_id = app.submit(steps=40).json()["task_id"]
        with app.client.stream("GET", f"/tasks/{task_id}/events", headers=app.headers, timeout=120) as response:
            for event_id, name, _, received in _parse_sse(response):
                if name == "progress":
                    lags.append((received - event_id / 1e6) * 1000)
                if name in ("completed", "failed", "cancelled"):
                    break
    p50, p95 = percentile(lags, 50), percentile(lags, 95)
    ctx.put("events_progress_lag_p50_ms", p50)
    ctx.put("events_progress_lag_p95_ms", p95)
    ctx.put("events_progress_samples", len(lags))
    ctx.row(
        "events",
        "progress event lag, registry → client, p50 / p95",
        f"{fmt(p50, 'ms')} / {fmt(p95, 'ms')} ({len(lags)} events)",
    )


def registry_call_ms(app_name: str, calls: int = 50) -> float:
    import ray

    from serving.registry.ids import NAMESPACE, registry_name

    registry = ray.get_actor(registry_name(app_name), namespace=NAMESPACE)
    ray.get(registry.ping.remote())
    started = time.perf_counter()
    for _ in range(calls):
        ray.get(registry.ping.remote())
    return (time.perf_counter() - started) / calls * 1000


class _Receiver:
    """Webhook receiver on 127.0.0.1: records when each payload arrived."""

    def __init__(self) -> None:
        self.arrivals: list[tuple[float, dict]] = []
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_POST(self):
                received = time.time()
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                outer.arrivals.append((received, json.loads(body)))
                self.send_response(204)
                self.end_headers()

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def webhook_lag(ctx: Context, app, tasks: int) -> None:
    receiver = _Receiver()
    try:
        submit_many(app, tasks, concurrency=2, webhook_url=receiver.url)
        deadline = time.monotonic() + 120
        while len(receiver.arrivals) < tasks and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        receiver.close()
    lags = [
        (received - datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp()) * 1000
        for received, p in receiver.arrivals
    ]
    p50 = percentile(lags, 50)
    ctx.put("webhook_delivery_lag_p50_ms", p50)
    ctx.put("webhook_delivery_lag_p95_ms", percentile(lags, 95))
    ctx.put("webhook_deliveries", len(lags))
    ctx.row(
        "events",
        "webhook delivery lag, completion → receiver, p50",
        f"{fmt(p50, 'ms')} ({len(lags)} tasks)",
        "< 100 ms",
        p50 is not None and p50 < 100,
    )


def _service_split(use) -> dict[str, float]:
    split = {"ingress": 0.0, "registry": 0.0, "proxy": 0.0}
    for title, seconds in use.by_title.items():
        if "Ingress" in title:
            split["ingress"] += seconds
        elif "TaskRegistry" in title:
            split["registry"] += seconds
        elif "Proxy" in title:
            split["proxy"] += seconds
    return {k: use.pct(v) or 0.0 for k, v in split.items()}


def streams_cpu(ctx: Context, cluster, streams: int, hold_s: float) -> None:
    app = cluster.deploy(
        "streams",
        {
            "model_profile": "sleep",
            "sleep_seconds_per_step": 2.0,
            "model_num_gpus": 0,
            "model_replicas": 1,
            "model_num_cpus": 0.1,
            "max_event_streams_per_user": streams + 10,
            "max_event_streams_per_address": streams + 10,
            "max_event_streams": streams + 10,
        },
    )
    blockers: list[str] = []
    ids: list[str] = []
    try:
        app.sign_up()
        # Two long tasks fill the replica (one running, one waiting on it); the rest stay queued.
        blockers = submit_many(app, 2, concurrency=2, num_inference_steps=100)
        ids = submit_many(app, streams, concurrency=8)
        time.sleep(2.0)
        with CpuMeter() as quiet:
            time.sleep(hold_s / 2)
        idle = _service_split(quiet.use)
        id_file = ctx.root / "stream_task_ids.txt"
        id_file.write_text("\n".join(ids) + "\n")
        os.environ["BENCH_TOKEN"] = app.token  # python_module passes the environment on
        try:
            holder = python_module(
                "benchmarks.streams",
                "--url",
                app.base_url,
                "--hold",
                str(hold_s),
                "--ids",
                str(id_file),
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        finally:
            os.environ.pop("BENCH_TOKEN", None)
        ready = holder.stdout.readline().decode().split()
        opened = int(ready[1]) if len(ready) == 2 else 0
        time.sleep(1.0)
        with CpuMeter(exclude=[holder.pid]) as meter:
            time.sleep(hold_s - 3.0)
        out, err = holder.communicate(timeout=120)
        summary = json.loads(out.decode().strip().splitlines()[-1]) if out.strip() else {"error": err.decode()[-500:]}
        held = _service_split(meter.use)
        both = held["ingress"] + held["registry"]
        ctx.put("streams_open", opened)
        ctx.put("streams_holder", summary)
        ctx.put("streams_queued_only_cpu_pct_of_core", idle)
        ctx.put("streams_cpu_pct_of_core", held)
        ctx.put("streams_ingress_registry_cpu_pct_of_core", both)
        ctx.put("streams_by_process_cpu_s", meter.use.by_title)
        ctx.row(
            "events",
            f"CPU with {opened} open streams on queued tasks: ingress + registry",
            f"{fmt(both, '% of a core')} (without streams {fmt(idle['ingress'] + idle['registry'], '%')}; "
            f"proxy {fmt(held['proxy'], '%')} vs {fmt(idle['proxy'], '%')})",
            "< 10 % of a core",
            both < 10,
        )
        if opened < streams:
            ctx.notes.append(f"events: only {opened} of {streams} streams opened: {summary}")
    finally:
        # The queue would keep the replica busy for minutes: cancel it before the app goes.
        for task_id in blockers + ids:
            app.client.delete(f"/tasks/{task_id}", headers=app.headers, timeout=30)
        try:
            cluster.remove(app)
        except TimeoutError as exc:
            ctx.notes.append(f"events: removing the streams app: {exc}")


def preview_cost(ctx: Context, cache_dir) -> None:
    result = run_json(
        "benchmarks.preview_cost", "--runs", "1" if ctx.quick else "2", "--cache-dir", str(cache_dir), timeout=900
    )
    for key, value in result.items():
        ctx.put(key, value)
    pct = result["preview_critical_path_pct_of_step"]
    ctx.row(
        "events",
        "preview on the step's critical path, tiny 1024²",
        f"{fmt(result['preview_critical_path_ms'], 'ms', 2)} = {fmt(pct, '% of a step', 2)} "
        f"({result['preview_size'][0]}x{result['preview_size'][1]}, {result['preview_bytes_median']:.0f} B)",
        "< 2 %",
        pct < 2,
    )
    ctx.row(
        "events",
        "tiny step with a preview every step (CPU: encoder shares the cores)",
        f"{fmt(result['step_ms_with_preview_every_step'], 'ms')} vs {fmt(result['step_ms'], 'ms')}",
    )
    ctx.row(
        "events",
        "/v1 partial image: a VAE decode at 1024² on the critical path (tiny)",
        f"{fmt(result['partial_decode_ms'], 'ms')} = {fmt(result['partial_decode_pct_of_step'], '% of a step', 1)}; "
        f"a 20-step run {fmt(result['run_s_with_3_partials'], 's', 2)} with 3 vs {fmt(result['run_s'], 's', 2)}",
    )


def figure_events(ctx: Context, cache_dir) -> None:
    cluster = ctx.cluster
    app = cluster.deploy(
        "events",
        {
            "model_profile": "sleep",
            "sleep_seconds_per_step": 0.05,
            "model_num_gpus": 0,
            "model_replicas": 1,
            "model_num_cpus": 0.1,
            "webhook_allow_private_networks": True,
        },
    )
    try:
        app.sign_up()
        progress_lag(ctx, app, 2 if ctx.quick else 5)
        call = registry_call_ms("events")
        ctx.put("registry_call_ms", call)
        ctx.row("events", "replica → registry hop (one actor call)", fmt(call, "ms", 2))
        webhook_lag(ctx, app, 4 if ctx.quick else 20)
    finally:
        cluster.remove(app)
    preview_cost(ctx, cache_dir)
    streams_cpu(ctx, cluster, 50 if ctx.quick else STREAMS, 6.0 if ctx.quick else HOLD_S)


__all__ = ["figure_events"]
