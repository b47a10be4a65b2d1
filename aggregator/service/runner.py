"""``aggregator run``: the long-running service.

One asyncio event loop holds everything: the uvicorn server (feeds, ``/healthz``, ``/metrics``),
an ``AsyncIOScheduler`` with one job per source, the watchlist watcher and the one shared
``Fetcher`` (its httpx client, semaphores and per-host politeness are bound to one loop, so a
second loop in a thread would need a second client and cross-thread hand-offs for nothing).
Feeds are served from an in-memory cache; no store call runs on the loop: claims, fetch
states, source sync, retention and health queries run on the fetch cycle's worker thread (or a
thread of their own), so HTTP serving never waits on SQL.

How a source gets fetched, on one replica or many:

1. Its APScheduler job fires (interval or cron, with jitter): the job only *wakes* the
   dispatcher for that source id.
2. The dispatcher claims due sources through the database (``cycle.CycleDriver.claim``:
   ``FOR UPDATE SKIP LOCKED`` on PostgreSQL), so each due source is
   fetched by exactly one replica; a dead replica's leases expire and another takes over.
   While a fetch runs, its lease is renewed every third of a lease (``renew_leases``), so a
   long fetch and ingest is not fetched again elsewhere.
3. ``CycleDriver.fetch`` (the same as ``fetch-once``: parse pool, ingest sequencer, group
   commit of fetch states) fetches, parses, ingests and saves the source's fetch state with a
   ``next_fetch`` no earlier than the job's next run (so other replicas do not fetch it again
   this cycle); the service then moves the job later when the policy said so (failure backoff,
   ``Retry-After``, ``Cache-Control``, skip hours).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import gc
import logging
import os
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger
from starlette.applications import Starlette

from aggregator.errors import AggregatorError
from aggregator.logs import source_context
from aggregator.model import FetchState, Source
from aggregator.service.alerts import install_alerts
from aggregator.service.lifecycle import ReplicaLock, Server, owner_id, replica_lock_for
from aggregator.service.reload import WatchlistWatcher
from aggregator.service.scheduler import SourceScheduler
from aggregator.settings import Settings
from aggregator.web.limits import HttpLimits, guarded_protocol
from aggregator.web.ops import OpsState, ops_routes

log = logging.getLogger("aggregator.service")

RETENTION_JOB = "retention"
SWEEP_JOB = "claim-sweep"
# next_fetch is set this far before the job's next run, so jitter never makes the job early.
NEXT_FETCH_SLACK = timedelta(seconds=5)
FAILING_CACHE_SECONDS = 2.0
PUMP_DELAY_SECONDS = 0.05
BULK_STATE_THRESHOLD = 50
LEASE_RENEWALS_PER_LEASE = 3  # a lease is renewed this many times per lease time while in flight


def _env_float(name: str, default: float) -> float:
    value = os.environ.get(name)
    return float(value) if value else default


@dataclass(frozen=True, slots=True)
class ServiceOptions:
    """How ``aggregator run`` runs: command-line options, and for the operational settings
    (shutdown, reload, lease, concurrency, seeds) ``AGGREGATOR_*`` variables (``from_env``;
    docs/operations.md). The replay options are command-line only: they are for demos and tests."""

    host: str = "127.0.0.1"
    port: int = 8080
    replay_dir: Path | None = None
    replay_latency: float = 0.0  # seconds added to every replayed response
    once: bool = False
    serve: bool = True  # False: no HTTP server (embedding, tests)
    shutdown_timeout: float = 20.0  # in-flight fetches get this long to finish on SIGTERM
    reload_interval: float = 2.0  # how often the watchlist file is checked for edits
    lease_seconds: float = 300.0  # a claimed source is another replica's after this long unrenewed
    max_concurrent_sources: int = 0  # 0: the fetch policy's max_in_flight
    seeds_dir: Path | None = None  # imported on first start into an empty store
    # SQLite files up to this size get PRAGMA quick_check at start (a corrupt store is
    # refused with what to do); larger ones are left to `aggregator db check`.
    startup_check_max_mb: float = 1024.0
    http: HttpLimits = dataclasses.field(default_factory=HttpLimits)  # web/limits.py
    parse_processes: int | None = None  # None: as fetch-once (cores - 1 from 50 sources)
    # At start, once modules, watchlist and store are loaded (before the parse pool forks):
    # gc.freeze() them, so the collector stops traversing them in every full collection.
    # Off by default for embedding and tests; ``aggregator run`` (from_env) turns it on.
    gc_freeze: bool = False
    # The collector's generation-0 threshold (Python's default is 700); 0 leaves it as it is.
    gc_gen0_threshold: int = 0

    @classmethod
    def from_env(cls, **overrides: Any) -> ServiceOptions:
        seeds = os.environ.get("AGGREGATOR_SEEDS")
        values: dict[str, Any] = {
            "shutdown_timeout": _env_float("AGGREGATOR_SHUTDOWN_TIMEOUT", 20.0),
            "reload_interval": _env_float("AGGREGATOR_RELOAD_INTERVAL", 2.0),
            "lease_seconds": _env_float("AGGREGATOR_LEASE_SECONDS", 300.0),
            "max_concurrent_sources": int(_env_float("AGGREGATOR_MAX_CONCURRENT_SOURCES", 0)),
            "parse_processes": (
                int(os.environ["AGGREGATOR_PARSE_PROCESSES"])
                if os.environ.get("AGGREGATOR_PARSE_PROCESSES")
                else None
            ),
            "seeds_dir": Path(seeds) if seeds else (Path("seeds") if seeds is None else None),
            "http": _http_limits_from_env(),
            "startup_check_max_mb": _env_float("AGGREGATOR_STARTUP_CHECK_MAX_MB", 1024.0),
            "gc_freeze": os.environ.get("AGGREGATOR_GC_FREEZE", "1") not in ("0", "false", "no"),
            "gc_gen0_threshold": int(_env_float("AGGREGATOR_GC_GEN0_THRESHOLD", 0)),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)


def tune_gc(options: ServiceOptions) -> None:
    """Set the garbage collector up as ``options`` say: freeze what start-up left alive (it
    lives as long as the process; frozen objects are skipped by every later collection) and
    the generation-0 threshold, when one is given."""
    if options.gc_gen0_threshold > 0:
        _, gen1, gen2 = gc.get_threshold()
        gc.set_threshold(options.gc_gen0_threshold, gen1, gen2)
    if options.gc_freeze:
        gc.collect()
        gc.freeze()


def _http_limits_from_env() -> HttpLimits:
    """``AGGREGATOR_HTTP_*`` over the defaults of ``HttpLimits``."""
    default = HttpLimits()
    return HttpLimits(
        max_header_bytes=int(
            _env_float("AGGREGATOR_HTTP_MAX_HEADER_BYTES", default.max_header_bytes)
        ),
        max_headers=int(_env_float("AGGREGATOR_HTTP_MAX_HEADERS", default.max_headers)),
        max_body_bytes=int(_env_float("AGGREGATOR_HTTP_MAX_BODY_BYTES", default.max_body_bytes)),
        request_timeout=_env_float("AGGREGATOR_HTTP_REQUEST_TIMEOUT", default.request_timeout),
        keep_alive_timeout=_env_float(
            "AGGREGATOR_HTTP_KEEP_ALIVE_TIMEOUT", default.keep_alive_timeout
        ),
        max_connections=int(_env_float("AGGREGATOR_HTTP_MAX_CONNECTIONS", default.max_connections)),
    )


FetchOne = Callable[[Any, Source, Any, datetime], Awaitable[Any]]


class Service:
    """The service's state and its event handlers; ``run()`` is the whole life of the process.

    The collaborators (store, fetcher, loader, fetch function, seed importer, feeds app) are
    looked up in their modules by default and can be replaced, so the scheduling, reload and
    shutdown logic is testable without a network.
    """

    def __init__(
        self,
        settings: Settings,
        options: ServiceOptions,
        *,
        open_store: Callable[[str], Any] | None = None,
        load_watchlist: Callable[[Path], Any] | None = None,
        make_fetcher: Callable[[Any], Any] | None = None,
        fetch_one: FetchOne | None = None,
        import_seeds: Callable[[Any, Path, Any], int] | None = None,
        make_app: Callable[[Service], Starlette] | None = None,
    ) -> None:
        self.settings = settings
        self.options = options
        self.owner = owner_id()
        self.state = OpsState(owner=self.owner, database=_redact(settings.db_url))
        self.metrics = self.state.metrics
        self._open_store = open_store or _default_open_store
        self._load = load_watchlist or functools.partial(_default_load_watchlist, settings)
        self._make_fetcher = make_fetcher or _default_fetcher
        self._fetch_one = fetch_one or _default_fetch_one
        self._import_seeds = import_seeds or _default_import_seeds
        self._make_app = make_app or _default_app
        self.store: Any = None
        self.cycle: Any = None  # the cycle.CycleDriver (claims, fetches, fetch states, ingest)
        self._pool: Any = None  # its parse pool
        self._claimed: dict[str, FetchState] = {}  # claimed states, until their fetch starts
        self._synced: asyncio.Task[None] | None = None  # the last source sync
        self.watchlist: Any = None
        self.matcher: Any = None
        self.fetcher: Any = None
        self.replay: Any = None
        self._start_version: str | None = None
        self.sources: dict[str, Source] = {}
        self.scheduler: SourceScheduler | None = None
        self.watcher: WatchlistWatcher[Any] | None = None
        self.server: Server | None = None
        self._lock: ReplicaLock | None = None
        self._stop = asyncio.Event()
        self._in_flight: dict[str, asyncio.Task[None]] = {}
        self._fetcher_of: dict[str, Any] = {}
        self._pending: set[str] = set()
        self._pumping = False
        self._repump = False
        self._burst_start: float | None = None
        self._drained = asyncio.Event()
        self._scheduler_stopped = False
        self._failing_cache: tuple[float, list[str]] | None = None
        self._pump_handle: asyncio.TimerHandle | None = None
        self._renewer: asyncio.Task[None] | None = None
        self._lease_lost: dict[str, asyncio.Task[None]] = {}  # fetches whose lease was taken
        self.fetch_log: list[str] = []  # source ids in the order fetched (for tests)
        self._background: set[asyncio.Task[Any]] = set()

    # ---------------------------------------------------------------- life cycle

    async def run(self) -> int:
        """Start, serve until SIGTERM/SIGINT (or one pass with ``--once``), stop; exit code."""
        loop = asyncio.get_running_loop()
        try:
            await self._start()
            if self.options.once:
                await self._run_once()
                return 0
            for sig in (signal.SIGTERM, signal.SIGINT):
                loop.add_signal_handler(sig, self.request_stop, sig)
            loop.add_signal_handler(signal.SIGHUP, self.request_reload)
            serve = self._serve() if self.options.serve else self._serve_nothing()
            server_task = asyncio.create_task(serve, name="http-server")
            watch_task = asyncio.create_task(self._watch(), name="watchlist-watcher")
            stop_task = asyncio.create_task(self._stop.wait())
            done, _ = await asyncio.wait(
                {server_task, stop_task}, return_when=asyncio.FIRST_COMPLETED
            )
            if server_task in done and not self._stop.is_set():
                # The server died on its own (port taken...): fatal, after a clean stop.
                self.request_stop()
                await self._shutdown()
                watch_task.cancel()
                server_task.result()
                raise AggregatorError("the HTTP server stopped unexpectedly")
            await self._shutdown()
            if self.server is not None:
                self.server.should_exit = True
            await server_task
            watch_task.cancel()
            stop_task.cancel()
            log.info("stopped cleanly")
            return 0
        finally:
            for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
                loop.remove_signal_handler(sig)
            await self._close()

    async def _start(self) -> None:
        self._lock = replica_lock_for(self.settings.db_url)
        if self._lock is not None:
            self._lock.acquire()
        if self.options.replay_dir is not None:
            from aggregator.replay import ReplayServer

            self.replay = ReplayServer(
                self.options.replay_dir, latency=self.options.replay_latency
            ).start()
        self.watcher = WatchlistWatcher(
            self.settings.config_path,
            self._load_watchlist,
            self._apply_watchlist,
            self._reject_watchlist,
            interval=self.options.reload_interval,
            timeout=_watchlist_limits(self.settings).load_timeout_seconds,
        )
        watchlist = self.watcher.load_initial()  # an invalid watchlist at start is fatal
        if self._lock is not None:
            self._check_store_file()
        self.store = self._open_store(self.settings.db_url)
        self._start_version = await _off_loop(self._feed_version)
        if self._lock is not None:
            await _off_loop(self._take_over_dead_leases)
        self.state.failing = self._failing_sources
        self.state.counts = self._store_counts
        await _off_loop(self._import_seeds_if_empty, watchlist)
        self.fetcher = await _enter(self._make_fetcher(watchlist.fetch))
        from aggregator.cycle import CycleDriver, parse_pool, parse_workers

        tune_gc(self.options)
        self._pool = parse_pool(parse_workers(self.options.parse_processes, len(watchlist.sources)))
        self.cycle = CycleDriver(
            self.store,
            watchlist,
            owner=self.owner,
            lease_seconds=self.options.lease_seconds,
            pool=self._pool,
        )
        self.scheduler = SourceScheduler(
            AsyncIOScheduler(timezone=UTC, event_loop=asyncio.get_running_loop()),
            self._wake,
        )
        self.scheduler.scheduler.start()
        self._apply_watchlist(watchlist)
        self.scheduler.scheduler.add_job(
            self._retention,
            IntervalTrigger(days=1, timezone=UTC, jitter=600),
            id=RETENTION_JOB,
            next_run_time=datetime.now(UTC) + timedelta(minutes=1),
            coalesce=True,
            max_instances=1,
            misfire_grace_time=3600,
        )
        # The database, not this process's clock, says what is due: a sweep now and then picks
        # up sources whose lease expired (a replica died) or whose time another replica moved.
        self.scheduler.scheduler.add_job(
            self._pump,
            IntervalTrigger(seconds=sweep_seconds(self.options.lease_seconds), timezone=UTC),
            id=SWEEP_JOB,
            coalesce=True,
            max_instances=1,
            misfire_grace_time=60,
        )
        install_alerts(self)  # service/alerts.py: pushes and digests, and their /healthz figures
        # Not a scheduler job: renewals must go on while the scheduler is paused at shutdown
        # and in-flight fetches finish.
        self._renewer = asyncio.get_running_loop().create_task(
            self._renew_leases_forever(), name="lease-renewal"
        )
        log.info(
            "service started",
            extra={
                "replica": self.owner,
                "sources": len(self.sources),
                "database": self.state.database,
            },
        )

    def _check_store_file(self) -> None:
        """A corrupt SQLite file is refused at start, with what to do (a quick check)."""
        from aggregator.store import check_database, corrupt_store_advice

        limit = int(self.options.startup_check_max_mb * 1024 * 1024)
        check = check_database(self.settings.db_url, full=False, max_bytes=limit)
        if check.skipped and "over" in check.skipped:
            log.info("start-up database check skipped: %s", check.skipped)
        if not check.ok:
            raise AggregatorError(corrupt_store_advice(check))

    def _take_over_dead_leases(self) -> None:
        """On SQLite this process holds the store's lock, so no other service can be running:
        leases of an earlier service process (killed, crashed) and of ``fetch-once`` processes
        that are gone end now, instead of after AGGREGATOR_LEASE_SECONDS. (Replicas on
        PostgreSQL keep lease expiry: another replica may be alive on another host.)"""
        try:
            leases = self.store.list_leases()
        except Exception:
            log.exception("reading the leases failed; dead ones expire on their own")
            return
        ended = []
        for sid, (owner, _expires) in leases.items():
            if owner != self.owner and _owner_gone(owner):
                self._release_of(owner, sid)
                ended.append(sid)
        if ended:
            log.warning(
                "took over %d sources leased by processes that are gone (no wait for the "
                "lease to expire): %s",
                len(ended),
                ", ".join(sorted(ended)[:20]),
                extra={"sources": len(ended)},
            )

    def _release_of(self, owner: str, sid: str) -> None:
        try:
            self.store.release_source(owner, sid)
        except Exception:
            log.exception("ending the dead lease on %s failed (it expires on its own)", sid)

    async def _serve(self) -> None:
        import uvicorn

        app = self._make_app(self)
        # The feeds are watched, not only rendered on request: a WebSub hub hears of a change
        # right after the ingest that made it (web.feeds.FeedCache.watch).
        cache = getattr(app.state, "feed_cache", None)
        watch = None
        if cache is not None:
            cache.start_version = self._start_version
            watch = asyncio.get_running_loop().create_task(cache.watch(), name="feed-watch")
        config = uvicorn.Config(
            app,
            host=self.options.host,
            port=self.options.port,
            log_config=None,
            access_log=False,
            lifespan="off",
            timeout_graceful_shutdown=5,
            server_header=False,
            # Header size and count, body, request and keep-alive timeouts, connections.
            http=guarded_protocol(self.options.http),
            timeout_keep_alive=max(1, round(self.options.http.keep_alive_timeout)),
            backlog=min(2048, self.options.http.max_connections),
        )
        self.server = Server(config)
        ready = asyncio.create_task(self._mark_ready())
        try:
            await self.server.serve()
        except SystemExit as exc:  # uvicorn exits when it cannot bind
            raise AggregatorError(
                f"cannot serve on {self.options.host}:{self.options.port} (see the log above)"
            ) from exc
        finally:
            ready.cancel()
            if watch is not None:
                watch.cancel()

    async def _serve_nothing(self) -> None:
        """Without HTTP (embedded use and tests): ready at once, until asked to stop."""
        self.state.ready = True
        await self._stop.wait()

    async def _mark_ready(self) -> None:
        while self.server is not None and not self.server.started:
            await asyncio.sleep(0.05)
        self.state.ready = True
        log.info(
            "serving on http://%s:%d/",
            self.options.host,
            self.options.port,
            extra={"feeds": f"http://{self.options.host}:{self.options.port}/feeds/all.atom"},
        )

    async def _watch(self) -> None:
        assert self.watcher is not None
        await self.watcher.watch(self._stop)

    def request_stop(self, sig: int | None = None) -> None:
        """SIGTERM/SIGINT: stop taking jobs, let in-flight fetches finish, exit 0."""
        if self._stop.is_set():
            log.warning("second stop signal: cancelling in-flight fetches now")
            for task in list(self._in_flight.values()):
                task.cancel()
            return
        name = signal.Signals(sig).name if sig else "stop"
        log.info("%s received: shutting down", name, extra={"in_flight": len(self._in_flight)})
        self.state.stopping = True
        self._stop.set()

    def request_reload(self) -> None:
        """SIGHUP: reload the watchlist now."""
        log.info("SIGHUP received: reloading the watchlist")
        if self.watcher is not None:
            # Read and loaded on a thread: the loop goes on serving meanwhile.
            task = asyncio.get_running_loop().create_task(self.watcher.reload_async())
            self._background.add(task)
            task.add_done_callback(self._background.discard)

    async def _shutdown(self) -> None:
        self.state.stopping = True
        if self.scheduler is not None and self.scheduler.scheduler.running:
            self.scheduler.scheduler.pause()  # no new jobs from here on
        tasks = list(self._in_flight.values())
        if tasks:
            log.info(
                "waiting up to %.0fs for %d in-flight fetches",
                self.options.shutdown_timeout,
                len(tasks),
            )
            _, pending = await asyncio.wait(tasks, timeout=self.options.shutdown_timeout)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("cancelled %d fetches at the shutdown deadline", len(pending))
                await asyncio.wait(pending, timeout=5)
        self._stop_scheduler()

    def _stop_scheduler(self) -> None:
        # AsyncIOScheduler.shutdown runs later, on the loop: ``running`` stays True until then.
        if self._scheduler_stopped or self.scheduler is None:
            return
        self._scheduler_stopped = True
        if self.scheduler.scheduler.running:
            self.scheduler.scheduler.shutdown(wait=False)

    async def _close(self) -> None:
        self._stop_scheduler()
        if self.cycle is not None:
            await self.cycle.aclose()
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
        if self._pump_handle is not None:
            self._pump_handle.cancel()
        if self._renewer is not None:
            self._renewer.cancel()
        for fetcher in {id(f): f for f in [self.fetcher, *self._fetcher_of.values()]}.values():
            if fetcher is not None:
                try:
                    await _exit(fetcher)
                except Exception:
                    log.exception("closing the fetcher failed")
        if self.store is not None:
            self.store.close()
        if self.replay is not None:
            self.replay.stop()
        if self._lock is not None:
            self._lock.release()

    async def _run_once(self) -> None:
        """``--once``: fetch every due source once, then return."""
        ids = list(self.sources)
        log.info("one pass over %d sources", len(ids))
        for sid in ids:
            self._pending.add(sid)
        self._drained.clear()
        await self._pump()
        if self._in_flight or self._pending:
            await self._drained.wait()
        await self._shutdown()

    # ---------------------------------------------------------------- watchlist

    def _load_watchlist(self, path: Path) -> Any:
        watchlist = self._load(path)
        if self.replay is not None:
            watchlist = self.replay.rewrite(watchlist)
        return watchlist

    def _apply_watchlist(self, watchlist: Any) -> None:
        """A valid watchlist: new sources scheduled, removed ones unscheduled, rules swapped."""
        old = self.watchlist
        self.watchlist = watchlist
        self.matcher = _matcher(watchlist)
        self.sources = {s.id: s for s in watchlist.sources if s.enabled}
        if self.cycle is not None:
            self.cycle.use_watchlist(watchlist, self.matcher)
        if self.store is not None:
            # Off the loop; claims wait for it (``_pump``), each sync after the one before.
            self._synced = asyncio.get_running_loop().create_task(
                self._sync_sources(self._synced, list(watchlist.sources))
            )
        if old is not None and old.fetch != watchlist.fetch and self.fetcher is not None:
            asyncio.get_running_loop().create_task(self._swap_fetcher(watchlist.fetch))
        assert self.scheduler is not None
        result = self.scheduler.sync(watchlist.sources)
        now = datetime.now(UTC)
        self.state.set_watchlist_ok(str(getattr(watchlist, "path", "")), len(self.sources), now)
        if old is not None:
            self.metrics.reloads.labels("applied").inc()
            log.info(
                "watchlist reloaded",
                extra={
                    "added": list(result.added),
                    "removed": list(result.removed),
                    "rescheduled": list(result.rescheduled),
                    "sources": len(self.sources),
                    "topics": len(watchlist.topics),
                },
            )

    def _reject_watchlist(self, problems: list[str]) -> None:
        self.metrics.reloads.labels("rejected").inc()
        self.state.set_watchlist_errors(str(self.settings.config_path), problems)
        for problem in problems:
            log.error("watchlist edit refused, the last good one stays in force: %s", problem)

    async def _sync_sources(self, before: asyncio.Task[None] | None, sources: list[Source]) -> None:
        if before is not None:
            with contextlib.suppress(Exception):
                await before
        try:
            await _off_loop(self.store.sync_sources, sources)
        except Exception:
            log.exception("saving the watchlist's sources in the store failed")

    async def _swap_fetcher(self, policy: Any) -> None:
        """A changed ``fetch:`` section takes effect for fetches that start from now on."""
        old = self.fetcher
        self.fetcher = await _enter(self._make_fetcher(policy))
        users = [t for sid, t in self._in_flight.items() if self._fetcher_of.get(sid) is old]
        if users:
            await asyncio.wait(users)
        await _exit(old)
        log.info("fetch policy changed: new fetcher in use")

    # ---------------------------------------------------------------- fetching

    async def _wake(self, source_id: str) -> None:
        """The job of one source: note it is due here and let the dispatcher claim work."""
        if self._stop.is_set() or source_id not in self.sources:
            return
        if source_id not in self._in_flight:  # already being fetched: nothing to add
            self._pending.add(source_id)
        self._update_gauges()
        self._pump_soon()

    def _pump_soon(self) -> None:
        """Claim after a short pause, so jobs that fire together share one claim query."""
        if self._pump_handle is not None:
            return

        def fire() -> None:
            self._pump_handle = None
            asyncio.get_running_loop().create_task(self._pump())

        self._pump_handle = asyncio.get_running_loop().call_later(PUMP_DELAY_SECONDS, fire)

    def _capacity(self) -> int:
        if self.options.max_concurrent_sources > 0:
            return self.options.max_concurrent_sources
        policy = getattr(self.watchlist, "fetch", None)
        return max(1, int(getattr(policy, "max_in_flight", 16)))

    async def _pump(self) -> None:
        """Claim due sources up to the free slots and start their fetches."""
        if self._pumping:
            self._repump = True
            return
        self._pumping = True
        try:
            while True:
                self._repump = False
                if self._stop.is_set() and not self.options.once:
                    return
                free = self._capacity() - len(self._in_flight)
                if free > 0:
                    if self._synced is not None and not self._synced.done():
                        await asyncio.wait({self._synced})
                    claimed = await self._claim(free)
                    for sid in claimed:
                        self._start_fetch(sid)
                    if len(claimed) < free:
                        await self._settle_pending(set(claimed))
                if not self._repump:
                    break
        finally:
            self._pumping = False
            self._update_gauges()
            self._check_drained()

    async def _claim(self, limit: int) -> list[str]:
        try:
            claimed = await self.cycle.claim(limit, datetime.now(UTC))
        except Exception:
            log.exception("claiming due sources failed; will retry at the next job")
            return []
        mine = []
        for state in claimed:
            sid = state.source_id
            if sid in self.sources and sid not in self._in_flight:
                mine.append(sid)
                self._claimed[sid] = state
            else:  # disabled meanwhile, or already running here
                await self._release(sid)
        return mine

    async def _settle_pending(self, claimed: set[str]) -> None:
        """Woken sources that were not due (backoff, or another replica fetched them): their
        jobs move to the stored next fetch time, so they do not wake us again before it."""
        settled = list(self._pending - claimed - set(self._in_flight))
        if not settled:
            return
        for sid in settled:
            self._pending.discard(sid)
        self.metrics.fetches.labels("not-due").inc(len(settled))
        if self.scheduler is None:
            return
        next_fetches = await _off_loop(self._next_fetches, settled)
        if self.scheduler is None:
            return
        for sid, next_fetch in next_fetches.items():
            self.scheduler.defer(sid, next_fetch)

    def _next_fetches(self, ids: list[str]) -> dict[str, datetime]:
        """Stored next fetch times: one query for many sources (a start with thousands of
        sources fetched recently), one per source for a few. Blocking: call off the loop."""
        if len(ids) > BULK_STATE_THRESHOLD:
            wanted = set(ids)
            try:
                states = [s for s in self.store.list_fetch_states() if s.source_id in wanted]
            except Exception:
                log.exception("reading the fetch states failed")
                return {}
        else:
            states = [s for s in map(self._fetch_state, ids) if s is not None]
        return {s.source_id: s.next_fetch for s in states if s.next_fetch is not None}

    def _start_fetch(self, sid: str) -> None:
        self._pending.discard(sid)
        if self._burst_start is None:
            self._burst_start = time.monotonic()
        source = self.sources[sid]
        fetcher = self.fetcher
        task = asyncio.get_running_loop().create_task(
            self._fetch_task(source, fetcher), name=f"fetch:{sid}"
        )
        self._in_flight[sid] = task
        self._fetcher_of[sid] = fetcher

    async def _fetch_task(self, source: Source, fetcher: Any) -> None:
        sid = source.id
        started = time.monotonic()
        cancelled = False
        report: Any = None
        with source_context(sid):
            try:
                report = await self._fetch_one(self, source, fetcher, datetime.now(UTC))
                self._record_report(source, report, time.monotonic() - started)
            except asyncio.CancelledError:
                cancelled = True
                self.metrics.fetches.labels("cancelled").inc()
                # Still due (it was claimed because it was): the lease release below lets
                # whichever replica is up take it at once. Its fetch state is left alone: the
                # fetch layer's worker thread may still be finishing a write to it.
                log.warning("fetch cancelled", extra={"failure_class": "cancelled"})
                raise
            except AggregatorError as exc:
                failure = str(getattr(exc, "failure_class", "internal"))
                self.metrics.fetches.labels(failure).inc()
                log.error("fetch failed: %s", exc, extra={"failure_class": failure})
            except Exception as exc:
                self.metrics.fetches.labels("internal").inc()
                log.exception("fetch crashed: %s", exc, extra={"failure_class": "internal"})
                await _off_loop(self._record_crash, source, exc)
            finally:
                elapsed = time.monotonic() - started
                self.metrics.fetch_duration.observe(elapsed)
                self._claimed.pop(sid, None)
                self.fetch_log.append(sid)
                self.state.last_fetch = datetime.now(UTC)
                try:
                    if not cancelled:
                        await self._after_fetch(sid, report)
                    if not _field(report, "released"):
                        await self._release(sid)
                finally:
                    self._in_flight.pop(sid, None)
                    self._fetcher_of.pop(sid, None)
                if not self._stop.is_set():
                    asyncio.get_running_loop().create_task(self._pump())
                self._update_gauges()
                self._check_drained()

    def _record_report(self, source: Source, report: Any, seconds: float) -> None:
        """Metrics and one log line per fetch (``pipeline.SourceReport``; the fake fetches of
        the tests may return a plain dict with the same names)."""
        failure = _field(report, "failure_class")
        status = str(_field(report, "status") or "ok")
        result = str(failure) if failure else ("not-modified" if status == "not-modified" else "ok")
        new = int(_field(report, "new_records") or 0)
        dups = int(_field(report, "duplicates") or 0)
        self.metrics.fetches.labels(result).inc()
        if new:
            self.metrics.records.labels("new").inc(new)
        if dups:
            self.metrics.records.labels("duplicate").inc(dups)
        extra = {
            "failure_class": str(failure) if failure else None,
            "status": status,
            "http_status": _field(report, "http_status"),
            "entries": _field(report, "entries"),
            "new_records": new,
            "duplicates": dups,
            "seconds": round(seconds, 3),
        }
        if failure:
            log.warning("fetch failed: %s", _field(report, "error") or failure, extra=extra)
        else:
            log.info("fetched: %d new records", new, extra=extra)

    def _record_crash(self, source: Source, exc: Exception) -> None:
        """A fetch that raised (a bug, the database away): the source's state says so, and it
        backs off like a failing source (``cycle.crashed_state``: the one next-fetch policy),
        so /healthz and ``aggregator sources`` show it. Blocking: call off the loop."""
        from aggregator.cycle import crashed_state

        state = self._fetch_state(source.id)
        if state is None:
            return
        cap = float(getattr(getattr(self.watchlist, "fetch", None), "max_backoff_seconds", 86400))
        try:
            self.store.save_fetch_state(crashed_state(state, source, exc, datetime.now(UTC), cap))
        except Exception:
            log.exception("recording the crash in the fetch state failed")

    async def _after_fetch(self, sid: str, report: Any) -> None:
        """Move the job's next run later when the stored ``next_fetch`` is later (backoff,
        ``Retry-After``, skip hours). The driver's fetch saved a ``next_fetch`` no earlier than
        the job's next run and reports it; for a fetch that does not report one (the tests'
        fakes), the stored one is read and raised to the job's next run here, off the loop."""
        if self.scheduler is None or self.store is None:
            return
        job_next = self.scheduler.next_run(sid)
        if job_next is None:
            return
        next_fetch = _field(report, "next_fetch")
        if next_fetch is None:
            next_fetch = await _off_loop(self._raise_next_fetch, sid, job_next - NEXT_FETCH_SLACK)
        if next_fetch is not None and next_fetch > job_next:
            self.scheduler.defer(sid, next_fetch)

    def _raise_next_fetch(self, sid: str, target: datetime) -> datetime | None:
        """The stored next fetch of ``sid``, raised to ``target`` (saved) when earlier."""
        state = self._fetch_state(sid)
        if state is None:
            return None
        if state.next_fetch is None or state.next_fetch < target:
            try:
                self.store.save_fetch_state(dataclasses.replace(state, next_fetch=target))
            except Exception:
                log.exception("saving the next fetch time failed")
            return target
        return state.next_fetch

    def _feed_version(self) -> str | None:
        """The store's feed version before this process fetches (None if it cannot tell)."""
        try:
            return str(self.store.feed_version())
        except Exception:
            return None

    def _fetch_state(self, sid: str) -> FetchState | None:
        try:
            state: FetchState = self.store.get_fetch_state(sid)
        except Exception:
            log.exception("reading the fetch state failed")
            return None
        return state

    async def _renew_leases_forever(self) -> None:
        every = renew_seconds(self.options.lease_seconds)
        while True:
            await asyncio.sleep(every)
            await self.renew_leases()

    async def renew_leases(self) -> None:
        """Extend the leases of the sources being fetched here, so a fetch and ingest that
        outlive one lease are not fetched again by another replica. Only the lease columns
        are written (the fetch layer saves the fetch state from its own thread meanwhile)."""
        lost = self._lease_lost
        for sid in [s for s, task in lost.items() if self._in_flight.get(s) is not task]:
            del lost[sid]  # that fetch is over
        running = {s: task for s, task in self._in_flight.items() if s not in lost}
        if not running or self.store is None:
            return
        try:
            held = await asyncio.to_thread(
                self.store.renew_leases,
                self.owner,
                list(running),
                datetime.now(UTC),
                self.options.lease_seconds,
            )
        except Exception:
            log.exception("renewing the leases failed; will retry")
            return
        for sid, task in running.items():
            # A fetch that finished meanwhile released its lease: nothing was lost.
            if sid not in held and self._in_flight.get(sid) is task:
                lost[sid] = task  # said once; not renewed again
                log.warning(
                    "lease on %s lost: it ran out before renewal and another replica took "
                    "the source over, which may fetch it too (ingest stores nothing twice); "
                    "raise AGGREGATOR_LEASE_SECONDS",
                    sid,
                    extra={"source_id": sid},
                )

    async def _release(self, sid: str) -> None:
        try:
            await _off_loop(self.store.release_source, self.owner, sid)
        except Exception:
            log.exception("releasing the lease failed (it expires on its own)")

    def _update_gauges(self) -> None:
        self.state.in_flight = len(self._in_flight)
        self.state.queue_depth = len(self._pending)
        self.metrics.in_flight.set(len(self._in_flight))
        self.metrics.queue_depth.set(len(self._pending))

    def _check_drained(self) -> None:
        """A burst of due work is over: record it as the last cycle."""
        if self._in_flight or self._pending or self._pumping:
            return
        if self._burst_start is not None:
            seconds = time.monotonic() - self._burst_start
            self._burst_start = None
            now = datetime.now(UTC)
            self.state.last_cycle = now
            self.state.last_cycle_seconds = round(seconds, 3)
            self.metrics.last_cycle.set(now.timestamp())
            self.metrics.cycle_duration.set(seconds)
        self._drained.set()

    # ---------------------------------------------------------------- store helpers

    def _failing_sources(self) -> list[str]:
        """Watched sources whose last fetch failed; cached briefly, as health checks and
        scrapes may come often and the query reads every source's state."""
        now = time.monotonic()
        cached = self._failing_cache
        if cached is not None and now - cached[0] < FAILING_CACHE_SECONDS:
            return cached[1]
        watched = set(self.sources)
        failing = sorted(
            s.source_id
            for s in self.store.list_fetch_states()
            if s.source_id in watched and s.consecutive_failures > 0
        )
        self._failing_cache = (now, failing)
        return failing

    def _store_counts(self) -> tuple[int, int]:
        return int(self.store.count_records()), int(self.store.count_developments())

    def _import_seeds_if_empty(self, watchlist: Any) -> None:
        seeds = self.options.seeds_dir
        if seeds is None or not seeds.is_dir():
            return
        if self.store.count_records() > 0:
            return
        log.info("empty store: importing the seeds from %s", seeds)
        count = self._import_seeds(self.store, seeds, watchlist)
        log.info("imported %d seed records", count)

    async def _retention(self) -> None:
        days = retention_days(self.watchlist, self.settings)
        cutoff = datetime.now(UTC) - timedelta(days=days)
        try:
            removed = int(await _off_loop(self.store.prune, cutoff))
        except Exception:
            log.exception("retention pruning failed; next try tomorrow")
            return
        self.metrics.pruned.inc(removed)
        log.info("retention: pruned %d records older than %d days", removed, days)


# -------------------------------------------------------------------- defaults


def _owner_gone(owner: str) -> bool:
    """Whether the lease owner ``owner`` is a process that no longer runs, for a service that
    holds the SQLite lock. ``host:pid:suffix`` is a service (only one at a time holds the lock:
    any other is gone); ``cycle-pid-suffix`` is a ``fetch-once`` on this host, gone when its
    pid is (or is this very process)."""
    parts = owner.split(":")
    if len(parts) == 3 and parts[1].isdigit():
        return True
    if owner.startswith("cycle-"):
        pid = owner.split("-")[1]
        if not pid.isdigit():
            return False
        if int(pid) == os.getpid():
            return True
        try:
            os.kill(int(pid), 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            return False
        return False
    return False


def sweep_seconds(lease_seconds: float) -> float:
    """How often to look for due sources besides the jobs: half a lease, 1 s to 60 s."""
    return min(60.0, max(1.0, lease_seconds / 2))


def renew_seconds(lease_seconds: float) -> float:
    """How often in-flight leases are renewed: a third of the lease (at least every 0.1 s), so
    two renewals can fail or come late before a lease runs out."""
    return max(0.1, lease_seconds / LEASE_RENEWALS_PER_LEASE)


def retention_days(watchlist: Any, settings: Settings) -> int:
    """``AGGREGATOR_RETENTION_DAYS`` when set (an operator's override), else the watchlist's."""
    if os.environ.get("AGGREGATOR_RETENTION_DAYS"):
        return settings.retention_days
    return int(getattr(watchlist, "retention_days", None) or settings.retention_days)


def _field(obj: Any, *names: str) -> Any:
    for name in names:
        if isinstance(obj, dict) and name in obj:
            return obj[name]
        if hasattr(obj, name):
            return getattr(obj, name)
    return None


def _redact(url: str) -> str:
    """The database URL without its password, for /healthz and logs."""
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        cred, _, host = rest.rpartition("@")
        user = cred.split(":", 1)[0]
        return f"{scheme}{sep}{user}:***@{host}"
    return url


async def _enter(obj: Any) -> Any:
    enter = getattr(obj, "__aenter__", None)
    if enter is None:
        return obj
    entered = await enter()
    return entered if entered is not None else obj


async def _exit(obj: Any) -> None:
    exit_ = getattr(obj, "__aexit__", None)
    if exit_ is not None:
        await exit_(None, None, None)
    else:
        close = getattr(obj, "aclose", None)
        if close is not None:
            await close()


def _matcher(watchlist: Any) -> Any:
    from aggregator.match import TopicMatcher

    return TopicMatcher(watchlist.topics)


def _default_open_store(url: str) -> Any:
    from aggregator.store import open_store

    return open_store(url)


def _watchlist_limits(settings: Settings) -> Any:
    from aggregator.watchlist import limits_of

    return limits_of(settings)


def _default_load_watchlist(settings: Settings, path: Path) -> Any:
    from aggregator.watchlist import load_watchlist

    return load_watchlist(path, _watchlist_limits(settings))


def _default_fetcher(policy: Any) -> Any:
    from aggregator.fetch import Fetcher

    return Fetcher(policy)


async def _default_fetch_one(service: Service, source: Source, fetcher: Any, now: datetime) -> Any:
    """The fetch of a claimed source: the cycle driver's, as in ``fetch-once``; its next fetch
    no earlier than the job's next run."""
    job_next = service.scheduler.next_run(source.id) if service.scheduler else None
    return await service.cycle.fetch(
        source,
        fetcher,
        now,
        state=service._claimed.pop(source.id, None),
        not_before=None if job_next is None else job_next - NEXT_FETCH_SLACK,
    )


async def _off_loop(fn: Callable[..., Any], *args: Any) -> Any:
    """Store work off the event loop, on the fetch cycle's worker thread."""
    from aggregator.cycle import off_loop

    return await off_loop(fn, *args)


def _default_import_seeds(store: Any, seeds: Path, watchlist: Any) -> int:
    """Import seed-format files with the store part's importer (as ``aggregator import``)."""
    from aggregator.ingest_driver import import_records

    summary = import_records(
        store,
        [seeds],
        matcher=_matcher(watchlist),
        options=watchlist.dedup,
        source_topics={s.id: s.topics for s in watchlist.sources},
        now=datetime.now(UTC),
    )
    return int(summary.imported)


def _default_app(service: Service) -> Starlette:
    from aggregator.web import create_app

    return create_app(
        service.store,
        lambda: service.watchlist,
        service.settings,
        ops_routes(service.state),
    )
