"""Crashes and broken stores (issue 22), through the real service and CLI: a restarted service
on SQLite takes over its dead predecessor's leases at once; a corrupt SQLite file is found by
``aggregator db check`` and refused at start, with what to do; an unreadable page-source
article waits out a backoff instead of being fetched on every run."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aggregator.cli import main as cli_main
from tests.hostile_server import HostileServer
from tests.test_service_e2e import ROOT, cycle_done, free_port, service, write_watchlist

pytestmark = pytest.mark.slow


def test_a_restarted_service_takes_over_its_dead_predecessors_leases(tmp_path: Path) -> None:
    config = tmp_path / "watchlist.yaml"
    write_watchlist(config, ["lrt-english"])
    db = tmp_path / "a.db"
    # Every replayed answer takes 60 s: the first process is killed mid-fetch, lease held.
    with service(tmp_path, db, config, "--replay-latency", "60", lease=600) as first:
        first.wait(lambda: first.health()["in_flight"] == 1, what="a fetch in flight")
        first.proc.kill()
        first.proc.wait(10)
    with sqlite3.connect(db) as conn:
        owner, expires = conn.execute(
            "SELECT lease_owner, lease_expires FROM fetch_state WHERE source_id='lrt-english'"
        ).fetchone()
    assert owner and expires  # the dead process's lease, ten minutes to run
    with service(tmp_path, db, config, lease=600) as second:
        # Fetched now, not after the 600 s lease.
        second.wait(cycle_done(second, 1), timeout=60, what="the source fetched at once")
        assert second.health()["failing_sources"] == 0
        assert "took over 1 sources leased by processes that are gone" in second.logs()


def _corrupt(db: Path) -> None:
    """Junk over a page in the middle of the file (not the header)."""
    with sqlite3.connect(db) as conn:
        page_size = conn.execute("PRAGMA page_size").fetchone()[0]
        pages = conn.execute("PRAGMA page_count").fetchone()[0]
    assert pages >= 4
    with open(db, "r+b") as f:
        f.seek(page_size * (pages // 2))
        f.write(b"\xde\xad\xbe\xef" * (page_size // 4))


@pytest.fixture
def stored_db(tmp_path: Path, seeds_dir: Path) -> Iterator[tuple[Path, list[str]]]:
    db = tmp_path / "a.db"
    args = ["--db", f"sqlite:///{db}", "--config", str(ROOT / "config" / "watchlist.yaml")]
    assert cli_main([*args, "import", str(seeds_dir)]) == 0
    yield db, args


def test_db_check_finds_a_corrupt_sqlite_file_and_says_what_to_do(
    stored_db: tuple[Path, list[str]], capsys: pytest.CaptureFixture[str]
) -> None:
    db, args = stored_db
    capsys.readouterr()
    assert cli_main([*args, "db", "check"]) == 0
    assert "ok (integrity_check found no problem)" in capsys.readouterr().out
    _corrupt(db)
    assert cli_main([*args, "db", "check"]) == 1
    err = capsys.readouterr().err
    assert f"the database {db} is corrupt" in err
    assert "restore the last backup" in err and ".recover" in err


def test_the_service_refuses_to_start_on_a_corrupt_store(
    stored_db: tuple[Path, list[str]], tmp_path: Path
) -> None:
    db, _ = stored_db
    _corrupt(db)
    config = tmp_path / "watchlist.yaml"
    write_watchlist(config, ["lrt-english"])
    command = [sys.executable, "-m", "aggregator", "--db", f"sqlite:///{db}"]
    done = subprocess.run(
        [*command, "--config", str(config), "run", "--port", str(free_port()), "--no-seeds"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        env={"AGGREGATOR_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"},
    )
    assert done.returncode == 1
    assert "is corrupt" in done.stderr + done.stdout
    assert "restore the last backup" in done.stderr + done.stdout


@pytest.fixture
def site() -> Iterator[HostileServer]:
    with HostileServer() as s:
        article = (
            "<html><head><title>Border story</title></head><body><article><h1>Border story"
            "</h1>" + "<p>The border checkpoint was closed again on Monday night.</p>" * 6
        ).encode()

        async def listing(req: object, w: object) -> None:
            body = (
                f"<ul><li><a href='{s.url('/good.html')}'>Good</a></li>"
                f"<li><a href='{s.url('/broken.html')}'>Broken</a></li></ul>"
            ).encode()
            await s._send(w, 200, body, "text/html")  # type: ignore[arg-type]

        async def good(req: object, w: object) -> None:
            await s._send(w, 200, article, "text/html")  # type: ignore[arg-type]

        async def broken(req: object, w: object) -> None:
            await s._send(w, 500, b"boom", "text/plain")  # type: ignore[arg-type]

        s.routes.update({"/list.html": listing, "/good.html": good, "/broken.html": broken})
        yield s


def test_an_unreadable_article_waits_out_a_backoff(
    tmp_path: Path, site: HostileServer, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "watchlist.yaml"
    config.write_text(
        "version: 1\nfetch:\n  min_host_interval_seconds: 0\n  retries: 0\n"
        "  respect_robots: false\n  allow_networks: ['127.0.0.1/32']\n"
        "topics:\n  - id: border\n    title: Border\n    rules: {any: [border*]}\n"
        f"sources:\n  - {{id: p, kind: page, url: '{site.url('/list.html')}',"
        " selectors: {item: li}}\n",
        encoding="utf-8",
    )
    db = tmp_path / "a.db"
    args = ["--db", f"sqlite:///{db}", "--config", str(config)]

    def fetch() -> dict[str, Any]:
        cli_main([*args, "fetch-once", "--source", "p", "--json"])
        row: dict[str, Any] = json.loads(capsys.readouterr().out)
        return row

    first = fetch()
    assert first["new_records"] == 1 and first["item_errors"] == 1
    assert site.hits["/broken.html"] == 1
    second = fetch()
    assert second["status"] == "ok" and second["links_skipped"] == 1
    assert site.hits["/broken.html"] == 1  # not fetched again within its backoff
    with sqlite3.connect(db) as conn:
        failures, next_try = conn.execute(
            "SELECT failures, next_try FROM article_failures WHERE source_id = 'p'"
        ).fetchone()
    assert failures == 1 and next_try
    # Once the wait is over it is tried again, and a second failure doubles the wait.
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE article_failures SET next_try = '2000-01-01 00:00:00.000000'")
    fetch()
    assert site.hits["/broken.html"] == 2
    with sqlite3.connect(db) as conn:
        assert conn.execute("SELECT failures FROM article_failures").fetchone()[0] == 2
