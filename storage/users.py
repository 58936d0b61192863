"""User queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from sqlmodel import Session, col, func, select

from storage.tables import User


def get_user(session: Session, user_id: int) -> Optional[User]:
    return session.get(User, user_id)


def get_user_by_username(session: Session, username: str) -> Optional[User]:
    return session.exec(select(User).where(User.username == username)).first()


def list_users(session: Session, skip: int = 0, limit: int = 100) -> Sequence[User]:
    return session.exec(select(User).order_by(col(User.id)).offset(skip).limit(limit)).all()


def count_users(session: Session) -> int:
    return session.exec(select(func.count()).select_from(User)).one()
