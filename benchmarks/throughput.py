"""Tasks per minute and mean queue wait with 20 concurrent submitters, tiny profile.

    python -m benchmarks.throughput [--tasks 60] [--submitters 20] [--json PATH]

One CPU replica per model (as ``make run`` has it); every submitter posts async text-to-image
tasks (1024², 20 steps, true CFG) until the total is reached, then the run waits for all of them.
Figures come from the task records: throughput between the first submission and the last
completion, queue wait = started_at − created_at.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from benchmarks.service import Cluster, wait_until


def run(tasks: int, submitters: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory(prefix="qis-throughput-") as root:
        cluster = Cluster(Path(root), num_gpus=0)
        try:
            app = cluster.deploy(
                "throughput",
                {
                    "model_profile": "tiny",
                    "model_num_gpus": 0,
                    "model_replicas": 1,
                    "model_num_cpus": 0.25,
                    "enabled_models": ["text_to_image"],
                },
            )
            app.sign_up()
            app.submit(steps=20, async_mode=False)  # warm-up, not counted
            warm = len(app.task_rows())
            with ThreadPoolExecutor(submitters) as pool:
                codes = list(pool.map(lambda _: app.submit(steps=20).status_code, range(tasks)))
            assert codes.count(202) == tasks, codes
            wait_until(
                lambda: app.count_unfinished() == 0, timeout=60 + tasks * 20, interval=0.5, what="every task to finish"
            )
            rows = app.task_rows()[warm:]
        finally:
            cluster.shutdown()
    span = max(r["completed_at"] for r in rows) - min(r["created_at"] for r in rows)
    waits = [r["started_at"] - r["created_at"] for r in rows if r["started_at"]]
    return {
        "tiny_throughput_tasks": len(rows),
        "tiny_throughput_submitters": submitters,
        "tiny_throughput_completed": sum(r["status"] == "completed" for r in rows),
        "tiny_throughput_tasks_per_min": round(len(rows) / span * 60, 1),
        "tiny_queue_wait_mean_s": round(statistics.mean(waits), 2),
        "tiny_queue_wait_max_s": round(max(waits), 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=60)
    parser.add_argument("--submitters", type=int, default=20)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()
    started = time.perf_counter()
    figures = run(args.tasks, args.submitters)
    for key, value in figures.items():
        print(f"{key:34s} {value}")
    print(f"(took {time.perf_counter() - started:.0f} s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))


if __name__ == "__main__":
    main()
