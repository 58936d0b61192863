"""``python -m benchmarks`` (``make bench``): the serving layer against its own floor, scaling by
simulation, the tiny pipelines and memory; prints a table and writes a JSON file.

Figures (``--only`` takes their names, comma-separated):

  status    GET /ping, GET /tasks/{id} and the same status read in a plain uvicorn process,
            1 and 32 keep-alive clients
  submit    POST /text-to-image (async) latency, 1 and 32 clients
  overhead  sync request end-to-end minus the pipeline's own time (tiny and sleep profiles)
  duty      idle gap on one model replica between one task's last step and the next's start
  tiny      seconds per 1024x1024 image of the tiny pipelines (benchmarks/tiny_pipeline.py)
  scale     tasks per minute against N logical GPUs / replicas (N = 1, 2, 4, 8, 16)
  autoscale seconds for the autoscaler to go from 1 to N replicas under a queue and back
  memory    RSS of the whole service at idle and of one tiny model replica
  openai    POST /v1/images/generations against the native sync POST /text-to-image, same work
  events    progress-event lag, CPU with 1,000 open event streams, webhook delivery lag, preview cost

Everything runs on this machine: Ray (no dashboard) with logical GPUs, Serve on a free loopback
port, a temporary DATA_DIR per application, load from a separate process. The full run takes
about 10 minutes; ``--quick`` runs every figure for a few seconds (a smoke test, not figures).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from datetime import datetime, timezone
from pathlib import Path
from typing import Optional

FIGURES = ("status", "submit", "overhead", "duty", "tiny", "scale", "autoscale", "memory", "openai", "events")
RESULTS = Path(__file__).resolve().parent / "results"
LOGICAL_GPUS = 16
# A safety net on top of the bounded loops: figures not yet started are skipped past it.
TIME_BUDGET_S = {False: 17 * 60, True: 5 * 60}
# About how long each figure takes in a full run (seconds), start-ups included: what is left of
# the budget after them is all the waiting --wait-quiet may do.
EXPECTED_S = {
    "status": 120,
    "submit": 35,
    "overhead": 70,
    "duty": 15,
    "tiny": 60,
    "scale": 300,
    "autoscale": 170,
    "memory": 15,
    "openai": 30,
    "events": 150,
    "start": 25,
}


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def other_cpu_pct(seconds: float = 2.0) -> float:
    """CPU used by processes outside this benchmark, in % of one core, over ``seconds``."""
    from benchmarks.meter import CpuMeter

    with CpuMeter() as meter:
        time.sleep(seconds)
    return meter.use.pct(meter.use.others_s) or 0.0


def wait_quiet(limit_s: float, threshold_pct: float = 20.0) -> Optional[float]:
    """Wait (at most ``limit_s``) until other processes use less than ``threshold_pct`` of a core."""
    deadline = time.monotonic() + limit_s
    while True:
        busy = other_cpu_pct()
        if busy < threshold_pct or time.monotonic() > deadline:
            return busy
        _log(f"other processes use {busy:.0f}% of a core; waiting for a quieter machine")


def main(argv: Optional[list[str]] = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="\n".join(__doc__.splitlines()[2:]),
    )
    parser.add_argument("--quick", action="store_true", help="a few seconds per figure (smoke test; < 90 s)")
    parser.add_argument("--only", help=f"comma-separated subset of: {', '.join(FIGURES)}")
    parser.add_argument(
        "--output", type=Path, help="JSON file (default benchmarks/results/latest.json, or quick.json with --quick)"
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each figure, wait up to this long for processes outside the benchmark "
        "to leave the CPU alone (a shared machine); all the waiting together stays within "
        "what the 17-minute budget leaves",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    args = parser.parse_args(argv)
    only = FIGURES if not args.only else tuple(n.strip() for n in args.only.split(",") if n.strip())
    unknown = set(only) - set(FIGURES)
    if unknown:
        parser.error(f"unknown figure(s) {sorted(unknown)}; choose from {', '.join(FIGURES)}")
    output = args.output or RESULTS / ("quick.json" if args.quick else "latest.json")

    # Imported here so that --help is instant.
    from benchmarks import figures as f
    from benchmarks.service import Cluster

    began = time.monotonic()
    budget = TIME_BUDGET_S[args.quick]
    root = Path(tempfile.mkdtemp(prefix="qwen-image-bench-"))
    ctx = f.Context(quick=args.quick, root=root, sizes=f.QUICK if args.quick else f.FULL, log=_log)
    failures: list[str] = []
    expected = EXPECTED_S["start"] + sum(EXPECTED_S[name] for name in only)
    waiting = {"left": max(budget - expected, 0) if not args.quick else 30.0}
    if args.wait_quiet > 0:
        waited = time.monotonic()
        quiet = wait_quiet(min(args.wait_quiet, waiting["left"]))
        waiting["left"] = max(waiting["left"] - (time.monotonic() - waited), 0)
    else:
        quiet = other_cpu_pct(1.0)
    ctx.put("other_processes_cpu_pct_at_start", quiet)
    if quiet > 20:
        ctx.notes.append(
            f"processes outside the benchmark used {quiet:.0f}% of a core at the start: figures are pessimistic"
        )

    def step(name: str, fn, *fargs) -> None:
        if time.monotonic() - began > budget:
            ctx.notes.append(f"{name}: skipped, the run's {budget // 60:.0f}-minute budget is spent")
            return
        if args.wait_quiet > 0:
            waited = time.monotonic()
            busy = wait_quiet(min(args.wait_quiet, waiting["left"]))
            waiting["left"] = max(waiting["left"] - (time.monotonic() - waited), 0)
            ctx.results.setdefault("other_processes_cpu_pct_before", {})[name] = round(busy, 1)
        _log(f"[{time.monotonic() - began:5.0f} s] {name}")
        try:
            fn(*fargs)
        except Exception as exc:  # one broken figure must not lose the others
            failures.append(name)
            ctx.notes.append(f"{name} failed: {type(exc).__name__}: {exc}")
            _log(traceback.format_exc())

    # The tiny profile's own cache (built once, like `make run` does), so repeated runs skip building.
    from models.profiles import default_tiny_cache_dir

    cache_dir = Path(default_tiny_cache_dir())
    try:
        # The pipeline alone first, before Ray takes any CPU (with --quick: beside Ray's start).
        tiny_runs: list = []
        if "tiny" in only:
            step("tiny pipeline", lambda: tiny_runs.append(f.TinyPipelineRun(ctx, cache_dir)))
            if tiny_runs and not ctx.quick:
                step("tiny pipeline (results)", tiny_runs.pop().finish)
        if set(only) & {"status", "submit", "overhead", "duty", "scale", "autoscale", "memory", "openai", "events"}:
            _log(f"[{time.monotonic() - began:5.0f} s] starting Ray ({LOGICAL_GPUS} logical GPUs) and Serve")
            ctx.cluster = Cluster(root, num_gpus=LOGICAL_GPUS, log=_log, blocking_delete=not ctx.quick)
            ctx.put("ray_serve_start_s", ctx.cluster.start_seconds)
            try:
                run_cluster_figures(ctx, only, cache_dir, step)
            except Exception as exc:  # e.g. an application that never became healthy
                failures.append("service")
                ctx.notes.append(f"stopped early: {type(exc).__name__}: {exc}")
                _log(traceback.format_exc())
            finally:
                ctx.cluster.shutdown()
        for tiny_run in tiny_runs:
            step("tiny pipeline (results)", tiny_run.finish)
    finally:
        elapsed = time.monotonic() - began
        ctx.put("elapsed_s", elapsed)
        print_table(ctx, elapsed)
        write_json(ctx, output, only, elapsed, failures)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
        else:
            _log(f"data kept in {root}")
    return 1 if failures else 0


def run_cluster_figures(ctx, only, cache_dir: Path, step) -> None:
    from benchmarks import figures as f

    cluster = ctx.cluster
    # The tiny application: the embedded default (both models, on the CPU).
    if "memory" in only or "overhead" in only:
        tiny = cluster.deploy(
            "tiny",
            {
                "model_profile": "tiny",
                "model_num_gpus": 0,
                "model_replicas": 1,
                "model_num_cpus": 0.25,
                "model_cache_dir": str(cache_dir),
            },
        )
        try:
            tiny.sign_up()
            if "memory" in only:
                step("memory at idle", f.figure_memory_idle, ctx, tiny)
            if "overhead" in only:
                step("overhead, tiny profile", f.figure_overhead, ctx, tiny, "tiny")
            elif "memory" in only:
                f.sync_request(tiny)  # the memory figure wants a replica that has generated
            if "openai" in only:
                step("openai api overhead, tiny profile", f.figure_openai, ctx, tiny, "tiny")
            if "memory" in only:
                step("memory after generations", f.figure_memory_after, ctx, tiny)
        finally:
            cluster.remove(tiny)
    # The sleep application: the serving layer with a model that costs no CPU.
    if set(only) & {"status", "submit", "overhead", "duty", "openai"}:
        sleep_args = {
            "model_profile": "sleep",
            "sleep_seconds_per_step": f.SLEEP_STEP_S,
            "model_num_gpus": 0,
            "model_replicas": 1,
            "model_num_cpus": 0.1,
        }
        app = cluster.deploy("serving", sleep_args)
        try:
            app.sign_up()
            ctx.put("service_idle_cpu_pct_of_core", f.idle_service_cpu_pct(0.5 if ctx.quick else 3.0))
            if "status" in only:
                response = app.submit()
                task_id = response.json()["task_id"]
                done = app.wait_task(task_id)
                if done["status"] != "completed":
                    raise RuntimeError(f"the status figure's task ended {done['status']}: {done.get('error')}")
                step("status poll", f.figure_status, ctx, app, task_id)
            if {"duty", "overhead"} & set(only):
                # The replicas as they were, beside today's (same machine, interleaved).
                before = cluster.deploy(
                    "before",
                    {**sleep_args, **f.BEFORE_ARGS},
                    route_prefix="/before",
                )
                before.sign_up()
                pair = {"before": before, "after": app}
                try:
                    if "duty" in only:
                        step("duty cycle, before and after", f.figure_duty_compare, ctx, pair)
                    if "overhead" in only:
                        step("overhead, sleep profile, before and after", f.figure_overhead_compare, ctx, pair)
                finally:
                    cluster.remove(before)
            if "openai" in only:
                step("openai api overhead, sleep profile", f.figure_openai, ctx, app, "sleep")
            # Last on this application: it leaves a long queue behind.
            if "submit" in only:
                step("submission", f.figure_submit, ctx, app)
        finally:
            cluster.remove(app)
    if "overhead" in only:
        try:
            f.overhead_rows(ctx)
        except Exception as exc:  # a figure that failed earlier has left its keys out
            ctx.notes.append(f"overhead rows: {type(exc).__name__}: {exc}")
    if "scale" in only:
        step("scale by simulation", f.figure_scale, ctx)
    if "autoscale" in only:
        step("autoscaling", f.figure_autoscale_all, ctx)
    if "events" in only:
        from benchmarks.events import figure_events

        step("events and webhooks", figure_events, ctx, cache_dir)


def print_table(ctx, elapsed: float) -> None:
    rows = sorted(ctx.rows, key=lambda r: r.figure)  # stable: each figure's rows keep their order
    width = max([len(r.label) for r in rows] + [20])
    current = None
    mode = " (--quick: smoke test, not figures)" if ctx.quick else ""
    print(f"\nQwen Image Service benchmarks{mode}: {elapsed:.0f} s on {os.cpu_count()} cores")
    for r in rows:
        if r.figure != current:
            current = r.figure
            print(f"\n{current}")
        verdict = "" if r.ok is None else ("  ok" if r.ok else "  MISSED")
        goal = f"  [goal {r.goal}]" if r.goal else ""
        print(f"  {r.label:<{width}}  {r.value}{goal}{verdict}")
    if ctx.notes:
        print("\nnotes")
        for note in ctx.notes:
            print(f"  - {note}")
    print()


def write_json(ctx, output: Path, only, elapsed: float, failures: list[str]) -> None:
    from benchmarks.stats import rounded

    try:
        import ray

        ray_version = ray.__version__
    except ImportError:  # pragma: no cover
        ray_version = None
    body = {
        **rounded(ctx.results),
        "meta": {
            "quick": ctx.quick,
            "figures": list(only),
            "failed": failures,
            "elapsed_s": round(elapsed, 1),
            "finished_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "ray": ray_version,
            "load_average": os.getloadavg(),
            "logical_gpus": LOGICAL_GPUS,
        },
        "goals": {
            f"{r.figure}: {r.label}": {"value": r.value, "goal": r.goal, "met": r.ok} for r in ctx.rows if r.goal
        },
        "notes": ctx.notes,
    }
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(body, indent=2, ensure_ascii=False) + "\n")
    _log(f"wrote {output}")


if __name__ == "__main__":
    sys.exit(main())
