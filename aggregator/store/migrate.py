"""Run the alembic migrations that ship inside the package (``migrations/``).

Both ``open_store`` and ``aggregator db upgrade`` come here. On PostgreSQL the upgrade runs under
a transaction-scoped advisory lock, so replicas starting at the same moment migrate once and the
others wait, then find the schema at head.

alembic is imported only when a migration has to run: importing it and its script directory costs
a long-running service about 12 MB, so a database already at head is recognized by reading
``alembic_version`` and the ``revision`` lines of the migration files directly.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import sqlalchemy as sa

from aggregator.store.engine import is_postgres

if TYPE_CHECKING:
    from alembic.config import Config

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
    from alembic.config import Config

    cfg = Config(str(MIGRATIONS_DIR / "alembic.ini"))
    cfg.set_main_option("script_location", str(MIGRATIONS_DIR))
    return cfg


def head_revision() -> str:
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None, "no migrations found"
    return head


def current_revision(engine: sa.Engine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


_REVISION_LINE = re.compile(r"^(revision|down_revision)\b[^=\n]*=\s*(.*?)\s*$", re.MULTILINE)
_QUOTED = re.compile(r"""^(['"])([\w.-]+)\1$""")


def files_head_revision() -> str | None:
    """The head revision read from the migration files' ``revision = "..."`` and
    ``down_revision = "..."`` lines, or None unless they form one plain chain (alembic's
    ``ScriptDirectory`` then decides)."""
    parents: dict[str, str | None] = {}
    for path in sorted((MIGRATIONS_DIR / "versions").glob("*.py")):
        text = path.read_text("utf-8")
        found = {m.group(1): m.group(2) for m in _REVISION_LINE.finditer(text)}
        revision = _QUOTED.match(found.get("revision", ""))
        down = found.get("down_revision", "")
        down_match = _QUOTED.match(down)
        if revision is None or (down != "None" and down_match is None):
            return None
        parents[revision.group(2)] = down_match.group(2) if down_match else None
    heads = set(parents) - set(parents.values())
    roots = [rev for rev, down in parents.items() if down is None]
    if len(heads) != 1 or len(roots) != 1 or any(d not in parents for d in parents.values() if d):
        return None
    return heads.pop()


def _stored_revision(conn: sa.Connection) -> str | None:
    """What alembic's ``get_current_revision`` reads; None also when it is not one revision."""
    if not sa.inspect(conn).has_table("alembic_version"):
        return None
    rows = conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalars().all()
    return str(rows[0]) if len(rows) == 1 else None


def upgrade(engine: sa.Engine) -> UpgradeResult:
    """Bring the database schema to the newest revision (a no-op when it is there already)."""
    files_head = files_head_revision()
    with engine.begin() as conn:
        if is_postgres(conn):
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:k)"), {"k": MIGRATION_LOCK_KEY})
        if files_head is not None and _stored_revision(conn) == files_head:
            return UpgradeResult(before=files_head, after=files_head)
        from alembic import command
        from alembic.runtime.migration import MigrationContext
        from alembic.script import ScriptDirectory

        cfg = alembic_config()
        head = ScriptDirectory.from_config(cfg).get_current_head()
        assert head is not None, "no migrations found"
        before = MigrationContext.configure(conn).get_current_revision()
        if before != head:
            cfg.attributes["connection"] = conn
            command.upgrade(cfg, "head")
    return UpgradeResult(before=before, after=head)
