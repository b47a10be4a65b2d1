"""Unreadable articles of page sources are remembered: ``article_failures``.

A page source's article that could not be fetched or read was fetched again on every run. Its
failures and the time it may be tried again are kept here, with the wait doubling per failure
(pipeline decides; the store writes).

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "article_failures",
        sa.Column("source_id", sa.String(200), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("failures", sa.Integer(), nullable=False),
        sa.Column("next_try", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.PrimaryKeyConstraint("source_id", "url"),
    )


def downgrade() -> None:
    op.drop_table("article_failures")
