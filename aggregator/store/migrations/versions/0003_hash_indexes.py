"""Hash indexes for URLs and GUIDs on PostgreSQL (no btree entry size limit).

A btree index entry is limited to about 2.7 KB on PostgreSQL, and some article URLs and feed
GUIDs are longer: inserting one failed. These columns are only compared for equality, which a
hash index serves without a size limit. SQLite keeps ordinary indexes.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_index("ix_records_canonical_url")
        batch_op.drop_index("ix_records_source_id_guid")
        batch_op.create_index(
            "ix_records_canonical_url", ["canonical_url"], unique=False, postgresql_using="hash"
        )
        batch_op.create_index("ix_records_guid", ["guid"], unique=False, postgresql_using="hash")
    with op.batch_alter_table("record_aliases", schema=None) as batch_op:
        batch_op.drop_index("ix_record_aliases_source_id_guid")
        batch_op.create_index(
            "ix_record_aliases_guid", ["guid"], unique=False, postgresql_using="hash"
        )


def downgrade() -> None:
    with op.batch_alter_table("record_aliases", schema=None) as batch_op:
        batch_op.drop_index("ix_record_aliases_guid")
        batch_op.create_index(
            "ix_record_aliases_source_id_guid", ["source_id", "guid"], unique=False
        )
    with op.batch_alter_table("records", schema=None) as batch_op:
        batch_op.drop_index("ix_records_guid")
        batch_op.drop_index("ix_records_canonical_url")
        batch_op.create_index("ix_records_source_id_guid", ["source_id", "guid"], unique=False)
        batch_op.create_index("ix_records_canonical_url", ["canonical_url"], unique=False)
