"""What each model replica last reported holding, shared by the routers of this process.

The task registry records every replica report here (:func:`observe_replica`); the request routers
that the registry's handles run (:class:`serving.replica_router.LeastBusyRouter`) read it.

This lives in its own module, not in the router's, because Ray Serve ships a deployment's router
class **by value**: ``RequestRouterConfig`` registers the router's module with
``cloudpickle.register_pickle_by_value`` and pickles the class, so a router built from it reads a
pickled copy of that module's globals. Mutable state kept there would be a copy in every handle's
router, never the dict the registry writes (and in the process that pickled it, cloudpickle's class
tracker rebinds the original class's methods to that copy as well). This module is imported by
reference wherever it is used, so every router in a process sees the one board.
"""

from __future__ import annotations

import itertools
import time
from typing import Optional

# replica id -> (a number that grows with every report, {kind: (adapters loaded, least recently used
# first; how many its cache keeps)})
_reported: dict[str, tuple[int, dict[str, tuple[list[str], int]]]] = {}
_reports = itertools.count(1)
_reported_at: dict[str, float] = {}
# A replica silent this long is gone (scaled down, moved): its report is dropped.
REPORT_TTL_S = 60.0


def observe_replica(replica_id: str, info: dict) -> None:
    """Record what a model replica reports holding (its ``ModelWorker.info()``); the routers of this
    process read it. Called by the registry with every replica report."""
    held = {}
    for kind, model in (info.get("models") or {}).items():
        if isinstance(model, dict) and "adapters_loaded" in model:
            held[kind] = (list(model["adapters_loaded"]), int(model.get("adapter_capacity") or 0))
    now = time.monotonic()
    for gone in [other for other, at in list(_reported_at.items()) if now - at > REPORT_TTL_S]:
        forget_replica(gone)
    _reported[replica_id] = (next(_reports), held)
    _reported_at[replica_id] = now


def latest_report(replica_id: str) -> Optional[tuple[int, dict[str, tuple[list[str], int]]]]:
    """The replica's latest report: (its number, what it holds by kind), or None."""
    return _reported.get(replica_id)


def forget_replica(replica_id: str) -> None:
    """Drop a replica's report (it is gone)."""
    _reported.pop(replica_id, None)
    _reported_at.pop(replica_id, None)
