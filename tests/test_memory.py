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

    text = zlib.decompress(base64.b64decode("".join(dedup_data.BLOB))).decode("utf-8")
    table = {key: int(cb) for key, _, cb in (line.partition("\t") for line in text.split("\n"))}
    assert all(dedup._background_cb(key) == cb for key, cb in table.items())
    misses = [key + "q" for key in list(table)[::50]] + [key[:-1] for key in list(table)[::50]]
    misses += ["", "\0", "the\0", "zzzzzzzzzzzzzzzzzzzzzzzzzzzzzz", "\uffff" * 3]
    assert all(dedup._background_cb(key) == table.get(key) for key in misses)


def test_modules_that_need_no_background_table_do_not_load_it() -> None:
    code = (
        "import aggregator.dedup as d, aggregator.identity as i, aggregator.store\n"
        "import aggregator.pipeline\n"
        "i.canonical_url('https://example.com/a?utm_source=x')\n"
        "print(d._background is None)\n"
    )
    assert _run(code) == "True"


_POOL_PROBE = """
import sys


def modules() -> list[str]:
    heavy = ("sqlalchemy", "httpx", "apscheduler", "starlette", "aggregator.store",
             "aggregator.cycle", "aggregator.fetch", "aggregator.service", "aggregator.web")
    return sorted(m for m in sys.modules if m.startswith(heavy))


if __name__ == "__main__":
    from datetime import UTC, datetime
    from pathlib import Path

    from aggregator import feeds, parse_worker
    from aggregator.cycle import parse_pool
    from aggregator.match import TopicMatcher
    from aggregator.model import DedupOptions, Schedule, Source, SourceKind, Topic, TopicRules

    body = Path(sys.argv[1]).read_bytes()
    source = Source(id="w", kind=SourceKind.FEED, url="https://n.example.org/feed",
                    schedule=Schedule(interval_seconds=600), language="en")
    matcher = TopicMatcher([Topic(id="all", title="All", rules=TopicRules(any=("the",)))])
    args = (source, datetime(2026, 11, 23, tzinfo=UTC), matcher, DedupOptions())
    pool = parse_pool(1)
    parsed = pool.submit(feeds.parse_feed, body, {}, source.url).result()
    assert parsed == feeds.parse_feed(body, {}, source.url)
    there = pool.submit(parse_worker.prepare_entries, parsed.entries, *args).result()
    here = parse_worker.prepare_entries(parsed.entries, *args)
    assert there == here and any(p.fingerprint for p in here)
    print(pool.submit(modules).result())
    pool.shutdown()
"""


def test_parse_pool_processes_import_only_what_parsing_and_preparing_need(tmp_path: Path) -> None:
    """A parse-pool process parses and prepares as the cycle's own process does, and never
    imports the store, the HTTP client or the service (unpickling its jobs from
    ``aggregator.cycle`` did: ≈ 85 MB of RSS per process before any work)."""
    script = tmp_path / "probe.py"
    script.write_text(_POOL_PROBE)
    feed = Path(__file__).resolve().parent.parent / "fixtures" / "feeds" / "rss_utf8.xml"
    done = subprocess.run(
        [sys.executable, str(script), str(feed)], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_the_command_line_imports_heavy_modules_only_for_the_commands_that_need_them() -> None:
    """``aggregator --help``, ``check-config`` or ``extract`` start without SQLAlchemy, numpy,
    rich or asyncio, and so does a parse-pool process, which imports the ``aggregator``
    script as its main module (a one-record import started in 1.49 s of CPU, 1.35 s after)."""
    code = (
        "import sys\n"
        "import aggregator.cli\n"
        "heavy = {'sqlalchemy', 'numpy', 'rich', 'asyncio', 'yaml', 'pydantic', 'httpx'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    assert _run(code) == "[]"


def test_feed_html_to_blocks_does_not_import_the_article_extractor() -> None:
    """``aggregator.extract`` loads its names on first use: a caller that only turns feed HTML
    into blocks (``normalize``) gets neither the article extractor and its classifier (numpy)
    nor the worker pool (multiprocessing, asyncio); the other names still resolve."""
    code = (
        "import sys\n"
        "from aggregator.extract import html_to_blocks\n"
        "assert html_to_blocks('<p>a <b>b</b></p>')[0].text == 'a **b**'\n"
        "heavy = ('aggregator.extract.article', 'aggregator.extract.classifier',\n"
        "         'aggregator.extract.worker', 'numpy', 'asyncio', 'multiprocessing')\n"
        "print(sorted(m for m in sys.modules if m.startswith(heavy)))\n"
        "from aggregator.extract import extract_text, ExtractorPool, scrape_listing\n"
        "import aggregator.extract as e\n"
        "print(callable(extract_text), e.ExtractorPool is ExtractorPool, 'parse_date' in dir(e))\n"
    )
    assert _run(code) == "[]\nTrue True True"
