"""Users: ids never reused, look-alike names refused, tokens bound to their account; login failures table.

- ``users`` is rebuilt with SQLite ``AUTOINCREMENT``, so a deleted user's id (and with it live
  tasks and tokens naming it) never goes to the next user; PostgreSQL sequences never reuse ids.
- ``users.username_key``: the NFKC-normalised, case-folded name, unique. Existing rows get theirs;
  where two existing names are the same up to case, the older account keeps the name and the
  newer one's key gets ``#<id>`` (that account then logs in under no name until an admin acts).
- ``users.token_key``: random per account, carried in its tokens; existing tokens stop working
  (one new log-in).
- ``login_failures``: failed log-ins per (account, address) and per address, for every replica.

Revision ID: 0003
Revises: 0cf20d7a9a49
Create Date: 2026-11-29 12:10:00
"""

from __future__ import annotations

import secrets
import unicodedata
from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: Union[str, Sequence[str], None] = "0cf20d7a9a49"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def _username_key(username: str) -> str:
    # A copy of storage.tables.username_key as of this revision, so the revision keeps its meaning.
    return unicodedata.normalize("NFKC", username).casefold()


def upgrade() -> None:
    op.create_table(
        "login_failures",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("last_failure_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_login_failures_last_failure_at", "login_failures", ["last_failure_at"], unique=False)

    with op.batch_alter_table("users") as batch_op:
        batch_op.add_column(sa.Column("username_key", sa.String(), nullable=True))
        batch_op.add_column(sa.Column("token_key", sa.String(length=32), nullable=True))

    bind = op.get_bind()
    users = sa.table(
        "users",
        sa.column("id", sa.Integer()),
        sa.column("username", sa.String()),
        sa.column("username_key", sa.String()),
        sa.column("token_key", sa.String()),
    )
    taken: set[str] = set()
    for user_id, username in bind.execute(sa.select(users.c.id, users.c.username).order_by(users.c.id)).all():
        key = _username_key(username)
        if key in taken:
            key = f"{key}#{user_id}"
        taken.add(key)
        bind.execute(
            users.update().where(users.c.id == user_id).values(username_key=key, token_key=secrets.token_urlsafe(16))
        )

    sqlite = bind.dialect.name == "sqlite"
    with op.batch_alter_table(
        "users", recreate="always" if sqlite else "auto", table_kwargs={"sqlite_autoincrement": True}
    ) as batch_op:
        batch_op.alter_column("username_key", existing_type=sa.String(), nullable=False)
        batch_op.alter_column("token_key", existing_type=sa.String(length=32), nullable=False)
        batch_op.create_index("ix_users_username_key", ["username_key"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("users") as batch_op:
        batch_op.drop_index("ix_users_username_key")
        batch_op.drop_column("token_key")
        batch_op.drop_column("username_key")
    op.drop_index("ix_login_failures_last_failure_at", table_name="login_failures")
    op.drop_table("login_failures")
