"""The admin routes called as functions on a real database (SQLite and PostgreSQL): one active admin stays."""

from __future__ import annotations

import pytest
from fastapi import HTTPException
from sqlmodel import Session, func, select

from auth.routes import LAST_ADMIN, delete_user, toggle_active, toggle_admin
from storage import User
from tests.storage.seed import add_user


def _active_admins(engine) -> int:
    with Session(engine) as session:
        return session.exec(select(func.count()).select_from(User).where(User.is_admin, User.is_active)).one()


@pytest.mark.parametrize("action", [delete_user, toggle_admin, toggle_active])
def test_two_admins_cannot_remove_each_other_down_to_none(engine, action):
    """Finding 10: each admin's request was authenticated before the other's change landed."""
    a = add_user(engine, "alpha", is_admin=True)
    b = add_user(engine, "bravo", is_admin=True)
    with Session(engine, expire_on_commit=False) as session:
        action(b.id, a, session)  # alpha removes bravo
    with Session(engine, expire_on_commit=False) as session, pytest.raises(HTTPException) as refused:
        action(a.id, b, session)  # bravo, still holding its admin user from before, removes alpha
    assert (refused.value.status_code, refused.value.detail) == (400, LAST_ADMIN)
    assert _active_admins(engine) == 1


def test_an_admin_can_still_remove_another_admin_while_one_stays(engine):
    a = add_user(engine, "alpha", is_admin=True)
    b = add_user(engine, "bravo", is_admin=True)
    with Session(engine, expire_on_commit=False) as session:
        delete_user(b.id, a, session)
    assert _active_admins(engine) == 1
