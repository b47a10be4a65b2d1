"""Scaling out (issue 8): lease renewal, reconnecting after the database dropped the store's
connections, the operator's view of leases, and the one-replica rule on SQLite.

The reconnect tests terminate the store's own PostgreSQL backends with ``pg_terminate_backend``
from an admin connection (what a server restart does to a client), never restarting the shared
server; each test has a database of its own (the ``db_url`` fixture).
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Coroutine, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aggregator.model import FetchState, Schedule, Source, SourceKind
from aggregator.store import Store, open_store

ROOT = Path(__file__).resolve().parent.parent
NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)

TERMINATE_OTHERS = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
    "WHERE datname = current_database() AND pid <> pg_backend_pid()"
)


def sources(*ids: str) -> list[Source]:
    return [
        Source(id=i, kind=SourceKind.FEED, url=f"https://example.org/{i}.rss", schedule=Schedule())
        for i in ids
    ]


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with open_store(db_url) as s:
        yield s


# --- lease renewal ------------------------------------------------------------------------------


def test_renewal_by_the_owner_extends_the_lease(store: Store) -> None:
    store.sync_sources(sources("a", "b"), NOW)
    assert sorted(store.claim_due_sources("one", NOW, 60, 10)) == ["a", "b"]
    later = NOW + timedelta(seconds=50)
    assert store.renew_lease("one", "a", later, 60) is True
    assert store.lease_of("a") == ("one", later + timedelta(seconds=60))
    # b was not renewed: its lease ran out, a was renewed: nobody else may take it yet.
    after = NOW + timedelta(seconds=90)
    assert store.claim_due_sources("two", after, 60, 10) == ["b"]
    assert store.lease_of("a")[0] == "one"


def test_renewal_by_another_owner_or_after_takeover_fails(store: Store) -> None:
    store.sync_sources(sources("a", "b", "c"), NOW)
    store.claim_due_sources("one", NOW, 60, 10)
    # Not the owner: refused, and the lease is untouched.
    assert store.renew_lease("two", "a", NOW, 600) is False
    assert store.lease_of("a") == ("one", NOW + timedelta(seconds=60))
    # "one" stalled past its lease; "two" took the sources over: one can no longer renew.
    later = NOW + timedelta(seconds=61)
    assert sorted(store.claim_due_sources("two", later, 60, 10)) == ["a", "b", "c"]
    assert store.renew_lease("one", "a", later, 60) is False
    assert store.renew_leases("one", ["a", "b", "c"], later, 60) == set()
    assert store.lease_of("a") == ("two", later + timedelta(seconds=60))
    # Released: nothing to renew either; unknown sources are simply not held.
    store.release_source("two", "b")
    assert store.renew_leases("two", ["a", "b", "c", "zz"], later, 60) == {"a", "c"}


def test_renewal_leaves_the_fetch_state_alone(store: Store) -> None:
    store.sync_sources(sources("a"), NOW)
    store.claim_due_sources("one", NOW, 60, 1)
    state = FetchState(
        source_id="a",
        etag='"v1"',
        next_fetch=NOW + timedelta(minutes=30),
        last_success=NOW,
        fetch_count=3,
    )
    store.save_fetch_state(state)
    assert store.renew_lease("one", "a", NOW + timedelta(seconds=30), 60)
    assert store.get_fetch_state("a") == state
    # And saving the fetch state leaves the lease alone.
    store.save_fetch_state(dataclasses.replace(state, etag='"v2"'))
    assert store.lease_of("a") == ("one", NOW + timedelta(seconds=90))


def test_list_leases_for_operators(store: Store) -> None:
    store.sync_sources(sources("a", "b", "c"), NOW)
    store.claim_due_sources("one", NOW, 60, 2)
    assert store.list_leases() == {
        "a": ("one", NOW + timedelta(seconds=60)),
        "b": ("one", NOW + timedelta(seconds=60)),
    }
    store.release_source("one", "a")
    assert set(store.list_leases()) == {"b"}


# --- the service renews the leases of its in-flight fetches ----------------------------------


class SlowFetch:
    """A fetch that outlasts several leases and saves the fetch state half way, from a worker
    thread, as the fetch layer does."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.calls: list[str] = []
        self.running = asyncio.Event()
        self.done = False  # the fetch itself is over (the service then releases the lease)
        self.state_seen: FetchState | None = None

    async def __call__(self, service: Any, source: Source, fetcher: Any, now: datetime) -> Any:
        self.calls.append(source.id)
        self.running.set()
        state = dataclasses.replace(service.store.get_fetch_state(source.id), etag='"mid"')
        await asyncio.to_thread(service.store.save_fetch_state, state)
        await asyncio.sleep(self.seconds)
        self.state_seen = service.store.get_fetch_state(source.id)
        self.done = True
        return {"status": 200, "new_records": 0}


def slow_service(tmp_path: Path, db_url: str, fetch: SlowFetch, lease: float) -> Any:
    from tests.test_service_run import make_service, settings_for, watchlist_text

    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(["slow"]))
    return make_service(settings_for(tmp_path, db_url, config), fetch, lease_seconds=lease)  # type: ignore[arg-type]


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def test_service_renews_the_lease_of_a_fetch_that_outlives_it(tmp_path: Path, db_url: str) -> None:
    lease = 1.0
    fetch = SlowFetch(seconds=4 * lease)
    service = slow_service(tmp_path, db_url, fetch, lease)

    async def body() -> None:
        task = asyncio.create_task(service.run())
        await asyncio.wait_for(fetch.running.wait(), 10)
        with open_store(db_url) as rival:
            # Another replica keeps trying to claim for the whole fetch: never gets the source.
            while service._in_flight:
                assert rival.claim_due_sources("rival", datetime.now(UTC), lease, 10) == []
                owner, expires = rival.lease_of("slow")
                if not fetch.done:
                    assert owner == service.owner
                    assert expires is not None and expires > datetime.now(UTC)
                await asyncio.sleep(0.1)
        assert fetch.calls == ["slow"]
        # The state the fetch saved while the renewals went on is intact; the lease is released.
        assert fetch.state_seen is not None and fetch.state_seen.etag == '"mid"'
        assert service.store.lease_of("slow") == (None, None)
        service.request_stop()
        assert await task == 0

    run(body)


def test_a_lease_taken_over_is_not_taken_back(
    tmp_path: Path, db_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    lease = 1.0
    fetch = SlowFetch(seconds=2.5)
    service = slow_service(tmp_path, db_url, fetch, lease)
    caplog.set_level(logging.WARNING, logger="aggregator.service")

    async def body() -> None:
        task = asyncio.create_task(service.run())
        await asyncio.wait_for(fetch.running.wait(), 10)
        with open_store(db_url) as rival:
            # The replica stalled past its lease and another one took the source over.
            with rival.engine.begin() as conn:
                conn.execute(
                    sa.text("UPDATE fetch_state SET lease_owner = 'rival', lease_expires = :t"),
                    {"t": datetime.now(UTC) + timedelta(hours=1)},
                )
            await asyncio.sleep(lease)
            assert rival.lease_of("slow")[0] == "rival"
            while service._in_flight:
                await asyncio.sleep(0.05)
            # Finishing its fetch, the first replica leaves the rival's lease alone.
            assert rival.lease_of("slow")[0] == "rival"
        service.request_stop()
        assert await task == 0

    run(body)
    lost = [r for r in caplog.records if "lease on slow lost" in r.getMessage()]
    assert len(lost) == 1  # said once, not at every renewal


# --- reconnecting after PostgreSQL dropped the connections ------------------------------------

postgres_only = pytest.mark.postgres


def _admin_url(db_url: str) -> str:
    return db_url.replace("postgresql+psycopg://", "postgresql://")


def terminate_backends(db_url: str) -> int:
    """What a server restart does to the store: every connection of the database but ours dies."""
    import psycopg

    with psycopg.connect(_admin_url(db_url), autocommit=True) as conn:
        return len(conn.execute(TERMINATE_OTHERS).fetchall())


class KillOnStatement:
    """Terminates the store's own backend just before a matching statement runs, inside its
    transaction: a write interrupted mid-way, as by a server restart."""

    def __init__(
        self, store: Store, db_url: str, prefix: str, times: int, source_id: str | None = None
    ) -> None:
        self.db_url = db_url
        self.prefix = prefix
        self.source_id = source_id  # only statements about this source
        self.left = times
        self.kills = 0
        sa.event.listen(store.engine, "before_cursor_execute", self)

    def __call__(self, conn: Any, cursor: Any, statement: str, params: Any, *args: Any) -> None:
        if self.left <= 0 or not statement.startswith(self.prefix):
            return
        if self.source_id is not None and not _mentions(params, self.source_id):
            return
        self.left -= 1
        self.kills += 1
        import psycopg

        pid = cursor.connection.info.backend_pid
        with psycopg.connect(_admin_url(self.db_url), autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s, 5000)", (pid,))


def _mentions(params: Any, value: str) -> bool:
    """Whether a statement's parameters hold ``value`` (one row, many rows, or a multi-row
    INSERT's renamed parameters)."""
    if isinstance(params, dict):
        return value in params.values()
    if isinstance(params, list | tuple):
        return any(_mentions(p, value) for p in params)
    return False


def seed_records() -> list[Any]:
    from aggregator.store.transfer import read_import

    return [item.record for item in read_import([ROOT / "seeds"], now=NOW).items]


def ingest(store: Store, record: Any) -> Any:
    from aggregator import pipeline
    from aggregator.match import TopicMatcher
    from aggregator.model import DedupOptions, Topic, TopicRules

    # A topic every seed matches: a record matching none is stored in no development.
    matcher = TopicMatcher((Topic("all", "All", TopicRules(any=("the", "a", "of"))),))
    return pipeline.ingest(store, record, matcher=matcher, options=DedupOptions(), now=NOW)


@pytest.fixture
def pg_url(pg_database: str) -> str:
    """The run's PostgreSQL database, emptied (terminating backends is PostgreSQL's)."""
    from tests.conftest import _reset_pg

    _reset_pg(pg_database)
    return pg_database


@postgres_only
def test_store_keeps_working_after_its_connections_are_terminated(pg_url: str) -> None:
    first, *rest = seed_records()
    with open_store(pg_url) as store:
        store.sync_sources(sources("a"), NOW)
        assert ingest(store, first).stored
        with ThreadPoolExecutorish(store) as busy:  # several pooled connections, all idle now
            busy.read_in_parallel(4)
        assert terminate_backends(pg_url) >= 1
        # Reads, an ingest, fetch-state and lease writes: each on a fresh connection.
        assert store.count_records() == 1
        assert store.get_record(first.id) is not None
        assert ingest(store, rest[0]).stored
        assert store.claim_due_sources("one", NOW, 60, 10) == ["a"]
        store.save_fetch_state(FetchState(source_id="a", etag='"x"'))
        assert store.renew_lease("one", "a", NOW, 60)
        assert store.count_records() == 2
        assert store.list_developments()


class ThreadPoolExecutorish:
    """Checks out several pool connections at once (so more than one dies at the restart)."""

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> ThreadPoolExecutorish:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def read_in_parallel(self, n: int) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(n) as pool:
            list(pool.map(lambda _: self.store.count_records(), range(n)))


@postgres_only
def test_an_ingest_interrupted_mid_transaction_is_retried(pg_url: str) -> None:
    records = seed_records()
    with open_store(pg_url) as store:
        killer = KillOnStatement(store, pg_url, "INSERT INTO records", times=2)
        results = [ingest(store, r) for r in records]
        assert killer.kills == 2
        assert all(r.stored for r in results)
        assert store.count_records() == len(records)
        with store.engine.connect() as conn:
            stored = conn.execute(sa.text("SELECT count(DISTINCT id) FROM records")).scalar_one()
        assert stored == len(records)


@postgres_only
def test_a_fetch_state_write_interrupted_mid_transaction_is_retried(
    pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="aggregator.store")
    with open_store(pg_url) as store:
        store.sync_sources(sources("a"), NOW)
        killer = KillOnStatement(store, pg_url, "INSERT INTO fetch_state", times=1)
        store.save_fetch_state(FetchState(source_id="a", etag='"after"', fetch_count=1))
        assert killer.kills == 1
        assert store.get_fetch_state("a").etag == '"after"'
    assert any("saving the fetch state of a" in r.getMessage() for r in caplog.records)


@postgres_only
def test_a_write_that_keeps_failing_fails_cleanly(pg_url: str) -> None:
    from aggregator.errors import StoreError

    first, second, *_ = seed_records()
    with open_store(pg_url) as store:
        killer = KillOnStatement(store, pg_url, "INSERT INTO records", times=100)
        with pytest.raises(StoreError, match=r"administrator command|connection"):
            ingest(store, first)
        assert killer.kills == 5  # every attempt of pipeline.ingest, then a clear error
        killer.left = 0
        # Nothing half-stored; the store goes on.
        assert store.count_records() == 0
        assert store.count_developments() == 0
        assert ingest(store, second).stored
        assert store.count_records() == 1


@postgres_only
def test_the_service_goes_on_through_terminated_connections_and_failed_writes(
    tmp_path: Path, pg_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """The real fetch path against the loopback feed server: one source's ingest keeps losing
    its connection (its fetch fails with a logged error, nothing half-stored), then every
    connection of the service is terminated; the service carries on and the source's next
    fetch stores everything, once."""
    from aggregator.service import Service, ServiceOptions
    from aggregator.settings import Settings
    from benchmarks.feedserver import FeedServerProcess
    from tests.test_service_replicas import duplicates, watchlist

    caplog.set_level(logging.INFO)
    killers: list[KillOnStatement] = []

    def hooked_store(url: str) -> Store:
        store = open_store(url)
        killers.append(KillOnStatement(store, url, "INSERT INTO records", 100, "feed001"))
        return store

    with FeedServerProcess(feeds=3, hosts=1, seed=5) as server:
        config = tmp_path / "watchlist.yaml"
        config.write_text(watchlist(server.urls()))
        settings = Settings(data_dir=tmp_path, db_url=pg_url, config_path=config)
        options = ServiceOptions(serve=False, seeds_dir=None, reload_interval=0.1)
        service = Service(settings, options, open_store=hooked_store)

        async def until(check: Callable[[], bool], timeout: float = 60) -> None:
            deadline = time.monotonic() + timeout
            while not check():
                assert time.monotonic() < deadline, "timed out"
                await asyncio.sleep(0.05)

        async def body() -> None:
            task = asyncio.create_task(service.run())
            await until(lambda: len(service.fetch_log) >= 3 and not service._in_flight)
            failed = service.store.get_fetch_state("feed001")
            assert failed.consecutive_failures == 1 and failed.failure_class == "internal"
            # "terminating connection due to administrator command", or "server closed the
            # connection" when the lost statement was a batch.
            assert "connection" in (failed.last_error or "")
            assert killers[0].kills >= 2  # retried, then given up
            assert per_source(pg_url).get("feed001", 0) == 0  # nothing half-stored
            killers[0].left = 0
            assert terminate_backends(pg_url) >= 1
            with service.store.engine.begin() as conn:
                conn.execute(sa.text("UPDATE fetch_state SET next_fetch = NULL"))
            assert service.scheduler is not None
            service.scheduler.run_now("feed001")
            await until(lambda: len(service.fetch_log) >= 4 and not service._in_flight)
            assert service.store.get_fetch_state("feed001").consecutive_failures == 0
            assert service.state.ready and not service.state.stopping
            service.request_stop()
            assert await task == 0

        run(body)
    counts = per_source(pg_url)
    assert counts["feed000"] > 0 and counts["feed001"] > 0 and counts["feed002"] > 0
    engine = sa.create_engine(pg_url)
    try:
        assert duplicates(engine) == []
    finally:
        engine.dispose()
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert any("feed001" in r.getMessage() for r in errors)


def per_source(url: str) -> dict[str, int]:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                sa.text("SELECT source_id, count(*) FROM records GROUP BY source_id")
            ).all()
    finally:
        engine.dispose()
    return {str(sid): int(n) for sid, n in rows}


# --- one replica on SQLite --------------------------------------------------------------------


def test_a_second_replica_on_sqlite_exits_with_a_clear_error(tmp_path: Path) -> None:
    """``aggregator run`` twice on one SQLite file, as an admin would start them: the second
    exits 1 at once, saying why and what to do; the first keeps serving."""
    from tests.test_service_replicas import free_port

    config = tmp_path / "watchlist.yaml"
    config.write_text(
        'version: 1\ntopics:\n  - id: all\n    title: All\n    rules:\n      any: ["/./"]\n'
        "sources: []\n"
    )
    db = tmp_path / "aggregator.db"
    env = {**os.environ, "AGGREGATOR_DATA_DIR": str(tmp_path), "AGGREGATOR_LOG_FORMAT": "text"}

    def command(port: int) -> list[str]:
        return [
            sys.executable, "-m", "aggregator", "--db", f"sqlite:///{db}", "--config",
            str(config), "run", "--port", str(port), "--no-seeds",
        ]  # fmt: skip

    port = free_port()
    log = tmp_path / "first.log"
    with open(log, "wb") as out:
        first = subprocess.Popen(command(port), cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        deadline = time.monotonic() + 60
        while True:
            assert first.poll() is None, log.read_text()
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    if json.loads(r.read())["ready"]:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "the first replica did not get ready"
            time.sleep(0.2)
        second = subprocess.run(
            command(free_port()), cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
        )
        assert second.returncode == 1
        assert "another aggregator service is already running on this SQLite database" in (
            second.stderr
        )
        assert f"{db}.lock" in second.stderr and f"pid {first.pid}" in second.stderr
        assert "use PostgreSQL" in second.stderr
        assert first.poll() is None  # the first one is untouched
    finally:
        first.terminate()
        first.wait(20)
    assert first.returncode == 0


# --- the operator's view ----------------------------------------------------------------------


def test_sources_command_shows_who_holds_each_lease(
    tmp_path: Path, db_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from aggregator.cli import main as cli_main
    from tests.test_service_run import watchlist_text

    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(["a", "b", "c"]))
    now = datetime.now(UTC)
    with open_store(db_url) as store:
        store.sync_sources(sources("a", "b", "c"), now)
        assert store.claim_due_sources("host1:11:aaaaaa", now, 300, 1) == ["a"]
        # b's owner died: its lease ran out and nobody has taken the source over yet.
        assert store.claim_due_sources("host2:22:bbbbbb", now - timedelta(hours=1), 60, 1) == ["b"]
    args = ["--db", db_url, "--config", str(config), "sources"]
    assert cli_main([*args, "--json"]) == 0
    rows = {row["source"]: row for row in json.loads(capsys.readouterr().out)}
    assert rows["a"]["lease_owner"] == "host1:11:aaaaaa" and rows["a"]["lease_expired"] is False
    assert rows["a"]["lease_expires"] > now.isoformat(timespec="seconds")
    assert rows["b"]["lease_owner"] == "host2:22:bbbbbb" and rows["b"]["lease_expired"] is True
    assert rows["c"]["lease_owner"] is None and rows["c"]["lease_expires"] is None
    assert cli_main(args) == 0
    text = capsys.readouterr().out
    assert "leased by host1:11:aaaaaa until " in text
    assert "leased by host2:22:bbbbbb until " in text and "(expired" in text
    assert text.count("leased by") == 2


def test_sync_sources_with_more_sources_than_bind_parameters(store: Store) -> None:
    """Tens of thousands of sources: more than SQLite accepts as bind parameters of one
    statement (32,766; the same code keeps PostgreSQL's 65,535 from mattering)."""
    many = [
        Source(
            id=f"s{i:06d}", kind=SourceKind.FEED, url=f"https://e.example/{i}", schedule=Schedule()
        )
        for i in range(33_000)
    ]
    store.sync_sources(many, NOW)
    store.sync_sources(many[500:], NOW)  # 500 left the watchlist
    assert len(store.list_sources()) == 32_500
    assert {s.id for s in store.list_sources(include_inactive=True)} >= {"s000000", "s032999"}
    assert len(store.claim_due_sources("one", NOW, 60, 10)) == 10
