"""API keys carry their owner's token version; logged-out login tokens are kept until they expire.

``api_keys.token_version`` (existing keys take their owner's current version, so none stops
working by the upgrade) and the ``revoked_tokens`` table (``storage.tables.RevokedToken``).

Revision ID: b7d2e41c9a10
Revises: 8ebcbd95cc56
Create Date: 2026-12-07 02:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

revision: str = "b7d2e41c9a10"
down_revision: Union[str, Sequence[str], None] = "8ebcbd95cc56"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("token_version", sa.Integer(), server_default="0", nullable=False))
    op.execute(
        "UPDATE api_keys SET token_version = (SELECT users.token_version FROM users WHERE users.id = api_keys.user_id)"
    )
    op.create_table(
        "revoked_tokens",
        sa.Column("jti", sa.String(length=32), nullable=False),
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("expires_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("jti"),
    )
    op.create_index("ix_revoked_tokens_expires_at", "revoked_tokens", ["expires_at"])


def downgrade() -> None:
    op.drop_table("revoked_tokens")
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("token_version")
