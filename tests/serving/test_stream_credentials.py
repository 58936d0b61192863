"""An event stream lasts only as long as its credential (the hub and the stream, no Ray, no HTTP):
an account change on the feed ends the streams whose credential no longer holds, and a login
token's stream ends when the token expires."""

from __future__ import annotations

import asyncio
import time

import pytest
from fastapi.sse import ServerSentEvent

from auth.account_cache import AccountsChanged
from serving.event_hub import EventHub, Subscription
from serving.protocol import Progress, TaskCompleted, TaskEvent
from serving.routes.event_streams import _stream

pytestmark = pytest.mark.unit


def _hub(revoked: set[str]) -> EventHub:
    hub = EventHub(state=None, max_streams_per_user=8)

    async def holds(credential: str) -> bool:  # stands in for the database's answer
        return credential not in revoked

    hub.credential_holds = holds
    return hub


async def _read_all(stream) -> list[ServerSentEvent]:
    return [item async for item in stream]


def _progress(event_id: int) -> TaskEvent:
    return TaskEvent(event_id, "progress", "t", 7, Progress.of(1, 20))


def test_an_account_change_on_the_feed_ends_only_the_streams_whose_credential_was_revoked():
    async def scenario():
        revoked: set[str] = set()
        hub = _hub(revoked)
        gone = Subscription(user_id=7, task_id=None, previews=False, credential="qis-revoked")
        kept = Subscription(user_id=7, task_id=None, previews=False, credential="qis-other")
        stranger = Subscription(user_id=8, task_id=None, previews=False, credential="qis-revoked")
        for sub in (gone, kept, stranger):
            hub.by_user[sub.user_id].add(sub)
        gone.offer(_progress(1))
        revoked.add("qis-revoked")
        hub._dispatch(AccountsChanged(user_ids=(7,)))
        await asyncio.gather(*hub._checks)
        items = await asyncio.wait_for(_read_all(_stream(hub, gone, keepalive=5, ends_with_task=False)), 2)
        assert (items[-1].event, items[-1].data, items[-1].id) == ("end", {"reason": "credentials_revoked"}, None)
        assert not any(i.event == "progress" for i in items)  # what was queued before the end is dropped
        assert kept.ended is None and stranger.ended is None  # other credentials, other accounts
        gone.offer(TaskEvent(2, "completed", "t", 7, TaskCompleted(seed=1, result_url="/tasks/t/result")))
        assert gone.queue.empty()  # nothing more is delivered to an ended stream

    asyncio.run(scenario())


def test_a_login_tokens_stream_ends_when_the_token_expires():
    async def scenario():
        hub = _hub(set())
        sub = Subscription(user_id=7, task_id=None, previews=False, credential="a-jwt")
        started = time.monotonic()
        stream = _stream(hub, sub, keepalive=30, ends_with_task=False, expires_at=time.time() + 0.3)
        items = await asyncio.wait_for(_read_all(stream), 5)
        assert items[-1].event == "end" and items[-1].data == {"reason": "credentials_revoked"}
        assert 0.25 < time.monotonic() - started < 2

    asyncio.run(scenario())
