"""A hash of what ``prepare`` makes of every dev record, and its speed: speed work on the prepare
stage (topic matching, fingerprints) must leave the hash unchanged.

    python benchmarks/prepare_hash.py                       # this checkout
    python benchmarks/prepare_hash.py --baseline /work/main # and another checkout, same run
    python benchmarks/prepare_hash.py --per-record out.tsv  # one hash per record

The records: the ECB+ dev articles and the UCI dev headlines (``../shared/clustering-dev``,
built as ``decision_hash.py`` builds them), the seeds (``../shared/seeds`` and ``seeds/``, read
by the import reader) and the entries of the feed fixtures (``fixtures/feeds``,
``fixtures/replay/feeds``: parsed and made into records by ``normalize.record_from_entry``,
which is timed with them). Each record goes through ``ingest.prepare.prepare`` against the
topics of ``config/watchlist.yaml``, the ingest benchmark's three and one that every record
matches (so every record is fingerprinted). Hashed per record: its id, text, title, the topic
matches and the fingerprint's stored JSON; printed: one hash per set and one for all.

Speed: each set is prepared ``--passes`` times in a fresh process (``--rounds`` processes,
alternating with the ``--baseline`` checkout's when given); printed per set is records/s of
CPU time for the first pass (cold: empty caches, as an ``aggregator import`` starts) and the
best later pass (warm), the best over the rounds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
SETS = ("ecbplus", "uci", "seeds", "fixtures")


def _shared() -> Path:
    for base in (ROOT.parent, ROOT.parent.parent, Path("/work")):
        if (base / "shared" / "clustering-dev").is_dir():
            return base / "shared"
    return ROOT.parent / "shared"


def _load_sets(shared: Path) -> tuple[dict[str, list[Any]], Any, list[Any]]:
    """{set: items}, the matcher, and the feed fixtures as (source, body, url) (their records
    are built inside the timed pass)."""
    from aggregator import feeds
    from aggregator.match import TopicMatcher
    from aggregator.model import Schedule, Source, SourceKind, Topic, TopicRules
    from aggregator.store.transfer import read_import
    from aggregator.watchlist import load_watchlist
    from benchmarks.decision_hash import TOPICS, ecb, uci

    topics = [
        *load_watchlist(ROOT / "config" / "watchlist.yaml").topics,
        *TOPICS,
        Topic("all", "All", TopicRules(any=("/./",))),
    ]
    dev = shared / "clustering-dev"
    sets: dict[str, list[Any]] = {
        "ecbplus": ecb(dev / "ecbplus-dev.jsonl"),
        "uci": uci(dev / "uci-headlines-dev.jsonl"),
        "seeds": [
            item.record
            for folder in (shared / "seeds", ROOT / "seeds")
            if folder.is_dir()
            for item in read_import([folder], now=EPOCH).items
        ],
    }
    entries = []
    paths = sorted((ROOT / "fixtures" / "feeds").glob("*"))
    paths += sorted((ROOT / "fixtures" / "replay" / "feeds").glob("*"))
    for path in paths:
        if path.suffix not in (".xml", ".rss", ".atom", ".json"):
            continue
        url = f"https://example.org/{path.name}"
        source = Source(path.stem, SourceKind.FEED, url, Schedule(1800))
        try:
            parsed = feeds.parse_feed(path.read_bytes(), {}, url)
        except Exception:  # a fixture of a broken feed
            continue
        entries.extend((source, e) for e in parsed.entries)
    sets["fixtures"] = entries
    return sets, TopicMatcher(topics), entries


def _digest(prepared: Any) -> bytes:
    r = prepared.record
    row = json.dumps(
        [
            r.id,
            r.title,
            r.text,
            [[m.topic_id, m.record_id, list(m.terms)] for m in prepared.matches],
            prepared.time.isoformat(),
            prepared.fingerprint_json,
        ],
        ensure_ascii=False,
    )
    return hashlib.sha256(row.encode("utf-8", "surrogatepass")).digest()


def worker(code: Path, passes: int, per_record: Path | None) -> dict[str, Any]:
    """One process: load with ``code``'s package, prepare every set ``passes`` times."""
    sys.path.insert(0, str(code))
    if str(ROOT) not in sys.path:
        sys.path.insert(1, str(ROOT))
    from aggregator import normalize
    from aggregator.ingest.prepare import prepare

    sets, matcher, _ = _load_sets(_shared())
    now = EPOCH + timedelta(days=3650)
    out: dict[str, Any] = {"code": str(code), "sets": {}}
    total = hashlib.sha256()
    rows: list[str] = []
    for name in SETS:
        items = sets[name]
        times = []
        digests: list[bytes] = []
        for p in range(passes):
            start = time.process_time()
            if name == "fixtures":
                prepared = [
                    prepare(normalize.record_from_entry(e, source, now), matcher, now)
                    for source, e in items
                ]
            else:
                prepared = [prepare(r, matcher, now) for r in items]
            times.append(time.process_time() - start)
            if p == 0:
                digests = [_digest(x) for x in prepared]
                rows.extend(
                    f"{name}\t{x.record.id}\t{d.hex()[:16]}"
                    for x, d in zip(prepared, digests, strict=True)
                )
        h = hashlib.sha256(b"".join(digests))
        total.update(h.digest())
        out["sets"][name] = {
            "n": len(items),
            "hash": h.hexdigest()[:16],
            "cold": times[0],
            "warm": min(times[1:]) if passes > 1 else times[0],
        }
    out["hash"] = total.hexdigest()[:16]
    if per_record:
        per_record.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return out


def _run(code: Path, passes: int) -> dict[str, Any]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", str(code)]
    cmd += ["--passes", str(passes)]
    res = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ}, check=False)
    if res.returncode:
        sys.stderr.write(res.stderr)
        raise SystemExit(f"worker for {code} failed")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    ap.add_argument("--baseline", type=Path, help="another checkout, timed in the same run")
    ap.add_argument("--rounds", type=int, default=3, help="fresh processes per checkout")
    ap.add_argument("--passes", type=int, default=3, help="passes over every set per process")
    ap.add_argument("--per-record", type=Path, help="write one hash per record to this file")
    ap.add_argument("--worker", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(args.worker, args.passes, args.per_record)))
        return 0
    if args.per_record:
        worker(ROOT, 1, args.per_record)
    codes = [ROOT] + ([args.baseline.resolve()] if args.baseline else [])
    best: dict[Path, dict[str, Any]] = {}
    for _ in range(max(1, args.rounds)):
        for code in codes:  # alternate, so load on the machine hits both alike
            res = _run(code, args.passes)
            prev = best.get(code)
            if prev is None:
                best[code] = res
                continue
            for name, s in res["sets"].items():
                for key in ("cold", "warm"):
                    prev["sets"][name][key] = min(prev["sets"][name][key], s[key])
    for code in codes:
        res = best[code]
        print(f"{code}: prepare hash {res['hash']}")
        for name in SETS:
            s = res["sets"][name]
            n = s["n"]
            print(
                f"  {name:9} {n:5d} records  hash {s['hash']}  "
                f"cold {n / s['cold']:8.0f}/s ({1000 * s['cold'] / n:.3f} ms)  "
                f"warm {n / s['warm']:8.0f}/s ({1000 * s['warm'] / n:.3f} ms)"
            )
    if args.baseline:
        mine, base = best[ROOT], best[args.baseline.resolve()]
        same = "same hash" if mine["hash"] == base["hash"] else "HASH DIFFERS"
        print(f"speed-up over {args.baseline} (CPU, best of {args.rounds} rounds), {same}:")
        for name in SETS:
            a, b = mine["sets"][name], base["sets"][name]
            print(
                f"  {name:9} cold x{b['cold'] / a['cold']:.2f}  warm x{b['warm'] / a['warm']:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
