"""``/admin/registration``: an administrator opens or closes registration at run time.

The choice is kept in the database (``service_flags``), so every ingress replica and every restart
follows it at once; until an administrator first sets it, ``ALLOW_REGISTRATION`` decides.
"""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel

from auth.deps import AdminUser, AuthDep, SessionDep

router = APIRouter(prefix="/admin", tags=["admin"])


class RegistrationSetting(BaseModel):
    open: bool


@router.get("/registration", response_model=RegistrationSetting)
def read_registration(_: AdminUser, auth: AuthDep, session: SessionDep) -> RegistrationSetting:
    """Whether ``POST /auth/register`` accepts new accounts now."""
    return RegistrationSetting(open=auth.registration_open(session))


@router.put("/registration", response_model=RegistrationSetting)
def set_registration(
    body: RegistrationSetting, _: AdminUser, auth: AuthDep, session: SessionDep
) -> RegistrationSetting:
    """Open (``{"open": true}``) or close registration for every replica, until changed again."""
    auth.set_registration_open(session, body.open)
    return RegistrationSetting(open=auth.registration_open(session))
