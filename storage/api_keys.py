"""API-key queries. Keys are found by the hash of the presented key; owners filter in the same WHERE."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Optional

from sqlalchemy import CursorResult, delete, update
from sqlmodel import Session, col, select

from storage.tables import ApiKey, User


def find_key_with_user(session: Session, key_hash: str) -> Optional[tuple[ApiKey, User]]:
    """The key with this hash and its owner, in one query (a deleted user's keys are gone with it)."""
    return session.exec(
        select(ApiKey, User).join(User, col(User.id) == col(ApiKey.user_id)).where(col(ApiKey.key_hash) == key_hash)
    ).first()


def list_keys(session: Session, user_id: Optional[int]) -> Sequence[ApiKey]:
    """One user's keys, or everyone's for ``user_id=None``, newest first."""
    query = select(ApiKey).order_by(col(ApiKey.id).desc())
    if user_id is not None:
        query = query.where(ApiKey.user_id == user_id)
    return session.exec(query).all()


def delete_key(session: Session, key_id: int, owner_id: Optional[int]) -> Optional[int]:
    """Deletes the key (of ``owner_id`` only, unless ``None``); its owner's id, None when there is no such key."""
    query = select(ApiKey.user_id).where(col(ApiKey.id) == key_id)
    if owner_id is not None:
        query = query.where(col(ApiKey.user_id) == owner_id)
    owner = session.exec(query).first()
    if owner is None:
        return None
    result: CursorResult = session.execute(delete(ApiKey).where(col(ApiKey.id) == key_id))  # type: ignore[assignment]
    return owner if result.rowcount > 0 else None


def keys_after_password_change(session: Session, user_id: int, token_version: int, keep: bool) -> None:
    """The user's keys after a password change: deleted, or (``keep``) carried to the new version."""
    if keep:
        session.execute(update(ApiKey).where(col(ApiKey.user_id) == user_id).values(token_version=token_version))
    else:
        session.execute(delete(ApiKey).where(col(ApiKey.user_id) == user_id))


def restore_keys_after_enable(session: Session, user_id: int, token_version: int) -> None:
    """Re-enabling a user brings back the keys that worked when it was disabled (which bumped the
    token version by one), and only those."""
    session.execute(
        update(ApiKey)
        .where(col(ApiKey.user_id) == user_id, col(ApiKey.token_version) == token_version - 1)
        .values(token_version=token_version)
    )


def touch_key(session: Session, key_id: int, now: datetime) -> None:
    session.execute(update(ApiKey).where(col(ApiKey.id) == key_id).values(last_used_at=now))
