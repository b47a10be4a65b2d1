"""Several ``aggregator run`` replicas on one PostgreSQL, against the loopback feed server.

Every feed is fetched exactly once per cycle (counted by the server), the replicas share the
work, and after one replica is killed with -9 mid-cycle the others take its sources over:
every feed is fetched again, nothing is lost, and no record is stored twice.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from benchmarks.feedserver import FeedServerProcess

ROOT = Path(__file__).resolve().parent.parent
FEEDS = 12
# Longer than any one fetch and ingest here, even on a loaded 2-core machine (a fetch ingests
# its 20-50 entries without yielding the event loop, so a lease that runs out mid-ingest lets
# another replica fetch the source too), short enough for a takeover after kill -9 in a test.
LEASE = 20.0
IN_FLIGHT = 2

pytestmark = [pytest.mark.slow, pytest.mark.postgres]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def watchlist(urls: list[str]) -> str:
    sources = "".join(
        f"  - id: feed{i:03d}\n    kind: feed\n    url: {url}\n" for i, url in enumerate(urls)
    )
    return f"""\
version: 1
defaults:
  schedule: {{every: 10m}}
fetch:
  allow_networks: ["127.0.0.0/8"]
  min_host_interval_seconds: 0
  per_host_concurrency: {IN_FLIGHT}
  max_in_flight: {IN_FLIGHT}
topics:
  - id: all
    title: Everything
    rules:
      any: ["/./"]
sources:
{sources}"""


class Replica:
    def __init__(self, proc: subprocess.Popen[bytes], port: int) -> None:
        self.proc = proc
        self.port = port

    def health(self) -> dict[str, Any]:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/healthz", timeout=5) as r:
            data: dict[str, Any] = json.loads(r.read())
            return data

    def fetches(self) -> float:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=5) as r:
            text = r.read().decode()
        return sum(
            float(line.rsplit(" ", 1)[1])
            for line in text.splitlines()
            if line.startswith("aggregator_fetches_total{") and 'result="not-due"' not in line
        )

    def idle(self) -> bool:
        h = self.health()
        return bool(h["ready"] and h["in_flight"] == 0 and h["queue_depth"] == 0)


@contextmanager
def replica(db_url: str, config: Path, log: Path) -> Iterator[Replica]:
    port = free_port()
    env = {
        **os.environ,
        "AGGREGATOR_LEASE_SECONDS": str(LEASE),
        "AGGREGATOR_LOG_FORMAT": "json",
        "AGGREGATOR_DATA_DIR": str(config.parent),
    }
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "aggregator",
                "--db",
                db_url,
                "--config",
                str(config),
                "run",
                "--port",
                str(port),
                "--no-seeds",
            ],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            yield Replica(proc, port)
        finally:
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)


def wait_for(check: Callable[[], bool], timeout: float, what: str, logs: list[Path]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():
                return
        except OSError:
            pass
        time.sleep(0.2)
    tails = "\n".join(p.read_text(errors="replace")[-1500:] for p in logs)
    raise AssertionError(f"timed out waiting for {what}\n{tails}")


def duplicates(engine: sa.Engine) -> list[Any]:
    with engine.connect() as conn:
        by_guid = conn.execute(
            sa.text(
                "SELECT source_id, guid FROM records WHERE guid IS NOT NULL "
                "GROUP BY source_id, guid HAVING count(*) > 1"
            )
        ).all()
        by_url = conn.execute(
            sa.text(
                "SELECT canonical_url FROM records WHERE canonical_url IS NOT NULL "
                "GROUP BY canonical_url HAVING count(*) > 1"
            )
        ).all()
    return [*by_guid, *by_url]


def test_replicas_fetch_each_feed_once_and_take_over_after_kill_9(
    tmp_path: Path, pg_database: str
) -> None:
    from tests.conftest import _reset_pg

    _reset_pg(pg_database)
    engine = sa.create_engine(pg_database)
    logs = [tmp_path / f"replica{i}.log" for i in range(3)]
    with FeedServerProcess(feeds=FEEDS, hosts=4, seed=3) as server, ExitStack() as stack:
        config = tmp_path / "watchlist.yaml"
        config.write_text(watchlist(server.urls()))
        replicas = [stack.enter_context(replica(pg_database, config, log)) for log in logs]

        # Cycle 1: every feed exactly once, shared between replicas.
        wait_for(
            lambda: server.counts()["total"] >= FEEDS and all(r.idle() for r in replicas),
            120,
            "the first cycle",
            logs,
        )
        time.sleep(2)  # every source is now scheduled minutes ahead: no late second fetch
        counts = server.counts()
        # robots.txt is read once per host by each replica (its Crawl-delay): not a feed.
        feeds = {p: n for p, n in counts["paths"].items() if p.startswith("/feed/")}
        assert set(feeds) == {f"/feed/{i}.xml" for i in range(FEEDS)}
        assert all(n == 1 for n in feeds.values()), feeds
        per_replica = [r.fetches() for r in replicas]
        assert sum(per_replica) == FEEDS
        assert sum(1 for n in per_replica if n > 0) >= 2, per_replica
        assert duplicates(engine) == []

        # Cycle 2: new items; every source due again; one replica dies mid-cycle.
        server.advance()
        server.reset_counts()
        started = datetime.now(UTC)
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE fetch_state SET next_fetch = NULL"))
        victim, survivors = replicas[0], replicas[1:]
        wait_for(lambda: server.counts()["total"] >= 3, 60, "the second cycle to start", logs)
        victim.proc.send_signal(signal.SIGKILL)
        victim.proc.wait(10)
        wait_for(
            lambda: all(r.idle() for r in survivors) and _all_fetched_since(engine, started),
            120,
            "the survivors to finish the cycle",
            logs,
        )
        paths = {p: n for p, n in server.counts()["paths"].items() if p.startswith("/feed/")}
        assert set(paths) == {f"/feed/{i}.xml" for i in range(FEEDS)}  # nothing lost
        twice = [p for p, n in paths.items() if n > 1]
        assert len(twice) <= IN_FLIGHT, paths  # at most what the victim had in flight
        assert duplicates(engine) == []
    engine.dispose()


def _all_fetched_since(engine: sa.Engine, since: datetime) -> bool:
    with engine.connect() as conn:
        behind = conn.execute(
            sa.text(
                "SELECT count(*) FROM fetch_state "
                "WHERE last_success IS NULL OR last_success < :since"
            ),
            {"since": since},
        ).scalar_one()
    return int(behind) == 0
