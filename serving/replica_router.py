"""How requests reach the model replicas: the least busy replica first, and no idle waiting.

A model replica runs one generation at a time and holds at most two more requests in its own queue
(``max_ongoing_requests: 3`` plus a lock in :class:`serving.deployments.ModelWorker`), so the next
task starts the moment the current one leaves the device, while its PNG is still being written.

Serve's default router ("power of two choices") does not suit that shape. It samples two replicas
at random, so with one GPU idle among eight busy ones a request lands three times in four behind a
running generation (tens of seconds on a real GPU) instead of on the idle GPU. And while every
replica is full it retries with exponential back-off, 25 ms doubling to 0.5 s, so a replica that
frees up waits on the router's timer.

:class:`LeastBusyRouter` is built on Serve's public request-router API (``ray.serve.request_router``:
``choose_replicas``, the ``on_*`` hooks, ``initialize_state``, the locality mixin); the one exception
is fair share (:mod:`serving.fair_share`), which overrides the method Serve's FIFO mixin overrides.

- **Its own count** of each replica's requests: those the replica accepted (``on_request_routed``)
  and that have not completed (``on_request_completed``), by request id. It is exact because the
  task registry is the only sender, and it changes the moment Serve reports a completion.
- **Ranking** (:meth:`LeastBusyRouter.rank`): idle replicas first, then busy ones; replicas full by
  that count are left out rather than probed (probing them all on every completion cost a probe per
  replica per waiting request). Within a rank Serve takes the replica with the fewest requests by
  its own cache, probing those it knows nothing about, so a replica kept busy by another sender (the
  requests of a registry that restarted) is still found out by Serve.
- **No idle waiting**: while every replica is full, ``choose_replicas`` (a coroutine) waits for a
  request to complete instead of returning nothing and letting Serve sleep on its back-off timer.
  Each completion wakes one waiting routing task (waking all would send them all to the one free
  slot, and all but one would be refused); Serve's longest back-off (``max_backoff_s``) is the
  ceiling, so a wake-up that is missed (the replica set changed) costs no more than Serve's own
  back-off would.
- **Adapters**: a replica keeps the LoRA adapters it ran in memory (an LRU), so within a rank the
  replicas that hold all of a request's adapters come first. It never outranks idleness: an idle
  replica without the adapters goes before a busy one with them, so no GPU idles while a request
  waits. What a replica holds is what it last reported (every ``REPLICA_REPORT_INTERVAL_S``, through
  the registry, which lives in this process: :mod:`serving.replica_reports`) plus what was sent to it
  since, least recently used first and bounded by the size of its adapter cache (reported, else
  the configured ``adapter_capacity`` router argument). A guess that is wrong costs a reload on
  that replica, never a wrong image.
- **Fair share** (:class:`serving.fair_share.FairShareMixin`): the replica that has room goes to the
  waiting request of the user with the fewest requests on the replicas, round robin among users,
  instead of the oldest request. Node locality is Serve's mixin. The router is set per deployment
  with ``request_router_config``.

What the public API leaves out, and what that costs: a change of the replica set has no hook other
than overriding ``update_replicas`` (public, but the framework's own bookkeeping), so requests
waiting while a replica is added notice it at the next completion or within ``max_backoff_s``.
Without Serve's rejection protocol (strict ``max_ongoing_requests``, on everywhere but in Ray
Client) ``on_request_routed`` is not called: every replica then ranks as idle and Serve's own
fewest-requests choice decides, probing full replicas as its default router does.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict, defaultdict, deque
from typing import Optional

from ray.serve.request_router import (
    LocalityMixin,
    PendingRequest,
    ReplicaID,
    ReplicaResult,
    RequestRouter,
    RunningReplica,
)

from models.adapters import LIGHTNING_ADAPTER
from serving import replica_reports  # by reference: the one board of this process (see that module)
from serving.fair_share import FairShareMixin

ROUTER_PATH = "serving.replica_router.LeastBusyRouter"
# Adapters a replica keeps when neither its report nor the router's arguments say: the default
# ADAPTER_CACHE_SIZE (4) plus the Lightning adapter.
DEFAULT_ADAPTER_CAPACITY = 5

# Completions with no accepted request to match: refused attempts, and replies that reached this
# router before the acceptance did. Remembered (by replica and request) so that a late
# on_request_routed for the same pair is not counted; bounded, since only the most recent matter.
# A refused request that Serve retries on the same replica and that is accepted there may thus be
# counted one short until it completes; the replica's own refusal still keeps it from overfilling.
_UNMATCHED_COMPLETIONS = 1024


class LeastBusyRouter(FairShareMixin, LocalityMixin, RequestRouter):
    """Least-outstanding-requests routing, woken by completions instead of a back-off timer; a free
    replica goes to the fairest waiting request (:mod:`serving.fair_share`)."""

    def initialize_state(self, adapter_capacity: int = DEFAULT_ADAPTER_CAPACITY, **kwargs) -> None:
        """Called by Serve once, before any request, with ``request_router_kwargs``: ``adapter_capacity``
        is how many adapters a replica keeps loaded (ADAPTER_CACHE_SIZE + the Lightning adapter),
        until its own report says."""
        super().initialize_state(**kwargs)
        self._adapter_capacity = adapter_capacity
        # Requests accepted by each replica and not yet completed, by Serve's internal request id.
        self._accepted: defaultdict[ReplicaID, set[str]] = defaultdict(set)
        self._completed_unrouted: OrderedDict[tuple[ReplicaID, str], None] = OrderedDict()
        # Futures of choose_replicas calls waiting for a free slot, oldest first.
        self._waiting: deque[asyncio.Future] = deque()
        # (kind, adapter) each replica holds as far as known, least recently used first; the number
        # of the replica's report it starts from; and the adapters sent to it since that report.
        self._adapters: defaultdict[ReplicaID, OrderedDict[tuple[str, str], None]] = defaultdict(OrderedDict)
        self._report_seen: dict[ReplicaID, int] = {}
        self._sent_since_report: defaultdict[ReplicaID, OrderedDict[tuple[str, str], None]] = defaultdict(OrderedDict)
        self._capacity: dict[tuple[ReplicaID, str], int] = {}

    # Ranking ------------------------------------------------------------------------------------

    def ongoing(self, replica_id: ReplicaID) -> int:
        """Requests this router has had accepted by the replica and not yet seen complete."""
        return len(self._accepted.get(replica_id, ()))

    def rank(
        self, candidate_replicas: list[RunningReplica], pending_request: Optional[PendingRequest] = None
    ) -> list[list[RunningReplica]]:
        """Idle replicas, then busy ones; replicas known to be full left out; empty ranks dropped."""
        # Locality first (same node, then zone, then all); it also decides when waiting is due.
        ids = self.apply_locality_routing(pending_request=pending_request)
        room = [
            replica
            for replica in candidate_replicas
            if replica.replica_id in ids and self.ongoing(replica.replica_id) < replica.max_ongoing_requests
        ]
        idle = [replica for replica in room if not self.ongoing(replica.replica_id)]
        busy = [replica for replica in room if self.ongoing(replica.replica_id)]
        wanted = adapters_of(pending_request)
        if not wanted:
            return [rank for rank in (idle, busy) if rank]
        ranks = []
        for replicas in (idle, busy):
            holding = [replica for replica in replicas if wanted <= self.adapters_held(replica.replica_id)]
            ranks += [holding, [replica for replica in replicas if replica not in holding]]
        return [rank for rank in ranks if rank]

    async def choose_replicas(
        self,
        candidate_replicas: list[RunningReplica],
        pending_request: Optional[PendingRequest] = None,
    ) -> list[list[RunningReplica]]:
        while True:
            ranks = self.rank(candidate_replicas, pending_request)
            # A narrower locality scope that is full falls through to the next one at once.
            if ranks or (pending_request is not None and not pending_request.routing_context.should_backoff):
                return ranks
            await self._wait_for_a_free_slot()
            candidate_replicas = list(self.curr_replicas.values())  # it may have changed meanwhile

    # Waiting ------------------------------------------------------------------------------------

    async def _wait_for_a_free_slot(self) -> None:
        waiter = asyncio.get_running_loop().create_future()
        self._waiting.append(waiter)
        try:
            await asyncio.wait_for(waiter, timeout=self.max_backoff_s)
        except asyncio.TimeoutError:
            pass
        finally:
            # Timed out or cancelled (Serve gave the request a replica through another routing task,
            # or the caller gave up): leave the queue at once so a wake-up is not spent on it.
            if not waiter.done():
                waiter.cancel()
            try:
                self._waiting.remove(waiter)
            except ValueError:
                pass

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    # Serve's hooks ------------------------------------------------------------------------------

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: ReplicaResult) -> None:
        """The replica accepted the request: one more ongoing there (unless it already completed)."""
        super().on_request_routed(pending_request, replica_id, result)
        request_id = pending_request.metadata.internal_request_id
        self.adapters_held(replica_id)  # brought up to date with the replica's latest report first
        sent = adapters_of(pending_request)
        for key in sorted(sent):
            for record in (self._adapters[replica_id], self._sent_since_report[replica_id]):
                record[key] = None
                record.move_to_end(key)
        self._trim(replica_id)
        if (replica_id, request_id) in self._completed_unrouted:
            del self._completed_unrouted[replica_id, request_id]
        else:
            self._accepted[replica_id].add(request_id)

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        """A request left a replica (done, failed, cancelled or refused): wake one waiting routing task.

        The wake-up is scheduled rather than done here so that Serve's own count of the same
        completion, queued beside this call, is usually done when the woken task picks a replica
        (else Serve probes the replica once).
        """
        super().on_request_completed(replica_id, internal_request_id)
        accepted = self._accepted.get(replica_id)
        if accepted is not None and internal_request_id in accepted:
            accepted.discard(internal_request_id)
        else:
            self._completed_unrouted[replica_id, internal_request_id] = None
            while len(self._completed_unrouted) > _UNMATCHED_COMPLETIONS:
                self._completed_unrouted.popitem(last=False)
        try:
            asyncio.get_running_loop().call_soon(self._wake_one)
        except RuntimeError:  # not on an event loop (Serve calls this on the router's loop)
            self._wake_one()

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        super().on_replica_actor_died(replica_id)
        self._accepted.pop(replica_id, None)
        self._adapters.pop(replica_id, None)
        self._sent_since_report.pop(replica_id, None)
        replica_reports.forget_replica(replica_id.unique_id)

    # Adapters -----------------------------------------------------------------------------------

    def adapters_held(self, replica_id: ReplicaID) -> set[tuple[str, str]]:
        """The (kind, adapter) pairs the replica is taken to hold: its latest report, then what was
        sent to it since (a report may predate those requests), each kind bounded by its cache."""
        report = replica_reports.latest_report(replica_id.unique_id)
        if report is not None and report[0] != self._report_seen.get(replica_id):
            number, held = report
            self._report_seen[replica_id] = number
            record: OrderedDict[tuple[str, str], None] = OrderedDict()
            for kind, (names, capacity) in held.items():
                record.update(((kind, name), None) for name in names)
                if capacity:
                    self._capacity[replica_id, kind] = capacity
            for key in self._sent_since_report.pop(replica_id, OrderedDict()):
                record[key] = None
                record.move_to_end(key)
            self._adapters[replica_id] = record
            self._trim(replica_id)
        return set(self._adapters[replica_id])

    def _trim(self, replica_id: ReplicaID) -> None:
        record = self._adapters[replica_id]
        for kind in {kind for kind, _ in record}:
            capacity = self._capacity.get((replica_id, kind), self._adapter_capacity)
            keys = [key for key in record if key[0] == kind]
            for key in keys[: max(0, len(keys) - capacity)]:
                del record[key]
        sent = self._sent_since_report.get(replica_id)
        if sent is not None:
            for key in [key for key in sent if key not in record]:
                del sent[key]  # evicted since by the replica's LRU as well


def adapters_of(pending_request: Optional[PendingRequest]) -> set[tuple[str, str]]:
    """The (kind, adapter) pairs a model request runs with: its LoRAs, and the Lightning adapter in
    fast mode (each kind's model has its own adapters, the shared layout's replicas two sets)."""
    request = pending_request.args[0] if pending_request is not None and pending_request.args else None
    adapters = getattr(request, "adapters", None)
    if not isinstance(adapters, list):
        return set()
    kind = getattr(getattr(request, "kind", None), "value", "")
    names = {adapter.name for adapter in adapters}
    if getattr(getattr(request, "parameters", None), "speed", None) == "fast":
        names.add(LIGHTNING_ADAPTER)
    return {(kind, name) for name in names}
