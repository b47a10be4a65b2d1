"""The window rebuild: load the ingest window from a store of N records, as a process's first
ingest does (``ingest_driver._catch_up`` on an empty window).

    python benchmarks/window_bench.py --sizes 2000,20000,60000,100000
    python benchmarks/window_bench.py --sizes 20000 --repeat 3 --baseline /work/main

The stores are built once (``ingest_bench._prefill``: the ECB+ articles, then other stories of
their shape, each its own development, filed over six days) under ``--dir`` and reused. Each
measurement runs in a fresh process: CPU seconds of the rebuild (reading the rows, packing the
fingerprints, indexing, the developments' state), of reading the rows alone, and the process's
RSS growth after ``gc.collect`` and ``malloc_trim`` (MB per 1,000 records held). ``digest`` is a
hash of what the window holds (record ids, developments, times, packed fingerprints, words,
index keys, development states): equal digests, equal windows. ``--baseline`` runs the same
measurement with another tree's ``aggregator`` (its worktree root), interleaved.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import gc
import hashlib
import json
import os
import subprocess
import sys
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _trim() -> None:
    gc.collect()
    with contextlib.suppress(OSError):  # not glibc
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def build(path: Path, n: int) -> None:
    """A store of ``n`` records at ``path`` (kept when it exists)."""
    if path.exists():
        return
    sys.path.insert(0, str(ROOT))
    from aggregator.store import open_store
    from benchmarks.ingest_bench import CORPUS, EPOCH, _prefill, load_records

    tmp = path.with_suffix(".part")
    tmp.unlink(missing_ok=True)
    store = open_store(f"sqlite:///{tmp}")
    _prefill(store, load_records(CORPUS, 1), n, EPOCH + timedelta(days=400))
    store.close()
    tmp.rename(path)


def digest(window: object) -> str:
    """A hash of what ``window`` holds (for comparing two trees' rebuilds)."""
    w: dict[str, object] = vars(window)
    h = hashlib.sha256()
    n = w["_n"]
    assert isinstance(n, int)
    h.update(repr((w["_rids"], w["_dev_ids"], w["last_seq"])).encode())
    for name in ("_dev", "_time", "_seq", "_alive"):
        h.update(w[name][:n].tobytes())  # type: ignore[index]
    for data in w["_packed"]:  # type: ignore[attr-defined]
        h.update(data or b"-")
    vocab = w["vocab"]
    h.update("\n".join(vocab.words).encode())  # type: ignore[attr-defined]
    h.update(bytes(w["_key_data"]))  # type: ignore[arg-type]
    h.update(w["_ik"].tobytes())  # type: ignore[attr-defined]
    h.update(w["_is"].tobytes())  # type: ignore[attr-defined]
    for dev_id, state in sorted(w["developments"].items()):  # type: ignore[attr-defined]
        h.update(
            repr((dev_id, state.representative_id, state.title, sorted(state.topics))).encode()
        )
        for m in state.members:
            h.update(repr((m.time, m.seq, m.record_id, m.title)).encode())
            h.update(m.packed or b"-")
    return h.hexdigest()[:16]


def measure(path: Path) -> dict[str, float | str | int]:
    """Rebuild a window from the store at ``path`` (in this process)."""
    from aggregator import ingest_driver
    from aggregator.ingest.window import Window
    from aggregator.model import DedupOptions, IngestOptions
    from aggregator.store import open_store

    store = open_store(f"sqlite:///{path}")
    options, tuning = DedupOptions(), IngestOptions()
    # Reading the rows alone (SQL and row objects), for the share of the rebuild that is SQL.
    with store.write() as wtx:
        t0 = time.process_time()
        rows = 0
        now = _MIN
        for r in wtx.window_records(after_seq=0, since=_MIN):
            rows += 1
            now = max(now, r.time)
        read_s = time.process_time() - t0
    _trim()
    rss0 = _rss_mb()
    window = Window(store.instance, tuning, options.window_days)
    with store.write() as wtx:
        t0 = time.process_time()
        ingest_driver._catch_up(wtx, window, (), now + timedelta(minutes=1))
        load_s = time.process_time() - t0
    _trim()
    rss = _rss_mb() - rss0
    held = len(window)
    out: dict[str, float | str | int] = {
        "rows": rows,
        "held": held,
        "load_s": load_s,
        "read_s": read_s,
        "mb_per_1000": rss / held * 1000 if held else 0.0,
        "digest": digest(window),
    }
    store.close()
    return out


_MIN = __import__("datetime").datetime(1970, 1, 1, tzinfo=__import__("datetime").UTC)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--sizes", default="2000,20000,60000,100000")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/window_bench"))
    ap.add_argument("--repeat", type=int, default=1, help="measurements per size and tree")
    ap.add_argument("--baseline", type=Path, help="another worktree, measured interleaved")
    ap.add_argument("--one", type=Path, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(measure(args.one)))
        return
    args.dir.mkdir(parents=True, exist_ok=True)
    trees = [("this", ROOT)] + ([("baseline", args.baseline.resolve())] if args.baseline else [])
    print(
        f"{'records':>8} {'tree':>8} {'load CPU s':>10} {'ms/record':>9} {'read rows s':>11} "
        f"{'MB/1000':>8} digest"
    )
    for n in [int(x) for x in args.sizes.split(",")]:
        path = args.dir / f"store_{n}.db"
        build(path, n)
        for _ in range(args.repeat):
            for name, tree in trees:
                env = dict(os.environ, PYTHONPATH=str(tree), PYTHONHASHSEED="0")
                proc = subprocess.run(
                    [sys.executable, __file__, "--one", str(path)],
                    env=env,
                    cwd=tree,
                    capture_output=True,
                    text=True,
                    check=True,
                )
                r = json.loads(proc.stdout.strip().splitlines()[-1])
                per = float(r["load_s"]) / max(int(r["rows"]), 1) * 1000
                print(
                    f"{n:>8} {name:>8} {r['load_s']:>10.2f} {per:>9.3f} {r['read_s']:>11.2f} "
                    f"{r['mb_per_1000']:>8.2f} {r['digest']}",
                    flush=True,
                )


if __name__ == "__main__":
    main()
