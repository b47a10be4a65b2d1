"""A feed's RSS ``<skipHours>``/``<skipDays>``: ``fetch_state.skip_hours``/``skip_days``.

The publisher's hours (GMT) and weekdays not to fetch are read from the feed when it is parsed
and kept with the source's fetch state, as bit sets (bit h of ``skip_hours`` for hour h, bit d
of ``skip_days`` for weekday d, 0 = Monday), so a fetch answered 304 (no body to read them
from) still schedules the next fetch outside them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fetch_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("skip_hours", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("skip_days", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fetch_state", schema=None) as batch_op:
        batch_op.drop_column("skip_days")
        batch_op.drop_column("skip_hours")
