"""pipeline.ingest_many (a feed's new entries in one transaction) leaves the store exactly as
ingesting the same records one by one does: the same results, rows, decisions, developments and
aliases, on SQLite and PostgreSQL. The records mix exact duplicates inside a batch and across
batches, near-duplicates, reports of one event in three languages, and synthetic feed entries
with wire stories carried by several feeds."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from aggregator import dedup, feeds, identity, normalize, records
from aggregator.ingest.prepare import dedup_text
from aggregator.match import TopicMatcher
from aggregator.model import (
    DedupOptions,
    DedupReason,
    IngestOptions,
    Record,
    Schedule,
    Source,
    SourceKind,
    Topic,
    TopicRules,
)
from aggregator.pipeline import IngestResult, ingest, ingest_many
from aggregator.store import Store, open_store
from aggregator.store import schema as t
from benchmarks.feedserver import DEFAULT_EPOCH, feed_spec, render_feed

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
ARTICLES = Path(__file__).resolve().parent.parent / "benchmarks/data/multilingual/articles.jsonl"
TOPICS = (
    Topic("quakes", "Earthquakes", TopicRules(any=("earthquake*", "quake*", "землетрясени*"))),
    Topic("border", "Border", TopicRules(any=("border*", "smuggl*", "kontraband*"))),
    Topic("courts", "Courts", TopicRules(any=("court*", "teismas", "суд"))),
)
OPTIONS = DedupOptions()


def _record(
    title: str,
    body: str,
    url: str | None,
    *,
    source_id: str | None = None,
    guid: str | None = None,
    published: datetime | None = None,
    language: str | None = None,
) -> Record:
    text = f"{title}\n\n{body}\n"
    return Record(
        id=records.record_id(identity.canonical_url(url) if url else None, text),
        text=text,
        title=title,
        content_hash=records.content_hash(text),
        url=url,
        canonical_url=identity.canonical_url(url) if url else None,
        guid=guid,
        source_id=source_id,
        published=published,
        fetched=NOW,
        language=language,
    )


def _articles() -> list[Record]:
    """Reports of five events in English, Lithuanian and Russian (same-event joins)."""
    out = []
    lines = ARTICLES.read_text(encoding="utf-8").splitlines()
    for i, line in enumerate(x for x in lines if x.strip()):
        art = json.loads(line)
        out.append(
            _record(
                art["title"],
                art["text"].replace("\n", "\n\n"),
                f"https://{art['lang']}.example/{art['id']}",
                source_id=f"outlet-{art['lang']}",
                guid=art["id"],
                published=NOW - timedelta(hours=30 - i),
                language=art["lang"],
            )
        )
    return out


def _feed_records(feeds_n: int = 6) -> list[Record]:
    """Entries of synthetic feeds as the fetch cycle normalizes them; wire stories appear in
    several feeds under the same link (exact duplicates across sources)."""
    out: list[Record] = []
    for i in range(feeds_n):
        spec = feed_spec(1, i)
        doc = render_feed(1, spec, 0, DEFAULT_EPOCH)
        parsed = feeds.parse_feed(doc.body, {"content-type": doc.content_type}, f"http://f/{i}")
        source = Source(
            id=f"feed{i}",
            kind=SourceKind.FEED,
            url=f"http://f/{i}",
            schedule=Schedule(interval_seconds=900),
        )
        entries = list(reversed(parsed.entries))[:12]
        out.extend(normalize.record_from_entry(e, source, NOW) for e in entries)
    return out


def _mixed() -> list[Record]:
    arts = _articles()
    base = arts[0]
    assert base.url is not None
    body = base.text.split("\n\n", 1)[1]
    extra = [
        # the same page again, from another feed: same URL
        _record("Other headline", "Other words entirely.", base.url, source_id="agg", guid="x1"),
        # the same text under another URL: same content, kept as an alias
        _record(base.title, body.replace(" ", "  "), "https://copy.example/a", source_id="copy"),
        # the same entry of the same source under a new URL: same GUID
        _record(
            "Renamed",
            "New text here.",
            "https://en.example/moved",
            source_id=base.source_id,
            guid=base.guid,
        ),
        # a near-duplicate rewrite
        _record(base.title + " (update)", body + "\n\nMore to follow.", "https://b.example/u"),
    ]
    feed = _feed_records()
    # Interleave so duplicates and joins fall inside batches and across them.
    mixed: list[Record] = []
    for i in range(max(len(arts), len(feed))):
        if i < len(arts):
            mixed.append(arts[i])
        if i < len(feed):
            mixed.append(feed[i])
        if i == 2:
            mixed.extend(extra[:2])
        if i == 7:
            mixed.extend(extra[2:])
    mixed.extend(feed[:3])  # a refetch: same ids
    mixed.extend(arts[:2])
    return mixed


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    s = open_store(db_url)
    yield s
    s.close()


def _clear(store: Store) -> None:
    with store.engine.begin() as conn:
        for table in reversed(t.metadata.sorted_tables):
            if table.name not in ("store_meta", "alembic_version", "sources", "fetch_state"):
                conn.execute(sa.delete(table))
        # Records removed outside ingest: the process's window must load again.
        meta = t.store_meta
        conn.execute(sa.update(meta).values(layout_version=meta.c.layout_version + 1))


def _dump(store: Store) -> dict[str, Any]:
    """Every row that ingest writes, comparable between two runs (no surrogate keys)."""
    out: dict[str, Any] = {}
    with store.engine.connect() as conn:
        for table in t.metadata.sorted_tables:
            if table.name in ("store_meta", "alembic_version", "sources", "fetch_state"):
                continue
            cols = [c for c in table.c if c.name not in ("seq",) and table.name != "x"]
            if table.name == "record_aliases":
                cols = [c for c in cols if c.name != "id"]
            rows = conn.execute(sa.select(*cols)).all()
            out[table.name] = sorted(tuple(repr(v) for v in row) for row in rows)
        out["order"] = list(
            conn.execute(sa.select(t.records.c.id).order_by(t.records.c.seq)).scalars()
        )
    return out


def _one_by_one(
    store: Store, recs: Sequence[Record], tuning: IngestOptions | None = None
) -> list[IngestResult]:
    matcher = TopicMatcher(TOPICS)
    return [
        ingest(store, r, matcher=matcher, options=OPTIONS, now=NOW, tuning=tuning) for r in recs
    ]


def _batched(
    store: Store, recs: Sequence[Record], size: int, tuning: IngestOptions | None = None
) -> list[IngestResult]:
    matcher = TopicMatcher(TOPICS)
    out: list[IngestResult] = []
    for start in range(0, len(recs), size):
        chunk = recs[start : start + size]
        out.extend(
            ingest_many(store, chunk, matcher=matcher, options=OPTIONS, now=NOW, tuning=tuning)
        )
    return out


def test_batches_leave_the_store_as_sequential_ingests(store: Store) -> None:
    recs = _mixed()
    sequential = _one_by_one(store, recs)
    expected = _dump(store)
    reasons = {r.reason for r in sequential}
    # The corpus exercises every path: new, joins, and the three kinds of exact duplicate.
    assert {DedupReason.NEW, DedupReason.SAME_URL, DedupReason.SAME_CONTENT} <= reasons
    assert DedupReason.SAME_GUID in reasons
    assert DedupReason.SAME_EVENT in reasons or DedupReason.NEAR_DUPLICATE in reasons
    assert expected["record_aliases"]
    for size, cap in ((len(recs), 1000), (13, 1000), (40, 9)):
        _clear(store)
        batched = _batched(store, recs, size, IngestOptions(max_batch=cap))
        assert batched == sequential, (size, cap)
        assert _dump(store) == expected, (size, cap)


@pytest.mark.parametrize(("per_key", "rarity"), [(64, False), (2, False), (2, True)])
def test_batches_select_candidates_as_sequential_ingests(
    store: Store, per_key: int, rarity: bool
) -> None:
    # Bounds small enough to bind on this corpus: a batch's unwritten records compete with the
    # stored ones for the places (and, per key, for the newest hits), and must win and lose
    # them as they would once stored (with ``rarity``, counting towards the keys' rarity).
    tuning = IngestOptions(
        max_candidates=3,
        candidates_per_development=1,
        candidate_hits_per_key=per_key,
        rank_by_rarity=rarity,
    )
    recs = _mixed()
    sequential = _one_by_one(store, recs, tuning)
    expected = _dump(store)
    for size in (len(recs), 13):
        _clear(store)
        assert _batched(store, recs, size, tuning) == sequential, size
        assert _dump(store) == expected, size


def test_batch_of_copies_makes_one_record(store: Store) -> None:
    arts = _articles()
    copies = [arts[0], arts[0], arts[1], arts[0]]
    results = ingest_many(store, copies, matcher=TopicMatcher(TOPICS), options=OPTIONS, now=NOW)
    assert [r.stored for r in results] == [True, False, True, False]
    assert store.count_records() == 2
    assert results[1].record_id == results[3].record_id == arts[0].id


def test_empty_batch_writes_nothing(store: Store) -> None:
    v = store.feed_version()
    assert ingest_many(store, [], matcher=TopicMatcher(TOPICS), options=OPTIONS, now=NOW) == []
    assert store.feed_version() == v


def test_lexical_fingerprints_survive_the_store_unchanged() -> None:
    # The batch compares unwritten records with the fingerprint as written; a later ingest
    # reads it back from JSON. Both must be the same value.
    for rec in _articles()[:5]:
        fp = dedup.fingerprint(rec.title, dedup_text(rec), rec.language)
        assert dedup.fingerprint_from_json(dedup.fingerprint_to_json(fp)) == fp


def test_concurrent_batches_share_stories_safely(store: Store, db_url: str) -> None:
    # Four "replicas" ingest, at the same instant, batches that each hold a copy of one wire
    # story (same text, its own URL), a rewrite of it and records of their own.
    arts = _articles()
    base = arts[0]
    body = base.text.split("\n\n", 1)[1]
    batches = []
    for i in range(4):
        own = arts[1 + 3 * i : 4 + 3 * i]
        copy = _record(base.title, body, f"https://copy{i}.example/story", source_id=f"r{i}")
        rewrite = _record(
            f"{base.title} ({i})", body.replace(" the ", " a ", 1 + i), f"https://rw{i}.example/s"
        )
        batches.append([*own, copy, rewrite])
    barrier = threading.Barrier(len(batches))
    results: list[list[IngestResult]] = []
    errors: list[BaseException] = []

    def worker(batch: list[Record]) -> None:
        s = open_store(db_url, migrate=False)
        try:
            barrier.wait()
            results.append(
                ingest_many(s, batch, matcher=TopicMatcher(TOPICS), options=OPTIONS, now=NOW)
            )
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            s.close()

    threads = [threading.Thread(target=worker, args=(b,)) for b in batches]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors, errors
    # The copy is stored once; every other copy names it; the rewrites join its development.
    copy_ids = {r.record_id for rs in results for r in rs[-2:-1]}
    assert len(copy_ids) == 1
    assert sum(1 for rs in results if rs[-2].stored) == 1
    rewrite_devs = {rs[-1].development_id for rs in results}
    copy_dev = {rs[-2].development_id for rs in results}
    assert len(copy_dev) == 1 and rewrite_devs == copy_dev, (rewrite_devs, copy_dev)
    assert store.count_records() == sum(len(b) for b in batches) - 3
