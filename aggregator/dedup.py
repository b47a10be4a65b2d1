"""Which development does a new record join? Three levels of "the same".

1. Same article: ``identity.canonical_url`` (tracking parameters, fragments, AMP and mobile variants
   removed); the store also compares feed GUIDs and content hashes (records.content_hash).
2. Near-duplicate: rewrites and syndicated copies share most word shingles. A MinHash signature
   estimates the shingle Jaccard similarity; its LSH band keys are indexed by the store, so finding
   near-duplicate candidates is an equality query, not a scan.
3. Same event: different articles about one development share its salient vocabulary (names,
   places, numbers, dates) much more than articles about another event of the same kind do.
   ``decide`` scores the new record against the centroid of each candidate development: a TF-IDF
   cosine of the whole text and of the headline and lead, with IDF from fixed background word
   frequencies (``dedup_data``), checked for shared protagonists and actions. No corpus
   statistics live in the database, so replicas need no shared counters.

Everything here is pure: plain data in, plain data out; no clock, files or network.

See docs/dedup.md for the method, the thresholds and the measured figures.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import struct
import unicodedata
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from heapq import heappush, heapreplace
from itertools import chain, compress
from operator import itemgetter, mul, not_
from sys import intern
from typing import Any, TypeVar

import numpy as np

from aggregator.model import DedupOptions, DedupReason

__all__ = [
    "FINGERPRINT_VERSION",
    "Candidate",
    "Decision",
    "DevelopmentScore",
    "Fingerprint",
    "background_idf",
    "decide",
    "development_scores",
    "fingerprint",
    "fingerprint_from_json",
    "fingerprint_to_json",
    "is_headline",
    "minhash_similarity",
    "representative",
    "time_decay",
]

# --------------------------------------------------------------------------------------------
# Text normalization shared by every level
# --------------------------------------------------------------------------------------------

# Cyrillic to Latin in the Baltic/Czech style, so Лукашенко, Lukašenka and Lukashenko meet once
# diacritics are dropped and the digraphs below are folded.
_CYRILLIC = {
    "а": "a",
    "б": "b",
    "в": "v",
    "г": "g",
    "ґ": "g",
    "д": "d",
    "е": "e",
    "ё": "e",
    "є": "je",
    "ж": "z",
    "з": "z",
    "и": "i",
    "і": "i",
    "ї": "ji",
    "й": "j",
    "к": "k",
    "л": "l",
    "м": "m",
    "н": "n",
    "о": "o",
    "п": "p",
    "р": "r",
    "с": "s",
    "т": "t",
    "у": "u",
    "ў": "u",
    "ф": "f",
    "х": "h",
    "ц": "c",
    "ч": "c",
    "ш": "s",
    "щ": "sc",
    "ъ": "",
    "ы": "y",
    "ь": "",
    "э": "e",
    "ю": "ju",
    "я": "ja",
}
_TRANSLIT = str.maketrans(
    {
        **{ord(k): v for k, v in _CYRILLIC.items()},
        **{ord(k.upper()): v for k, v in _CYRILLIC.items()},
    }
)
# Latin digraphs of English transliteration folded to the one-letter Baltic forms; "j"/"y" and
# "w"/"v" folded too. Applied to every token of every language, so it only changes hash keys.
_DIGRAPHS = re.compile(r"shch|sch|sh|ch|zh|kh|ts|tz|ph|th|w|y|j")
_DIGRAPH_MAP = {
    "shch": "sc",
    "sch": "s",
    "sh": "s",
    "ch": "c",
    "zh": "z",
    "kh": "h",
    "ts": "c",
    "tz": "c",
    "ph": "f",
    "th": "t",
    "w": "v",
    "y": "i",
    "j": "i",
}
_DOUBLE = re.compile(r"([a-z])\1+")
# A number, with the thousands groups Lithuanian and Russian separate by a (no-break, thin)
# space ("4 000" is 4000, as "4,000" is), or a word.
_GROUP_SPACE = re.compile(r"[ \u00a0\u2009\u202f]")
# Words first (most tokens), and the two number forms behind one shared first digit: the
# alternatives start with disjoint characters, so the order finds the same tokens, faster.
_TOKEN = re.compile(
    rf"[^\W\d_]+|\d(?:\d{{0,2}}(?:{_GROUP_SPACE.pattern}\d{{3}})+(?:[.,]\d+)?(?!\d)|\d*(?:[.,:]\d+)*)"
)
# The same pattern for an ASCII text, where ASCII \w and \d are Unicode's: a third faster.
_TOKEN_ASCII = re.compile(_TOKEN.pattern, re.ASCII)
# Words are cut to this many letters: a crude stemmer that also meets Lithuanian and Russian
# inflections halfway (Vilnius, Vilniaus, Вильнюсе -> "vilniu"/"vilnius").
STEM_LENGTH = 6
# Inflectional endings cut before that (English -s/-ed/-ing/-ion, final vowels that Lithuanian
# and Russian inflect), when four letters stay: refuse/refuses/refused/refusal meet, and so do
# Lukashenko/Lukašenka and balloon/balloons.
_ENDING = re.compile(
    r"(?<=[a-z]{4})(?:ations?|ings?|ions?|ians?|ies|ied|ed|es|al|s|a|e|i|o|u)$", re.M
)


def _strip_endings(text: str) -> str:
    return _ENDING.sub("", text)


_MONTHS = {
    # English, Lithuanian (nominative and genitive stems), Russian (translit stems)
    "m01": ("january", "jan", "sausio", "sausis", "janvar", "janvaria", "janvara"),
    "m02": ("february", "feb", "vasario", "vasaris", "fevral", "fevrala"),
    "m03": ("march", "mar", "kovo", "kovas", "mart", "marta"),
    "m04": ("april", "apr", "balandzio", "balandis", "aprel", "aprela"),
    "m05": ("may", "geguzes", "geguze", "mai", "maja"),
    "m06": ("june", "jun", "birzelio", "birzelis", "iun", "iuna", "ijun", "ijuna"),
    "m07": ("july", "jul", "liepos", "liepa", "iul", "iula", "ijul", "ijula"),
    "m08": ("august", "aug", "rugpjucio", "rugpjutis", "avgust", "avgusta"),
    "m09": ("september", "sept", "sep", "rugsejo", "rugsejis", "sentabr", "sentabra"),
    "m10": ("october", "oct", "spalio", "spalis", "oktabr", "oktabra"),
    "m11": ("november", "nov", "lapkricio", "lapkritis", "noabr", "noabra"),
    "m12": ("december", "dec", "gruodzio", "gruodis", "dekabr", "dekabra"),
}

# News predicates and nouns that say the same thing, in English, Lithuanian and Russian: each
# group is folded into its first word, so "refuses talks" meets "rejects negotiations" and
# "atmeta derybas" / "отказался от переговоров". A group marked "!" names an action (what
# happened, not what it is about): see ``DedupOptions.action_penalty``.
_SYNONYMS_RAW = """
!reject refuse refusal decline rebuff dismiss spurn atmesti atmeta atmetė atsisako atsisakė
  отказ отказался отказалась отказались отклонил отклонила отверг отвергла отвергли
talks negotiations negotiation dialogue discussions derybos derybų derybas pokalbiai
  переговоры переговоров переговорах диалог
earthquake quake tremor drebėjimas землетрясение землетрясения толчок
!kill killed dead death died dies die žuvo mirė nužudė žuvę погиб погибли погибших убит
  убиты умер скончался
!arrest arrested detain detained custody sulaikė sulaikytas areštuotas задержан задержаны
  арестован арестованы
!acquire acquisition buy buys bought purchase takeover įsigyja įsigijo pirks купил купит
  покупка приобретение
!resign resigned resignation quit atsistatydina atsistatydino отставка отставку ушел
!pledge promise vow pledged promised vowed pažadėjo žada pažadas пообещал обещает обещание
!emergency nepaprastoji nepaprastąją чрезвычайное чрезвычайного
balloon balionai balionų balionus balionais аэростат аэростаты шары шаров
smuggling smuggler smugglers contraband kontrabanda kontrabandininkai контрабанда контрабандисты
eu es ес евросоюз евросоюза
usa jav сша
lng sgd спг
sanction sanctions sankcijos sankcijų sankcijas sankcijomis санкции санкций санкциях санкциями
airport airports аэропорт аэропорта аэропорту аэропорты
flight flights skrydis skrydžiai skrydžių skrydžius рейс рейсы рейсов полёты полетов полёт
passenger passengers keleivis keleiviai keleivių keleivius пассажир пассажиры пассажиров
close closed closes closure shut suspend suspended uždarė uždarytas uždaryti uždarymas sustabdė
  sustabdyti закрыт закрыли закрыть закрытие приостановил приостановлены
cancel cancelled canceled cancellation atšaukė atšaukta atšaukti atšaukimas отменены отменил
  отменили отмена
border borders siena sieną sienos pasienis pasienio граница границы границу границе
cigarette cigarettes cigaretės cigarečių cigaretes сигареты сигарет
government vyriausybė vyriausybės vyriausybę правительство правительства
"""

_STOPWORDS_RAW = """
a about above after again against ago all almost along already also although always am among an
and another any are around as at be became because become been before being below between both but
by can could did do does doing done down during each either else even ever every few for from
further had has have having he her here hers herself him himself his how however i if in into is it
its itself just last least less like made make many may me might more most much must my myself near
need neither never new next no nor not now of off often on once one only or other others our ours
ourselves out over own per perhaps rather really said same say says see seen several she should
since so some still such than that the their theirs them themselves then there these they this
those though three through thus to too two under until up upon us very via was we well were what
when where whether which while who whom whose why will with within without would yet you your
yours yourself told tell according reported reports report reuters ap afp news week year years day
days time first also get got going back way take took still including told monday tuesday wednesday
thursday friday saturday sunday today yesterday tomorrow mr mrs ms dr s t don didn doesn isn wasn
weren won wouldn couldn shouldn ve ll re d m o
ir kad bet su is i iš į per apie nuo iki ar tai tas ta jis ji jie jos jų jo juos yra buvo bus būtų
kaip kur kai dar jau taip pat tik net o nes nors arba be prie po prieš už tarp dėl pagal mes jūs
aš savo šis ši šie šios to tos kuris kuri kurie kurios kurį kurią kurių kuo kuriuo
vienas viena du dvi trys metų metais dienos pranešė sakė teigė
и в во не что он на я с со как а то все она так его но да ты к у же вы за бы по только ее мне
было вот от меня еще нет о из ему теперь когда даже ну вдруг ли если уже или ни быть был него до
вас нибудь опять уж вам ведь там потом себя ничего ей может они тут где есть надо ней для мы тебя
их чем была сам чтобы без будто чего раз тоже себе под будет ж тогда кто этот того потому этого
какой совсем ним здесь этом один почти мой тем чтобы нее сейчас были куда зачем всех никогда можно
при наконец два об другой хоть после над больше тот через эти нас про всего них какая много разве
три эту моя впрочем хорошо свою этой перед иногда лучше чуть том нельзя такой им более всегда
конечно всю между это этих также заявил сообщил сообщает году года лет
"""


def _skeleton_text(text: str) -> str:
    """Lowercase, transliterate Cyrillic, drop diacritics, cut inflectional endings, then fold
    digraphs and doubled letters (after the cut, so "rejects" keeps its stem's "t")."""
    low = text.lower().translate(_TRANSLIT)
    decomposed = unicodedata.normalize("NFKD", low)
    if not decomposed.isascii():
        decomposed = "".join(c for c in decomposed if not unicodedata.combining(c))
    folded = _DIGRAPHS.sub(lambda m: _DIGRAPH_MAP[m.group(0)], _strip_endings(decomposed))
    return _DOUBLE.sub(r"\1", folded)


def _skeleton_word(word: str) -> str:
    """The key of one word, exactly as ``_tokenize`` makes it."""
    folded = _skeleton_text(word)
    return folded if folded[:1].isdigit() else folded[:STEM_LENGTH]


_STOPWORDS = frozenset(_skeleton_word(w) for w in _STOPWORDS_RAW.split())


def _synonym_map() -> dict[str, str]:
    out: dict[str, str] = {}
    # One group a line; a line starting with two spaces continues the previous group.
    for group in _SYNONYMS_RAW.strip().replace("\n  ", " ").split("\n"):
        words = group.split()
        head = _skeleton_word(words[0].lstrip("!"))
        for word in words[1:]:
            key = _skeleton_word(word)
            if key != head and key not in _STOPWORDS:
                out.setdefault(key, head)
    return out


_SYNONYM_OF = _synonym_map()
# The keys of the action groups: two reports of one development name the same action.
_ACTIONS = frozenset(
    _skeleton_word(line.split()[0][1:])
    for line in _SYNONYMS_RAW.strip().split("\n")
    if line.startswith("!")
)
# A month's name that is also a stop word's key ("may", and "nov", the key of "now") is the
# stop word: "Apple may launch" and "out now" name no month.
_MONTH_OF = {
    key: month
    for month, names in _MONTHS.items()
    for key in map(_skeleton_word, names)
    if key not in _STOPWORDS
}


@dataclass(frozen=True, slots=True)
class _Tokens:
    """One text cut into tokens: the raw words and their terms, position-aligned (a term is ""
    for a stop word or a single letter); ``keys``: their normalized keys, position-aligned
    (made by ``_tokenize`` only: a fingerprint reads the per-word caches instead);
    ``named``: the distinct words written like a name (capitalized or an acronym) with their
    keys; ``capital``: the distinct words whose first letter is a capital; ``numbers``: the
    distinct number terms (numbers, dates and months). Per-word facts are found once per
    distinct word rather than once per token."""

    raw: list[str]
    keys: list[str] = field(default_factory=list)
    named: list[tuple[str, str]] = field(default_factory=list)
    capital: set[str] = field(default_factory=set)
    terms: list[str] = field(default_factory=list)
    numbers: set[str] = field(default_factory=set)


def _concept(key: str) -> str:
    return _SYNONYM_OF.get(key, key)


# Word -> key, across records: news repeats its vocabulary, so most words of a record were folded
# before. Cleared when full rather than evicted one by one (a bound, not a policy), and only
# before a text is cut (``_make_room``), so every word of the texts of one fingerprint is here
# while it is made; ≈ 4 MB full with the other per-word tables.
_KEY_CACHE: dict[str, str] = {}
KEY_CACHE_SIZE = 30_000
# Word -> its key's term ("#4000" or "m05" for a number or month, the key for a content word,
# "" for a stop word or a single letter), and the crc32 of its key (the MinHash's token hash);
# ``_WORD_NUMBER``: the words whose term is a number's. Filled and cleared with _KEY_CACHE.
_WORD_TERM: dict[str, str] = {}
_WORD_CRC: dict[str, int] = {}
_WORD_NUMBER: dict[str, str] = {}


# The shape of the words in _KEY_CACHE, as sets so that a record's capitalized and name-shaped
# words are two set intersections (C) rather than tests of every word (Python): ``_CAPITAL``
# holds those starting with a capital, ``_NAMED`` those written like a name. A word is
# classified when its key is cached, and the sets are cleared with _KEY_CACHE.
_CAPITAL: set[str] = set()
_NAMED: set[str] = set()


def _name_shaped(word: str) -> bool:
    """Capitalized (not all capitals, two letters or more) or an acronym (NATO, AMD, UNC)."""
    if word.isupper():
        return 1 < len(word) <= 5
    return word[0].isupper() and len(word) > 1


def _make_room() -> None:
    """Clear the per-word tables when they are full (before a text is cut, never between the
    texts of one fingerprint)."""
    if len(_KEY_CACHE) >= KEY_CACHE_SIZE:
        for table in (_KEY_CACHE, _WORD_TERM, _WORD_CRC, _WORD_NUMBER):
            table.clear()
        _CAPITAL.clear()
        _NAMED.clear()


def _tokenize(text: str) -> _Tokens:
    """``text`` cut into tokens, with their keys."""
    _make_room()
    tokens = _tokens(text)
    return _Tokens(
        tokens.raw,
        list(map(_KEY_CACHE.__getitem__, tokens.raw)),
        tokens.named,
        tokens.capital,
        tokens.terms,
        tokens.numbers,
    )


def _tokens(text: str) -> _Tokens:
    """``text`` cut into tokens (no keys), its new words added to the per-word tables."""
    raw = (_TOKEN_ASCII if text.isascii() else _TOKEN).findall(text)
    if not raw:
        return _Tokens([])
    cache, word_number = _KEY_CACHE, _WORD_NUMBER
    words = set(raw)
    new = words.difference(cache)
    if new:
        # Normalize the new words in one pass over a joined string: the folds never cross a
        # newline, so a word's key does not depend on its neighbours (nor on their order).
        listed = list(new)
        folded = _skeleton_text("\n".join(listed)).split("\n")
        crc, term_of, word_crc = zlib.crc32, _WORD_TERM, _WORD_CRC
        for word, k in zip(listed, folded, strict=True):
            key = cache[word] = intern(k if k[:1].isdigit() else _concept(k[:STEM_LENGTH]))
            word_crc[word] = crc(key.encode())
            num = _number_key(key) if key[:1].isdigit() else _MONTH_OF.get(key)
            if num is not None:
                term_of[word] = word_number[word] = intern(num)
            else:
                term_of[word] = key if len(key) > 1 and key not in _STOPWORDS else ""
        _CAPITAL.update(w for w in listed if w[0].isupper())
        _NAMED.update(w for w in listed if _name_shaped(w))
    capital = _CAPITAL.intersection(words)
    return _Tokens(
        raw,
        [],
        # Name-shaped words start with a capital: looked up among the few capitalized ones.
        [(w, cache[w]) for w in _NAMED.intersection(capital)],
        capital,
        list(map(_WORD_TERM.__getitem__, raw)),
        {word_number[w] for w in word_number.keys() & words},
    )


# --------------------------------------------------------------------------------------------
# Background rarity: how informative a term is, from fixed general word frequencies
# --------------------------------------------------------------------------------------------

# A typical article's length in tokens: turns a word's frequency into the chance that an article
# contains it (Poisson), the document frequency an IDF needs.
_DOC_TOKENS = 400.0
# Keys missing from the table are rarer than its cut-off (frequency 1e-6).
_FLOOR_FREQ = 10**-6.5
_NUMBER_DIGIT = re.compile(r"\d")


# The table as two sorted arrays, keys as fixed-width UTF-8 bytes and their centibels: about a
# tenth of a dict's memory for ~50,000 terms, found by binary search (misses only: _idf_cached).
# Loaded on first use, so a process that never weighs a term (an idle service) never holds it.
_background: tuple[np.ndarray, np.ndarray] | None = None


def _load_background() -> tuple[np.ndarray, np.ndarray]:
    import base64

    from aggregator import dedup_data

    raw = zlib.decompress(base64.b64decode("".join(dedup_data.BLOB)))
    fields = raw.replace(b"\n", b"\t").split(b"\t")  # key, centibels, key, centibels...
    keys = np.array(fields[0::2], dtype=np.bytes_)
    cbs = np.array(fields[1::2], dtype=np.bytes_).astype(np.int32)
    if len(keys) > 1 and not (keys[1:] > keys[:-1]).all():  # not as the builder writes it
        # a repeated key: the last one counts
        table = {k: int(cb) for k, cb in zip(fields[0::2], fields[1::2], strict=True)}
        ordered = sorted(table)  # bytewise, as numpy compares bytes; UTF-8 keeps code point order
        keys = np.array(ordered, dtype=np.bytes_)
        cbs = np.array([table[k] for k in ordered], dtype=np.int32)
    return keys, cbs


def _background_cb(key: str) -> int | None:
    """The background table's centibels for ``key``, or None when it is not there."""
    global _background
    if _background is None:
        _background = _load_background()
    keys, cbs = _background
    probe = key.encode("utf-8")
    i = int(keys.searchsorted(probe))  # the method: a third of np.searchsorted's overhead
    # Fixed-width bytes drop trailing NULs: a key with a NUL is never a table term.
    if i < len(keys) and keys.item(i) == probe and b"\0" not in probe:
        return int(cbs.item(i))
    return None


_MONTH_KEY_WORD = {key: _skeleton_word(names[0]) for key, names in _MONTHS.items()}


def background_idf(key: str) -> float:
    """IDF of a normalized term from general word frequencies: -ln P(an article contains it)."""
    return _idf_of_cb(key, _background_cb(_background_probe(key)))


def _background_probe(key: str) -> str:
    """The table entry a key's frequency is read from: a number's shape ("#0000"), a month key's
    English name, else the key itself."""
    if key.startswith("#"):
        return _NUMBER_DIGIT.sub("0", key)
    # A month key ("m07") is as common as the English month name.
    return _MONTH_KEY_WORD.get(key, key)


def _idf_of_cb(key: str, cb: int | None) -> float:
    """``background_idf`` of ``key`` from the centibels of its probe (None: not in the table)."""
    if key.startswith("#"):
        digits = sum(ch.isdigit() for ch in key)
        # A specific number is one of the 10^(digits-1) numbers of its shape.
        freq = (10 ** (-cb / 100) if cb is not None else _FLOOR_FREQ) / 10 ** (digits - 1)
    else:
        freq = 10 ** (-cb / 100) if cb is not None else _FLOOR_FREQ
    expected = max(freq, 1e-9) * _DOC_TOKENS
    return -math.log(-math.expm1(-expected)) if expected < 30 else 0.0


def _background_idfs(keys: Sequence[str]) -> list[float]:
    """``background_idf`` of each of ``keys`` (no name pairs), the table searched once for all."""
    global _background
    if _background is None:
        _background = _load_background()
    table, cbs = _background
    probes = [_background_probe(k).encode("utf-8") for k in keys]
    at = table.searchsorted(np.array(probes, dtype=np.bytes_)).tolist()
    out = []
    size = len(table)
    for key, probe, i in zip(keys, probes, at, strict=True):
        # Fixed-width bytes drop trailing NULs: a key with a NUL is never a table term.
        found = i < size and table.item(i) == probe and b"\0" not in probe
        out.append(_idf_of_cb(key, int(cbs.item(i)) if found else None))
    return out


# --------------------------------------------------------------------------------------------
# Level 2: MinHash signatures and LSH bands
# --------------------------------------------------------------------------------------------

NUM_PERM = 64
BAND_ROWS = 4  # 16 bands of 4 rows: a pair shares a band with p = 0.65 at Jaccard 0.5, 0.98 at 0.7
SHINGLE = 3
_MASK32 = np.uint64(0xFFFFFFFF)
_rng = np.random.default_rng(0x5EED_DED0)
# Multiply-shift hashing (Dietzfelbinger): h(x) = (a*x + b) mod 2^64 >> 32 with odd a. The
# constants are fixed so signatures computed by any process or replica compare.
_PERM_A = _rng.integers(1, 2**63, size=NUM_PERM, dtype=np.uint64) | np.uint64(1)
_PERM_B = _rng.integers(0, 2**63, size=NUM_PERM, dtype=np.uint64)
_PERM_A_COLUMN = _PERM_A[:, None]
_PERM_B_COLUMN = _PERM_B[:, None]
_MIX1 = np.uint64(0x9E3779B97F4A7C15)
_MIX2 = np.uint64(0xC2B2AE3D27D4EB4F)


def _minhash(words: Sequence[str]) -> tuple[tuple[int, ...], np.ndarray | None]:
    """MinHash signature of the shingles of the keys of ``words`` (tokens of one text, all in
    the per-word tables; empty for an empty text), as a tuple and as uint32 values (None for an
    empty text)."""
    if not words:
        return (), None
    # crc32 is stable across processes (unlike hash()), so replicas compute the same signature.
    th = np.fromiter(map(_WORD_CRC.__getitem__, words), np.uint64, len(words))
    # Integer arrays wrap around silently (mod 2^64), as the hashing means them to.
    if len(th) >= SHINGLE:
        sh = th[: len(th) - 2] * _MIX1
        sh += th[1 : len(th) - 1] * _MIX2
        sh += th[2:]
    else:
        sh = th
    # A repeated shingle cannot change a minimum: no np.unique (a sort) before it. Few
    # shingles (a headline's): one row per shingle, reduced down the columns, costs less.
    if len(sh) < _MINHASH_ROWS:
        values = np.multiply(sh[:, None], _PERM_A)
        values += _PERM_B
        low = values.min(axis=0)
    else:
        values = np.multiply(_PERM_A_COLUMN, sh)
        values += _PERM_B_COLUMN
        low = values.min(axis=1)
    # The shift after the minimum: x >> 32 is monotonic, so min(x >> 32) == min(x) >> 32.
    signature = (low >> _SHIFT32).astype(np.uint32)
    return tuple(signature.tolist()), signature


_SHIFT32 = np.uint64(32)
_MINHASH_ROWS = 48
_BAND_BYTES = BAND_ROWS * 4  # a band: BAND_ROWS signature values as little-endian uint32
_BAND_HASH = hashlib.blake2b(digest_size=8)  # never updated: copied for each band
_BAND_PREFIXES = tuple(f"{band:02d}:" for band in range(NUM_PERM // BAND_ROWS))


def _bands(signature: np.ndarray | None) -> tuple[str, ...]:
    if signature is None or len(signature) != NUM_PERM:
        return ()
    buf = signature.astype("<u4", copy=False).tobytes()
    out = []
    for at, prefix in zip(range(0, len(buf), _BAND_BYTES), _BAND_PREFIXES, strict=True):
        h = _BAND_HASH.copy()  # a copy of a fresh hash costs less than making one
        h.update(buf[at : at + _BAND_BYTES])
        out.append(prefix + h.hexdigest())
    return tuple(out)


def minhash_similarity(a: Sequence[int], b: Sequence[int]) -> float:
    """Estimated Jaccard similarity of two signatures (0.0 when either is empty)."""
    if not a or not b or len(a) != len(b):
        return 0.0
    same = sum(1 for x, y in zip(a, b, strict=True) if x == y)
    return same / len(a)


# --------------------------------------------------------------------------------------------
# Fingerprints
# --------------------------------------------------------------------------------------------

# 2: up to 300 terms (was 120). Version-1 fingerprints read and compare as before: both are
# unit vectors, the older one only lacks its lightest terms.
# 3: the content of 2, stored packed (see fingerprint_to_json); 1 and 2 are still read.
FINGERPRINT_VERSION = 3
# The heaviest terms kept per record: the whole vocabulary of all but the longest articles. A
# shorter cut (120) dropped the light tail of long reports, the shared background of one story
# (places, officials, earlier events), and lowered same-story cosines most (docs/dedup.md).
MAX_TERMS = 300
MAX_KEY_TERMS = 12
# Candidate retrieval reads at most this many hits per LSH band or key term within the window,
# the newest first: a key shared by more records than this (a capital's name on a busy day) is a
# stop word of the moment, and its older hits add cost, not candidates that matter. Measured with
# benchmarks/dedup_bench.py (docs/dedup.md, "Candidate retrieval").
CANDIDATE_ROWS_PER_KEY = 64
# Candidates scored per record, those sharing the most keys first, and at most this many from one
# development. The cap bounds the fingerprints read and parsed per record, the cost that grows
# with the store; the per-development bound keeps a busy story (hundreds of reports in the window)
# from filling the cap and crowding out a smaller development of the same kind, while 16 members
# still give a development's centroid. On the development corpus (docs/dedup.md, "Candidate
# retrieval") every figure is the same as with 200 unbounded candidates.
MAX_CANDIDATES = 50
MAX_CANDIDATES_PER_DEVELOPMENT = 16
TITLE_WEIGHT = 2.0  # a title word counts as this many body occurrences
ENTITY_WEIGHT = 1.5  # names (capitalized mid-sentence) and numbers mark the event


@dataclass(frozen=True, slots=True)
class Fingerprint:
    """What dedup remembers about a record: plain, JSON-serializable data.

    ``terms``/``weights``: the record's heaviest normalized terms with their weights (log term
    frequency, title and entity boosts); ``entities``: names; ``numbers``: numbers and dates
    (``m05`` is May, in any language); ``title_terms``: the headline's terms; ``length``: words in
    the text.
    """

    minhash: tuple[int, ...]
    bands: tuple[str, ...]
    key_terms: tuple[str, ...]
    terms: tuple[str, ...] = ()
    weights: tuple[float, ...] = ()
    entities: tuple[str, ...] = ()
    numbers: tuple[str, ...] = ()
    title_terms: tuple[str, ...] = ()
    length: int = 0
    language: str | None = None
    head_terms: tuple[str, ...] = ()
    head_weights: tuple[float, ...] = ()
    version: int = FINGERPRINT_VERSION
    _vector: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    _head: dict[str, float] = field(default_factory=dict, compare=False, repr=False)
    _names: dict[str, float] = field(default_factory=dict, compare=False, repr=False)

    def __reduce__(self) -> tuple[Any, ...]:
        # Pickled (to and from a parse-pool process) without the derived vectors; unpickled
        # with its terms interned again, as fingerprint_from_json makes them.
        state = tuple(getattr(self, f.name) for f in fields(self) if f.init and f.compare)
        return (_unpickle_fingerprint, state)

    def head_vector(self) -> dict[str, float]:
        """The headline and lead's terms as a unit vector: what the report says happened."""
        if not self._head and self.head_terms:
            self._head.update(zip(self.head_terms, self.head_weights, strict=True))
        return self._head

    def names_vector(self) -> dict[str, float]:
        """The names and numbers among the terms, as a unit vector: who, where and how many
        (the entity sub-vector of Miranda et al. 2018)."""
        if not self._names and self.terms:
            marked = set(self.entities).union(self.numbers)
            picked = {t: w for t, w in zip(self.terms, self.weights, strict=True) if t in marked}
            norm = math.sqrt(sum(w * w for w in picked.values()))
            if norm:
                self._names.update((t, w / norm) for t, w in picked.items())
        return self._names

    def vector(self) -> dict[str, float]:
        """The term weights as a dict (built once per fingerprint)."""
        if not self._vector and self.terms:
            self._vector.update(zip(self.terms, self.weights, strict=True))
        return self._vector


def _is_content(key: str) -> bool:
    return len(key) > 1 and key not in _STOPWORDS


def _entity_keys(tokens: _Tokens) -> set[str]:
    """Keys of words written capitalized where a sentence does not start (names, places):
    capitalized words of two letters or more, and acronyms (NATO, AMD, UNC)."""
    raw = tokens.raw
    first = raw[0] if raw else None
    stop = _STOPWORDS
    return {
        k
        for w, k in tokens.named
        # the first word counts only where it occurs again
        if len(k) > 1 and k not in stop and (w != first or raw.count(w) > 1)
    }


def _name_pairs(tokens: _Tokens) -> list[str]:
    """Adjacent capitalized words ("Regina Benjamin", "Red Sox") as one term: a full name is
    far more specific to one event than either of its words."""
    capital = tokens.capital
    if not capital:
        return []
    raw, key_of, stop = tokens.raw, _KEY_CACHE, _STOPWORDS
    out = []
    last, last_key = -2, ""  # the position and key of the last capitalized content word
    # The positions of capitalized words, picked in C.
    for i in compress(range(len(raw)), map(capital.__contains__, raw)):
        k = key_of[raw[i]]
        if len(k) > 1 and k not in stop:
            if last == i - 1:
                out.append(intern(f"{last_key}_{k}"))  # interned, like every other term
            last, last_key = i, k
    return out


def _is_number_term(key: str) -> bool:
    return key.startswith("#") or key in _MONTHS


def _number_key(key: str) -> str | None:
    if key[:1].isdigit():
        return "#" + _GROUP_SPACE.sub("", key.replace(",", ""))
    return _MONTH_OF.get(key)


# A term's weight factor, indexed by whether it is a name or a number.
_BOOST = (1.0, ENTITY_WEIGHT)


def _weighed(
    counts: Mapping[str, float], boosted: set[str]
) -> tuple[list[str], list[float], list[int]]:
    """(terms in key order, their weights, the terms' indexes heaviest first with ties in key
    order). A term's weight: (1 + ln count) x ENTITY_WEIGHT for a name or number x its IDF,
    computed in C by chained maps (the same operations, in the same order, as a loop would)."""
    terms = sorted(counts)
    idfs = list(map(_IDF_CACHE.get, terms))
    # Misses (name pairs, never cached; words not seen yet) and zeros alike: a zero weighed
    # again is the same zero.
    missing = list(compress(range(len(terms)), map(not_, idfs)))
    if missing:
        words = [terms[i] for i in missing if "_" not in terms[i]]
        fresh = _fresh_idfs(words) if words else {}
        for i in missing:
            value = fresh.get(terms[i])
            idfs[i] = value if value is not None else _idf_cached(terms[i])
    n = len(terms)
    if n < _WEIGH_IN_NUMPY:  # a headline's few: numpy's calls would cost more
        tf = map(_TF.__getitem__, map(counts.__getitem__, terms))
        boost = map(_BOOST.__getitem__, map(boosted.__contains__, terms))
        weights = list(map(mul, map(mul, tf, boost), idfs))
        # Stable, and reverse=True keeps equal weights in their (key) order.
        order = sorted(range(n), key=weights.__getitem__, reverse=True)
        return terms, weights, order
    # The same float64 products, elementwise in the same order; a stable sort of the negated
    # weights keeps equal weights in their (key) order as the sort above does.
    tfs = np.fromiter(map(_TF.__getitem__, map(counts.__getitem__, terms)), np.float64, n)
    named = np.fromiter(map(boosted.__contains__, terms), np.bool_, n)
    array = tfs * np.where(named, ENTITY_WEIGHT, 1.0)
    array *= np.array(idfs, dtype=np.float64)
    order_array = np.argsort(-array, kind="stable")
    return terms, array.tolist(), order_array.tolist()


_WEIGH_IN_NUMPY = 40


class _LogCounts(dict[float, float]):
    """count -> 1 + ln(count), as ``math`` computes it, filled on first use (counts are whole
    numbers, most of them small: a few hundred distinct ones)."""

    def __missing__(self, count: float) -> float:
        value = self[count] = 1.0 + math.log(count)
        return value


_TF = _LogCounts()


# Word key -> IDF, across records. Bounded (cleared when full): the table lookup it saves costs
# a few µs, and a long tail of rare words (and, before, every name pair) grew it past 100,000
# entries (≈ 13 MB) within 300 feeds. ≈ 6 MB full.
_IDF_CACHE: dict[str, float] = {}
IDF_CACHE_SIZE = 50_000


def _fresh_idfs(words: Sequence[str]) -> dict[str, float]:
    """The IDFs of ``words`` (distinct, no name pairs), found in one search of the table, and
    cached (when they fit)."""
    fresh = dict(zip(words, _background_idfs(words), strict=True))
    if len(_IDF_CACHE) + len(fresh) > IDF_CACHE_SIZE:
        _IDF_CACHE.clear()
    if len(fresh) <= IDF_CACHE_SIZE:
        _IDF_CACHE.update(fresh)
    return fresh


def _idf_cached(key: str) -> float:
    value = _IDF_CACHE.get(key)
    if value is not None:
        return value
    if "_" in key:  # a name pair, from its words' IDFs; not kept: most pairs occur once
        # Between perfect dependence (the rarer word's IDF) and independence (the sum).
        parts = [_idf_cached(part) for part in key.split("_")]
        return (max(parts) + sum(parts)) / 2
    if len(_IDF_CACHE) >= IDF_CACHE_SIZE:
        _IDF_CACHE.clear()
    value = _IDF_CACHE[key] = background_idf(key)
    return value


_SENTENCE_END = re.compile(r"[.!?…:;\"'”’»)]\s*$")
LINK_LIST_MIN = 3  # this many headline-like lines in a row close a page: "related stories"


def _drop_link_list(text: str) -> str:
    """Cut a trailing run of headline-like lines (a "related stories" list the extractor kept):
    other events' headlines would otherwise count as this record's vocabulary."""
    if text.count("\n") < LINK_LIST_MIN - 1:  # fewer lines than a list has
        return text
    lines = text.rstrip().split("\n")
    end = len(lines)
    while end > 0 and (not lines[end - 1].strip() or _is_link_line(lines[end - 1])):
        end -= 1
    run = sum(1 for line in lines[end:] if line.strip())
    if run < LINK_LIST_MIN or end == 0:
        return text
    return "\n".join(lines[:end])


def _is_link_line(line: str) -> bool:
    words = line.split()
    if not 2 <= len(words) <= 25 or _SENTENCE_END.search(line):
        return False
    capitalized = sum(1 for w in words if w[:1].isupper() or w[:1].isdigit())
    return capitalized * 2 >= len(words)


def fingerprint(
    title: str,
    text: str,
    language: str | None = None,
) -> Fingerprint:
    """The fingerprint of one record: ``title`` (its headline) and ``text`` (plain body text)."""
    _make_room()  # the tables are cleared, if full, before both texts are cut: not between
    body_text = _drop_link_list(text)
    body = _tokens(body_text)
    head = body if title == body_text else _tokens(title)  # a headline-only record
    minhash, signature = _minhash(body.raw or head.raw)
    entities = _entity_keys(body) | _entity_keys(head)
    # Body terms counted in C; integer counts (the title adds 2.0 below): every count is a
    # whole number, exact in either type, so the weights are those of float counts.
    counts: Counter[str] = Counter(body.terms)
    counts.pop("", None)
    numbers = body.numbers | head.numbers
    for pair in _name_pairs(body):
        counts[pair] += 1
        entities.add(pair)
    for pair in _name_pairs(head):
        counts[pair] += TITLE_WEIGHT  # type: ignore[assignment]
        entities.add(pair)
    title_keys = [t for t in head.terms if t]
    for key in title_keys:
        counts[key] += TITLE_WEIGHT  # type: ignore[assignment]
    terms, weights, order = _weighed(counts, entities | numbers)
    top = order[:MAX_TERMS]
    top_terms = tuple(map(terms.__getitem__, top))
    top_weights = list(map(weights.__getitem__, top))
    # Unit length, so a dot product of two fingerprints' vectors is their cosine.
    norm = math.sqrt(sum(map(mul, top_weights, top_weights))) or 1.0
    key_terms = _key_terms(terms, weights, order, entities, title_keys)
    head_vec = _head_vector(title_keys, body.terms[:LEAD_WORDS], entities)
    return Fingerprint(
        minhash=minhash,
        bands=_bands(signature),
        key_terms=key_terms,
        # Interned where they are made (keys, number terms, name pairs), as
        # fingerprint_from_json interns them: a cached fingerprint shares its stems with every
        # other, and the scores' dict lookups compare interned keys by identity.
        terms=top_terms,
        weights=_round5(top_weights, norm),
        entities=tuple(sorted(entities)),
        numbers=tuple(sorted(numbers)),
        title_terms=tuple(dict.fromkeys(title_keys)),
        length=len(body.raw),
        language=language,
        head_terms=tuple(head_vec),
        head_weights=_round5(list(head_vec.values())),
    )


_ROUND_IN_PYTHON = 24


def _round5(weights: Sequence[float], norm: float = 1.0) -> tuple[float, ...]:
    """``tuple(round(w / norm, 5) for w in weights)``, exactly, for many weights in numpy:
    the integer nearest to v x 10^5 is that of its float product unless the product lies within
    10^-6 of a half (those few are rounded by ``round``), and that integer / 10^5 is, like
    ``round``'s result, the float nearest to the decimal."""
    if len(weights) < _ROUND_IN_PYTHON:  # a headline's few: numpy's calls would cost more
        if norm == 1.0:
            return tuple([round(w, 5) for w in weights])
        return tuple([round(w / norm, 5) for w in weights])
    values = np.array(weights, dtype=np.float64)
    if norm != 1.0:
        values /= norm  # the same IEEE division, elementwise
    scaled = values * 1e5
    if not np.all(np.abs(scaled) < 1e12):  # beyond: ``round`` for all
        return tuple([round(v, 5) for v in values.tolist()])
    out = (np.rint(scaled) / 1e5).tolist()
    halves = np.flatnonzero(np.abs(scaled - np.floor(scaled) - 0.5) < 1e-6)
    for i in halves.tolist():
        out[i] = round(float(values[i]), 5)
    return tuple(out)


LEAD_WORDS = 60  # the lead: what a news report puts first is what happened


def _head_vector(
    title_keys: Sequence[str], lead_terms: Sequence[str], entities: set[str]
) -> dict[str, float]:
    """``title_keys``: the title's terms; ``lead_terms``: the lead's tokens' terms ("" for a
    token that is none). Counted in order (title first): equal weights keep that order."""
    counts = Counter(title_keys)
    counts.update(filter(None, lead_terms))
    weights: dict[str, float] = {}
    idf_get, log = _IDF_CACHE.get, math.log
    for k, c in counts.items():
        idf = idf_get(k)
        if idf is None:
            idf = _idf_cached(k)
        weights[k] = (1.0 + log(c)) * idf * (ENTITY_WEIGHT if k in entities else 1.0)
    norm = math.sqrt(sum(w * w for w in weights.values()))
    if not norm:
        return {}
    return {k: w / norm for k, w in sorted(weights.items(), key=itemgetter(1), reverse=True)}


def _key_terms(
    terms: Sequence[str],
    weights: Sequence[float],
    order: Sequence[int],
    entities: set[str],
    title_keys: Sequence[str],
) -> tuple[str, ...]:
    """A few salient terms for the same-event candidate query: names first, then title words.

    Salience is weight x 2 for a name x 1.5 for a title word, number terms aside; the
    ``MAX_KEY_TERMS`` most salient are kept, ties in key order. Only terms that can be among
    them are weighed (``order``: heaviest first): a term lighter than a third of the
    ``MAX_KEY_TERMS``-th heaviest one is less salient than that many terms are at least."""
    title_set, months = set(title_keys), _MONTHS
    salience: dict[str, float] = {}
    best: list[float] = []  # a heap of the MAX_KEY_TERMS largest saliences so far
    for i in order:
        k = terms[i]
        if k[:1] == "#" or k in months:  # _is_number_term
            continue
        w = weights[i]
        # At most w x 3 (and so for every lighter term): below the MAX_KEY_TERMS-th salience.
        if len(best) == MAX_KEY_TERMS and w * 3.0 < best[0]:
            break
        bonus = 2.0 if k in entities else 1.0
        bonus *= 1.5 if k in title_set else 1.0
        value = salience[k] = w * bonus
        if len(best) < MAX_KEY_TERMS:
            heappush(best, value)
        elif value > best[0]:
            heapreplace(best, value)
    ranked = sorted(salience)
    ranked.sort(key=salience.__getitem__, reverse=True)  # stable: equal salience in key order
    return tuple(ranked[:MAX_KEY_TERMS])


def fingerprint_to_json(fp: Fingerprint) -> str:
    """Compact JSON for the store, packed for a fast decode: a candidate's fingerprint is read
    and parsed on every cache miss, and parsing hundreds of JSON numbers and strings one by one
    was most of that. The term lists are space-joined (a term never holds a space: terms are
    word tokens, name pairs joined by ``_``, ``#`` numbers), the weights are little-endian
    float64 in base64 (exactly the values held, so a decoded fingerprint equals the original)
    and the signature little-endian uint32 in hex (its values are 32-bit)."""
    # Written out as json.dumps(separators=(",", ":"), ensure_ascii=False) writes this object
    # (keys in this order), strings escaped by its own encoder: the same bytes, without
    # walking the object.
    enc = _ENCODE_STRING
    language = "null" if fp.language is None else enc(fp.language)
    return (
        f'{{"v":{int(fp.version)!r},'
        f'"minhash":"{struct.pack(f"<{len(fp.minhash)}I", *fp.minhash).hex()}",'
        f'"bands":{_json_list(fp.bands)},'
        f'"key_terms":{_json_list(fp.key_terms)},'
        f'"terms":{enc(_join_terms(fp.terms))},'
        f'"weights":"{_pack_floats(fp.weights)}",'
        f'"entities":{_json_list(fp.entities)},'
        f'"numbers":{_json_list(fp.numbers)},'
        f'"title_terms":{_json_list(fp.title_terms)},'
        f'"length":{int(fp.length)!r},'
        f'"language":{language},'
        f'"head_terms":{enc(_join_terms(fp.head_terms))},'
        f'"head_weights":"{_pack_floats(fp.head_weights)}"}}'
    )


_ENCODE_STRING: Callable[[str], str] = json.encoder.encode_basestring


def _json_list(values: Sequence[str]) -> str:
    return "[" + ",".join(map(_ENCODE_STRING, values)) + "]"


def _join_terms(terms: Sequence[str]) -> str:
    joined = " ".join(terms)
    # A term with a space adds one; an empty term is caught by the "in" (compared in C).
    if terms and ("" in terms or joined.count(" ") != len(terms) - 1):
        raise ValueError("a fingerprint term is empty or holds a space")
    return joined


def _pack_floats(values: Sequence[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(values)}d", *values)).decode("ascii")


def _split_terms(joined: str) -> tuple[str, ...]:
    # Interned: the same stems recur in every cached fingerprint (a third less memory) and
    # interned keys make the dict lookups of the scores cheaper.
    return tuple(map(intern, joined.split(" "))) if joined else ()


def _unpack_floats(packed: str) -> tuple[float, ...]:
    raw = base64.b64decode(packed, validate=True)
    return struct.unpack(f"<{len(raw) // 8}d", raw)


def fingerprint_from_json(data: str) -> Fingerprint:
    """Inverse of ``fingerprint_to_json`` (and reads the unpacked JSON of versions 1 and 2);
    raises ``ValueError`` on malformed data."""
    try:
        obj = json.loads(data)
        if not isinstance(obj, dict):
            raise TypeError("not an object")
        packed = isinstance(obj.get("terms"), str)  # version 3; 1 and 2 hold JSON arrays
        fp = _from_packed(obj) if packed else _from_lists(obj)
        if len(fp.terms) != len(fp.weights) or len(fp.head_terms) != len(fp.head_weights):
            raise ValueError("terms and weights differ in length")
        return fp
    except (KeyError, TypeError, ValueError, struct.error, binascii.Error) as exc:
        raise ValueError(f"malformed fingerprint JSON: {exc}") from exc


def _from_packed(obj: dict[str, Any]) -> Fingerprint:
    signature = bytes.fromhex(obj["minhash"])
    return Fingerprint(
        minhash=struct.unpack(f"<{len(signature) // 4}I", signature),
        bands=tuple(map(str, obj["bands"])),
        key_terms=tuple(map(str, obj["key_terms"])),
        terms=_split_terms(obj["terms"]),
        weights=_unpack_floats(obj["weights"]),
        entities=tuple(map(str, obj["entities"])),
        numbers=tuple(map(str, obj["numbers"])),
        title_terms=tuple(map(str, obj["title_terms"])),
        length=int(obj["length"]),
        language=obj.get("language"),
        head_terms=_split_terms(obj["head_terms"]),
        head_weights=_unpack_floats(obj["head_weights"]),
        version=int(obj["v"]),
    )


def _from_lists(obj: dict[str, Any]) -> Fingerprint:
    """Versions 1 and 2: every list as a JSON array."""
    return Fingerprint(
        minhash=tuple(int(x) for x in obj["minhash"]),
        bands=tuple(str(b) for b in obj["bands"]),
        key_terms=tuple(str(k) for k in obj["key_terms"]),
        terms=tuple(intern(str(t)) for t in obj.get("terms", ())),
        weights=tuple(float(w) for w in obj.get("weights", ())),
        entities=tuple(str(x) for x in obj.get("entities", ())),
        numbers=tuple(str(x) for x in obj.get("numbers", ())),
        title_terms=tuple(str(x) for x in obj.get("title_terms", ())),
        length=int(obj.get("length", 0)),
        language=obj.get("language"),
        head_terms=tuple(intern(str(x)) for x in obj.get("head_terms", ())),
        head_weights=tuple(float(x) for x in obj.get("head_weights", ())),
        version=int(obj.get("v", 2)),
    )


_PICKLED = [f.name for f in fields(Fingerprint) if f.init and f.compare]
_PICKLED_TERMS = (_PICKLED.index("terms"), _PICKLED.index("head_terms"))


def _unpickle_fingerprint(*state: Any) -> Fingerprint:
    values = list(state)
    for at in _PICKLED_TERMS:
        values[at] = tuple(map(intern, values[at]))
    return Fingerprint(*values)


# --------------------------------------------------------------------------------------------
# Level 3: the decision
# --------------------------------------------------------------------------------------------

_Ranked = TypeVar("_Ranked")


def select_candidates(
    ranked: Iterable[_Ranked],
    development_of: Callable[[_Ranked], str],
    *,
    cap: int | None = None,
    per_development: int | None = None,
) -> list[_Ranked]:
    """The candidates worth scoring, from hits ranked best first (most shared keys): at most
    ``per_development`` of each development (default ``MAX_CANDIDATES_PER_DEVELOPMENT``), at
    most ``cap`` in all (default ``MAX_CANDIDATES``), in rank order."""
    cap = MAX_CANDIDATES if cap is None else cap
    per_development = MAX_CANDIDATES_PER_DEVELOPMENT if per_development is None else per_development
    out: list[_Ranked] = []
    taken: Counter[str] = Counter()
    for hit in ranked:
        if len(out) >= cap:
            break
        dev = development_of(hit)
        if taken[dev] < per_development:
            taken[dev] += 1
            out.append(hit)
    return out


@dataclass(frozen=True, slots=True)
class Candidate:
    """A stored record that shares a band or a key term with the new one.

    ``development_size``: how many records its development has within the dedup window of the
    new record (candidates or not; 0 when unknown). A development's members that are not
    candidates share no index key with the record: ``development_scores`` counts them, up to
    ``DedupOptions.neighbours``, in a development's centroid."""

    record_id: str
    development_id: str
    fingerprint: Fingerprint
    time: datetime | None
    development_size: int = 0


@dataclass(frozen=True, slots=True)
class Decision:
    """Where the new record goes: ``development_id`` None means "start a new development".

    ``score`` is the near-duplicate similarity or the same-event score of the development joined
    (1.0 for a new one); ``threshold`` the score that development had to reach (0.0 for near
    duplicates and new developments), so ``score - threshold`` is the decision's margin."""

    development_id: str | None
    reason: DedupReason
    score: float
    matched_record_id: str | None
    threshold: float = 0.0


@dataclass(frozen=True, slots=True)
class DevelopmentScore:
    """A record against one candidate development: its ``score``, the ``threshold`` that the
    kind of comparison needs (``kind``: "article", "headline" or "headline-terms"), the closest
    member's id, its candidate ``members`` and whether they are all headline-only
    (``headlines_only``)."""

    score: float
    threshold: float
    record_id: str
    kind: str
    members: int = 1
    headlines_only: bool = False

    @property
    def margin(self) -> float:
        return self.score - self.threshold

    def rank(self, options: DedupOptions) -> float:
        """What ``decide`` maximizes among the developments a record clears: the margin, plus
        ``options.headline_size_preference`` x ln(candidate members) for a development of
        headline-only records (a broad story that many of its headlines' words reach)."""
        if not self.headlines_only or self.members <= 1:
            return self.margin
        return self.margin + options.headline_size_preference * math.log(self.members)


def decide(
    fp: Fingerprint,
    time: datetime | None,
    candidates: Sequence[Candidate] | CandidateSet,
    options: DedupOptions,
) -> Decision:
    """Which development the record with fingerprint ``fp`` joins, from its candidates only.

    ``candidates`` are stored records that share an LSH band or a key term with ``fp`` (the
    ingest window's, as a ``CandidateSet``; or ``Candidate`` objects, put into one); those
    outside ``options.window_days`` of ``time`` are ignored. A near-duplicate of a candidate
    joins its development (reason NEAR_DUPLICATE); otherwise the development with the largest
    margin over its threshold (``development_scores``, after the time decay) joins when that
    margin is not negative (SAME_EVENT; among developments of headline-only records that the
    record clears, the margin counts with a preference for more candidate members:
    ``DevelopmentScore.rank``); otherwise the record starts a new development (NEW).
    Single-pass clustering against development centroids with a time penalty (Allan, Papka
    and Lavrenko 1998; Yang, Pierce and Carbonell 1998).
    """
    if not len(candidates):
        return Decision(None, DedupReason.NEW, 1.0, None)
    cs = CandidateSet.of(candidates)
    live = _within_window(time, cs, options.window_days)
    if not live:
        return Decision(None, DedupReason.NEW, 1.0, None)
    near = _best_near_duplicate(fp, cs, live, options.near_duplicate)
    if near is not None:
        return near
    scores = _development_scores(fp, cs, live, options)
    if time is not None:
        scores = _decayed(scores, time, cs, live, options)
    cleared = [(s.rank(options), dev, s) for dev, s in scores.items() if s.margin >= 0.0]
    if cleared:
        _, best_dev, best = max(cleared, key=lambda c: (c[0], c[1]))
        return Decision(
            best_dev,
            DedupReason.SAME_EVENT,
            round(best.score, 4),
            best.record_id,
            best.threshold,
        )
    return Decision(None, DedupReason.NEW, 1.0, None)


def time_decay(gap: timedelta, options: DedupOptions) -> float:
    """The share of its score a record keeps against a development whose reports are, on
    average, ``gap`` away from it in time: 1 within a news cycle (``options.news_cycle_days``),
    then falling linearly to 0 at the end of the window (``options.window_days``). Reports of
    one development come within a news cycle of each other; without the decay an ongoing crisis
    (balloons on Monday, an airport shut on Wednesday, crossings closed on Friday, all with the
    same places, actors and words) chains into one development."""
    window = timedelta(days=options.window_days)
    cycle = timedelta(days=options.news_cycle_days)
    gap = abs(gap)
    if gap <= cycle or window <= cycle:
        return 1.0
    return max(0.0, 1.0 - (gap - cycle) / (window - cycle))


def _decayed(
    scores: dict[str, DevelopmentScore],
    time: datetime,
    cs: CandidateSet,
    live: Sequence[int],
    options: DedupOptions,
) -> dict[str, DevelopmentScore]:
    """``scores`` with each development's score times ``time_decay`` of the gap between
    ``time`` and its candidate members' mean time (members without a time do not count)."""
    offsets: dict[str, list[float]] = defaultdict(list)
    times, devs = cs.times, cs.development_ids
    for i in live:
        when = times[i]
        if when is not None:
            offsets[devs[i]].append((when - time).total_seconds())
    out = dict(scores)
    for dev, secs in offsets.items():
        s = out.get(dev)
        if s is not None:
            gap = timedelta(seconds=sum(secs) / len(secs))
            decay = time_decay(gap, options)
            if decay != 1.0:  # within a news cycle (most) the score stays as it is
                out[dev] = DevelopmentScore(
                    s.score * decay, s.threshold, s.record_id, s.kind, s.members, s.headlines_only
                )
    return out


def _within_window(time: datetime | None, cs: CandidateSet, window_days: float) -> list[int]:
    if time is None:
        return list(range(len(cs)))
    window = timedelta(days=window_days)
    return [i for i, t in enumerate(cs.times) if t is None or abs(time - t) <= window]


def _best_near_duplicate(
    fp: Fingerprint, cs: CandidateSet, live: Sequence[int], threshold: float
) -> Decision | None:
    if not fp.bands:
        return None
    mine = set(fp.bands)
    best: tuple[float, int] | None = None
    if cs.may_share_band is not None:
        maybe = cs.may_share_band
        live = [i for i in live if maybe[i]]
    for i in live:
        # Only band candidates can be near-duplicates; skip the signature compare for the rest.
        if mine.isdisjoint(cs.bands[i]):
            continue
        sim = minhash_similarity(fp.minhash, cs.minhashes[i])
        if sim >= threshold and (best is None or sim > best[0]):
            best = (sim, i)
    if best is None:
        return None
    i = best[1]
    return Decision(
        cs.development_ids[i], DedupReason.NEAR_DUPLICATE, round(best[0], 4), cs.record_ids[i]
    )


def is_headline(fp: Fingerprint, options: DedupOptions) -> bool:
    """Whether ``fp`` is compared as a headline: its text has fewer than
    ``options.headline_words`` words (a feed entry with a title and at most a teaser)."""
    return fp.length < options.headline_words


# --------------------------------------------------------------------------------------------
# Candidates as arrays: what the decision scores
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Rows:
    """Sparse vectors, one a row: row ``i`` is the term ids ``ids[starts[i]:starts[i + 1]]``
    with the same slice of ``weights``."""

    ids: np.ndarray  # integer term ids
    weights: np.ndarray  # float64
    starts: np.ndarray  # int64, one more than there are rows
    rows: np.ndarray  # the row of each element

    def __len__(self) -> int:
        return len(self.starts) - 1

    @staticmethod
    def counted(ids: np.ndarray, weights: np.ndarray, counts: Any) -> Rows:
        """Rows of ``counts[i]`` elements each, one after the other."""
        starts = np.zeros(len(counts) + 1, np.int64)
        np.cumsum(counts, out=starts[1:])
        rows = np.repeat(np.arange(len(counts), dtype=np.intp), counts)
        return Rows(ids, weights, starts, rows)

    @staticmethod
    def of(rows: Sequence[tuple[Sequence[int], Sequence[float]]]) -> Rows:
        counts = [len(ids) for ids, _ in rows]
        total = sum(counts)
        ids = np.fromiter(chain.from_iterable(i for i, _ in rows), np.int64, total)
        weights = np.fromiter(chain.from_iterable(w for _, w in rows), np.float64, total)
        return Rows.counted(ids, weights, np.array(counts, np.int64))


class TermTable:
    """A zeroed int32 table indexed by term id that a scoring borrows and leaves zeroed: the
    new record's terms are written into it once, and one gather finds them among all the
    candidates' terms."""

    __slots__ = ("table",)

    def __init__(self) -> None:
        self.table = np.zeros(0, np.int32)

    def sized(self, n: int) -> np.ndarray:
        """The table, at least ``n`` long."""
        if len(self.table) < n:
            self.table = np.zeros(max(n, 2 * len(self.table), 1024), np.int32)
        return self.table


def _no_rows() -> Rows:
    return Rows.counted(np.zeros(0, np.int64), np.zeros(0), np.zeros(0, np.int64))


@dataclass(frozen=True, slots=True)
class CandidateSet:
    """Candidates as a struct of arrays: what ``decide`` scores, without a dict per candidate.

    Candidate ``i`` (in rank order) is ``record_ids[i]``, ``development_ids[i]``, ``times[i]``,
    ``development_sizes[i]`` (as in ``Candidate``), its text's word count ``lengths[i]``, row
    ``i`` of ``terms`` (its term vector: ids in ``vocabulary``, unit-length weights) and of
    ``head`` (its headline and lead's vector), its MinHash signature ``minhashes[i]`` and LSH
    bands ``bands[i]`` (read only while looking for a near-duplicate); ``marked()`` gives the
    ids of its names and numbers (row ``i``; weights unused), read only when names count
    (``DedupOptions.names_share``). Every id is below ``len(vocabulary)``; ``table`` is the
    producer's scratch (``TermTable``). ``may_share_band``: for the record these candidates
    were found for, False where a candidate surely shares no band with it (None: not known),
    so that only the others' bands are read. ``Fingerprint`` holds the same vectors as dicts:
    ``CandidateSet.of`` puts ``Candidate`` objects into one."""

    record_ids: Sequence[str]
    development_ids: Sequence[str]
    times: Sequence[datetime | None]
    development_sizes: Sequence[int]
    lengths: Sequence[int]
    terms: Rows
    head: Rows
    minhashes: Sequence[Sequence[int]]
    bands: Sequence[Sequence[str]]
    marked: Callable[[], Rows]
    vocabulary: Mapping[str, int]
    table: TermTable
    may_share_band: Sequence[bool] | None = None

    def __len__(self) -> int:
        return len(self.record_ids)

    @staticmethod
    def of(candidates: Sequence[Candidate] | CandidateSet) -> CandidateSet:
        """``candidates`` as a set (a set as it is)."""
        if isinstance(candidates, CandidateSet):
            return candidates
        vocabulary: dict[str, int] = {}
        add = vocabulary.setdefault

        def ids(words: Iterable[str]) -> list[int]:
            return [add(w, len(vocabulary)) for w in words]

        fps = [c.fingerprint for c in candidates]
        terms = Rows.of([(ids(f.terms), f.weights) for f in fps])
        head = Rows.of([(ids(f.head_terms), f.head_weights) for f in fps])
        marked_ids = [ids(f.entities + f.numbers) for f in fps]
        marked = Rows.of([(m, [1.0] * len(m)) for m in marked_ids])
        return CandidateSet(
            record_ids=[c.record_id for c in candidates],
            development_ids=[c.development_id for c in candidates],
            times=[c.time for c in candidates],
            development_sizes=[c.development_size for c in candidates],
            lengths=[f.length for f in fps],
            terms=terms,
            head=head,
            minhashes=[f.minhash for f in fps],
            bands=[f.bands for f in fps],
            marked=lambda: marked,
            vocabulary=vocabulary,
            table=TermTable(),
        )


def _query(vocabulary: Mapping[str, int], terms: Iterable[str], weights: Iterable[float]) -> Any:
    """A vector of the new record in the candidates' ids (terms no candidate has left out:
    they add nothing to a dot product): (ids, weights after a 0.0 for "not a term of it")."""
    get = vocabulary.get
    pairs = [(i, w) for i, w in zip(map(get, terms), weights, strict=True) if i is not None]
    return (
        np.fromiter((i for i, _ in pairs), np.int64, len(pairs)),
        np.fromiter(chain((0.0,), (w for _, w in pairs)), np.float64, len(pairs) + 1),
    )


def _dots(query: Any, rows: Rows, table: np.ndarray) -> list[float]:
    """The dot product of ``query`` (``_query``) with every row, summed in the row's order of
    terms."""
    q_ids, q_weights = query
    n = len(rows)
    if not len(q_ids) or not len(rows.ids):
        return [0.0] * n
    table[q_ids] = np.arange(1, len(q_ids) + 1, dtype=np.int32)  # a repeated id: the last
    try:
        at = table[rows.ids]
    finally:
        table[q_ids] = 0
    dots: list[float] = np.bincount(rows.rows, q_weights[at] * rows.weights, n).tolist()
    return dots


def _centroid_norm(rows: Rows, chosen: Sequence[int], table: np.ndarray) -> float:
    """|sum of the rows ``chosen``|: each term's summed weight, squared and added up."""
    starts = rows.starts
    ids = np.concatenate([rows.ids[starts[i] : starts[i + 1]] for i in chosen])
    if not len(ids):
        return 0.0
    weights = np.concatenate([rows.weights[starts[i] : starts[i + 1]] for i in chosen])
    table[ids] = np.arange(1, len(ids) + 1, dtype=np.int32)  # one slot per distinct term
    try:
        slot = table[ids]
    finally:
        table[ids] = 0
    sums = np.bincount(slot, weights)
    total = float(sums @ sums)
    return math.sqrt(total) if total > 0 else 0.0


def _names(cs: CandidateSet) -> Rows:
    """Each candidate's names vector (``Fingerprint.names_vector``): its terms that are names
    or numbers, as a unit vector (empty when it has none)."""
    terms, marked = cs.terms, cs.marked()
    width = max(len(cs.vocabulary), 1)
    keys = terms.rows.astype(np.int64) * width + terms.ids
    theirs = marked.rows.astype(np.int64) * width + marked.ids
    keep = np.isin(keys, theirs)
    rows, weights = terms.rows[keep], terms.weights[keep]
    norms = np.sqrt(np.bincount(rows, weights * weights, len(terms)))
    counts = np.bincount(rows, minlength=len(terms))
    return Rows.counted(terms.ids[keep], weights / norms[rows], counts)


def development_scores(
    fp: Fingerprint, candidates: Sequence[Candidate] | CandidateSet, options: DedupOptions
) -> dict[str, DevelopmentScore]:
    """Per candidate development: the record's score against it and the threshold it must reach.

    A development is represented by the centroid of its members closest to the record (at most
    ``options.neighbours``; the members are unit vectors, so the centroid's direction is their
    sum): judged by what its reports have in common, so one loosely related member cannot pull
    in another event, while a broad story's far members do not dilute it. The comparison fits
    the kinds of record:

    - a full article against a development with full articles: the cosine of the whole texts
      (against its articles) mixed with that of headline and lead (against every member), by
      ``options.head_share``; it must reach ``options.article_threshold``;
    - a headline-only record against a development of headline-only records: the cosine of
      their terms (headline words and word pairs) against the members' terms, the
      development's members that are not candidates counted among its k nearest as far ones
      (``Candidate.development_size``); it must reach ``options.headline_terms_threshold``;
    - a headline-only record against a development with full articles, or a full article
      against a development of headline-only records: the cosine of headline and lead (a
      headline's is its title) against the members' headlines and leads; it must reach
      ``options.headline_threshold``.

    So a headline can join a development of full articles (by their headlines and leads) and an
    article a development of headlines (by its own).
    """
    cs = CandidateSet.of(candidates)
    return _development_scores(fp, cs, range(len(cs)), options)


def _development_scores(
    fp: Fingerprint, cs: CandidateSet, live: Iterable[int], options: DedupOptions
) -> dict[str, DevelopmentScore]:
    groups: dict[str, dict[str, int]] = {}
    rids, devs = cs.record_ids, cs.development_ids
    for i in live:
        groups.setdefault(devs[i], {})[rids[i]] = i
    vocabulary = cs.vocabulary
    table = cs.table.sized(len(vocabulary))
    # Unit length, like every stored vector: a dot product is a cosine.
    vec = _query(vocabulary, fp.terms, fp.weights)
    body_dots = _dots(vec, cs.terms, table)
    head_dots = _dots(_query(vocabulary, fp.head_terms, fp.head_weights), cs.head, table)
    names_rows = _no_rows()
    names_dots: list[float] = []
    if options.names_share:
        names = fp.names_vector()
        names_rows = _names(cs)
        names_dots = _dots(_query(vocabulary, names, names.values()), names_rows, table)
    actions = _ACTIONS.intersection(fp.head_terms)
    action_ids: set[int] = set()
    member_actions: dict[int, set[int]] = {}
    if actions and options.action_penalty:
        # Which action words each candidate's headline and lead name, as ids.
        action_ids = {vocabulary[a] for a in actions if a in vocabulary}
        every = [vocabulary[a] for a in _ACTIONS if a in vocabulary]
        found = np.isin(cs.head.ids, every)
        rows = cs.head.rows[found].tolist()
        for row, term in zip(rows, cs.head.ids[found].tolist(), strict=True):
            member_actions.setdefault(row, set()).add(term)
    has_terms, has_head = bool(fp.terms), bool(fp.head_terms)
    short = options.headline_words
    lengths = cs.lengths
    headline = is_headline(fp, options)
    k = max(1, options.neighbours)
    out = {}
    for dev, by_id in groups.items():
        members = list(by_id.values())
        articles = [m for m in members if lengths[m] >= short]
        if headline and not articles:
            # Headline against headlines: by their terms, which also hold word pairs (names,
            # and every pair of a Title Case headline), so a shared phrase counts beyond its
            # words.
            # The development's members that are not candidates share no key with the
            # record: among its k nearest they are far, and count as such (unseen).
            size = max(cs.development_sizes[m] for m in members)
            unseen = max(0, min(size, k) - len(members))
            terms_sim, nearest = _neighbour_cosine(
                has_terms, body_dots, members, cs.terms, k, table, unseen
            )
            out[dev] = DevelopmentScore(
                terms_sim,
                options.headline_terms_threshold,
                rids[members[nearest]],
                "headline-terms",
                len(members),
                True,
            )
            continue
        head_sim, closest = _neighbour_cosine(has_head, head_dots, members, cs.head, k, table)
        if headline or not articles:
            out[dev] = DevelopmentScore(
                head_sim,
                options.headline_threshold,
                rids[members[closest]],
                "headline",
                len(members),
                not articles,
            )
            continue
        body_sim, nearest = _neighbour_cosine(has_terms, body_dots, articles, cs.terms, k, table)
        score = (1.0 - options.head_share - options.names_share) * body_sim
        score += options.head_share * head_sim
        if options.names_share:
            names_sim, _ = _neighbour_cosine(
                bool(names_dots), names_dots, articles, names_rows, k, table
            )
            score += options.names_share * names_sim
        if actions and options.action_penalty:
            theirs = set().union(*(member_actions.get(m, ()) for m in members))
            if theirs and theirs.isdisjoint(action_ids):
                score *= 1.0 - options.action_penalty
        out[dev] = DevelopmentScore(
            score, options.article_threshold, rids[articles[nearest]], "article", len(members)
        )
    return out


def _neighbour_cosine(
    has_query: bool,
    dots: Sequence[float],
    members: Sequence[int],
    rows: Rows,
    k: int,
    table: np.ndarray,
    unseen: int = 0,
) -> tuple[float, int]:
    """(cosine of the query with the sum of its ``k`` closest ``members``, the closest's index
    in ``members``), from the query's ``dots`` with every row of ``rows``. The members are
    unit vectors (or empty). ``unseen``: members of the centroid beyond ``members`` (at most
    ``k`` in all), unit vectors orthogonal to the query and to the others: they add nothing to
    the dot product and 1 each to the squared norm."""
    if not has_query or not members:
        return 0.0, 0
    sims = [dots[m] for m in members]
    nearest = sorted(range(len(sims)), key=lambda j: (-sims[j], j))[:k]
    unseen = max(0, min(unseen, k - len(nearest)))
    first = nearest[0]
    if sims[first] == 0.0:
        return 0.0, first
    if len(nearest) == 1:
        return sims[first] / math.sqrt(1 + unseen), first
    norm = _centroid_norm(rows, [members[j] for j in nearest], table)
    if unseen:
        norm = math.sqrt(norm * norm + unseen)
    return (sum(sims[j] for j in nearest) / norm if norm else 0.0), first


# --------------------------------------------------------------------------------------------
# Representative
# --------------------------------------------------------------------------------------------


def representative(fps: Sequence[Fingerprint]) -> int:
    """Index of the member that best represents a development (``representative_of``)."""
    if not fps:
        raise ValueError("representative() needs at least one fingerprint")
    vocabulary: dict[str, int] = {}
    add = vocabulary.setdefault
    terms = Rows.of([([add(t, len(vocabulary)) for t in f.terms], f.weights) for f in fps])
    titles = [len(f.title_terms) for f in fps]
    table = TermTable().sized(len(vocabulary))
    return representative_of(terms, titles, [f.length for f in fps], table)


def representative_of(
    terms: Rows, title_terms: Sequence[int], lengths: Sequence[int], table: np.ndarray
) -> int:
    """Index of the member that best represents a development: the most central one (closest to
    the centroid of all members), preferring members with a real headline and a substantive
    text, so the feed entry's title and summary come from a typical, complete report.

    Member ``i``: its term vector (row ``i`` of ``terms``, ids below ``len(table)``), how many
    title terms it has and its word count; ``table``: a zeroed ``TermTable``, left zeroed."""
    n = len(terms)
    if not n:
        raise ValueError("representative() needs at least one member")
    if n == 1:
        return 0
    centrality = [0.0] * n
    if len(terms.ids):
        table[terms.ids] = np.arange(1, len(terms.ids) + 1, dtype=np.int32)  # a slot per term
        try:
            slot = table[terms.ids]
        finally:
            table[terms.ids] = 0
        rows, weights = terms.rows, terms.weights
        centroid = np.bincount(slot, weights)
        norm = math.sqrt(float(centroid @ centroid))
        dots = np.bincount(rows, weights * centroid[slot], n)
        norms = np.sqrt(np.bincount(rows, weights * weights, n))
        for i, (dot, own) in enumerate(zip(dots.tolist(), norms.tolist(), strict=True)):
            if dot != 0.0:
                centrality[i] = dot / (own * norm)
    best_index, best_score = 0, -1.0
    for i in range(n):
        headline = 1.0 if title_terms[i] >= 3 else 0.5
        substance = min(1.0, lengths[i] / 150.0)
        score = centrality[i] * (0.5 + 0.25 * headline + 0.25 * substance)
        if score > best_score:
            best_index, best_score = i, score
    return best_index
