"""How requests reach the model replicas: the least busy replica first, and no idle waiting.

A model replica runs one generation at a time and holds at most one more request in its own queue
(``max_ongoing_requests: 2`` plus a lock in :class:`serving.deployments.ModelWorker`), so the next
task starts the moment the current one leaves the device, while its PNG is still being written.

Serve's default router ("power of two choices") does not suit that shape. It samples two replicas
at random, so with one GPU idle among eight busy ones a request lands three times in four behind a
running generation (tens of seconds on a real GPU) instead of on the idle GPU. And while every
replica is full it retries with exponential back-off, 25 ms doubling to 0.5 s, so a replica that
frees up waits on the router's timer.

:class:`LeastBusyRouter` ranks the replicas by the number of requests each holds (the router's
own count, exact because the task registry is the only sender), idle ones first, and leaves out
those known to be full. While all are full it sleeps until a request completes (one waiting
routing task per completion) rather than for a fixed back-off. It keeps Serve's FIFO order and
node locality. It is set per deployment with ``request_router_config``.
"""

from __future__ import annotations

import asyncio
from collections import deque
from typing import Optional

from ray.serve.request_router import FIFOMixin, LocalityMixin, PendingRequest, RequestRouter, RunningReplica

ROUTER_PATH = "serving.routing.LeastBusyRouter"


class LeastBusyRouter(FIFOMixin, LocalityMixin, RequestRouter):
    """Least-outstanding-requests routing, woken by completions instead of a back-off timer."""

    _waiting: Optional[deque] = None  # futures of routing tasks sleeping in _backoff, oldest first

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: Optional[PendingRequest] = None,
    ) -> list[list[RunningReplica]]:
        # Locality first (same node, then zone, then all); it also decides when to back off.
        ids = self.apply_locality_routing(pending_request=pending_request)
        cache = self.replica_queue_len_cache
        counts = {replica.replica_id: cache.get(replica.replica_id) for replica in candidate_replicas}
        # Replicas known to be full are left out rather than probed: the count drops when a request
        # completes (this router sent every request, so it sees every completion) and an entry
        # expires after Serve's queue-length cache timeout (10 s), after which it is probed again.
        # Probing them all on every completion cost a probe per replica per waiting request.
        chosen = [replica for replica in candidate_replicas
                  if replica.replica_id in ids
                  and (counts[replica.replica_id] is None or counts[replica.replica_id] < replica.max_ongoing_requests)]
        # Idle replicas first, then those already running something. A replica the router has no
        # recent count for (none sent to it for a while) may well be idle: it goes first and is
        # probed. Within a rank the base class takes the fewest requests.
        idle = [replica for replica in chosen if not counts[replica.replica_id]]
        busy = [replica for replica in chosen if counts[replica.replica_id]]
        return [rank for rank in (idle, busy) if rank]

    def decrement_queue_len_cache(self, replica_id) -> None:
        """A request finished on a replica: one slot is free, so wake one waiting routing task
        (waking them all would send them all to that slot, and all but one would be refused)."""
        super().decrement_queue_len_cache(replica_id)
        self._wake(everyone=False)

    def update_replicas(self, replicas: list[RunningReplica]) -> None:
        super().update_replicas(replicas)
        self._wake(everyone=True)

    def _wake(self, everyone: bool) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():  # a waiter that timed out is cancelled, hence done
                waiter.set_result(None)
                if not everyone:
                    return

    async def _backoff(self, attempt: int) -> None:
        """Wait for a completion, or for Serve's back-off as a ceiling (a lost wake-up costs no more)."""
        if self._waiting is None:
            self._waiting = deque()
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout=self._compute_backoff_s(attempt))
        except asyncio.TimeoutError:
            try:
                self._waiting.remove(waiter)
            except ValueError:
                pass
