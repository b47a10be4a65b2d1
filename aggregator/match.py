"""Topic matching: which topics a record belongs to, and which of their terms matched.

Term syntax (docs/watchlist.md has the admin's version):

* ``balloon`` - a word. Whole words only: ``war`` does not match "Warsaw".
* ``"weather balloon"`` (or an unquoted term with spaces) - a phrase: its words in order,
  separated by spaces or punctuation.
* ``balloon*`` - a prefix: any word that starts with ``balloon``. Only at a word's end, and at
  least three characters before it. Works inside phrases too: ``"воздушн* шар*"``.
* ``/regex/`` - a Python regular expression, searched case-insensitively in the original text
  (no accent folding): the escape hatch.

Text and terms are compared after the same normalization: Unicode NFKD, combining marks removed,
case folded. So ``Kondratovič`` = ``Kondratovic`` = ``KONDRATOVIC``, ``Rugienė`` = ``Rugiene``;
Cyrillic stays Cyrillic (``Лукашенко`` = ``лукашенко``; ``ё`` = ``е``, ``й`` = ``и``).

Light inflection matching, for languages that inflect names and nouns (Lithuanian, Russian,
Belarusian; also English plurals and -ed/-ing): a plain word of at least ``STEM_MIN_WORD``
letters is reduced to its stem by removing its longest known ending (``INFLECTION_ENDINGS``)
when at least ``STEM_MIN_STEM`` letters remain; it then matches any word made of that stem plus
nothing or one known ending. ``Lietuva`` matches "Lietuvos", "Lietuvoje"; ``Vilnius`` matches
"Vilniaus"; ``граница`` matches "границы"; ``balloon`` matches "balloons". Shorter words, prefix
terms and regexes match exactly as written.

Pure: no I/O. A TopicMatcher compiles the rules once; matching a record builds a token index of
its fields and looks terms up in it.
"""

from __future__ import annotations

import bisect
import re
import unicodedata
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from aggregator import records
from aggregator.model import Record, Topic, TopicMatch

__all__ = [
    "FIELDS",
    "INFLECTION_ENDINGS",
    "FieldTexts",
    "Term",
    "TermError",
    "TopicMatcher",
    "normalize",
    "parse_term",
    "record_fields",
    "term_spans",
]

FIELDS = ("title", "lead", "body")
STEM_MIN_WORD = 5
STEM_MIN_STEM = 4
MIN_PREFIX = 3

# Endings as they look after normalization (accents removed: ą->a, ė->e, ų->u, й->и, ў->у).
_ENDINGS_EN = ("s", "es", "ed", "ing")
_ENDINGS_LT = (
    *("a", "as", "is", "ys", "us", "e", "es", "os", "ai", "ui", "u", "i", "o", "y"),
    *("oje", "eje", "yje", "uje", "ije", "ioje", "iuje", "ams", "oms", "ems", "ims", "ums"),
    *("ais", "omis", "emis", "imis", "umis", "uose", "ose", "ese", "yse", "iuose", "ius"),
    *("iaus", "iu", "io", "iai", "ia", "ios", "iui", "iams", "ioms", "ija", "ijos", "ijai"),
    *("iju", "ijoje", "ijose", "ijas", "ijomis", "iuju", "uju", "ieji", "ojo", "ajai", "ame"),
)
_ENDINGS_RU_BE = (
    *("а", "я", "ы", "и", "е", "у", "ю", "о", "ь", "і", "ом", "ем", "ои", "еи", "ам", "ям"),
    *("ами", "ями", "ах", "ях", "ов", "ев", "ия", "ии", "ию", "иеи", "ого", "его", "ому"),
    *("ему", "ым", "им", "ых", "их", "ые", "ие", "ая", "яя", "ую", "юю", "ое", "ее", "ою"),
    *("ею", "ау", "амі", "ямі", "ага", "аму", "ымі", "ім", "ае", "ыя"),
)
INFLECTION_ENDINGS: frozenset[str] = frozenset((*_ENDINGS_EN, *_ENDINGS_LT, *_ENDINGS_RU_BE))
_ENDINGS_BY_LENGTH: tuple[tuple[int, frozenset[str]], ...] = tuple(
    sorted(
        (
            (n, frozenset(e for e in INFLECTION_ENDINGS if len(e) == n))
            for n in {len(e) for e in INFLECTION_ENDINGS}
        ),
        reverse=True,
    )
)
_ENDINGS_ALTERNATION = "|".join(
    re.escape(e) for e in sorted(INFLECTION_ENDINGS, key=lambda e: (-len(e), e))
)

_WORD_RE = re.compile(r"\w+")
# ASCII bytes: a word character (\w: letters, digits, "_") stays, any other becomes a space.
_ASCII_WORDS = bytes(
    c if c < 128 and (chr(c).isalnum() or c == ord("_")) else ord(" ") for c in range(256)
)


def _words(text: str) -> list[str]:
    r"""``re.findall(r"\w+", text)``; an ASCII text is cut by a byte table and ``split`` (the
    same words, a third of the time)."""
    if text.isascii():
        return text.encode("ascii").translate(_ASCII_WORDS).decode("ascii").split()
    return _WORD_RE.findall(text)


_WORDISH_RE = re.compile(r"\w+\*?|\*")
# Combining marks (category Mn) of the Basic Multilingual Plane, removed after NFKD.
_MARKS = "".join(chr(c) for c in range(0x300, 0x10000) if unicodedata.category(chr(c)) == "Mn")
_MARKS_RE = re.compile(f"[{re.escape(_MARKS)}]+")


class TermError(ValueError):
    """A rule term that does not follow the term syntax; the message says why."""


def normalize(text: str) -> str:
    """The form terms and texts are compared in: NFKD, no combining marks, case folded."""
    if text.isascii():  # NFKD leaves ASCII as it is, and it has no combining marks
        return text.casefold()
    return _MARKS_RE.sub("", unicodedata.normalize("NFKD", text)).casefold()


@dataclass(frozen=True, slots=True)
class Word:
    text: str  # normalized
    prefix: bool  # matches any word starting with text


@dataclass(frozen=True, slots=True)
class Term:
    """One parsed rule term. ``source`` is the term exactly as written in the watchlist."""

    source: str
    words: tuple[Word, ...] = ()
    regex: re.Pattern[str] | None = None
    # The same pattern without IGNORECASE, for lower-cased text: much faster to search, and
    # equivalent when the pattern has no upper-case letters (no \D, \W, [A-Z] ...).
    regex_lower: re.Pattern[str] | None = None

    @property
    def is_phrase(self) -> bool:
        return len(self.words) > 1


def stem(word: str) -> str:
    """The stem a plain normalized word matches by (itself when short or without an ending)."""
    if len(word) < STEM_MIN_WORD or not word.isalpha():
        return word
    for length, endings in _ENDINGS_BY_LENGTH:
        if len(word) - length >= STEM_MIN_STEM and word[-length:] in endings:
            return word[:-length]
    return word


def _uses_stem(word: Word) -> bool:
    return not word.prefix and len(word.text) >= STEM_MIN_WORD and word.text.isalpha()


@lru_cache(maxsize=4096)
def parse_term(term: str) -> Term:
    """Parse one rule term; raises TermError with a message an admin can act on."""
    raw = term.strip() if isinstance(term, str) else ""
    if not raw:
        raise TermError("empty term")
    if raw.startswith("/"):
        return _parse_regex(term, raw)
    body = raw
    if raw.startswith('"') or raw.endswith('"'):
        if len(raw) < 2 or not (raw.startswith('"') and raw.endswith('"')):
            raise TermError(f"unbalanced quote in term {term!r}")
        body = raw[1:-1].strip()
        if '"' in body:
            raise TermError(f"a quoted phrase cannot contain a quote: {term!r}")
        if not body:
            raise TermError(f"empty phrase {term!r}")
    words = tuple(_parse_word(term, piece) for piece in _pieces(term, normalize(body)))
    if not words:
        raise TermError(f"term {term!r} has no words (letters or digits)")
    return Term(source=term, words=words)


def _parse_regex(term: str, raw: str) -> Term:
    if len(raw) < 3 or not raw.endswith("/"):
        raise TermError(f"a regular expression term is written /pattern/, got {term!r}")
    try:
        pattern = re.compile(raw[1:-1], re.IGNORECASE)
    except re.error as exc:
        raise TermError(f"invalid regular expression {term!r}: {exc}") from None
    if pattern.search(""):
        raise TermError(f"regular expression {term!r} matches empty text (it would match all)")
    body = raw[1:-1]
    lower = re.compile(body) if body == body.lower() else None
    return Term(source=term, regex=pattern, regex_lower=lower)


def _pieces(term: str, body: str) -> list[str]:
    """Word pieces of a term body, checking that '*' only ends a word."""
    pieces = _WORDISH_RE.findall(body)
    for match in re.finditer(r"\*", body):
        i = match.start()
        before_ok = i > 0 and (body[i - 1].isalnum() or body[i - 1] == "_")
        after_ok = i + 1 == len(body) or not (body[i + 1].isalnum() or body[i + 1] in "_*")
        if not (before_ok and after_ok):
            raise TermError(
                f"wildcard '*' in {term!r} must end a word (write 'balloon*', not '*loon' or "
                "'bal*loon')"
            )
    return pieces


def _parse_word(term: str, piece: str) -> Word:
    if piece.endswith("*"):
        prefix = piece[:-1]
        if len(prefix) < MIN_PREFIX:
            raise TermError(
                f"wildcard prefix {prefix!r} in {term!r} is too short (at least {MIN_PREFIX} "
                "characters)"
            )
        return Word(prefix, prefix=True)
    return Word(piece, prefix=False)


# --- matching ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FieldTexts:
    """The texts of a record that rules look in."""

    title: str
    lead: str
    body: str

    def get(self, name: str) -> str:
        return str(getattr(self, name))


def record_fields(record: Record) -> FieldTexts:
    """Title, lead and body of a record (the stored title, else the headline heuristic)."""
    title, lead, body = records.sections(records.parse(record.text))
    return FieldTexts(title=record.title or title, lead=lead, body=body)


class _Index:
    """Tokens of some text, for word, stem, prefix and phrase lookups."""

    __slots__ = ("_lowered", "_sorted", "normalized", "original", "tokens")

    def __init__(self, text: str) -> None:
        self.original = text
        self.normalized = normalize(text)
        self.tokens = frozenset(_words(self.normalized))
        self._sorted: list[str] | None = None
        self._lowered: str | None = None

    @property
    def lowered(self) -> str:
        if self._lowered is None:
            self._lowered = self.original.lower()
        return self._lowered

    def has_word(self, text: str, prefix: bool, root: str | None) -> bool:
        """Whether a word of the text is ``text`` (``prefix``: starts with it; ``root``: the
        stem of a word that matches by stem, else None)."""
        if prefix:
            return self._starts_with(text)
        if text in self.tokens:
            return True
        if root is not None:
            # Words that extend the stem by nothing or one known ending.
            return any(
                t[len(root) :] in INFLECTION_ENDINGS or len(t) == len(root)
                for t in self._starting_with(root)
            )
        return False

    def _starts_with(self, prefix: str) -> bool:
        if self._sorted is None:
            self._sorted = sorted(self.tokens)
        words = self._sorted
        i = bisect.bisect_left(words, prefix)
        return i < len(words) and words[i].startswith(prefix)

    def _starting_with(self, prefix: str) -> Iterator[str]:
        if self._sorted is None:
            self._sorted = sorted(self.tokens)
        words = self._sorted
        i = bisect.bisect_left(words, prefix)
        while i < len(words) and words[i].startswith(prefix):
            yield words[i]
            i += 1


class _CompiledTerm:
    __slots__ = ("phrase_re", "regex", "regex_lower", "source", "term", "words")

    def __init__(self, term: Term) -> None:
        self.term = term
        self.source = term.source
        self.regex = term.regex
        self.regex_lower = term.regex_lower
        self.phrase_re = _phrase_regex(term.words) if term.is_phrase else None
        # Each word as has_word takes it, its stem found once here.
        self.words = tuple(
            (w.text, w.prefix, stem(w.text) if _uses_stem(w) else None) for w in term.words
        )

    def matches(self, index: _Index) -> bool:
        if self.regex_lower is not None:
            return self.regex_lower.search(index.lowered) is not None
        if self.regex is not None:
            return self.regex.search(index.original) is not None
        # Every word must occur somewhere before a phrase is worth a regex search.
        has_word = index.has_word
        for text, prefix, root in self.words:
            if not has_word(text, prefix, root):
                return False
        return self.phrase_re is None or self.phrase_re.search(index.normalized) is not None


def _word_pattern(word: Word) -> str:
    if word.prefix:
        return re.escape(word.text) + r"\w*"
    if _uses_stem(word):
        return re.escape(stem(word.text)) + f"(?:{_ENDINGS_ALTERNATION})?"
    return re.escape(word.text)


def _phrase_regex(words: Sequence[Word]) -> re.Pattern[str]:
    inner = r"\W+".join(_word_pattern(w) for w in words)
    return re.compile(rf"(?<!\w){inner}(?!\w)")


@dataclass(frozen=True, slots=True)
class _CompiledTopic:
    topic: Topic
    fields: tuple[str, ...]
    any: tuple[_CompiledTerm, ...]
    all: tuple[_CompiledTerm, ...]
    none: tuple[_CompiledTerm, ...]


def _compile_terms(terms: Sequence[str]) -> tuple[_CompiledTerm, ...]:
    return tuple(_CompiledTerm(parse_term(t)) for t in terms)


class TopicMatcher:
    """Matches records against the topics of a watchlist; build it once per watchlist."""

    def __init__(self, topics: Sequence[Topic]) -> None:
        self._topics = tuple(
            _CompiledTopic(
                topic=t,
                fields=tuple(f for f in FIELDS if f in t.rules.fields) or FIELDS,
                any=_compile_terms(t.rules.any),
                all=_compile_terms(t.rules.all),
                none=_compile_terms(t.rules.none),
            )
            for t in topics
        )

    @property
    def topic_ids(self) -> tuple[str, ...]:
        return tuple(t.topic.id for t in self._topics)

    def match(self, record: Record, allowed_topics: Sequence[str] = ()) -> tuple[TopicMatch, ...]:
        """The topics ``record`` matches (restricted to ``allowed_topics`` unless empty), each
        with the rule terms that matched, as written in the watchlist."""
        return self.match_fields(record.id, record_fields(record), allowed_topics)

    def match_fields(
        self, record_id: str, texts: FieldTexts, allowed_topics: Sequence[str] = ()
    ) -> tuple[TopicMatch, ...]:
        allowed = set(allowed_topics)
        indexes: dict[tuple[str, ...], _Index] = {}
        out: list[TopicMatch] = []
        for compiled in self._topics:
            if allowed and compiled.topic.id not in allowed:
                continue
            index = indexes.get(compiled.fields)
            if index is None:
                index = _Index("\n".join(texts.get(f) for f in compiled.fields))
                indexes[compiled.fields] = index
            terms = _evaluate(compiled, index)
            if terms is not None:
                out.append(TopicMatch(compiled.topic.id, record_id, terms))
        return tuple(out)


def _evaluate(topic: _CompiledTopic, index: _Index) -> tuple[str, ...] | None:
    """The matched terms when the topic's rules hold for the text, else None."""
    if not topic.any and not topic.all:
        return None
    matched_all = []
    for t in topic.all:  # the first that fails decides
        if not t.matches(index):
            return None
        matched_all.append(t.source)
    if any(t.matches(index) for t in topic.none):
        return None
    matched_any = [t.source for t in topic.any if t.matches(index)]
    if topic.any and not matched_any:
        return None
    return tuple(dict.fromkeys([*matched_any, *matched_all]))


# --- where terms occur (for highlighting) -----------------------------------------------------

_TOKEN_RE = re.compile(r"\w+")


def _word_matches_token(word: Word, token: str) -> bool:
    """Whether one normalized token is ``word`` (exactly, by prefix or by stem + ending)."""
    if word.prefix:
        return token.startswith(word.text)
    if token == word.text:
        return True
    if _uses_stem(word):
        root = stem(word.text)
        return token.startswith(root) and token[len(root) :] in INFLECTION_ENDINGS
    return False


def term_spans(text: str, terms: Sequence[str]) -> list[tuple[int, int]]:
    """Where the rule ``terms`` occur in ``text``: sorted, non-overlapping (start, end) offsets
    into ``text`` itself, by the same rules as matching (accents and case folded, stems,
    prefixes, phrases, regexes). Terms that do not parse are ignored."""
    parsed: list[Term] = []
    for raw in terms:
        try:
            parsed.append(parse_term(raw))
        except TermError:
            continue
    spans: list[tuple[int, int]] = []
    tokens = [(m.start(), m.end(), normalize(m.group())) for m in _TOKEN_RE.finditer(text)]
    for term in parsed:
        if term.regex is not None:
            spans.extend(m.span() for m in term.regex.finditer(text) if m.end() > m.start())
            continue
        size = len(term.words)
        for i in range(len(tokens) - size + 1):
            window = tokens[i : i + size]
            if all(
                _word_matches_token(w, tok[2]) for w, tok in zip(term.words, window, strict=True)
            ):
                spans.append((window[0][0], window[-1][1]))
    merged: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged
