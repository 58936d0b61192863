"""FastAPI dependencies: the database session, the current user and the admin user.

A plain ``def`` dependency costs a hop to the thread pool on every request, so those that do no
I/O are ``async def``, and the user lookup does its one database read in a single hop with its
own short session (a route that changes the user adds it to the route's session). ``GET`` and
``HEAD`` requests with a login token are checked against the account rows the ingress keeps
current (auth.account_cache) and make no hop at all; a kept row is shared by concurrent reads,
which never change it.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Annotated, Any, Optional

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from auth.security import API_KEY_PREFIX
from auth.service import AuthError, AuthService
from i18n import messages
from storage.tables import User

INVALID_CREDENTIALS = messages.INVALID_CREDENTIALS
ADMIN_REQUIRED = messages.ADMIN_REQUIRED
CSRF_HEADER_MISSING = messages.CSRF_HEADER_MISSING
API_KEY_NOT_ALLOWED = messages.API_KEY_NOT_ALLOWED

# The browser session (POST /auth/session): an HttpOnly cookie holding a login token, so the web
# page never keeps a token where scripts can read it.
SESSION_COOKIE = "qis_session"
CSRF_HEADER = "x-requested-with"
CSRF_VALUE = "qwen-image"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})

_bearer = HTTPBearer(auto_error=False, description="JWT from POST /auth/login")
_cookie = APIKeyCookie(
    name=SESSION_COOKIE,
    auto_error=False,
    description="browser session from POST /auth/session (state-changing requests also "
    "need the header X-Requested-With: qwen-image)",
)


async def get_auth(request: Request) -> AuthService:
    """The AuthService of the app serving ``request`` (``app.state.auth``, set when the app is built)."""
    service = getattr(request.app.state, "auth", None)
    if service is None:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE, messages.SERVICE_STARTING, headers={"Retry-After": "2"}
        )
    return service


AuthDep = Annotated[AuthService, Depends(get_auth)]


def get_session(auth: AuthDep) -> Iterator[Session]:
    with Session(auth.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def unauthorized() -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, INVALID_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"})


def session_token(
    request: Request, credentials: Optional[HTTPAuthorizationCredentials], cookie: Optional[str]
) -> Optional[str]:
    """The token to check: ``Authorization: Bearer`` first, else the browser session cookie.

    A cookie is sent by the browser on its own, so a request it authenticates that changes state
    must also carry ``X-Requested-With: qwen-image`` — a header a cross-site form cannot set and a
    cross-site script cannot send without a CORS preflight this service never grants (defence in
    depth beside SameSite=Strict).
    """
    if credentials is not None:
        return credentials.credentials if credentials.scheme.lower() == "bearer" else None
    if not cookie:
        return None
    if request.method not in SAFE_METHODS and request.headers.get(CSRF_HEADER, "").lower() != CSRF_VALUE:
        raise HTTPException(status.HTTP_403_FORBIDDEN, CSRF_HEADER_MISSING)
    return cookie


# Requests that may be checked against a kept account row: reads (OPTIONS is not among them).
KEPT_ROW_METHODS = frozenset({"GET", "HEAD"})


async def current_user(
    auth: AuthDep,
    request: Request,
    credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(_bearer)],
    cookie: Annotated[Optional[str], Depends(_cookie)],
) -> User:
    return await _authenticate(auth, request, credentials, cookie, kept_row_ok=request.method in KEPT_ROW_METHODS)


async def current_user_from_database(
    auth: AuthDep,
    request: Request,
    credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(_bearer)],
    cookie: Annotated[Optional[str], Depends(_cookie)],
) -> User:
    """The current user read afresh, for a read route that writes rows naming the user."""
    return await _authenticate(auth, request, credentials, cookie, kept_row_ok=False)


async def _authenticate(
    auth: AuthService,
    request: Request,
    credentials: Optional[HTTPAuthorizationCredentials],
    cookie: Optional[str],
    kept_row_ok: bool,
) -> User:
    if auth.loop is None:
        auth.loop = asyncio.get_running_loop()
    try:
        if not auth.config.enabled:
            return await run_in_threadpool(_in_session, auth, auth.default_admin)
        token = session_token(request, credentials, cookie)
        if token is None:
            raise unauthorized()
        # What the request was authenticated with: event streams check it again while they are open,
        # and some routes refuse API keys (login_user).
        request.state.credential = token
        accounts = auth.accounts
        if accounts is None or not kept_row_ok:
            return await run_in_threadpool(_in_session, auth, auth.user_for_token, token)
        # A read: the account row this ingress keeps current will do (auth.account_cache).
        if not accounts.live:
            auth.follow_feed()
        kept = auth.kept_user_for_token(token)
        if kept is not None:
            return kept
        ticket = accounts.token()
        user = await run_in_threadpool(_in_session, auth, auth.user_for_token, token)
        auth.keep(user, ticket, token)
        return user
    except AuthError:
        raise unauthorized() from None


def _in_session(auth: AuthService, read: Callable[..., User], *args: Any) -> User:
    with Session(auth.engine, expire_on_commit=False) as session:
        return read(session, *args)


CurrentUser = Annotated[User, Depends(current_user)]
FreshUser = Annotated[User, Depends(current_user_from_database)]


async def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, ADMIN_REQUIRED)
    return user


AdminUser = Annotated[User, Depends(admin_user)]


def by_api_key(request: Request) -> bool:
    """Whether ``request`` was authenticated with an API key (not a log-in)."""
    return str(getattr(request.state, "credential", "")).startswith(API_KEY_PREFIX)


async def login_user(request: Request, user: CurrentUser) -> User:
    """The current user, logged in: an API key cannot create keys, change the password, rotate the
    webhook secret or manage sessions (403), so a leaked key is not the whole account."""
    if by_api_key(request):
        raise HTTPException(status.HTTP_403_FORBIDDEN, API_KEY_NOT_ALLOWED)
    return user


LoginUser = Annotated[User, Depends(login_user)]
