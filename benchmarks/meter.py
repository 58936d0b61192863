"""Who used the CPU during a measurement: the service, the load generator, everyone else.

The machine has two cores and the load generator competes with the service for them, so every
load figure reports the generator's own CPU use, the service's CPU per request, and the CPU
that processes outside the benchmark used meanwhile (a busy machine makes every figure worse).
"""

from __future__ import annotations

import os
import resource
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Optional

import psutil


def _busy_seconds() -> float:
    t = psutil.cpu_times()
    return sum(getattr(t, name, 0.0) for name in ("user", "nice", "system", "irq", "softirq", "steal"))


def _cpu(process: psutil.Process) -> float:
    try:
        times = process.cpu_times()
        return times.user + times.system
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


# Processes the benchmark starts beside the service (load generator, plain server, pipeline
# probe): never counted as the service's.
HELPER_PIDS: set[int] = set()


def service_processes(exclude: Iterable[int] = ()) -> list[psutil.Process]:
    """This process's descendants (Ray's processes, started by ``ray.init`` here), minus the
    benchmark's own helper processes and ``exclude``."""
    excluded = set(exclude) | HELPER_PIDS
    return [p for p in psutil.Process(os.getpid()).children(recursive=True) if p.pid not in excluded]


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def process_title(p: psutil.Process) -> str:
    """``ray::ServeReplica:app:Deployment``, ``raylet``, ``gcs_server``… for a process."""
    try:
        cmd = p.cmdline()
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return "?"
    if not cmd:
        return p.name()
    if cmd[0].startswith("ray::"):
        return cmd[0].split()[0].split(".")[0]
    if "-m" in cmd[1:3]:
        return cmd[cmd.index("-m") + 1]
    for part in cmd[:3]:
        if part.endswith(".py"):
            return os.path.basename(part)
    return os.path.basename(cmd[0])


@dataclass
class CpuUse:
    wall_s: float
    service_s: float  # the Ray processes (and whatever else this benchmark started and is still running)
    driver_s: float  # the benchmark's own process
    reaped_children_s: float  # children that ended meanwhile (the load generator)
    others_s: float  # everything else on the machine
    by_title: dict  # the service's CPU seconds per process title
    top_others: dict  # the busiest processes outside the service meanwhile: "pid title" -> CPU seconds
    watched_s: float = 0.0  # the processes given as ``watch`` (e.g. a comparison server)

    def pct(self, seconds: float) -> Optional[float]:
        """Seconds of CPU as a percentage of one core over the wall time."""
        return 100.0 * seconds / self.wall_s if self.wall_s > 0 else None


class CpuMeter:
    """``with CpuMeter() as m: ...`` then ``m.use``."""

    def __init__(self, exclude: Iterable[int] = (), watch: Iterable[int] = ()):
        self.exclude = set(exclude)
        self.watch = [psutil.Process(pid) for pid in watch]
        self.use: Optional[CpuUse] = None

    def _snapshot(self) -> dict[int, float]:
        out = {}
        for p in service_processes(self.exclude):
            out[p.pid] = _cpu(p)
            if p.pid not in self._titles:
                self._titles[p.pid] = process_title(p)
        return out

    def _everyone(self) -> dict[int, float]:
        out = {}
        for p in psutil.process_iter():
            out[p.pid] = _cpu(p)
        return out

    def __enter__(self) -> CpuMeter:
        self._titles: dict[int, str] = {}
        self._all = self._everyone()
        self._t = time.perf_counter()
        self._busy = _busy_seconds()
        self._tree = self._snapshot()
        self._self = _cpu(psutil.Process())
        self._children = _children_cpu()
        self._watched = sum(_cpu(p) for p in self.watch)
        return self

    def __exit__(self, *exc) -> None:
        wall = time.perf_counter() - self._t
        tree = self._snapshot()
        service = sum(cpu - self._tree.get(pid, 0.0) for pid, cpu in tree.items())
        by_title: dict[str, float] = {}
        for pid, cpu in tree.items():
            title = self._titles.get(pid, "?")
            by_title[title] = by_title.get(title, 0.0) + cpu - self._tree.get(pid, 0.0)
        driver = _cpu(psutil.Process()) - self._self
        reaped = _children_cpu() - self._children
        watched = sum(_cpu(p) for p in self.watch) - self._watched
        busy = _busy_seconds() - self._busy
        others = max(busy - service - driver - reaped - watched, 0.0)
        mine = set(tree) | {os.getpid()} | {p.pid for p in self.watch}
        outside = []
        for pid, cpu in self._everyone().items():
            if pid not in mine and cpu - self._all.get(pid, 0.0) > 0.05 * wall:
                try:
                    title = process_title(psutil.Process(pid))
                except psutil.Error:
                    title = "?"
                outside.append((cpu - self._all.get(pid, 0.0), f"{pid} {title}"))
        top = {name: round(seconds, 3) for seconds, name in sorted(outside, reverse=True)[:5]}
        self.use = CpuUse(
            wall, service, driver, reaped, others, dict(sorted(by_title.items(), key=lambda kv: -kv[1])), top, watched
        )
