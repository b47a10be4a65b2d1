"""Full-text search over the records (``aggregator search``, ``/search``).

SQLite: an FTS5 table ``records_search`` over ``records`` (external content, rowid =
``records.seq``, Unicode tokenizer that folds case and accents), kept by triggers on every
insert, update and delete of a record, whatever code writes it; filled from the stored records
here. PostgreSQL: a GIN index on ``to_tsvector('simple', title || ' ' || text)`` (the first
200,000 characters), which the database keeps without triggers.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_PG_VECTOR = "to_tsvector('simple'::regconfig, left(title || ' ' || text, 200000))"

_SQLITE = (
    "CREATE VIRTUAL TABLE records_search USING fts5(title, text, content='records', "
    "content_rowid='seq', tokenize='unicode61 remove_diacritics 2')",
    "CREATE TRIGGER records_search_insert AFTER INSERT ON records BEGIN "
    "INSERT INTO records_search(rowid, title, text) VALUES (new.seq, new.title, new.text); END",
    "CREATE TRIGGER records_search_delete AFTER DELETE ON records BEGIN "
    "INSERT INTO records_search(records_search, rowid, title, text) "
    "VALUES ('delete', old.seq, old.title, old.text); END",
    "CREATE TRIGGER records_search_update AFTER UPDATE OF title, text, seq ON records BEGIN "
    "INSERT INTO records_search(records_search, rowid, title, text) "
    "VALUES ('delete', old.seq, old.title, old.text); "
    "INSERT INTO records_search(rowid, title, text) VALUES (new.seq, new.title, new.text); END",
    "INSERT INTO records_search(records_search) VALUES ('rebuild')",
)


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(f"CREATE INDEX ix_records_search ON records USING gin ({_PG_VECTOR})")
        return
    for statement in _SQLITE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_records_search")
        return
    for name in ("insert", "delete", "update"):
        op.execute(f"DROP TRIGGER IF EXISTS records_search_{name}")
    op.execute("DROP TABLE IF EXISTS records_search")
