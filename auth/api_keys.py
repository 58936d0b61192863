"""/auth/api-keys: keys for scripts and OpenAI-compatible clients, which need not log in.

A key (``qis-`` and 32 random bytes) is shown once, when it is created; the database keeps its
SHA-256 and its first characters for display. ``Authorization: Bearer qis-…`` works wherever a
login token works (see :meth:`auth.service.AuthService.user_for_api_key`).
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Optional

from fastapi import APIRouter, HTTPException, Path, Query, status
from pydantic import BaseModel, ConfigDict, Field

from auth.deps import AdminUser, AuthDep, CurrentUser, LoginUser, SessionDep
from auth.schemas import Message
from auth.security import API_KEY_DISPLAY_CHARS, hash_api_key, new_api_key
from i18n import messages
from storage import utcnow
from storage.api_keys import delete_key, list_keys
from storage.tables import ApiKey

router = APIRouter(prefix="/auth/api-keys", tags=["api keys"])

MAX_DB_INT = 2**31 - 1
KEY_NOT_FOUND = messages.API_KEY_NOT_FOUND
KEY_REVOKED = messages.API_KEY_REVOKED


DEFAULT_EXPIRY_DAYS = 90
MAX_EXPIRY_DAYS = 365


class ApiKeyCreate(BaseModel):
    name: str = Field(min_length=1, max_length=100, description="what the key is for")
    expires_in_days: Optional[int] = Field(
        default=DEFAULT_EXPIRY_DAYS,
        ge=1,
        le=MAX_EXPIRY_DAYS,
        description=f"omitted: {DEFAULT_EXPIRY_DAYS} days; null: never expires (only when asked for explicitly)",
    )


class ApiKeyPublic(BaseModel):
    """A key as listed: never the secret."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    user_id: int
    name: str
    prefix: str
    created_at: datetime
    last_used_at: Optional[datetime]
    expires_at: Optional[datetime]


class ApiKeyCreated(BaseModel):
    id: int
    name: str
    key: str = Field(description="the secret: shown only in this response")
    prefix: str
    created_at: datetime
    expires_at: Optional[datetime]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=ApiKeyCreated)
def create_api_key(body: ApiKeyCreate, user: LoginUser, session: SessionDep) -> ApiKeyCreated:
    """Create a key for the caller (logged in: a key cannot make keys). The answer is the only time
    the key itself is shown; it ends when the password changes (unless that change keeps keys)."""
    key = new_api_key()
    now = utcnow()
    expires_at = now + timedelta(days=body.expires_in_days) if body.expires_in_days else None
    row = ApiKey(
        user_id=user.id,
        name=body.name.strip() or body.name,
        prefix=key[:API_KEY_DISPLAY_CHARS],
        key_hash=hash_api_key(key),
        created_at=now,
        expires_at=expires_at,
        token_version=user.token_version,
    )
    session.add(row)
    session.commit()
    return ApiKeyCreated(
        id=row.id, name=row.name, key=key, prefix=row.prefix, created_at=row.created_at, expires_at=row.expires_at
    )


@router.get("", response_model=list[ApiKeyPublic])
def read_api_keys(user: CurrentUser, session: SessionDep) -> list[ApiKey]:
    """The caller's keys, newest first, without their secrets."""
    return list(list_keys(session, user.id))


@router.get("/all", response_model=list[ApiKeyPublic])
def read_all_api_keys(
    _: AdminUser, session: SessionDep, user_id: Annotated[Optional[int], Query(ge=1, le=MAX_DB_INT)] = None
) -> list[ApiKey]:
    """(admin) Every user's keys, or one user's with ``user_id``."""
    return list(list_keys(session, user_id))


@router.delete("/{key_id}", response_model=Message)
def revoke_api_key(
    key_id: Annotated[int, Path(ge=1, le=MAX_DB_INT)], user: CurrentUser, auth: AuthDep, session: SessionDep
) -> Message:
    """Revoke a key at once: the caller's own, or (admin) anyone's. Someone else's key is a 404."""
    owner = delete_key(session, key_id, None if user.is_admin else user.id)
    if owner is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, KEY_NOT_FOUND)
    session.commit()
    auth.credentials_changed({owner})  # its open event streams end on every replica
    return Message(message=KEY_REVOKED)
