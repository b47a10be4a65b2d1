"""A hash of every ingest decision on the dev sets: did a change of the ingest path change what
it decides?

    python benchmarks/decision_hash.py                 # SQLite in a temp dir
    python benchmarks/decision_hash.py --db postgresql://127.0.0.1:5432/test
    python benchmarks/decision_hash.py --batch 1       # one record per ingest call

Each corpus goes through the real ingest (``pipeline.ingest_many``, as the fetch cycle calls it,
``--batch`` records a call) into a fresh store: the seeds (``seeds/``), the ECB+ dev articles
and the UCI dev headlines in date order (``../shared/clustering-dev``). Printed per corpus and
for all: the number of records, of developments, and two SHA-256 digests (first 16 hex digits):

- ``decisions``: every (record, development, reason, matched record, score to 4 places);
- ``developments``: every development's (id, representative, title, topics) as stored.

Equal digests before and after a change mean equal decisions. ``--topics bench`` (the
default): the ingest benchmark's three topics, so many records match none (and take that
path: stored in no development); ``--topics all``: one topic every record matches.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import sqlalchemy as sa

from aggregator import records
from aggregator.match import TopicMatcher
from aggregator.model import DedupOptions, Record, Topic, TopicRules
from aggregator.pipeline import ingest_many
from aggregator.store import schema as t
from aggregator.store.transfer import read_import

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

from benchmarks.common import fresh_store  # noqa: E402


def _shared() -> Path:
    """../shared beside the main checkout (a worktree's parent may not hold it)."""
    for base in (ROOT.parent, ROOT.parent.parent, Path("/work")):
        if (base / "shared" / "clustering-dev").is_dir():
            return base / "shared"
    return ROOT.parent / "shared"


EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
TOPICS = (
    Topic("disasters", "Disasters", TopicRules(any=("earthquake*", "fire*", "storm*"))),
    Topic("crime", "Crime", TopicRules(any=("arrest*", "police", "shoot*", "murder*"))),
    Topic("business", "Business", TopicRules(any=("acquir*", "merger", "deal"))),
)


def _record(title: str, body: str, when: datetime, *, published: bool) -> Record:
    text = f"{title}\n\n{body.replace(chr(10), chr(10) * 2)}\n"
    return Record(
        id=records.record_id(None, text),
        text=text,
        title=title,
        content_hash=records.content_hash(text),
        published=when if published else None,
        fetched=None if published else when,
        language="en",
    )


def ecb(path: Path) -> list[Record]:
    out = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
        if line.strip():
            art = json.loads(line)
            out.append(
                _record(art["title"], art["text"], EPOCH + timedelta(minutes=i), published=False)
            )
    return out


def uci(path: Path) -> list[Record]:
    arts = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    arts.sort(key=lambda a: (a["date"], a["id"]))
    return [
        _record(a["title"], a["text"], datetime.fromisoformat(a["date"]), published=True)
        for a in arts
    ]


def seeds(path: Path) -> list[Record]:
    return [item.record for item in read_import([path], now=EPOCH).items]


EVERYTHING = (Topic("all", "All", TopicRules(any=("/./",))),)


def run(
    db: str | None, recs: Sequence[Record], batch: int, topics: Sequence[Topic] = TOPICS
) -> tuple[list[str], list[str], float]:
    matcher, options = TopicMatcher(topics), DedupOptions()
    lines: list[str] = []
    with fresh_store(db, "decision_hash") as store:
        start = time.perf_counter()
        for i in range(0, len(recs), batch):
            chunk = recs[i : i + batch]
            now = max((r.published or r.fetched or EPOCH) for r in chunk)
            for res in ingest_many(store, chunk, matcher=matcher, options=options, now=now):
                lines.append(
                    f"{res.record_id}\t{res.development_id}\t{res.reason}\t"
                    f"{res.matched_record_id}\t{res.score:.4f}\t{int(res.stored)}"
                )
        elapsed = time.perf_counter() - start
        d, dt = t.developments, t.development_topics
        with store.engine.connect() as conn:
            topics: dict[str, list[str]] = {}
            for row in conn.execute(sa.select(dt).order_by(dt.c.topic_id)):
                topics.setdefault(row.development_id, []).append(row.topic_id)
            devs = [
                "\t".join((row.id, row.representative_id, row.title, *topics.get(row.id, [])))
                for row in conn.execute(sa.select(d).order_by(d.c.id))
            ]
    return lines, devs, elapsed


def digest(lines: Sequence[str]) -> str:
    return hashlib.sha256("\n".join(lines).encode("utf-8")).hexdigest()[:16]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--db", help="postgresql://host:port/admin_db (default: SQLite)")
    parser.add_argument("--batch", type=int, default=40, help="records per ingest_many call")
    parser.add_argument("--shared", type=Path, default=_shared())
    parser.add_argument("--topics", choices=("bench", "all"), default="bench")
    args = parser.parse_args()
    corpora = {
        "seeds": seeds(ROOT / "seeds"),
        "ecbplus": ecb(args.shared / "clustering-dev" / "ecbplus-dev.jsonl"),
        "uci-headlines": uci(args.shared / "clustering-dev" / "uci-headlines-dev.jsonl"),
    }
    all_lines: list[str] = []
    all_devs: list[str] = []
    print(f"{'corpus':16}{'records':>8}{'devs':>7}{'seconds':>9}  decisions         developments")
    for name, recs in corpora.items():
        topics = TOPICS if args.topics == "bench" else EVERYTHING
        lines, devs, elapsed = run(args.db, recs, args.batch, topics)
        all_lines += [f"{name}\t{x}" for x in lines]
        all_devs += [f"{name}\t{x}" for x in devs]
        print(
            f"{name:16}{len(lines):>8}{len(devs):>7}{elapsed:>9.2f}  "
            f"{digest(lines)}  {digest(devs)}"
        )
    print(f"{'all':16}{len(all_lines):>8}{len(all_devs):>7}{'':>9}  ", end="")
    print(f"{digest(all_lines)}  {digest(all_devs)}")


if __name__ == "__main__":
    main()
