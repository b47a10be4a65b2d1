"""aggregator.profile: stage times add up, nest, stay per task, and cost nothing when off."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator

import pytest

from aggregator import profile


@pytest.fixture(autouse=True)
def _off() -> Iterator[None]:
    profile.disable()
    yield
    profile.disable()


def test_off_by_default_records_nothing() -> None:
    with profile.stage("parse"):
        pass
    profile.add("parse", 1.0)
    assert profile.snapshot() == {}
    assert profile.active() is None


def test_nested_stage_time_counts_for_the_inner_stage_only() -> None:
    profile.enable()
    with profile.stage("store"):
        time.sleep(0.02)
        with profile.stage("dedup"):
            time.sleep(0.05)
    snap = profile.snapshot()
    assert snap["dedup"].calls == 1 and snap["store"].calls == 1
    assert snap["dedup"].seconds >= 0.05
    assert 0.02 <= snap["store"].seconds < 0.05


def _spin(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_cpu_time_is_the_threads_own_and_nests_like_wall_time() -> None:
    profile.enable()
    with profile.stage("store"):
        time.sleep(0.05)  # waiting: wall time, no CPU
        _spin(0.03)
        with profile.stage("dedup"):
            _spin(0.06)
    snap = profile.snapshot()
    assert snap["dedup"].cpu >= 0.06
    assert 0.03 <= snap["store"].cpu < 0.06  # the nested stage's CPU is not the store's
    assert snap["store"].seconds >= 0.08  # the sleep counts in wall time only
    assert snap["store"].seconds - snap["store"].cpu >= 0.04


def test_add_and_reset() -> None:
    times = profile.enable()
    assert profile.enable() is times  # idempotent
    profile.add("parse", 0.5, calls=3)
    profile.add("parse", 0.25)
    assert profile.snapshot()["parse"] == profile.StageTotal(0.75, 4)
    times.reset()
    assert profile.snapshot() == {}


def test_tasks_started_inside_a_stage_do_not_eat_its_time() -> None:
    profile.enable()

    async def job() -> None:
        with profile.stage("fetch"):
            await asyncio.sleep(0.03)

    async def main() -> None:
        with profile.stage("cycle"):
            await asyncio.gather(*(job() for _ in range(4)))

    asyncio.run(main())
    snap = profile.snapshot()
    assert snap["fetch"].calls == 4 and snap["fetch"].seconds >= 0.12  # overlapping waits add up
    assert snap["cycle"].seconds >= 0.03


def test_threads_add_safely() -> None:
    profile.enable()

    def work() -> None:
        for _ in range(2000):
            with profile.stage("match"):
                pass

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert profile.snapshot()["match"].calls == 8000
