"""User queries."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Optional

from sqlmodel import Session, col, func, or_, select

from storage.tables import User, username_key


def get_user(session: Session, user_id: int) -> Optional[User]:
    return session.get(User, user_id)


def get_user_by_username(session: Session, username: str) -> Optional[User]:
    """The user whose name is ``username`` up to case and Unicode compatibility forms."""
    return session.exec(select(User).where(User.username_key == username_key(username))).first()


def list_users(session: Session, skip: int = 0, limit: int = 100, search: str = "") -> Sequence[User]:
    """Users in id order; with ``search``, those whose name contains it (compared as names are: NFKC,
    case-folded) or whose e-mail address does (the databases' ``lower()``: ASCII letters in any case)."""
    query = _matching(select(User), search).order_by(col(User.id)).offset(skip).limit(limit)
    return session.exec(query).all()


def count_users(session: Session, search: str = "") -> int:
    return session.exec(_matching(select(func.count()).select_from(User), search)).one()


def _matching(query, search: str):
    if not search:
        return query
    # contains(..., autoescape=True): a % or _ typed into the search is a character, not a wildcard.
    by_name = col(User.username_key).contains(username_key(search), autoescape=True)
    by_email = func.lower(col(User.email)).contains(search.lower(), autoescape=True)
    return query.where(or_(by_name, by_email))
