"""``/admin/security``: what an administrator should fix, for the admin page to warn about.

Today one fact: whether the configured administrator account still has the default password
(the service logs the same warning at start-up, where few people look).
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from auth.deps import AdminUser, AuthDep, SessionDep

router = APIRouter(prefix="/admin", tags=["admin"])


class SecurityStatus(BaseModel):
    admin_username: str
    default_admin_password: bool


@router.get("/security", response_model=SecurityStatus)
def read_security(_: AdminUser, auth: AuthDep, session: SessionDep) -> SecurityStatus:
    """Whether the administrator ``admin_username`` still logs in with the default password."""
    return SecurityStatus(
        admin_username=auth.config.admin_username,
        default_admin_password=auth.admin_password_is_default(session),
    )
