"""Benchmark of dedup: grouping records into developments, online, as the service does it.

Each record goes through exactly the production path: ``fingerprint`` -> candidate lookup by
shared LSH band or shared key term (the ingest ``Window`` with ``IngestOptions()``; or, with
``--retrieval memory``, an in-memory index that mimics the store's old queries) -> ``decide``.
Records arrive one by one, in several stream orders.

For each dev set (ECB+ full articles, the UCI headline stream, and ECB+ with every other article
cut to its headline), the decision's parameters are chosen by cross-validation that never scores
on what it tuned: the stories are split into folds (by ECB+ topic, so both events of a topic are
held out together; by Google-News story on the headlines); for each fold, a small grid of
``DedupOptions`` is scored on streams of the other folds' records only, the best is kept, and the
whole set is streamed with it, scoring only the held-out fold's records (every other record is
still there, as the unseen half of a real stream would be). Printed per fold and as mean, min
and spread (standard deviation over folds and orders): B-cubed P/R/F1, pairwise P, and
precision/recall of "starts a new development" (a record is published-new when it opens its
development; gold: the first record of each story in that order), beside the plain single-pass
TF-IDF centroid (IDF from the records seen so far, full scan, threshold 0.3, the classic
clustering of topic detection and tracking) scored on the same folds in the same run.

Then the shipped defaults (``DedupOptions()``) on each whole set, the fixtures' multilingual and
crisis sets, and speed: records per CPU-second of this process (``time.process_time``),
fingerprinting and candidate lookup included, against the baseline's.

One command: ``python benchmarks/dedup_bench.py`` (``--help`` for options; ``--tune`` prints the
parameters the grid picks on each whole dev set, from which the defaults were set).
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
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from aggregator import dedup
from aggregator.ingest.window import Window
from aggregator.model import DedupOptions, IngestOptions

ROOT = Path(__file__).resolve().parent.parent


def _shared() -> Path:
    """``../shared`` beside the checkout (CI, /work/main), or beside the worktrees' folder."""
    for base in (ROOT.parent, ROOT.parent.parent):
        if (base / "shared" / "clustering-dev").is_dir():
            return base / "shared"
    return ROOT.parent / "shared"


DEV = _shared() / "clustering-dev"
ECB = DEV / "ecbplus-dev.jsonl"
HEADLINES = DEV / "uci-headlines-dev.jsonl"
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
    group: str = ""  # the cross-validation unit: ECB+ topic, else the story


def _group(row: dict[str, object]) -> str:
    meta = row.get("meta")
    if isinstance(meta, dict) and meta.get("topic"):
        return f"topic:{meta['topic']}"
    return str(row["story_id"])


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
            published = row.get("published") or row.get("date")
            when = datetime.fromisoformat(published) if published else None
            out.append(
                Article(row["id"], title, text, row["story_id"], row.get("lang"), when, _group(row))
            )
    # A stream arrives in time order (the headlines); undated corpora keep the file's.
    if all(a.time is not None for a in out):
        out.sort(key=lambda a: a.time or datetime.min)
    return out


def headlines_of(articles: Sequence[Article], every: int = 2) -> list[Article]:
    """``articles`` with every ``every``-th one cut to its headline (its text emptied): a stream
    of full articles and headline-only records of the same stories."""
    return [
        replace(a, id=f"{a.id}~h", text="") if i % every == 0 else a for i, a in enumerate(articles)
    ]


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
        self.sizes: Counter[str] = Counter()  # records per development (no time bound)

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
        sizes = self.sizes
        return [
            replace(self.records[i], development_size=sizes[self.records[i].development_id])
            for i in best
        ]

    def add(
        self,
        record_id: str,
        development_id: str,
        fp: dedup.Fingerprint,
        time: datetime | None = None,
    ) -> None:
        idx = len(self.records)
        self.records.append(dedup.Candidate(record_id, development_id, fp, time))
        self.sizes[development_id] += 1
        for key in _index_keys(fp):
            self.by_key[key].append(idx)


# Candidates from the ingest window itself (``ingest.window.Window``) with these options;
# None (``--retrieval memory``): from ``MemoryIndex``.
RETRIEVAL: IngestOptions | None = IngestOptions()
_EPOCH = datetime(2026, 1, 1, tzinfo=UTC)


class WindowIndex:
    """The production candidate retrieval: an ingest ``Window`` (``IngestOptions``). Records
    without a time are filed a second apart in arrival order (their decisions get no time)."""

    def __init__(self, tuning: IngestOptions) -> None:
        self.window = Window("bench", tuning, DedupOptions().window_days)
        self.n = 0

    def _when(self, time: datetime | None) -> datetime:
        return time if time is not None else _EPOCH + timedelta(seconds=self.n)

    def candidates(self, fp: dedup.Fingerprint, time: datetime | None) -> dedup.CandidateSet:
        return self.window.candidates(fp, self._when(time))

    def add(
        self, record_id: str, development_id: str, fp: dedup.Fingerprint, time: datetime | None
    ) -> None:
        when = self._when(time)
        self.n += 1
        self.window.add(record_id, development_id, when, self.n, fp)


def _per_key_limit() -> int:
    return PER_KEY_LIMIT


def _index_keys(fp: dedup.Fingerprint) -> list[str]:
    return [f"b:{b}" for b in fp.bands] + [f"k:{k}" for k in fp.key_terms]


# Candidates: the window's (a CandidateSet) or MemoryIndex's (Candidate objects).
Candidates = Sequence[dedup.Candidate] | dedup.CandidateSet
Decider = Callable[[dedup.Fingerprint, Candidates, datetime | None], dedup.Decision]


@dataclass(frozen=True)
class Step:
    """One decision of a run, kept for the error breakdown (not timed)."""

    article: Article
    fingerprint: dedup.Fingerprint
    candidates: Candidates
    decision: dedup.Decision


def run_online(
    articles: Sequence[Article],
    decider: Decider,
    steps: list[Step] | None = None,
    per_key: int | None = None,
    cache: dict[str, dedup.Fingerprint] | None = None,
) -> tuple[dict[str, str], list[str], float]:
    """Stream ``articles``: (article id -> development id, ids that started one, seconds).
    With ``steps``, every decision is appended to it for ``breakdown``; with ``cache``,
    fingerprints are made once per article across runs (the tuning grid; not for speed)."""
    index: MemoryIndex | WindowIndex = (
        MemoryIndex(per_key=per_key) if RETRIEVAL is None else WindowIndex(RETRIEVAL)
    )
    assigned: dict[str, str] = {}
    started: list[str] = []
    t0 = time.process_time()
    for art in articles:
        fp = cache.get(art.id) if cache is not None else None
        if fp is None:
            fp = dedup.fingerprint(art.title, art.text, art.lang)
            if cache is not None:
                cache[art.id] = fp
        cands: Candidates
        if isinstance(index, MemoryIndex):
            cands = index.candidates(fp)
        else:
            cands = index.candidates(fp, art.time)
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
    articles: Sequence[Article],
    assigned: dict[str, str],
    started: Sequence[str],
    seconds: float,
    subset: set[str] | None = None,
) -> Scores:
    """Scores of one stream (``articles`` in stream order). With ``subset`` (held-out ids),
    only those records are scored: B-cubed over them (their developments hold every record, so
    joining another story's record counts against them), pairwise over the pairs with at least
    one of them, and "new development" over their stories' first records."""
    gold = {a.id: a.gold for a in articles}
    scored = set(assigned) if subset is None else subset & set(assigned)
    clusters: dict[str, set[str]] = defaultdict(set)
    classes: dict[str, set[str]] = defaultdict(set)
    for aid, dev in assigned.items():
        clusters[dev].add(aid)
        classes[gold[aid]].add(aid)
    p_sum = r_sum = 0.0
    for aid in scored:
        dev = assigned[aid]
        both = len(clusters[dev] & classes[gold[aid]])
        p_sum += both / len(clusters[dev])
        r_sum += both / len(classes[gold[aid]])
    b3_p, b3_r = p_sum / len(scored), r_sum / len(scored)

    def pairs(group: set[str]) -> int:
        # Pairs of ``group`` with at least one scored record.
        n, m = len(group), len(group - scored)
        return n * (n - 1) // 2 - m * (m - 1) // 2

    tp = sum(
        pairs(members & classes[g])
        for members in clusters.values()
        for g in {gold[a] for a in members}
    )
    pred_pairs = sum(pairs(m) for m in clusters.values())
    gold_pairs = sum(pairs(m) for m in classes.values())
    pw_p = tp / pred_pairs if pred_pairs else 1.0
    pw_r = tp / gold_pairs if gold_pairs else 1.0
    seen: set[str] = set()
    gold_new = set()
    for a in articles:
        if a.gold not in seen:
            seen.add(a.gold)
            if a.id in scored:
                gold_new.add(a.id)
    pred_new = set(started) & scored
    new_p = len(pred_new & gold_new) / len(pred_new) if pred_new else 1.0
    new_r = len(pred_new & gold_new) / len(gold_new) if gold_new else 1.0
    return Scores(
        b3_p,
        b3_r,
        _f1(b3_p, b3_r),
        pw_p,
        pw_r,
        _f1(pw_p, pw_r),
        new_p,
        new_r,
        len({assigned[a] for a in scored}),
        len(articles) / seconds if seconds else float("inf"),
    )


def _orders(
    articles: Sequence[Article], shuffles: int, seed: int
) -> list[tuple[str, list[Article]]]:
    out = [("time" if articles and articles[0].time else "file", list(articles))]
    rng = random.Random(seed)
    for i in range(shuffles):
        shuffled = list(articles)
        rng.shuffle(shuffled)
        out.append((f"shuffle{i + 1}", shuffled))
    return out


@dataclass
class Breakdown:
    """Why decisions went wrong, over every order of a run."""

    options: DedupOptions
    new_right: int = 0  # started a development for the first report of a story
    false_new: int = 0  # started one for a story that already had a development
    no_candidate: int = 0  # ... no earlier report of the story among the candidates
    below_threshold: int = 0  # ... the story's development had the best margin, below 0
    outranked: int = 0  # ... another development had a better margin
    first_joined: int = 0  # the first report of a story joined another story's development
    wrong_join: int = 0  # a later report joined a development mostly of another story
    missed_margins: list[float] | None = None  # the story's margin in below_threshold cases

    def add(self, steps: Sequence[Step], assigned: dict[str, str]) -> None:
        """Classify one order's decisions (``assigned``: the run's article -> development)."""
        if self.missed_margins is None:
            self.missed_margins = []
        members: dict[str, list[str]] = defaultdict(list)
        gold = {st.article.id: st.article.gold for st in steps}
        seen: set[str] = set()
        for st in steps:
            art, dev = st.article, st.decision.development_id
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
        ids = dedup.CandidateSet.of(st.candidates).record_ids
        if not any(gold.get(rid) == st.article.gold for rid in ids):
            self.no_candidate += 1
            return
        scores = dedup.development_scores(st.fingerprint, st.candidates, self.options)
        best = max(scores, key=lambda d: scores[d].margin)
        if best == story_dev:
            self.below_threshold += 1
            assert self.missed_margins is not None
            self.missed_margins.append(scores[best].margin)
        else:
            self.outranked += 1

    def report(self) -> str:
        missed = sorted(self.missed_margins or [])
        spread = (
            f" (margins: median {statistics.median(missed):.2f},"
            f" {sum(1 for x in missed if x >= -0.05)} within 0.05)"
            if missed
            else ""
        )
        return (
            f"new developments: {self.new_right} right, {self.false_new} for a story that had one"
            f" -- {self.no_candidate} without any report of the story among the candidates"
            f" (retrieval), {self.below_threshold} with the story's development best but under"
            f" its threshold{spread}, {self.outranked} with another development scoring higher;"
            f" joins: {self.first_joined} first reports joined another story,"
            f" {self.wrong_join} later reports joined a development of another story"
        )


# ---------------------------------------------------------------------------- cross-validation


def _grid(values: dict[str, Sequence[float | int]]) -> list[dict[str, float | int]]:
    out: list[dict[str, float | int]] = [{}]
    for name, options in values.items():
        out = [{**g, name: v} for g in out for v in options]
    return out


# The parameters each kind of set tunes, and their grid. Full articles: the article threshold
# and the shares of headline and lead and of names and numbers; headlines: the threshold of a
# headline against headlines (by terms and word pairs; the neighbours, 5, and the size
# preference, 0.2, are what the folds chose when they were in the grid: docs/dedup.md); mixed
# kinds: the headline threshold (a headline against full articles' headlines and leads), the
# rest at defaults.
GRIDS: dict[str, dict[str, Sequence[float | int]]] = {
    "articles": {
        "article_threshold": [0.30, 0.32, 0.34, 0.36, 0.38],
        "head_share": [0.2, 0.3, 0.5],
        "names_share": [0.0, 0.2],
    },
    "headlines": {"headline_terms_threshold": [0.12, 0.15, 0.17, 0.20, 0.25]},
    "mixed": {"headline_threshold": [0.20, 0.25, 0.30, 0.35, 0.40]},
}


def folds(articles: Sequence[Article], k: int, seed: int) -> list[set[str]]:
    """The groups (ECB+ topics, headline stories) dealt into ``k`` folds of record ids."""
    groups = sorted({a.group for a in articles})
    random.Random(seed).shuffle(groups)
    fold_of = {g: i % k for i, g in enumerate(groups)}
    out: list[set[str]] = [set() for _ in range(k)]
    for a in articles:
        out[fold_of[a.group]].add(a.id)
    return out


@dataclass
class DevSet:
    kind: str  # "articles", "mixed" or "headlines" (its GRIDS entry)
    name: str
    articles: list[Article]
    grid: dict[str, Sequence[float | int]]
    shuffles: int  # evaluation orders besides the base one
    tune_shuffles: int  # tuning orders besides the base one


def tune(
    dev: DevSet,
    articles: Sequence[Article],
    base: DedupOptions,
    seed: int,
    cache: dict[str, dedup.Fingerprint],
) -> tuple[DedupOptions, float]:
    """The grid point with the best mean B-cubed F1 on streams of ``articles`` (ties: the
    earlier point of the grid)."""
    orders = _orders(articles, dev.tune_shuffles, seed)
    best: tuple[float, DedupOptions] | None = None
    for point in _grid(dev.grid):
        options = replace(base, **point)  # type: ignore[arg-type]
        decider = default_decider(options)
        f1 = statistics.mean(
            score(arts, *run_online(arts, decider, cache=cache)).b3_f for _, arts in orders
        )
        if best is None or f1 > best[0] + 1e-9:
            best = (f1, options)
    assert best is not None
    return best[1], best[0]


def _describe(options: DedupOptions, grid: dict[str, Sequence[float | int]]) -> str:
    return " ".join(f"{name}={getattr(options, name)}" for name in grid)


def cross_validate(
    dev: DevSet, k: int, seed: int, base: DedupOptions
) -> dict[str, list[list[Scores]]]:
    """Per method, per fold, the held-out scores in each evaluation order."""
    cache: dict[str, dedup.Fingerprint] = {}
    out: dict[str, list[list[Scores]]] = {"dedup (CV)": [], "baseline TF-IDF 1-pass": []}
    orders = _orders(dev.articles, dev.shuffles, seed)
    baseline = [(arts, tfidf_single_pass(arts)) for _, arts in orders]
    print(
        f"\n== {dev.name}: {len(dev.articles)} records, {len({a.gold for a in dev.articles})}"
        f" stories, {len({a.group for a in dev.articles})} groups in {k} folds;"
        f" {len(orders)} orders"
    )
    print(
        f"{'fold':<6}{'held out':>9}  {'chosen on the other folds':<44}{'train F1':>9}"
        f"{'B3 P':>7}{'B3 R':>6}{'B3 F1':>7}{'pw P':>6}{'new P':>7}{'new R':>7}"
        f"{'| base F1':>10}{'pw P':>6}{'new P':>7}"
    )
    for i, held in enumerate(folds(dev.articles, k, seed)):
        train = [a for a in dev.articles if a.id not in held]
        options, train_f1 = tune(dev, train, base, seed, cache)
        decider = default_decider(options)
        ours = [
            score(arts, *run_online(arts, decider, cache=cache), subset=held) for _, arts in orders
        ]
        base_scores = [score(arts, *res, subset=held) for arts, res in baseline]
        out["dedup (CV)"].append(ours)
        out["baseline TF-IDF 1-pass"].append(base_scores)
        m = _means(ours)
        b = _means(base_scores)
        print(
            f"{i + 1:<6}{len(held):>9}  {_describe(options, dev.grid):<44}{train_f1:>9.3f}"
            f"{m.b3_p:7.3f}{m.b3_r:6.3f}{m.b3_f:7.3f}{m.pw_p:6.3f}{m.new_p:7.3f}{m.new_r:7.3f}"
            f"{b.b3_f:10.3f}{b.pw_p:6.3f}{b.new_p:7.3f}"
        )
    print(
        "-- held-out figures: mean over folds and orders, min (a fold's mean over orders),"
        " spread (standard deviation over folds and orders)"
    )
    for method, per_fold in out.items():
        print(_cv_summary(method, per_fold))
    return out


def _means(runs: Sequence[Scores]) -> Scores:
    return Scores(
        *(statistics.mean(getattr(s, f) for s in runs) for f in Scores.__dataclass_fields__)
    )  # type: ignore[arg-type]


CV_FIELDS = ("b3_p", "b3_r", "b3_f", "pw_p", "new_p", "new_r")


def _cv_summary(method: str, per_fold: Sequence[Sequence[Scores]]) -> str:
    parts = []
    for f in CV_FIELDS:
        every = [getattr(s, f) for runs in per_fold for s in runs]
        fold_means = [statistics.mean(getattr(s, f) for s in runs) for runs in per_fold]
        sd = statistics.pstdev(every) if len(every) > 1 else 0.0
        parts.append(f"{f} {statistics.mean(every):.3f} (min {min(fold_means):.3f}, ±{sd:.3f})")
    return f"{method:<24}" + "; ".join(parts)


# ---------------------------------------------------------------------------- whole sets


HEADER = (
    f"{'method':<24}{'order':<10}{'B3 P':>6}{'B3 R':>6}{'B3 F1':>7}{'pw P':>6}{'pw R':>6}"
    f"{'pw F1':>7}{'new P':>7}{'new R':>7}{'devs':>6}{'rec/s':>9}"
)


def _row(method: str, order: str, s: Scores) -> str:
    return (
        f"{method:<24}{order:<10}{s.b3_p:6.3f}{s.b3_r:6.3f}{s.b3_f:7.3f}{s.pw_p:6.3f}{s.pw_r:6.3f}"
        f"{s.pw_f:7.3f}{s.new_p:7.3f}{s.new_r:7.3f}{s.developments:6d}{s.per_second:9.0f}"
    )


def _summary(method: str, runs: Sequence[Scores]) -> str:
    fields = ("b3_f", "pw_p", "new_p", "new_r", "per_second")
    parts = []
    for f in fields:
        vals = [getattr(s, f) for s in runs]
        fmt = "{:.0f}" if f == "per_second" else "{:.3f}"
        parts.append(f"{f} mean {fmt.format(statistics.mean(vals))} min {fmt.format(min(vals))}")
    return f"{method:<24}" + "; ".join(parts)


def evaluate(
    name: str,
    articles: list[Article],
    shuffles: int,
    seed: int,
    options: DedupOptions,
    verbose: bool = True,
) -> dict[str, list[Scores]]:
    """The shipped options on a whole set (not cross-validated), beside the baseline."""
    steps: list[Step] = []
    breakdown = Breakdown(options)
    methods: dict[str, Callable[[list[Article]], tuple[dict[str, str], list[str], float]]] = {
        "dedup (defaults)": lambda arts: run_online(arts, default_decider(options), steps=steps),
        "baseline TF-IDF 1-pass": tfidf_single_pass,
    }
    results: dict[str, list[Scores]] = defaultdict(list)
    print(f"\n== {name}: {len(articles)} records, {len({a.gold for a in articles})} stories")
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
    print(f"-- dedup (defaults), all orders: {breakdown.report()}")
    return results


def gold_history_bound(name: str, articles: Sequence[Article], options: DedupOptions) -> None:
    """How well the score alone can say "new", with a perfect history: each record (in stream
    order) is scored against the developments of the records before it *as the gold stories
    group them* (candidates by the same index and limits, no time decay), and called new when
    no development reaches its threshold + ``offset``. The new-development precision and
    recall this gives bound what any single-pass decision with this score reaches on the set:
    a real stream's developments are that history with mistakes."""
    index = MemoryIndex()
    rows: list[tuple[bool, float]] = []  # (first report of its story, best margin)
    seen: set[str] = set()
    for art in articles:
        fp = dedup.fingerprint(art.title, art.text, art.lang)
        cands = index.candidates(fp)
        scores = dedup.development_scores(fp, cands, options)
        best = max((s.margin for s in scores.values()), default=-math.inf)
        rows.append((art.gold not in seen, best))
        seen.add(art.gold)
        index.add(art.id, art.gold, fp, art.time)
    firsts = sum(1 for first, _ in rows if first)
    print(f"\n== {name}: new-development P/R with the gold history (the score's own bound)")
    print(f"{'offset':>7}{'new P':>7}{'new R':>7}{'false new':>10}")
    for offset in (-0.15, -0.10, -0.05, 0.0, 0.05):
        right = sum(1 for first, m in rows if first and m < offset)
        wrong = sum(1 for first, m in rows if not first and m < offset)
        p = right / (right + wrong) if right + wrong else 0.0
        print(f"{offset:>+7.2f}{p:7.3f}{right / firsts:7.3f}{wrong:10d}")


def dev_sets(shuffles: int) -> list[DevSet]:
    out = []
    if ECB.exists():
        ecb = load(ECB)
        out.append(DevSet("articles", "ECB+ full articles", ecb, GRIDS["articles"], shuffles, 1))
        out.append(
            DevSet(
                "mixed",
                "ECB+ mixed kinds (every other article as its headline only)",
                headlines_of(ecb),
                GRIDS["mixed"],
                shuffles,
                1,
            )
        )
    if HEADLINES.exists():
        heads = load(HEADLINES)
        out.append(
            DevSet(
                "headlines",
                "UCI headline stream",
                heads,
                GRIDS["headlines"],
                max(1, shuffles // 2),
                0,
            )
        )
    return out


def _split(item: str) -> tuple[str, str]:
    name, sep, value = item.partition("=")
    if not sep or name not in DedupOptions.__dataclass_fields__:
        raise SystemExit(f"not NAME=VALUE of a DedupOptions field: {item!r}")
    return name, value


def _values(name: str, value: str) -> list[float | int]:
    kind = type(getattr(DedupOptions(), name))
    return [kind(v) for v in value.split(",")]


def _option(item: str) -> tuple[str, float | int]:
    name, value = _split(item)
    return name, _values(name, value)[0]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--data",
        type=Path,
        default=None,
        help="only this JSONL corpus (id, title, text, story_id), shipped options, no CV",
    )
    parser.add_argument(
        "--shuffles", type=int, default=4, help="shuffled orders besides the base one"
    )
    parser.add_argument("--folds", type=int, default=5, help="cross-validation folds")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--no-cv", action="store_true", help="skip cross-validation")
    parser.add_argument(
        "--no-fixtures", action="store_true", help="skip the multilingual and crisis sets"
    )
    parser.add_argument(
        "--tune",
        action="store_true",
        help="print the grid point each whole dev set picks (how the defaults were set)",
    )
    parser.add_argument(
        "--bound",
        action="store_true",
        help="print the new-development P/R each dev set gives with a perfect (gold) history",
    )
    parser.add_argument(
        "--per-key",
        type=int,
        default=None,
        help="hits read per band or key term, newest first (default: the store's, "
        f"{dedup.CANDIDATE_ROWS_PER_KEY})",
    )
    parser.add_argument(
        "--retrieval",
        choices=("window", "memory"),
        default="window",
        help="candidates from the ingest window (IngestOptions()) or MemoryIndex (the store's "
        "old query: keys shared, no time bound)",
    )
    parser.add_argument(
        "--rank-by-rarity",
        action="store_true",
        help="the window ranks by the rarity of the keys shared (IngestOptions.rank_by_rarity)",
    )
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a DedupOptions field for every run (e.g. headline_size_preference=0.1); repeatable",
    )
    parser.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=V1,V2",
        help="a DedupOptions field tuned with these values by every set's cross-validation and"
        " --tune (added to its grid, or replacing that field's values); repeatable",
    )
    parser.add_argument(
        "--sets",
        default="articles,mixed,headlines",
        help="the dev sets to run, of: articles, mixed, headlines",
    )
    args = parser.parse_args(argv)
    global RETRIEVAL
    RETRIEVAL = None
    if args.retrieval == "window":
        RETRIEVAL = IngestOptions(rank_by_rarity=True) if args.rank_by_rarity else IngestOptions()
    if args.per_key is not None:
        global PER_KEY_LIMIT
        PER_KEY_LIMIT = args.per_key
    options = replace(DedupOptions(), **dict(_option(item) for item in args.set))
    extra_grid = {name: _values(name, value) for name, value in map(_split, args.grid)}
    if args.data is not None:
        if not args.data.exists():
            print(f"missing corpus: {args.data}", file=sys.stderr)
            return 2
        evaluate(args.data.name, load(args.data), args.shuffles, args.seed, options)
        return 0
    kinds = set(args.sets.split(","))
    if not kinds <= {"articles", "mixed", "headlines"}:
        raise SystemExit(f"--sets: of articles, mixed, headlines: {args.sets!r}")
    sets = [
        replace(dev, grid={**dev.grid, **extra_grid})
        for dev in dev_sets(args.shuffles)
        if dev.kind in kinds
    ]
    if not sets:
        print(f"missing dev sets under {DEV}", file=sys.stderr)
        return 2
    if args.bound:
        for dev in sets:
            gold_history_bound(dev.name, dev.articles, options)
        return 0
    if args.tune:
        for dev in sets:
            chosen, f1 = tune(dev, dev.articles, options, args.seed, {})
            print(f"{dev.name}: {_describe(chosen, dev.grid)} (B-cubed F1 {f1:.3f})")
        return 0
    if not args.no_cv:
        for dev in sets:
            cross_validate(dev, args.folds, args.seed, options)
    whole: dict[str, dict[str, list[Scores]]] = {}
    for dev in sets:
        whole[dev.name] = evaluate(
            dev.name + " (whole set)", dev.articles, dev.shuffles, args.seed, options
        )
    if not args.no_fixtures:
        for label, path in (("multilingual (en/lt/ru)", MULTI), ("crisis (dated)", CRISIS)):
            if path.exists():
                evaluate(label, load(path), args.shuffles, args.seed, options)
    print()
    for name, res in whole.items():
        ours, base = res["dedup (defaults)"], res["baseline TF-IDF 1-pass"]
        speed = statistics.mean(s.per_second for s in ours) / statistics.mean(
            s.per_second for s in base
        )
        print(
            f"{name}: {statistics.mean(s.per_second for s in ours):.0f} records/s,"
            f" speed ratio dedup/TF-IDF baseline {speed:.2f}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
