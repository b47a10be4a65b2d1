"""What keeps the long-running service small: heavy modules stay unimported until needed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from aggregator.store.migrate import files_head_revision, head_revision


def test_head_read_from_the_migration_files_is_alembics() -> None:
    assert files_head_revision() == head_revision()


def _run(code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True
    )
    return done.stdout.strip()


def test_a_database_at_head_opens_without_importing_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'a.db'}"
    code = (
        "import sys\n"
        "from aggregator.store import open_store\n"
        f"open_store({url!r}).close()\n"
        "first = 'alembic' in sys.modules\n"
        "for name in [m for m in sys.modules if m == 'alembic' or m.startswith('alembic.')]:\n"
        "    del sys.modules[name]\n"
        f"open_store({url!r}).close()\n"
        "print(first, 'alembic' in sys.modules)\n"
    )
    # The first open creates the schema with alembic; the second finds it at head.
    assert _run(code) == "True False"
