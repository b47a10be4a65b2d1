"""Extraction quality and speed on both extraction dev sets (one command, no network).

    python benchmarks/extract_bench.py [--repeat 3] [--trafilatura] [--kfold 5] [--loso]
        [--cleaneval] [--data ../shared/extraction-dev] [--data2 ../shared/extraction-dev2]
        [--worst 10 --subset dragnet]

Subsets scored (each page once; a page's subset is where it comes from):

* ``aeb``: ``extraction-dev`` (scrapinghub's article-extraction benchmark, dev half): the lead
  and body are scored (its ground truth is the article body without the headline);
* ``pagesignal``, ``dragnet``, ``readability``, ``cleanportaleval``: ``extraction-dev2``, the
  whole record text is scored (lead, title, body: the gold conventions differ by subset, see
  that folder's README); ``cleaneval`` (``--cleaneval``) is reported apart.

Metric (scrapinghub's): tokens are runs of ``\\w``, each text a multiset of 4-token shingles,
per-page precision and recall; precision averaged over pages with output, recall over pages
with truth; F1 the harmonic mean of the two means. "set 2" pools the pages of its four subsets.

Speed: pages per CPU-second of one core (process time of parse + extraction over all pages;
best of ``--repeat`` interleaved runs, caches reset before each run), with the ratio against
trafilatura (``--trafilatura``; benchmark-only dependency, the ``bench`` extra) and a bare
selectolax ``<p>``-text baseline measured in the same run.

``--kfold K``: within-subset page-level K-fold validation, the estimate for unseen pages of
the same sources. Each page's fold is a stable hash of its id (sha256 mod K); for each fold the
classifier is trained on the other folds of every subset and scores the fold's pages. Prints,
per subset, the F1 of all out-of-fold predictions pooled, the mean and minimum of the per-fold
F1, and trafilatura's figures on the same pages (``--trafilatura``). With ``--worst N`` the
worst pages listed are the out-of-fold ones.

``--loso``: leave-one-subset-out validation of the block classifier. For each subset, the
classifier is trained (``benchmarks/train_extract.py``) on the other subsets only and scored on
the one left out; prints each held-out subset's F1 and the mean and minimum.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import re
import sys
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from selectolax.lexbor import LexborHTMLParser

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: make ``benchmarks`` importable
    sys.path.insert(0, str(ROOT))

from aggregator.errors import ExtractionError  # noqa: E402
from aggregator.extract import extract_article  # noqa: E402
from aggregator.extract.article import reset_caches  # noqa: E402
from aggregator.extract.classifier import BlockModel, load_default_model  # noqa: E402
from aggregator.records import block_plain_text  # noqa: E402

_TOKEN_RE = re.compile(r"\w+")
# ../shared beside the checkout; a worktree one level deeper (wt/NAME) finds it further up.
_SHARED = next(
    (
        parent / "shared"
        for parent in Path(__file__).resolve().parents[1:]
        if (parent / "shared" / "extraction-dev").is_dir()
    ),
    Path(__file__).resolve().parents[2] / "shared",
)
DEFAULT_DATA = _SHARED / "extraction-dev"
DEFAULT_DATA2 = _SHARED / "extraction-dev2"
SET1 = ("aeb",)
SET2 = ("pagesignal", "dragnet", "readability", "cleanportaleval")


@dataclass(frozen=True, slots=True)
class Page:
    pid: str
    subset: str
    html: str
    url: str
    truth: str
    whole: bool  # score the whole record text (title included), else lead + body


def _read_html(folder: Path, pid: str) -> str:
    raw = gzip.decompress((folder / "html" / f"{pid}.html.gz").read_bytes())
    return raw.decode("utf-8", errors="replace")


def load_pages(data: Path, data2: Path, cleaneval: bool = False) -> list[Page]:
    """Every dev page of both sets (and CleanEval's when asked), sorted by subset and id."""
    pages: list[Page] = []
    truth = json.loads((data / "ground-truth.json").read_text(encoding="utf-8"))
    for pid in sorted(truth):
        entry = truth[pid]
        html = _read_html(data, pid)
        pages.append(Page(pid, "aeb", html, entry["url"], entry["articleBody"], False))
    folders = [data2] + ([data2 / "cleaneval"] if cleaneval else [])
    for folder in folders:
        truth = json.loads((folder / "ground-truth.json").read_text(encoding="utf-8"))
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        for pid in sorted(truth, key=lambda p: (manifest[p]["subset"], p)):
            entry = truth[pid]
            subset = manifest[pid]["subset"]
            html = _read_html(folder, pid)
            pages.append(Page(pid, subset, html, entry["url"], entry["articleBody"], True))
    return pages


def shingles(text: str, n: int = 4) -> Counter[tuple[str, ...]]:
    tokens = _TOKEN_RE.findall(text)
    if len(tokens) < n:
        return Counter([tuple(tokens)]) if tokens else Counter()
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def precision_recall(pred: str, truth: str) -> tuple[float | None, float | None]:
    """(precision or None when nothing was extracted, recall or None when truth is empty)."""
    p, t = shingles(pred), shingles(truth)
    common = sum((p & t).values())
    precision = common / sum(p.values()) if p else None
    recall = common / sum(t.values()) if t else None
    return precision, recall


def score(pairs: list[tuple[str, str]]) -> tuple[float, float, float]:
    """(F1, mean precision, mean recall) of (prediction, truth) pairs."""
    ps: list[float] = []
    rs: list[float] = []
    for pred, truth in pairs:
        precision, recall = precision_recall(pred, truth)
        if precision is not None:
            ps.append(precision)
        if recall is not None:
            rs.append(recall)
    mp = sum(ps) / len(ps) if ps else 0.0
    mr = sum(rs) / len(rs) if rs else 0.0
    f1 = 2 * mp * mr / (mp + mr) if mp + mr else 0.0
    return f1, mp, mr


Extractor = Callable[[Page], str]


def make_ours(model: BlockModel | None = None) -> Extractor:
    def ours(page: Page) -> str:
        try:
            article = extract_article(page.html, page.url or None, model=model)
        except ExtractionError:  # neither title nor text: the service keeps nothing either
            return ""
        if page.whole:
            return article.text
        lines = [article.lead] if article.lead else []
        lines.extend(block_plain_text(b) for b in article.blocks)
        return "\n".join(lines)

    return ours


def baseline(page: Page) -> str:
    """Bare selectolax: the text of every <p>."""
    tree = LexborHTMLParser(page.html)
    return "\n".join(p.text(deep=True) for p in tree.css("p"))


def trafilatura_extract(page: Page) -> str:
    import trafilatura  # benchmark-only dependency (the ``bench`` extra)

    # Comments are not article body (no ground truth keeps them).
    return trafilatura.extract(page.html, url=page.url or None, include_comments=False) or ""


def run_once(fn: Extractor, pages: list[Page]) -> tuple[list[str], float]:
    reset_caches()  # cold caches: every run starts like a fresh process
    # CPU time of this process: other work on a shared machine does not count against us.
    start = time.process_time()
    preds = [fn(page) for page in pages]
    return preds, time.process_time() - start


def _groups(pages: list[Page]) -> list[tuple[str, list[int]]]:
    subsets = list(dict.fromkeys(p.subset for p in pages))
    groups = [(s, [i for i, p in enumerate(pages) if p.subset == s]) for s in subsets]
    set2 = [i for i, p in enumerate(pages) if p.subset in SET2]
    if set2:
        groups.append(("set 2 (pooled)", set2))
    return groups


def _print_scores(
    names: list[str], preds: dict[str, list[str]], pages: list[Page]
) -> dict[tuple[str, str], float]:
    f1s: dict[tuple[str, str], float] = {}
    print(f"{'subset':18} {'pages':>5}  " + "  ".join(f"{n[:20]:>20}" for n in names))
    print(f"{'':18} {'':>5}  " + "  ".join(f"{'F1    P     R':>20}" for _ in names))
    for label, idx in _groups(pages):
        cells = []
        for name in names:
            f1, mp, mr = score([(preds[name][i], pages[i].truth) for i in idx])
            f1s[(name, label)] = f1
            cells.append(f"{f1:.3f} {mp:.3f} {mr:.3f}".rjust(20))
        print(f"{label:18} {len(idx):5}  " + "  ".join(cells))
    return f1s


def loso(pages: list[Page]) -> None:
    """Train on all subsets but one, score the one left out; per subset, mean and minimum."""
    # The training script's own functions; the blocks are collected once for all folds.
    from benchmarks.train_extract import collect_by_page, fit_model

    subsets = [s for s in dict.fromkeys(p.subset for p in pages) if s != "cleaneval"]
    print(
        f"\nleave-one-subset-out (trained without the subset, scored on it; {len(subsets)} folds)"
    )
    print(f"{'held-out subset':18} {'F1':>6} {'P':>6} {'R':>6}   {'default model F1':>16}")
    shipped = load_default_model()
    default = make_ours(shipped)
    held: list[float] = []
    data = collect_by_page(pages, shipped.lift)
    for subset in subsets:
        train_data = [d for d, p in zip(data, pages, strict=True) if d and p.subset != subset]
        test_pages = [p for p in pages if p.subset == subset]
        # The shipped model's shape (region lift, hidden units), trained without the subset.
        model = fit_model(train_data, lift=shipped.lift, hidden=shipped.w1.shape[1])
        fn = make_ours(model)
        f1, mp, mr = score([(fn(p), p.truth) for p in test_pages])
        f1_default = score([(default(p), p.truth) for p in test_pages])[0]
        held.append(f1)
        print(f"{subset:18} {f1:6.3f} {mp:6.3f} {mr:6.3f}   {f1_default:16.3f}")
    mean = sum(held) / len(held)
    print(f"{'mean / min':18} {mean:6.3f} {min(held):6.3f}  (spread {max(held) - min(held):.3f})")


def fold_of(pid: str, k: int) -> int:
    """The page's fold of ``k``: a stable hash of its id, whatever the order of the pages."""
    return int(hashlib.sha256(pid.encode("utf-8")).hexdigest()[:12], 16) % k


def kfold(pages: list[Page], k: int, others: dict[str, list[str]] | None = None) -> list[str]:
    """Within-subset page-level k-fold: train on the other folds of every subset, score the
    fold held out. Returns the out-of-fold predictions (one per page, "" for CleanEval)."""
    from benchmarks.train_extract import collect_by_page, fit_model

    others = others or {}
    shipped = load_default_model()
    data = collect_by_page(pages, shipped.lift)
    folds = [fold_of(p.pid, k) for p in pages]
    preds = [""] * len(pages)
    for f in range(k):
        train_data = [d for d, g in zip(data, folds, strict=True) if d and g != f]
        model = fit_model(train_data, lift=shipped.lift, hidden=shipped.w1.shape[1])
        fn = make_ours(model)
        for i, page in enumerate(pages):
            if folds[i] == f and page.subset != "cleaneval":
                preds[i] = fn(page)
    names = ["k-fold", *others]
    print(
        f"\n{k}-fold within-subset validation (page folds by sha256 of the id; trained on the "
        "other folds of every subset)"
    )
    header = "  ".join(f"{n[:24]:>24}" for n in names)
    print(f"{'subset':18} {'pages':>5}  {header}")
    sub = "  ".join(f"{'pooled  mean   min':>24}" for _ in names)
    print(f"{'':18} {'':>5}  {sub}")
    rows = [(s, idx) for s, idx in _groups(pages) if s != "cleaneval"]
    for label, idx in rows:
        cells = []
        for name in names:
            got = preds if name == "k-fold" else others[name]
            pooled = score([(got[i], pages[i].truth) for i in idx])[0]
            per_fold = [
                score([(got[i], pages[i].truth) for i in idx if folds[i] == f])[0]
                for f in range(k)
                if any(folds[i] == f for i in idx)
            ]
            mean = sum(per_fold) / len(per_fold)
            cells.append(f"{pooled:.3f} {mean:.3f} {min(per_fold):.3f}".rjust(24))
        print(f"{label:18} {len(idx):5}  " + "  ".join(cells))
    return preds


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--data2", type=Path, default=DEFAULT_DATA2)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--trafilatura", action="store_true")
    ap.add_argument("--cleaneval", action="store_true", help="also score CleanEval (apart)")
    ap.add_argument("--loso", action="store_true", help="leave-one-subset-out validation")
    ap.add_argument(
        "--kfold", type=int, default=0, help="within-subset page-level k-fold validation (K)"
    )
    ap.add_argument("--subset", help="score only this subset")
    ap.add_argument("--model", type=Path, help="a block model file instead of the shipped one")
    ap.add_argument("--worst", type=int, default=0, help="list the N worst pages by F1")
    args = ap.parse_args(argv)

    model = None
    if args.model:
        model = BlockModel.from_json(json.loads(args.model.read_text(encoding="utf-8")))
    pages = load_pages(args.data, args.data2, args.cleaneval)
    if args.subset:
        pages = [p for p in pages if p.subset == args.subset]
        if not pages:
            ap.error(f"no pages in subset {args.subset!r}")
    contenders: list[tuple[str, Extractor]] = [
        ("selectolax <p>", baseline),
        ("aggregator.extract", make_ours(model)),
    ]
    if args.trafilatura:
        try:
            import trafilatura  # noqa: F401
        except ImportError:
            print("trafilatura is not installed (pip install -e '.[bench]'); skipping it")
        else:
            contenders.append(("trafilatura", trafilatura_extract))

    print(f"{len(pages)} pages, best of {args.repeat} interleaved runs, one core")
    best = {name: float("inf") for name, _ in contenders}
    preds: dict[str, list[str]] = {}
    for _ in range(args.repeat):
        # Interleaved, so load from other processes on the machine hits all contenders alike.
        for name, fn in contenders:
            preds[name], elapsed = run_once(fn, pages)
            best[name] = min(best[name], elapsed)
    names = [name for name, _ in contenders]
    _print_scores(names, preds, pages)
    rates = {name: len(pages) / best[name] for name in names}
    print("pages/s: " + ", ".join(f"{n} {rates[n]:.0f}" for n in names))
    ours_rate = rates["aggregator.extract"]
    for other in names:
        if other != "aggregator.extract":
            print(f"speed ratio aggregator.extract / {other}: x{ours_rate / rates[other]:.2f}")
    ours = preds["aggregator.extract"]
    if args.kfold:
        others = {n: preds[n] for n in names if n == "trafilatura"}
        ours = kfold(pages, args.kfold, others)
    if args.worst:
        label = "out-of-fold" if args.kfold else "in-sample"
        print(f"\nworst {args.worst} pages ({label})")
        rows = []
        for i, page in enumerate(pages):
            if page.subset == "cleaneval" and args.kfold:
                continue
            p, r = precision_recall(ours[i], page.truth)
            p, r = p or 0.0, r or 0.0
            rows.append((2 * p * r / (p + r) if p + r else 0.0, p, r, page.subset, page.pid))
        rows.sort()
        for f, p, r, subset, pid in rows[: args.worst]:
            print(f"  {f:.3f} P={p:.3f} R={r:.3f} {subset} {pid[:16]}")
    if args.loso:
        loso(pages)
    return 0


if __name__ == "__main__":
    sys.exit(main())
