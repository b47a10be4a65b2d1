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


def test_background_table_lookup_is_the_plain_table() -> None:
    """The compact background table answers exactly what the file's key -> centibels lines say."""
    import base64
    import zlib

    from aggregator import dedup, dedup_data

    text = zlib.decompress(base64.b85decode("".join(dedup_data.BLOB))).decode("utf-8")
    table = {key: int(cb) for key, _, cb in (line.partition("\t") for line in text.split("\n"))}
    assert all(dedup._background_cb(key) == cb for key, cb in table.items())
    misses = [key + "q" for key in list(table)[::50]] + [key[:-1] for key in list(table)[::50]]
    misses += ["", "\0", "the\0", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "\uffff" * 3]
    assert all(dedup._background_cb(key) == table.get(key) for key in misses)


def test_modules_that_need_no_background_table_do_not_load_it() -> None:
    code = (
        "import aggregator.dedup as d, aggregator.store, aggregator.pipeline\n"
        "d.canonical_url('https://example.com/a?utm_source=x')\n"
        "print(d._background is None)\n"
    )
    assert _run(code) == "True"
