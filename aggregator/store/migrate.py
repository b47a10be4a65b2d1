"""Run the alembic migrations that ship inside the package (``migrations/``).

Both ``open_store`` and ``aggregator db upgrade`` come here. On PostgreSQL the upgrade runs under
a transaction-scoped advisory lock, so replicas starting at the same moment migrate once and the
others wait, then find the schema at head.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from aggregator.store.engine import is_postgres

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
# Arbitrary constant: the advisory lock key that serializes migrations on PostgreSQL.
MIGRATION_LOCK_KEY = 0x61676772_6D696772  # "aggrmigr"


@dataclass(frozen=True, slots=True)
class UpgradeResult:
    before: str | None  # revision found (None: empty database)
    after: str  # revision now (head)

    @property
    def changed(self) -> bool:
        return self.before != self.after


def alembic_config() -> Config:
    """The alembic configuration of the installed package."""
    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: sa.Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: sa.Engine) -> UpgradeResult:
    """Bring the database schema to the newest revision (a no-op when it is there already)."""
    cfg = alembic_config()
    head = ScriptDirectory.from_config(cfg).get_current_head()
    assert head is not None, "no migrations found"
    with engine.begin() as conn:
        if is_postgres(conn):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        before = MigrationContext.configure(conn).get_current_revision()
        if before != head:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return UpgradeResult(before=before, after=head)
