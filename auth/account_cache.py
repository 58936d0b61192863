"""Accounts an ingress replica has read, so that checking a token need not read the database.

Every authenticated request read its user's row (active? token version? token key?) in a worker
thread: on a Ray Serve replica that hop and the read cost more than the rest of a status read. For
``GET``/``HEAD`` requests with a login token the ingress now keeps the rows it read and checks the
token against them; the signature and expiry are checked on every request as before.

A kept row is answered only while it is known current, by the same rule as the status cache
(:mod:`serving.status_cache`): **never a row older than the last change this ingress was told
of.** Changes reach it two ways: a change committed in this process (every ORM unit-of-work write
of a ``User`` row — ``session.add``/``session.delete``: disable, password, admin flag, deletion,
quotas; bulk UPDATE or DELETE statements on ``users`` are not seen, and the code base has none,
which a test keeps so) drops the row at once, before the route
that made it answers, and is announced on the registry's change feed (:class:`AccountsChanged`), which
every other ingress replica follows; they drop the row when the feed brings it, milliseconds
later. While the feed has a gap nothing is answered or kept from here, and a row is re-read after
``max_age_s`` in any case (a row changed outside the service, by SQL, is current again after that).

A kept row answers only for the login tokens (by token id, ``jti``) that were checked against the
database since the account last changed: log-out ends one token by recording its id and announcing
the account as changed, so every replica checks each of that user's tokens against the database
again before it answers from a kept row.

Requests that change state, and API keys (``qis-…``), always read the database.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Optional

from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session as OrmSession

from storage.tables import User


@dataclass(frozen=True)
class AccountsChanged:
    """The change feed's notice "these accounts changed", published by the registry for every ingress."""

    user_ids: tuple[int, ...]


MAX_AGE_S = 30.0
MAX_TOKENS_PER_ACCOUNT = 64  # beyond, further tokens of the account are checked in the database


class AccountCache:
    """User rows by id, bounded, safe to use from the event loop and worker threads at once."""

    def __init__(
        self, capacity: int = 10_000, max_age_s: float = MAX_AGE_S, clock: Callable[[], float] = time.monotonic
    ):
        self.capacity = capacity
        self.max_age_s = max_age_s
        self.clock = clock
        self._lock = threading.Lock()
        self.entries: OrderedDict[int, tuple[float, User]] = OrderedDict()
        self.checked_tokens: dict[int, set[str]] = {}  # user id -> ids of tokens the database accepted
        self.generation = 0
        self.changed: dict[int, int] = {}  # user id -> generation of its last change
        self.floor = 0
        self.live = False
        self.engine: Optional[Engine] = None  # the database whose rows these are (see watch())
        self.announce: Callable[[set[int]], None] = lambda user_ids: None

    def get(self, user_id: int, token_id: str = "") -> Optional[User]:
        with self._lock:
            if not self.live:
                return None
            found = self.entries.get(user_id)
            if found is None:
                return None
            read_at, user = found
            if self.clock() - read_at > self.max_age_s:
                del self.entries[user_id]
                self.checked_tokens.pop(user_id, None)
                return None
            if token_id not in self.checked_tokens.get(user_id, ()):
                return None
            self.entries.move_to_end(user_id)
            return user

    def token(self) -> Optional[int]:
        """Taken before reading a row from the database, given back to :meth:`put` with it."""
        with self._lock:
            return self.generation if self.live else None

    def put(self, user: User, token: Optional[int], token_id: str = "") -> None:
        """Keep ``user``, and that the login token ``token_id`` was accepted, unless its account
        changed (or the feed had a gap) since ``token``."""
        if user.id is None:
            return
        with self._lock:
            if token is None or not self.live or token < self.floor or self.changed.get(user.id, -1) > token:
                return
            if user.id not in self.entries:
                self.checked_tokens.pop(user.id, None)
            self.entries[user.id] = (self.clock(), user)
            self.entries.move_to_end(user.id)
            checked = self.checked_tokens.setdefault(user.id, set())
            if len(checked) < MAX_TOKENS_PER_ACCOUNT:
                checked.add(token_id)
            while len(self.entries) > self.capacity:
                dropped, _ = self.entries.popitem(last=False)
                self.checked_tokens.pop(dropped, None)

    def accounts_changed(self, user_ids: Iterable[int]) -> None:
        with self._lock:
            for user_id in user_ids:
                self.generation += 1
                self.changed[user_id] = self.generation
                self.entries.pop(user_id, None)
                self.checked_tokens.pop(user_id, None)
            if len(self.changed) > 4 * self.capacity:  # forget old changes: reads from before them are refused
                self.changed.clear()
                self.floor = self.generation

    def apply(self, event: object) -> None:
        """One item of the registry's change feed (only :class:`AccountsChanged` concerns accounts)."""
        if isinstance(event, AccountsChanged):
            self.accounts_changed(event.user_ids)

    def reset(self, live: bool) -> None:
        with self._lock:
            self.generation += 1
            self.floor = self.generation
            self.changed.clear()
            self.entries.clear()
            self.checked_tokens.clear()
            self.live = live


# ---------------------------------------------------------------------- changes made in this process

_caches: weakref.WeakSet[AccountCache] = weakref.WeakSet()
_hooked = False


def watch(cache: AccountCache, engine: Engine, announce: Callable[[set[int]], None]) -> None:
    """Drop from ``cache`` every ``User`` row a session of this process changes in ``engine``'s
    database (after the flush, and again after the commit: a row read in between was still the old
    one), and after the commit ``announce`` the ids (to the other replicas, through the feed)."""
    global _hooked
    cache.engine = engine
    cache.announce = announce
    _caches.add(cache)
    if not _hooked:
        event.listen(OrmSession, "after_flush", _after_flush)
        event.listen(OrmSession, "after_commit", _after_commit)
        event.listen(OrmSession, "after_rollback", _after_rollback)
        _hooked = True


def watch_without_keeping(engine: Engine, announce: Callable[[set[int]], None]) -> AccountCache:
    """With no rows kept (``ACCOUNT_CACHE_SIZE=0``) changes are still announced: open event streams
    on every replica end on them. Returns the empty cache (never live, so it answers nothing) that
    does it; the caller keeps a reference, since watched caches are held weakly."""
    cache = AccountCache(capacity=0)
    watch(cache, engine, announce)
    return cache


def _watching(session: OrmSession) -> list[AccountCache]:
    bind = session.get_bind()
    return [cache for cache in list(_caches) if cache.engine is bind]


def _after_flush(session: OrmSession, _context: Any) -> None:
    ids = {obj.id for obj in (*session.dirty, *session.deleted, *session.new) if isinstance(obj, User) and obj.id}
    if ids:
        session.info.setdefault("changed_accounts", set()).update(ids)
        for cache in _watching(session):
            cache.accounts_changed(ids)


def _after_commit(session: OrmSession) -> None:
    ids = session.info.pop("changed_accounts", None)
    if ids:
        for cache in _watching(session):
            cache.accounts_changed(ids)
            cache.announce(set(ids))


def announce_change(engine: Engine, user_ids: set[int]) -> None:
    """Tell every cache of ``engine``'s rows, here and on the other replicas, that these accounts'
    credentials changed though their rows did not (a key revoked, a token logged out)."""
    for cache in [cache for cache in list(_caches) if cache.engine is engine]:
        cache.accounts_changed(user_ids)
        cache.announce(set(user_ids))


def _after_rollback(session: OrmSession) -> None:
    session.info.pop("changed_accounts", None)  # nothing changed after all (the rows were dropped anyway)


__all__ = ["AccountCache", "AccountsChanged", "MAX_AGE_S", "watch", "watch_without_keeping", "announce_change"]
