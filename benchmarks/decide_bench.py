"""The decide stage alone: CPU per dedup decision (the window's candidates, then
``dedup.decide``) as the window grows, without a database, fetching or fingerprinting.

    python benchmarks/decide_bench.py                        # worlds 1, 4, 12
    python benchmarks/decide_bench.py --worlds 1,4,12 --baseline /work/main

The stream: the ECB+ dev articles spread evenly among the UCI dev headlines
(``../shared/clustering-dev``), fingerprinted once (not timed). ``--worlds W`` plays W copies
of it interleaved record by record, copy k with its names, key terms, headline words and LSH
bands renamed (``other_story``): W stories of each shape run in parallel, so the
window grows to W x 3,654 records while each record's candidates stay those of its own copy,
and they are spread over the whole window as the cycle's are. Every record is filed within
the dedup window of the last (the stream spans six days). Timed, in CPU seconds: for each
record, ``Window.candidates`` and ``dedup.decide``; then the record joins the window (untimed)
in the development decided. Printed per W: decisions, candidates per decision, CPU per
decision and per candidate, the process's RSS growth over the stream, and a digest of every
decision (equal between trees when decisions are unchanged).

``--baseline DIR`` runs the same in another checkout (its ``aggregator``), one after the
other per W, in fresh processes, and prints both.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the child imports the tree's own aggregator
    from aggregator import dedup

ROOT = Path(__file__).resolve().parent.parent
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


def _shared() -> Path:
    for base in (ROOT.parent, ROOT.parent.parent, Path("/work")):
        if (base / "shared" / "clustering-dev").is_dir():
            return base / "shared"
    return ROOT.parent / "shared"


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _stream(shared: Path) -> list[tuple[str, str, str | None]]:
    """(title, text, language): the ECB+ articles spread evenly among the UCI headlines."""
    dev = shared / "clustering-dev"
    ecb = [json.loads(x) for x in (dev / "ecbplus-dev.jsonl").read_text().splitlines() if x]
    uci = [json.loads(x) for x in (dev / "uci-headlines-dev.jsonl").read_text().splitlines() if x]
    uci.sort(key=lambda a: (a["date"], a["id"]))
    out: list[tuple[str, str, str | None]] = []
    every = max(1, len(uci) // max(1, len(ecb)))
    articles = iter(ecb)
    for i, h in enumerate(uci):
        out.append((h["title"], h.get("text", ""), "en"))
        if i % every == 0:
            art = next(articles, None)
            if art is not None:
                out.append((art["title"], art["text"], art.get("lang", "en")))
    out += [(a["title"], a["text"], a.get("lang", "en")) for a in articles]
    return out


def other_story(fp: dedup.Fingerprint, k: int) -> dedup.Fingerprint:
    """``fp`` as another story of the same shape: its names, headline words and key terms
    renamed (the rest of its vocabulary is the language's, shared with every story) and its
    LSH bands its own. Also ``ingest_bench``'s."""
    names = set(fp.entities) | set(fp.key_terms) | set(fp.title_terms)

    def own(terms: Sequence[str]) -> tuple[str, ...]:
        return tuple(f"{t}~{k}" if t in names else t for t in terms)

    return replace(
        fp,
        bands=tuple(f"{b}~{k}" for b in fp.bands),
        key_terms=own(fp.key_terms),
        terms=own(fp.terms),
        entities=own(fp.entities),
        title_terms=own(fp.title_terms),
        head_terms=own(fp.head_terms),
        # ``replace`` would hand the copy the original's cached vectors (the same dicts),
        # built from the terms before renaming: fresh ones instead.
        _vector={},
        _head={},
        _names={},
    )


def child(worlds: int, shared: Path) -> dict[str, float | int | str]:
    from aggregator import dedup
    from aggregator.ingest.window import Window
    from aggregator.model import DedupOptions, IngestOptions

    base = [dedup.fingerprint(t, x, lang) for t, x, lang in _stream(shared)]
    options = DedupOptions()
    window = Window("bench", IngestOptions(), options.window_days)
    total = len(base) * worlds
    step = timedelta(days=6) / total
    gc.collect()
    rss0 = _rss_mb()
    cpu = 0.0
    decisions = candidates = 0
    lines: list[str] = []
    n = 0
    for j, fp0 in enumerate(base):
        for k in range(worlds):
            fp = fp0 if k == 0 else other_story(fp0, k)
            when = EPOCH + step * n
            n += 1
            t0 = time.process_time()
            cands = window.candidates(fp, when)
            decision = dedup.decide(fp, when, cands, options)
            cpu += time.process_time() - t0
            decisions += 1
            candidates += len(cands)
            rid = f"r{j}w{k}"
            dev = decision.development_id or f"d{j}w{k}"
            window.add(rid, dev, when, n, fp)
            lines.append(f"{rid}\t{dev}\t{decision.reason}\t{decision.score:.4f}")
    gc.collect()
    return {
        "worlds": worlds,
        "records": total,
        "decisions": decisions,
        "candidates": candidates,
        "cpu": cpu,
        "rss_mb": _rss_mb() - rss0,
        "digest": hashlib.sha256("\n".join(lines).encode()).hexdigest()[:16],
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--worlds", default="1,4,12")
    parser.add_argument("--baseline", type=Path, help="another checkout, measured in this run")
    parser.add_argument("--shared", type=Path, default=_shared())
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child is not None:
        print(json.dumps(child(args.child, args.shared)))
        return
    trees = [("this tree", ROOT)]
    if args.baseline is not None:
        trees.insert(0, ("baseline", args.baseline.resolve()))
    print(
        f"{'tree':10}{'worlds':>7}{'records':>9}{'cand/dec':>9}{'ms CPU/dec':>11}"
        f"{'µs/cand':>9}{'RSS +MB':>9}  digest"
    )
    for worlds in [int(w) for w in args.worlds.split(",")]:
        for name, tree in trees:
            env = dict(os.environ, PYTHONPATH=str(tree))
            out = subprocess.run(
                [sys.executable, __file__, "--child", str(worlds), "--shared", str(args.shared)],
                env=env,
                check=True,
                capture_output=True,
                text=True,
                cwd=tree,
            ).stdout
            r = json.loads(out.strip().splitlines()[-1])
            dec, cand = int(r["decisions"]), int(r["candidates"])
            print(
                f"{name:10}{worlds:>7}{int(r['records']):>9}{cand / dec:>9.1f}"
                f"{float(r['cpu']) / dec * 1000:>11.3f}{float(r['cpu']) / cand * 1e6:>9.1f}"
                f"{float(r['rss_mb']):>9.0f}  {r['digest']}"
            )


if __name__ == "__main__":
    main()
