"""``aggregator import`` as a user runs it: records/s net of start-up, and the start-up itself.

    python benchmarks/import_bench.py                          # this checkout
    python benchmarks/import_bench.py --baseline ../other       # and another checkout, same run

Three folders in the seed format (``NNN_<id>.txt`` + ``index.jsonl``) are imported, each into a
fresh SQLite store, by the real command (``python -m aggregator import``, a new process):

- ``one``: a single record: the command's start-up (interpreter, imports, store, watchlist);
- ``articles``: ``--articles`` full articles, the ECB+ dev set repeated with an edition line
  and a month per copy (so every one is stored, and each copy's dedup window holds one copy);
- ``headlines``: the UCI dev headlines (3,285, 3,279 distinct), published times as given.

Every figure is CPU time of the command's process (user + system), not wall time: on a
shared machine the wall time mostly measures the other processes. The start-up is the best
of three one-record imports into a store that exists (the record is known by then);
``new store s`` the same into a new store (migrations run). The rate is
records / (seconds - the new-store one-record import's seconds). The topics are broad enough
that every record matches one (a record matching none takes a shorter path). ``--baseline``
runs the same imports with another checkout's ``aggregator`` package (PYTHONPATH) in the same
run, for the ratio.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
WATCHLIST = """version: 1
topics:
  - id: news
    title: News
    rules:
      any: [the, a, of, to, in]
  - id: disasters
    title: Disasters
    rules:
      any: ["earthquake*", "fire*", "storm*"]
sources: []
"""


def _shared() -> Path:
    for base in (ROOT.parent, ROOT.parent.parent, Path("/work")):
        if (base / "shared" / "clustering-dev").is_dir():
            return base / "shared"
    return ROOT.parent / "shared"


def _write(folder: Path, items: list[tuple[str, str, datetime]]) -> int:
    """Record files and an index with title and published time; the number written (a text
    repeated word for word is written once: an import refuses two files of one id)."""
    sys.path.insert(0, str(ROOT))
    from aggregator import records

    folder.mkdir(parents=True)
    seen: set[str] = set()
    with (folder / "index.jsonl").open("w", encoding="utf-8") as index:
        for i, (title, body, when) in enumerate(items):
            text = f"{title}\n\n{body.replace(chr(10), chr(10) * 2)}\n"
            rid = records.record_id(None, text)
            if rid in seen:
                continue
            seen.add(rid)
            name = f"{i:05d}_{rid}.txt"
            (folder / name).write_text(text, encoding="utf-8")
            row = {"id": rid, "title": title, "published": when.isoformat(), "language": "en"}
            index.write(json.dumps(row) + "\n")
    return len(seen)


def build(tmp: Path, articles: int) -> dict[str, tuple[Path, int]]:
    shared = _shared() / "clustering-dev"
    ecb = [json.loads(x) for x in (shared / "ecbplus-dev.jsonl").read_text().splitlines() if x]
    full = []
    for n in range(articles):
        copy, art = divmod(n, len(ecb))
        body = ecb[art]["text"] + (f"\nEdition {copy}." if copy else "")
        full.append((ecb[art]["title"], body, EPOCH + timedelta(days=30 * copy, minutes=art)))
    uci = [
        json.loads(x) for x in (shared / "uci-headlines-dev.jsonl").read_text().splitlines() if x
    ]
    uci.sort(key=lambda a: (a["date"], a["id"]))
    heads = [(a["title"], a["title"], datetime.fromisoformat(a["date"])) for a in uci]
    out = {}
    for name, items in (("one", full[:1]), ("articles", full), ("headlines", heads)):
        out[name] = (tmp / name, _write(tmp / name, items))
    return out


def run_import(code: Path, folder: Path, tmp: Path, db: Path | None = None) -> float:
    """CPU seconds (user + system) of one ``aggregator import`` of ``folder`` into ``db``
    (default: a fresh store). CPU, not wall: on a shared machine the wall time measures the
    other processes too."""
    db = db or tmp / f"db-{time.monotonic_ns()}.sqlite"
    env = dict(os.environ)
    env |= {
        "AGGREGATOR_DB": f"sqlite:///{db}",
        "AGGREGATOR_CONFIG": str(tmp / "watchlist.yaml"),
        "PYTHONPATH": str(code),
        "AGGREGATOR_LOG_LEVEL": "WARNING",
    }
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    done = subprocess.run(
        [sys.executable, "-m", "aggregator", "import", str(folder)],
        env=env,
        capture_output=True,
        text=True,
        cwd=tmp,
        check=False,
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    elapsed = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if done.returncode != 0:
        raise SystemExit(f"import failed ({code}):\n{done.stdout}\n{done.stderr}")
    return elapsed


def measure(code: Path, folders: dict[str, tuple[Path, int]], tmp: Path) -> dict[str, float]:
    # Start-up: the best of three one-record imports (a cold disk cache is not the command),
    # into a new store (migrations run) and into one that exists (the record is then known).
    one = min(run_import(code, folders["one"][0], tmp) for _ in range(3))
    db = tmp / f"kept-{time.monotonic_ns()}.sqlite"
    run_import(code, folders["one"][0], tmp, db)
    kept = min(run_import(code, folders["one"][0], tmp, db) for _ in range(3))
    out = {"start-up s": kept, "new store s": one}
    for name in ("articles", "headlines"):
        folder, n = folders[name]
        seconds = run_import(code, folder, tmp)
        out[f"{name}/s"] = n / max(seconds - one, 1e-9)
        out[f"{name} s"] = seconds
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--articles", type=int, default=2000)
    parser.add_argument("--baseline", type=Path, help="another checkout to measure in this run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as name:
        tmp = Path(name)
        (tmp / "watchlist.yaml").write_text(WATCHLIST, encoding="utf-8")
        folders = build(tmp, args.articles)
        runs = {"this checkout": measure(ROOT, folders, tmp)}
        if args.baseline is not None:
            runs["baseline"] = measure(args.baseline.resolve(), folders, tmp)
    n_art, n_head = folders["articles"][1], folders["headlines"][1]
    print(
        f"aggregator import: {n_art} full articles, {n_head} headlines, SQLite; "
        "CPU seconds of the command (user + system)"
    )
    keys = ["start-up s", "new store s", "articles s", "articles/s", "headlines s", "headlines/s"]
    print(f"{'':16}" + "".join(f"{k:>14}" for k in keys))
    for label, fig in runs.items():
        print(f"{label:16}" + "".join(f"{fig[k]:>14.2f}" for k in keys))
    if "baseline" in runs:
        a, b = runs["this checkout"], runs["baseline"]
        print(
            f"ratio: start-up {b['start-up s'] / a['start-up s']:.1f}x shorter, articles "
            f"{a['articles/s'] / b['articles/s']:.1f}x, headlines "
            f"{a['headlines/s'] / b['headlines/s']:.1f}x the baseline's records/s"
        )


if __name__ == "__main__":
    main()
