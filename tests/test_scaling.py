"""Scaling out (issue 8): lease renewal, reconnecting after the database dropped the store's
connections, the operator's view of leases, and the one-replica rule on SQLite.

The reconnect tests terminate the store's own PostgreSQL backends with ``pg_terminate_backend``
from an admin connection (what a server restart does to a client), never restarting the shared
server; each test has a database of its own (the ``db_url`` fixture).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

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
