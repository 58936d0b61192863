"""Fair share among users: which waiting model request a replica that frees up goes to.

Every task is sent to its model deployment as soon as it is accepted, so the requests waiting for a
replica are all in Serve's router, where Serve's autoscaler counts them (the demand stays visible:
nothing is held back in the registry). Serve's FIFO order would make a user who submits one task
wait behind the whole backlog of a user who submitted fifty. Instead, when a replica has room, the
router gives it to the waiting request of the user with the fewest requests on the replicas (sent
by this router and not completed: running, or waiting on a replica's device lock); among users with
as many, the one served longest ago (round robin); a user's own requests keep their order.

The one place Serve lets a router decide which waiting request a chosen replica goes to is
``_fulfill_next_pending_request`` (the method Serve's own ``FIFOMixin`` overrides);
:class:`FairShareMixin` overrides it the same way, through the same helpers, and in its place. The
user is read from the request itself (``ModelRequest.user_id``); requests without one share a turn.

The registry computes queue positions with the same rule (:func:`fair_order`) from the tasks it
knows to be running, so the position a user sees is the order the router will start them in (a
request already held beside a running one on a replica still counts as waiting there).
"""

from __future__ import annotations

import heapq
import itertools
from collections import defaultdict
from collections.abc import Hashable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, Optional

if TYPE_CHECKING:  # the registry imports fair_order without loading Serve's router
    from ray.serve.request_router import PendingRequest, ReplicaID, RunningReplica


def user_of(pending_request: PendingRequest) -> Optional[int]:
    """The user a model request runs for (None when it carries none)."""
    request = pending_request.args[0] if pending_request.args else None
    return getattr(request, "user_id", None)


class FairShareMixin:
    """Gives a replica with room to the fairest waiting request instead of the oldest (mix in before
    Serve's ``FIFOMixin``)."""

    # Provided by Serve's RequestRouter.
    _pending_requests_to_fulfill: Any

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # Requests this router gave a replica and that have not completed: request id -> (user, replica).
        self._sent_for: dict[str, tuple[Optional[int], ReplicaID]] = {}
        self._in_flight: defaultdict[Optional[int], int] = defaultdict(int)
        self._turns = itertools.count(1)
        self._last_turn: dict[Optional[int], int] = {}  # user -> when a request of theirs was last sent

    def in_flight(self, user_id: Optional[int]) -> int:
        """Requests of ``user_id`` on the replicas, as this router counts them."""
        return self._in_flight.get(user_id, 0)

    def _fairest_pending_request(self) -> Optional[PendingRequest]:
        """The oldest waiting request of the user with the fewest in flight, then served longest ago."""
        best: Optional[PendingRequest] = None
        best_key: Optional[tuple[int, int, int]] = None
        seen: set[Optional[int]] = set()
        # The queue is in arrival order (Serve re-inserts retries by their creation time).
        for age, pending_request in enumerate(self._pending_requests_to_fulfill):
            if pending_request.future.done():
                continue
            user = user_of(pending_request)
            if user in seen:
                continue  # only each user's oldest waiting request competes
            seen.add(user)
            key = (self.in_flight(user), self._last_turn.get(user, 0), age)
            if best_key is None or key < best_key:
                best, best_key = pending_request, key
        return best

    def _fulfill_next_pending_request(self, replica: RunningReplica, request_metadata: Any = None) -> None:
        """Serve found ``replica`` to have room: the fairest waiting request goes there."""
        chosen = self._fairest_pending_request()
        if chosen is None:
            return
        self._cancel_routing_task_for_pending_request(chosen)  # type: ignore[attr-defined]
        self._record_queue_wait_time(chosen)  # type: ignore[attr-defined]
        request_id = chosen.metadata.internal_request_id
        user = user_of(chosen)
        self._forget_sent(request_id)  # a retry of a refused request is counted once
        self._sent_for[request_id] = (user, replica.replica_id)
        self._in_flight[user] += 1
        chosen.future.set_result(replica)
        self._remove_pending_request_from_indices(chosen)  # type: ignore[attr-defined]
        try:
            self._pending_requests_to_fulfill.remove(chosen)
        except ValueError:
            pass

    def _forget_sent(self, request_id: str) -> None:
        sent = self._sent_for.pop(request_id, None)
        if sent is None:
            return
        user = sent[0]
        self._in_flight[user] -= 1
        if self._in_flight[user] <= 0:
            del self._in_flight[user]

    def on_request_routed(self, pending_request: PendingRequest, replica_id: ReplicaID, result: Any) -> None:
        """The replica accepted the request: its user had a turn (a refused request was not one)."""
        self._last_turn[user_of(pending_request)] = next(self._turns)
        super().on_request_routed(pending_request, replica_id, result)  # type: ignore[misc]

    def on_request_completed(self, replica_id: ReplicaID, internal_request_id: str) -> None:
        """A request left its replica (done, failed, cancelled or refused): its user has one fewer."""
        self._forget_sent(internal_request_id)
        super().on_request_completed(replica_id, internal_request_id)  # type: ignore[misc]

    def on_replica_actor_died(self, replica_id: ReplicaID) -> None:
        """What was sent to a dead replica is in flight no more."""
        for request_id in [r for r, (_, where) in self._sent_for.items() if where == replica_id]:
            self._forget_sent(request_id)
        super().on_replica_actor_died(replica_id)  # type: ignore[misc]


def fair_order(
    waiting: Iterable[tuple[str, Hashable]],
    running: Mapping[Hashable, int],
    last_turn: Mapping[Hashable, int],
) -> dict[str, int]:
    """The 1-based order in which the router's rule starts the ``waiting`` (item, user) pairs, given
    in arrival order, when ``running`` counts each user's running items and ``last_turn`` says when a
    user last had one started (higher is later; a user absent never had)."""
    queues: dict[Hashable, list[str]] = {}
    for item, user in waiting:
        queues.setdefault(user, []).append(item)
    arrival = {user: n for n, user in enumerate(queues)}
    heap = [(running.get(user, 0), last_turn.get(user, 0), arrival[user], user) for user in queues]
    heapq.heapify(heap)
    turn = max(last_turn.values(), default=0)
    heads = dict.fromkeys(queues, 0)
    order: dict[str, int] = {}
    while heap:
        count, _, first, user = heapq.heappop(heap)
        items = queues[user]
        order[items[heads[user]]] = len(order) + 1
        heads[user] += 1
        if heads[user] < len(items):
            turn += 1
            heapq.heappush(heap, (count + 1, turn, first, user))
    return order
