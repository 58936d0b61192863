"""Signed, expiring result URLs (`/v1`'s ``response_format=url``).

A URL names the task, the image and its format, and carries an expiry time and an HMAC-SHA256 of
all of them. The signing key is derived from the service's JWT secret (which comes from the
environment or the data dir, never from Serve's config), under its own label, so a URL signature
can never stand in for a token. Task ids are random UUIDs and the signature has 256 bits: a URL
cannot be guessed, only handed on, and it stops working when it expires.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from typing import Optional

SIGNING_LABEL = b"qwen-image result urls v1"


class UrlSigner:
    def __init__(self, secret: str, ttl_seconds: int):
        self._key = hmac.new(secret.encode(), SIGNING_LABEL, hashlib.sha256).digest()
        self.ttl_seconds = ttl_seconds

    def _mac(self, task_id: str, filename: str, compression: Optional[int], expires: int) -> str:
        message = f"{task_id}/{filename}|{'' if compression is None else compression}|{expires}".encode()
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def query(self, task_id: str, filename: str, compression: Optional[int], now: Optional[float] = None) -> dict:
        """The query parameters that make ``/v1/images/files/{task_id}/{filename}`` fetchable."""
        expires = int(now if now is not None else time.time()) + self.ttl_seconds
        query = {"expires": str(expires), "signature": self._mac(task_id, filename, compression, expires)}
        if compression is not None:
            query["compression"] = str(compression)
        return query

    def check(
        self,
        task_id: str,
        filename: str,
        compression: Optional[int],
        expires: int,
        signature: str,
        now: Optional[float] = None,
    ) -> Optional[str]:
        """None when the URL is genuine and current; otherwise why not ("signature" or "expired")."""
        # Bytes: compare_digest refuses str with non-ASCII characters, and a URL can hold anything.
        if not hmac.compare_digest(self._mac(task_id, filename, compression, expires).encode(), signature.encode()):
            return "signature"
        if expires < (now if now is not None else time.time()):
            return "expired"
        return None
