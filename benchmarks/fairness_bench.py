"""Fairness of the fetch cycle: small sources beside one huge feed, against the same small
sources alone, in the same run.

    python benchmarks/fairness_bench.py                      # 20,000 items beside 20 small feeds
    python benchmarks/fairness_bench.py --items 50000 --small 40

A loopback server (a thread of this process) serves one feed of ``--items`` items and
``--small`` feeds of 10 items each. Two cycles (``cycle.run_cycle``, fresh SQLite stores, the
service's defaults: ``fetch.max_items_per_fetch`` 500, ``fetch.ingest_hold_seconds`` 5):

- alone: only the small feeds;
- beside: the small feeds and the huge one, in one cycle.

Printed: each small source's fetch time (start to its fetch state committed: fetch, parse,
prepare, the wait for ingest, ingest, state) in both cycles, its worst and median, the huge
feed's own time and what it ingested, and the longest worker-thread job of each cycle (the
bound on how long one source's claim or state save can wait for another's ingest).
"""

from __future__ import annotations

import argparse
import asyncio
import http.server
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import table  # noqa: E402

NOW = datetime.now(UTC).replace(microsecond=0)


def _feed(items: int, prefix: str) -> bytes:
    parts = ['<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>t</title>']
    for i in range(items):
        when = format_datetime(NOW - timedelta(seconds=items - i), usegmt=True)
        parts.append(
            f"<item><title>{prefix} report {i} on the border crossing queue</title>"
            f"<link>https://{prefix}.example/{i}</link><pubDate>{when}</pubDate>"
            f"<description>Story {i} of {prefix}: lorries queued {i * 37 % 991} hours at the "
            f"crossing number {i * 13 % 97}, officials said.</description></item>"
        )
    parts.append("</channel></rss>")
    return "".join(parts).encode()


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True
    bodies: dict[str, bytes]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: _Server

    def do_GET(self) -> None:
        body = self.server.bodies.get(self.path)
        if body is None:
            self.send_response(404)
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        self.send_response(200)
        self.send_header("Content-Type", "application/rss+xml; charset=utf-8")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _LaneTimer:
    """The longest job on the cycle's worker thread (``cycle.off_loop``), by wrapping it."""

    def __init__(self) -> None:
        self.longest = 0.0
        self.jobs = 0

    def install(self) -> None:
        import functools

        from aggregator import cycle

        original = cycle.off_loop
        timer = self

        async def timed(fn: Any, *args: Any) -> Any:
            def run() -> Any:
                started = time.perf_counter()
                try:
                    return fn(*args)
                finally:
                    timer.longest = max(timer.longest, time.perf_counter() - started)
                    timer.jobs += 1

            return await original(functools.partial(run))

        cycle.off_loop = timed  # type: ignore[assignment]


def _watchlist(port: int, ids: Sequence[str]) -> Any:
    from aggregator.watchlist import load_watchlist_text

    lines = [
        "version: 1",
        "fetch:",
        "  min_host_interval_seconds: 0",
        "  per_host_concurrency: 16",
        "  timeout_seconds: 120",
        "  max_body_bytes: 100000000",
        '  allow_networks: ["127.0.0.1/32"]',
        "topics:",
        "  - {id: border, title: Border, rules: {any: [border, crossing]}}",
        "sources:",
    ]
    lines += [f"  - {{id: {i}, kind: feed, url: 'http://127.0.0.1:{port}/{i}.xml'}}" for i in ids]
    return load_watchlist_text("\n".join(lines) + "\n")


def _cycle(port: int, ids: Sequence[str], db: Path, timer: _LaneTimer) -> dict[str, Any]:
    from aggregator.cycle import run_cycle
    from aggregator.fetch import Fetcher
    from aggregator.store import open_store

    watchlist = _watchlist(port, ids)
    timer.longest, timer.jobs = 0.0, 0

    async def go() -> list[Any]:
        async with Fetcher(watchlist.fetch) as fetcher:
            with open_store(f"sqlite:///{db}") as store:
                return list(await run_cycle(store, fetcher, watchlist, now=NOW))

    started = time.perf_counter()
    reports = asyncio.run(go())
    return {
        "wall": time.perf_counter() - started,
        "reports": {r.source_id: r for r in reports},
        "longest_job": timer.longest,
        "jobs": timer.jobs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="small sources beside a huge feed vs alone")
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--small", type=int, default=20)
    args = ap.parse_args(argv)
    small = [f"small{i:02d}" for i in range(args.small)]
    server = _Server(("127.0.0.1", 0), _Handler)
    server.bodies = {f"/{sid}.xml": _feed(10, sid) for sid in small}
    server.bodies["/huge.xml"] = _feed(args.items, "huge")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    port = server.server_address[1]
    timer = _LaneTimer()
    timer.install()
    try:
        with tempfile.TemporaryDirectory(prefix="fairness-") as tmp:
            alone = _cycle(port, small, Path(tmp) / "alone.db", timer)
            beside = _cycle(port, ["huge", *small], Path(tmp) / "beside.db", timer)
    finally:
        server.shutdown()
    huge = beside["reports"]["huge"]

    def times(result: dict[str, Any]) -> list[float]:
        return [result["reports"][sid].elapsed for sid in small]

    a, b = times(alone), times(beside)
    print(
        f"fairness: {args.small} feeds of 10 items, alone and beside one feed of "
        f"{args.items:,} items ({len(server.bodies['/huge.xml']) / 1e6:.1f} MB), SQLite"
    )
    print(
        table(
            ["", "alone", "beside the huge feed", "beside/alone"],
            [
                [
                    "small sources: median s",
                    statistics.median(a),
                    statistics.median(b),
                    f"{statistics.median(b) / statistics.median(a):.2f}x",
                ],
                ["small sources: worst s", max(a), max(b), f"{max(b) / max(a):.2f}x"],
                ["cycle wall s", alone["wall"], beside["wall"], ""],
                ["longest worker-thread job s", alone["longest_job"], beside["longest_job"], ""],
                ["worker-thread jobs", alone["jobs"], beside["jobs"], ""],
            ],
        )
    )
    print(
        f"huge feed: {huge.elapsed:.1f} s, {huge.new_records} records ingested this fetch, "
        f"{huge.backlog:,} left for the next fetches (fetch.max_items_per_fetch), status "
        f"{huge.status}"
    )
    print(f"small sources ok: {sum(1 for s in small if beside['reports'][s].status == 'ok')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
