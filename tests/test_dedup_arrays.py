"""The decision's scores on arrays (``dedup.CandidateSet``) against their definition on dicts.

``development_scores`` and ``representative`` compute on term ids and weights in arrays, for
all candidates at once. Here the definition, spelled out on the fingerprints' dict vectors as
the scoring was first written (pairwise dot products of the members for a centroid's length),
scores random synthetic fingerprints, and both must agree on every development: the score (to
rounding), the threshold, the closest member, the kind, the members. The window's candidate
sets, read from packed fingerprints, must give exactly the scores of ``CandidateSet.of``.
"""

from __future__ import annotations

import math
import random
from collections import defaultdict
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest

from aggregator import dedup
from aggregator.dedup import Candidate, Fingerprint
from aggregator.ingest.window import (
    Vocabulary,
    Window,
    pack,
    packed_candidates,
    packed_representative,
)
from aggregator.model import DedupOptions, IngestOptions

T0 = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
ACTIONS = sorted(dedup._ACTIONS)

# ------------------------------------------------------------------ the definition, on dicts


def _dot(a: dict[str, float], b: dict[str, float]) -> float:
    return sum(a[t] * b[t] for t in a.keys() & b.keys())


def _centroid_norm(vectors: Sequence[dict[str, float]]) -> float:
    total = sum(w * w for v in vectors for w in v.values())
    for i, a in enumerate(vectors):
        for b in vectors[i + 1 :]:
            total += 2.0 * _dot(a, b)
    return math.sqrt(total) if total > 0 else 0.0


def _neighbour_cosine(
    vec: dict[str, float], members: Sequence[dict[str, float]], k: int, unseen: int = 0
) -> tuple[float, int]:
    if not vec or not members:
        return 0.0, 0
    sims = sorted(((_dot(vec, m), i) for i, m in enumerate(members)), key=lambda s: (-s[0], s[1]))
    nearest = sims[:k]
    unseen = max(0, min(unseen, k - len(nearest)))
    if nearest[0][0] == 0.0:
        return 0.0, nearest[0][1]
    if len(nearest) == 1:
        return nearest[0][0] / math.sqrt(1 + unseen), nearest[0][1]
    norm = _centroid_norm([members[i] for _, i in nearest])
    if unseen:
        norm = math.sqrt(norm * norm + unseen)
    return (sum(s for s, _ in nearest) / norm if norm else 0.0), nearest[0][1]


def reference_scores(
    fp: Fingerprint, candidates: Sequence[Candidate], options: DedupOptions
) -> dict[str, dedup.DevelopmentScore]:
    groups: dict[str, dict[str, Candidate]] = defaultdict(dict)
    for cand in candidates:
        groups[cand.development_id][cand.record_id] = cand
    vec, head, names = fp.vector(), fp.head_vector(), fp.names_vector()
    actions = dedup._ACTIONS.intersection(fp.head_terms)
    headline = dedup.is_headline(fp, options)
    k = max(1, options.neighbours)
    out = {}
    for dev, by_id in groups.items():
        members = list(by_id.values())
        articles = [m for m in members if not dedup.is_headline(m.fingerprint, options)]
        if headline and not articles:
            size = max(m.development_size for m in members)
            unseen = max(0, min(size, k) - len(members))
            sim, at = _neighbour_cosine(vec, [m.fingerprint.vector() for m in members], k, unseen)
            out[dev] = dedup.DevelopmentScore(
                sim,
                options.headline_terms_threshold,
                members[at].record_id,
                "headline-terms",
                len(members),
                True,
            )
            continue
        head_sim, closest = _neighbour_cosine(
            head, [m.fingerprint.head_vector() for m in members], k
        )
        if headline or not articles:
            out[dev] = dedup.DevelopmentScore(
                head_sim,
                options.headline_threshold,
                members[closest].record_id,
                "headline",
                len(members),
                not articles,
            )
            continue
        body, at = _neighbour_cosine(vec, [m.fingerprint.vector() for m in articles], k)
        score = (1.0 - options.head_share - options.names_share) * body
        score += options.head_share * head_sim
        if options.names_share:
            names_sim, _ = _neighbour_cosine(
                names, [m.fingerprint.names_vector() for m in articles], k
            )
            score += options.names_share * names_sim
        if actions and options.action_penalty:
            theirs = dedup._ACTIONS.intersection(
                t for m in members for t in m.fingerprint.head_terms
            )
            if theirs and theirs.isdisjoint(actions):
                score *= 1.0 - options.action_penalty
        out[dev] = dedup.DevelopmentScore(
            score, options.article_threshold, articles[at].record_id, "article", len(members)
        )
    return out


def reference_representative(fps: Sequence[Fingerprint]) -> list[float]:
    """Each member's score as the representative: the highest is chosen (the first of equals)."""
    centroid: dict[str, float] = {}
    for f in fps:
        for t, w in f.vector().items():
            centroid[t] = centroid.get(t, 0.0) + w
    cnorm = math.sqrt(sum(w * w for w in centroid.values()))
    out = []
    for f in fps:
        dot = _dot(f.vector(), centroid)
        own = math.sqrt(sum(w * w for w in f.vector().values()))
        centrality = dot / (own * cnorm) if f.terms and dot else 0.0
        headline = 1.0 if len(f.title_terms) >= 3 else 0.5
        substance = min(1.0, f.length / 150.0)
        out.append(centrality * (0.5 + 0.25 * headline + 0.25 * substance))
    return out


# ------------------------------------------------------------------ synthetic fingerprints


def _unit(rng: random.Random, n: int, places: int | None) -> tuple[float, ...]:
    raw = [rng.random() ** 2 + 1e-3 for _ in range(n)]
    norm = math.sqrt(sum(w * w for w in raw)) or 1.0
    if places is None:
        return tuple(w / norm for w in raw)
    return tuple(round(w / norm, places) for w in raw)


def synthetic(rng: random.Random, words: Sequence[str], places: int | None = 5) -> Fingerprint:
    """A random fingerprint over ``words``: an article or a headline, terms with unit weights,
    a headline and lead (sometimes naming actions), names and numbers among the terms."""
    n = rng.choice((0, 1, 3, 8, 20, 60))
    terms = tuple(rng.sample(words, n))
    head_terms = tuple(rng.sample(terms, min(len(terms), rng.randint(0, 6))))
    if rng.random() < 0.3:
        head_terms += tuple(a for a in rng.sample(ACTIONS, 2) if a not in head_terms)
    marked = [t for t in terms if rng.random() < 0.3]
    signature = tuple(rng.randrange(4) for _ in range(8))
    return Fingerprint(
        minhash=signature,
        bands=tuple(f"{i}:{signature[2 * i]}{signature[2 * i + 1]}" for i in range(4)),
        key_terms=terms[:3],
        terms=terms,
        weights=_unit(rng, len(terms), places),
        entities=tuple(sorted(t for t in marked if t[1] != "1")),
        numbers=tuple(sorted(t for t in marked if t[1] == "1")),
        title_terms=terms[: rng.randint(0, 4)],
        length=rng.choice((5, 24, 25, 80, 400)),
        head_terms=head_terms,
        head_weights=_unit(rng, len(head_terms), places),
    )


def _case(seed: int, places: int | None = 5) -> tuple[Fingerprint, list[Candidate]]:
    rng = random.Random(seed)
    words = [f"w{i % 3}{i}" for i in range(80)]  # "w1...": numbers, the others names
    fp = synthetic(rng, words, places)
    cands = []
    for _ in range(rng.randint(1, 30)):
        rid = f"r{rng.randrange(40)}"  # sometimes a record twice
        dev = f"d{rng.randrange(6)}"
        when = T0 - timedelta(hours=rng.randrange(200))
        cands.append(Candidate(rid, dev, synthetic(rng, words, places), when, rng.randrange(12)))
    return fp, cands


OPTION_SETS = [
    DedupOptions(),
    DedupOptions(neighbours=1),
    DedupOptions(neighbours=2, names_share=0.2, head_share=0.2),
    DedupOptions(neighbours=20, action_penalty=0.0),  # centroids of many members
    DedupOptions(headline_words=30, names_share=0.5),
]


def _same(got: dict[str, dedup.DevelopmentScore], want: dict[str, dedup.DevelopmentScore]) -> None:
    assert list(got) == list(want)
    for dev, w in want.items():
        g = got[dev]
        assert g.score == pytest.approx(w.score, rel=1e-12, abs=1e-15), dev
        assert dataclasses_tuple(g)[1:] == dataclasses_tuple(w)[1:], dev


def dataclasses_tuple(s: dedup.DevelopmentScore) -> tuple[object, ...]:
    return (s.score, s.threshold, s.record_id, s.kind, s.members, s.headlines_only)


@pytest.mark.parametrize("options", OPTION_SETS)
def test_array_scores_equal_the_definition_on_dicts(options: DedupOptions) -> None:
    kinds: set[str] = set()
    for seed in range(150):
        fp, cands = _case(seed)
        want = reference_scores(fp, cands, options)
        _same(dedup.development_scores(fp, cands, options), want)
        kinds |= {s.kind for s in want.values()}
    assert kinds == {"article", "headline", "headline-terms"}  # every kind was compared


def test_the_comparison_sees_a_one_percent_error() -> None:
    """The comparison can fail: scores of developments of several members 1 % off are
    told apart on most cases."""
    options = DedupOptions()
    differ = 0
    for seed in range(60):
        fp, cands = _case(seed)
        want = reference_scores(fp, cands, options)
        wrong = dict(want)
        for dev, s in want.items():
            if s.members > 1 and s.score:
                wrong[dev] = dedup.DevelopmentScore(
                    s.score * 1.01, s.threshold, s.record_id, s.kind, s.members, s.headlines_only
                )
        try:
            _same(dedup.development_scores(fp, cands, options), wrong)
        except AssertionError:
            differ += 1
    assert differ > 10


def _window_set(
    fp: Fingerprint, cands: Sequence[Candidate], vocab: Vocabulary
) -> dedup.CandidateSet:
    return packed_candidates(
        [pack(c.fingerprint, vocab) for c in cands],
        [c.record_id for c in cands],
        [c.development_id for c in cands],
        [c.time for c in cands],
        [c.development_size for c in cands],
        vocab,
    )


@pytest.mark.parametrize("places", [5, None])  # packed as exact integers, or as float64
def test_packed_candidates_score_exactly_as_their_fingerprints(places: int | None) -> None:
    vocab = Vocabulary()
    for seed in range(80):
        fp, cands = _case(seed, places)
        packed = _window_set(fp, cands, vocab)
        assert [list(b) for b in packed.bands] == [list(c.fingerprint.bands) for c in cands]
        assert [list(m) for m in packed.minhashes] == [list(c.fingerprint.minhash) for c in cands]
        for options in OPTION_SETS:
            assert dedup.development_scores(fp, packed, options) == dedup.development_scores(
                fp, cands, options
            )
            assert dedup.decide(fp, T0, packed, options) == dedup.decide(fp, T0, cands, options)


def test_near_duplicates_are_found_in_the_window() -> None:
    rng = random.Random(3)
    words = [f"w{i % 3}{i}" for i in range(80)]
    fp = synthetic(rng, words)
    copy = dataclasses_replace_id(fp)
    other = synthetic(rng, words)
    window = Window("test", IngestOptions(), 7.0)
    window.add("a", "da", T0 - timedelta(hours=1), 1, other)
    window.add("b", "db", T0 - timedelta(hours=2), 2, copy)
    found = window.candidates(fp, T0)
    assert found.record_ids[0] == "b"  # shares every key
    assert found.may_share_band is not None and found.may_share_band[0]
    decision = dedup.decide(fp, T0, found, DedupOptions())
    assert decision.development_id == "db" and decision.reason.value == "near-duplicate"


def dataclasses_replace_id(fp: Fingerprint) -> Fingerprint:
    """The same fingerprint, built again (no cached vectors)."""
    return Fingerprint(
        minhash=fp.minhash,
        bands=fp.bands,
        key_terms=fp.key_terms,
        terms=fp.terms,
        weights=fp.weights,
        entities=fp.entities,
        numbers=fp.numbers,
        title_terms=fp.title_terms,
        length=fp.length,
        head_terms=fp.head_terms,
        head_weights=fp.head_weights,
    )


@pytest.mark.parametrize("places", [5, None])
def test_representative_on_arrays_equals_the_definition(places: int | None) -> None:
    """The member chosen is the definition's, or one whose score equals the best to rounding
    (members sharing no term with the others score |v| / |centroid| each: ties in the last
    bit, which random vocabularies make common)."""
    rng = random.Random(11)
    words = [f"w{i % 3}{i}" for i in range(80)]
    vocab = Vocabulary()
    picked, exact = set(), 0
    for _ in range(300):
        fps = [synthetic(rng, words, places) for _ in range(rng.randint(1, 12))]
        scores = reference_representative(fps)
        want = max(range(len(fps)), key=lambda i: (scores[i], -i))
        for got in (
            dedup.representative(fps),
            packed_representative([pack(f, vocab) for f in fps], vocab),
        ):
            assert scores[got] == pytest.approx(scores[want], rel=1e-12), (got, want, scores)
            exact += got == want
        picked.add(want)
    assert exact > 550  # all but the last-bit ties
    assert len(picked) > 5  # not always the first


def test_a_band_shared_beyond_the_newest_hits_is_still_compared() -> None:
    """A candidate found through a key term shares a band whose newest hits (one, here) are
    other records': its bands are read all the same, and it is the near-duplicate."""
    rng = random.Random(5)
    words = [f"w{i % 3}{i}" for i in range(80)]
    fp = synthetic(rng, words)
    same = dataclasses_replace_id(fp)  # every band and signature value shared
    # Newer records holding every band (not near-duplicates: no signature value in common).
    newer = Fingerprint(minhash=(9,) * 8, bands=fp.bands, key_terms=())
    window = Window("test", IngestOptions(candidate_hits_per_key=1), 7.0)
    window.add("old", "d-old", T0 - timedelta(hours=3), 1, same)
    for i in range(3):
        window.add(f"n{i}", f"d{i}", T0 - timedelta(hours=1), 2 + i, newer)
    found = window.candidates(fp, T0)
    assert "old" in found.record_ids
    at = list(found.record_ids).index("old")
    assert found.may_share_band is not None and found.may_share_band[at]
    decision = dedup.decide(fp, T0, found, DedupOptions())
    assert (decision.development_id, decision.matched_record_id) == ("d-old", "old")
