"""What each model replica last reported: the adapters it holds and its device memory (for /health)."""

from __future__ import annotations

import time
from typing import Any

from serving.replica_reports import observe_replica

# A model replica reports what it holds every REPLICA_REPORT_INTERVAL_S; one not heard from for
# this long is gone (stopped, crashed) and leaves /health's replica list.
REPLICA_REPORT_TTL_S = 60.0


class ReplicaBoard:
    """The latest report of each model replica, until it goes quiet."""

    def __init__(self) -> None:
        self._replicas: dict[str, tuple[float, dict[str, Any]]] = {}  # replica id -> (when, its report)

    def report(self, replica_id: str, info: dict[str, Any]) -> None:
        self._replicas[replica_id] = (time.monotonic(), info)
        observe_replica(replica_id, info)  # the routers in this process learn which adapters it holds

    def latest(self) -> dict[str, dict[str, Any]]:
        """The latest report of each replica heard from in the last ``REPLICA_REPORT_TTL_S``."""
        now = time.monotonic()
        for replica_id in [r for r, (stamp, _) in self._replicas.items() if now - stamp > REPLICA_REPORT_TTL_S]:
            del self._replicas[replica_id]
        return {replica_id: info for replica_id, (_, info) in self._replicas.items()}
