"""``python -m benchmarks.registry``: what one task registry can carry, measured on the registry core
alone (no Ray, no HTTP), with its real database writes.

A stand-in model handle answers every request at once, going through what a replica does: it
reports the start (``mark_running``, a database write), one progress step, and returns a generated
image key; the registry then records the completion (another write). So a life cycle here is
create (quota check + insert) → dispatch → started → progress → completed, on one event loop and
one core, exactly the work the registry actor does per task.

Figures:
  life cycles/s   tasks created and driven to completion, 64 in flight, by fresh users
  … heavy user    the same, every task from one user with ``--history`` finished tasks on record
  status reads/s  ``status(task_id)`` of finished tasks held in memory
  GPUs fed        life cycles/s × 12 s per image: how many GPUs one registry keeps busy
  memory          the process's RSS above idle after ``--memory-tasks`` more finished tasks (finished
                  tasks leave the registry's memory beyond ``FINISHED_TASKS_IN_MEMORY``), and how many
                  tasks it still holds

``--database postgresql`` runs the same against a throw-away PostgreSQL server (Debian's binaries,
as the test suites start it). Prints a table; ``--json PATH`` writes the figures too.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, Optional

from sqlalchemy import insert

from models.kinds import ModelKind
from serving.protocol import Generated, GenerationParameters, ModelRequest, TaskSpec
from serving.registry.core import RegistryCore
from storage import TaskRecord, session_scope, utcnow
from storage.tables import User
from storage.usage import add_usage

SECONDS_PER_IMAGE = 12.0
IN_FLIGHT = 64


class _Call:
    """``handle.run.remote(request)``: an awaitable that plays a replica which answers at once."""

    def __init__(self, core: RegistryCore):
        self.core = core

    def remote(self, request: ModelRequest):
        return asyncio.ensure_future(self._replica(request))

    async def _replica(self, request: ModelRequest) -> Generated:
        if not await self.core.mark_running(*request.stamp):
            raise RuntimeError("told to skip")
        await self.core.report_progress(*request.stamp, request.index, 1)
        return Generated(
            index=request.index, keys=[request.output_key or f"results/{request.task_id}/x.png"], seed=1, seconds=0.0
        )


@dataclass
class StandInHandle:
    run: _Call


def rss_bytes() -> int:
    with open(f"/proc/{os.getpid()}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def make_core(database_url: str, data_dir: Path) -> RegistryCore:
    settings = {
        "data_dir": str(data_dir),
        "database_url": database_url,
        "cleanup_interval_seconds": 0,
        "max_queue_size": 1_000_000,
        "default_daily_limit": 10**9,
        "default_monthly_limit": 10**9,
        # One user submits every task here: the per-user pending cap would refuse most of them.
        "max_pending_per_user": 1_000_000,
    }
    core = RegistryCore("bench", settings, "bench")
    for kind in ModelKind:
        core._handles[kind] = StandInHandle(_Call(core))
    return core


def add_users(core: RegistryCore, count: int) -> list[int]:
    with session_scope(core.engine) as session:
        users = [User(username=f"bench-{uuid.uuid4().hex[:12]}", hashed_password="x") for _ in range(count)]
        session.add_all(users)
        session.flush()
        return [u.id for u in users]


def add_history(core: RegistryCore, user_id: int, count: int) -> None:
    """``count`` completed tasks of ``user_id`` spread over the last 20 days, inserted in bulk."""
    now = utcnow()
    batch = 20_000
    for start in range(0, count, batch):
        rows = [
            dict(
                task_id=str(uuid.uuid4()),
                user_id=user_id,
                task_type="text_to_image",
                prompt="p",
                parameters={"num_inference_steps": 20},
                image_count=1,
                status="completed",
                created_at=now - timedelta(seconds=(start + i) * 17 % (20 * 86400)),
                input_keys=[],
            )
            for i in range(min(batch, count - start))
        ]
        with session_scope(core.engine) as session:
            session.exec(insert(TaskRecord), params=rows)
            # Counted in the quota's usage counters, as the registry counts the tasks it creates.
            add_usage(session, [(user_id, row["created_at"], row["image_count"]) for row in rows])


def spec(user_id: int) -> TaskSpec:
    return TaskSpec(
        task_id=str(uuid.uuid4()),
        user_id=user_id,
        task_type="text_to_image",
        kind=ModelKind.text_to_image,
        parameters=GenerationParameters(kind=ModelKind.text_to_image, prompt="p", num_inference_steps=20, seed=1),
        image_count=1,
    )


async def life_cycles(core: RegistryCore, users: list[int], count: int) -> tuple[float, list[str]]:
    """Tasks per second created and completed with ``IN_FLIGHT`` at a time; returns their ids too."""
    ids: list[str] = []
    numbers = iter(range(count))

    async def submitter() -> None:
        # IN_FLIGHT of these, each one task at a time: the driver itself holds no more than that
        # (100,000 waiting coroutines would weigh more than the registry being measured).
        for n in numbers:
            answer = await core.create(spec(users[n % len(users)]))
            task = core.tasks[answer.task_id]
            await task.done.wait()
            assert task.status == "completed", task.status
            if len(ids) < 1000:
                ids.append(task.task_id)

    started = time.perf_counter()
    await asyncio.gather(*(submitter() for _ in range(IN_FLIGHT)))
    return count / (time.perf_counter() - started), ids


async def status_reads(core: RegistryCore, ids: list[str], seconds: float = 2.0) -> float:
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        for task_id in ids[:1000]:
            assert await core.status(task_id) is not None
        done += min(len(ids), 1000)
    return done / (time.perf_counter() - started)


async def measure(database_url: str, data_dir: Path, tasks: int, history: int, memory_tasks: int) -> dict[str, Any]:
    core = make_core(database_url, data_dir)
    await core.start()
    users = add_users(core, 32)
    figures: dict[str, Any] = {}
    await life_cycles(core, users, 200)  # warm-up: connections, caches
    gc.collect()
    idle = rss_bytes()
    figures["life_cycles_per_s"], ids = await life_cycles(core, users, tasks)
    figures["status_reads_per_s"] = await status_reads(core, ids)
    if history:
        [heavy] = add_users(core, 1)
        add_history(core, heavy, history)
        figures["history"] = history
        figures["life_cycles_per_s_heavy_user"], _ = await life_cycles(core, [heavy], max(tasks // 10, 100))
    figures["gpus_fed_at_12s_per_image"] = int(figures["life_cycles_per_s"] * SECONDS_PER_IMAGE)
    if "life_cycles_per_s_heavy_user" in figures:
        figures["gpus_fed_heavy_user"] = int(figures["life_cycles_per_s_heavy_user"] * SECONDS_PER_IMAGE)
    if memory_tasks:
        await life_cycles(core, users, memory_tasks)
        gc.collect()
        figures["memory_tasks"] = memory_tasks
        figures["registry_rss_mib_above_idle"] = round((rss_bytes() - idle) / 2**20, 1)
        figures["tasks_held_in_memory"] = len(core.tasks)
    core.engine.dispose()
    return figures


def postgres_url() -> tuple[str, Any]:
    from tests.pg import PostgresServer, find_server_bindir

    bindir = find_server_bindir()
    if bindir is None:
        raise SystemExit("no PostgreSQL server binaries (apt-get install postgresql)")
    import pwd

    server = PostgresServer(bindir, pwd.getpwnam("postgres") if os.geteuid() == 0 else None).start()
    return server.url(), server


def main(argv: Optional[list[str]] = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.registry", description=__doc__.splitlines()[0])
    parser.add_argument("--database", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--tasks", type=int, default=3000, help="life cycles measured")
    parser.add_argument("--history", type=int, default=100_000, help="finished tasks of the heavy user (0: skip)")
    parser.add_argument("--memory-tasks", type=int, default=100_000, help="finished tasks for the memory figure")
    parser.add_argument("--json", type=Path)
    options = parser.parse_args(argv)
    server = None
    with tempfile.TemporaryDirectory(prefix="registry-bench-") as tmp:
        if options.database == "postgresql":
            url, server = postgres_url()
        else:
            url = f"sqlite:///{tmp}/bench.db"
        try:
            figures = asyncio.run(measure(url, Path(tmp), options.tasks, options.history, options.memory_tasks))
        finally:
            if server is not None:
                server.stop()
    figures = {"database": options.database, **figures}
    width = max(map(len, figures))
    for name, value in figures.items():
        print(f"{name:<{width}}  {round(value, 1) if isinstance(value, float) else value}")
    if options.json:
        options.json.write_text(json.dumps(figures, indent=2) + "\n")
    return figures


if __name__ == "__main__":
    main()
