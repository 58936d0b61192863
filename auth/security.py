"""Password hashing (argon2id) and JWT tokens (HS256, algorithm pinned, with expiry)."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import jwt
from argon2 import PasswordHasher, profiles
from argon2.exceptions import InvalidHashError, VerificationError

ALGORITHM = "HS256"
# Replicas' clocks differ a little: a token issued "a second from now" by another replica is fine.
CLOCK_SKEW_LEEWAY_S = 30

HASH_PROFILES = {
    # RFC 9106's low-memory recommendation: argon2id, 64 MiB, 3 passes.
    "rfc_9106_low_memory": profiles.RFC_9106_LOW_MEMORY,
    # Only for test suites: argon2id with minimal cost.
    "cheapest": profiles.CHEAPEST,
}


class Passwords:
    """Hashes and verifies passwords; reports when a stored hash should be upgraded."""

    def __init__(self, profile: str = "rfc_9106_low_memory", max_concurrent: Optional[int] = None):
        self._hasher = PasswordHasher.from_parameters(HASH_PROFILES[profile])
        # Each argon2 computation takes the profile's memory (64 MiB) and its lanes' threads: a
        # burst of log-ins waits here for a turn instead of claiming one of those per request
        # thread at once (40 threads would be 2.5 GiB and a starved CPU).
        self._turns = threading.BoundedSemaphore(max_concurrent or max(2, os.cpu_count() or 2))
        # Verifying against this when a user does not exist keeps login timing uniform.
        self._dummy_hash = self._hasher.hash(secrets.token_hex(16))

    def hash(self, password: str) -> str:
        with self._turns:
            return self._hasher.hash(password)

    def verify(self, stored_hash: Optional[str], password: str) -> tuple[bool, Optional[str]]:
        """Returns (ok, new_hash): ``new_hash`` is set when the parameters changed since hashing."""
        try:
            with self._turns:
                self._hasher.verify(stored_hash or self._dummy_hash, password)
        except (VerificationError, InvalidHashError):
            return False, None
        if stored_hash is None:
            return False, None
        if self._hasher.check_needs_rehash(stored_hash):
            return True, self.hash(password)
        return True, None


class InvalidToken(Exception):
    """The token is malformed, forged, expired or of the wrong algorithm."""


@dataclass(frozen=True)
class TokenClaims:
    user_id: int
    token_version: int
    issued_at: int
    expires_at: int
    key: str = ""
    jti: str = ""  # the token's own id, by which log-out ends it


class Tokens:
    """Issues and checks HS256 JWTs carrying the user id, the user's token version and token key."""

    def __init__(self, secret: str, ttl_seconds: int = 86400):
        if len(secret) < 32:
            raise ValueError("JWT secret must be at least 32 characters")
        self._secret = secret
        self.ttl_seconds = ttl_seconds

    def issue(self, user_id: int, token_version: int, now: Optional[float] = None, key: str = "") -> str:
        iat = int(now if now is not None else time.time())
        payload = {
            "sub": str(user_id),
            "ver": token_version,
            "key": key,
            "jti": secrets.token_hex(8),
            "iat": iat,
            "exp": iat + self.ttl_seconds,
        }
        return jwt.encode(payload, self._secret, algorithm=ALGORITHM)

    def decode(self, token: str) -> TokenClaims:
        try:
            payload = jwt.decode(
                token,
                self._secret,
                algorithms=[ALGORITHM],
                options={"require": ["exp", "iat", "sub"]},
                leeway=CLOCK_SKEW_LEEWAY_S,
            )
            return TokenClaims(
                int(payload["sub"]),
                int(payload.get("ver", 0)),
                int(payload["iat"]),
                int(payload["exp"]),
                str(payload.get("key", "")),
                str(payload.get("jti", "")),
            )
        except (jwt.PyJWTError, ValueError, TypeError) as exc:
            raise InvalidToken(str(exc)) from None


def load_or_create_secret(data_dir: Path) -> str:
    """The JWT secret kept under the data dir (0600), created on first use."""
    path = Path(data_dir) / "jwt_secret"
    try:
        secret = path.read_text().strip()
        if secret:
            return secret
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    candidate = secrets.token_urlsafe(48)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        # Another process won the race; use its secret.
        for _ in range(50):
            secret = path.read_text().strip()
            if secret:
                return secret
            time.sleep(0.05)
        raise RuntimeError(f"{path} exists but is empty") from None
    with os.fdopen(fd, "w") as fh:
        fh.write(candidate)
    return candidate


API_KEY_PREFIX = "qis-"
API_KEY_DISPLAY_CHARS = 12  # "qis-" and the first 8 random characters: enough to tell keys apart


def new_api_key() -> str:
    """A new API key: ``qis-`` and 32 random bytes (URL-safe base64)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(key: str) -> str:
    """SHA-256 of the key, the only form in which it is stored.

    A slow password hash (argon2) is for low-entropy secrets that can be guessed; a key of 256
    random bits cannot be, so one fast hash is as safe, and it lets every request find its key
    by an index lookup instead of spending ~50 ms of argon2 per request.
    """
    return hashlib.sha256(key.encode()).hexdigest()
