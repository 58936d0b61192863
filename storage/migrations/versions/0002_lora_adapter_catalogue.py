"""The LoRA adapter catalogue: adapters admins register and requests name.

Revision ID: 0cf20d7a9a49
Revises: 0001
Create Date: 2026-11-29 11:46:08.249288
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

revision: str = "0cf20d7a9a49"
down_revision: Union[str, Sequence[str], None] = "0001"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "lora_adapters",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("model", sa.String(length=20), nullable=False),
        sa.Column("source_type", sa.String(length=10), nullable=False),
        sa.Column("source", sa.String(length=512), nullable=False),
        sa.Column("weight_name", sa.String(length=255), nullable=True),
        sa.Column("default_scale", sa.Float(), nullable=False),
        sa.Column("description", sa.String(length=1000), nullable=False),
        sa.Column("trigger_words", sa.JSON(), nullable=False),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.Column("created_by", sa.Integer(), nullable=True),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"], ondelete="SET NULL"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("lora_adapters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_lora_adapters_name"), ["name"], unique=True)


def downgrade() -> None:
    with op.batch_alter_table("lora_adapters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_lora_adapters_name"))

    op.drop_table("lora_adapters")
