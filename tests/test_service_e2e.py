"""The real service in a subprocess, fetching recordings served on 127.0.0.1 (``--replay``).

Feeds appear; a watchlist edit that adds a source takes effect, a broken one is refused with
file:line in /healthz while the service keeps serving; SIGTERM exits 0; kill -9 and a restart
publish nothing twice (the same entry ids as a run that was never killed).
"""

from __future__ import annotations

import io
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import feedparser
import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "fixtures"

pytestmark = pytest.mark.slow

WATCHLIST = """\
version: 1
defaults:
  schedule: {{every: 10m}}
topics:
  - id: border
    title: Belarus-Lithuania border
    rules:
      any: [border*, checkpoint*, crossing*]
  - id: balloons
    title: Smuggling balloons
    rules:
      any: [balloon*, drone*]
  - id: sanctions
    title: Sanctions
    rules:
      any: [sanction*, potash]
sources:
{sources}"""

SOURCES = {
    "lrt-english": "  - id: lrt-english\n    kind: feed\n    url: https://www.lrt.lt/rss\n",
    "belsat-en": "  - id: belsat-en\n    kind: feed\n    url: https://belsat.eu/en/feed/\n",
    "gnews-balloons-en": (
        "  - id: gnews-balloons-en\n    kind: query\n    query: Lithuania balloons\n"
        '    url_template: "https://news.google.com/rss/search?q={query}"\n'
    ),
}


def write_watchlist(path: Path, ids: list[str]) -> None:
    path.write_text(WATCHLIST.format(sources="".join(SOURCES[i] for i in ids)))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Running:
    def __init__(self, proc: subprocess.Popen[str], port: int, log: Path) -> None:
        self.proc = proc
        self.port = port
        self.log = log

    def get(self, path: str) -> tuple[int, bytes]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=5) as r:
                return r.status, r.read()
        except urllib.error.HTTPError as exc:
            return exc.code, exc.read()

    def health(self) -> dict[str, Any]:
        status, body = self.get("/healthz")
        data: dict[str, Any] = json.loads(body)
        data["_status"] = status
        return data

    def entries(self) -> list[Any]:
        status, body = self.get("/feeds/all.atom")
        assert status == 200
        return list(feedparser.parse(io.BytesIO(body)).entries)

    def wait(self, check: Callable[[], bool], timeout: float = 30.0, what: str = "") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"service exited ({self.proc.returncode}):\n{self.logs()}")
            try:
                if check():
                    return
            except (OSError, ValueError, KeyError):
                pass  # not listening yet
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}\n{self.logs()[-4000:]}")

    def logs(self) -> str:
        return self.log.read_text(encoding="utf-8", errors="replace")


@contextmanager
def service(
    tmp: Path,
    db: Path,
    config: Path,
    *extra: str,
    lease: float = 300,
    env_extra: dict[str, str] | None = None,
) -> Iterator[Running]:
    port = free_port()
    log = tmp / f"service-{port}.log"
    env = {
        **os.environ,
        "AGGREGATOR_DATA_DIR": str(tmp),
        "AGGREGATOR_RELOAD_INTERVAL": "0.2",
        "AGGREGATOR_LEASE_SECONDS": str(lease),
        "AGGREGATOR_SHUTDOWN_TIMEOUT": "5",
        **(env_extra or {}),
    }
    with open(log, "w", encoding="utf-8") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aggregator",
                "--db",
                f"sqlite:///{db}",
                "--config",
                str(config),
                "run",
                "--port",
                str(port),
                "--replay",
                str(FIXTURES),
                "--no-seeds",
                *extra,
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )
        running = Running(proc, port, log)
        try:
            yield running
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)


def cycle_done(run: Running, sources: int) -> Callable[[], bool]:
    def check() -> bool:
        health = run.health()
        return bool(
            health["ready"]
            and health["sources"] == sources
            and health["last_cycle"]
            and health["in_flight"] == 0
        )

    return check


def test_feeds_hot_reload_refused_edit_and_sigterm(tmp_path: Path) -> None:
    config = tmp_path / "watchlist.yaml"
    write_watchlist(config, ["lrt-english", "belsat-en"])
    with service(tmp_path, tmp_path / "a.db", config) as run:
        run.wait(cycle_done(run, 2), what="the first cycle")
        titles = {e.title for e in run.entries()}
        assert any("border talks" in t for t in titles), titles
        assert len(titles) >= 3
        assert run.health()["failing_sources"] == 0

        write_watchlist(config, ["lrt-english", "belsat-en", "gnews-balloons-en"])
        # The added source's reports (Reuters, AP links) show up in the feed's entries.
        run.wait(
            lambda: b"apnews.com/article/lithuania" in run.get("/feeds/all.atom")[1],
            what="the added source's reports",
        )
        assert run.health()["sources"] == 3

        # An unknown key on line 2: refused, reported with file:line, last good one serves.
        config.write_text(config.read_text().replace("version: 1", "version: 1\nschedul: x"))
        run.wait(lambda: bool(run.health()["watchlist"]["error"]), what="the refusal")
        health = run.health()
        assert health["_status"] == 200
        assert health["status"] == "degraded"
        assert f"{config}:2:" in health["watchlist"]["error"]
        assert health["sources"] == 3
        assert run.get("/feeds/all.atom")[0] == 200
        assert f"{config}:2:" in run.logs()

        run.proc.send_signal(signal.SIGTERM)
        assert run.proc.wait(20) == 0
        assert "stopped cleanly" in run.logs()


def _entry_ids(run: Running) -> list[str]:
    return [e.id for e in run.entries()]


def _count(db: Path, table: str) -> int:
    with sqlite3.connect(db) as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0])


# One source at a time: the order of ingestion (which decides which record starts a
# development, hence its id) is then the same in every run, killed or not.
SERIAL = {"AGGREGATOR_MAX_CONCURRENT_SOURCES": "1"}


def test_kill_9_and_restart_publishes_nothing_twice(tmp_path: Path) -> None:
    ids = ["lrt-english", "belsat-en", "gnews-balloons-en"]
    config = tmp_path / "watchlist.yaml"
    write_watchlist(config, ids)

    # Reference: one run that is never interrupted.
    ref_db = tmp_path / "ref.db"
    with service(tmp_path, ref_db, config, env_extra=SERIAL) as ref:
        ref.wait(cycle_done(ref, 3), what="the reference cycle")
        expected = _entry_ids(ref)
        ref.proc.send_signal(signal.SIGTERM)
        assert ref.proc.wait(20) == 0
    assert len(expected) == len(set(expected)) >= 3
    expected_records = _count(ref_db, "records")
    assert expected_records == 12  # 5 + 4 + 3 entries in the recordings

    db = tmp_path / "crash.db"
    # Killed as soon as the first source is done, with the next one in flight: each replayed
    # response takes a second, so the kill lands while the second fetch waits for its answer.
    with service(
        tmp_path, db, config, "--replay-latency", "1", lease=1, env_extra=SERIAL
    ) as victim:
        victim.wait(lambda: "fetched:" in victim.logs(), what="the first fetch")
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
    assert _count(db, "records") < expected_records
    time.sleep(1.2)  # the dead replica's leases expire
    with service(tmp_path, db, config, lease=1, env_extra=SERIAL) as again:
        again.wait(cycle_done(again, 3), what="the cycle after the crash")
        again.wait(
            lambda: sorted(_entry_ids(again)) == sorted(expected),
            timeout=15,
            what="the same entries as the reference run",
        )
        again.proc.send_signal(signal.SIGKILL)  # once more, after the cycle
        again.proc.wait(10)
    assert _count(db, "records") == expected_records

    # The next cycle re-fetches every feed in full (no ETag): nothing is stored or published
    # again.
    with sqlite3.connect(db) as conn:
        conn.execute(
            "UPDATE fetch_state SET next_fetch = NULL, lease_owner = NULL, lease_expires = NULL,"
            " etag = NULL, last_modified = NULL"
        )
    with service(tmp_path, db, config, env_extra=SERIAL) as last:
        last.wait(cycle_done(last, 3), what="the re-fetch cycle")
        final = _entry_ids(last)
        assert last.logs().count('"fetched: 0 new records"') == 3
        last.proc.send_signal(signal.SIGTERM)
        assert last.proc.wait(20) == 0
    assert sorted(final) == sorted(expected)
    assert len(final) == len(set(final))
    assert _count(db, "records") == expected_records
