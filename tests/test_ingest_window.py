"""The ingest window and decider without a database (compact fingerprints, candidate ranking,
the memory bound), and with one: replicas catch up from the store under the ingest lock and
decide as one process would; a window is rebuilt after records move outside ingest."""

from __future__ import annotations

import json
import math
import random
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator import dedup, records
from aggregator.ingest.prepare import dedup_text
from aggregator.ingest.window import Vocabulary, Window, key_hashes, pack, pack_json, unpack
from aggregator.ingest_driver import split_record
from aggregator.match import TopicMatcher
from aggregator.model import DedupOptions, DedupReason, IngestOptions, Record, Topic, TopicRules
from aggregator.pipeline import IngestResult, ingest_many
from aggregator.store import Store, open_store

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ARTICLES = Path(__file__).resolve().parent.parent / "benchmarks/data/multilingual/articles.jsonl"
TOPICS = (Topic("all", "All", TopicRules(any=("the", "a", "в", "ir"))),)
OPTIONS = DedupOptions()


def _articles(n: int = 40) -> list[Record]:
    out = []
    lines = ARTICLES.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(lines[:n]):
        art = json.loads(line)
        text = f"{art['title']}\n\n{art['text']}\n"
        out.append(
            Record(
                id=records.record_id(None, text),
                text=text,
                title=art["title"],
                content_hash=records.content_hash(text),
                fetched=NOW - timedelta(hours=n - i),
                language=art.get("lang"),
            )
        )
    return out


def _fp(rec: Record) -> dedup.Fingerprint:
    return dedup.fingerprint(rec.title, dedup_text(rec), rec.language)


def test_compact_fingerprints_give_back_the_fingerprint() -> None:
    vocab = Vocabulary()
    sizes = []
    for rec in _articles(20):
        fp = _fp(rec)
        packed = pack(fp, vocab)
        sizes.append(len(packed))
        assert unpack(packed, vocab) == fp
        assert unpack(packed, vocab).vector() == fp.vector()
        # Decoded weights are shared float objects, not 24 bytes each per fingerprint.
        one, two = unpack(packed, vocab).weights, unpack(packed, vocab).weights
        assert all(a is b for a, b in zip(one, two, strict=True))
    # Term ids and weights in 4-byte arrays, the MinHash in 256 bytes: far below the JSON.
    assert max(sizes) < 4000
    odd = dedup.Fingerprint(
        minhash=(1, 2), bands=("x",), key_terms=(), terms=("a",), weights=(0.1234567,)
    )
    assert unpack(pack(odd, vocab), vocab) == odd  # weights that are not 5-place decimals


def test_a_window_rebuild_packs_straight_from_the_stored_json() -> None:
    vocab = Vocabulary()
    for rec in _articles(20):
        fp = _fp(rec)
        found = pack_json(dedup.fingerprint_to_json(fp), vocab)
        assert found is not None
        assert unpack(found[0], vocab) == fp and found[1] == key_hashes(fp)
    assert pack_json('{"terms": ["a"]}', vocab) is None  # versions 1 and 2: parsed, then packed
    assert pack_json("{", vocab) is None


def _window(tuning: IngestOptions | None = None) -> Window:
    return Window("test", tuning or IngestOptions(), OPTIONS.window_days)


def test_candidates_rank_by_shared_keys_then_time_with_bounds() -> None:
    def fp(*terms: str) -> dedup.Fingerprint:
        return dedup.Fingerprint(minhash=(), bands=(), key_terms=terms)

    w = _window(IngestOptions(max_candidates=3, candidates_per_development=2, rank_by_rarity=False))
    w.add("r1", "d1", NOW - timedelta(hours=5), 1, fp("orla", "avery"))
    w.add("r2", "d1", NOW - timedelta(hours=4), 2, fp("orla", "avery"))
    w.add("r3", "d1", NOW - timedelta(hours=3), 3, fp("orla", "avery"))
    w.add("r4", "d2", NOW - timedelta(hours=2), 4, fp("orla"))
    w.add("r5", "d3", NOW - timedelta(hours=1), 5, fp("orla", "avery"))
    w.add("old", "d4", NOW - timedelta(days=30), 6, fp("orla", "avery"))  # outside the window
    found = list(w.candidates(fp("orla", "avery"), NOW).record_ids)
    # Two keys shared, newest first, at most two of d1; then one key; at most three in all.
    assert found == ["r5", "r3", "r2"]
    narrow = _window(IngestOptions(candidate_hits_per_key=1))
    for i, rid in enumerate(("r1", "r2")):
        narrow.add(rid, f"d{i}", NOW - timedelta(hours=2 - i), i, fp("orla"))
    assert list(narrow.candidates(fp("orla"), NOW).record_ids) == ["r2"]  # newest hit only


def test_rank_by_rarity_puts_a_rare_shared_key_before_common_ones() -> None:
    def fp(*terms: str) -> dedup.Fingerprint:
        return dedup.Fingerprint(minhash=(), bands=(), key_terms=terms)

    def ranked(tuning: IngestOptions) -> list[str]:
        w = _window(tuning)
        for i in range(10):  # "storm" and "coast" held by ten records each
            w.add(f"c{i}", f"d{i}", NOW - timedelta(hours=i + 1), i + 1, fp("storm", "coast"))
        w.add("rare", "dr", NOW - timedelta(hours=20), 20, fp("kessler"))
        return list(w.candidates(fp("storm", "coast", "kessler"), NOW).record_ids)[:2]

    # By keys shared: two common keys beat one rare; by rarity (log(1 + 64 / df) each, in
    # thousandths: 2 x 2001 against 4174) the record sharing the rare name comes first.
    assert ranked(IngestOptions(rank_by_rarity=False)) == ["c0", "c1"]
    assert ranked(IngestOptions(rank_by_rarity=True)) == ["rare", "c0"]


def test_the_memory_bound_drops_the_oldest_records() -> None:
    w = _window(IngestOptions(window_max_records=5))
    for i, rec in enumerate(_articles(12)):
        assert rec.fetched is not None
        w.add(rec.id, f"d{i}", rec.fetched, i + 1, _fp(rec))
        w.evict(NOW)
        assert len(w) <= 5
    assert w.capped and w.covers(NOW - timedelta(days=300))
    assert set(w.record_ids()) == {r.id for r in _articles(12)[-5:]}


def _reference(
    held: dict[str, tuple[str, datetime, tuple[str, ...]]],
    keys: tuple[str, ...],
    time: datetime,
    tuning: IngestOptions,
) -> list[str]:
    """The store's candidate query, spelled out: per key its newest hits within the dedup
    window (ties: greater id), then most keys shared (or their rarity), newest, smallest id,
    with the caps."""
    window = timedelta(days=OPTIONS.window_days)
    shared: Counter[str] = Counter()
    n = tuning.candidate_hits_per_key
    for key in keys:
        hits = sorted(
            ((t, rid) for rid, (_, t, ks) in held.items() if key in ks and abs(t - time) <= window),
            reverse=True,
        )
        weight = round(1000 * math.log1p(n / max(1, len(hits)))) if tuning.rank_by_rarity else 1
        for _, rid in hits[:n]:
            shared[rid] += weight
    ranked = sorted(shared, key=lambda rid: (-shared[rid], -held[rid][1].timestamp(), rid))
    out: list[str] = []
    per_dev: Counter[str] = Counter()
    for rid in ranked:
        dev = held[rid][0]
        if len(out) < tuning.max_candidates and per_dev[dev] < tuning.candidates_per_development:
            per_dev[dev] += 1
            out.append(rid)
    return out


@pytest.mark.parametrize("rarity", [False, True])
def test_candidates_stay_those_of_the_query_through_merges_drops_and_compaction(
    rarity: bool,
) -> None:
    """Random adds, replacements and evictions, with the postings merged and the slots
    compacted often: every ranking equals the reference's."""
    rng = random.Random(7)
    tuning = IngestOptions(
        rank_by_rarity=rarity,
        max_candidates=6,
        candidates_per_development=2,
        candidate_hits_per_key=4,
        window_max_records=60,
        window_merge_postings=16,
        window_compact_after=8,
    )
    w = _window(tuning)
    held: dict[str, tuple[str, datetime, tuple[str, ...]]] = {}
    words = [f"w{i}" for i in range(12)]
    now = NOW - timedelta(days=30)
    for step in range(600):
        now += timedelta(hours=rng.choice((0, 0, 1, 3)))  # equal times are common
        keys = tuple(rng.sample(words, rng.randint(1, 4)))
        rid = f"r{rng.randrange(400):03d}"  # sometimes a record held already (replaced)
        dev = f"d{rng.randrange(40)}"
        when = now - timedelta(hours=rng.randrange(0, 48))
        fp = dedup.Fingerprint(minhash=(), bands=(), key_terms=keys)
        w.add(rid, dev, when, step + 1, fp)
        held[rid] = (dev, when, keys)
        if step % 7 == 0:
            w.evict(now)
            limit = now - 2 * timedelta(days=OPTIONS.window_days)
            for r in [r for r, v in held.items() if v[1] < limit]:
                del held[r]
            while len(held) > tuning.window_max_records:
                del held[min(held, key=lambda r: (held[r][1], r))]
            assert set(w.record_ids()) == set(held)
        query = tuple(rng.sample(words, 3))
        fp = dedup.Fingerprint(minhash=(), bands=(), key_terms=query)
        found = w.candidates(fp, now)
        assert list(found.record_ids) == _reference(held, query, now, tuning), step
        window = timedelta(days=OPTIONS.window_days)
        # Each one's development's records held within the dedup window of ``now``.
        for dev, found_size in zip(found.development_ids, found.development_sizes, strict=True):
            size = sum(1 for d, t, _ in held.values() if d == dev and abs(t - now) <= window)
            assert found_size == size, step


def _results(store: Store, recs: list[Record], size: int) -> list[IngestResult]:
    out: list[IngestResult] = []
    for start in range(0, len(recs), size):
        chunk = recs[start : start + size]
        out += ingest_many(store, chunk, matcher=TopicMatcher(TOPICS), options=OPTIONS, now=NOW)
    return out


def test_replicas_catch_up_from_the_store_and_decide_as_one_process(
    db_url: str, tmp_path: Path
) -> None:
    recs = _articles(40)
    single = open_store(f"sqlite:///{tmp_path}/single.db")
    try:
        expected = _results(single, recs, 4)
    finally:
        single.close()
    assert any(r.reason is not DedupReason.NEW for r in expected)  # joins are exercised
    # Two "replicas" (each its own Store, so its own window) take turns on one database: each
    # batch is decided after catching up with the other's records.
    replicas = [open_store(db_url), open_store(db_url, migrate=False)]
    try:
        got: list[IngestResult] = []
        for i, start in enumerate(range(0, len(recs), 4)):
            got += _results(replicas[i % 2], recs[start : start + 4], 4)
    finally:
        for s in replicas:
            s.close()
    assert got == expected


def test_an_import_of_old_records_keeps_them_in_the_window_between_batches(
    db_url: str, tmp_path: Path
) -> None:
    # Filed a year before the clock: eviction goes by the batch's newest time, not the clock's,
    # or every batch would drop what it stored and the next one read it back from the store.
    from dataclasses import replace

    from aggregator.ingest_driver import _window_for

    recs = [replace(r, fetched=(r.fetched or NOW) - timedelta(days=365)) for r in _articles(40)]
    single = open_store(f"sqlite:///{tmp_path}/single.db")
    try:
        expected = _results(single, recs, 40)
    finally:
        single.close()
    s = open_store(db_url)
    try:
        assert _results(s, recs, 8) == expected  # the same decisions, batch by batch
        held = _window_for(s, OPTIONS, IngestOptions()).window
        assert len(held) == sum(1 for r in expected if r.stored and r.development_id)
    finally:
        s.close()


def test_a_rebuild_reads_only_the_newest_records_the_memory_bound_keeps(
    db_url: str, tmp_path: Path
) -> None:
    from aggregator.ingest_driver import _catch_up

    tuning = IngestOptions(window_max_records=10)
    recs = _articles(40)

    def run(s: Store, part: list[Record]) -> list[IngestResult]:
        out: list[IngestResult] = []
        for start in range(0, len(part), 5):
            chunk = part[start : start + 5]
            out += ingest_many(
                s, chunk, matcher=TopicMatcher(TOPICS), options=OPTIONS, now=NOW, tuning=tuning
            )
        return out

    single = open_store(f"sqlite:///{tmp_path}/single.db")
    try:
        expected = run(single, recs)
    finally:
        single.close()
    first = open_store(db_url)
    try:
        got = run(first, recs[:30])
    finally:
        first.close()
    restarted = open_store(db_url, migrate=False)
    try:
        # A window built afresh holds the newest 10 of the 30 stored, never all of them.
        window = Window(restarted.instance, tuning, OPTIONS.window_days)
        with restarted.write() as tx:
            _catch_up(tx, window, (), NOW)
        held = [r.record_id for r in expected[:30] if r.stored and r.development_id]
        assert len(held) > 10
        assert set(window.record_ids()) == set(held[-10:]) and window.capped
        # And a restarted process decides as the one that never stopped.
        got += run(restarted, recs[30:])
    finally:
        restarted.close()
    assert got == expected


def test_a_split_elsewhere_rebuilds_the_window(store: Store) -> None:
    recs = _articles(40)
    first = _results(store, recs[:20], 20)
    joined = next(r for r in first if r.reason is not DedupReason.NEW and r.stored)
    other = open_store(store.engine.url.render_as_string(hide_password=False), migrate=False)
    try:
        new_dev = split_record(other, joined.record_id, NOW)  # another process moves a record
    finally:
        other.close()
    # This process's window still has the record in its old development; the next ingest
    # rebuilds it, so a near-duplicate of the split record joins the development it is in now.
    rec = next(r for r in recs if r.id == joined.record_id)
    text = rec.text.rstrip() + " Updated.\n"
    copy = Record(
        id=records.record_id(None, text),
        text=text,
        title=rec.title,
        content_hash=records.content_hash(text),
        fetched=NOW,
    )
    (res,) = _results(store, [copy], 1)
    assert res.stored and res.reason is DedupReason.NEAR_DUPLICATE
    assert res.matched_record_id == rec.id and res.development_id == new_dev


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()
