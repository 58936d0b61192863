"""Open event streams are capped per user, per client address and per ingress replica, so many
accounts from one address (or from everywhere) cannot hold every slot of the ingress."""

from __future__ import annotations

import asyncio

import pytest
from fastapi import HTTPException

from serving.event_hub import EventHub, Subscription
from serving.protocol import EventPoll
from serving.routes.event_streams import open_stream

pytestmark = pytest.mark.unit


def _open(hub: EventHub, user_id: int, address: str) -> None:
    asyncio.run(open_stream(hub, Subscription(user_id=user_id, task_id=None, previews=False, address=address), 0))


class _Registry:
    """A registry stand-in with no tasks (isolates the caps from Ray)."""

    async def user_events(self, user_id, after):
        return []

    async def poll_events(self, epoch, cursor, *args):
        if cursor is not None:
            await asyncio.sleep(3600)  # nothing more happens
        return EventPoll(epoch="e", cursor=0, events=[])


class _State:
    registry = _Registry()


def test_many_accounts_from_one_address_are_capped_per_address_with_429_and_retry_after():
    hub = EventHub(_State(), max_streams_per_user=8, max_streams=100, max_streams_per_address=3)
    for user_id in range(3):  # three different accounts, one address
        _open(hub, user_id, "203.0.113.7")
    with pytest.raises(HTTPException) as refused:
        _open(hub, 99, "203.0.113.7")
    assert refused.value.status_code == 429 and refused.value.headers["Retry-After"]
    _open(hub, 99, "198.51.100.1")  # someone else still gets in


def test_a_full_replica_answers_503_with_retry_after_whoever_asks():
    hub = EventHub(_State(), max_streams_per_user=8, max_streams=4, max_streams_per_address=100)
    for user_id in range(4):
        _open(hub, user_id, f"198.51.100.{user_id}")
    with pytest.raises(HTTPException) as refused:
        _open(hub, 50, "192.0.2.50")
    assert refused.value.status_code == 503 and refused.value.headers["Retry-After"]
