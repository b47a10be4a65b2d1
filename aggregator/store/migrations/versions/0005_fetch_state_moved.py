"""Where a source's feed moved permanently (301/308): ``fetch_state.moved_from``/``moved_to``.

A source whose URL answers with a permanent redirect is fetched from the new address from then
on, for as long as the watchlist still names the old one (``moved_from``), and ``aggregator
sources`` shows the move so that an admin can update the watchlist.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("fetch_state", schema=None) as batch_op:
        batch_op.add_column(sa.Column("moved_from", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("moved_to", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("fetch_state", schema=None) as batch_op:
        batch_op.drop_column("moved_to")
        batch_op.drop_column("moved_from")
