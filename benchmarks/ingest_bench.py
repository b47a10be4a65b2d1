"""Ingest throughput: ``pipeline.ingest`` against a plain insert of the same records.

    python benchmarks/ingest_bench.py                                   # SQLite in a temp dir
    python benchmarks/ingest_bench.py --db postgresql://127.0.0.1:5432/test --copies 3
    python benchmarks/ingest_bench.py --workers 2 --db postgresql://...  # 2 ingesting threads

The records are the ECB+ dev articles (``../shared/clustering-dev/ecbplus-dev.jsonl``, 369 real
news articles), repeated ``--copies`` times with a word changed and their times shifted by a
month per copy (so every record is stored and each copy's dedup window holds one copy). Each
record is ingested as the service does it: topic matching, fingerprint, exact-duplicate check,
candidates by query, decision, development refresh, all in one transaction.

The baseline, measured in the same run on a fresh database of the same kind, is the bare cost
of storing: ``WriteTx.add_record`` + membership in one transaction per record, no matching, no
fingerprint, no candidate query. The ratio says what dedup and matching cost on top of writing.
On PostgreSQL a fresh database is created per measurement (``--db`` names the server and an
admin database) and dropped afterwards.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator import records
from aggregator.match import TopicMatcher
from aggregator.model import DedupOptions, DedupReason, Record, Topic, TopicRules
from aggregator.pipeline import ingest, ingest_many
from aggregator.store import Store, open_store

CORPUS = Path(__file__).resolve().parents[2] / "shared" / "clustering-dev" / "ecbplus-dev.jsonl"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
TOPICS = (
    Topic("disasters", "Disasters", TopicRules(any=("earthquake*", "fire*", "storm*"))),
    Topic("crime", "Crime", TopicRules(any=("arrest*", "police", "shoot*", "murder*"))),
    Topic("business", "Business", TopicRules(any=("acquir*", "merger", "deal"))),
)


def load_records(corpus: Path, copies: int) -> list[Record]:
    arts = [json.loads(line) for line in corpus.read_text(encoding="utf-8").splitlines() if line]
    out: list[Record] = []
    for copy in range(copies):
        for i, art in enumerate(arts):
            body = art["text"].replace("\n", "\n\n")
            if copy:
                body = f"{body}\n\nEdition {copy}."
            text = f"{art['title']}\n\n{body}\n"
            when = EPOCH + timedelta(days=30 * copy, minutes=i)
            out.append(
                Record(
                    id=records.record_id(None, text),
                    text=text,
                    title=art["title"],
                    content_hash=records.content_hash(text),
                    fetched=when,
                    language="en",
                )
            )
    return out


@contextmanager
def fresh_store(db: str | None) -> Iterator[Store]:
    if db is None or db.startswith("sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            store = open_store(f"sqlite:///{tmp}/bench.db")
            try:
                yield store
            finally:
                store.close()
        return
    import psycopg

    admin = db.replace("postgresql+psycopg://", "postgresql://")
    name = f"ingest_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    base = admin.rsplit("/", 1)[0]
    store = open_store(f"{base}/{name}")
    try:
        yield store
    finally:
        store.close()
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def run_ingest(store: Store, recs: Sequence[Record]) -> None:
    matcher = TopicMatcher(TOPICS)
    options = DedupOptions()
    for rec in recs:
        assert rec.fetched is not None
        ingest(store, rec, matcher=matcher, options=options, now=rec.fetched)


def run_ingest_many(store: Store, recs: Sequence[Record], batch: int) -> None:
    """As the fetch cycle ingests a feed: ``batch`` records at a time (same decisions)."""
    matcher = TopicMatcher(TOPICS)
    options = DedupOptions()
    for start in range(0, len(recs), batch):
        chunk = recs[start : start + batch]
        now = max(rec.fetched for rec in chunk if rec.fetched is not None)
        ingest_many(store, chunk, matcher=matcher, options=options, now=now)


def run_baseline(store: Store, recs: Sequence[Record]) -> None:
    for rec in recs:
        assert rec.fetched is not None
        with store.write() as tx:
            tx.add_record(rec, time=rec.fetched, ingested=rec.fetched)
            dev = tx.create_development(rec.id, first_seen=rec.fetched)
            tx.add_membership(
                rec.id,
                dev,
                reason=DedupReason.NEW,
                score=1.0,
                matched_record_id=None,
                joined=rec.fetched,
            )


def timed(
    db: str | None,
    recs: Sequence[Record],
    work: Callable[[Store, Sequence[Record]], None],
    workers: int,
) -> tuple[float, int, int]:
    """Seconds to run ``work`` over ``recs`` split among ``workers`` threads; records and
    developments stored."""
    with fresh_store(db) as store:
        shares = [recs[i::workers] for i in range(workers)]
        threads = [threading.Thread(target=work, args=(store, share)) for share in shares]
        start = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - start
        return elapsed, store.count_records(), store.count_developments()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--db", help="postgresql://host:port/admin_db (default: SQLite)")
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    parser.add_argument(
        "--batch", type=int, default=40, help="records per ingest_many call (a feed's entries)"
    )
    args = parser.parse_args()
    recs = load_records(args.corpus, args.copies)
    kind = "PostgreSQL" if args.db and not args.db.startswith("sqlite") else "SQLite"
    print(
        f"{len(recs)} records ({args.copies} copies of {args.corpus.name}), {kind}, "
        f"{args.workers} worker(s)"
    )
    base_s, base_n, _ = timed(args.db, recs, run_baseline, args.workers)
    full_s, full_n, devs = timed(args.db, recs, run_ingest, args.workers)
    print(f"{'':24}{'seconds':>10}{'records/s':>12}{'stored':>9}{'developments':>14}")
    base_rate = base_n / base_s
    print(f"{'baseline (insert only)':24}{base_s:>10.2f}{base_rate:>12.0f}{base_n:>9}{base_n:>14}")
    print(f"{'pipeline.ingest':24}{full_s:>10.2f}{full_n / full_s:>12.0f}{full_n:>9}{devs:>14}")
    many_s, many_n, many_devs = timed(
        args.db, recs, lambda st, rs: run_ingest_many(st, rs, args.batch), args.workers
    )
    label = f"ingest_many (by {args.batch})"
    print(f"{label:24}{many_s:>10.2f}{many_n / many_s:>12.0f}{many_n:>9}{many_devs:>14}")
    print(
        f"ingest_many: {full_s / many_s:.1f}x the records/s of ingest, "
        f"{many_s / base_s:.1f}x the bare insert's time"
    )
    print(
        f"ingest costs {full_s / base_s:.1f}x the bare insert "
        f"({(full_s - base_s) / len(recs) * 1000:.1f} ms per record for matching + dedup)"
    )


if __name__ == "__main__":
    main()
