"""The candidate query's bounds, on SQLite and PostgreSQL: each LSH band or key term
contributes only its newest hits within the window (``dedup.CANDIDATE_ROWS_PER_KEY``), and one
development fills at most ``dedup.MAX_CANDIDATES_PER_DEVELOPMENT`` of the places."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from aggregator import dedup, records
from aggregator.model import DedupReason, Record
from aggregator.store import Store, open_store

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
WINDOW = timedelta(days=2)


def _record(n: int) -> Record:
    text = f"Report number {n}\n\nBody of report {n}.\n"
    return Record(
        id=records.record_id(f"https://example.org/{n}", text),
        text=text,
        title=f"Report number {n}",
        content_hash=records.content_hash(text),
        url=f"https://example.org/{n}",
        canonical_url=f"https://example.org/{n}",
        guid=None,
        source_id="wire",
        published=None,
        fetched=T0,
        language="en",
        author=None,
    )


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    try:
        yield s
    finally:
        s.close()


def _add(
    store: Store, n: int, when: datetime, *, terms: tuple[str, ...], dev: str | None = None
) -> str:
    rec = _record(n)
    with store.write() as tx:
        tx.add_record(rec, time=when, ingested=when)
        tx.add_fingerprint(rec.id, "{}", bands=(), key_terms=terms, time=when)
        if dev is None:
            dev = tx.create_development(rec.id, first_seen=when)
        tx.add_membership(
            rec.id, dev, reason=DedupReason.NEW, score=1.0, matched_record_id=None, joined=when
        )
    return rec.id


def test_a_common_key_contributes_only_its_newest_hits(store: Store) -> None:
    # 12 records share "paris" (a stop word of the moment); one older record also shares
    # "flood", a rarer key: it must still be found though "paris" has newer hits to spare.
    common = [
        _add(store, i, T0 - timedelta(hours=i), terms=("paris",)) for i in range(1, 13)
    ]  # common[0] is the newest
    rare = _add(store, 99, T0 - timedelta(hours=30), terms=("paris", "flood"))
    with store.write() as tx:
        found = tx.candidates(
            bands=(), key_terms=("paris", "flood"), time=T0, window=WINDOW, cap=200, per_key=5
        )
    # The 5 newest "paris" hits, newest first, then the rare record: its "paris" hit is too
    # old to count, so it shares one key (without the bound: two, and it would rank first).
    assert [c.record_id for c in found] == [*common[:5], rare]
    assert all(c.shared_keys == 1 for c in found)
    with store.write() as tx:
        unbounded = tx.candidates(
            bands=(), key_terms=("paris", "flood"), time=T0, window=WINDOW, cap=200, per_key=100
        )
    assert [c.record_id for c in unbounded] == [rare, *common]
    assert unbounded[0].shared_keys == 2


def test_the_bound_counts_hits_within_the_window_only(store: Store) -> None:
    outside = [_add(store, i, T0 - WINDOW - timedelta(hours=i), terms=("paris",)) for i in (1, 2)]
    inside = [_add(store, i, T0 - timedelta(hours=i), terms=("paris",)) for i in (3, 4)]
    with store.write() as tx:
        found = tx.candidates(
            bands=(), key_terms=("paris",), time=T0, window=WINDOW, cap=200, per_key=3
        )
    assert [c.record_id for c in found] == inside
    assert not set(outside) & {c.record_id for c in found}


def test_the_default_bound_and_the_cap(store: Store) -> None:
    ids = [_add(store, i, T0 - timedelta(minutes=i), terms=("paris",)) for i in range(1, 4)]
    with store.write() as tx:
        default = tx.candidates(bands=(), key_terms=("paris",), time=T0, window=WINDOW, cap=200)
        capped = tx.candidates(bands=(), key_terms=("paris",), time=T0, window=WINDOW, cap=2)
    assert dedup.CANDIDATE_ROWS_PER_KEY >= 3
    assert [c.record_id for c in default] == ids
    assert [c.record_id for c in capped] == ids[:2]


def test_a_busy_development_fills_at_most_its_share_of_the_places(store: Store) -> None:
    # A busy story: 8 reports sharing two keys with the new record; a smaller development of
    # the same kind shares one key. With 3 places per development, the smaller one is found
    # though the busy story alone would fill the cap.
    busy = [_add(store, 1, T0 - timedelta(minutes=1), terms=("quake", "chile"))]
    with store.write() as tx:
        busy_dev = tx.development_of(busy[0])
    assert busy_dev is not None
    busy += [
        _add(store, i, T0 - timedelta(minutes=i), terms=("quake", "chile"), dev=busy_dev)
        for i in range(2, 9)
    ]
    small = [_add(store, i, T0 - timedelta(hours=i), terms=("quake",)) for i in (20, 21)]
    with store.write() as tx:
        found = tx.candidates(
            bands=(), key_terms=("quake", "chile"), time=T0, window=WINDOW, cap=5, per_development=3
        )
        unbounded = tx.candidates(
            bands=(),
            key_terms=("quake", "chile"),
            time=T0,
            window=WINDOW,
            cap=5,
            per_development=99,
        )
    assert [c.record_id for c in found] == [*busy[:3], *small]
    assert [c.record_id for c in unbounded] == busy[:5]
    assert [c.shared_keys for c in found] == [2, 2, 2, 1, 1]


def test_select_candidates_is_the_query_s_selection() -> None:
    ranked = [("a1", "A"), ("a2", "A"), ("b1", "B"), ("a3", "A"), ("c1", "C"), ("b2", "B")]
    pick = dedup.select_candidates(ranked, lambda hit: hit[1], cap=4, per_development=2)
    assert pick == [("a1", "A"), ("a2", "A"), ("b1", "B"), ("c1", "C")]
    assert dedup.select_candidates(ranked, lambda hit: hit[1], cap=2) == ranked[:2]
    assert dedup.select_candidates([], lambda hit: hit[1]) == []
