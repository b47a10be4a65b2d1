"""Train the block classifier of ``aggregator/extract`` on the extraction dev sets.

    python benchmarks/train_extract.py [--data ../shared/extraction-dev]
        [--data2 ../shared/extraction-dev2] [--out aggregator/extract/block_model.json]

Every block the extractor would judge on a dev page (those of the best-scoring container and
the region around it, ``aggregator.extract.article.candidate_blocks``) is labelled article text
when at least half of its word 4-shingles are in the page's ground truth (all of its words,
for a block under four words). A logistic model is fitted (L2-regularised, Newton steps, numpy
only) with each block weighted by its share of its page's words, so that every page counts
alike, as in the benchmark's metric. The threshold is the one that maximises, on the training
pages, the F1 of mean precision and mean recall computed from the blocks' word counts.

CleanEval pages are never used (their gold keeps whole pages' text). ``extract_bench.py --loso``
calls ``train`` with one subset left out, to check that the model holds on a kind of page it has
not seen.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

from aggregator.extract.article import candidate_blocks  # noqa: E402
from aggregator.extract.classifier import FEATURES, MODEL_PATH, BlockModel  # noqa: E402
from aggregator.model import BlockKind  # noqa: E402

_TOKEN_RE = re.compile(r"\w+")
L2 = 3e-3  # L2 penalty on the weights (chosen by 5-fold validation: extract_bench --kfold)
HIDDEN = 16  # units of the hidden layer
EPOCHS = 400
LIFT = 2


@dataclass(slots=True)
class PageBlocks:
    x: np.ndarray  # features, one row per block
    y: np.ndarray  # 1.0 article text, 0.0 not
    tokens: np.ndarray  # words of each block
    truth_tokens: int  # words of the ground truth


def _label(text: str, gold: set[tuple[str, ...]], gold_words: set[str]) -> tuple[bool, int]:
    toks = _TOKEN_RE.findall(text)
    if len(toks) < 4:
        return bool(toks) and all(t in gold_words for t in toks), len(toks)
    grams = [tuple(toks[i : i + 4]) for i in range(len(toks) - 3)]
    return sum(g in gold for g in grams) >= 0.5 * len(grams), len(toks)


def collect(pages: list, lift: int = LIFT) -> list[PageBlocks]:  # list[extract_bench.Page]
    return [d for d in collect_by_page(pages, lift) if d is not None]


def collect_by_page(pages: list, lift: int = LIFT) -> list[PageBlocks | None]:
    """``collect``, one entry per page (None for a CleanEval page or one without blocks), so
    that cross-validation can collect once and train on slices."""
    out: list[PageBlocks | None] = []
    for page in pages:
        if page.subset == "cleaneval":
            out.append(None)
            continue
        segs, x = candidate_blocks(page.html, page.url or None, lift=lift)
        if not segs:
            out.append(None)
            continue
        truth = _TOKEN_RE.findall(page.truth)
        gold = {tuple(truth[i : i + 4]) for i in range(len(truth) - 3)}
        words = set(truth)
        ys, ts = [], []
        for seg in segs:
            text = seg.text
            if seg.kind is BlockKind.TABLE:
                text = " ".join(" ".join(row) for row in seg.rows)
            yes, n = _label(text, gold, words)
            ys.append(1.0 if yes else 0.0)
            ts.append(max(n, 1))
        out.append(PageBlocks(x, np.array(ys), np.array(ts, dtype=np.float64), len(truth)))
    return out


def fit(
    data: list[PageBlocks], hidden: int = HIDDEN, l2: float = L2, epochs: int = EPOCHS
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
    """(mean, scale, w1, b1, w2, b2) of a one-hidden-layer network (ReLU), fitted by full-batch
    Adam on the weighted cross-entropy with an L2 penalty; fixed seed, so reproducible."""
    x = np.vstack([d.x for d in data])
    y = np.concatenate([d.y for d in data])
    sw = np.concatenate([d.tokens / d.tokens.sum() for d in data])
    sw = sw / sw.sum()
    mean = x.mean(axis=0)
    scale = x.std(axis=0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    n_features = z.shape[1]
    rng = np.random.default_rng(0)
    params = [
        rng.normal(0.0, 1.0 / np.sqrt(n_features), (n_features, hidden)),
        np.zeros(hidden),
        rng.normal(0.0, 1.0 / np.sqrt(max(hidden, 1)), hidden or n_features),
        np.zeros(1),
    ]
    moments = [np.zeros_like(p) for p in params]
    squares = [np.zeros_like(p) for p in params]
    rate, beta1, beta2 = 0.01, 0.9, 0.999
    for step in range(1, epochs + 1):
        w1, b1, w2, b2 = params
        pre = z @ w1 + b1 if hidden else z
        h = np.maximum(pre, 0.0) if hidden else z
        p = 1.0 / (1.0 + np.exp(-np.clip(h @ w2 + b2[0], -30, 30)))
        d_out = sw * (p - y)
        d_h = np.outer(d_out, w2) * (pre > 0) if hidden else np.zeros((len(z), 0))
        grads = [
            z.T @ d_h + l2 * w1,
            d_h.sum(axis=0),
            h.T @ d_out + l2 * w2,
            np.array([d_out.sum()]),
        ]
        for i, g in enumerate(grads):
            moments[i] = beta1 * moments[i] + (1 - beta1) * g
            squares[i] = beta2 * squares[i] + (1 - beta2) * g * g
            m_hat = moments[i] / (1 - beta1**step)
            v_hat = squares[i] / (1 - beta2**step)
            params[i] = params[i] - rate * m_hat / (np.sqrt(v_hat) + 1e-8)
    w1, b1, w2, b2 = params
    return mean, scale, w1, b1, w2, float(b2[0])


def choose_threshold(data: list[PageBlocks], model: BlockModel) -> float:
    """The threshold with the best F1 of mean precision and mean recall on ``data``."""
    probs = [model.proba(d.x) for d in data]
    best_t, best_f1 = 0.5, -1.0
    for t in np.arange(0.2, 0.81, 0.025):
        ps, rs = [], []
        for d, p in zip(data, probs, strict=True):
            kept = p >= t
            got = float(d.tokens[kept].sum())
            hit = float((d.tokens * d.y)[kept].sum())
            if got:
                ps.append(hit / got)
            if d.truth_tokens:
                rs.append(min(hit / d.truth_tokens, 1.0))
        mp = sum(ps) / len(ps) if ps else 0.0
        mr = sum(rs) / len(rs) if rs else 0.0
        f1 = 2 * mp * mr / (mp + mr) if mp + mr else 0.0
        if f1 > best_f1:
            best_t, best_f1 = float(t), f1
    return best_t


def train(
    pages: list, lift: int = LIFT, hidden: int = HIDDEN, l2: float = L2, epochs: int = EPOCHS
) -> BlockModel:
    """A block model trained on ``pages`` (extract_bench.Page objects)."""
    data = collect(pages, lift)
    mean, scale, w1, b1, w2, b2 = fit(data, hidden, l2, epochs)
    model = BlockModel(FEATURES, mean, scale, w1, b1, w2, b2, 0.5, lift)
    threshold = choose_threshold(data, model)
    return BlockModel(FEATURES, mean, scale, w1, b1, w2, b2, threshold, lift)


def fit_model(data: list[PageBlocks], lift: int = LIFT, hidden: int = HIDDEN) -> BlockModel:
    """A block model fitted on blocks already collected (``collect``) with this ``lift``."""
    mean, scale, w1, b1, w2, b2 = fit(data, hidden)
    model = BlockModel(FEATURES, mean, scale, w1, b1, w2, b2, 0.5, lift)
    threshold = choose_threshold(data, model)
    return BlockModel(FEATURES, mean, scale, w1, b1, w2, b2, threshold, lift)


def select(pages: list, lifts: list[int], hiddens: list[int]) -> tuple[int, int]:
    """Leave-one-subset-out F1 (of the real extraction) for each (lift, hidden units); the
    pair with the best mean over held-out subsets."""
    from benchmarks.extract_bench import make_ours, score

    pages = [p for p in pages if p.subset != "cleaneval"]
    subsets = list(dict.fromkeys(p.subset for p in pages))
    print(
        f"{'lift':>4} {'hidden':>6}  "
        + " ".join(f"{s[:10]:>10}" for s in subsets)
        + "   mean    min"
    )
    best: tuple[float, int, int] = (-1.0, LIFT, HIDDEN)
    for lift in lifts:
        data = collect_by_page(pages, lift)  # one entry per page, in page order
        for hidden in hiddens:
            f1s = []
            for subset in subsets:
                train_data = [
                    d for d, p in zip(data, pages, strict=True) if d and p.subset != subset
                ]
                model = fit_model(train_data, lift, hidden)
                fn = make_ours(model)
                f1s.append(score([(fn(p), p.truth) for p in pages if p.subset == subset])[0])
            mean = sum(f1s) / len(f1s)
            cells = " ".join(f"{f:10.3f}" for f in f1s)
            print(f"{lift:4} {hidden:6}  {cells}  {mean:.3f}  {min(f1s):.3f}", flush=True)
            best = max(best, (mean, lift, hidden))
    return best[1], best[2]


def main(argv: list[str] | None = None) -> int:
    from benchmarks.extract_bench import DEFAULT_DATA, DEFAULT_DATA2, load_pages

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--data2", type=Path, default=DEFAULT_DATA2)
    ap.add_argument("--out", type=Path, default=MODEL_PATH)
    ap.add_argument("--lift", type=int, default=LIFT)
    ap.add_argument("--hidden", type=int, default=HIDDEN)
    ap.add_argument(
        "--select",
        action="store_true",
        help="choose lift and hidden units by leave-one-subset-out F1, then train with them",
    )
    args = ap.parse_args(argv)
    pages = load_pages(args.data, args.data2)
    lift, hidden = args.lift, args.hidden
    if args.select:
        lift, hidden = select(pages, [1, 2], [0, 16])
        print(f"chosen: lift {lift}, {hidden} hidden units")
    model = train(pages, lift, hidden)
    args.out.write_text(json.dumps(model.to_json(), indent=1) + "\n", encoding="utf-8")
    print(
        f"trained on {len(pages)} pages; {hidden} hidden units; lift {lift}; "
        f"threshold {model.threshold:.3f}; wrote {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
