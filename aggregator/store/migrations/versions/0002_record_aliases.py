"""Record aliases: where else an exact duplicate was seen (its source still reports the story).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "record_aliases",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("record_id", sa.String(length=16), nullable=False),
        sa.Column("source_id", sa.String(length=200), nullable=True),
        sa.Column("url", sa.Text(), nullable=True),
        sa.Column("guid", sa.Text(), nullable=True),
        sa.Column("published", sa.DateTime(timezone=True), nullable=True),
        sa.Column("seen", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["records.id"],
            name=op.f("fk_record_aliases_record_id_records"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_record_aliases")),
    )
    with op.batch_alter_table("record_aliases", schema=None) as batch_op:
        batch_op.create_index("ix_record_aliases_record_id", ["record_id"], unique=False)
        batch_op.create_index(
            "ix_record_aliases_source_id_guid", ["source_id", "guid"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("record_aliases", schema=None) as batch_op:
        batch_op.drop_index("ix_record_aliases_source_id_guid")
        batch_op.drop_index("ix_record_aliases_record_id")
    op.drop_table("record_aliases")
