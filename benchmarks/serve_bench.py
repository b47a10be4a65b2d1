"""Serving benchmark: /feeds/all.atom from the in-memory cache vs. rendering per request.

    python benchmarks/serve_bench.py                       # 50 synthetic developments, wrk
    python benchmarks/serve_bench.py --duration 10 --connections 64
    python benchmarks/serve_bench.py --db sqlite:///data/aggregator.db --config watchlist.yaml
    python benchmarks/serve_bench.py --client httpx        # without wrk

The app runs under uvicorn (httptools + uvloop, one worker) in a process of its own, pinned to
CPU 0 when the machine has two or more; the load generator (wrk from Debian's ``wrk`` package,
else an httpx-based asyncio client) runs pinned to CPU 1, on loopback, with a bounded number of
connections. Cases, all measured in the same run:

- cached 200: full body, identity encoding;
- cached 200 gzip: ``Accept-Encoding: gzip`` (the pre-compressed body);
- cached 304: ``If-None-Match`` with the current ETag;
- baseline 200: the same app shape, but the store is read and the feed rendered per request
  (what a service without the cache would do).

Goal (issue 9): cached 200 >= 3,000 requests/s on one core, 304 cheaper still.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.common import ratio, table  # noqa: E402

FEED = "/feeds/all.atom"


# ---------------------------------------------------------------------------------------------
# synthetic data: developments with realistic record texts (lists, tables, several sources)


def synthetic_data(count: int, seed: int = 7) -> tuple[object, object]:
    from aggregator import records
    from aggregator.model import (
        Development,
        PublishOptions,
        Record,
        Schedule,
        Source,
        SourceKind,
        SourceRef,
        Topic,
        TopicRules,
    )

    rng = random.Random(seed)
    words = [
        "Lithuania",
        "Vilnius",
        "Belarus",
        "border",
        "balloons",
        "airport",
        "government",
        "minister",
        "parliament",
        "security",
        "emergency",
        "Kaunas",
        "Klaipėda",
        "ąžuolas",
        "šalis",
        "žmonės",
        "Беларусь",
        "граница",
        "решение",
        "правительство",
        "report",
        "officials",
        "said",
        "talks",
        "sanctions",
        "trade",
        "energy",
        "grid",
        "prices",
    ]

    def sentence(n: int) -> str:
        return " ".join(rng.choice(words) for _ in range(n)).capitalize() + "."

    topics = (
        Topic("lithuania", "Lithuania", TopicRules(any=("Lithuania",))),
        Topic("belarus", "Belarus", TopicRules(any=("Belarus",))),
        Topic("energy", "Energy", TopicRules(any=("energy",))),
    )
    sources = tuple(
        Source(
            f"s{i}", SourceKind.FEED, f"https://news{i}.example.org/rss", Schedule(600), f"News {i}"
        )
        for i in range(20)
    )
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    devs: list[Development] = []
    recs: dict[str, Record] = {}
    for i in range(count):
        rid = f"{i:016x}"
        title = sentence(9).rstrip(".")
        lead = sentence(40)
        body = [lead, title]
        for _ in range(6):
            body.append(sentence(60))
        body += [f"- {sentence(12)}" for _ in range(4)]
        body += [
            "| Measure | Status |",
            "|---|---|",
            "| Border | **Closed** |",
            "| Airport | Open |",
        ]
        text = "\n".join(body) + "\n"
        recs[rid] = Record(
            rid, text, title, records.content_hash(text), url=f"https://news0.example.org/a/{i}"
        )
        refs = tuple(
            SourceRef(
                f"{rid[:-1]}{k}",
                f"s{k}",
                f"News {k}",
                f"https://news{k}.example.org/a/{i}",
                sentence(8),
                t0 + timedelta(minutes=i * 10 + k),
            )
            for k in range(rng.randint(1, 6))
        )
        devs.append(
            Development(
                id=f"d{i:06}",
                title=title,
                summary=lead,
                topics=tuple(t.id for t in topics if rng.random() < 0.6) or ("lithuania",),
                first_seen=t0 + timedelta(minutes=i * 10),
                updated=t0 + timedelta(minutes=i * 10 + 30),
                record_ids=(rid,),
                sources=refs,
            )
        )
    devs.reverse()

    @dataclass
    class MemoryStore:
        devs: list[Development]
        recs: dict[str, Record]

        def list_developments(self, topic=None, limit=50, since=None):  # type: ignore[no-untyped-def]
            return [d for d in self.devs if topic is None or topic in d.topics][:limit]

        def get_records(self, ids):  # type: ignore[no-untyped-def]
            return [self.recs[i] for i in ids if i in self.recs]

        def feed_version(self) -> str:
            return "1"

    @dataclass(frozen=True)
    class Watchlist:
        topics: tuple[Topic, ...]
        sources: tuple[Source, ...]
        publish: PublishOptions = field(
            default_factory=lambda: PublishOptions(
                base_url="https://news.example.org", feed_size=50
            )
        )

    return MemoryStore(devs, recs), Watchlist(topics, sources)


# ---------------------------------------------------------------------------------------------
# the server process


def build_app(mode: str, db: str | None, config: str | None, count: int):  # type: ignore[no-untyped-def]
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.routing import Route

    from aggregator.publish.render import _entry_html_cached, render_atom
    from aggregator.publish.site import collect_feeds, make_site
    from aggregator.settings import Settings
    from aggregator.web import create_app

    if db:
        from aggregator.store import open_store
        from aggregator.watchlist import load_watchlist

        store: object = open_store(db)
        watchlist: object = load_watchlist(config or "config/watchlist.yaml")
    else:
        store, watchlist = synthetic_data(count)
    settings = Settings(data_dir=Path("."), db_url=db or "", config_path=Path(config or "w.yaml"))
    if mode == "cached":
        return create_app(store, lambda: watchlist, settings)  # type: ignore[arg-type]

    async def render_per_request(request: Request) -> Response:
        # The baseline: read the store and render on every request (in the threadpool, as a
        # synchronous store must be), no cache, no gzip, no validators.
        from starlette.concurrency import run_in_threadpool

        def render() -> bytes:
            # Only what this one feed needs: the overall developments and their texts, with
            # no caching of any kind (the renderer's memo of entry HTML is emptied).
            _entry_html_cached.cache_clear()
            site = make_site(watchlist, settings.public_url)  # type: ignore[arg-type]
            size = watchlist.publish.feed_size  # type: ignore[attr-defined]
            feeds = collect_feeds(store, (), size)  # type: ignore[arg-type]
            return render_atom(site, "all", feeds.all, datetime.now(UTC))

        body = await run_in_threadpool(render)
        return Response(body, media_type="application/atom+xml; charset=utf-8")

    return Starlette(routes=[Route(FEED, render_per_request)])


def serve(args: argparse.Namespace) -> None:
    import uvicorn

    if args.cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {args.cpu})
    app = build_app(args.serve, args.db, args.config, args.developments)
    uvicorn.run(
        app,
        host="127.0.0.1",
        port=args.port,
        workers=1,
        log_level="warning",
        access_log=False,
        loop="uvloop",
        http="httptools",
    )


# ---------------------------------------------------------------------------------------------
# load generation


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_up(url: str, timeout: float = 30.0) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"server at {url} did not come up")


@dataclass
class Result:
    name: str
    rps: float
    latency_ms: float | None
    bytes_per_request: float | None
    errors: int = 0


def run_wrk(
    url: str, headers: Sequence[str], duration: float, connections: int, cpu: int | None
) -> tuple[float, float | None, float | None, int]:
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(duration))}s", "--latency"]
    cmd += ["--timeout", "30s"]
    for header in headers:
        cmd += ["-H", header]
    cmd.append(url)
    if cpu is not None and shutil.which("taskset"):
        cmd = ["taskset", "-c", str(cpu), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lat = re.search(r"50%\s+([\d.]+)(us|ms|s)", out)
    latency = None
    if lat:
        latency = float(lat.group(1)) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[lat.group(2)]
    transfer = re.search(r"Transfer/sec:\s+([\d.]+)([KMG]?B)", out)
    per_req = None
    if transfer and rps:
        scale = {"B": 1, "KB": 1024, "MB": 1024**2, "GB": 1024**3}[transfer.group(2)]
        per_req = float(transfer.group(1)) * scale / rps
    errors = 0
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", out)
    if non2xx:
        errors += int(non2xx.group(1))
    sock_err = re.search(
        r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out
    )
    if sock_err:
        errors += sum(int(x) for x in sock_err.groups())
    return rps, latency, per_req, errors


def run_httpx(
    url: str, headers: Sequence[str], duration: float, connections: int, cpu: int | None
) -> tuple[float, float | None, float | None, int]:
    import httpx

    if cpu is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {cpu})
    hdrs = dict(h.split(": ", 1) for h in headers)
    hdrs.setdefault("Accept-Encoding", "identity")

    async def main() -> tuple[int, int, int, list[float]]:
        limits = httpx.Limits(max_connections=connections, max_keepalive_connections=connections)
        done = errors = nbytes = 0
        latencies: list[float] = []
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            end = time.perf_counter() + duration

            async def worker() -> None:
                nonlocal done, errors, nbytes
                while time.perf_counter() < end:
                    start = time.perf_counter()
                    async with client.stream("GET", url, headers=hdrs) as response:
                        raw = b"".join([chunk async for chunk in response.aiter_raw()])
                    latencies.append(time.perf_counter() - start)
                    nbytes += len(raw)
                    done += 1
                    if response.status_code not in (200, 304):
                        errors += 1

            await asyncio.gather(*(worker() for _ in range(connections)))
        return done, errors, nbytes, latencies

    started = time.perf_counter()
    done, errors, nbytes, latencies = asyncio.run(main())
    elapsed = time.perf_counter() - started
    latencies.sort()
    median = latencies[len(latencies) // 2] * 1000 if latencies else None
    return done / elapsed, median, (nbytes / done if done else None), errors


def measure(args: argparse.Namespace) -> None:
    two_cores = (os.cpu_count() or 1) >= 2
    server_cpu, client_cpu = (0, 1) if two_cores else (None, None)
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "httpx"
    load = run_wrk if client == "wrk" else run_httpx
    results: list[Result] = []
    sizes: dict[str, int] = {}
    for mode in ("cached", "render"):
        port = _free_port()
        cmd = [
            sys.executable,
            __file__,
            "--serve",
            mode,
            "--port",
            str(port),
            "--developments",
            str(args.developments),
        ]
        if server_cpu is not None:
            cmd += ["--cpu", str(server_cpu)]
        if args.db:
            cmd += ["--db", args.db]
        if args.config:
            cmd += ["--config", args.config]
        proc = subprocess.Popen(cmd)
        try:
            url = f"http://127.0.0.1:{port}{FEED}"
            _wait_up(url)
            import httpx

            first = httpx.get(url, headers={"Accept-Encoding": "identity"})
            sizes[mode] = len(first.content)
            if mode == "cached":
                zipped = httpx.get(url, headers={"Accept-Encoding": "gzip"})
                sizes["gzip"] = int(zipped.headers.get("content-length", 0))
                etag = first.headers["etag"]
                cases = [
                    ("cached 200", ["Accept-Encoding: identity"]),
                    ("cached 200 gzip", ["Accept-Encoding: gzip"]),
                    ("cached 304", ["Accept-Encoding: identity", f"If-None-Match: {etag}"]),
                ]
            else:
                cases = [("baseline 200 (render per request)", ["Accept-Encoding: identity"])]
            for name, headers in cases:
                load(url, headers, min(1.0, args.duration), args.connections, client_cpu)  # warm-up
                # The machine may be shared: each case runs --repeat times, the median counts.
                runs = sorted(
                    (
                        load(url, headers, args.duration, args.connections, client_cpu)
                        for _ in range(args.repeat)
                    ),
                    key=lambda run: run[0],
                )
                rps, lat, per_req, _ = runs[len(runs) // 2]
                errors = sum(run[3] for run in runs)
                results.append(Result(name, rps, lat, per_req, errors))
                each = ", ".join(f"{run[0]:,.0f}" for run in runs)
                print(f"  {name}: {each} req/s", file=sys.stderr)
        finally:
            proc.terminate()
            proc.wait(timeout=10)

    baseline = next(r.rps for r in results if r.name.startswith("baseline"))
    print()
    print(
        f"Serving {FEED}: {args.developments if not args.db else 'store'} developments, "
        f"body {sizes['cached']:,} B (gzip {sizes.get('gzip', 0):,} B); uvicorn+httptools+uvloop, "
        f"1 worker{' on CPU 0' if server_cpu is not None else ''}; load: {client}, "
        f"{args.connections} connections, median of {args.repeat} x {args.duration:.0f} s per case"
    )
    print(
        table(
            ["case", "req/s", "median ms", "bytes/req", "errors", "vs baseline"],
            [
                [r.name, r.rps, r.latency_ms, r.bytes_per_request, r.errors, ratio(r.rps, baseline)]
                for r in results
            ],
        )
    )
    cached = next(r.rps for r in results if r.name == "cached 200")
    not_modified = next(r.rps for r in results if r.name == "cached 304")
    print()
    verdict = "met" if cached >= 3000 else "NOT met"
    print(f"goal: cached 200 >= 3,000 req/s on one core: {cached:,.0f} ({verdict})")
    cheaper = ratio(not_modified, cached)
    print(f"goal: 304 cheaper than 200: {not_modified:,.0f} vs {cached:,.0f} req/s ({cheaper})")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per case (default 5)")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case; median shown (3)")
    parser.add_argument("--connections", type=int, default=32, help="concurrent connections (32)")
    parser.add_argument("--developments", type=int, default=50, help="synthetic developments (50)")
    parser.add_argument("--client", choices=["auto", "wrk", "httpx"], default="auto")
    parser.add_argument("--db", help="serve a real store instead of synthetic data")
    parser.add_argument("--config", help="watchlist for --db")
    parser.add_argument("--serve", choices=["cached", "render"], help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--cpu", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        serve(args)
    else:
        measure(args)


if __name__ == "__main__":
    main()
