"""The fetch cycle benchmark: aggregator against lemon24's ``reader``, same feeds, same run.

    python benchmarks/cycle_bench.py --feeds 2000            # both systems, SQLite
    python benchmarks/cycle_bench.py --feeds 2000 --db postgresql://127.0.0.1:5432/test
    python benchmarks/cycle_bench.py --feeds 500 --systems reader
    python benchmarks/cycle_bench.py --idle-rss --feeds 10000  # the daemon, idle, 10,000 sources

One loopback feed server (benchmarks/feedserver.py, its own process) serves N synthetic feeds.
Each system runs in a subprocess of its own, so their memory peaks do not mix, through three
passes over every feed:

- cold: an empty database; every feed is fetched, parsed and its entries stored;
- 304: nothing changed; every request is conditional and answered 304;
- changed: the server moves one generation on (a fifth of the feeds gain 1-5 items) first.

Between the two systems the server is rewound, so both see the same bytes. Per pass the child
asks the server how many requests it answered and with which status, so a system that skips
feeds (or fetches one twice) shows up in the table rather than as a better figure.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` and ``aggregator`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.common import (  # noqa: E402
    TreeRssSampler,
    proc_cpu_seconds,
    ratio,
    table,
    tree_cpu_seconds,
)
from benchmarks.feedserver import FeedServerProcess  # noqa: E402

PASSES = ("cold", "304", "changed")
# "aggregator": ``fetch-once``'s driver (cycle.run_cycle); "aggregator-run": the service
# itself (``aggregator run --once``: Service.run, its scheduler, claims and the same driver).
SYSTEMS = ("reader", "aggregator", "aggregator-run")
AGGREGATORS = ("aggregator", "aggregator-run")
DEFAULT_CORPUS = ROOT.parent / "shared" / "clustering-dev"


class Unavailable(Exception):
    """The system under test cannot run here (a missing part); the message says which."""


# --- the child side: one system, three passes --------------------------------------------------


class Server:
    """The child's handle on the feed server's control endpoints."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.fs = FeedServerProcess(config["feeds"])
        self.fs.port, self.fs.hosts = config["port"], config["hosts"]
        self.pid: int = config["server_pid"]

    def counts(self) -> dict[str, Any]:
        return self.fs.counts()


def run_passes(
    config: dict[str, Any],
    do_pass: Callable[[str], dict[str, Any]],
    server: Server,
    prepare: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Runs the passes; ``do_pass(name)`` returns figures measured inside (entries, profile);
    ``prepare()`` runs before each pass, untimed."""
    results: dict[str, Any] = {}
    with TreeRssSampler() as sampler:
        for name in config["passes"]:
            if name == "changed":
                changed = server.fs.advance()
                results["changed_feeds"] = len(changed["changed"])
                results["changed_items"] = changed["new_items"]
            if prepare is not None:
                prepare()
            server.fs.reset_counts()
            cpu0, server_cpu0 = tree_cpu_seconds(), proc_cpu_seconds(server.pid)
            sampler_cpu0 = sampler.cpu_seconds
            t0 = time.perf_counter()
            figures = do_pass(name)
            wall = time.perf_counter() - t0
            counts = server.counts()
            # robots.txt (the aggregator reads it once per host for Crawl-delay) is no feed.
            paths = {p: n for p, n in counts["paths"].items() if p.startswith("/feed/")}
            results[name] = {
                "wall": wall,
                # The RSS sampler's thread is the benchmark's, not the system's: its CPU grows
                # with the system's memory and wall time, so it is reported apart.
                "cpu": tree_cpu_seconds() - cpu0 - (sampler.cpu_seconds - sampler_cpu0),
                "sampler_cpu": sampler.cpu_seconds - sampler_cpu0,
                "server_cpu": proc_cpu_seconds(server.pid) - server_cpu0,
                "requests": counts["total"],
                "robots_requests": sum(
                    n for p, n in counts["paths"].items() if p.endswith("robots.txt")
                ),
                "by_status": counts["by_status"],
                "feeds_fetched": len(paths),
                "fetched_twice": sum(1 for n in paths.values() if n > 1),
                "rss_mb": sampler.peak_mb,
                "pss_mb": sampler.peak_pss_mb,
                **figures,
            }
            print(f"  {config['system']}: {name} pass {wall:.1f} s", file=sys.stderr, flush=True)
    results["peak_rss_mb"] = sampler.peak_mb
    results["peak_pss_mb"] = sampler.peak_pss_mb
    results["peak_uss_mb"] = sampler.peak_uss_mb
    results["peak_by_role"] = sampler.roles
    return results


def reader_child(config: dict[str, Any]) -> dict[str, Any]:
    try:
        from reader import UpdatedFeed, make_reader
    except ImportError as exc:
        raise Unavailable("reader is not installed: pip install -e '.[bench]'") from exc
    server = Server(config)
    rd = make_reader(str(Path(config["workdir"]) / "reader.sqlite"), search_enabled=False)
    for url in config["urls"]:
        rd.add_feed(url)

    def one_pass(name: str) -> dict[str, Any]:
        new = errors = not_modified = 0
        for result in rd.update_feeds_iter(scheduled=False, workers=config["reader_workers"]):
            if isinstance(result.value, UpdatedFeed):
                new += result.value.new
            elif result.value is None:
                not_modified += 1
            else:
                errors += 1
        return {"entries": new, "errors": errors, "unchanged": not_modified}

    results = run_passes(config, one_pass, server)
    results["stored"] = rd.get_entry_counts().total
    rd.close()
    return results


class GcTimer:
    """Wall seconds the garbage collector ran and how many collections, via ``gc.callbacks``.
    Collections run inside whatever stage allocated, so this overlaps the stage figures."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.collections = 0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started
            self.collections += 1

    def reset(self) -> None:
        self.seconds, self.collections = 0.0, 0


class DecisionCounter:
    """Dedup decisions of a pass: how many, by reason, and the candidates each one scored (the
    ``candidates`` argument of ``dedup.decide``), counted by wrapping it in this process."""

    def __init__(self) -> None:
        self.decisions = 0
        self.candidates = 0
        self.reasons: dict[str, int] = {}

    def install(self) -> None:
        import functools

        from aggregator import dedup

        decide = dedup.decide
        counter = self

        @functools.wraps(decide)
        def counted(*args: Any, **kwargs: Any) -> Any:
            decision = decide(*args, **kwargs)
            candidates = kwargs.get("candidates", args[2] if len(args) > 2 else ())
            counter.decisions += 1
            counter.candidates += len(candidates) if hasattr(candidates, "__len__") else 0
            reason = str(getattr(decision, "reason", "?"))
            counter.reasons[reason] = counter.reasons.get(reason, 0) + 1
            return decision

        dedup.decide = counted

    def take(self) -> dict[str, Any]:
        out = {
            "decisions": self.decisions,
            "candidates": self.candidates,
            "reasons": dict(sorted(self.reasons.items())),
        }
        self.decisions, self.candidates, self.reasons = 0, 0, {}
        return out


def _parse_pool(config: dict[str, Any]) -> Any:
    """The parse pool ``fetch-once`` and ``aggregator run`` would use (the same rule), or as
    ``--parse-processes`` says."""
    from aggregator.cycle import parse_pool, parse_workers

    return parse_pool(parse_workers(config["parse_processes"], len(config["urls"])))


def aggregator_child(config: dict[str, Any]) -> dict[str, Any]:
    try:
        from aggregator import profile
        from aggregator.cycle import run_cycle
        from aggregator.fetch import Fetcher
        from aggregator.publish.site import build_site
        from aggregator.store import open_store
        from aggregator.web.feeds import CachedFile
    except ImportError as exc:
        raise Unavailable(f"aggregator cannot be imported: {exc}") from exc
    if config["system"] == "aggregator-run":
        return service_child(config)
    import asyncio

    server = Server(config)
    watchlist = bench_watchlist(config)
    store = open_store(config["db_url"])
    store.sync_sources(watchlist.sources)
    times = profile.enable()
    instrument_stages()
    import gc

    collector = GcTimer()
    gc.callbacks.append(collector)
    counter = DecisionCounter()
    counter.install()
    gc.freeze()  # as ``aggregator fetch-once`` freezes what its start-up loaded (cli.main)
    pool = _parse_pool(config)
    clock = [datetime.now(UTC)]
    published: list[str | None] = [None]  # the feed_version last rendered

    def one_pass(name: str) -> dict[str, Any]:
        times.reset()
        collector.reset()
        # Each pass runs "a day later", so every source is due whatever its schedule says.
        clock[0] += timedelta(days=1)
        before = store.count_records()

        async def cycle() -> list[Any]:
            async with Fetcher(watchlist.fetch) as fetcher:
                return list(
                    await run_cycle(store, fetcher, watchlist, now=clock[0], parse_pool=pool)
                )

        reports = asyncio.run(cycle())
        # What a cycle is for: the feeds subscribers read, rendered once from the new state,
        # and only when the store's feed_version moved: the service's FeedCache work (feeds,
        # index, OPML, each file built with its gzip copy and ETag). Topic and development pages
        # are rendered on request in the service, not per cycle, so they are not counted here
        # (`aggregator publish DIR` writes them all).
        version = store.feed_version()
        if version != published[0]:
            with profile.stage("publish"):
                for item in build_site(store, watchlist, "http://127.0.0.1:8080", clock[0]):
                    CachedFile.build(item)
            published[0] = version
        return {
            "entries": sum(r.new_records + r.duplicates for r in reports),
            "stored_new": store.count_records() - before,
            "errors": sum(1 for r in reports if r.status == "failed"),
            "error_samples": sorted({str(r.error) for r in reports if r.error})[:3],
            "parsed": sum(1 for r in reports if r.parsed),
            "skipped_by_id_prepass": sum(
                1 for r in reports if r.status == "ok" and not r.parsed and r.known
            ),
            "reports": len(reports),
            "profile": {k: [v.seconds, v.calls, v.cpu] for k, v in profile.snapshot().items()},
            "gc": [collector.seconds, collector.collections],
            "dedup": counter.take(),
        }

    results = run_passes(config, one_pass, server)
    results["stored"] = store.count_records()
    results["developments"] = store.count_developments()
    store.close()
    if pool is not None:
        pool.shutdown()
    return results


def service_child(config: dict[str, Any]) -> dict[str, Any]:
    """The service's own cycle: each pass is ``aggregator run --once`` (``Service.run`` with its
    scheduler, claims, lease renewals and the cycle driver; no HTTP server), on the benchmark's
    watchlist. Before each pass every source is made due (untimed), as the other systems'
    passes fetch every feed. Besides the pass's wall time, the service's own measure of its
    cycle (``last_cycle_seconds``, as /healthz shows it) is reported."""
    import asyncio
    import gc
    from dataclasses import replace

    from aggregator import profile
    from aggregator.service import Service, ServiceOptions
    from aggregator.settings import Settings
    from aggregator.store import open_store

    server = Server(config)
    watchlist = bench_watchlist(config)
    workdir = Path(config["workdir"])
    config_path = workdir / "watchlist.yaml"  # the service checks it exists; its loader is ours
    config_path.write_text("# cycle_bench: the watchlist is bench_watchlist()\n")
    settings = Settings(data_dir=workdir, db_url=config["db_url"], config_path=config_path)
    times = profile.enable()
    instrument_stages()
    collector = GcTimer()
    gc.callbacks.append(collector)
    counter = DecisionCounter()
    counter.install()
    # ``aggregator run`` freezes what its start-up left (ServiceOptions.from_env: gc_freeze),
    # once per process. Here every pass is a new Service in this process, and a service's
    # freeze would keep the pass before's store and window alive (a frozen reference cycle is
    # never collected): so the modules are frozen here, once, and the services do not freeze.
    gc.freeze()

    def make_due() -> None:
        with open_store(config["db_url"]) as store:
            store.sync_sources(watchlist.sources)
            past = datetime.now(UTC) - timedelta(days=1)
            states = [replace(st, next_fetch=past) for st in store.list_fetch_states()]
            if states:
                store.save_fetch_states(states)

    def one_pass(name: str) -> dict[str, Any]:
        times.reset()
        collector.reset()
        options = ServiceOptions(
            once=True,
            serve=False,
            seeds_dir=None,
            parse_processes=config["parse_processes"],
            max_concurrent_sources=config["max_in_flight"],
        )
        service = Service(settings, options, load_watchlist=lambda _path: watchlist)
        asyncio.run(service.run())
        fetches: dict[str, float] = {}
        for metric in service.metrics.fetches.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    label = next(iter(sample.labels.values()), "")
                    fetches[label] = fetches.get(label, 0.0) + sample.value
        records: dict[str, float] = {}
        for metric in service.metrics.records.collect():
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    label = next(iter(sample.labels.values()), "")
                    records[label] = records.get(label, 0.0) + sample.value
        ok = {"ok", "not-modified", "not-due", "cancelled"}
        return {
            "entries": int(records.get("new", 0) + records.get("duplicate", 0)),
            "errors": int(sum(v for k, v in fetches.items() if k not in ok)),
            "service_cycle_seconds": float(service.state.last_cycle_seconds or 0.0),
            "profile": {k: [v.seconds, v.calls, v.cpu] for k, v in profile.snapshot().items()},
            "gc": [collector.seconds, collector.collections],
            "dedup": counter.take(),
        }

    results = run_passes(config, one_pass, server, prepare=make_due)
    with open_store(config["db_url"]) as store:
        results["stored"] = store.count_records()
        results["developments"] = store.count_developments()
    return results


def _timed(stage: str, fn: Callable[..., Any]) -> Callable[..., Any]:
    import functools
    import inspect

    from aggregator import profile

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def awrapper(*args: Any, **kwargs: Any) -> Any:
            with profile.stage(stage):
                return await fn(*args, **kwargs)

        return awrapper

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with profile.stage(stage):
            return fn(*args, **kwargs)

    return wrapper


def instrument_stages() -> None:
    """Times the pipeline's stages from outside, in this benchmark process only.

    The pipeline may call ``aggregator.profile.stage`` itself; where it does, the inner timer
    gets the time and these wrappers add nothing (a stage's figure is its own time). Every
    wrapped function is looked up through its module at call time by the pipeline, so wrapping
    the module attribute is enough. "store" is what ``ingest``/``ingest_many`` and the store
    calls of the cycle cost besides matching and dedup (SQL, transactions, candidate reads).
    """
    from aggregator import dedup, feeds, normalize, pipeline
    from aggregator.fetch import Fetcher
    from aggregator.match import TopicMatcher
    from aggregator.store import Store

    targets: list[tuple[Any, str, str]] = [
        (Fetcher, "fetch", "fetch"),
        (feeds, "parse_feed", "parse"),
        (feeds, "scan_entry_ids", "parse"),
        (normalize, "record_from_entry", "extract"),
        (normalize, "record_from_article", "extract"),
        (TopicMatcher, "match", "match"),
        (dedup, "fingerprint", "dedup"),
        (dedup, "decide", "dedup"),
        (dedup, "fingerprint_from_json", "dedup"),
        (dedup, "fingerprint_to_json", "dedup"),
        (pipeline, "ingest", "store"),
        (pipeline, "ingest_many", "store"),
        (Store, "known_guids", "store"),
        (Store, "get_fetch_state", "store"),
        (Store, "save_fetch_state", "store"),
        (Store, "save_fetch_states", "store"),
        (Store, "get_fetch_states", "store"),
        (Store, "claim_due_sources", "store"),
        (Store, "claim_due_states", "store"),
        (Store, "release_source", "store"),
        (Store, "sync_sources", "store"),
    ]
    for owner, name, stage in targets:
        fn = getattr(owner, name, None)
        if fn is not None and not getattr(fn, "_bench_timed", False):
            wrapped = _timed(stage, fn)
            wrapped._bench_timed = True  # type: ignore[attr-defined]
            setattr(owner, name, wrapped)


def bench_watchlist(config: dict[str, Any]) -> Any:
    """The watchlist of the benchmark: one feed source per served feed, a few topics, and a
    fetch policy that lets loopback through the SSRF guard. ``min_host_interval_seconds`` is 0:
    reader has no politeness delay, and with N feeds on a few dozen hosts a 1 s delay would
    measure the delay, not the pipeline."""
    try:
        from aggregator.model import (
            DedupOptions,
            PublishOptions,
            Schedule,
            Source,
            SourceKind,
            Topic,
            TopicRules,
        )
        from aggregator.watchlist import Watchlist
    except ImportError as exc:
        raise Unavailable(f"aggregator.watchlist.Watchlist is missing: {exc}") from exc
    topics = (
        Topic(
            "border",
            "Border and smuggling",
            TopicRules(
                any=(
                    "kontrabanda",
                    "контрабанда",
                    "smuggling",
                    "balionai",
                    "аэростаты",
                    "pasienio",
                    "граница",
                )
            ),
        ),
        Topic(
            "energy",
            "Energy",
            TopicRules(
                any=("energetika", "энергетика", "electricity", "elektros", "электроэнергия")
            ),
        ),
        Topic("courts", "Courts", TopicRules(any=("teismas", "суд", "court", "приговор"))),
        Topic(
            "world",
            "World news in English",
            TopicRules(any=("police", "killed", "president", "minister", "market*", "bank*")),
        ),
    )
    sources = tuple(
        Source(
            id=f"bench{i:05d}",
            kind=SourceKind.FEED,
            url=url,
            schedule=Schedule(interval_seconds=900),
            title=f"bench feed {i}",
        )
        for i, url in enumerate(config["urls"])
    )
    return Watchlist(
        topics=topics,
        sources=sources,
        fetch=bench_fetch_policy(config["max_in_flight"]),
        publish=PublishOptions(),
        dedup=DedupOptions(),
        retention_days=365,
        path="<cycle-bench>",
    )


def bench_fetch_policy(max_in_flight: int) -> Any:
    """The benchmarks' fetch policy: ``max_in_flight`` requests, a quarter of them (at least 2)
    per host, no politeness delay (reader has none), loopback let through the SSRF guard."""
    from aggregator.model import FetchPolicy

    return FetchPolicy(
        user_agent="aggregator-cycle-bench/0.1",
        max_in_flight=max_in_flight,
        per_host_concurrency=max(2, max_in_flight // 4),
        min_host_interval_seconds=0.0,
        allow_networks=("127.0.0.0/8",),
    )


def _watchlist_yaml(urls: Sequence[str], interval: str) -> str:
    lines = [
        "version: 1",
        "fetch:",
        "  min_host_interval_seconds: 0",
        "  allow_networks: ['127.0.0.0/8']",
        "topics:",
        "  - id: border",
        "    title: Border",
        "    rules: {any: [kontrabanda, контрабанда, smuggling, pasienio, граница]}",
        "  - id: energy",
        "    title: Energy",
        "    rules: {any: [energetika, энергетика, electricity]}",
        "sources:",
    ]
    for i, url in enumerate(urls):
        lines += [
            f"  - id: bench{i:05d}",
            "    kind: feed",
            f"    url: '{url}'",
            f"    schedule: {{every: {interval}}}",
        ]
    return "\n".join(lines) + "\n"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_http(url: str, deadline: float) -> bool:
    import urllib.error
    import urllib.request

    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return True
        except urllib.error.HTTPError:
            return True  # it answers (503 while not ready still means it is up)
        except OSError:
            time.sleep(0.5)
    return False


def idle_rss_main(args: argparse.Namespace) -> int:
    """RSS of ``aggregator run`` with N feed sources in its watchlist, idle.

    Default: every source was fetched "just now" (its fetch state says the next fetch is a day
    away), so the daemon starts, schedules N jobs and waits: its resident set then is what an
    admin sees between cycles. ``--after-cycle``: the daemon first fetches every source from the
    loopback feed server (the state after a real cycle), then idles.
    """
    from aggregator.model import FetchState
    from aggregator.store import open_store
    from benchmarks.common import peak_rss_mb, rss_mb

    epoch = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    print(f"starting feed server with {args.feeds} feeds ...", file=sys.stderr, flush=True)
    with (
        FeedServerProcess(
            args.feeds,
            seed=args.seed,
            hosts=args.hosts,
            epoch=epoch,
            corpus=args.corpus,
            corpus_fraction=args.corpus_fraction,
        ) as fs,
        tempfile.TemporaryDirectory(prefix="idle-rss-") as tmp,
    ):
        workdir = Path(tmp)
        config = workdir / "watchlist.yaml"
        config.write_text(_watchlist_yaml(fs.urls(), "1d"))
        db_url = f"sqlite:///{workdir / 'aggregator.db'}"
        drop: Callable[[], None] | None = None
        if args.db.startswith("postgresql"):
            db_url, drop = _fresh_pg_database(args.db)
        try:
            if not args.after_cycle:
                from aggregator.watchlist import load_watchlist

                watchlist = load_watchlist(config)
                now = datetime.now(UTC)
                store = open_store(db_url)
                store.sync_sources(watchlist.sources)
                for source in watchlist.sources:
                    store.save_fetch_state(
                        FetchState(source.id, next_fetch=now + timedelta(days=1), last_success=now)
                    )
                store.close()
            port = _free_port()
            env = {
                **os.environ,
                "AGGREGATOR_DB": db_url,
                "AGGREGATOR_CONFIG": str(config),
                "AGGREGATOR_DATA_DIR": str(workdir),
                "AGGREGATOR_PORT": str(port),
                "AGGREGATOR_LOG_LEVEL": "WARNING",
            }
            cmd = [sys.executable, "-m", "aggregator", "run", "--no-seeds"]
            proc = subprocess.Popen(cmd, env=env, cwd=workdir, stderr=subprocess.DEVNULL)
            try:
                started = time.monotonic()
                up = _wait_http(f"http://127.0.0.1:{port}/healthz", started + 300)
                if not up or proc.poll() is not None:
                    print("idle-daemon RSS: the service did not start", file=sys.stderr)
                    return 1
                if args.after_cycle:
                    while fs.counts()["total"] < args.feeds and time.monotonic() - started < 3600:
                        time.sleep(2)
                    print(
                        f"  cycle done: {fs.counts()['total']} requests "
                        f"in {time.monotonic() - started:.0f} s",
                        file=sys.stderr,
                    )
                samples = []
                for _ in range(args.idle_seconds):
                    time.sleep(1)
                    samples.append(rss_mb(proc.pid))
                rss, hwm = samples[-1], peak_rss_mb(proc.pid)
                requests = fs.counts()["total"]
            finally:
                proc.terminate()
                try:
                    proc.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()
        finally:
            if drop is not None:
                drop()
    mode = "after one cycle over every source" if args.after_cycle else "nothing due"
    print(f"idle daemon: {args.feeds} sources, {mode}, db {args.db}")
    print(
        table(
            ["", "MB"],
            [
                [f"RSS after {args.idle_seconds} s idle", rss],
                ["RSS min..max while idle", f"{min(samples):.1f}..{max(samples):.1f}"],
                ["peak RSS since start (VmHWM)", hwm],
                ["goal (issue 9)", 150.0],
            ],
        )
    )
    print(f"feed requests while measured: {requests}")
    return 0


def child_main(config_path: str) -> int:
    config = json.loads(Path(config_path).read_text())
    runner = reader_child if config["system"] == "reader" else aggregator_child
    try:
        result: dict[str, Any] = {"ok": True, **runner(config)}
    except Unavailable as exc:
        result = {"ok": False, "error": str(exc)}
    Path(config["result"]).write_text(json.dumps(result))
    return 0


# --- the parent side: server, children, table -------------------------------------------------


def _fresh_pg_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    import psycopg

    plain = admin_url.replace("postgresql+psycopg://", "postgresql://")
    name = f"aggregator_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(plain, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = plain.rsplit("/", 1)[0]

    def drop() -> None:
        with psycopg.connect(plain, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return f"{base.replace('postgresql://', 'postgresql+psycopg://')}/{name}", drop


def run_system(
    system: str, args: argparse.Namespace, fs: FeedServerProcess, workdir: Path
) -> dict[str, Any]:
    fs.rewind()
    sysdir = workdir / system
    sysdir.mkdir()
    drop: Callable[[], None] | None = None
    db_url = f"sqlite:///{sysdir / 'aggregator.db'}"
    if system == "aggregator" and args.db.startswith("postgresql"):
        db_url, drop = _fresh_pg_database(args.db)
    config = {
        "system": system,
        "feeds": args.feeds,
        "port": fs.port,
        "hosts": fs.hosts,
        "server_pid": fs.pid,
        "urls": fs.urls(),
        "workdir": str(sysdir),
        "db_url": db_url,
        "passes": list(PASSES),
        "reader_workers": args.reader_workers,
        "max_in_flight": args.max_in_flight,
        "parse_processes": args.parse_processes,
        "result": str(sysdir / "result.json"),
    }
    config_path = sysdir / "config.json"
    config_path.write_text(json.dumps(config))
    print(f"running {system} ...", file=sys.stderr, flush=True)
    try:
        proc = subprocess.run(
            [sys.executable, str(Path(__file__).resolve()), "--child", str(config_path)],
            check=False,
        )
    finally:
        if drop is not None:
            drop()
    result_path = Path(config["result"])
    if proc.returncode != 0 or not result_path.exists():
        return {"ok": False, "error": f"{system} benchmark process failed (exit {proc.returncode})"}
    result: dict[str, Any] = json.loads(result_path.read_text())
    return result


def _rate(result: dict[str, Any], pass_name: str, what: str = "feeds") -> float | None:
    if not result.get("ok") or pass_name not in result:
        return None
    figures = result[pass_name]
    count = figures["feeds_fetched"] if what == "feeds" else figures.get("entries")
    if count is None:
        return None
    return float(count) / figures["wall"] if figures["wall"] > 0 else None


def report(args: argparse.Namespace, results: dict[str, dict[str, Any]], median_kb: float) -> str:
    systems = [s for s in SYSTEMS if s in results]
    out = [
        f"cycle benchmark: N = {args.feeds} feeds (median {median_kb:.1f} KB), "
        f"{args.hosts} loopback hosts, seed {args.seed}, {os.cpu_count()} cores, db {args.db}",
        f"reader {_reader_version()} with workers={args.reader_workers}; "
        f"aggregator max_in_flight={args.max_in_flight}, parse processes "
        f"{'as fetch-once chooses' if args.parse_processes is None else args.parse_processes}",
        f"feeds: {args.corpus_fraction:.0%} of items from {args.corpus} (real reports: wire "
        "copies, rewrites, several outlets per event)"
        if args.corpus
        else "feeds: synthetic text only (no --corpus)",
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}",
        "",
    ]
    for system in systems:
        if not results[system].get("ok"):
            out.append(f"{system}: NOT MEASURED: {results[system].get('error')}")
    if out[-1] != "":
        out.append("")

    def fig(system: str, key: Callable[[dict[str, Any]], Any]) -> Any:
        result = results.get(system, {})
        if not result.get("ok"):
            return None
        try:
            return key(result)
        except (KeyError, TypeError):
            return None

    rows: list[list[object]] = []
    specs: list[tuple[str, Callable[[dict[str, Any]], Any]]] = [
        ("feeds/s cold", lambda r: _rate(r, "cold")),
        ("feeds/s 304", lambda r: _rate(r, "304")),
        ("feeds/s changed", lambda r: _rate(r, "changed")),
        ("records/s cold", lambda r: _rate(r, "cold", "entries")),
        ("peak RSS MB (process tree)", lambda r: r["peak_rss_mb"]),
        ("peak PSS MB (process tree)", lambda r: r["peak_pss_mb"]),
        ("peak USS MB (process tree)", lambda r: r["peak_uss_mb"]),
        ("cold: seconds", lambda r: r["cold"]["wall"]),
        ("cold: CPU s (tree)", lambda r: r["cold"]["cpu"]),
        ("cold: server CPU s", lambda r: r["cold"]["server_cpu"]),
        ("cold: RSS sampler CPU s (not in the tree's)", lambda r: r["cold"].get("sampler_cpu")),
        ("cold: entries processed", lambda r: r["cold"]["entries"]),
        ("304: seconds", lambda r: r["304"]["wall"]),
        ("304: CPU s (tree)", lambda r: r["304"]["cpu"]),
        ("304: answers 304", lambda r: r["304"]["by_status"].get("304", 0)),
        ("changed: items the server added", lambda r: r["changed_items"]),
        ("changed: entries processed", lambda r: r["changed"]["entries"]),
        ("requests (all passes)", lambda r: sum(r[p]["requests"] for p in PASSES)),
        ("  of which robots.txt", lambda r: sum(r[p]["robots_requests"] for p in PASSES)),
        ("feeds fetched twice", lambda r: sum(r[p]["fetched_twice"] for p in PASSES)),
        ("fetch errors", lambda r: sum(r[p]["errors"] for p in PASSES)),
        ("entries stored at end", lambda r: r["stored"]),
        ("developments at end", lambda r: r["developments"]),
        ("cold: dedup decisions", lambda r: r["cold"]["dedup"]["decisions"]),
        ("cold: candidates scored / record", lambda r: _per_decision(r["cold"]["dedup"])),
        ("cold: joined an existing development", lambda r: _joined(r["cold"]["dedup"])),
        ("changed: candidates scored / record", lambda r: _per_decision(r["changed"]["dedup"])),
        ("service's own cycle s: cold", lambda r: r["cold"]["service_cycle_seconds"]),
        ("service's own cycle s: 304", lambda r: r["304"]["service_cycle_seconds"]),
    ]
    aggregators = [s for s in systems if s in AGGREGATORS]
    with_reader = "reader" in systems
    for label, key in specs:
        b = fig("reader", key)
        row: list[object] = [label]
        row += [fig(s, key) for s in systems]
        if with_reader:
            for system in aggregators:
                a = fig(system, key)
                ok = isinstance(a, int | float) and isinstance(b, int | float)
                row.append(ratio(a, b) if ok else "")
        rows.append(row)
    header = ["", *systems] + ([f"{s}/reader" for s in aggregators] if with_reader else [])
    out.append(table(header, rows))
    out += ["", "peak RSS / PSS MB by process (each role's own peak; pool processes summed):"]
    for system in systems:
        roles = results.get(system, {}).get("peak_by_role") or {}
        parts = [f"{k} {v[0]:.0f} / {v[1]:.0f}" for k, v in sorted(roles.items())]
        out.append(f"  {system}: {', '.join(parts) or '-'}")
    for system in aggregators:
        result = results.get(system, {})
        if result.get("ok"):
            out += ["", f"{system}: dedup decisions by reason per pass: "]
            out += [f"  {p}: {result[p].get('dedup', {}).get('reasons')}" for p in PASSES]
            out += ["", f"{system} per-stage profile (own wall seconds; fetch overlaps, so its"]
            out += ["sum exceeds the pass time, and the garbage collector's row overlaps the"]
            out += ["stages it ran in; cpu: the CPU seconds of the stage's thread, without the"]
            out += ["time it waited for the GIL; see benchmarks/README.md):", ""]
            out.append(_profile_table(result))
    return "\n".join(out)


def _per_decision(dedup: dict[str, Any]) -> float | None:
    return dedup["candidates"] / dedup["decisions"] if dedup.get("decisions") else None


def _joined(dedup: dict[str, Any]) -> int:
    return sum(n for reason, n in dedup.get("reasons", {}).items() if reason != "new")


def _profile_table(result: dict[str, Any]) -> str:
    from aggregator.profile import STAGES

    names = list(STAGES)
    for p in PASSES:
        names += [n for n in result[p].get("profile", {}) if n not in names]
    rows: list[list[object]] = []
    for name in names:
        row: list[object] = [name]
        for p in PASSES:
            seconds, calls, *cpu = result[p].get("profile", {}).get(name, [None, None])
            row += [seconds, (cpu or [None])[0] if name != "fetch" else None, calls]
        rows.append(row)
    gc_row: list[object] = ["(gc, within)"]
    for p in PASSES:
        seconds, calls = result[p].get("gc", [None, None])
        gc_row += [seconds, None, calls]
    rows.append(gc_row)
    header = [
        "stage",
        *[h for p in PASSES for h in (f"{p} s", f"{p} cpu", f"{p} calls")],
    ]
    return table(header, rows)


def _reader_version() -> str:
    try:
        from importlib.metadata import version

        return version("reader")
    except Exception:
        return "(not installed)"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description="cold / 304 / changed cycle: aggregator vs reader")
    ap.add_argument("--feeds", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--hosts", type=int, default=64, help="loopback addresses the feeds spread over"
    )
    ap.add_argument(
        "--systems", default=",".join(SYSTEMS), help="comma-separated: reader,aggregator"
    )
    ap.add_argument("--db", default="sqlite", help="sqlite (default) or a postgresql:// admin URL")
    ap.add_argument("--reader-workers", type=int, default=16)
    ap.add_argument("--max-in-flight", type=int, default=16)
    ap.add_argument(
        "--parse-processes",
        type=int,
        help="parse pool of the aggregator systems (default: as fetch-once and run choose)",
    )
    ap.add_argument(
        "--corpus",
        type=Path,
        default=DEFAULT_CORPUS if DEFAULT_CORPUS.is_dir() else None,
        help="clustering-dev folder whose real reports make up --corpus-fraction of the items "
        f"(default {DEFAULT_CORPUS} when present)",
    )
    ap.add_argument("--corpus-fraction", type=float, default=0.3)
    ap.add_argument("--json", help="also write every figure to this JSON file")
    ap.add_argument("--idle-rss", action="store_true", help="measure the idle daemon's RSS instead")
    ap.add_argument("--after-cycle", action="store_true", help="--idle-rss: fetch everything first")
    ap.add_argument("--idle-seconds", type=int, default=15, help="--idle-rss: seconds sampled")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child_main(args.child)
    if args.idle_rss:
        return idle_rss_main(args)
    systems = [s.strip() for s in args.systems.split(",") if s.strip()]
    unknown = set(systems) - set(SYSTEMS)
    if unknown:
        ap.error(f"unknown system(s): {', '.join(sorted(unknown))}")
    epoch = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=1)
    print(f"starting feed server with {args.feeds} feeds ...", file=sys.stderr, flush=True)
    with (
        FeedServerProcess(
            args.feeds,
            seed=args.seed,
            hosts=args.hosts,
            epoch=epoch,
            corpus=args.corpus,
            corpus_fraction=args.corpus_fraction,
        ) as fs,
        tempfile.TemporaryDirectory(prefix="cycle-bench-") as tmp,
    ):
        median_kb = _median_feed_kb(fs)
        results = {s: run_system(s, args, fs, Path(tmp)) for s in systems}
    text = report(args, results, median_kb)
    print(text)
    if args.json:
        Path(args.json).write_text(
            json.dumps({"args": vars(args), "results": results}, indent=1, default=str)
        )
    return 0 if all(r.get("ok") for r in results.values()) else 1


def _median_feed_kb(fs: FeedServerProcess, sample: int = 101) -> float:
    import statistics
    import urllib.request

    step = max(1, fs.feeds // sample)
    sizes = []
    for i in range(0, fs.feeds, step):
        with urllib.request.urlopen(fs.url(i) + "?gen=0", timeout=30) as resp:
            sizes.append(len(resp.read()))
    fs.reset_counts()
    return statistics.median(sizes) / 1000


if __name__ == "__main__":
    sys.exit(main())
