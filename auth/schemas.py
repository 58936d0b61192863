"""Request and response schemas for /auth. Clients can never set ids, admin flags or owners."""

from __future__ import annotations

from datetime import datetime
from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

# Control characters (NUL above all: PostgreSQL refuses it in text, a 500) never belong in a name.
EMAIL_PATTERN = r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$"
USERNAME_PATTERN = r"^[^\s/\\\x00-\x1f\x7f]+$"
NO_NUL = r"^[^\x00]*$"


class UserCreate(BaseModel):
    username: str = Field(min_length=3, max_length=50, pattern=USERNAME_PATTERN)
    password: str = Field(min_length=6, max_length=128)
    email: Optional[str] = Field(default=None, max_length=255, pattern=EMAIL_PATTERN)


class UserUpdate(BaseModel):
    """``PUT /auth/me``: unknown fields such as ``is_admin`` are ignored. A new ``password`` needs
    ``current_password``; ``keep_api_keys`` keeps the user's keys working after it."""

    email: Optional[str] = Field(default=None, max_length=255, pattern=EMAIL_PATTERN)
    password: Optional[str] = Field(default=None, min_length=6, max_length=128)
    current_password: Optional[str] = Field(default=None, min_length=1, max_length=128)
    keep_api_keys: bool = False


class LoginRequest(BaseModel):
    username: str = Field(min_length=1, max_length=50, pattern=NO_NUL)
    password: str = Field(min_length=1, max_length=128)


class ChangePasswordRequest(BaseModel):
    old_password: str = Field(min_length=1, max_length=128)
    new_password: str = Field(min_length=6, max_length=128)
    keep_api_keys: bool = Field(default=False, description="keep the API keys made before the change")


class Token(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    username: str
    email: Optional[str]
    is_active: bool
    is_admin: bool
    created_at: datetime


class UserAdminView(UserPublic):
    """A user as ``GET /auth/users`` lists them for an administrator: with their own limits, so a
    list of users needs no second request per user."""

    daily_limit: Optional[int] = Field(
        default=None, description="the user's own daily limit; null: the service default"
    )
    monthly_limit: Optional[int] = Field(
        default=None, description="the user's own monthly limit; null: the service default"
    )


class Message(BaseModel):
    message: str


class QuotaLimits(BaseModel):
    """Admin override of a user's limits; ``null`` restores the service default."""

    daily_limit: Optional[int] = Field(default=None, ge=0, le=1_000_000)
    monthly_limit: Optional[int] = Field(default=None, ge=0, le=10_000_000)
