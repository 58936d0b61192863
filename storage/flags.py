"""Settings an administrator changes at run time, kept in the database so every replica agrees."""

from __future__ import annotations

from typing import Optional

from sqlalchemy.exc import IntegrityError
from sqlmodel import Session

from storage.tables import ServiceFlag, utcnow

REGISTRATION_OPEN = "registration_open"


def get_flag(session: Session, name: str) -> Optional[str]:
    """The flag's value, or None when no administrator ever set it."""
    row = session.get(ServiceFlag, name)
    return row.value if row is not None else None


def set_flag(session: Session, name: str, value: str) -> None:
    """Set the flag and commit (another replica inserting it at the same moment: the last write wins)."""
    for _ in range(2):
        row = session.get(ServiceFlag, name)
        if row is None:
            session.add(ServiceFlag(name=name, value=value))
        else:
            row.value, row.updated_at = value, utcnow()
            session.add(row)
        try:
            session.commit()
            return
        except IntegrityError:
            session.rollback()
    raise RuntimeError(f"flag {name} could not be written")
