"""The ingress's view of its model deployments (ServiceState.deployment_status) on the real Serve.

Submissions read a cached answer and refresh it beside the request; a refusal (no replica) and
/health must never rest on an old answer.
"""

from __future__ import annotations

import asyncio
import time

from serving.state import ServiceState

NOTHING_RUNNING = {"gpu_count": 0, "deployments": {"TextToImage": {"status": "UPDATING", "running_replicas": 0}}}


def _state(app_name: str) -> ServiceState:
    # Only the deployment-status part of the state is used here.
    return ServiceState(
        settings=None, engine=None, auth=None, store=None, registry=None, app_name=app_name, url_signer=None
    )


def _running(snapshot: dict) -> int:
    return snapshot["deployments"].get("TextToImage", {}).get("running_replicas", 0)


def test_an_old_answer_is_served_at_once_and_refreshed_beside_the_request(serve_instance):
    state = _state("main")
    state._status_cache = (time.monotonic() - 60, NOTHING_RUNNING)

    async def scenario():
        first = await state.deployment_status()
        await state._status_refresh
        return first, await state.deployment_status()

    first, second = asyncio.run(scenario())
    assert first is NOTHING_RUNNING
    assert _running(second) == 2 and second["gpu_count"] >= 2


def test_a_fresh_read_is_never_answered_from_the_cache(serve_instance):
    state = _state("main")
    for options in ({"max_age": 0}, {"stale_ok": False}):
        state._status_cache = (time.monotonic() - 60, NOTHING_RUNNING)
        assert _running(asyncio.run(state.deployment_status(**options))) == 2, options
