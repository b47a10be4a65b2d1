"""Outlets of relayed records: ``records.outlet``, ``outlet_url``, ``headline_key`` and
``record_aliases.outlet``, ``headline_key``.

A news search feed (Google News, Bing News) relays other outlets' articles: the records keep
the outlet it credits, and the headline key (identity.headline_key: the outlet's site and the
headline) that matches such an item with the outlet's own copy when its link stays wrapped.
Rows stored before this revision have no key; they keep deduplicating by URL and content.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE both ways (SQLite 3.35+ drops columns in place): a batch copy-and-move of
# ``records`` would, with foreign keys on, cascade its delete to every table referencing it.
COLUMNS = (
    ("records", "outlet", sa.Text()),
    ("records", "outlet_url", sa.Text()),
    ("records", "headline_key", sa.String(32)),
    ("record_aliases", "outlet", sa.Text()),
    ("record_aliases", "headline_key", sa.String(32)),
)


def upgrade() -> None:
    for table, name, type_ in COLUMNS:
        op.add_column(table, sa.Column(name, type_))
    op.create_index("ix_records_headline_key", "records", ["headline_key"])


def downgrade() -> None:
    op.drop_index("ix_records_headline_key", table_name="records")
    for table, name, _ in reversed(COLUMNS):
        op.execute(f"ALTER TABLE {table} DROP COLUMN {name}")
