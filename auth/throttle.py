"""Brute-force protection with growing delays, counted in the database so every ingress replica sees it.

Following OWASP's authentication cheat sheet, a run of failures never locks an account: failures
are counted per (account, client address), so the owner logging in from elsewhere is not held up,
and per client address, against spraying many accounts. Past ``free_failures`` each further failure
doubles the wait before the next attempt from there (1 s, 2 s, 4 s … up to ``max_delay``); a
counter is forgotten ``window`` seconds after its last failure, and a successful log-in clears the
(account, address) one.

:class:`AddressRateLimit` is the plain kind: at most ``limit`` requests (registrations, log-in
attempts) per client address in a fixed window, beyond which a 429 says when the window ends.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Optional

from sqlalchemy import update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, delete

from storage import session_scope
from storage.tables import AddressCounter, LoginFailure, utcnow

BASE_DELAY_S = 1.0


def throttle_key(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode()).hexdigest()


class LoginThrottle:
    """Failures per key in the ``login_failures`` table; ``max_failures`` of 0 turns it off."""

    def __init__(
        self,
        engine: Engine,
        free_failures: int = 10,
        window_seconds: float = 300.0,
        max_delay_seconds: Optional[float] = None,
        clock: Callable[[], datetime] = utcnow,
    ):
        self.engine = engine
        self.free_failures = free_failures
        self.window = timedelta(seconds=window_seconds)
        self.max_delay = max_delay_seconds if max_delay_seconds is not None else window_seconds
        self._clock = clock

    def delay_after(self, failures: int) -> float:
        """Seconds to wait after ``failures`` failures in a row."""
        over = failures - self.free_failures
        if over < 0:
            return 0.0
        return min(self.max_delay, BASE_DELAY_S * 2 ** min(over, 30))

    def retry_after(self, key: str) -> Optional[int]:
        """Whole seconds until ``key`` may try again, or None when it may now."""
        if self.free_failures <= 0:
            return None
        with Session(self.engine) as session:
            row = session.get(LoginFailure, key)
        if row is None:
            return None
        now = self._clock()
        if now - row.last_failure_at > self.window:
            return None
        wait = (row.last_failure_at - now).total_seconds() + self.delay_after(row.failures)
        return math.ceil(wait) if wait > 0 else None

    def record_failure(self, key: str) -> None:
        if self.free_failures <= 0:
            return
        now = self._clock()
        for _ in range(3):  # another replica may insert the same key between our update and insert
            with session_scope(self.engine) as session:
                row = session.get(LoginFailure, key, with_for_update=True)
                if row is not None:
                    fresh = now - row.last_failure_at > self.window
                    session.exec(
                        update(LoginFailure)
                        .where(col(LoginFailure.key) == key)
                        .values(failures=1 if fresh else LoginFailure.failures + 1, last_failure_at=now)
                    )
                    return
            try:
                with session_scope(self.engine) as session:
                    # Expired counters go as new ones come, so the table holds one window's worth.
                    session.exec(delete(LoginFailure).where(col(LoginFailure.last_failure_at) < now - self.window))
                    session.add(LoginFailure(key=key, failures=1, last_failure_at=now))
                return
            except IntegrityError:
                continue

    def reset(self, key: str) -> None:
        with session_scope(self.engine) as session:
            session.exec(delete(LoginFailure).where(col(LoginFailure.key) == key))


class AddressRateLimit:
    """At most ``limit`` hits per key in a window of ``window_seconds``, counted in the
    ``address_counters`` table (so every replica sees them); ``limit`` of 0 turns it off."""

    def __init__(self, engine: Engine, limit: int, window_seconds: float, clock: Callable[[], datetime] = utcnow):
        self.engine = engine
        self.limit = limit
        self.window = timedelta(seconds=window_seconds)
        self._clock = clock

    def hit(self, key: str) -> Optional[int]:
        """Count one request under ``key``; None when it is allowed, else whole seconds until the
        window ends (the request is then not counted)."""
        if self.limit <= 0:
            return None
        now = self._clock()
        table = AddressCounter
        for _ in range(3):  # each step is one atomic statement; a lost race tries the next one again
            with session_scope(self.engine) as session:
                counted = session.exec(
                    update(table)
                    .where(col(table.key) == key, col(table.window_ends_at) > now, col(table.count) < self.limit)
                    .values(count=table.count + 1)
                )
                if counted.rowcount:
                    return None
                row = session.get(table, key)
                if row is not None and row.window_ends_at > now:
                    if row.count >= self.limit:
                        return max(1, math.ceil((row.window_ends_at - now).total_seconds()))
                    # Committed by another request after the UPDATE above looked (READ COMMITTED takes
                    # a snapshot per statement): not a refusal, count it on the next try.
                    continue
                if row is not None:  # its window is over: a new one starts with this request
                    restarted = session.exec(
                        update(table)
                        .where(col(table.key) == key, col(table.window_ends_at) <= now)
                        .values(count=1, window_ends_at=now + self.window)
                    )
                    if restarted.rowcount:
                        return None
                    continue
            try:
                with session_scope(self.engine) as session:
                    # Rows whose window is over go as new ones come, so the table holds current ones.
                    session.exec(delete(table).where(col(table.window_ends_at) <= now))
                    session.add(table(key=key, count=1, window_ends_at=now + self.window))
                return None
            except IntegrityError:
                continue
        return None
