"""The /auth routes of the v1.3.0 contract."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Query, Request, status
from sqlalchemy.exc import IntegrityError

from auth.deps import AdminUser, AuthDep, CurrentUser, SessionDep
from auth.schemas import ChangePasswordRequest, LoginRequest, Message, Token, UserCreate, UserPublic, UserUpdate
from auth.service import AuthError
from storage.tables import User
from storage.users import get_user, get_user_by_username, list_users

router = APIRouter(prefix="/auth", tags=["auth"])

MAX_DB_INT = 2**31 - 1  # ids and offsets fit every database's integer column
UserId = Annotated[int, Path(ge=1, le=MAX_DB_INT)]

USERNAME_TAKEN = "用户名已存在"
REGISTRATION_CLOSED = "当前不允许用户注册"
BAD_CREDENTIALS = "用户名或密码错误"
USER_DISABLED = "用户已被禁用"
TOO_MANY_ATTEMPTS = "登录失败次数过多，请稍后再试"
WRONG_OLD_PASSWORD = "原密码错误"
USER_NOT_FOUND = "用户不存在"
NOT_ON_SELF = "不能对自己的账号执行此操作"


@router.post("/register", status_code=status.HTTP_201_CREATED, response_model=UserPublic)
def register(body: UserCreate, auth: AuthDep, session: SessionDep) -> User:
    if not auth.config.allow_registration:
        raise HTTPException(status.HTTP_403_FORBIDDEN, REGISTRATION_CLOSED)
    if get_user_by_username(session, body.username) is not None:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, USERNAME_TAKEN)
    user = User(username=body.username, email=body.email, hashed_password=auth.passwords.hash(body.password))
    session.add(user)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise HTTPException(status.HTTP_400_BAD_REQUEST, USERNAME_TAKEN) from None
    return user


@router.post("/login", response_model=Token)
def login(body: LoginRequest, request: Request, auth: AuthDep, session: SessionDep) -> Token:
    client = request.client.host if request.client else "unknown"
    try:
        token = auth.login(session, body.username, body.password, client)
    except AuthError as exc:
        if exc.code == "throttled":
            raise HTTPException(status.HTTP_429_TOO_MANY_REQUESTS, TOO_MANY_ATTEMPTS,
                                headers={"Retry-After": str(exc.retry_after)}) from None
        if exc.code == "disabled":
            raise HTTPException(status.HTTP_403_FORBIDDEN, USER_DISABLED) from None
        raise HTTPException(status.HTTP_401_UNAUTHORIZED, BAD_CREDENTIALS,
                            headers={"WWW-Authenticate": "Bearer"}) from None
    return Token(access_token=token, expires_in=auth.tokens.ttl_seconds)


@router.get("/me", response_model=UserPublic)
def read_me(user: CurrentUser) -> User:
    return user


@router.put("/me", response_model=UserPublic)
def update_me(body: UserUpdate, user: CurrentUser, auth: AuthDep, session: SessionDep) -> User:
    if "email" in body.model_fields_set:
        user.email = body.email
    if body.password is not None:
        auth.set_password(user, body.password)
    session.add(user)
    session.commit()
    return user


@router.post("/change-password", response_model=Message)
def change_password(body: ChangePasswordRequest, user: CurrentUser, auth: AuthDep, session: SessionDep) -> Message:
    if not auth.passwords.verify(user.hashed_password, body.old_password)[0]:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, WRONG_OLD_PASSWORD)
    auth.set_password(user, body.new_password)
    session.add(user)
    session.commit()
    return Message(message="密码修改成功")


@router.get("/users", response_model=list[UserPublic])
def read_users(_: AdminUser, session: SessionDep,
               skip: Annotated[int, Query(ge=0, le=MAX_DB_INT)] = 0,
               limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[User]:
    return list(list_users(session, skip, limit))


def _other_user(session, admin: User, user_id: int) -> User:
    user = get_user(session, user_id)
    if user is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, USER_NOT_FOUND)
    if user.id == admin.id:
        raise HTTPException(status.HTTP_400_BAD_REQUEST, NOT_ON_SELF)
    return user


@router.put("/users/{user_id}/toggle-active")
def toggle_active(user_id: UserId, admin: AdminUser, session: SessionDep) -> dict:
    user = _other_user(session, admin, user_id)
    user.is_active = not user.is_active
    if not user.is_active:
        user.token_version += 1
    session.add(user)
    session.commit()
    message = "用户已启用" if user.is_active else "用户已禁用"
    return {"message": message, "user_id": user.id, "is_active": user.is_active}


@router.put("/users/{user_id}/toggle-admin")
def toggle_admin(user_id: UserId, admin: AdminUser, session: SessionDep) -> dict:
    user = _other_user(session, admin, user_id)
    user.is_admin = not user.is_admin
    session.add(user)
    session.commit()
    message = "用户已设置为管理员" if user.is_admin else "已取消用户的管理员权限"
    return {"message": message, "user_id": user.id, "is_admin": user.is_admin}


@router.delete("/users/{user_id}", response_model=Message)
def delete_user(user_id: UserId, admin: AdminUser, session: SessionDep) -> Message:
    user = _other_user(session, admin, user_id)
    username = user.username
    session.delete(user)
    session.commit()
    return Message(message=f"用户 {username} 已删除")
