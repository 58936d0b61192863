"""Users, passwords and tokens: what the /auth routes and the current-user dependency use."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Optional

from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from auth.security import InvalidToken, Passwords, Tokens
from auth.throttle import LoginThrottle
from storage import session_scope
from storage.tables import User
from storage.users import get_user, get_user_by_username

log = logging.getLogger("qwen_image.auth")

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


class AuthService:
    def __init__(self, engine: Engine, secret: str, config: AuthConfig):
        self.engine = engine
        self.config = config
        self.passwords = Passwords(config.hash_profile)
        self.tokens = Tokens(secret, config.token_ttl_seconds)
        # Per username (guessing one account) and per client address (spraying many accounts).
        self.user_throttle = LoginThrottle(config.login_max_failures, config.login_window_seconds)
        self.address_throttle = LoginThrottle(config.login_max_failures_per_address, config.login_window_seconds)

    # ------------------------------------------------------------ start-up

    def ensure_default_admin(self) -> None:
        """Create the default admin on first start; warn while its password is the default."""
        password = self.config.admin_password or DEFAULT_ADMIN_PASSWORD
        with session_scope(self.engine) as session:
            admin = get_user_by_username(session, self.config.admin_username)
            if admin is None:
                try:
                    session.add(User(username=self.config.admin_username,
                                     hashed_password=self.passwords.hash(password), is_admin=True))
                    session.flush()
                except IntegrityError:
                    session.rollback()  # another replica created it first
                admin = get_user_by_username(session, self.config.admin_username)
                if admin is None:
                    raise RuntimeError(f"admin user {self.config.admin_username!r} vanished while being created")
            using_default = self.passwords.verify(admin.hashed_password, DEFAULT_ADMIN_PASSWORD)[0]
        if using_default:
            log.warning(
                "SECURITY: user %r still has the default password; set ADMIN_PASSWORD before first "
                "start or change it with POST /auth/change-password", self.config.admin_username)

    # ------------------------------------------------------------ log-in and tokens

    def login(self, session: Session, username: str, password: str, client: str) -> str:
        user_key = username.lower()
        wait = self.user_throttle.retry_after(user_key) or self.address_throttle.retry_after(client)
        if wait is not None:
            raise AuthError("throttled", retry_after=wait)
        user = get_user_by_username(session, username)
        ok, new_hash = self.passwords.verify(user.hashed_password if user else None, password)
        if not ok or user is None:  # verify() never accepts a missing user; this tells the type checker
            self.user_throttle.record_failure(user_key)
            self.address_throttle.record_failure(client)
            raise AuthError("bad_credentials")
        if not user.is_active:
            raise AuthError("disabled")
        if new_hash:
            user.hashed_password = new_hash
            session.add(user)
            session.commit()
        self.user_throttle.reset(user_key)
        assert user.id is not None  # a row read from the database has its id
        return self.tokens.issue(user.id, user.token_version)

    def user_for_token(self, session: Session, token: str) -> User:
        try:
            claims = self.tokens.decode(token)
        except InvalidToken:
            raise AuthError("invalid_token") from None
        user = get_user(session, claims.user_id)
        if user is None or not user.is_active or user.token_version != claims.token_version:
            raise AuthError("invalid_token")
        return user

    def default_admin(self, session: Session) -> User:
        """The user every request acts as when authentication is off."""
        user = get_user_by_username(session, self.config.admin_username)
        if user is None:
            raise AuthError("invalid_token")
        return user

    # ------------------------------------------------------------ changes

    def set_password(self, user: User, password: str) -> None:
        """New hash, and every token issued before stops working."""
        user.hashed_password = self.passwords.hash(password)
        user.token_version += 1
