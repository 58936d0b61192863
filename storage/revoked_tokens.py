"""Login tokens ended by log-out before their expiry, by token id (``jti``)."""

from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import delete
from sqlmodel import Session, col

from storage.tables import RevokedToken


def revoke_token(session: Session, jti: str, user_id: int, expires_at: datetime) -> None:
    """Record ``jti`` as ended (idempotent) and forget ended tokens that have expired anyway."""
    now = datetime.now(timezone.utc)
    session.execute(delete(RevokedToken).where(col(RevokedToken.expires_at) < now))
    if session.get(RevokedToken, jti) is None:
        session.add(RevokedToken(jti=jti, user_id=user_id, expires_at=expires_at))


def is_revoked(session: Session, jti: str) -> bool:
    return bool(jti) and session.get(RevokedToken, jti) is not None
