"""The ingress side of task events: one long poll to the registry per ingress replica, fanned out
to the open event streams of this replica and to its status cache (:mod:`serving.status_cache`).

An idle stream costs nothing but its open connection and a keep-alive comment now and then: the
hub's single poll waits in the registry until something is published (or for
``POLL_TIMEOUT_S``), and no poll runs at all while this replica has no stream open. Each stream
starts from the registry's account of its task's state (``task_events``/``user_events``),
registered *before* that read so that nothing published in between is lost; events are
de-duplicated by id per task. After a registry restart (a new epoch) or a cursor that fell out of
the journal, every open stream reads its state again.

With a status cache the poll runs all the time (the cache may keep a status only while the feed
runs without a gap); previews, which only streams want, travel only while a stream wants them,
and while no stream is open polls are at least ``CACHE_ONLY_POLL_INTERVAL_S`` apart, so a busy
registry answers an ingress's poll a bounded number of times per second.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

from auth.account_cache import AccountsChanged
from serving import event_journal as ev
from serving.protocol import FeedItem, QueueMoved, TaskEvent, TaskEvents

log = logging.getLogger("qwen_image.events")

POLL_TIMEOUT_S = 25.0
POSITIONS_DELAY_S = 0.5  # queue-position refreshes are gathered for this long
QUEUE_LIMIT = 256  # events waiting for one slow client; beyond it, only terminal events are kept
CACHE_ONLY_POLL_INTERVAL_S = 0.01
# The event that ends a stream the service closes, and why (``{"reason": ...}``).
END = "end"
CREDENTIALS_REVOKED = "credentials_revoked"


@dataclass(frozen=True)
class StreamEnd:
    """The last item of a stream the service ends (``event: end``, ``data: {"reason": ...}``)."""

    reason: str


@dataclass(eq=False)
class Subscription:
    """One open stream: of one task (``task_id``) or of all of a user's tasks."""

    user_id: Optional[int]
    task_id: Optional[str]
    previews: bool
    last_ids: dict[str, int] = field(default_factory=dict)
    queue: asyncio.Queue[TaskEvent | StreamEnd] = field(default_factory=asyncio.Queue)
    queued_tasks: set[str] = field(default_factory=set)  # tasks last seen queued (positions may move)
    credential: str = ""  # what the stream was opened with: checked again while it is open
    address: Optional[str] = None  # the client's address, for the per-address cap
    decoded_previews: bool = False  # a /v1 stream: also the full-size partial images decoded by the VAE
    ended: Optional[str] = None  # why the service ended the stream (its last event says so)

    def end(self, reason: str) -> None:
        """End the stream: what is still queued is dropped, and its next and last event is ``end``."""
        if self.ended is None:
            self.ended = reason
            while not self.queue.empty():
                self.queue.get_nowait()
            self.queue.put_nowait(StreamEnd(reason))

    def offer(self, event: TaskEvent) -> None:
        if self.ended is not None:
            return
        task_id = event.task_id
        if event.id <= self.last_ids.get(task_id, 0):
            return
        if event.type == ev.PREVIEW and not (
            self.previews and (self.decoded_previews or not getattr(event.data, "decoded", False))
        ):
            return
        if self.queue.qsize() >= QUEUE_LIMIT and not event.terminal:
            return  # a client that does not read loses intermediate states, never the end
        self.last_ids[task_id] = event.id
        if event.type == ev.QUEUED:
            self.queued_tasks.add(task_id)
        else:
            self.queued_tasks.discard(task_id)
        self.queue.put_nowait(event)


class FeedCache(Protocol):
    """What the hub keeps current: told every event, reset when the feed starts afresh or fails."""

    live: bool

    def apply(self, event: FeedItem) -> None: ...

    def reset(self, live: bool) -> None: ...


class TooManyStreams(Exception):
    """The user, the client address or the replica already has the allowed number of streams open
    (``scope``: ``user``, ``address`` or ``replica``)."""

    def __init__(self, scope: str = "user"):
        super().__init__(scope)
        self.scope = scope


class EventHub:
    """Fans the registry's events out to this replica's streams (one instance per ingress replica)."""

    def __init__(
        self,
        state: Any,
        max_streams_per_user: int,
        caches: Sequence[FeedCache] = (),
        max_streams: Optional[int] = None,
        max_streams_per_address: Optional[int] = None,
    ):
        self.state = state
        self.max_streams_per_user = max_streams_per_user
        self.max_streams = max_streams
        self.max_streams_per_address = max_streams_per_address
        self.open_per_address: Counter[str] = Counter()
        # Kept current by the poll, which then never stops (statuses, accounts): each is told every
        # event, and reset (live or not) whenever the feed starts afresh or fails.
        self.caches = tuple(caches)
        self.by_task: dict[str, set[Subscription]] = defaultdict(set)
        self.by_user: dict[Optional[int], set[Subscription]] = defaultdict(set)
        self.open_per_user: Counter[Optional[int]] = Counter()
        self._epoch: Optional[str] = None
        self._cursor: Optional[int] = None
        self._synced = asyncio.Event()
        self._wanted = asyncio.Event()
        self._loop_task: Optional[asyncio.Task] = None
        self._positions_task: Optional[asyncio.Task] = None
        self.polls = 0  # long polls sent (benchmarks read it)
        self.preview_streams = 0  # open streams that want previews
        # Whether a stream's credential still holds (set by the ingress); asked again for the open
        # streams of every account the feed says changed (password, disable, deletion, key revoked,
        # log-out), so they end within moments on every replica.
        self.credential_holds: Optional[Callable[[str], Awaitable[bool]]] = None
        self._checks: set[asyncio.Task] = set()

    # ------------------------------------------------------------------ streams

    def reserve(self, user_id: Optional[int], address: Optional[str] = None) -> None:
        """Count one more stream of ``user_id`` from ``address``; raises TooManyStreams beyond a cap."""
        if self.max_streams is not None and sum(self.open_per_user.values()) >= self.max_streams:
            raise TooManyStreams("replica")
        if (
            address is not None
            and self.max_streams_per_address is not None
            and self.open_per_address[address] >= self.max_streams_per_address
        ):
            raise TooManyStreams("address")
        if self.open_per_user[user_id] >= self.max_streams_per_user:
            raise TooManyStreams("user")
        self.open_per_user[user_id] += 1
        if address is not None:
            self.open_per_address[address] += 1

    def release(self, user_id: Optional[int], address: Optional[str] = None) -> None:
        self.open_per_user[user_id] -= 1
        if self.open_per_user[user_id] <= 0:
            del self.open_per_user[user_id]
        if address is not None:
            self.open_per_address[address] -= 1
            if self.open_per_address[address] <= 0:
                del self.open_per_address[address]

    async def subscribe(self, sub: Subscription) -> None:
        """Start delivering published events to ``sub`` (the caller reads the initial state after)."""
        self._ensure_loop()
        self.preview_streams += sub.previews
        if sub.task_id is not None:
            self.by_task[sub.task_id].add(sub)
        else:
            self.by_user[sub.user_id].add(sub)
        self._wanted.set()
        # Wait until the poll has a cursor from before this subscription: from then on nothing
        # published can be missed (what came earlier is in the state the caller reads next).
        await self._synced.wait()

    def unsubscribe(self, sub: Subscription) -> None:
        if sub.task_id is not None:
            subs = self.by_task.get(sub.task_id)
            if subs is not None and sub in subs:
                self.preview_streams -= sub.previews
                subs.discard(sub)
                if not subs:
                    del self.by_task[sub.task_id]
        else:
            subs = self.by_user.get(sub.user_id)
            if subs is not None and sub in subs:
                self.preview_streams -= sub.previews
                subs.discard(sub)
                if not subs:
                    del self.by_user[sub.user_id]
        if not self._listening():
            self._wanted.clear()

    async def initial_state(self, sub: Subscription, after_id: int) -> Optional[TaskEvents]:
        """Read the subscription's starting events from the registry and offer them; a stream of one
        task gets the registry's answer back (None: the registry does not hold the task)."""
        if sub.task_id is not None:
            answer: Optional[TaskEvents] = await self.state.registry.task_events(sub.task_id, after_id)
            if answer is not None:
                for event in answer.events:
                    sub.offer(event)
            return answer
        for event in await self.state.registry.user_events(sub.user_id, after_id):
            sub.offer(event)
        return None

    # ------------------------------------------------------------------ the long poll

    def _listening(self) -> bool:
        return bool(self.by_task or self.by_user or self.caches)

    def follow(self) -> None:
        """Start the poll now (the caches need it before any stream opens; call on the event loop)."""
        self._wanted.set()
        self._ensure_loop()

    def _reset_caches(self, live: bool) -> None:
        for cache in self.caches:
            cache.reset(live=live)

    def _ensure_loop(self) -> None:
        if self._loop_task is None or self._loop_task.done():
            self._loop_task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        try:
            await self._poll_forever()
        finally:  # stopped by an error or at shutdown: the status cache knows nothing current any more
            self._reset_caches(live=False)

    async def _poll_forever(self) -> None:
        failures = 0
        loop = asyncio.get_running_loop()
        last_poll = 0.0
        while True:
            if not self._listening():
                # Nobody listens here: no poll at all. The cursor is dropped, and the next stream
                # waits for a fresh one (what happened meanwhile is in the state it reads).
                self._synced.clear()
                self._cursor = None
                await self._wanted.wait()
            if not self.by_task and not self.by_user:
                # Only the status cache listens: a few milliseconds of events per poll at most.
                wait = last_poll + CACHE_ONLY_POLL_INTERVAL_S - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
            last_poll = loop.time()
            try:
                # No wait while a cache is off (a first poll, or after a failure): it is back at once.
                quick = self._cursor is None or not all(cache.live for cache in self.caches)
                answer = await self.state.registry.poll_events(
                    self._epoch,
                    self._cursor,
                    0.0 if quick else POLL_TIMEOUT_S,
                    self.preview_streams > 0,
                )
                failures = 0
            except Exception as exc:  # the registry restarts (a 503 from its client): try again soon
                failures += 1
                self._reset_caches(live=False)  # nothing is known to be current until the feed runs again
                if failures == 1 or failures % 50 == 0:
                    log.warning("event poll failed (%d in a row): %r", failures, exc)
                await asyncio.sleep(min(0.2 * failures, 2.0))
                continue
            self.polls += 1
            first = self._cursor is None
            self._epoch, self._cursor = answer.epoch, answer.cursor
            resync = answer.reset and not first
            if answer.reset or not all(cache.live for cache in self.caches):
                # From this cursor on, the feed brings every change; while the streams' states are
                # read again no poll runs, so the cache waits for that too.
                self._reset_caches(live=not resync)
            for event in answer.events:
                self._dispatch(event)
            if resync:
                await self._resync()
                self._reset_caches(live=True)
            self._synced.set()

    async def _resync(self) -> None:
        """After a registry restart or an overflow: read every open stream's state again."""
        subs = [s for group in (*self.by_task.values(), *self.by_user.values()) for s in group]
        for sub in subs:
            try:
                if sub.task_id is None:
                    after = min(sub.last_ids.values(), default=0)
                else:
                    after = sub.last_ids.get(sub.task_id, 0)
                answer = await self.initial_state(sub, after)
                if sub.task_id is not None and answer is None:
                    # The new registry no longer holds the task: it finished; its record says how.
                    terminal = await asyncio.to_thread(self._terminal_from_db, sub.task_id)
                    if terminal is not None:
                        sub.offer(terminal)
            except Exception:
                log.exception("re-reading a stream's state failed")

    def _terminal_from_db(self, task_id: str) -> Optional[TaskEvent]:
        from sqlmodel import Session

        from storage.tasks import get_task_record

        with Session(self.state.engine) as session:
            record = get_task_record(session, task_id)
            return ev.terminal_event_from_record(record) if record else None

    def _dispatch(self, event: FeedItem) -> None:
        for cache in self.caches:
            cache.apply(event)
        if isinstance(event, AccountsChanged):
            self._check_streams_of(set(event.user_ids))
        elif isinstance(event, QueueMoved):
            self._schedule_positions()
        elif isinstance(event, TaskEvent):
            for sub in self.by_task.get(event.task_id, ()):
                sub.offer(event)
            for sub in self.by_user.get(event.user_id, ()):
                sub.offer(event)

    def _check_streams_of(self, user_ids: set[int]) -> None:
        subs = [
            s
            for group in (*self.by_task.values(), *self.by_user.values())
            for s in group
            if s.user_id in user_ids and s.credential
        ]
        if subs and self.credential_holds is not None:
            task = asyncio.create_task(self.recheck(subs))
            self._checks.add(task)
            task.add_done_callback(self._checks.discard)

    async def recheck(self, subs: Sequence[Subscription]) -> None:
        """End the streams among ``subs`` whose credential no longer holds."""
        if self.credential_holds is None:
            return
        verdicts: dict[str, bool] = {}
        for sub in subs:
            if sub.credential not in verdicts:
                try:
                    verdicts[sub.credential] = await self.credential_holds(sub.credential)
                except Exception as exc:  # the database is away: the periodic check tries again
                    log.warning("checking an event stream's credential failed: %r", exc)
                    continue
            if not verdicts[sub.credential]:
                sub.end(CREDENTIALS_REVOKED)

    def _schedule_positions(self) -> None:
        if self._positions_task is None or self._positions_task.done():
            self._positions_task = asyncio.create_task(self._refresh_positions())

    async def _refresh_positions(self) -> None:
        """Ask for new positions of the queued tasks streamed here (their events come by the poll)."""
        await asyncio.sleep(POSITIONS_DELAY_S)
        queued = {
            t for group in (*self.by_task.values(), *self.by_user.values()) for s in group for t in s.queued_tasks
        }
        if queued:
            try:
                await self.state.registry.refresh_positions(sorted(queued))
            except Exception as exc:
                log.warning("refreshing queue positions failed: %r", exc)


__all__ = ["EventHub", "Subscription", "StreamEnd", "TooManyStreams", "POLL_TIMEOUT_S", "END", "CREDENTIALS_REVOKED"]
