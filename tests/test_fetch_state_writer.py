"""The fetch cycle's group commit of fetch states (``cycle.FetchStateWriter``): every queued
state is written, together, with its lease ended; a failing one costs only itself."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime

import pytest

from aggregator.cycle import FetchStateWriter
from aggregator.errors import StoreError
from aggregator.model import FetchState, Schedule, Source, SourceKind
from aggregator.store import Store, open_store

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def source(sid: str) -> Source:
    return Source(sid, SourceKind.FEED, f"https://{sid}.example/feed", Schedule(600))


class SpyStore(Store):
    """A real store that records the size of each batch of fetch states it is asked to save."""

    def __init__(self, store: Store) -> None:
        super().__init__(store.engine)
        self.batches: list[list[str]] = []

    def save_fetch_states(
        self, states: Sequence[FetchState], *, release_owner: str | None = None
    ) -> None:
        self.batches.append([s.source_id for s in states])
        super().save_fetch_states(states, release_owner=release_owner)


@pytest.fixture
def store(db_url: str) -> Iterator[SpyStore]:
    with open_store(db_url) as s:
        ids = [f"s{i:02d}" for i in range(10)]
        s.sync_sources([source(i) for i in ids])
        assert s.claim_due_sources("cycle", NOW, 300, 10) == ids
        yield SpyStore(s)


def states(n: int) -> list[FetchState]:
    return [
        FetchState(f"s{i:02d}", etag=f'"{i}"', last_success=NOW, fetch_count=1) for i in range(n)
    ]


async def save_all(writer: FetchStateWriter, batch: Sequence[FetchState]) -> list[object]:
    results = await asyncio.gather(
        *(writer.save(s, "cycle") for s in batch), return_exceptions=True
    )
    return list(results)


def test_states_saved_at_once_share_transactions(store: SpyStore) -> None:
    batch = states(10)
    results = asyncio.run(save_all(FetchStateWriter(store, max_batch=4), batch))
    assert results == [None] * 10
    # Queued in one turn of the loop: groups of at most 4, in order.
    assert [len(b) for b in store.batches] == [4, 4, 2]
    assert [i for b in store.batches for i in b] == [s.source_id for s in batch]
    assert store.get_fetch_states([s.source_id for s in batch]) == {s.source_id: s for s in batch}
    assert store.list_leases() == {}  # every lease ended with its state


def test_a_failing_state_does_not_lose_the_others(store: SpyStore) -> None:
    batch = states(5)
    # fetch_count is NOT NULL: this state cannot be written.
    batch[2] = FetchState("s02", fetch_count=None)  # type: ignore[arg-type]
    results = asyncio.run(save_all(FetchStateWriter(store), batch))
    assert isinstance(results[2], StoreError)
    assert [r for i, r in enumerate(results) if i != 2] == [None] * 4
    saved = store.get_fetch_states([s.source_id for s in batch])
    for i in (0, 1, 3, 4):
        assert saved[f"s{i:02d}"] == batch[i]
    assert saved["s02"] == FetchState("s02")  # untouched
    # The others' leases ended; the failed one's stays for the caller to release.
    assert set(store.list_leases()) == {"s02", *(f"s{i:02d}" for i in range(5, 10))}


def test_saves_arriving_while_a_batch_commits_go_in_the_next(store: SpyStore) -> None:
    batch = states(6)

    async def go() -> None:
        writer = FetchStateWriter(store)
        first = asyncio.ensure_future(writer.save(batch[0], "cycle"))
        await asyncio.sleep(0)  # the writer has started its first transaction
        await asyncio.sleep(0)
        rest = [asyncio.ensure_future(writer.save(s, "cycle")) for s in batch[1:]]
        await asyncio.gather(first, *rest)

    asyncio.run(go())
    assert sorted(i for b in store.batches for i in b) == [s.source_id for s in batch]
    assert len(store.batches) < len(batch)
    assert store.get_fetch_states([s.source_id for s in batch]) == {s.source_id: s for s in batch}


def test_states_without_a_lease_owner_keep_the_lease(store: SpyStore) -> None:
    async def go() -> None:
        writer = FetchStateWriter(store)
        await asyncio.gather(writer.save(states(1)[0], None), writer.save(states(2)[1], "cycle"))

    asyncio.run(go())
    assert store.batches == [["s00"], ["s01"]]  # one transaction per owner
    assert store.lease_of("s00")[0] == "cycle" and store.lease_of("s01") == (None, None)


def test_waiters_get_the_error_when_the_cycle_thread_is_gone(
    store: SpyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aggregator import cycle

    async def gone(*args: object) -> None:
        raise RuntimeError("cannot schedule new futures after shutdown")

    monkeypatch.setattr(cycle, "off_loop", gone)
    results = asyncio.run(save_all(FetchStateWriter(store), states(3)))
    assert all(isinstance(r, RuntimeError) for r in results)
    assert store.batches == []
