"""Brute-force protection: failed logins counted per username and per client address."""

from __future__ import annotations

import threading
import time
from collections import defaultdict, deque
from collections.abc import Callable
from typing import Optional


class LoginThrottle:
    """Refuses logins for a key after ``max_failures`` failures within ``window_seconds``."""

    def __init__(self, max_failures: int = 10, window_seconds: float = 300.0,
                 clock: Callable[[], float] = time.monotonic):
        self.max_failures = max_failures
        self.window = window_seconds
        self._clock = clock
        self._failures: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def _prune(self, key: str, now: float) -> deque[float]:
        q = self._failures[key]
        while q and q[0] <= now - self.window:
            q.popleft()
        if not q:
            self._failures.pop(key, None)
        return q

    def retry_after(self, key: str) -> Optional[int]:
        """Seconds until a blocked key may try again, or None if it is not blocked."""
        if self.max_failures <= 0:
            return None
        now = self._clock()
        with self._lock:
            q = self._prune(key, now)
            if len(q) < self.max_failures:
                return None
            return max(1, int(q[0] + self.window - now) + 1)

    def record_failure(self, key: str) -> None:
        with self._lock:
            self._failures[key].append(self._clock())

    def reset(self, key: str) -> None:
        with self._lock:
            self._failures.pop(key, None)
