"""An event stream lasts only as long as its credential (the hub and the stream, no Ray, no HTTP):
an account change on the feed ends the streams whose credential no longer holds, and a login
token's stream ends when the token expires."""

from __future__ import annotations

import asyncio
import time

import pytest

from auth.account_cache import ACCOUNT_CHANGED
from serving.event_hub import EventHub, Subscription
from serving.routes.events import _stream

pytestmark = pytest.mark.unit


def _hub(revoked: set[str]) -> EventHub:
    hub = EventHub(state=None, max_streams_per_user=8)

    async def holds(credential: str) -> bool:  # stands in for the database's answer
        return credential not in revoked

    hub.credential_holds = holds
    return hub


async def _read_all(stream) -> list[str]:
    return [chunk async for chunk in stream]


def test_an_account_change_on_the_feed_ends_only_the_streams_whose_credential_was_revoked():
    async def scenario():
        revoked: set[str] = set()
        hub = _hub(revoked)
        gone = Subscription(user_id=7, task_id=None, previews=False, credential="qis-revoked")
        kept = Subscription(user_id=7, task_id=None, previews=False, credential="qis-other")
        stranger = Subscription(user_id=8, task_id=None, previews=False, credential="qis-revoked")
        for sub in (gone, kept, stranger):
            hub.by_user[sub.user_id].add(sub)
        gone.offer({"id": 1, "event": "progress", "task_id": "t", "user_id": 7, "data": {}})
        revoked.add("qis-revoked")
        hub._dispatch({"event": ACCOUNT_CHANGED, "task_id": None, "user_id": None, "user_ids": [7]})
        await asyncio.gather(*hub._checks)
        chunks = await asyncio.wait_for(_read_all(_stream(hub, gone, keepalive=5, ends_with_task=False)), 2)
        assert chunks[-1] == 'event: end\ndata: {"reason": "credentials_revoked"}\n\n'
        assert not any("progress" in c for c in chunks)  # what was queued before the end is dropped
        assert kept.ended is None and stranger.ended is None  # other credentials, other accounts
        gone.offer({"id": 2, "event": "completed", "task_id": "t", "user_id": 7, "data": {}})
        assert gone.queue.empty()  # nothing more is delivered to an ended stream

    asyncio.run(scenario())


def test_a_login_tokens_stream_ends_when_the_token_expires():
    async def scenario():
        hub = _hub(set())
        sub = Subscription(user_id=7, task_id=None, previews=False, credential="a-jwt")
        started = time.monotonic()
        stream = _stream(hub, sub, keepalive=30, ends_with_task=False, expires_at=time.time() + 0.3)
        chunks = await asyncio.wait_for(_read_all(stream), 5)
        assert chunks[-1].startswith("event: end\n") and "credentials_revoked" in chunks[-1]
        assert 0.25 < time.monotonic() - started < 2

    asyncio.run(scenario())
