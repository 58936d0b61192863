"""LeastBusyRouter's ranking and waking, on fake replicas (no Ray cluster).

The router runs as Serve runs it: constructed with Serve's arguments, told the replica set with
``update_replicas`` (which probes each new replica), and told of each request through the hooks
Serve's handle calls, in Serve 2.60's order (``on_send_request``, the replica's reply to the
rejection protocol as ``on_new_queue_len_info``, ``on_request_routed`` when accepted; on completion
``on_request_completed`` then, for accepted requests, ``decrement_queue_len_cache``). The replicas
are fakes: they stand in for Serve's ``RunningReplica`` and have no actor behind them.
``tests/api/test_routing.py`` checks the same behaviour on real replicas.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Optional

import pytest
from ray.serve._private.common import DeploymentHandleSource, DeploymentID, RequestMetadata
from ray.serve.request_router import PendingRequest, ReplicaID

from serving.replica_reports import observe_replica
from serving.replica_router import ROUTER_PATH, LeastBusyRouter

pytestmark = pytest.mark.unit

DEPLOYMENT = DeploymentID(name="TextToImageModel", app_name="test")
_ids = itertools.count()


class FakeReplica:
    """A fake replica: Serve's RunningReplica interface for routing, without an actor behind it."""

    def __init__(self, name: str, node_id: str = "node-1", max_ongoing_requests: int = 2):
        self.replica_id = ReplicaID(unique_id=name, deployment_id=DEPLOYMENT)
        self.node_id, self.availability_zone = node_id, None
        self.max_ongoing_requests = max_ongoing_requests
        self.multiplexed_model_ids: set[str] = set()
        self.is_cross_language = False
        self.routing_stats: dict = {}
        self.queue_len = 0  # what the replica itself would report

    async def get_queue_len(self, *, deadline_s: float) -> int:
        return self.queue_len

    def push_proxy_handle(self, handle) -> None:
        pass

    def __repr__(self) -> str:
        return self.replica_id.unique_id


def make_router(
    replicas: list[FakeReplica],
    max_backoff_s: float = 3600.0,
    router_kwargs: Optional[dict] = None,
    router_class: type[LeastBusyRouter] = LeastBusyRouter,
    **locality,
) -> LeastBusyRouter:
    """A router as Serve's handle builds it (queue-length cache on); ``max_backoff_s`` is the wait
    ceiling, ``router_kwargs`` the deployment's ``request_router_kwargs``."""
    router = router_class(
        deployment_id=DEPLOYMENT,
        handle_source=DeploymentHandleSource.UNKNOWN,
        use_replica_queue_len_cache=True,
        max_backoff_s=max_backoff_s,
        **locality,
    )
    router.initialize_state(**(router_kwargs or {}))
    router.update_replicas(replicas)
    return router


def pending() -> PendingRequest:
    request_id = f"request-{next(_ids)}"
    return PendingRequest(
        args=[], kwargs={}, metadata=RequestMetadata(request_id=request_id, internal_request_id=request_id)
    )


def send(router: LeastBusyRouter, replica: FakeReplica, accepted: bool = True) -> str:
    """What Serve's handle does when it sends a request to ``replica``; returns the request's id."""
    request = pending()
    router.on_send_request(replica.replica_id)
    if accepted:
        replica.queue_len += 1
    router.on_new_queue_len_info(replica.replica_id, replica.queue_len)
    if accepted:
        router.on_request_routed(request, replica.replica_id, None)
    else:  # a refused request completes at once
        router.on_request_completed(replica.replica_id, request.metadata.internal_request_id)
    return request.metadata.internal_request_id


def complete(router: LeastBusyRouter, replica: FakeReplica, request_id: str) -> None:
    """What Serve's handle does when an accepted request finishes on ``replica``."""
    replica.queue_len -= 1
    router.on_request_completed(replica.replica_id, request_id)
    router.decrement_queue_len_cache(replica.replica_id)


async def settle() -> None:
    """Let the event loop run what is ready (probes, scheduled wake-ups); no time passes."""
    for _ in range(20):
        await asyncio.sleep(0)


async def choose(router: LeastBusyRouter, request: Optional[PendingRequest] = None) -> list[list[FakeReplica]]:
    return await router.choose_replicas(list(router.curr_replicas.values()), request or pending())


def test_the_router_is_what_the_deployments_name():
    module, _, name = ROUTER_PATH.rpartition(".")
    assert (module, name) == (LeastBusyRouter.__module__, LeastBusyRouter.__name__)


def test_idle_replicas_come_first_busy_ones_next_and_full_ones_are_left_out():
    async def scenario():
        a, b, c, d = (FakeReplica(name) for name in "abcd")
        router = make_router([a, b, c, d])
        await settle()  # the probes of the new replicas
        send(router, a)
        send(router, b), send(router, b)  # b is full
        assert await choose(router) == [[c, d], [a]]

    asyncio.run(scenario())


def test_a_replica_is_idle_again_once_its_request_completes():
    async def scenario():
        a, b = FakeReplica("a"), FakeReplica("b")
        router = make_router([a, b])
        await settle()
        first, second = send(router, a), send(router, b)
        assert await choose(router) == [[a, b]]  # both busy, neither full
        complete(router, a, first)
        assert await choose(router) == [[a], [b]]
        complete(router, b, second)
        assert await choose(router) == [[a, b]]

    asyncio.run(scenario())


def test_a_refused_request_and_a_completion_reported_before_its_acceptance_are_not_counted():
    async def scenario():
        a, b = FakeReplica("a"), FakeReplica("b")
        router = make_router([a, b])
        await settle()
        a.queue_len = 2  # requests from elsewhere fill it
        send(router, a, accepted=False)
        assert router.ongoing(a.replica_id) == 0
        assert await choose(router) == [[a, b]]
        # Within the rank Serve's own count, corrected by the refusal, passes over it.
        assert router.select_available_replicas([a, b]) == [b]

        early = pending()  # a reply faster than the acceptance reached the router
        router.on_request_completed(b.replica_id, early.metadata.internal_request_id)
        router.on_request_routed(early, b.replica_id, None)
        assert router.ongoing(b.replica_id) == 0

        # A request refused by one replica and retried (same request id) on another counts there.
        retried = pending()
        router.on_request_completed(a.replica_id, retried.metadata.internal_request_id)  # a refused it
        router.on_request_routed(retried, b.replica_id, None)
        assert router.ongoing(b.replica_id) == 1

    asyncio.run(scenario())


def test_a_replica_that_died_is_forgotten():
    async def scenario():
        a, b = FakeReplica("a"), FakeReplica("b")
        router = make_router([a, b])
        await settle()
        send(router, a)
        router.on_replica_actor_died(a.replica_id)
        assert router.ongoing(a.replica_id) == 0
        assert await choose(router) == [[b]]

    asyncio.run(scenario())


def test_while_every_replica_is_full_each_completion_wakes_one_waiting_request():
    async def scenario():
        a, b = FakeReplica("a", max_ongoing_requests=1), FakeReplica("b", max_ongoing_requests=1)
        router = make_router([a, b])
        await settle()
        on_a, on_b = send(router, a), send(router, b)
        first = asyncio.create_task(choose(router))
        second = asyncio.create_task(choose(router))
        await settle()
        assert not first.done() and not second.done()  # waiting, not returning empty-handed
        complete(router, b, on_b)
        await settle()
        assert first.done() and first.result() == [[b]]  # the oldest waiter, and only it
        assert not second.done()
        complete(router, a, on_a)
        await settle()
        assert second.done() and second.result() == [[a, b]]

    asyncio.run(scenario())


def test_a_waiting_request_that_is_cancelled_leaves_the_queue():
    async def scenario():
        a = FakeReplica("a", max_ongoing_requests=1)
        router = make_router([a])
        await settle()
        request_id = send(router, a)
        gone, staying = asyncio.create_task(choose(router)), asyncio.create_task(choose(router))
        await settle()
        gone.cancel()  # Serve gave its request a replica through another routing task, or the caller left
        await settle()
        complete(router, a, request_id)
        await settle()
        assert staying.done() and staying.result() == [[a]]  # the wake-up was not spent on the cancelled one

    asyncio.run(scenario())


def test_a_waiting_request_looks_again_after_serves_longest_back_off():
    async def scenario():
        a = FakeReplica("a", max_ongoing_requests=1)
        router = make_router([a], max_backoff_s=0.01)
        await settle()
        send(router, a)
        waiting = asyncio.create_task(choose(router))
        await settle()
        assert not waiting.done()
        # A replica is added: no completion announces it.
        b = FakeReplica("b", max_ongoing_requests=1)
        router.update_replicas([a, b])
        assert await asyncio.wait_for(waiting, timeout=30) == [[b]]  # the timeout only guards against a hang

    asyncio.run(scenario())


def test_a_full_local_node_falls_through_to_the_others_at_once():
    async def scenario():
        local, remote = FakeReplica("local", node_id="here", max_ongoing_requests=1), FakeReplica("remote", "there")
        router = make_router([local, remote], self_node_id="here", prefer_local_node_routing=True)
        await settle()
        assert await choose(router) == [[local]]  # the local node first
        send(router, local)
        request = pending()
        assert await choose(router, request) == []  # local scope full: no wait, Serve widens the scope
        assert await choose(router, request) == [[remote]]

    asyncio.run(scenario())


@pytest.mark.parametrize("path", ["serve_config.yaml", "deploy/kuberay/rayservice.yaml"])
def test_the_configs_name_this_router(path):
    from pathlib import Path

    text = (Path(__file__).resolve().parents[2] / path).read_text()
    assert f"request_router_class: {ROUTER_PATH}" in text
    assert "serving.routing." not in text


def test_the_ray_in_use_and_deployed_is_the_minor_version_pinned():
    import re
    from pathlib import Path

    import ray
    import tomllib

    root = Path(__file__).resolve().parents[2]
    [pin] = [
        d
        for d in tomllib.loads((root / "pyproject.toml").read_text())["project"]["dependencies"]
        if d.startswith("ray[serve]")
    ]
    lower, upper = re.fullmatch(r"ray\[serve\]>=(\d+\.\d+),<(\d+\.\d+)", pin).groups()
    minor = ".".join(ray.__version__.split(".")[:2])
    assert minor == lower and int(upper.split(".")[1]) == int(lower.split(".")[1]) + 1
    assert f'rayVersion: "{minor}.' in (root / "deploy/kuberay/rayservice.yaml").read_text()


def model_request(*adapters: str, fast: bool = False) -> PendingRequest:
    """A pending request carrying a model request with these adapters."""
    from models.kinds import ModelKind
    from serving.protocol import AdapterRef, GenerationParameters, ModelRequest

    request = ModelRequest(
        app_name="test",
        task_id="t",
        kind=ModelKind.text_to_image,
        index=0,
        prompt="p",
        parameters=GenerationParameters(kind=ModelKind.text_to_image, prompt="p", speed="fast" if fast else None),
        input_keys=[],
        output_key=None,
        adapters=[AdapterRef(name, 1.0, "/loras") for name in adapters],
    )
    request_id = f"request-{next(_ids)}"
    return PendingRequest(
        args=[request], kwargs={}, metadata=RequestMetadata(request_id=request_id, internal_request_id=request_id)
    )


def test_an_idle_replica_that_ran_the_adapters_goes_first_but_never_before_idleness():
    async def scenario():
        a, b, c = FakeReplica("a"), FakeReplica("b"), FakeReplica("c")
        router = make_router([a, b, c])
        await settle()
        for replica, names in ((b, ("ink",)), (c, ("ink", "clay"))):
            request = model_request(*names)
            router.on_send_request(replica.replica_id)
            router.on_request_routed(request, replica.replica_id, None)
            router.on_request_completed(replica.replica_id, request.metadata.internal_request_id)
        assert await choose(router, model_request("ink", "clay")) == [[c], [a, b]]
        assert await choose(router, model_request("ink")) == [[b, c], [a]]
        assert await choose(router, model_request()) == [[a, b, c]]  # no adapters: plain least busy
        send(router, c)  # the replica holding both is busy now: idle ones still go first
        assert await choose(router, model_request("ink", "clay")) == [[a, b], [c]]
        assert await choose(router, model_request(fast=True)) == [[a, b], [c]]  # no one ran Lightning yet

    asyncio.run(scenario())


def ran(router: LeastBusyRouter, replica: FakeReplica, *adapters: str) -> None:
    """A request with these adapters was sent to ``replica`` and has completed."""
    request = model_request(*adapters)
    router.on_send_request(replica.replica_id)
    router.on_request_routed(request, replica.replica_id, None)
    router.on_request_completed(replica.replica_id, request.metadata.internal_request_id)


def report(replica: FakeReplica, loaded: list[str], capacity: int) -> None:
    """What the registry passes on from a replica's report (ModelWorker.info(), the parts read here)."""
    observe_replica(
        replica.replica_id.unique_id,
        {"models": {"text_to_image": {"adapters_loaded": loaded, "adapter_capacity": capacity}}, "device": "cpu"},
    )


def test_a_router_of_the_class_serve_ships_sees_what_the_registry_records():
    """Serve ships a deployment's router class by value (``RequestRouterConfig`` pickles it with
    its module registered for pickling by value), and the registry's handles build their routers
    from that copy; the registry records replica reports with the module it imported. Both must
    meet on the same board (they did not while it was a global of the router's own module)."""
    from ray import cloudpickle
    from ray.serve.config import RequestRouterConfig

    config = RequestRouterConfig(request_router_class=ROUTER_PATH)
    shipped = cloudpickle.loads(config.get_serialized_request_router_cls())

    async def scenario():
        x, y = FakeReplica("shipped-x"), FakeReplica("shipped-y")
        router = make_router([x, y], router_class=shipped)
        await settle()
        report(y, ["ink"], capacity=3)
        assert await choose(router, model_request("ink")) == [[y], [x]]
        router.on_replica_actor_died(y.replica_id)
        report(x, ["ink"], capacity=3)
        assert await choose(router, model_request("ink")) == [[x]]

    asyncio.run(scenario())


def test_the_router_takes_a_replica_to_keep_as_many_adapters_as_configured():
    async def scenario():
        x, y = FakeReplica("keep-x"), FakeReplica("keep-y")
        router = make_router([x, y], router_kwargs={"adapter_capacity": 2})
        await settle()
        for name in ("ink", "neon", "clay"):
            ran(router, x, name)
        assert await choose(router, model_request("clay")) == [[x], [y]]
        assert await choose(router, model_request("neon")) == [[x], [y]]
        assert await choose(router, model_request("ink")) == [[x, y]]  # a cache of 2 has evicted it

    asyncio.run(scenario())


def test_what_a_replica_reports_holding_overrides_what_the_router_guessed():
    async def scenario():
        x, y = FakeReplica("report-x"), FakeReplica("report-y")
        router = make_router([x, y], router_kwargs={"adapter_capacity": 5})
        await settle()
        # Held without this router having sent it (the registry restarted, or another handle sent it).
        report(y, ["ink"], capacity=3)
        assert await choose(router, model_request("ink")) == [[y], [x]]
        ran(router, x, "neon")
        report(x, [], capacity=3)  # x's report predates the request that loaded neon there ...
        assert await choose(router, model_request("neon")) == [[x], [y]]  # ... so neon is still taken as held
        report(x, [], capacity=3)  # a later report without it: evicted (its byte bound, a failed load)
        assert await choose(router, model_request("neon")) == [[x, y]]
        # y reports a cache of 3: after three more adapters its oldest is taken as gone.
        for name in ("a1", "a2", "a3"):
            ran(router, y, name)
        assert await choose(router, model_request("ink")) == [[x, y]]
        assert await choose(router, model_request("a1", "a3")) == [[y], [x]]
        router.on_replica_actor_died(y.replica_id)
        assert router.adapters_held(y.replica_id) == set()  # its report is forgotten too

    asyncio.run(scenario())
