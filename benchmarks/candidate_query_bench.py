"""The candidate query as the store grows: bounded per key (the default) against unbounded.

    python benchmarks/candidate_query_bench.py                      # SQLite in a temp dir
    python benchmarks/candidate_query_bench.py --db postgresql://127.0.0.1:5432/test

A store is filled directly with index rows (no dedup, so it is quick): ``--records`` records in
3 days, a quarter of them sharing two common key terms (a place and a country: stop words of the
moment), each with 10 random key terms and 16 random bands. Then 200 candidate queries of a
record with the 2 common terms, 10 random terms and 16 random bands run with the store's default
per-key bound (``dedup.CANDIDATE_ROWS_PER_KEY``) and with no bound (every hit of every key, as
before the bound), interleaved, in the same run. Printed: median and p90 ms of each, the ratio.
On PostgreSQL a fresh database is created (``--db`` names the server and an admin database) and
dropped afterwards.
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from aggregator import dedup
from aggregator.model import DedupReason
from aggregator.store import Store, open_store
from aggregator.store import schema as t

T0 = datetime(2026, 3, 2, tzinfo=UTC)
WINDOW = timedelta(days=7)


def fill(store: Store, n: int, rng: random.Random) -> None:
    recs, fps, terms, bands = [], [], [], {}
    for i in range(n):
        rid = f"r{i:07d}"
        when = T0 - timedelta(seconds=rng.randrange(3 * 86400))
        recs.append(
            {
                "id": rid,
                "text": "x",
                "title": "x",
                "content_hash": rid,
                "seq": i + 1,
                "time": when,
                "ingested": when,
                "fetched": when,
                "language": "en",
            }
        )
        fps.append({"record_id": rid, "data": "{}"})
        keys = {"paris", "france"} if i % 4 == 0 else set()
        keys |= {f"t{rng.randrange(n)}" for _ in range(10)}
        terms += [{"term": k, "record_id": rid, "time": when} for k in keys]
        for _ in range(16):
            band = f"b{rng.randrange(n * 4)}"
            bands[(band, rid)] = {"band": band, "record_id": rid, "time": when}
    with store.engine.begin() as conn:
        conn.execute(sa.insert(t.records), recs)
        conn.execute(sa.insert(t.key_terms), terms)
        conn.execute(sa.insert(t.lsh_bands), list(bands.values()))
        conn.execute(sa.insert(t.fingerprints), fps)
    for start in range(0, n, 1000):
        with store.write() as tx:
            for i in range(start, min(n, start + 1000)):
                dev = tx.create_development(f"r{i:07d}", first_seen=T0)
                tx.add_membership(
                    f"r{i:07d}",
                    dev,
                    reason=DedupReason.NEW,
                    score=1.0,
                    matched_record_id=None,
                    joined=T0,
                )


def measure(store: Store, n: int, rng: random.Random, queries: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"bounded": [], "unbounded": []}
    with store.write() as tx:
        for _ in range(queries):
            terms = ["paris", "france"] + [f"t{rng.randrange(n)}" for _ in range(10)]
            bands = [f"b{rng.randrange(n * 4)}" for _ in range(16)]
            for name, per_key in (("bounded", None), ("unbounded", n)):
                t1 = time.perf_counter()
                tx.candidates(
                    bands=bands,
                    key_terms=terms,
                    time=T0 - timedelta(days=1),
                    window=WINDOW,
                    cap=dedup.MAX_CANDIDATES,
                    per_key=per_key,
                )
                out[name].append(time.perf_counter() - t1)
    return out


def run(url: str, n: int, queries: int) -> None:
    rng = random.Random(1)
    store = open_store(url)
    try:
        fill(store, n, rng)
        res = measure(store, n, rng, queries)
    finally:
        store.close()
    med = {k: statistics.median(v) * 1000 for k, v in res.items()}
    p90 = {k: sorted(v)[int(len(v) * 0.9)] * 1000 for k, v in res.items()}
    print(f"{n} records, a common key in {n // 4}; per-key bound {dedup.CANDIDATE_ROWS_PER_KEY}")
    for k in res:
        print(f"  {k:<10} median {med[k]:6.2f} ms   p90 {p90[k]:6.2f} ms")
    print(f"  unbounded / bounded (median): {med['unbounded'] / med['bounded']:.1f}x")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--db", help="postgresql://host:port/admin_db (default: SQLite)")
    ap.add_argument("--records", type=int, nargs="+", default=[3000, 12000])
    ap.add_argument("--queries", type=int, default=200)
    args = ap.parse_args()
    for n in args.records:
        if not args.db:
            with tempfile.TemporaryDirectory() as tmp:
                run(f"sqlite:///{Path(tmp) / 'bench.db'}", n, args.queries)
            continue
        name = f"candq_{uuid.uuid4().hex[:8]}"
        admin = sa.create_engine(args.db, isolation_level="AUTOCOMMIT")
        try:
            with admin.connect() as conn:
                conn.exec_driver_sql(f"CREATE DATABASE {name}")
            try:
                run(f"{args.db.rsplit('/', 1)[0]}/{name}", n, args.queries)
            finally:
                with admin.connect() as conn:
                    conn.exec_driver_sql(f"DROP DATABASE {name} WITH (FORCE)")
        finally:
            admin.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
