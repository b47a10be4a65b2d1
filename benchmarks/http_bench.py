"""What one conditional request costs, client by client: the floor under the all-304 pass.

    python benchmarks/http_bench.py                   # 200 feeds on 64 hosts, 16 in flight
    python benchmarks/http_bench.py --feeds 500 --hosts 8 --rounds 15

Every feed of the loopback feed server is first fetched once (its ETag and Last-Modified
noted); then each client sends every feed's conditional GET, ``--in-flight`` at a time, and the
server answers 304. Clients, all in this process, one after the other, ``--rounds`` times each,
taking turns so a slow spell of the machine hits them alike:

- ``requests``: a ``requests.Session`` per worker thread, as lemon24's ``reader`` fetches
  (the baseline: the peer of the cycle benchmark);
- ``httpx``: a plain ``httpx.AsyncClient`` (its defaults: the library's own floor);
- ``Fetcher (anyio)``: the aggregator's Fetcher on httpcore's default anyio network backend;
- ``Fetcher``: the aggregator's Fetcher as it ships (``fetch/netio.py``, asyncio streams).

Each client keeps its connections from round to round, as the service's Fetcher does. Printed:
median requests/s and CPU milliseconds per request (this process; the server's CPU is shown
apart), and each client's CPU per request against ``requests``'s.
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` and ``aggregator`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.common import proc_cpu_seconds, ratio, table  # noqa: E402
from benchmarks.cycle_bench import bench_fetch_policy  # noqa: E402
from benchmarks.feedserver import FeedServerProcess  # noqa: E402

Validators = dict[str, tuple[str | None, str | None]]


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def _conditional(validators: Validators, url: str) -> dict[str, str]:
    etag, modified = validators[url]
    headers = {}
    if etag:
        headers["If-None-Match"] = etag
    if modified:
        headers["If-Modified-Since"] = modified
    return headers


class RequestsClient:
    """reader's way: blocking ``requests`` sessions, one per worker thread."""

    name = "requests (reader's)"

    def __init__(self, in_flight: int) -> None:
        import threading

        import requests

        self._local = threading.local()
        self._requests = requests
        self._pool = ThreadPoolExecutor(in_flight)

    def _one(self, url: str, headers: dict[str, str]) -> int:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = self._requests.Session()
        with session.get(url, headers=headers, timeout=30) as response:
            return int(response.status_code)

    async def round(self, urls: list[str], validators: Validators) -> list[int]:
        loop = asyncio.get_running_loop()
        futures = [
            loop.run_in_executor(self._pool, self._one, u, _conditional(validators, u))
            for u in urls
        ]
        return list(await asyncio.gather(*futures))

    async def aclose(self) -> None:
        self._pool.shutdown()


class HttpxClient:
    name = "httpx AsyncClient"

    def __init__(self, in_flight: int) -> None:
        import httpx

        self._client = httpx.AsyncClient(
            limits=httpx.Limits(max_connections=in_flight, max_keepalive_connections=in_flight)
        )
        self._slots = asyncio.Semaphore(in_flight)

    async def _one(self, url: str, headers: dict[str, str]) -> int:
        async with self._slots:
            response = await self._client.get(url, headers=headers)
            return response.status_code

    async def round(self, urls: list[str], validators: Validators) -> list[int]:
        return list(
            await asyncio.gather(*(self._one(u, _conditional(validators, u)) for u in urls))
        )

    async def aclose(self) -> None:
        await self._client.aclose()


class FetcherClient:
    def __init__(self, in_flight: int, backend: str) -> None:
        import httpcore

        from aggregator.fetch import Fetcher

        self._fetcher = Fetcher(bench_fetch_policy(in_flight))
        if backend == "anyio":
            self._fetcher.backend.inner = httpcore.AnyIOBackend()
        self.name = "Fetcher (anyio)" if backend == "anyio" else "Fetcher (as shipped)"

    async def round(self, urls: list[str], validators: Validators) -> list[int]:
        async def one(url: str) -> int:
            etag, modified = validators[url]
            return (await self._fetcher.fetch(url, etag=etag, last_modified=modified)).status

        return list(await asyncio.gather(*(one(u) for u in urls)))

    async def aclose(self) -> None:
        await self._fetcher.aclose()


async def _validators(urls: list[str]) -> Validators:
    import httpx

    async with httpx.AsyncClient() as client:
        out: Validators = {}
        for url in urls:
            response = await client.get(url)
            response.raise_for_status()
            out[url] = (response.headers.get("etag"), response.headers.get("last-modified"))
        return out


async def measure(args: argparse.Namespace, fs: FeedServerProcess) -> dict[str, Any]:
    urls = fs.urls()
    validators = await _validators(urls)
    makers: list[Callable[[], Any]] = [
        lambda: RequestsClient(args.in_flight),
        lambda: HttpxClient(args.in_flight),
        lambda: FetcherClient(args.in_flight, "anyio"),
        lambda: FetcherClient(args.in_flight, "netio"),
    ]
    clients = []
    for make in makers:
        try:
            clients.append(make())
        except ImportError as exc:  # requests comes with the bench extra (reader)
            print(f"skipped a client: {exc}", file=sys.stderr)
    figures: dict[str, dict[str, list[float]]] = {
        c.name: {"rps": [], "cpu_ms": [], "server_ms": []} for c in clients
    }
    for _ in range(args.rounds + 1):  # the first round opens the connections: not counted
        for client in clients:
            server0, cpu0, t0 = proc_cpu_seconds(fs.proc.pid), _cpu(), time.perf_counter()
            statuses = await client.round(urls, validators)
            wall, cpu = time.perf_counter() - t0, _cpu() - cpu0
            server = proc_cpu_seconds(fs.proc.pid) - server0
            if any(s != 304 for s in statuses):
                raise SystemExit(f"{client.name}: expected 304 only, got {sorted(set(statuses))}")
            f = figures[client.name]
            f["rps"].append(len(urls) / wall)
            f["cpu_ms"].append(1000 * cpu / len(urls))
            f["server_ms"].append(1000 * server / len(urls))
    for client in clients:
        await client.aclose()
    return {
        name: {k: statistics.median(v[1:]) for k, v in f.items()} for name, f in figures.items()
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--feeds", type=int, default=200)
    parser.add_argument("--hosts", type=int, default=64)
    parser.add_argument("--in-flight", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    epoch = datetime(2026, 11, 1, tzinfo=UTC)
    with FeedServerProcess(args.feeds, seed=args.seed, hosts=args.hosts, epoch=epoch) as fs:
        figures = asyncio.run(measure(args, fs))
    base = next((f for name, f in figures.items() if name.startswith("requests")), None)
    print(
        f"conditional GETs answered 304: {args.feeds} feeds on {args.hosts} loopback hosts, "
        f"{args.in_flight} in flight, median of {args.rounds} rounds"
    )
    rows = [
        [
            name,
            f["rps"],
            f["cpu_ms"],
            f["server_ms"],
            ratio(f["cpu_ms"], base["cpu_ms"]) if base else "-",
        ]
        for name, f in figures.items()
    ]
    header = ["client", "requests/s", "CPU ms/request", "server CPU ms", "CPU vs requests"]
    print(table(header, rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
