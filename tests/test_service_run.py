"""The service's scheduling, claiming, reload and shutdown, in process, on the real store.

The fetch itself is replaced by a function that counts calls (the fetch layer has its own
tests); everything else is real: watchlist loader, store (SQLite and PostgreSQL), APScheduler.
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import textwrap
from collections import Counter
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from aggregator.model import FailureClass, Source
from aggregator.service import Service, ServiceOptions
from aggregator.settings import Settings
from aggregator.store import open_store

SEEDS = Path(__file__).resolve().parent.parent / "seeds"

HEADER = """\
version: 1
defaults:
  schedule: {every: 30m}
topics:
  - id: border
    title: Border
    rules:
      any: [border*]
sources:
"""


def watchlist_text(ids: list[str], every: str = "30m") -> str:
    body = "".join(
        f"  - id: {sid}\n    kind: feed\n    url: https://example.org/{sid}.rss\n"
        f"    schedule: {{every: {every}}}\n"
        for sid in ids
    )
    return HEADER + body


def settings_for(tmp_path: Path, db_url: str, config: Path) -> Settings:
    return Settings(data_dir=tmp_path, db_url=db_url, config_path=config)


class FakeFetch:
    """Counts fetches per source; ``slow`` sleeps, ``failing`` backs off like the fetch layer."""

    def __init__(self, delay: float = 0.02, slow: float = 30.0) -> None:
        self.calls: Counter[str] = Counter()
        self.delay = delay
        self.slow = slow
        self.failing: set[str] = set()
        self.slow_ids: set[str] = set()
        self.crashing: set[str] = set()
        self.started: asyncio.Event | None = None

    async def __call__(self, service: Service, source: Source, fetcher: Any, now: datetime) -> Any:
        self.calls[source.id] += 1
        if self.started is not None:
            self.started.set()
        await asyncio.sleep(self.slow if source.id in self.slow_ids else self.delay)
        if source.id in self.crashing:
            raise RuntimeError("a bug in the fetch layer")
        if source.id in self.failing:
            state = service.store.get_fetch_state(source.id)
            service.store.save_fetch_state(
                dataclasses.replace(
                    state,
                    next_fetch=now + timedelta(hours=2),
                    consecutive_failures=state.consecutive_failures + 1,
                    failure_class=FailureClass.TIMEOUT,
                    last_error="timed out",
                )
            )
            return {"failure_class": "timeout", "error": "timed out"}
        return {"status": 200, "new_records": 0}


def make_service(settings: Settings, fetch: FakeFetch, **options: Any) -> Service:
    opts = ServiceOptions(serve=False, seeds_dir=None, reload_interval=0.1, **options)
    return Service(settings, opts, fetch_one=fetch, make_fetcher=lambda policy: object())


async def until(check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.02)


def run(body: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(body())


def test_each_source_fetched_once_then_not_due_and_backoff_moves_the_job(
    tmp_path: Path, db_url: str
) -> None:
    config = tmp_path / "watchlist.yaml"
    ids = [f"s{i}" for i in range(6)] + ["bad"]
    config.write_text(watchlist_text(ids))
    fetch = FakeFetch()
    fetch.failing.add("bad")
    service = make_service(settings_for(tmp_path, db_url, config), fetch)

    async def body() -> None:
        task = asyncio.create_task(service.run())
        await until(lambda: len(service.fetch_log) >= len(ids))
        await asyncio.sleep(0.2)
        assert dict(fetch.calls) == dict.fromkeys(ids, 1)
        assert service.scheduler is not None
        # Woken again before its time: not due, not fetched twice.
        service.scheduler.run_now("s0")
        await asyncio.sleep(0.3)
        assert fetch.calls["s0"] == 1
        # Stored next_fetch follows the schedule, so no other replica fetches it either.
        state = service.store.get_fetch_state("s0")
        assert state.next_fetch is not None
        assert state.next_fetch > datetime.now(UTC) + timedelta(minutes=29)
        # The failing source's job moved to the fetch layer's backoff time.
        next_bad = service.scheduler.next_run("bad")
        assert next_bad is not None
        assert next_bad > datetime.now(UTC) + timedelta(hours=1, minutes=59)
        assert service.state.last_cycle is not None
        assert service._failing_sources() == ["bad"]
        service.request_stop()
        assert await task == 0

    run(body)
    text = service.metrics.registry.get_sample_value
    assert text("aggregator_fetches_total", {"result": "ok"}) == 6
    assert text("aggregator_fetches_total", {"result": "timeout"}) == 1
    assert (text("aggregator_fetches_total", {"result": "not-due"}) or 0) >= 1


def test_hot_reload_adds_removes_and_refuses_broken_edits(tmp_path: Path, db_url: str) -> None:
    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(["a", "b"]))
    fetch = FakeFetch()
    service = make_service(settings_for(tmp_path, db_url, config), fetch)

    async def body() -> None:
        task = asyncio.create_task(service.run())
        await until(lambda: len(service.fetch_log) == 2)
        config.write_text(watchlist_text(["a", "c"]))
        await until(lambda: fetch.calls["c"] == 1)
        assert set(service.sources) == {"a", "c"}
        assert service.scheduler is not None
        assert service.scheduler.source_ids == {"a", "c"}

        # Line 5 holds the bad value; the last good watchlist stays in force.
        config.write_text(watchlist_text(["a", "c"]).replace("version: 1", "version: 1\nbogus: 3"))
        await until(lambda: bool(service.state.watchlist_errors))
        problem = service.state.watchlist_errors[0]
        assert problem.startswith(f"{config}:2:"), problem
        assert set(service.sources) == {"a", "c"}

        config.write_text(watchlist_text(["a", "c", "d"]))
        await until(lambda: fetch.calls["d"] == 1)
        assert service.state.watchlist_errors == ()
        service.request_stop()
        assert await task == 0

    run(body)
    assert fetch.calls["b"] == 1


def test_sighup_reloads_at_once(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'aggregator.db'}"
    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(["a"]))
    fetch = FakeFetch()
    opts = ServiceOptions(serve=False, seeds_dir=None, reload_interval=3600)
    service = Service(
        settings_for(tmp_path, db_url, config), opts, fetch_one=fetch, make_fetcher=lambda p: 0
    )

    async def body() -> None:
        task = asyncio.create_task(service.run())
        await until(lambda: fetch.calls["a"] == 1)
        config.write_text(watchlist_text(["a", "b"]))
        await asyncio.sleep(0.2)
        assert "b" not in service.sources  # the poll is an hour away
        os.kill(os.getpid(), signal.SIGHUP)
        await until(lambda: fetch.calls["b"] == 1)
        service.request_stop()
        assert await task == 0

    run(body)


def test_a_changed_fetch_policy_gets_a_new_fetcher(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'aggregator.db'}"
    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(["a"]))
    made: list[Any] = []
    closed: list[Any] = []

    class Fetcher:
        def __init__(self, policy: Any) -> None:
            self.policy = policy
            made.append(self)

        async def aclose(self) -> None:
            closed.append(self)

    fetch = FakeFetch()
    opts = ServiceOptions(serve=False, seeds_dir=None, reload_interval=0.1)
    service = Service(
        settings_for(tmp_path, db_url, config), opts, fetch_one=fetch, make_fetcher=Fetcher
    )

    async def body() -> None:
        task = asyncio.create_task(service.run())
        await until(lambda: fetch.calls["a"] == 1)
        config.write_text(
            watchlist_text(["a"]).replace("version: 1", "version: 1\nfetch:\n  retries: 0")
        )
        await until(lambda: len(made) == 2 and closed == made[:1])
        assert service.fetcher is made[1]
        assert made[1].policy.retries == 0
        service.request_stop()
        assert await task == 0

    run(body)
    assert closed == made


def test_a_crashing_fetch_is_recorded_and_the_service_goes_on(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'aggregator.db'}"
    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(["boom", "fine"]))
    fetch = FakeFetch()
    fetch.crashing.add("boom")
    service = make_service(settings_for(tmp_path, db_url, config), fetch)

    async def body() -> None:
        task = asyncio.create_task(service.run())
        await until(lambda: len(service.fetch_log) == 2)
        state = service.store.get_fetch_state("boom")
        assert state.failure_class == FailureClass.INTERNAL
        assert state.consecutive_failures == 1
        assert "a bug in the fetch layer" in (state.last_error or "")
        assert service._failing_sources() == ["boom"]
        service.request_stop()
        assert await task == 0

    run(body)


def test_shutdown_cancels_slow_fetches_at_the_deadline_and_releases_leases(
    tmp_path: Path,
) -> None:
    db_url = f"sqlite:///{tmp_path / 'aggregator.db'}"
    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(["quick", "slow"]))
    fetch = FakeFetch()
    fetch.slow_ids.add("slow")
    service = make_service(settings_for(tmp_path, db_url, config), fetch, shutdown_timeout=0.3)

    async def body() -> None:
        task = asyncio.create_task(service.run())
        await until(lambda: fetch.calls["slow"] == 1 and fetch.calls["quick"] == 1)
        await asyncio.sleep(0.1)
        service.request_stop()
        assert await asyncio.wait_for(task, 5) == 0

    run(body)
    assert (
        service.metrics.registry.get_sample_value(
            "aggregator_fetches_total", {"result": "cancelled"}
        )
        == 1
    )
    store = open_store(db_url)
    try:
        assert store.lease_of("slow") == (None, None)
    finally:
        store.close()


@pytest.mark.postgres
def test_two_replicas_share_the_sources(tmp_path: Path, pg_database: str) -> None:
    from tests.conftest import _reset_pg

    _reset_pg(pg_database)
    config = tmp_path / "watchlist.yaml"
    ids = [f"src{i:02d}" for i in range(30)]
    config.write_text(watchlist_text(ids))
    fetch = FakeFetch(delay=0.05)
    settings = settings_for(tmp_path, pg_database, config)
    a = make_service(settings, fetch, max_concurrent_sources=4)
    b = make_service(settings, fetch, max_concurrent_sources=4)

    async def body() -> None:
        tasks = [asyncio.create_task(a.run()), asyncio.create_task(b.run())]
        await until(lambda: len(a.fetch_log) + len(b.fetch_log) >= len(ids))
        await asyncio.sleep(0.3)
        a.request_stop()
        b.request_stop()
        assert await asyncio.gather(*tasks) == [0, 0]

    run(body)
    assert dict(fetch.calls) == dict.fromkeys(ids, 1)  # each source fetched exactly once
    assert a.fetch_log and b.fetch_log  # and both replicas did work


def test_second_service_on_the_same_sqlite_file_is_refused(tmp_path: Path) -> None:
    from aggregator.service.lifecycle import ReplicaLockError

    db_url = f"sqlite:///{tmp_path / 'aggregator.db'}"
    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(["a"]))
    first = make_service(settings_for(tmp_path, db_url, config), FakeFetch())
    second = make_service(settings_for(tmp_path, db_url, config), FakeFetch())

    async def body() -> None:
        task = asyncio.create_task(first.run())
        await until(lambda: first.state.ready)
        with pytest.raises(ReplicaLockError, match="already running on this SQLite database"):
            await second.run()
        first.request_stop()
        assert await task == 0

    run(body)


def test_seeds_imported_on_first_start_only(tmp_path: Path) -> None:
    db_url = f"sqlite:///{tmp_path / 'aggregator.db'}"
    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(["a"]))
    settings = settings_for(tmp_path, db_url, config)

    def start_once() -> int:
        opts = ServiceOptions(serve=False, seeds_dir=SEEDS, once=True)
        service = Service(settings, opts, fetch_one=FakeFetch(), make_fetcher=lambda p: object())
        assert asyncio.run(service.run()) == 0
        store = open_store(db_url)
        try:
            return store.count_records()
        finally:
            store.close()

    assert start_once() == 5
    assert start_once() == 5


def test_retention_job_prunes_old_developments(tmp_path: Path) -> None:
    from aggregator import pipeline, records
    from aggregator.match import TopicMatcher
    from aggregator.model import DedupOptions, Record
    from aggregator.watchlist import load_watchlist

    db_url = f"sqlite:///{tmp_path / 'aggregator.db'}"
    config = tmp_path / "watchlist.yaml"
    config.write_text(watchlist_text(["a"]) + "retention_days: 30\n")
    store = open_store(db_url)
    matcher = TopicMatcher(load_watchlist(config).topics)
    for age_days, title in ((400, "Old border story"), (1, "New border story")):
        when = datetime.now(UTC) - timedelta(days=age_days)
        text = records.compose(title, f"{title}: the lead about the border.", ())
        url = f"https://example.org/{age_days}"
        record = Record(
            id=records.record_id(url, text),
            text=text,
            title=title,
            content_hash=records.content_hash(text),
            url=url,
            canonical_url=url,
            published=when,
            fetched=when,
        )
        pipeline.ingest(store, record, matcher=matcher, options=DedupOptions(), now=when)
    store.close()
    service = make_service(settings_for(tmp_path, db_url, config), FakeFetch())

    async def body() -> None:
        task = asyncio.create_task(service.run())
        await until(lambda: service.state.ready)
        await service._retention()
        service.request_stop()
        assert await task == 0

    run(body)
    assert service.metrics.registry.get_sample_value("aggregator_pruned_total") == 1
    store = open_store(db_url)
    try:
        assert [d.title for d in store.list_developments()] == ["New border story"]
    finally:
        store.close()


def test_invalid_watchlist_at_start_is_fatal_with_line(tmp_path: Path) -> None:
    from aggregator.errors import ConfigError

    config = tmp_path / "watchlist.yaml"
    config.write_text(textwrap.dedent(HEADER) + "  - id: x\n    kind: nope\n    url: h\n")
    service = make_service(
        settings_for(tmp_path, f"sqlite:///{tmp_path / 'a.db'}", config), FakeFetch()
    )
    with pytest.raises(ConfigError) as exc:
        asyncio.run(service.run())
    assert f"{config}:" in str(exc.value)
