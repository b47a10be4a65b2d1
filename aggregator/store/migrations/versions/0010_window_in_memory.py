"""The dedup index leaves the database; admin changes are counted for the in-memory window.

Candidates now come from the in-memory window of each ingesting process (``aggregator.ingest``),
rebuilt from the stored fingerprints: the ``lsh_bands`` and ``key_terms`` index rows (a few
dozen per record) are neither written nor read, and are dropped. ``store_meta.layout_version``
is bumped by every change that moves or removes stored records outside ingest (split, merge,
prune), so a process whose window saw another value rebuilds it before deciding.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, key column, key width), as revision 0004 left them
TABLES = (("lsh_bands", "band", 100), ("key_terms", "term", 200))


def upgrade() -> None:
    for table, _, _ in TABLES:
        op.drop_table(table)  # its indexes go with it
    with op.batch_alter_table("store_meta") as batch:
        batch.add_column(
            sa.Column("layout_version", sa.BigInteger(), nullable=False, server_default="0")
        )


def downgrade() -> None:
    with op.batch_alter_table("store_meta") as batch:
        batch.drop_column("layout_version")
    for table, key, width in TABLES:
        # Empty: the index rows of older versions are not rebuilt (their candidate query then
        # finds nothing stored before the downgrade).
        op.create_table(
            table,
            sa.Column(key, sa.String(length=width), nullable=False),
            sa.Column("record_id", sa.String(length=16), nullable=False),
            sa.Column("time", sa.DateTime(timezone=True), nullable=False),
            sa.ForeignKeyConstraint(
                ["record_id"],
                ["records.id"],
                name=f"fk_{table}_record_id_records",
                ondelete="CASCADE",
            ),
            sa.PrimaryKeyConstraint(key, "time", "record_id", name=f"pk_{table}"),
            sqlite_with_rowid=False,
        )
        op.create_index(f"ix_{table}_record_id", table, ["record_id"], unique=False)
