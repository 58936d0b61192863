"""LoRA adapters record the model family they were trained for.

``lora_adapters.base`` (``storage.tables.Adapter``): ``qwen-image`` for the 2512/2511 pair, whose
adapters every existing row is, or ``qwen-image-2.1``. Requests and registrations for the other
family than the one the service runs are refused.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-10 10:00:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Union

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: Union[str, Sequence[str], None] = "0008"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    with op.batch_alter_table("lora_adapters") as batch:
        batch.add_column(sa.Column("base", sa.String(length=32), server_default="qwen-image", nullable=False))


def downgrade() -> None:
    with op.batch_alter_table("lora_adapters") as batch:
        batch.drop_column("base")
