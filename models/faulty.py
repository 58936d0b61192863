"""The ``faulty`` profile's failures: the ``sleep`` profile, plus failures that a prompt asks for.

Test suites deploy an application on this profile to see what the service does when a model
replica fails; no other profile reads these markers, so production code has no test-only branch.
A prompt starting with one of the markers below fails in that way:

- ``__fault_crash_at_step_N__``: the replica process exits at step N, every time.
- ``__fault_crash_once_at_step_N__``: the same, the first time this prompt runs only (a marker file
  under the profile's ``cache_dir`` remembers it across processes), so a retry succeeds.
- ``__fault_raise__``: the pipeline raises before its first step.
- ``__fault_oom__``: the pipeline runs out of memory before its first step.
- ``__fault_disk_full__``: generation succeeds, writing the result fails (no space left).
- ``__fault_slow_step_S__``: every step takes S seconds more (a device that is slow, not broken), so a
  test can keep a replica busy for as long as it needs however fast the machine is; a cancel still
  stops it at its next step.
"""

from __future__ import annotations

import errno
import hashlib
import os
import tempfile
import time
from typing import Optional

from .hooks import GenerationHooks, StepCallback

CRASH = "__fault_crash_at_step_"
CRASH_ONCE = "__fault_crash_once_at_step_"
RAISE = "__fault_raise__"
OOM = "__fault_oom__"
DISK_FULL = "__fault_disk_full__"
SLOW = "__fault_slow_step_"


class FaultHooks(GenerationHooks):
    """The ``faulty`` profile's hooks: the failures a prompt asks for (``state_dir`` keeps "once" markers)."""

    def __init__(self, state_dir: Optional[str]):
        self.state_dir = state_dir

    def before_generation(self, prompt: str, on_step: Optional[StepCallback]) -> Optional[StepCallback]:
        return before_generation(prompt, self.state_dir, on_step)

    def before_encoding(self, prompt: str) -> None:
        before_encoding(prompt)


def before_generation(prompt: str, state_dir: Optional[str], on_step: Optional[StepCallback]) -> Optional[StepCallback]:
    """Raise the failure ``prompt`` asks for, or return ``on_step`` wrapped to crash at its step."""
    if prompt.startswith(RAISE):
        raise RuntimeError("injected pipeline failure")
    if prompt.startswith(OOM):
        raise MemoryError("CUDA out of memory (injected)")
    if prompt.startswith(SLOW):
        return _slowed(on_step, float(prompt[len(SLOW) :].split("__")[0]))
    crash_at = _crash_step(prompt, state_dir)
    if crash_at is None:
        return on_step

    def crashing(step: int, total: int) -> None:
        if step >= crash_at:
            os._exit(1)  # the replica process dies mid-task, as a segfault or a killed process would
        if on_step is not None:
            on_step(step, total)

    return crashing


def _slowed(on_step: Optional[StepCallback], seconds: float) -> StepCallback:
    def slow(step: int, total: int) -> None:
        time.sleep(seconds)
        if on_step is not None:
            on_step(step, total)

    return slow


def before_encoding(prompt: str) -> None:
    """Fail the result's write when ``prompt`` asks for it."""
    if prompt.startswith(DISK_FULL):
        raise OSError(errno.ENOSPC, "No space left on device (injected)")


def _crash_step(prompt: str, state_dir: Optional[str]) -> Optional[int]:
    if prompt.startswith(CRASH):
        return int(prompt[len(CRASH) :].split("_")[0])
    if prompt.startswith(CRASH_ONCE):
        folder = os.path.join(state_dir or tempfile.gettempdir(), "faulty-profile")
        os.makedirs(folder, exist_ok=True)
        marker = os.path.join(folder, hashlib.sha256(prompt.encode()).hexdigest())
        try:
            with open(marker, "x"):
                pass
        except FileExistsError:
            return None  # crashed once already: this run succeeds
        return int(prompt[len(CRASH_ONCE) :].split("_")[0])
    return None
