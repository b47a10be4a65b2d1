"""Hostile-source benchmark: the service's request latency and fetch delay while hostile sources
are fetched, against the same service with only well-behaved sources, in one run.

    python benchmarks/hostile_bench.py                      # 20 small feeds, 20 s per phase
    python benchmarks/hostile_bench.py --feeds 50 --seconds 30 --rate 40

The real service (``aggregator run``, SQLite, its own process) watches ``--feeds`` small RSS
feeds served from a thread of this process on 127.0.0.1. Phase *baseline*: only those. Phase
*hostile*: the same plus five hostile sources (issue 22):

- a listing page of 300,000 nested ``<div>`` (3.3 MB) behind a page source;
- an RSS feed whose entry HTML is 60,000 nested ``<div>``, beside a clean entry;
- an RSS feed with ``&#xD800;`` in one entry, beside clean ones;
- a JSON Feed with a lone surrogate in one item and one item nested 100,000 deep;
- a listing of 2,000 links, half of them to another site.

While each phase runs, a client thread asks ``/feeds/all.atom`` and ``/healthz`` at ``--rate``
requests per second (one connection per request) and records each latency; the service's log
gives when each small feed was fetched (its delay from the moment the service answered first).
Printed: p50 / p99 / max request latency and the small feeds' median / max fetch delay per
phase, and hostile / baseline ratios.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parent.parent

NESTED_LISTING = (
    "<html><body>"
    + "<div>" * 300_000
    + "<ul><li><a href='/a/1.html'>One</a></li></ul>"
    + "</div>" * 300_000
    + "</body></html>"
).encode()


def _rss(title: str, items: list[tuple[str, str, str]]) -> bytes:
    body = "".join(
        f"<item><title>{t}</title><link>{link}</link><guid>{link}</guid>"
        f"<description>{d}</description></item>"
        for t, link, d in items
    )
    return (
        f'<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel><title>{title}'
        f"</title><link>http://127.0.0.1/</link>{body}</channel></rss>"
    ).encode()


def _nested_entry_feed(base: str) -> bytes:
    deep = "&lt;div&gt;" * 60_000 + "deep" + "&lt;/div&gt;" * 60_000
    return _rss(
        "nested",
        [
            ("Nested entry", f"{base}/n/1", deep),
            ("Clean entry", f"{base}/n/2", "Border crossing reopened on Monday."),
        ],
    )


def _surrogate_feed(base: str) -> bytes:
    return _rss(
        "surrogate",
        [
            ("Clean one", f"{base}/s/1", "The checkpoint was closed."),
            ("Bad &#xD800; one", f"{base}/s/2", "Text with &#xD800; in it."),
            ("Clean two", f"{base}/s/3", "The checkpoint reopened."),
        ],
    )


def _json_feed(base: str) -> bytes:
    deep = "[" * 100_000 + "]" * 100_000
    return (
        '{"version": "https://jsonfeed.org/version/1.1", "title": "j", "items": ['
        f'{{"id": "{base}/j/1", "title": "Clean", "content_text": "Border news."}},'
        f'{{"id": "{base}/j/2", "title": "Bad \\ud800", "content_text": "x"}},'
        f'{{"id": "{base}/j/3", "title": "Deep", "extra": {deep}}}'
        "]}"
    ).encode()


def _wide_listing(base: str) -> bytes:
    links = "".join(
        f"<li><a href='{base}/w/{i}.html'>Story {i}</a></li>"
        if i % 2
        else f"<li><a href='http://other.invalid/w/{i}.html'>Story {i}</a></li>"
        for i in range(2000)
    )
    return f"<html><body><ul class='news'>{links}</ul></body></html>".encode()


ARTICLE = (
    "<html><head><title>Story</title></head><body><article><h1>Story</h1>"
    + "<p>The border checkpoint at Medininkai was closed again on Monday night.</p>" * 8
    + "</article></body></html>"
).encode()


class _Handler(BaseHTTPRequestHandler):
    server_version = "bench"
    routes: ClassVar[dict[str, tuple[bytes, str]]] = {}

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        found = self.routes.get(path)
        if found is None and path.startswith("/w/"):
            found = (ARTICLE, "text/html")
        if found is None:
            self.send_error(404)
            return
        body, ctype = found
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _watchlist(base: str, feeds: int, hostile: bool) -> str:
    lines = [
        "version: 1",
        "defaults:",
        "  schedule: {every: 1h}",
        "fetch:",
        "  min_host_interval_seconds: 0",
        "  per_host_concurrency: 16",
        "  respect_robots: false",
        "  allow_networks: ['127.0.0.1/32']",
        "topics:",
        "  - id: border",
        "    title: Border",
        "    rules: {any: [border*, checkpoint*, story]}",
        "sources:",
    ]
    lines += [
        f"  - {{id: small{i:03d}, kind: feed, url: '{base}/f/{i}.xml'}}" for i in range(feeds)
    ]
    if hostile:
        lines += [
            f"  - {{id: h-nested-listing, kind: page, url: '{base}/h/listing.html',"
            " selectors: {item: li}}",
            f"  - {{id: h-nested-entry, kind: feed, url: '{base}/h/nested.xml'}}",
            f"  - {{id: h-surrogate, kind: feed, url: '{base}/h/surrogate.xml'}}",
            f"  - {{id: h-json, kind: feed, url: '{base}/h/feed.json'}}",
            f"  - {{id: h-wide, kind: page, url: '{base}/h/wide.html',"
            " selectors: {item: 'ul.news li'}}",
        ]
    return "\n".join(lines) + "\n"


def _get(port: int, path: str) -> float:
    start = time.perf_counter()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        conn.getresponse().read()
    finally:
        conn.close()
    return time.perf_counter() - start


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_phase(
    base: str, feeds: int, hostile: bool, seconds: float, rate: float
) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "watchlist.yaml"
        config.write_text(_watchlist(base, feeds, hostile))
        port = _free_port()
        log_path = Path(tmp) / "service.log"
        env = {
            **os.environ,
            "AGGREGATOR_DATA_DIR": tmp,
            "AGGREGATOR_LOG_FORMAT": "json",
            "AGGREGATOR_SEEDS": "",
        }
        with open(log_path, "w") as log_file:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "aggregator",
                    "--db",
                    f"sqlite:///{tmp}/a.db",
                    "--config",
                    str(config),
                    "run",
                    "--port",
                    str(port),
                ],
                cwd=ROOT,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
            try:
                deadline = time.monotonic() + 60
                while True:
                    try:
                        _get(port, "/healthz/live")
                        break
                    except OSError:
                        if time.monotonic() > deadline or proc.poll() is not None:
                            raise RuntimeError(log_path.read_text()[-3000:]) from None
                        time.sleep(0.05)
                started = time.time()
                latencies: list[float] = []
                errors = 0
                end = time.monotonic() + seconds
                i = 0
                while time.monotonic() < end:
                    tick = time.monotonic()
                    try:
                        latencies.append(_get(port, "/feeds/all.atom" if i % 2 else "/healthz"))
                    except OSError:
                        errors += 1
                    i += 1
                    time.sleep(max(0.0, 1 / rate - (time.monotonic() - tick)))
                health = _health(port)
            finally:
                proc.terminate()
                try:
                    proc.wait(30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(10)
        delays: list[float] = []
        outcomes: dict[str, str] = {}
        for line in log_path.read_text().splitlines():
            try:
                entry = json.loads(line)
            except ValueError:
                continue
            sid = entry.get("source_id") or ""
            if entry.get("message", "").startswith(("fetched:", "fetch failed")):
                when = datetime.fromisoformat(entry["time"]).timestamp()
                if sid.startswith("small"):
                    delays.append(when - started)
                else:
                    outcomes[sid] = entry["message"][:90]
    return {
        "requests": len(latencies),
        "errors": errors,
        "p50_ms": 1000 * _percentile(latencies, 0.50),
        "p99_ms": 1000 * _percentile(latencies, 0.99),
        "max_ms": 1000 * max(latencies),
        "small_fetched": len(delays),
        "delay_median_s": statistics.median(delays) if delays else float("nan"),
        "delay_max_s": max(delays) if delays else float("nan"),
        "hostile": outcomes,
        "health": health.get("status"),
    }


def _health(port: int) -> dict[str, object]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", "/healthz")
        data: dict[str, object] = json.loads(conn.getresponse().read())
        return data
    finally:
        conn.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=20, help="small well-behaved feeds")
    parser.add_argument("--seconds", type=float, default=20.0, help="length of each phase")
    parser.add_argument("--rate", type=float, default=20.0, help="client requests per second")
    args = parser.parse_args(argv)

    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    base = f"http://127.0.0.1:{server.server_address[1]}"
    routes = {
        f"/f/{i}.xml": (
            _rss(
                f"small {i}",
                [
                    (f"Border story {i}-{k}", f"{base}/f/{i}/{k}", f"Checkpoint news {i} {k}.")
                    for k in range(5)
                ],
            ),
            "application/rss+xml",
        )
        for i in range(args.feeds)
    }
    routes.update(
        {
            "/h/listing.html": (NESTED_LISTING, "text/html"),
            "/h/nested.xml": (_nested_entry_feed(base), "application/rss+xml"),
            "/h/surrogate.xml": (_surrogate_feed(base), "application/rss+xml"),
            "/h/feed.json": (_json_feed(base), "application/feed+json"),
            "/h/wide.html": (_wide_listing(base), "text/html"),
        }
    )
    _Handler.routes = routes
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        results = {
            phase: run_phase(base, args.feeds, phase == "hostile", args.seconds, args.rate)
            for phase in ("baseline", "hostile")
        }
    finally:
        server.shutdown()
    b, h = results["baseline"], results["hostile"]
    print(f"{args.feeds} small feeds, {args.seconds:g} s per phase, {args.rate:g} requests/s")
    print(f"{'':24}{'baseline':>12}{'hostile':>12}{'ratio':>8}")
    for key, label in (
        ("p50_ms", "latency p50 (ms)"),
        ("p99_ms", "latency p99 (ms)"),
        ("max_ms", "latency max (ms)"),
        ("delay_median_s", "fetch delay median (s)"),
        ("delay_max_s", "fetch delay max (s)"),
    ):
        bv, hv = float(b[key]), float(h[key])  # type: ignore[arg-type]
        print(f"{label:24}{bv:12.2f}{hv:12.2f}{hv / bv if bv else float('nan'):8.2f}")
    for key in ("requests", "errors", "small_fetched", "health"):
        print(f"{key:24}{b[key]!s:>12}{h[key]!s:>12}")
    print("hostile sources:")
    for sid, outcome in sorted(h["hostile"].items()):  # type: ignore[attr-defined]
        print(f"  {sid:20} {outcome}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
