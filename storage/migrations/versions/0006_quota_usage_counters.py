"""Quota usage counters: per user and day, month and in total, filled from the existing task records.

New tables only. The quota check reads three counters instead of summing a user's whole history;
the counters are kept in the transaction of every change that moves usage (storage/usage.py). They
are filled here with days and months in UTC; a service whose QUOTA_TIMEZONE is another zone rebuilds
them in its zone at its first quota check (storage.usage.ensure_counters).

Revision ID: 8ebcbd95cc56
Revises: 4a6fa33687a0
Create Date: 2026-11-29 14:40:00.000000
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import timezone
from typing import Union

import sqlalchemy as sa
from alembic import op

revision: str = "8ebcbd95cc56"
down_revision: Union[str, Sequence[str], None] = "4a6fa33687a0"
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    counters = op.create_table(
        "usage_counters",
        sa.Column("user_id", sa.Integer(), nullable=False),
        sa.Column("period", sa.String(length=5), nullable=False),
        sa.Column("start", sa.String(length=10), nullable=False),
        sa.Column("images", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("user_id", "period", "start"),
    )
    zone = op.create_table(
        "usage_counter_zone",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("zone", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # The existing rows, counted as the quota counts them (written out here, not imported: a revision
    # must keep doing what it did when the code around it changes).
    tasks = sa.table(
        "task_records",
        sa.column("user_id", sa.Integer),
        sa.column("created_at", sa.DateTime),
        sa.column("image_count", sa.Integer),
        sa.column("status", sa.String),
        sa.column("started_at", sa.DateTime),
    )
    amounts: Counter[tuple[int, str, str]] = Counter()
    rows = op.get_bind().execute(
        sa.select(tasks.c.user_id, tasks.c.created_at, tasks.c.image_count, tasks.c.status, tasks.c.started_at).where(
            tasks.c.user_id.is_not(None)
        )
    )
    for user_id, created_at, images, status, started_at in rows:
        if status == "failed" or (status == "cancelled" and started_at is None):
            continue  # given back
        moment = created_at.replace(tzinfo=timezone.utc) if created_at.tzinfo is None else created_at
        moment = moment.astimezone(timezone.utc)
        for period, start in (("day", moment.date().isoformat()), ("month", moment.strftime("%Y-%m")), ("total", "")):
            amounts[(user_id, period, start)] += images
    values = [dict(user_id=u, period=p, start=s, images=n) for (u, p, s), n in amounts.items() if n]
    for first in range(0, len(values), 1000):
        op.bulk_insert(counters, values[first : first + 1000])
    op.bulk_insert(zone, [dict(id=1, zone="UTC")])


def downgrade() -> None:
    op.drop_table("usage_counter_zone")
    op.drop_table("usage_counters")
