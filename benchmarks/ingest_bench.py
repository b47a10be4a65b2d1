"""Ingest throughput: ``pipeline.ingest`` against a plain insert of the same records.

    python benchmarks/ingest_bench.py                                   # SQLite in a temp dir
    python benchmarks/ingest_bench.py --db postgresql://127.0.0.1:5432/test --copies 3
    python benchmarks/ingest_bench.py --workers 2 --db postgresql://...  # 2 ingesting threads
    python benchmarks/ingest_bench.py --sizes 2000,20000,60000,100000    # CPU as the store grows

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
import gc
import json
import os
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator import dedup, records
from aggregator.ingest.types import (
    DevelopmentWrite,
    NewRecord,
    Plan,
    Prepared,
    development_id_for,
)
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

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.common import fresh_store  # noqa: E402
from benchmarks.decide_bench import other_story  # noqa: E402


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
    """The bare cost of storing: each record in a development of its own, one transaction a
    record, written by ``WriteTx.apply`` without matching, fingerprinting or deciding."""
    empty = dedup.fingerprint("", "")
    for rec in recs:
        assert rec.fetched is not None
        prepared = Prepared(rec, (), rec.fetched, empty, "{}")
        dev = development_id_for(rec.id)
        plan = Plan(
            records=[NewRecord(prepared, 0, dev, DedupReason.NEW, 1.0, None)],
            developments=[
                DevelopmentWrite(
                    dev, True, rec.fetched, rec.fetched, rec.id, rec.title, rec.title, ()
                )
            ],
            feed_changed=True,
        )
        with store.write() as tx:
            tx.apply(plan, ingested=rec.fetched)


def timed(
    db: str | None,
    recs: Sequence[Record],
    work: Callable[[Store, Sequence[Record]], None],
    workers: int,
) -> tuple[float, int, int]:
    """Seconds to run ``work`` over ``recs`` split among ``workers`` threads; records and
    developments stored."""
    with fresh_store(db, "ingest_bench") as store:
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
    parser.add_argument(
        "--sizes",
        help="instead: CPU per record at these store sizes, e.g. 2000,20000,60000,100000",
    )
    parser.add_argument("--measured", type=int, default=400, help="records ingested per size")
    args = parser.parse_args()
    if args.sizes:
        sizes = [int(x) for x in args.sizes.split(",")]
        store_growth(sizes, args.corpus, args.measured, args.batch)
        return
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


# ------------------------------------------------------------------ CPU as the store grows


def _prefill(store: Store, base: Sequence[Record], n: int, end: datetime) -> None:
    """``n`` stored records, each in its own development, filed over the six days before
    ``end`` (all within the dedup window of what comes next), written by ``WriteTx.apply``:
    the corpus once, then other stories of the same shape (``decide_bench.other_story``:
    fingerprinting 100,000 records would take minutes). So the store grows while the records
    that share keys with a new one stay the same few."""
    from aggregator.ingest.prepare import dedup_text

    fps = {r.id: dedup.fingerprint(r.title, dedup_text(r), r.language) for r in base}
    step = timedelta(days=6) / max(n, 1)
    plan = Plan()
    for i in range(n):
        orig = base[i % len(base)]
        text = f"{orig.text}\nPrinting {i}.\n"
        when = end - timedelta(days=6) + step * i
        rec = Record(
            id=records.record_id(None, text),
            text=text,
            title=orig.title,
            content_hash=records.content_hash(text),
            fetched=when,
            language="en",
        )
        dev = development_id_for(rec.id)
        copy = i // len(base)
        fp = fps[orig.id] if copy == 0 else other_story(fps[orig.id], copy)
        plan.records.append(
            NewRecord(
                Prepared(rec, (), when, fp, dedup.fingerprint_to_json(fp)),
                0,
                dev,
                DedupReason.NEW,
                1.0,
                None,
            )
        )
        plan.developments.append(
            DevelopmentWrite(dev, True, when, when, rec.id, rec.title, rec.title, ())
        )
        if len(plan.records) == 2000 or i == n - 1:
            with store.write() as tx:
                tx.apply(plan, ingested=when)
            plan = Plan()


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def store_growth(sizes: Sequence[int], corpus: Path, measured: int, batch: int) -> None:
    """CPU per ingested record at each store size, and the window's load time and memory."""
    base = load_records(corpus, 1)
    print(
        f"CPU per record as the store grows: {measured} new records (ECB+ rewrites: each joins "
        f"its original) ingested by {batch} after N stored ones (the corpus, then other stories "
        "of its shape), all within the dedup window; load: the first ingest's window load"
    )
    print(f"{'stored':>8}{'load s':>9}{'load MB':>9}{'ms CPU/record':>15}{'joined':>8}")
    for n in sizes:
        end = EPOCH + timedelta(days=400)
        with tempfile.TemporaryDirectory() as tmp:
            url = f"sqlite:///{tmp}/growth.db"
            filler = open_store(url)
            _prefill(filler, base, n, end)
            filler.close()
            store = open_store(url)
            matcher, options = TopicMatcher(TOPICS), DedupOptions()
            news = []
            for i in range(measured):
                orig = base[i % len(base)]
                text = f"{orig.text}\nLate edition {i}.\n"
                news.append(
                    Record(
                        id=records.record_id(None, text),
                        text=text,
                        title=orig.title,
                        content_hash=records.content_hash(text),
                        fetched=end + timedelta(minutes=i),
                        language="en",
                    )
                )
            gc.collect()
            rss0 = _rss_mb()
            t0 = time.process_time()
            # The first batch loads the window (every stored record here) and ingests one.
            ingest_many(store, news[:1], matcher=matcher, options=options, now=end)
            load = time.process_time() - t0
            gc.collect()
            rss = _rss_mb() - rss0
            t0 = time.process_time()
            joined = 0
            for start in range(1, measured, batch):
                chunk = news[start : start + batch]
                now = max(r.fetched for r in chunk if r.fetched is not None)
                res = ingest_many(store, chunk, matcher=matcher, options=options, now=now)
                joined += sum(1 for r in res if r.reason is not DedupReason.NEW)
            per = (time.process_time() - t0) / (measured - 1) * 1000
            store.close()
        print(f"{n:>8}{load:>9.2f}{rss:>9.0f}{per:>15.2f}{joined:>8}")


if __name__ == "__main__":
    main()
