"""Fair share: a free replica goes to the waiting request of the user with the fewest requests on the
replicas (round robin among users), in the router, on fake replicas (no Ray cluster); and the queue
positions the registry reports follow the same order.

The router is driven through the path Serve's handle takes for every request
(``_choose_replica_for_request``, then the hooks of sending and completing, as in
``tests/serving/test_replica_router.py``). The replicas are fakes: Serve's ``RunningReplica``
interface with no actor behind them. ``tests/api/test_fair_share_api.py`` checks the same on real
replicas through the HTTP API.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Optional

import pytest
from ray.serve._private.common import RequestMetadata
from ray.serve.request_router import PendingRequest

from models.kinds import ModelKind
from serving.protocol import Accepted, GenerationParameters, ModelRequest, TaskQueued, TaskSpec
from serving.registry.core import RegistryCore
from serving.replica_router import LeastBusyRouter
from storage import User, session_scope
from tests.serving.test_replica_router import FakeReplica, make_router, settle

pytestmark = pytest.mark.unit

_ids = itertools.count()


def user_request(user_id: Optional[int]) -> PendingRequest:
    """A pending request carrying a model request of ``user_id``."""
    request_id = f"fair-{next(_ids)}"
    model_request = ModelRequest(
        app_name="test",
        task_id=request_id,
        kind=ModelKind.text_to_image,
        index=0,
        prompt="p",
        parameters=GenerationParameters(kind=ModelKind.text_to_image, prompt="p"),
        input_keys=[],
        output_key=None,
        user_id=user_id,
    )
    return PendingRequest(
        args=[model_request],
        kwargs={},
        metadata=RequestMetadata(request_id=request_id, internal_request_id=request_id),
    )


class Sender:
    """What Serve's handle does with each request: wait for the router to give it a replica, send it
    there (the fake replica accepts while it has room), and later complete it. ``started`` is the order in which
    requests reached a replica, as (user, request id)."""

    def __init__(self, router: LeastBusyRouter):
        self.router = router
        self.started: list[tuple[Optional[int], str]] = []
        self.where: dict[str, FakeReplica] = {}
        self.tasks: list[asyncio.Task] = []

    def submit(self, user_id: Optional[int]) -> str:
        request = user_request(user_id)
        self.tasks.append(asyncio.create_task(self._route(request)))
        return request.metadata.internal_request_id

    async def _route(self, request: PendingRequest) -> None:
        """Serve 2.60's ``_route_and_send_request_once`` with its rejection protocol: a replica that is
        already full refuses, and the request is routed again (as a retry)."""
        request_id = request.metadata.internal_request_id
        retry = False
        while True:
            replica = await self.router._choose_replica_for_request(request, is_retry=retry)
            self.router.on_send_request(replica.replica_id)
            accepted = replica.queue_len < replica.max_ongoing_requests
            replica.queue_len += accepted
            self.router.on_new_queue_len_info(replica.replica_id, replica.queue_len)
            if accepted:
                break
            self.router.on_request_completed(replica.replica_id, request_id)
            retry = True
        self.router.on_request_routed(request, replica.replica_id, None)
        self.where[request_id] = replica
        self.started.append((request.args[0].user_id, request_id))

    def complete(self, request_id: str) -> None:
        replica = self.where.pop(request_id)
        replica.queue_len -= 1
        self.router.on_request_completed(replica.replica_id, request_id)
        self.router.decrement_queue_len_cache(replica.replica_id)

    def complete_oldest(self) -> None:
        """The earliest request still on a replica finishes."""
        oldest = next(request_id for _, request_id in self.started if request_id in self.where)
        self.complete(oldest)

    def users(self) -> list[Optional[int]]:
        return [user for user, _ in self.started]

    async def started_count(self, count: int) -> None:
        """Until ``count`` requests have reached a replica. Routing that lost a race for a slot (the
        replica refused) looks again after Serve's back-off, so this waits in real time; the timeout
        only guards against a hang."""
        for _ in range(1000):
            await settle()
            if len(self.started) >= count:
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"{len(self.started)} of {count} requests reached a replica")

    async def complete_and_route_next(self) -> None:
        """The earliest request still on a replica finishes, and the next one is routed."""
        count = len(self.started)
        self.complete_oldest()
        await self.started_count(count + 1)


def test_a_freed_replica_goes_to_the_user_with_nothing_running_not_to_the_backlog():
    async def scenario():
        replica = FakeReplica("a", max_ongoing_requests=2)
        router = make_router([replica], max_backoff_s=0.05)
        await settle()
        sender = Sender(router)
        for _ in range(6):
            sender.submit(user_id=1)
        await sender.started_count(2)
        await settle()
        assert sender.users() == [1, 1]  # the replica is full; four of user 1's wait
        sender.submit(user_id=2)
        await settle()
        await sender.complete_and_route_next()
        # FIFO would send user 1's third request; user 2 has nothing running, so theirs goes first.
        assert sender.users() == [1, 1, 2]
        while len(sender.started) < 7:
            await sender.complete_and_route_next()
        assert sender.users() == [1, 1, 2, 1, 1, 1, 1]  # then the backlog, nothing lost or repeated
        assert len({request_id for _, request_id in sender.started}) == 7
        for task in sender.tasks:
            task.cancel()

    asyncio.run(scenario())


def test_users_with_backlogs_take_turns():
    async def scenario():
        replica = FakeReplica("a", max_ongoing_requests=1)
        router = make_router([replica], max_backoff_s=0.05)
        await settle()
        sender = Sender(router)
        for user_id in (1, 1, 1, 1, 2, 2, 2, 3):
            sender.submit(user_id)
            await settle()
        await sender.started_count(1)
        while len(sender.started) < 8:
            await sender.complete_and_route_next()
        # Round robin among the users with waiting requests; each user's own requests in order.
        assert sender.users() == [1, 2, 3, 1, 2, 1, 2, 1]
        for task in sender.tasks:
            task.cancel()

    asyncio.run(scenario())


def test_fewest_in_flight_wins_over_arrival_across_several_replicas():
    async def scenario():
        a, b = FakeReplica("a", max_ongoing_requests=1), FakeReplica("b", max_ongoing_requests=1)
        router = make_router([a, b], max_backoff_s=0.05)
        await settle()
        sender = Sender(router)
        for user_id in (1, 1, 1, 1, 2, 2):
            sender.submit(user_id)
            await settle()
        await sender.started_count(2)
        assert sender.users() == [1, 1]
        await sender.complete_and_route_next()  # user 1 still has one running, user 2 none
        assert sender.users() == [1, 1, 2]
        await sender.complete_and_route_next()  # now user 1 has none running, user 2 one
        assert sender.users() == [1, 1, 2, 1]
        for task in sender.tasks:
            task.cancel()

    asyncio.run(scenario())


# ---------------------------------------------------------------------------------------- registry


def _spec(task_id: str, user_id: int) -> TaskSpec:
    return TaskSpec(
        task_id=task_id,
        user_id=user_id,
        task_type="text_to_image",
        kind=ModelKind.text_to_image,
        parameters=GenerationParameters(kind=ModelKind.text_to_image, prompt="p", num_inference_steps=4),
        image_count=1,
    )


def test_queue_positions_follow_the_fair_share_order(tmp_path):
    """Positions (``GET /tasks/{id}``'s ``position_in_queue`` and ``queued`` events) are the order the
    router will start the waiting tasks in. No model replica runs here: the dispatch is replaced (a
    stand-in that records nothing), and starts are reported as a replica reports them."""
    core = RegistryCore("unit", {"data_dir": str(tmp_path), "cleanup_interval_seconds": 0}, "v1")
    core._dispatch = lambda task: None  # stand-in: nothing runs the tasks

    with session_scope(core.engine) as session:
        session.add_all(
            [User(id=1, username="one", hashed_password="x"), User(id=2, username="two", hashed_password="x")]
        )

    async def scenario():
        await core.start()
        assert isinstance(await core.create(_spec("a0", user_id=1)), Accepted)
        assert await core.mark_running("a0", core.epoch, core.tasks["a0"].attempt)
        for n in range(1, 4):
            assert isinstance(await core.create(_spec(f"a{n}", user_id=1)), Accepted)
        assert [(await core.status(f"a{n}")).position_in_queue for n in range(4)] == [0, 1, 2, 3]
        assert isinstance(await core.create(_spec("b0", user_id=2)), Accepted)
        # User 2 has nothing running: their task is next, user 1's backlog moves back by one.
        assert (await core.status("b0")).position_in_queue == 1
        assert core.tasks["b0"].events.latest["queued"].data == TaskQueued(position=1)
        assert [(await core.status(f"a{n}")).position_in_queue for n in range(1, 4)] == [2, 3, 4]
        assert await core.refresh_positions(["a1", "a2", "a3", "b0"]) == 3
        assert core.tasks["a3"].events.latest["queued"].data == TaskQueued(position=4)
        # Two users waiting, each with one running: they take turns, user 1 (served longest ago) first.
        assert await core.mark_running("b0", core.epoch, core.tasks["b0"].attempt)
        assert isinstance(await core.create(_spec("b1", user_id=2)), Accepted)
        positions = {t: (await core.status(t)).position_in_queue for t in ("a1", "a2", "a3", "b1")}
        assert positions == {"a1": 1, "b1": 2, "a2": 3, "a3": 4}

    asyncio.run(scenario())
