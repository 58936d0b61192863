"""FastAPI dependencies: the database session, the current user and the admin user.

A plain ``def`` dependency costs a hop to the thread pool on every request, so those that do no
I/O are ``async def``, and the user lookup does its one database read in a single hop with its
own short session (a route that changes the user adds it to the route's session).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated, Any, Optional

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from auth.service import AuthError, AuthService
from storage.tables import User

INVALID_CREDENTIALS = "无效的认证凭据"
ADMIN_REQUIRED = "需要管理员权限"

_bearer = HTTPBearer(auto_error=False, description="JWT from POST /auth/login")


async def get_auth(request: Request) -> AuthService:
    """The AuthService of the app serving ``request`` (``app.state.auth``, set when the app is built)."""
    service = getattr(request.app.state, "auth", None)
    if service is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "服务正在启动", headers={"Retry-After": "2"})
    return service


AuthDep = Annotated[AuthService, Depends(get_auth)]


def get_session(auth: AuthDep) -> Iterator[Session]:
    with Session(auth.engine, expire_on_commit=False) as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def unauthorized() -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, INVALID_CREDENTIALS,
                         headers={"WWW-Authenticate": "Bearer"})


async def current_user(auth: AuthDep,
                       credentials: Annotated[Optional[HTTPAuthorizationCredentials], Depends(_bearer)]) -> User:
    try:
        if not auth.config.enabled:
            return await run_in_threadpool(_in_session, auth, auth.default_admin)
        if credentials is None or credentials.scheme.lower() != "bearer":
            raise unauthorized()
        return await run_in_threadpool(_in_session, auth, auth.user_for_token, credentials.credentials)
    except AuthError:
        raise unauthorized() from None


def _in_session(auth: AuthService, read: Callable[..., User], *args: Any) -> User:
    with Session(auth.engine, expire_on_commit=False) as session:
        return read(session, *args)


CurrentUser = Annotated[User, Depends(current_user)]


async def admin_user(user: CurrentUser) -> User:
    if not user.is_admin:
        raise HTTPException(status.HTTP_403_FORBIDDEN, ADMIN_REQUIRED)
    return user


AdminUser = Annotated[User, Depends(admin_user)]
