"""The /auth routes of the v1.3.0 contract."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, Response, status
from sqlalchemy.exc import IntegrityError
from sqlmodel import func, select

from auth.deps import SESSION_COOKIE, AdminUser, AuthDep, CurrentUser, LoginUser, SessionDep, by_api_key
from auth.schemas import (
    NO_NUL,
    ChangePasswordRequest,
    LoginRequest,
    Message,
    Token,
    UserAdminView,
    UserCreate,
    UserPublic,
    UserUpdate,
)
from auth.security import API_KEY_PREFIX, InvalidToken
from auth.service import AuthError, AuthService
from i18n import messages
from storage.api_keys import restore_keys_after_enable
from storage.tables import User
from storage.users import count_users, get_user, get_user_by_username, list_users

router = APIRouter(prefix="/auth", tags=["auth"])

MAX_DB_INT = 2**31 - 1  # ids and offsets fit every database's integer column
UserId = Annotated[int, Path(ge=1, le=MAX_DB_INT)]

USERNAME_TAKEN = messages.USERNAME_TAKEN
REGISTRATION_CLOSED = messages.REGISTRATION_CLOSED
BAD_CREDENTIALS = messages.BAD_CREDENTIALS
USER_DISABLED = messages.USER_DISABLED
TOO_MANY_ATTEMPTS = messages.TOO_MANY_ATTEMPTS
WRONG_OLD_PASSWORD = messages.WRONG_OLD_PASSWORD
USER_NOT_FOUND = messages.USER_NOT_FOUND
NOT_ON_SELF = messages.NOT_ON_SELF
LAST_ADMIN = messages.LAST_ADMIN


def client_address(request: Request) -> str:
    """The client's address: the connection's, or ``X-Forwarded-For`` from ``TRUSTED_PROXIES`` only
    (uvicorn in Serve's proxy decides: serving.proxy)."""
    return request.client.host if request.client else "unknown"


@router.post(
    "/register",
    status_code=status.HTTP_201_CREATED,
    response_model=UserPublic,
    responses={403: {"description": "registration is closed"}, 429: {"description": "too many from this address"}},
)
def register(body: UserCreate, request: Request, auth: AuthDep, session: SessionDep) -> User:
    """Create an account, while registration is open (``ALLOW_REGISTRATION``, or an admin's
    ``PUT /admin/registration``); at most ``REGISTER_MAX_PER_ADDRESS`` per client address per
    ``REGISTER_WINDOW_SECONDS``."""
    if not auth.registration_open(session):
        raise HTTPException(status.HTTP_403_FORBIDDEN, REGISTRATION_CLOSED)
    wait = auth.registration_wait(client_address(request))
    if wait is not None:
        raise HTTPException(
            status.HTTP_429_TOO_MANY_REQUESTS, messages.TOO_MANY_REGISTRATIONS, headers={"Retry-After": str(wait)}
        )
    if get_user_by_username(session, body.username) is not None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, USERNAME_TAKEN)
    session.commit()  # no connection held through the slow hash below
    user = User(username=body.username, email=body.email, hashed_password=auth.passwords.hash(body.password))
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, USERNAME_TAKEN) from None
    return user


def _login(body: LoginRequest, request: Request, auth: AuthService, session) -> str:
    """The checks of ``POST /auth/login`` (throttling, disabled users, one message for bad
    credentials); returns a login token."""
    try:
        return auth.login(session, body.username, body.password, client_address(request))
    except AuthError as exc:
        if exc.code in ("throttled", "rate_limited"):
            message = TOO_MANY_ATTEMPTS if exc.code == "throttled" else messages.TOO_MANY_LOGINS
            raise HTTPException(
                status.HTTP_429_TOO_MANY_REQUESTS, message, headers={"Retry-After": str(exc.retry_after)}
            ) from None
        if exc.code == "disabled":
            raise HTTPException(status.HTTP_403_FORBIDDEN, USER_DISABLED) from None
        raise HTTPException(
            status.HTTP_401_UNAUTHORIZED, BAD_CREDENTIALS, headers={"WWW-Authenticate": "Bearer"}
        ) from None


@router.post("/login", response_model=Token)
def login(body: LoginRequest, request: Request, auth: AuthDep, session: SessionDep) -> Token:
    return Token(access_token=_login(body, request, auth, session), expires_in=auth.tokens.ttl_seconds)


def _over_https(request: Request) -> bool:
    return request.url.scheme == "https" or request.headers.get("x-forwarded-proto", "").lower() == "https"


@router.post("/session", response_model=UserPublic)
def create_session(
    body: LoginRequest, request: Request, response: Response, auth: AuthDep, session: SessionDep
) -> User:
    """Browser log-in: the same checks as ``/auth/login``, but the token goes into an HttpOnly,
    SameSite=Strict cookie (Secure over https) that page scripts cannot read; answers the user."""
    token = _login(body, request, auth, session)
    user = auth.user_for_token(session, token)
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=auth.tokens.ttl_seconds,
        path="/",
        httponly=True,
        samesite="strict",
        secure=_over_https(request),
    )
    return user


@router.get("/session")
def read_session(request: Request, auth: AuthDep, session: SessionDep) -> dict:
    """Who the browser session belongs to: ``{"user": …}``, or ``{"user": null}`` (200 either way,
    so a page can ask at start-up without an error). Only the cookie is read here."""
    if not auth.config.enabled:
        return {"user": UserPublic.model_validate(auth.default_admin(session)), "auth_enabled": False}
    token = request.cookies.get(SESSION_COOKIE)
    user = None
    if token:
        try:
            user = UserPublic.model_validate(auth.user_for_token(session, token))
        except AuthError:
            user = None
    return {"user": user, "auth_enabled": True, "allow_registration": auth.registration_open(session)}


def _end_session(request: Request, auth: AuthService, session, bearer_too: bool) -> None:
    """End the login token the request carries (with ``bearer_too`` Bearer first, else the cookie)
    on the server."""
    if not auth.config.enabled:
        return
    # Ending a session is no harm to its owner, so the cookie alone will do here (no CSRF header).
    token = request.cookies.get(SESSION_COOKIE)
    authorization = request.headers.get("authorization", "")
    if bearer_too and authorization.lower().startswith("bearer "):
        token = authorization[7:].strip()
    if not token:
        return
    if by_api_key(request) or token.startswith(API_KEY_PREFIX):
        raise HTTPException(status.HTTP_403_FORBIDDEN, messages.API_KEY_NOT_ALLOWED)
    try:
        auth.user_for_token(session, token)
        auth.logout(session, token)
    except (AuthError, InvalidToken):
        return  # an ended or forged token: nothing left to end


@router.delete("/session", response_model=Message)
def delete_session(request: Request, response: Response, auth: AuthDep, session: SessionDep) -> Message:
    """Browser log-out: ends the cookie's session on the server and clears the cookie (harmless
    without one; a Bearer token sent along is left alone: ``POST /auth/logout`` ends that)."""
    _end_session(request, auth, session, bearer_too=False)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_over_https(request))
    return Message(message=messages.LOGGED_OUT)


@router.post("/logout", response_model=Message)
def logout(request: Request, response: Response, _: LoginUser, auth: AuthDep, session: SessionDep) -> Message:
    """Log-out for Bearer and cookie users alike: the login token stops working at once, everywhere."""
    _end_session(request, auth, session, bearer_too=True)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="strict", secure=_over_https(request))
    return Message(message=messages.LOGGED_OUT)


@router.get("/me", response_model=UserPublic)
def read_me(user: CurrentUser) -> User:
    return user


@router.put("/me", response_model=UserPublic)
def update_me(body: UserUpdate, request: Request, user: CurrentUser, auth: AuthDep, session: SessionDep) -> User:
    if body.password is not None:
        if by_api_key(request):
            raise HTTPException(status.HTTP_403_FORBIDDEN, messages.API_KEY_NOT_ALLOWED)
        if body.current_password is None:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, messages.CURRENT_PASSWORD_REQUIRED)
        if not auth.passwords.verify(user.hashed_password, body.current_password)[0]:
            raise HTTPException(status.HTTP_400_BAD_REQUEST, WRONG_OLD_PASSWORD)
        auth.set_password(session, user, body.password, keep_api_keys=body.keep_api_keys)
    if "email" in body.model_fields_set:
        user.email = body.email
    session.add(user)
    session.commit()
    return user


@router.post("/change-password", response_model=Message)
def change_password(body: ChangePasswordRequest, user: LoginUser, auth: AuthDep, session: SessionDep) -> Message:
    if not auth.passwords.verify(user.hashed_password, body.old_password)[0]:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, WRONG_OLD_PASSWORD)
    auth.set_password(session, user, body.new_password, keep_api_keys=body.keep_api_keys)
    session.add(user)
    session.commit()
    return Message(message=messages.PASSWORD_CHANGED)


@router.get("/users", response_model=list[UserAdminView])
def read_users(
    _: AdminUser,
    session: SessionDep,
    response: Response,
    skip: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    q: Annotated[
        str,
        Query(
            max_length=255,
            pattern=NO_NUL,
            description="only users whose name (any case) or e-mail address (ASCII letters in any case) contains this",
        ),
    ] = "",
) -> list[User]:
    """Users in id order. ``X-Total-Count`` says how many there are (that match ``q``), for paging."""
    search = q.strip()
    response.headers["X-Total-Count"] = str(count_users(session, search))
    return list(list_users(session, skip, limit, search))


def _other_user(session, admin: User, user_id: int) -> User:
    user = get_user(session, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, USER_NOT_FOUND)
    if user.id == admin.id:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, NOT_ON_SELF)
    if user.is_admin:
        # Two admins removing each other at once must not leave none: on PostgreSQL the admin rows
        # are locked so such changes run one after the other (SQLite writes one at a time anyway),
        # and each checks what is left before it commits.
        session.exec(select(User.id).where(User.is_admin).with_for_update()).all()
        session.refresh(user)
    return user


def _commit_keeping_an_active_admin(session) -> None:
    session.flush()
    remaining = session.exec(select(func.count()).select_from(User).where(User.is_admin, User.is_active)).one()
    if remaining == 0:
        session.rollback()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, LAST_ADMIN)
    session.commit()


@router.put("/users/{user_id}/toggle-active")
def toggle_active(user_id: UserId, admin: AdminUser, session: SessionDep) -> dict:
    user = _other_user(session, admin, user_id)
    user.is_active = not user.is_active
    if not user.is_active:
        user.token_version += 1
    else:
        restore_keys_after_enable(session, user_id, user.token_version)
    session.add(user)
    _commit_keeping_an_active_admin(session)
    message = messages.USER_ENABLED if user.is_active else messages.USER_DISABLED_NOW
    return {"message": message, "user_id": user.id, "is_active": user.is_active}


@router.put("/users/{user_id}/toggle-admin")
def toggle_admin(user_id: UserId, admin: AdminUser, session: SessionDep) -> dict:
    user = _other_user(session, admin, user_id)
    user.is_admin = not user.is_admin
    session.add(user)
    _commit_keeping_an_active_admin(session)
    message = messages.USER_MADE_ADMIN if user.is_admin else messages.USER_ADMIN_REVOKED
    return {"message": message, "user_id": user.id, "is_admin": user.is_admin}


@router.delete("/users/{user_id}", response_model=Message)
def delete_user(user_id: UserId, admin: AdminUser, session: SessionDep) -> Message:
    user = _other_user(session, admin, user_id)
    username = user.username
    session.delete(user)
    _commit_keeping_an_active_admin(session)
    return Message(message=messages.USER_DELETED(username=username))
