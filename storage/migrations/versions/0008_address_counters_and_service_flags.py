"""Requests counted per client address, and settings an administrator changes at run time.

The ``address_counters`` table (``storage.tables.AddressCounter``: registrations and log-ins per
address) and the ``service_flags`` table (``storage.tables.ServiceFlag``: whether registration is
open). New tables only; nothing existing changes.

Revision ID: 0008
Revises: b7d2e41c9a10
Create Date: 2026-12-09 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: Union[str, Sequence[str], None] = "b7d2e41c9a10"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    op.create_table(
        "address_counters",
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("count", sa.Integer(), nullable=False),
        sa.Column("window_ends_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("key"),
    )
    op.create_index("ix_address_counters_window_ends_at", "address_counters", ["window_ends_at"])
    op.create_table(
        "service_flags",
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("value", sa.String(length=256), nullable=False),
        sa.Column("updated_at", sa.DateTime(), nullable=False),
        sa.PrimaryKeyConstraint("name"),
    )


def downgrade() -> None:
    op.drop_table("service_flags")
    op.drop_index("ix_address_counters_window_ends_at", table_name="address_counters")
    op.drop_table("address_counters")
