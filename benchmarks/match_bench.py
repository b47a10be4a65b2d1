"""Topic matching speed: TopicMatcher against a naive matcher, on real article texts.

    python benchmarks/match_bench.py                 # shipped topics, then 100 synthetic topics
    python benchmarks/match_bench.py --topics 300 --repeat 5

Corpus: the five seeds and the 369 ECB+ articles of ../shared/clustering-dev (when present), as
record texts. The baseline is what a first implementation does: for every topic and term, one
compiled regular expression searched in the normalized text of the record's fields (no token
index, no prefilter). Both give the same answers (checked); the figures are records per second
on one core and the ratio.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from aggregator import records  # noqa: E402
from aggregator.match import (  # noqa: E402
    FieldTexts,
    Term,
    TopicMatcher,
    _phrase_regex,
    normalize,
    parse_term,
    record_fields,
)
from aggregator.model import Record, Topic, TopicRules  # noqa: E402
from aggregator.watchlist import load_watchlist  # noqa: E402

ECB = ROOT.parent / "shared" / "clustering-dev" / "ecbplus-dev.jsonl"


def corpus() -> list[Record]:
    texts: list[tuple[str, str]] = []
    for path in sorted((ROOT / "seeds").glob("*.txt")):
        texts.append((path.stem[4:], path.read_text(encoding="utf-8")))
    if ECB.exists():
        for line in ECB.read_text(encoding="utf-8").splitlines():
            item = json.loads(line)
            body = [
                records.Block(records.BlockKind.PARAGRAPH, text=p) for p in item["text"].split("\n")
            ]
            text = records.compose(item.get("title") or "", "", body)
            texts.append((records.record_id(None, text), text))
    return [
        Record(id=rid, text=text, title=records.title_of(records.parse(text)), content_hash="")
        for rid, text in texts
    ]


def synthetic_topics(n: int, words: list[str]) -> list[Topic]:
    """``n`` topics of the shapes admins write: words, prefixes, phrases, a none-term."""
    topics = []
    for i in range(n):
        pick = [words[(i * 7 + k * 13) % len(words)] for k in range(6)]
        any_terms = (pick[0], pick[1][: max(3, len(pick[1]) - 2)] + "*", f'"{pick[2]} {pick[3]}"')
        topics.append(
            Topic(
                f"t{i}", f"T{i}", TopicRules(any=any_terms, all=(pick[4],), none=(pick[5] + "zz",))
            )
        )
    return topics


class NaiveMatcher:
    """One regex per term, searched in the normalized concatenated fields."""

    def __init__(self, topics: list[Topic]) -> None:
        self.topics = [
            (t, [self._compile(parse_term(x)) for x in t.rules.any],
             [self._compile(parse_term(x)) for x in t.rules.all],
             [self._compile(parse_term(x)) for x in t.rules.none])
            for t in topics
        ]  # fmt: skip

    @staticmethod
    def _compile(term: Term) -> tuple[str, re.Pattern[str], bool]:
        if term.regex is not None:
            return term.source, term.regex, True
        return term.source, _phrase_regex(term.words), False

    def match(self, texts: FieldTexts) -> list[tuple[str, tuple[str, ...]]]:
        original = "\n".join((texts.title, texts.lead, texts.body))
        norm = normalize(original)

        def hit(entry: tuple[str, re.Pattern[str], bool]) -> bool:
            return entry[1].search(original if entry[2] else norm) is not None

        out = []
        for topic, any_, all_, none in self.topics:
            if any(hit(e) for e in none):
                continue
            got_all = [e[0] for e in all_ if hit(e)]
            if len(got_all) < len(all_):
                continue
            got_any = [e[0] for e in any_ if hit(e)]
            if any_ and not got_any:
                continue
            out.append((topic.id, tuple(dict.fromkeys([*got_any, *got_all]))))
        return out


def bench(topics: list[Topic], recs: list[Record], fields: list[FieldTexts], repeat: int) -> None:
    # Same fields for both, so the comparison is the matching alone.
    all_fields = [t for t in topics if tuple(t.rules.fields) == ("title", "lead", "body")]
    matcher, naive = TopicMatcher(all_fields), NaiveMatcher(all_fields)
    for rec, f in zip(recs, fields, strict=True):
        ours = [(m.topic_id, m.terms) for m in matcher.match_fields(rec.id, f)]
        assert ours == naive.match(f), (rec.id, ours, naive.match(f))
    timings = {}
    for name, fn in (
        ("naive", lambda f: naive.match(f)),
        ("TopicMatcher", lambda f: matcher.match_fields("r", f)),
    ):
        best = float("inf")
        for _ in range(repeat):
            start = time.perf_counter()
            for f in fields:
                fn(f)
            best = min(best, time.perf_counter() - start)
        timings[name] = len(fields) / best
    print(
        f"  {len(all_fields):4d} topics: naive {timings['naive']:9.0f} rec/s   "
        f"TopicMatcher {timings['TopicMatcher']:9.0f} rec/s   "
        f"ratio {timings['TopicMatcher'] / timings['naive']:.2f}x"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--topics", type=int, default=100, help="synthetic topics (default 100)")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    recs = corpus()
    start = time.perf_counter()
    fields = [record_fields(r) for r in recs]
    split = time.perf_counter() - start
    print(f"{len(recs)} records; parsing into title/lead/body: {len(recs) / split:.0f} rec/s")
    shipped = list(load_watchlist(ROOT / "config" / "watchlist.yaml").topics)
    words = sorted({w for f in fields for w in re.findall(r"[a-z]{5,}", f.body.lower())})
    print("matching (answers checked equal):")
    bench(shipped, recs, fields, args.repeat)
    bench(synthetic_topics(args.topics, words), recs, fields, args.repeat)
    start = time.perf_counter()
    matcher = TopicMatcher(shipped)
    for r in recs:
        matcher.match(r)
    total = time.perf_counter() - start
    print(f"end to end with the shipped watchlist (parse + match): {len(recs) / total:.0f} rec/s")


if __name__ == "__main__":
    main()
