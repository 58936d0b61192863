"""Users, passwords and tokens: what the /auth routes and the current-user dependency use."""

from __future__ import annotations

import asyncio
import logging
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from typing import Optional

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from auth.account_cache import AccountCache, announce_change
from auth.security import API_KEY_PREFIX, InvalidToken, Passwords, Tokens, hash_api_key
from auth.throttle import AddressRateLimit, LoginThrottle, throttle_key
from storage import session_scope, utcnow
from storage.api_keys import find_key_with_user, keys_after_password_change, touch_key
from storage.flags import REGISTRATION_OPEN, get_flag, set_flag
from storage.revoked_tokens import is_revoked, revoke_token
from storage.tables import User, username_key
from storage.users import count_users, get_user, get_user_by_username

log = logging.getLogger("qwen_image.auth")

# A key's last-used time is written at most this often: one UPDATE per request would cost more
# than the rest of the authentication.
LAST_USED_RESOLUTION = timedelta(minutes=1)

DEFAULT_ADMIN_PASSWORD = "admin123"


class AuthError(Exception):
    """Authentication failed; ``code`` picks the client message."""

    def __init__(self, code: str, retry_after: Optional[int] = None):
        super().__init__(code)
        self.code = code
        self.retry_after = retry_after


@dataclass
class AuthConfig:
    enabled: bool = True
    allow_registration: bool = True
    admin_username: str = "admin"
    admin_password: Optional[str] = None
    token_ttl_seconds: int = 86400
    hash_profile: str = "rfc_9106_low_memory"
    login_max_failures: int = 10
    login_max_failures_per_address: int = 100
    login_window_seconds: float = 300.0
    login_max_delay_seconds: Optional[float] = None  # default: the window
    # Per client address, whatever the outcome (0: no limit): registrations, and log-in attempts
    # (each costs a slow password hash).
    register_max_per_address: int = 10
    register_window_seconds: float = 3600.0
    login_max_per_address: int = 60
    login_rate_window_seconds: float = 60.0


class AuthService:
    def __init__(
        self,
        engine: Engine,
        secret: str,
        config: AuthConfig,
        on_login_failure: Optional[Callable[[str], None]] = None,
        accounts: Optional[AccountCache] = None,
    ):
        self.engine = engine
        self.config = config
        # Rows of the accounts tokens were checked against, kept current by the change feed (see
        # auth.account_cache); ``follow_feed`` starts following it.
        self.accounts = accounts
        # Without kept rows, what still announces account changes to the other replicas (its
        # event streams end on them): auth.account_cache.watch_without_keeping.
        self.change_announcer: Optional[AccountCache] = None
        # Called by the first read that finds the kept rows not live (the ingress subscribes the
        # change feed's follower here: serving.routes.event_streams.connect_account_cache).
        self.feed_followers: list[Callable[[], None]] = []
        # The event loop of the requests (set by the first one): account changes are announced on it.
        self.loop: Optional[asyncio.AbstractEventLoop] = None
        # Told the reason (an AuthError code) of every refused log-in: the service counts them.
        self.on_login_failure = on_login_failure or (lambda reason: None)
        self.passwords = Passwords(config.hash_profile)
        self.tokens = Tokens(secret, config.token_ttl_seconds)
        # Per (account, address) (guessing one account from somewhere, without holding up its owner
        # elsewhere) and per address (spraying many accounts); growing delays, kept in the database.
        self.account_throttle = LoginThrottle(
            engine, config.login_max_failures, config.login_window_seconds, config.login_max_delay_seconds
        )
        self.address_throttle = LoginThrottle(
            engine, config.login_max_failures_per_address, config.login_window_seconds, config.login_max_delay_seconds
        )
        self.registration_limit = AddressRateLimit(
            engine, config.register_max_per_address, config.register_window_seconds
        )
        self.login_limit = AddressRateLimit(engine, config.login_max_per_address, config.login_rate_window_seconds)

    def follow_feed(self) -> None:
        """Start following the account-change feed (what the subscribed followers do)."""
        for follow in list(self.feed_followers):
            follow()

    def on_feed(self, follow: Callable[[], None]) -> None:
        """Subscribe ``follow``, called when a read needs the account-change feed followed."""
        self.feed_followers.append(follow)

    # ------------------------------------------------------------ start-up

    def ensure_default_admin(self) -> None:
        """Create the admin on first start only (no user at all); warn while its password is the default.

        Once anyone exists, a missing admin stays missing: deleting or renaming it must not bring
        back a known name with a known password on the next start.
        """
        password = self.config.admin_password or DEFAULT_ADMIN_PASSWORD
        with session_scope(self.engine) as session:
            if count_users(session) == 0:
                if password == DEFAULT_ADMIN_PASSWORD:
                    log.warning(
                        "SECURITY: creating user %r with the default password; set ADMIN_PASSWORD",
                        self.config.admin_username,
                    )
                try:
                    session.add(
                        User(
                            username=self.config.admin_username,
                            hashed_password=self.passwords.hash(password),
                            is_admin=True,
                        )
                    )
                    session.flush()
                except IntegrityError:
                    session.rollback()  # another replica created it first
            using_default = self.admin_password_is_default(session)
        if using_default:
            log.warning(
                "SECURITY: user %r still has the default password; set ADMIN_PASSWORD before first "
                "start or change it with POST /auth/change-password",
                self.config.admin_username,
            )

    def admin_password_is_default(self, session: Session) -> bool:
        """Whether the configured administrator (``ADMIN_USERNAME``) still logs in with the
        well-known default password (one password check)."""
        admin = get_user_by_username(session, self.config.admin_username)
        return admin is not None and self.passwords.verify(admin.hashed_password, DEFAULT_ADMIN_PASSWORD)[0]

    # ------------------------------------------------------------ log-in and tokens

    def login(self, session: Session, username: str, password: str, client: str) -> str:
        """A token for the right password, or AuthError (bad_credentials, throttled, disabled);
        ``client`` is the address the attempt came from."""
        try:
            return self._login(session, username, password, client)
        except AuthError as exc:
            self.on_login_failure(exc.code)
            raise

    def _login(self, session: Session, username: str, password: str, client: str) -> str:
        pair_key = throttle_key("account", username_key(username), client)
        address_key = throttle_key("address", client)
        wait = self.account_throttle.retry_after(pair_key) or self.address_throttle.retry_after(address_key)
        if wait is not None:
            raise AuthError("throttled", retry_after=wait)
        wait = self.login_limit.hit(throttle_key("login", client))
        if wait is not None:
            raise AuthError("rate_limited", retry_after=wait)
        user = get_user_by_username(session, username)
        # Give the connection back before the slow hash: the throttle below takes its own, and a
        # burst of log-ins each holding one while waiting for another would drain the pool.
        session.commit()
        ok, new_hash = self.passwords.verify(user.hashed_password if user else None, password)
        if not ok or user is None:  # verify() never accepts a missing user; this tells the type checker
            self.account_throttle.record_failure(pair_key)
            self.address_throttle.record_failure(address_key)
            raise AuthError("bad_credentials")
        if not user.is_active:
            raise AuthError("disabled")
        if new_hash:
            user.hashed_password = new_hash
            session.add(user)
            session.commit()
        self.account_throttle.reset(pair_key)
        assert user.id is not None  # a row read from the database has its id
        return self.tokens.issue(user.id, user.token_version, key=user.token_key)

    def user_for_token(self, session: Session, token: str) -> User:
        """The active user a bearer credential stands for: a login token (JWT) or an API key."""
        if token.startswith(API_KEY_PREFIX):
            return self.user_for_api_key(session, token)
        try:
            claims = self.tokens.decode(token)
        except InvalidToken:
            raise AuthError("invalid_token") from None
        user = get_user(session, claims.user_id)
        if (
            user is None
            or not user.is_active
            or user.token_version != claims.token_version
            or not secrets.compare_digest(user.token_key, claims.key)
            or is_revoked(session, claims.jti)
        ):
            raise AuthError("invalid_token")
        return user

    def keep(self, user: User, ticket: Optional[int], token: str) -> None:
        """Keep the row ``user`` read for login token ``token`` (``ticket``: taken before the read)."""
        if self.accounts is None or token.startswith(API_KEY_PREFIX):
            return
        try:
            self.accounts.put(user, ticket, self.tokens.decode(token).jti)
        except InvalidToken:
            return

    def logout(self, session: Session, token: str) -> None:
        """End the login token ``token`` now, on every replica (an API key is revoked by its id instead)."""
        claims = self.tokens.decode(token)
        revoke_token(session, claims.jti, claims.user_id, datetime.fromtimestamp(claims.expires_at, timezone.utc))
        session.commit()
        self.credentials_changed({claims.user_id})

    def credentials_changed(self, user_ids: set[int]) -> None:
        """Announce that these users' credentials changed without a change to their rows."""
        announce_change(self.engine, user_ids)

    def kept_user_for_token(self, token: str) -> Optional[User]:
        """The active user a login token stands for, from the kept account rows; None when the row
        is not kept (or does not accept the token: the database then decides). A bad signature or
        an expired token is an AuthError here as everywhere."""
        if self.accounts is None or token.startswith(API_KEY_PREFIX):
            return None
        try:
            claims = self.tokens.decode(token)
        except InvalidToken:
            raise AuthError("invalid_token") from None
        user = self.accounts.get(claims.user_id, claims.jti)
        if (
            user is not None
            and user.is_active
            and user.token_version == claims.token_version
            and secrets.compare_digest(user.token_key, claims.key)
        ):
            return user
        return None

    def user_for_api_key(self, session: Session, key: str) -> User:
        """The key's owner, read afresh on every request: revoking the key or disabling or deleting
        the user stops it at once. Expired keys are refused."""
        found = find_key_with_user(session, hash_api_key(key))
        if found is None:
            raise AuthError("invalid_token")
        api_key, user = found
        now = utcnow()
        if (
            not user.is_active
            or api_key.token_version != user.token_version
            or (api_key.expires_at is not None and api_key.expires_at <= now)
        ):
            raise AuthError("invalid_token")
        if api_key.id is not None and (
            api_key.last_used_at is None or now - api_key.last_used_at >= LAST_USED_RESOLUTION
        ):
            touch_key(session, api_key.id, now)
            session.commit()
        return user

    def default_admin(self, session: Session) -> User:
        """The user every request acts as when authentication is off."""
        user = get_user_by_username(session, self.config.admin_username)
        if user is None:
            raise AuthError("invalid_token")
        return user

    # ------------------------------------------------------------ registration

    def registration_open(self, session: Session) -> bool:
        """Whether anyone may register: an administrator's run-time choice (``PUT
        /admin/registration``, in the database), else ``ALLOW_REGISTRATION``."""
        value = get_flag(session, REGISTRATION_OPEN)
        return self.config.allow_registration if value is None else value == "true"

    def set_registration_open(self, session: Session, is_open: bool) -> None:
        set_flag(session, REGISTRATION_OPEN, "true" if is_open else "false")

    def registration_wait(self, client: str) -> Optional[int]:
        """Count a registration from ``client``; seconds to wait when it has had its share."""
        return self.registration_limit.hit(throttle_key("register", client))

    # ------------------------------------------------------------ changes

    def set_password(self, session: Session, user: User, password: str, keep_api_keys: bool = False) -> None:
        """New hash; every login token issued before stops working, and so do the user's API keys
        unless ``keep_api_keys`` (a password is changed mostly because it leaked, and a key is what
        a thief makes first). The caller commits."""
        user.hashed_password = self.passwords.hash(password)
        user.token_version += 1
        assert user.id is not None
        keys_after_password_change(session, user.id, user.token_version, keep=keep_api_keys)
