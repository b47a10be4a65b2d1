"""The block classifier: which text blocks of the article container are article text.

A logistic model over shallow features of each block (its length, link density, punctuation
and sentence shape in any script, its kind, where it stands relative to the title, the bulk of
the article's text and the page's ``<article>`` element, how much of it the page's JSON-LD
``articleBody`` holds, what the blocks around it look like, and what the general rules of
``article.py`` say about it). The weights live in ``block_model.json`` beside this module,
written by ``benchmarks/train_extract.py`` from the dev sets; leave-one-subset-out validation
(``benchmarks/extract_bench.py --loso``) checks that they hold on a kind of page they were not
trained on. Run time is a few numpy operations per page.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import chain
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "FEATURES",
    "BlockContext",
    "BlockModel",
    "block_features",
    "load_default_model",
]

MODEL_PATH = Path(__file__).with_name("block_model.json")

# Sentence ends and clause marks of several scripts: Latin/Cyrillic ". ! ? ;", CJK full-width
# "。！？；", the Devanagari danda, the Arabic question mark, the ellipsis.
_SENTENCE_END_CHARS = ".!?。！？…।؟"
_SENTENCE_END_RE = re.compile(r"[.!?。！？…।؟][\"'”’»)\]」』]*(?:\s|$)|[。！？]")
_CLAUSE_RE = re.compile(r"[,;:，、；：]")
_DIGIT_RE = re.compile(r"\d")
_WORD_RE = re.compile(r"\w+")
_CLOSERS = "\"'”’»)]」』"
_ASCII_DIGITS = b"0123456789"
# Punctuation common in Latin-script text outside ASCII (none of it \w or \d).
_NONWORD_MARKS = ("’", "‘", "“", "”", "–", "—", "…", "«", "»", "•", "·")
_ASCII_CLOSERS = b"\"')]"  # the ASCII closers of _SENTENCE_END_RE
# ASCII whitespace (what \s matches there, \x1c-\x1f included) to a space, ".!?" to ".".
_ASCII_SENTENCE_BYTES = bytes(
    ord(" ") if chr(i).isspace() else ord(".") if chr(i) in ".!?" else i for i in range(256)
)
# Word bytes of ASCII text (what \w matches there) to "a", all others to a space.
_ASCII_WORD_BYTES = bytes(
    ord("a") if chr(i).isascii() and (chr(i).isalnum() or chr(i) == "_") else ord(" ")
    for i in range(256)
)

FEATURES: tuple[str, ...] = (
    "bias_text",  # 1 for every block (lets the scale of "nothing known" be learnt)
    "log_len",
    "link_density",
    "doubtful",
    "rule_keep",
    "boilerplate_line",
    "heading",
    "list_item",
    "table",
    "ends_sentence",
    "sentences_per_100",
    "clauses_per_100",
    "digit_share",
    "words_per_char",
    "before_first_good",
    "after_last_good",
    "rel_position",
    "good_before_share",
    "good_after_share",
    "gap_log",
    "in_article_tag",
    "after_title",
    "title_seen",
    "ld_overlap",
    "ld_present",
    "subtree_share",
    "depth_below",
    "prev_link_density",
    "next_link_density",
    "prev_log_len",
    "next_log_len",
    "prev_ends_sentence",
    "next_ends_sentence",
    "short_run",
    "in_container",
    "content_hint",
    "tag_p",
    "tag_cell",
    "tag_quote",
    "sibling_good_share",
)


@dataclass(slots=True)
class BlockContext:
    """What the features of one block need to know, gathered by ``article.py``."""

    text: str
    length: int
    link_density: float
    kind: str  # "paragraph", "heading", "list_item", "table"
    doubtful: bool
    rule_keep: bool  # the general rules of article.py would keep it
    boilerplate_line: bool
    good: bool  # a real paragraph (long or a sentence, link-poor)
    in_article_tag: bool
    after_title: bool  # the page's title (as <h1> or a line) came before it
    title_seen: bool  # the title was found among the page's blocks at all
    subtree_share: float  # share of the container's score held by its best sub-element
    depth_below: int  # element levels between the container and the block
    in_container: bool  # inside the best-scoring container (not only the region around it)
    content_hint: bool  # the nearest class/id hint says content
    tag: str  # the tag of the element holding the text
    sibling_good_share: float  # share of the text under its parent element in good blocks


def _ends_sentence(text: str) -> bool:
    stripped = text.rstrip(_CLOSERS + " *")
    return bool(stripped) and stripped[-1] in _SENTENCE_END_CHARS


def _text_counts(text: str) -> tuple[int, int, int, int]:
    """How many sentence ends, clause marks, digits and words (``_SENTENCE_END_RE``,
    ``_CLAUSE_RE``, ``_DIGIT_RE``, ``_WORD_RE`` matches) the text holds.

    Without the regular expressions where that is exact (the tests check it against them on
    random strings): in ASCII, \\d is 0-9 and \\w is [A-Za-z0-9_] (every other byte becomes a
    space to split on), and a sentence end is one of ".!?" followed by closers, then
    whitespace or the end (closers deleted, ends made ".", whitespace made " ")."""
    raw: bytes | None = None
    if text.isascii():
        raw = text.encode("ascii")
        marks = raw.translate(_ASCII_SENTENCE_BYTES, _ASCII_CLOSERS)
        n_sentences = marks.count(b". ") + marks.endswith(b".")
        n_clauses = raw.count(b",") + raw.count(b";") + raw.count(b":")
    else:
        n_sentences = _SENTENCE_END_RE.subn("", text)[1]
        n_clauses = _CLAUSE_RE.subn("", text)[1]
        # Typographic quotes and dashes are neither \\w nor \\d: as spaces they leave the
        # word and digit counts alone, and most Latin-script text is ASCII then.
        plain = text
        for mark in _NONWORD_MARKS:
            if mark in plain:
                plain = plain.replace(mark, " ")
        if plain.isascii():
            raw = plain.encode("ascii")
    if raw is None:
        return n_sentences, n_clauses, _DIGIT_RE.subn("", text)[1], _WORD_RE.subn("", text)[1]
    n_digits = len(raw) - len(raw.translate(None, _ASCII_DIGITS))
    return n_sentences, n_clauses, n_digits, len(raw.translate(_ASCII_WORD_BYTES).split())


def block_features(
    blocks: list[BlockContext], ld_shingles: set[str] | None, judged: list[bool] | None = None
) -> np.ndarray:
    """The feature matrix (one row per block, columns in ``FEATURES`` order).

    ``judged`` says which blocks the classifier will judge (all when None); the others are
    there as neighbours and for positions only, so their text is not analysed (their sentence,
    clause, digit, word and JSON-LD columns are 0)."""
    n = len(blocks)
    if not n:
        return np.zeros((0, len(FEATURES)), dtype=np.float64)
    good = [b.good for b in blocks]
    first_good = next((i for i, g in enumerate(good) if g), n)
    last_good = max((i for i, g in enumerate(good) if g), default=-1)
    good_total = sum(b.length for b in blocks if b.good) or 1
    good_before = 0
    gap = 0  # characters of not-good text since the last good block
    ends = [_ends_sentence(b.text) if b.text else False for b in blocks]
    log_lens = [math.log1p(b.length) for b in blocks]
    run = 0
    runs = [0] * n
    for i, b in enumerate(blocks):  # length of the run of short blocks each one is in
        run = run + 1 if b.length < 60 else 0
        runs[i] = run
    for i in range(n - 2, -1, -1):
        if runs[i] and runs[i + 1] > runs[i]:
            runs[i] = runs[i + 1]
    rows: list[list[float]] = []
    word_re = _WORD_RE
    for i, b in enumerate(blocks):
        text = b.text
        length = max(b.length, 1)
        kind = b.kind
        tag = b.tag
        if text and (judged is None or judged[i]):
            n_sentences, n_clauses, n_digits, n_words = _text_counts(text)
            clauses = min(100.0 * n_clauses / length, 10.0)
            digits = n_digits / length
            sentences = min(100.0 * n_sentences / length, 5.0)
            # Words per character: about 0.17 in English, near 1 / length in scripts written
            # without spaces, where \w+ runs over a whole clause.
            words_per_char = min(n_words / length, 1.0)
        else:
            sentences = clauses = digits = words_per_char = 0.0
        ld_overlap = 0.0
        if ld_shingles is not None and (judged is None or judged[i]):
            words = word_re.findall(text.lower())
            if len(words) >= 2:
                hits = sum(
                    words[j] + " " + words[j + 1] in ld_shingles for j in range(len(words) - 1)
                )
                ld_overlap = hits / (len(words) - 1)
            elif words:
                ld_overlap = float(words[0] in ld_shingles)
        before = good_before / good_total
        if b.good:
            good_before += b.length
        gap_log = math.log1p(gap)
        gap = 0 if b.good else gap + b.length
        last = i + 1 == n
        rows.append(
            [
                1.0,
                log_lens[i],
                b.link_density,
                b.doubtful,
                b.rule_keep,
                b.boilerplate_line,
                kind == "heading",
                kind == "list_item",
                kind == "table",
                ends[i],
                sentences,
                clauses,
                digits,
                words_per_char,
                i < first_good,
                i > last_good,
                i / n,
                before,
                1.0 - good_before / good_total,
                gap_log,
                b.in_article_tag,
                b.after_title,
                b.title_seen,
                ld_overlap,
                ld_shingles is not None,
                b.subtree_share,
                min(b.depth_below, 10) / 10.0,
                blocks[i - 1].link_density if i else 1.0,
                1.0 if last else blocks[i + 1].link_density,
                log_lens[i - 1] if i else 0.0,
                0.0 if last else log_lens[i + 1],
                ends[i - 1] if i else 0.0,
                0.0 if last else ends[i + 1],
                math.log1p(runs[i]),
                b.in_container,
                b.content_hint,
                tag == "p",
                tag in ("td", "th"),
                tag in ("blockquote", "pre"),
                b.sibling_good_share,
            ]
        )
    # One flat pass (bools become 0.0/1.0 as np.array would make them), C order as before.
    return np.fromiter(chain.from_iterable(rows), np.float64, n * len(FEATURES)).reshape(
        n, len(FEATURES)
    )


def ld_shingles_of(article_body: str | None) -> set[str] | None:
    """Words and word pairs of the JSON-LD articleBody (None when it is missing or short)."""
    if not article_body or len(article_body) < 200:
        return None
    words = _WORD_RE.findall(article_body.lower())
    found = set(words)
    found.update(words[j] + " " + words[j + 1] for j in range(len(words) - 1))
    return found


@dataclass(frozen=True, slots=True)
class BlockModel:
    """A small neural network: P(article text) = sigmoid(relu(z @ W1 + b1) @ w2 + b2), where
    ``z = (x - mean) / scale``; with no hidden layer (``w1`` of width 0), z @ w2 + b2."""

    features: tuple[str, ...]
    mean: np.ndarray
    scale: np.ndarray
    w1: np.ndarray  # (features, hidden)
    b1: np.ndarray  # (hidden,)
    w2: np.ndarray  # (hidden,), or (features,) without a hidden layer
    b2: float
    threshold: float
    lift: int = 1  # the blocks judged: the best container's, lifted this many element levels

    def proba(self, x: np.ndarray) -> np.ndarray:
        if not len(x):
            return np.zeros(0)
        z = (x - self.mean) / self.scale
        if self.w1.shape[1]:
            z = np.maximum(z @ self.w1 + self.b1, 0.0)
        out = z @ self.w2 + self.b2
        return 1.0 / (1.0 + np.exp(-np.clip(out, -30.0, 30.0)))

    def keep(self, x: np.ndarray) -> list[bool]:
        return [bool(v) for v in self.proba(x) >= self.threshold]

    def to_json(self) -> dict[str, Any]:
        def r(a: np.ndarray) -> Any:
            return np.round(a, 6).tolist()

        return {
            "features": list(self.features),
            "mean": r(self.mean),
            "scale": r(self.scale),
            "w1": r(self.w1),
            "b1": r(self.b1),
            "w2": r(self.w2),
            "b2": round(self.b2, 6),
            "threshold": round(self.threshold, 4),
            "lift": self.lift,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BlockModel:
        features = tuple(data["features"])
        if features != FEATURES:
            raise ValueError("the block model was trained on other features; retrain it")
        n = len(FEATURES)
        mean = np.asarray(data["mean"], dtype=np.float64)
        scale = np.asarray(data["scale"], dtype=np.float64)
        w1 = np.asarray(data["w1"], dtype=np.float64).reshape(n, -1)
        b1 = np.asarray(data["b1"], dtype=np.float64)
        w2 = np.asarray(data["w2"], dtype=np.float64)
        hidden = w1.shape[1]
        if mean.shape != (n,) or scale.shape != (n,) or b1.shape != (hidden,):
            raise ValueError("the block model's arrays do not match its features")
        if w2.shape != ((hidden or n),):
            raise ValueError("the block model's output weights do not match its layers")
        return cls(
            features,
            mean,
            scale,
            w1,
            b1,
            w2,
            float(data["b2"]),
            float(data["threshold"]),
            int(data.get("lift", 1)),
        )


@lru_cache(maxsize=1)
def load_default_model() -> BlockModel:
    """The shipped model (``block_model.json``), read once."""
    return BlockModel.from_json(json.loads(MODEL_PATH.read_text(encoding="utf-8")))
