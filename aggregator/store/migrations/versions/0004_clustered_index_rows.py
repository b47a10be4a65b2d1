"""Index rows (LSH bands, key terms) clustered by key and time.

The candidate query reads, per key, its newest rows in a time window; ingest writes a few dozen
such rows per record. With the primary key (key, record_id) each row went into the table and
three B-trees: the primary key, (key, time) and (record_id). With the primary key (key, time,
record_id) the (key, time) index is the primary key itself, and on SQLite the table is stored
as that B-tree (WITHOUT ROWID): one B-tree and one index per row, a fifth less store time per
ingested record (benchmarks/cycle_bench.py; docs/performance.md).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, key column, key width)
TABLES = (("lsh_bands", "band", 100), ("key_terms", "term", 200))


def upgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, key, width in TABLES:
        if sqlite:
            _rebuild(table, key, width, (key, "time", "record_id"), with_rowid=False)
        else:
            op.drop_constraint(f"pk_{table}", table, type_="primary")
            op.create_primary_key(f"pk_{table}", table, [key, "time", "record_id"])
            op.drop_index(f"ix_{table}_{key}_time", table_name=table)


def downgrade() -> None:
    sqlite = op.get_bind().dialect.name == "sqlite"
    for table, key, width in TABLES:
        if sqlite:
            _rebuild(table, key, width, (key, "record_id"), with_rowid=True)
        else:
            op.drop_constraint(f"pk_{table}", table, type_="primary")
            op.create_primary_key(f"pk_{table}", table, [key, "record_id"])
        op.create_index(f"ix_{table}_{key}_time", table, [key, "time"], unique=False)


def _rebuild(
    table: str, key: str, width: int, primary_key: Sequence[str], *, with_rowid: bool
) -> None:
    """SQLite cannot change a primary key or a table's rowid in place: copy into a new table."""
    new = f"{table}_new"
    op.create_table(
        new,
        sa.Column(key, sa.String(length=width), nullable=False),
        sa.Column("record_id", sa.String(length=16), nullable=False),
        sa.Column("time", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["record_id"],
            ["records.id"],
            name=f"fk_{table}_record_id_records",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint(*primary_key, name=f"pk_{table}"),
        sqlite_with_rowid=with_rowid,
    )
    op.execute(
        f"INSERT INTO {new} ({key}, record_id, time) SELECT {key}, record_id, time FROM {table}"
    )
    op.drop_table(table)  # its indexes go with it
    op.rename_table(new, table)
    op.create_index(f"ix_{table}_record_id", table, ["record_id"], unique=False)
