"""What the full-text search index costs and gives: ingest with and without it, and queries.

    python benchmarks/search_bench.py                                   # SQLite in a temp dir
    python benchmarks/search_bench.py --db postgresql://127.0.0.1:5432/test --copies 3

Ingest: the ECB+ dev articles (as ``ingest_bench``: 369 real news articles, ``--copies`` times)
through ``pipeline.ingest`` into a fresh store with the search index (migration 0008), and, as
the baseline measured in the same run, into a fresh store whose index was removed (SQLite: the
three triggers dropped; PostgreSQL: the GIN index dropped). The ratio is what keeping the
index costs per stored record.

Queries: ``Store.search`` for a few words (one, two, a prefix, a rare word), each ``--repeat``
times against the store with the index; the baseline is the same question answered without an
index, a ``LIKE`` scan over every record's text for each word (what search would cost without
it). Prints the median milliseconds per query.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

import sqlalchemy as sa

from aggregator.store import Store
from benchmarks.common import fresh_store
from benchmarks.ingest_bench import CORPUS, load_records, run_ingest

QUERIES = ("earthquake", "police arrest", "acquir*", "tsunami warning")


def drop_index(store: Store) -> None:
    with store.engine.begin() as conn:
        if store.dialect == "postgresql":
            conn.execute(sa.text("DROP INDEX ix_records_search"))
        else:
            for name in ("insert", "delete", "update"):
                conn.execute(sa.text(f"DROP TRIGGER records_search_{name}"))


def ingest_seconds(db: str | None, recs: Sequence[object], with_index: bool) -> float:
    with fresh_store(db, "search_bench") as store:
        if not with_index:
            drop_index(store)
        start = time.perf_counter()
        run_ingest(store, recs)  # type: ignore[arg-type]
        return time.perf_counter() - start


def like_scan(store: Store, query: str) -> int:
    words = [w.rstrip("*") for w in query.split()]
    clause = " AND ".join(f"lower(text) LIKE :w{i}" for i in range(len(words)))
    params = {f"w{i}": f"%{w.lower()}%" for i, w in enumerate(words)}
    with store.engine.connect() as conn:
        return len(conn.execute(sa.text(f"SELECT id FROM records WHERE {clause}"), params).all())


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--db", help="postgresql://host:port/admin_db (default: SQLite)")
    parser.add_argument("--copies", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--corpus", type=Path, default=CORPUS)
    args = parser.parse_args()
    recs = load_records(args.corpus, args.copies)
    kind = "PostgreSQL" if args.db and args.db.startswith("postgres") else "SQLite"
    print(f"{kind}: {len(recs)} records")
    without = ingest_seconds(args.db, recs, with_index=False)
    with_index = ingest_seconds(args.db, recs, with_index=True)
    print(
        f"ingest without the search index (baseline): {len(recs) / without:8.1f} records/s\n"
        f"ingest with the search index:              {len(recs) / with_index:8.1f} records/s"
        f"  ratio {without / with_index:.2f}x of the baseline's rate"
    )
    with fresh_store(args.db, "search_bench") as store:
        run_ingest(store, recs)
        for query in QUERIES:
            indexed: list[float] = []
            scanned: list[float] = []
            found = len(store.search(query, limit=20))
            for _ in range(args.repeat):
                start = time.perf_counter()
                store.search(query, limit=20)
                indexed.append(time.perf_counter() - start)
                start = time.perf_counter()
                like_scan(store, query)
                scanned.append(time.perf_counter() - start)
            ms, base = statistics.median(indexed) * 1e3, statistics.median(scanned) * 1e3
            print(
                f"query {query!r:20} {found:3} hits: {ms:7.2f} ms  "
                f"(LIKE scan baseline {base:7.2f} ms, {base / ms:5.1f}x)"
            )


if __name__ == "__main__":
    main()
