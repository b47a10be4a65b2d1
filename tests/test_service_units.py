"""The service's parts in isolation: job management, hot reload, ops routes, logs, lock, replay."""

from __future__ import annotations

import asyncio
import dataclasses
import io
import json
import logging
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger
from starlette.applications import Starlette
from starlette.testclient import TestClient

from aggregator.errors import ConfigError, ConfigProblem
from aggregator.logs import JsonFormatter, TextFormatter, progress, setup_logging, source_context
from aggregator.model import FetchPolicy, Schedule, Source, SourceKind
from aggregator.replay import ReplayServer
from aggregator.service.lifecycle import ReplicaLockError, replica_lock_for, sqlite_path
from aggregator.service.reload import WatchlistWatcher
from aggregator.service.runner import _redact
from aggregator.service.scheduler import SourceScheduler, job_id, trigger_for
from aggregator.web.ops import OpsState, health_report, ops_routes

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)


def src(sid: str, every: int | None = 900, cron: str | None = None, enabled: bool = True) -> Source:
    return Source(
        id=sid,
        kind=SourceKind.FEED,
        url=f"https://example.org/{sid}.rss",
        schedule=Schedule(interval_seconds=every, cron=cron, jitter_seconds=30),
        enabled=enabled,
    )


# ------------------------------------------------------------------ scheduler


def test_trigger_for_interval_and_cron() -> None:
    interval = trigger_for(Schedule(interval_seconds=600, jitter_seconds=10))
    assert isinstance(interval, IntervalTrigger)
    assert interval.interval == timedelta(seconds=600)
    assert interval.jitter == 10
    cron = trigger_for(Schedule(cron="*/5 * * * *", jitter_seconds=7))
    assert isinstance(cron, CronTrigger)
    assert cron.jitter == 7
    nxt = cron.get_next_fire_time(None, NOW)
    assert nxt is not None
    assert nxt.minute % 5 == 0


def test_sync_adds_removes_and_reschedules_jobs() -> None:
    async def body() -> None:
        aps = AsyncIOScheduler(timezone=UTC)
        aps.start(paused=True)
        calls: list[str] = []

        async def job(sid: str) -> None:
            calls.append(sid)

        sched = SourceScheduler(aps, job)
        first = sched.sync([src("a"), src("b"), src("off", enabled=False)], now=NOW)
        assert first.added == ("a", "b")
        assert sched.source_ids == {"a", "b"}
        job_a = aps.get_job(job_id("a"))
        assert job_a.args == ("a",)  # jobs carry only the source id
        assert job_a.coalesce is True
        assert job_a.max_instances == 1
        assert job_a.misfire_grace_time > 0

        second = sched.sync([src("a", every=60), src("c")], now=NOW)
        assert second.added == ("c",)
        assert second.removed == ("b",)
        assert second.rescheduled == ("a",)
        assert aps.get_job(job_id("b")) is None
        assert aps.get_job(job_id("a")).trigger.interval == timedelta(seconds=60)

        third = sched.sync([src("a", every=60), src("c")], now=NOW)  # no change, no churn
        assert third.added == third.removed == third.rescheduled == ()
        aps.shutdown(wait=False)

    asyncio.run(body())


def test_defer_moves_next_run_only_later() -> None:
    async def body() -> None:
        aps = AsyncIOScheduler(timezone=UTC)
        aps.start(paused=True)

        async def job(sid: str) -> None:
            return None

        sched = SourceScheduler(aps, job)
        now = datetime.now(UTC)
        sched.sync([src("a")], now=now)
        first = sched.next_run("a")
        assert first is not None
        later = first + timedelta(hours=3)
        assert sched.defer("a", later) is True
        assert sched.next_run("a") == later
        assert sched.defer("a", later - timedelta(hours=1)) is False  # never earlier
        assert sched.next_run("a") == later
        aps.shutdown(wait=False)

    asyncio.run(body())


def test_jobs_run_the_function_with_the_source_id() -> None:
    async def body() -> list[str]:
        aps = AsyncIOScheduler(timezone=UTC)
        aps.start()
        seen: list[str] = []
        done = asyncio.Event()

        async def job(sid: str) -> None:
            seen.append(sid)
            if len(seen) == 2:
                done.set()

        SourceScheduler(aps, job).sync([src("x"), src("y")])
        await asyncio.wait_for(done.wait(), 5)
        aps.shutdown(wait=False)
        return seen

    assert sorted(asyncio.run(body())) == ["x", "y"]


# ------------------------------------------------------------------ reload


class _Loader:
    """Loads 'version N' files; 'broken' raises like load_watchlist does."""

    def __call__(self, path: Path) -> str:
        text = path.read_text()
        for number, line in enumerate(text.splitlines(), 1):
            if "broken" in line:
                raise ConfigError([ConfigProblem(str(path), number, "bad value")])
        return text.strip()


def test_watcher_applies_valid_edits_and_keeps_last_good(tmp_path: Path) -> None:
    path = tmp_path / "watchlist.yaml"
    path.write_text("one\n")
    applied: list[str] = []
    errors: list[list[str]] = []
    watcher = WatchlistWatcher(path, _Loader(), applied.append, errors.append)
    assert watcher.load_initial() == "one"
    assert watcher.check() is False  # unchanged

    path.write_text("two\n")
    assert watcher.check() is True
    assert applied == ["two"]

    path.write_text("two\nbroken: yes\n")
    assert watcher.check() is False
    assert errors == [[f"{path}:2: bad value"]]
    assert watcher.current == "two"  # the last good one stays

    path.write_text("two\nbroken: yes\n")  # touched, same bytes: nothing new to report
    assert watcher.check() is False
    assert len(errors) == 1

    path.write_text("three\n")
    assert watcher.check() is True
    assert applied == ["two", "three"]


def test_watcher_reload_forces_a_load_and_survives_deletion(tmp_path: Path) -> None:
    path = tmp_path / "watchlist.yaml"
    path.write_text("one\n")
    applied: list[str] = []
    errors: list[list[str]] = []
    watcher = WatchlistWatcher(path, _Loader(), applied.append, errors.append)
    watcher.load_initial()
    assert watcher.reload() is True
    assert applied == ["one"]
    path.unlink()
    assert watcher.check() is False  # an editor's rename in progress: not reported yet
    assert errors == []
    assert watcher.check() is False
    assert "not found" in errors[-1][0]  # still gone: reported
    assert watcher.current == "one"
    assert watcher.reload() is False
    path.write_text("one\n")  # back, same content: applied again, which clears the report
    assert watcher.check() is True
    assert applied == ["one", "one"]


def test_watcher_reports_loader_crash_as_problem(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("one\n")

    def crash(p: Path) -> str:
        raise RuntimeError("boom")

    errors: list[list[str]] = []
    watcher = WatchlistWatcher(path, crash, lambda w: None, errors.append)
    assert watcher.reload() is False
    assert "RuntimeError: boom" in errors[0][0]


def test_watcher_polls_until_stopped(tmp_path: Path) -> None:
    path = tmp_path / "w.yaml"
    path.write_text("one\n")
    applied: list[str] = []

    async def body() -> None:
        watcher = WatchlistWatcher(path, _Loader(), applied.append, print, interval=0.05)
        watcher.load_initial()
        stop = asyncio.Event()
        task = asyncio.create_task(watcher.watch(stop))
        await asyncio.sleep(0.1)
        path.write_text("two\n")
        for _ in range(100):
            if applied:
                break
            await asyncio.sleep(0.02)
        stop.set()
        await asyncio.wait_for(task, 2)

    asyncio.run(body())
    assert applied == ["two"]


# ------------------------------------------------------------------ ops routes


def _client(state: OpsState) -> TestClient:
    return TestClient(Starlette(routes=ops_routes(state)))


def test_healthz_not_ready_until_started_then_degraded_with_watchlist_error() -> None:
    state = OpsState(owner="host:1")
    client = _client(state)
    resp = client.get("/healthz")
    assert resp.status_code == 503
    assert resp.json()["status"] == "starting"
    assert client.get("/healthz/live").status_code == 200

    state.ready = True
    state.failing = list
    state.set_watchlist_ok("config/watchlist.yaml", 3, NOW)
    body = client.get("/healthz").json()
    assert body["status"] == "ok"
    assert body["ready"] is True
    assert body["sources"] == 3
    assert body["watchlist"]["error"] is None

    state.set_watchlist_errors("config/watchlist.yaml", ["config/watchlist.yaml:7: bad url"])
    state.failing = lambda: ["lrt"]
    state.last_cycle = NOW
    resp = client.get("/healthz")
    assert resp.status_code == 200  # the last good watchlist serves: degraded, still ready
    body = resp.json()
    assert body["status"] == "degraded"
    assert body["watchlist"]["error"] == "config/watchlist.yaml:7: bad url"
    assert body["failing_sources"] == 1
    assert body["last_cycle"] == "2026-01-01T12:00:00+00:00"
    assert client.get("/healthz/ready").status_code == 200


def test_healthz_every_source_failing_is_failing_and_still_ready() -> None:
    """Issue 20: every source failing (no internet) is "failing" in the body, with a 200: the
    replica still serves the stored feeds; a 503 would take every replica out at once."""
    state = OpsState(owner="host:1", ready=True)
    state.set_watchlist_ok("config/watchlist.yaml", 2, NOW)
    state.failing = lambda: ["lrt"]
    assert health_report(state)[1]["status"] == "degraded"
    state.failing = lambda: ["lrt", "belsat"]
    code, body = health_report(state)
    assert (code, body["status"], body["failing_sources"]) == (200, "failing", 2)
    assert _client(state).get("/healthz/ready").status_code == 200


def test_healthz_unready_when_database_fails() -> None:
    state = OpsState(ready=True)

    def broken() -> list[str]:
        raise OSError("connection refused")

    state.failing = broken
    code, body = health_report(state)
    assert code == 503
    assert body["database"]["ok"] is False
    assert "connection refused" in body["database"]["error"]


def test_metrics_exposition() -> None:
    state = OpsState(ready=True)
    state.counts = lambda: (12, 5)
    state.metrics.fetches.labels("ok").inc(3)
    state.metrics.fetches.labels("timeout").inc()
    state.metrics.fetch_duration.observe(0.3)
    state.metrics.queue_depth.set(4)
    resp = _client(state).get("/metrics")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/plain")
    text = resp.text
    assert 'aggregator_fetches_total{result="ok"} 3.0' in text
    assert 'aggregator_fetches_total{result="timeout"} 1.0' in text
    assert "aggregator_fetch_duration_seconds_count 1.0" in text
    assert "aggregator_queue_depth 4.0" in text
    assert "aggregator_stored_records 12.0" in text
    assert "aggregator_stored_developments 5.0" in text
    assert "aggregator_in_flight 0.0" in text


# ------------------------------------------------------------------ logs


def _record(msg: str, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("aggregator.fetch", logging.WARNING, __file__, 1, msg, (), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_carry_source_and_failure_class() -> None:
    stream = io.StringIO()  # not a terminal: JSON
    setup_logging("INFO", "auto", stream)
    try:
        with source_context("lrt-en"):
            logging.getLogger("aggregator.fetch.client").warning(
                "timed out", extra={"failure_class": "timeout"}
            )
        logging.getLogger("aggregator.fetch").info("plain")
    finally:
        setup_logging("WARNING", "text", sys.stderr)
    first, second = (json.loads(line) for line in stream.getvalue().splitlines())
    assert first["source_id"] == "lrt-en"
    assert first["failure_class"] == "timeout"
    assert first["level"] == "warning"
    assert first["message"] == "timed out"
    assert "source_id" in second
    assert second["failure_class"] is None


def test_text_format_is_readable() -> None:
    line = TextFormatter().format(_record("x failed", source_id="s1", failure_class="dns"))
    assert "WARNING aggregator.fetch: x failed" in line
    assert "source_id=s1 failure_class=dns" in line
    data = json.loads(JsonFormatter().format(_record("y", when=NOW)))
    assert data["when"] == "2026-01-01T12:00:00+00:00"


def test_progress_is_silent_off_terminal_and_draws_on_one() -> None:
    quiet = io.StringIO()
    assert list(progress(range(3), 3, "import", stream=quiet)) == [0, 1, 2]
    assert quiet.getvalue() == ""

    class Tty(io.StringIO):
        def isatty(self) -> bool:
            return True

    tty = Tty()
    assert list(progress(range(3), 3, "import", stream=tty)) == [0, 1, 2]
    assert "import [" in tty.getvalue()
    assert "3/3" in tty.getvalue()


# ------------------------------------------------------------------ lock and helpers


def test_sqlite_path_and_redaction() -> None:
    assert sqlite_path("sqlite:////var/lib/a/aggregator.db") == Path("/var/lib/a/aggregator.db")
    assert sqlite_path("sqlite:///:memory:") is None
    assert sqlite_path("postgresql+psycopg://db/x") is None
    assert replica_lock_for("postgresql+psycopg://db/x") is None
    assert _redact("postgresql+psycopg://agg:secret@db:5432/x") == (
        "postgresql+psycopg://agg:***@db:5432/x"
    )


def test_second_replica_on_sqlite_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'aggregator.db'}"
    lock = replica_lock_for(url)
    assert lock is not None
    with lock:
        # The lock is per open file description, so another process shows the real case.
        code = textwrap.dedent(
            f"""
            from aggregator.service.lifecycle import replica_lock_for, ReplicaLockError
            try:
                replica_lock_for({url!r}).acquire()
            except ReplicaLockError as exc:
                print(exc)
                raise SystemExit(3)
            """
        )
        proc = subprocess.run(
            [sys.executable, "-c", code], capture_output=True, text=True, timeout=30
        )
        assert proc.returncode == 3
        assert "already running on this SQLite database" in proc.stdout
        assert "PostgreSQL" in proc.stdout
    again = replica_lock_for(url)
    assert again is not None
    again.acquire()  # released: a new service may start
    again.release()
    with pytest.raises(ReplicaLockError):
        first = replica_lock_for(url)
        second = replica_lock_for(url)
        assert first is not None and second is not None
        first.acquire()
        try:
            second.acquire()
        finally:
            first.release()


# ------------------------------------------------------------------ replay


@dataclasses.dataclass(frozen=True)
class _Watchlist:
    sources: tuple[Source, ...]
    fetch: FetchPolicy


def test_replay_serves_recordings_and_rewrites_sources(tmp_path: Path) -> None:
    (tmp_path / "feeds").mkdir()
    (tmp_path / "feeds" / "a.rss").write_text("<rss/>")
    (tmp_path / "manifest.yaml").write_text("sources:\n  a: feeds/a.rss\n")

    server = ReplayServer(tmp_path).start()
    try:
        rewritten = server.rewrite(_Watchlist((src("a"), src("b")), FetchPolicy()))
        a, b = rewritten.sources
        assert a.url == server.base_url + "feeds/a.rss"
        assert a.url.startswith("http://127.0.0.1:")
        assert b.enabled is False  # no recording: never fetched from the internet
        assert "127.0.0.1/32" in rewritten.fetch.allow_networks
        with urllib.request.urlopen(a.url, timeout=5) as resp:
            assert resp.read() == b"<rss/>"
            assert resp.headers["Content-Type"].startswith("application/rss+xml")
            etag = resp.headers["ETag"]
        req = urllib.request.Request(a.url, headers={"If-None-Match": etag})
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(req, timeout=5)
        assert exc.value.code == 304
        with urllib.request.urlopen(server.base_url + "robots.txt", timeout=5) as resp:
            assert b"Allow: /" in resp.read()
        with pytest.raises(urllib.error.HTTPError) as exc:
            urllib.request.urlopen(server.base_url + "../../etc/passwd", timeout=5)
        assert exc.value.code == 404
        assert server.hits["feeds/a.rss"] == 2
    finally:
        server.stop()


def test_replay_latency_delays_every_response(tmp_path: Path) -> None:
    (tmp_path / "a.rss").write_text("<rss/>")
    (tmp_path / "manifest.yaml").write_text("sources:\n  a: a.rss\n")
    with pytest.raises(ValueError, match="negative"):
        ReplayServer(tmp_path, latency=-1)
    server = ReplayServer(tmp_path, latency=0.3).start()
    try:
        started = time.monotonic()
        with urllib.request.urlopen(server.base_url + "a.rss", timeout=5) as resp:
            assert resp.read() == b"<rss/>"
        assert time.monotonic() - started >= 0.3
    finally:
        server.stop()


def test_replay_manifest_errors_are_located(tmp_path: Path) -> None:
    (tmp_path / "manifest.yaml").write_text("sources:\n  a: missing.rss\n")
    with pytest.raises(ConfigError) as exc:
        ReplayServer(tmp_path)
    assert "missing.rss" in str(exc.value)
    with pytest.raises(ConfigError):
        ReplayServer(tmp_path / "nowhere")


def test_tune_gc_freezes_and_sets_the_gen0_threshold() -> None:
    import gc

    from aggregator.service.runner import ServiceOptions, tune_gc

    before = gc.get_threshold()
    try:
        tune_gc(ServiceOptions(gc_freeze=True, gc_gen0_threshold=5000))
        assert gc.get_freeze_count() > 0
        assert gc.get_threshold() == (5000, before[1], before[2])
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)


def test_tune_gc_by_default_leaves_the_collector_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    from aggregator.service.runner import ServiceOptions, tune_gc

    before = gc.get_threshold()
    tune_gc(ServiceOptions())
    assert gc.get_freeze_count() == 0
    assert gc.get_threshold() == before
    monkeypatch.setenv("AGGREGATOR_GC_GEN0_THRESHOLD", "10000")
    monkeypatch.setenv("AGGREGATOR_GC_FREEZE", "0")
    opts = ServiceOptions.from_env()
    assert (opts.gc_freeze, opts.gc_gen0_threshold) == (False, 10000)
    monkeypatch.delenv("AGGREGATOR_GC_FREEZE")
    assert ServiceOptions.from_env().gc_freeze is True
