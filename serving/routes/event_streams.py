"""Server-sent event streams of task progress: ``GET /tasks/{id}/events`` and ``GET /tasks/events``.

Each event has ``id:`` (increasing per task; microseconds since the epoch), ``event:`` (queued,
started, progress, preview, completed, failed, cancelled) and ``data:`` JSON with ``task_id``.
A task's stream ends after its one terminal event; a finished task answers that event at once. A
client reconnecting with ``Last-Event-ID`` gets what describes the task's state after that id
(the terminal event included). ``?previews=false`` leaves previews out. Comment lines keep a
quiet stream open. Closing a stream does nothing to its task.

A stream lasts only as long as the credential it was opened with: when the account's credentials
change (key revoked, password changed, account disabled or deleted, log-out: announced on the
change feed, so on every ingress replica) or every ``CREDENTIAL_RECHECK_S`` anyway, it is checked
again, and a login token's stream ends when the token expires. Such a stream ends with
``event: end`` and ``data: {"reason": "credentials_revoked"}`` (no ``id``: resuming is pointless).

The framing is FastAPI's (``EventSourceResponse``, the path operations are generators of
``ServerSentEvent``); a stream is opened, and refused with a 4xx, in a dependency before the
response starts, and closed by that dependency once the response is over, however it ended.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Annotated, Any, Optional

from fastapi import APIRouter, Depends, Header, HTTPException, Query, Request, status
from fastapi.routing import APIRoute
from fastapi.sse import EventSourceResponse, ServerSentEvent
from ray.exceptions import TaskCancelledError
from sqlmodel import Session
from starlette.types import Message, Receive, Scope, Send

from auth.account_cache import watch, watch_without_keeping
from auth.deps import CurrentUser
from auth.security import API_KEY_PREFIX, InvalidToken
from auth.service import AuthError
from i18n import messages
from serving import event_journal as ev
from serving.event_hub import CREDENTIALS_REVOKED, END, EventHub, StreamEnd, Subscription, TooManyStreams
from serving.protocol import TaskEvent, TaskEvents
from serving.routes.common import not_found, owned_record, owns
from serving.state import ServiceState, StateDep


class StreamRoute(APIRoute):
    """A route for which a client going away is a normal end.

    Serve's ASGI ``receive`` raises ``TaskCancelledError`` (instead of answering ``http.disconnect``)
    when the client leaves while Starlette is waiting for that message, which reached the error
    handler as an ERROR with a traceback for about one in ten quick disconnects."""

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def receive_until_gone() -> Message:
            try:
                return await receive()
            except (TaskCancelledError, OSError):
                return {"type": "http.disconnect"}

        await super().handle(scope, receive_until_gone, send)


router = APIRouter(prefix="/tasks", tags=["events"], route_class=StreamRoute)
log = logging.getLogger("qwen_image.events")

RECONNECT_MS = 2000
CREDENTIAL_RECHECK_S = 60.0  # an open stream's credential is checked again at least this often
STREAM_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"description": "server-sent events", "content": {"text/event-stream": {}}},
    429: {"description": "too many open streams"},
}


def hub_for(state: ServiceState) -> EventHub:
    """The state's hub (one per ingress replica), made at its first use."""
    if state.events is None:
        caches = [cache for cache in (state.statuses, state.auth.accounts) if cache is not None]
        hub = EventHub(
            state,
            state.settings.max_event_streams_per_user,
            caches=caches,
            max_streams=state.settings.max_event_streams,
            max_streams_per_address=state.settings.max_event_streams_per_address,
        )
        hub.credential_holds = lambda credential: asyncio.to_thread(_credential_holds, state, credential)
        state.events = hub
    return state.events


def _credential_holds(state: ServiceState, credential: str) -> bool:
    """Whether ``credential`` (login token or API key) still stands for an active account."""
    with Session(state.engine, expire_on_commit=False) as session:
        try:
            state.auth.user_for_token(session, credential)
            return True
        except AuthError:
            return False


def _credential_expiry(state: ServiceState, credential: str) -> Optional[float]:
    """When a login token ends by itself (epoch seconds); None for API keys and no credential."""
    if not credential or credential.startswith(API_KEY_PREFIX):
        return None
    try:
        return float(state.auth.tokens.decode(credential).expires_at)
    except InvalidToken:
        return time.time()


ANNOUNCE_RETRIES_S = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)  # within the 30 s a kept row may live anyway


def connect_account_cache(state: ServiceState) -> None:
    """Keep the auth service's account rows current: the feed starts with the first read, and the
    accounts this process changes are dropped here at once and announced to the other replicas
    (announced also when no rows are kept: open event streams end on the announcement)."""
    accounts = state.auth.accounts
    with contextlib.suppress(RuntimeError):  # built on the ingress's loop (Serve); else the first request sets it
        state.auth.loop = asyncio.get_running_loop()

    def announce(user_ids: set[int]) -> None:  # after a commit, in whichever thread made it
        loop = state.auth.loop
        try:
            if loop is None or loop.is_closed():
                raise RuntimeError("no event loop to announce on")
            loop.call_soon_threadsafe(_start, sorted(user_ids))
        except RuntimeError as exc:  # never fails the commit that was made; the rows age out in 30 s
            log.warning("changed accounts %s not announced: %s", sorted(user_ids), exc)

    def _start(user_ids: list[int]) -> None:
        task = asyncio.ensure_future(_announce(user_ids))
        state.announcing.add(task)
        task.add_done_callback(state.announcing.discard)

    async def _announce(user_ids: list[int]) -> None:
        for delay in (*ANNOUNCE_RETRIES_S, None):
            try:
                await state.registry.accounts_changed(user_ids)
                return
            except Exception as exc:  # the registry restarts: its feed resets every cache anyway
                if delay is None:
                    log.warning("changed accounts %s not announced: %r", user_ids, exc)
                    return
                await asyncio.sleep(delay)

    if accounts is None:
        state.auth.change_announcer = watch_without_keeping(state.engine, announce)
        return
    state.auth.on_feed(lambda: hub_for(state).follow())
    watch(accounts, state.engine, announce)


BAD_LAST_EVENT_ID = messages.PARAM_INVALID(field="Last-Event-ID", reason=messages.NOT_AN_EVENT_ID)


def _after(last_event_id: Optional[str]) -> int:
    if last_event_id is None or not last_event_id.strip():
        return 0
    try:
        value = int(last_event_id.strip())
    except ValueError:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, BAD_LAST_EVENT_ID) from None
    if value < 0:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, BAD_LAST_EVENT_ID)
    return value


LastEventId = Annotated[Optional[str], Header(alias="Last-Event-ID", description="resume after this event id")]
Previews = Annotated[bool, Query(description="false leaves preview events out")]


@dataclass
class OpenStream:
    """A stream that is registered with the hub and holds its starting events."""

    hub: EventHub
    sub: Subscription
    keepalive: float
    ends_with_task: bool
    expires_at: Optional[float]

    def events(self) -> AsyncIterator[ServerSentEvent]:
        return _stream(self.hub, self.sub, self.keepalive, self.ends_with_task, self.expires_at)


async def _all_tasks_stream(
    request: Request, user: CurrentUser, state: StateDep, last_event_id: LastEventId = None, previews: Previews = True
) -> AsyncIterator[OpenStream]:
    after = _after(last_event_id)
    hub = hub_for(state)
    sub = Subscription(
        user_id=user.id, task_id=None, previews=previews, credential=_credential(request), address=_address(request)
    )
    await open_stream(hub, sub, after)
    try:
        yield _opened(state, hub, sub, ends_with_task=False)
    finally:  # a client going away ends only its stream; the tasks carry on
        close_stream(hub, sub)


async def _task_stream(
    request: Request,
    task_id: str,
    user: CurrentUser,
    state: StateDep,
    last_event_id: LastEventId = None,
    previews: Previews = True,
) -> AsyncIterator[OpenStream]:
    after = _after(last_event_id)
    hub = hub_for(state)
    sub = Subscription(
        user_id=user.id, task_id=task_id, previews=previews, credential=_credential(request), address=_address(request)
    )
    answer = await open_stream(hub, sub, after)
    try:
        await _start_task_stream(state, user, sub, answer, after)
        yield _opened(state, hub, sub, ends_with_task=True)
    finally:  # a client going away ends only its stream; the task carries on
        close_stream(hub, sub)


async def _start_task_stream(
    state: ServiceState, user, sub: Subscription, answer: Optional[TaskEvents], after: int
) -> None:
    """What a stream of one task starts with, beyond the registry's events (404 unless the caller's)."""
    task_id = str(sub.task_id)
    if answer is None:
        # Not in the registry's memory: a task that ended long ago (or none of this user's).
        terminal = await asyncio.to_thread(_stored_terminal, state, user, task_id)
        if terminal is not None and terminal.id > after:
            sub.offer(terminal)
        elif terminal is not None:
            # The client saw the end already; the stream still ends with it.
            sub.queue.put_nowait(terminal)
    elif not owns(user, answer.user_id):
        raise not_found()
    elif answer.finished:
        # A finished task answers its terminal event alone, whatever came before it.
        while not sub.queue.empty():
            sub.queue.get_nowait()
        for event in answer.events:
            if event.terminal:
                sub.queue.put_nowait(event)


@router.get("/events", responses=STREAM_RESPONSES, response_class=EventSourceResponse)
async def all_task_events(stream: Annotated[OpenStream, Depends(_all_tasks_stream)]) -> AsyncIterator[ServerSentEvent]:
    """One stream of all the caller's tasks: the state of the unfinished ones, then every change,
    until the credential it was opened with ends (then ``event: end``)."""
    async for item in stream.events():
        yield item


@router.get("/{task_id}/events", responses=STREAM_RESPONSES, response_class=EventSourceResponse)
async def task_events(stream: Annotated[OpenStream, Depends(_task_stream)]) -> AsyncIterator[ServerSentEvent]:
    """One task's events until its terminal event (at once for a finished task)."""
    async for item in stream.events():
        yield item


async def open_stream(hub: EventHub, sub: Subscription, after: int) -> Optional[TaskEvents]:
    """Register a stream (429 past the user's cap) and read its task's state; shared with /v1 streams."""
    try:
        hub.reserve(sub.user_id, sub.address)
    except TooManyStreams as exc:
        if exc.scope == "replica":
            raise HTTPException(
                status.HTTP_503_SERVICE_UNAVAILABLE, messages.EVENT_STREAMS_BUSY, headers={"Retry-After": "5"}
            ) from None
        message = (
            messages.EVENT_STREAMS_PER_ADDRESS_LIMIT(limit=hub.max_streams_per_address)
            if exc.scope == "address"
            else messages.EVENT_STREAMS_LIMIT(limit=hub.max_streams_per_user)
        )
        raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, message, headers={"Retry-After": "5"}) from None
    try:
        await hub.subscribe(sub)
        if sub.task_id is not None:
            sub.last_ids[sub.task_id] = after
        return await hub.initial_state(sub, after)
    except BaseException:
        close_stream(hub, sub)
        raise


def close_stream(hub: EventHub, sub: Subscription) -> None:
    hub.unsubscribe(sub)
    hub.release(sub.user_id, sub.address)


def _stored_terminal(state: ServiceState, user, task_id: str) -> Optional[TaskEvent]:
    with Session(state.engine) as session:
        record = owned_record(session, user, task_id)  # 404 unless the caller's (or an admin's)
        return ev.terminal_event_from_record(record)


def _address(request: Request) -> Optional[str]:
    """The client's address (``X-Forwarded-For`` counts only from ``TRUSTED_PROXIES``: serving.proxy)."""
    return request.client.host if request.client else None


def _credential(request: Request) -> str:
    return str(getattr(request.state, "credential", "") or "")


def _opened(state: ServiceState, hub: EventHub, sub: Subscription, *, ends_with_task: bool) -> OpenStream:
    return OpenStream(
        hub, sub, state.settings.event_keepalive_seconds, ends_with_task, _credential_expiry(state, sub.credential)
    )


def _end_event(reason: str) -> ServerSentEvent:
    return ServerSentEvent(event=END, data={"reason": reason})


def _sse(event: TaskEvent) -> ServerSentEvent:
    return ServerSentEvent(id=str(event.id), event=event.type, raw_data=ev.sse_data(event))


KEEPALIVE = ServerSentEvent(comment="keep-alive")


async def _stream(
    hub: EventHub, sub: Subscription, keepalive: float, ends_with_task: bool, expires_at: Optional[float] = None
) -> AsyncIterator[ServerSentEvent]:
    """The stream's items until its end; closing the subscription is its opener's (the dependency's)."""
    loop = asyncio.get_running_loop()
    next_check = loop.time() + CREDENTIAL_RECHECK_S
    yield ServerSentEvent(retry=RECONNECT_MS)
    while True:
        now = loop.time()
        if expires_at is not None and time.time() >= expires_at:
            yield _end_event(CREDENTIALS_REVOKED)  # the login token expired while the stream was open
            return
        if sub.credential and now >= next_check:
            next_check = now + CREDENTIAL_RECHECK_S
            await hub.recheck([sub])
        wait = keepalive
        if expires_at is not None:
            wait = min(wait, max(0.05, expires_at - time.time()))
        try:
            event = await asyncio.wait_for(sub.queue.get(), timeout=wait)
        except asyncio.TimeoutError:
            yield KEEPALIVE
            continue
        if isinstance(event, StreamEnd):
            yield _end_event(event.reason)
            return
        yield _sse(event)
        if ends_with_task and event.terminal:
            return


__all__ = ["router", "hub_for", "open_stream", "close_stream"]
