"""The dedup window in memory (pure: no I/O; the pipeline loads it from the store).

It holds the records filed within reach of a new one (``horizon`` onwards) with compact
fingerprints (``pack``: term ids and weights in arrays, the MinHash as bytes), the postings of
their index keys (LSH bands, key terms) and the state of their developments that a refresh needs
(the latest members, representative, title, topics), as one struct of arrays (``Window``).
Candidates for a new record are ranked here exactly as the store's candidate query ranked them:
per key the newest ``candidate_hits_per_key`` hits within the dedup window, the records sharing
the most keys first, then the most recent, at most ``candidates_per_development`` of one
development, at most ``max_candidates``.

One window per process and store: ``pipeline`` keeps it, catches it up from the store (records
after ``last_seq``) under the ingest lock before each batch, and adds a batch's plan once its
transaction committed.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
from array import array
from bisect import bisect_left, bisect_right, insort
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from itertools import chain
from sys import intern
from typing import Any

import numpy as np

from aggregator import dedup
from aggregator.ingest.types import StoredDevelopment, StoredRecord
from aggregator.model import IngestOptions

MAX_KEY_CHARS = 100  # keys are cut to this width, as the store's index columns did

_NONE = 0xFFFFFFFF


def index_keys(fp: dedup.Fingerprint) -> list[str]:
    """A fingerprint's distinct index keys: ``b:`` LSH bands, ``t:`` key terms."""
    # Interned: every record holding a key shares one string with the postings' dict.
    keys = [intern(f"b:{b[:MAX_KEY_CHARS]}") for b in fp.bands if b]
    keys += [intern(f"t:{k[:MAX_KEY_CHARS]}") for k in fp.key_terms if k]
    return list(dict.fromkeys(keys))


class Vocabulary:
    """Strings <-> dense ids, interned; grows with the distinct terms seen (never shrinks)."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self.words: list[str] = []
        self.table = dedup.TermTable()  # scratch of the scores (dedup.CandidateSet)

    def __len__(self) -> int:
        return len(self.words)

    def id(self, word: str) -> int:
        found = self.ids.get(word)
        if found is None:
            found = self.ids[word] = len(self.words)
            self.words.append(intern(word))
        return found

    def many(self, words: Sequence[str]) -> array[int]:
        found: list[int | None] = list(map(self.ids.get, words))
        if None in found:  # new words (few once the window is warm)
            for i, known in enumerate(found):
                if known is None:
                    found[i] = self.id(words[i])
        return array("I", found)  # type: ignore[arg-type]


def _exact_ints(weights: Sequence[float]) -> array[int] | None:
    """``weights`` (rounded to 5 places, in [0, 1]) as integers of 1e-5, when that gives each
    back exactly (k / 1e5 is the float closest to the decimal, as round(w, 5) is)."""
    out = array("I")
    for w in weights:
        if not 0.0 <= w <= 1.0:
            return None
        k = round(w * 100_000)
        if k / 100_000 != w:
            return None
        out.append(k)
    return out


# A packed fingerprint: little-endian uint32 words, 8-byte aligned throughout so that the
# packed fingerprints of several candidates, joined, read as one array:
#   the header (_H words: counts, length, flags, language id, version), the MinHash, the term
#   ids of terms, head terms, entities, numbers, key terms and title terms, then the weights of
#   terms and head terms (uint32 of w * 1e5 when that is exact, else float64 at an 8-byte
#   boundary), then the bands as text ("\n"-joined), zero-padded to a multiple of 8 bytes.
_H = 14
_HEADER = struct.Struct(f"<{_H}I")
_N_MIN, _N_BANDS, _BAND_BYTES, _N_KEY, _N_TERMS, _N_ENT, _N_NUM, _N_TITLE, _N_HEAD = range(9)
_LENGTH, _FLAGS, _LANG, _VERSION = 9, 10, 11, 12
_EXACT_WEIGHTS = 1  # flag: weights as uint32 of w * 1e5 (else float64)
_BAND_TAG = 0x2545F4914F6CDD1D  # band keys hash apart from key terms of the same spelling


def _pad8(n: int) -> int:
    return -n % 8


def _assemble(
    minhash: bytes,
    bands: Sequence[str],
    words: Sequence[array[int]],
    weights: bytes,
    exact: bool,
    length: int,
    lang: int,
    version: int,
) -> bytes:
    """``words``: ids of terms, head terms, entities, numbers, key terms, title terms.
    ``weights``: of terms then head terms, uint32 when ``exact``, else float64."""
    terms, head, entities, numbers, key_terms, title_terms = words
    band_text = "\n".join(bands).encode("utf-8")
    header = _HEADER.pack(
        len(minhash) // 4,
        len(bands),
        len(band_text),
        len(key_terms),
        len(terms),
        len(entities),
        len(numbers),
        len(title_terms),
        len(head),
        length,
        _EXACT_WEIGHTS if exact else 0,
        lang,
        version,
        0,
    )
    parts = [header, minhash, *(a.tobytes() for a in words)]
    size = sum(map(len, parts))
    if not exact:
        parts.append(b"\0" * _pad8(size))
        size += _pad8(size)
    parts += [weights, band_text]
    size += len(weights) + len(band_text)
    parts.append(b"\0" * _pad8(size))
    return b"".join(parts)


def pack(fp: dedup.Fingerprint, vocab: Vocabulary) -> bytes:
    """A fingerprint in a few arrays: about 8 bytes a term, the MinHash 4 bytes a value."""
    weights = _exact_ints(fp.weights)
    head = _exact_ints(fp.head_weights)
    exact = weights is not None and head is not None
    if weights is not None and head is not None:
        raw = weights.tobytes() + head.tobytes()
    else:
        raw = array("d", fp.weights).tobytes() + array("d", fp.head_weights).tobytes()
    many = vocab.many
    words = [
        many(fp.terms),
        many(fp.head_terms),
        many(fp.entities),
        many(fp.numbers),
        many(fp.key_terms),
        many(fp.title_terms),
    ]
    lang = _NONE if fp.language is None else vocab.id(fp.language)
    minhash = array("I", fp.minhash).tobytes()
    return _assemble(minhash, fp.bands, words, raw, exact, fp.length, lang, fp.version)


def _exact_ints_raw(raw: bytes) -> bytes | None:
    """``_exact_ints`` of little-endian float64s, vectorised (the same rounding: half to even)."""
    w = np.frombuffer(raw, dtype="<f8")
    if not ((w >= 0.0) & (w <= 1.0)).all():
        return None
    k = np.rint(w * 100_000.0)
    if not (k / 100_000.0 == w).all():
        return None
    return k.astype("<u4").tobytes()


def pack_json(data: str, vocab: Vocabulary) -> tuple[bytes, list[int]] | None:
    """``pack`` and ``key_hashes`` of a stored fingerprint (``dedup.fingerprint_to_json``,
    version 3) straight from its JSON, without building the ``Fingerprint``: what a window
    rebuild spends per record. None when it is not version-3 JSON (``pack`` it then)."""
    try:
        obj = json.loads(data)
        terms_s, head_s = obj["terms"], obj["head_terms"]
        if not isinstance(terms_s, str) or not isinstance(head_s, str):
            return None
        minhash = bytes.fromhex(obj["minhash"])
        weights = base64.b64decode(obj["weights"], validate=True)
        head_w = base64.b64decode(obj["head_weights"], validate=True)
        terms = terms_s.split(" ") if terms_s else []
        head = head_s.split(" ") if head_s else []
        bands = [str(b) for b in obj["bands"]]
        key_terms = [str(k) for k in obj["key_terms"]]
        entities, numbers, title = obj["entities"], obj["numbers"], obj["title_terms"]
        if (
            len(minhash) % 4
            or len(weights) != 8 * len(terms)
            or len(head_w) != 8 * len(head)
            or not set(map(type, chain(entities, numbers, title))) <= {str}
        ):
            return None
        length, version, lang = int(obj["length"]), int(obj["v"]), obj.get("language")
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    both = _exact_ints_raw(weights + head_w)
    many = vocab.many
    words = [many(x) for x in (terms, head, entities, numbers, key_terms, title)]
    lang_id = _NONE if lang is None else vocab.id(str(lang))
    raw = both if both is not None else weights + head_w
    packed = _assemble(minhash, bands, words, raw, both is not None, length, lang_id, version)
    return packed, _keys(bands, key_terms)


# Every weight a packed fingerprint can hold exactly, as the float ``k / 100_000`` (about 3 MB):
# decoded fingerprints share these objects instead of holding 24 bytes per weight each.
_WEIGHTS: list[float] = []


def _weights() -> list[float]:
    if not _WEIGHTS:
        _WEIGHTS.extend(i / 100_000 for i in range(100_001))
    return _WEIGHTS


def _weights_at(h: Sequence[int]) -> int:
    """The byte offset of the weights in a packed fingerprint with header ``h``."""
    words = _H + h[_N_MIN] + h[_N_TERMS] + h[_N_HEAD] + h[_N_ENT] + h[_N_NUM]
    at = 4 * (words + h[_N_KEY] + h[_N_TITLE])
    return at if h[_FLAGS] & _EXACT_WEIGHTS else at + _pad8(at)


def _bands_at(h: Sequence[int]) -> int:
    """The byte offset of the band text in a packed fingerprint with header ``h``."""
    size = 4 if h[_FLAGS] & _EXACT_WEIGHTS else 8
    return _weights_at(h) + size * (h[_N_TERMS] + h[_N_HEAD])


def unpack(data: bytes, vocab: Vocabulary) -> dedup.Fingerprint:
    """The fingerprint ``pack`` packed, equal to it."""
    h = _HEADER.unpack_from(data)
    words = vocab.words
    ids = array("I")
    n_ids = h[_N_MIN] + h[_N_TERMS] + h[_N_HEAD] + h[_N_ENT] + h[_N_NUM] + h[_N_KEY] + h[_N_TITLE]
    ids.frombytes(data[4 * _H : 4 * (_H + n_ids)])
    pos = h[_N_MIN]
    minhash = tuple(ids[:pos])
    lists: list[tuple[str, ...]] = []
    for n in (h[_N_TERMS], h[_N_HEAD], h[_N_ENT], h[_N_NUM], h[_N_KEY], h[_N_TITLE]):
        lists.append(tuple([words[i] for i in ids[pos : pos + n]]))
        pos += n
    terms, head_terms, entities, numbers, key_terms, title_terms = lists
    at, n_terms, n_head = _weights_at(h), h[_N_TERMS], h[_N_HEAD]
    if h[_FLAGS] & _EXACT_WEIGHTS:
        w = array("I")
        w.frombytes(data[at : at + 4 * (n_terms + n_head)])
        # One float object per value, shared by every decoded fingerprint (and its vectors).
        weight = (_WEIGHTS or _weights()).__getitem__
        values = tuple(map(weight, w))
    else:
        wd = array("d")
        wd.frombytes(data[at : at + 8 * (n_terms + n_head)])
        values = tuple(wd)
    start = _bands_at(h)
    band_text = data[start : start + h[_BAND_BYTES]].decode("utf-8")
    return dedup.Fingerprint(
        minhash=minhash,
        bands=tuple(band_text.split("\n")) if h[_N_BANDS] else (),
        key_terms=key_terms,
        terms=terms,
        weights=values[:n_terms],
        entities=entities,
        numbers=numbers,
        title_terms=title_terms,
        length=h[_LENGTH],
        language=None if h[_LANG] == _NONE else words[h[_LANG]],
        head_terms=head_terms,
        head_weights=values[n_terms:],
        version=h[_VERSION],
    )


def _ranges(starts: Any, counts: Any) -> Any:
    """The positions ``starts[i] .. starts[i] + counts[i] - 1``, one range after the other."""
    total = int(counts.sum())
    if not total:
        return _EMPTY_I64
    before = np.cumsum(counts) - counts
    return np.arange(total, dtype=np.int64) + np.repeat(starts - before, counts)


class _Lazy(Sequence[Any]):
    """A sequence whose items are read when asked for (a candidate's bands or signature)."""

    def __init__(self, n: int, item: Callable[[int], Any]) -> None:
        self._n, self._item = n, item

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i: Any) -> Any:
        if isinstance(i, slice):
            return [self._item(j) for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return self._item(i % self._n)


@dataclass(frozen=True, slots=True)
class _Read:
    """Packed fingerprints joined and read for all at once: their words, each one's first
    word (``base``) and header (``h``, a row each), their term and head vectors."""

    joined: bytes
    words: Any
    base: Any
    h: Any
    terms: dedup.Rows
    head: dedup.Rows


def _read(packed: Sequence[bytes]) -> _Read:
    n = len(packed)
    joined = b"".join(packed)
    words: Any = np.frombuffer(joined, "<u4")
    sizes = np.fromiter(map(len, packed), np.int64, n)
    base = (np.cumsum(sizes) - sizes) // 4  # each one's first word (all 8-byte aligned)
    h = words[base[:, None] + np.arange(_H)].astype(np.int64)
    n_terms, n_head = h[:, _N_TERMS], h[:, _N_HEAD]
    at_terms = base + _H + h[:, _N_MIN]
    at_head = at_terms + n_terms
    at_weights = at_head + n_head + h[:, _N_ENT] + h[:, _N_NUM] + h[:, _N_KEY] + h[:, _N_TITLE]
    term_ids = words[_ranges(at_terms, n_terms)]
    head_ids = words[_ranges(at_head, n_head)]
    exact = (h[:, _FLAGS] & _EXACT_WEIGHTS).astype(np.bool_)
    if exact.all():
        term_w = words[_ranges(at_weights, n_terms)] / 100_000.0
        head_w = words[_ranges(at_weights + n_terms, n_head)] / 100_000.0
    else:  # float64 weights (not 5-place decimals): one at a time
        t_parts, h_parts = [], []
        for i in range(n):
            row = h[i].tolist()
            at = 4 * int(base[i]) + _weights_at(row)
            dtype = "<u4" if exact[i] else "<f8"
            values: Any = np.frombuffer(joined, dtype, row[_N_TERMS] + row[_N_HEAD], at)
            if exact[i]:
                values = values / 100_000.0
            t_parts.append(values[: row[_N_TERMS]])
            h_parts.append(values[row[_N_TERMS] :])
        term_w = np.concatenate(t_parts).astype(np.float64)
        head_w = np.concatenate(h_parts).astype(np.float64)
    terms = dedup.Rows.counted(term_ids, term_w, n_terms)
    return _Read(joined, words, base, h, terms, dedup.Rows.counted(head_ids, head_w, n_head))


def packed_representative(packed: Sequence[bytes], vocab: Vocabulary) -> int:
    """``dedup.representative`` of packed fingerprints, read straight from their arrays."""
    read = _read(packed)
    table = vocab.table.sized(len(vocab))
    h = read.h
    return dedup.representative_of(
        read.terms, h[:, _N_TITLE].tolist(), h[:, _LENGTH].tolist(), table
    )


def packed_candidates(
    packed: Sequence[bytes],
    record_ids: Sequence[str],
    development_ids: Sequence[str],
    times: Sequence[datetime | None],
    development_sizes: Sequence[int],
    vocab: Vocabulary,
    may_share_band: Sequence[bool] | None = None,
) -> dedup.CandidateSet:
    """Candidates (their ``pack``ed fingerprints, in rank order) as ``dedup.CandidateSet``,
    read straight from the packed arrays: joined, then each field gathered for all at once."""
    n = len(packed)
    read = _read(packed)
    joined, words, base, h = read.joined, read.words, read.base, read.h

    def bands(i: int) -> list[str]:
        row = h[i].tolist()
        if not row[_N_BANDS]:
            return []
        start = 4 * int(base[i]) + _bands_at(row)
        return joined[start : start + row[_BAND_BYTES]].decode("utf-8").split("\n")

    def minhash(i: int) -> list[int]:
        first = int(base[i]) + _H
        result: list[int] = words[first : first + int(h[i, _N_MIN])].tolist()
        return result

    def marked() -> dedup.Rows:
        counts = h[:, _N_ENT] + h[:, _N_NUM]
        at = base + _H + h[:, _N_MIN] + h[:, _N_TERMS] + h[:, _N_HEAD]
        ids = words[_ranges(at, counts)]
        return dedup.Rows.counted(ids, np.ones(len(ids)), counts)

    return dedup.CandidateSet(
        record_ids=record_ids,
        development_ids=development_ids,
        times=times,
        development_sizes=development_sizes,
        lengths=h[:, _LENGTH].tolist(),
        terms=read.terms,
        head=read.head,
        minhashes=_Lazy(n, minhash),
        bands=_Lazy(n, bands),
        marked=marked,
        vocabulary=vocab.ids,
        table=vocab.table,
        may_share_band=may_share_band,
    )


@dataclass(slots=True)
class Member:
    """One of a development's latest members (what its representative is chosen among)."""

    time: datetime
    seq: int
    record_id: str
    title: str
    packed: bytes | None  # None: no readable fingerprint (left out of the choice)


_NO_TOPICS: frozenset[str] = frozenset()


@dataclass(slots=True)
class DevState:
    """What a refresh of a development needs: its latest members, representative and title,
    and its topics."""

    id: str
    representative_id: str
    title: str
    topics: frozenset[str] = _NO_TOPICS
    members: list[Member] = field(default_factory=list)  # oldest first, the latest only


_UTC_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_US = timedelta(microseconds=1)


def key_hashes(fp: dedup.Fingerprint) -> list[int]:
    """``index_keys`` of ``fp`` as 64-bit hashes (this process's ``hash`` of the key: the
    window lives and dies with its process; two keys would share a hash with a chance of
    about 2**-64 a pair): band keys first."""
    return _keys(fp.bands, fp.key_terms)


def _keys(bands: Iterable[str], key_terms: Iterable[str]) -> list[int]:
    keys = [hash(b[:MAX_KEY_CHARS]) ^ _BAND_TAG for b in bands if b]
    keys += [hash(k[:MAX_KEY_CHARS]) for k in key_terms if k]
    return list(dict.fromkeys(keys))


class Window:
    """The records and developments within reach of new records, in memory.

    One struct of arrays: a record is a slot (its id, development number, time in
    microseconds, ``seq``, packed fingerprint, index keys as 64-bit hashes); the postings are
    one pair of sorted numpy arrays (key hash, slot) plus a small dict of the newest. About
    the packed fingerprint plus 0.3 KB a record (docs/store.md, "Memory bound")."""

    def __init__(
        self,
        instance: str,
        options: IngestOptions,
        window_days: float,
        vocab: Vocabulary | None = None,
    ) -> None:
        self.instance = instance  # the store it mirrors (Store.instance)
        self.options = options
        self.window = timedelta(days=window_days)
        self.reset(None)
        if vocab is not None:  # term ids shared with another window (a batch's own)
            self.vocab = vocab

    def reset(self, layout_version: int | None) -> None:
        """Forget everything (the store's records moved outside ingest: load again)."""
        self.layout_version = layout_version
        self.vocab = Vocabulary()
        # Per slot (a record held, or dropped: then its id is "" and it is not alive).
        self._rids: list[str] = []
        self._packed: list[bytes | None] = []
        self._dev: Any = np.zeros(64, np.int32)
        self._time: Any = np.zeros(64, np.int64)  # microseconds since the epoch
        self._seq: Any = np.zeros(64, np.int64)
        self._alive: Any = np.zeros(64, np.bool_)
        self._key_data = array("q")  # every slot's key hashes, slot after slot
        self._key_off = array("q", [0])  # slot i's keys: _key_data[_key_off[i]:_key_off[i+1]]
        self._n = 0  # slots used
        self._dead = 0  # slots dropped
        self._drops = 0  # records dropped, ever
        self._slot: dict[str, int] = {}  # record id -> slot, of the records held
        self._dev_no: dict[str, int] = {}
        self._dev_ids: list[str] = []
        # Per development id, the filing times (microseconds) of its records held, sorted.
        self._dev_times: dict[str, list[int]] = {}
        # The postings: sorted key hashes and their slots, and those not merged in yet.
        self._ik: Any = np.zeros(0, np.int64)
        self._is: Any = np.zeros(0, np.int32)
        self._delta: dict[int, list[int]] = {}
        self._n_delta = 0
        self._bulk = False  # loading: the index is built once at the end
        self._naive: bool | None = None  # times without a time zone (tests), else aware
        self.developments: dict[str, DevState] = {}
        self.last_seq = 0  # every stored record up to this seq is reflected
        self.horizon: datetime | None = None  # complete from this time on (None: empty store)
        self.capped = False  # records were dropped for the memory bound

    # --- times ------------------------------------------------------------------------------

    def _us(self, time: datetime) -> int:
        naive = time.tzinfo is None
        if self._naive is None:
            self._naive = naive
        return (time - (_NAIVE_EPOCH if naive else _UTC_EPOCH)) // _US

    def _datetime(self, us: int) -> datetime:
        return (_NAIVE_EPOCH if self._naive else _UTC_EPOCH) + timedelta(microseconds=us)

    # --- reading ----------------------------------------------------------------------------

    def __len__(self) -> int:
        """Records held."""
        return len(self._slot)

    def __contains__(self, record_id: object) -> bool:
        return record_id in self._slot

    def record_ids(self) -> list[str]:
        return list(self._slot)

    def covers(self, time: datetime) -> bool:
        """Whether every stored record filed from ``time - window`` on is held (or was
        dropped for the memory bound, which loading cannot undo)."""
        return self.capped or (self.horizon is not None and self.horizon <= time - self.window)

    def _gather(self, keys: Sequence[int], lo: int, hi: int) -> tuple[Any, Any, Any]:
        """Every hit of ``keys`` filed within [lo, hi]: (slots, key numbers, times)."""
        if not keys or self._n == 0:
            return _EMPTY_I32, _EMPTY_I32, _EMPTY_I64
        qk = np.array(keys, dtype=np.int64)
        starts = np.searchsorted(self._ik, qk, "left")
        ends = np.searchsorted(self._ik, qk, "right")
        lens = ends - starts
        total = int(lens.sum())
        if total:
            keyno = np.repeat(np.arange(len(keys), dtype=np.int32), lens)
            offsets = np.cumsum(lens) - lens
            pos = np.arange(total, dtype=np.int64) - np.repeat(offsets - starts, lens)
            slots = self._is[pos]
        else:
            keyno = slots = _EMPTY_I32
        if self._delta:
            extra_s: list[int] = []
            extra_k: list[int] = []
            for i, key in enumerate(keys):
                found = self._delta.get(key)
                if found:
                    extra_s += found
                    extra_k += [i] * len(found)
            if extra_s:
                slots = np.concatenate([slots, np.array(extra_s, np.int32)])
                keyno = np.concatenate([keyno, np.array(extra_k, np.int32)])
        if not len(slots):
            return _EMPTY_I32, _EMPTY_I32, _EMPTY_I64
        ts = self._time[slots]
        ok = (ts >= lo) & (ts <= hi) & self._alive[slots]
        return slots[ok], keyno[ok], ts[ok]

    def _cut(self, slots: Any, keyno: Any, ts: Any, n: int) -> tuple[Any, Any]:
        """Per key, its newest ``n`` hits (ties of time: the greater record id first, as
        ``ORDER BY time DESC, record_id DESC``): (slots, key numbers)."""
        if not len(slots):
            return slots, keyno
        counts = np.bincount(keyno)
        if counts.max(initial=0) <= n:
            return slots, keyno
        keep = np.ones(len(slots), np.bool_)
        for k in np.flatnonzero(counts > n).tolist():
            mine = np.flatnonzero(keyno == k)
            keep[mine] = False
            keep[mine[self._newest(slots[mine], ts[mine], n)]] = True
        return slots[keep], keyno[keep]

    def _newest(self, slots: Any, ts: Any, n: int) -> Any:
        """Positions of the newest ``n`` of ``slots`` (times ``ts``), ties: greater id."""
        m = len(ts)
        if n <= 0:
            return _EMPTY_I64
        if n >= m:
            return np.arange(m)
        kth = np.partition(ts, m - n)[m - n]
        above = np.flatnonzero(ts > kth)
        ties = np.flatnonzero(ts == kth)
        need = n - len(above)
        if len(ties) > need:
            rids = self._rids
            order = sorted(ties.tolist(), key=lambda i: rids[int(slots[i])], reverse=True)
            ties = np.array(order[:need], dtype=np.int64)
        return np.concatenate([above, ties])

    def _hits(self, slots: Any) -> list[tuple[int, str, int]]:
        ts = self._time[slots].tolist()
        rids = self._rids
        return [(t, rids[s], s) for t, s in zip(ts, slots.tolist(), strict=True)]

    def candidates(
        self, fp: dedup.Fingerprint, time: datetime, extra: Window | None = None
    ) -> dedup.CandidateSet:
        """The ranked candidates of a record filed at ``time``, read from their packed
        fingerprints (``extra``: a second window of records decided but not stored yet, with
        the same vocabulary, ranked together with these): per key its newest
        ``candidate_hits_per_key`` hits within the dedup window either side of ``time``; the
        records sharing the most keys first, then the newest, then by record id; at most
        ``candidates_per_development`` of one development, ``max_candidates`` in all."""
        lo, hi = self._us(time - self.window), self._us(time + self.window)
        n = self.options.candidate_hits_per_key
        keys = key_hashes(fp)
        mine = self._gather(keys, lo, hi)
        other = (_EMPTY_I32, _EMPTY_I32, _EMPTY_I64)
        if extra is not None and len(extra._slot):
            other = extra._gather(
                keys, extra._us(time - self.window), extra._us(time + self.window)
            )
        if self.options.rank_by_rarity:
            # A shared key counts the more the fewer records of the window (around ``time``)
            # hold it: log(1 + n / df), in integer thousandths so that sums (and their ties)
            # are exact. Keys held by many (a stop word of the moment) still find candidates,
            # but those sharing rare keys (the names of this event) come first.
            df = np.bincount(mine[1], minlength=len(keys)) + np.bincount(
                other[1], minlength=len(keys)
            )
            weight = np.rint(1000.0 * np.log1p(n / np.maximum(df, 1))).astype(np.int64)
        else:
            weight = np.ones(len(keys), np.int64)
        slots, keyno = self._cut(*mine, n)
        theirs: list[tuple[int, str, int, int]] = []
        if len(other[0]):
            assert extra is not None
            e_slots, e_keyno = extra._cut(*other, n)
            slots, keyno, theirs = self._merge_extra(slots, keyno, extra, e_slots, e_keyno, n)
        picks = self._ranked(slots, weight[keyno], extra, theirs, weight)
        size = self._sizer(time, extra)
        devs = [owner._dev_ids[int(owner._dev[s])] for owner, _, s, _ in picks]
        if extra is not None and picks:
            assert extra.vocab is self.vocab, "a batch's window shares the term ids"
        # A candidate sharing a band holds its key (equal bands, equal hashes), so it is among
        # the key's hits in the dedup window before they were cut to the newest: the others'
        # bands are never read. (An empty band is no key: then every candidate's is read.)
        maybe: list[bool] | None = None
        if "" not in fp.bands:
            n_bands = len({hash(b[:MAX_KEY_CHARS]) for b in fp.bands})  # the first keys
            band_hits = {
                id(self): set(mine[0][mine[1] < n_bands].tolist()),
                id(extra): set(other[0][other[1] < n_bands].tolist()),
            }
            maybe = [s in band_hits[id(o)] for o, _, s, _ in picks]
        return packed_candidates(
            [owner._packed[s] or b"" for owner, _, s, _ in picks],
            [rid for _, rid, _, _ in picks],
            devs,
            [self._datetime(us) for _, _, _, us in picks],
            [size(d) for d in devs],
            self.vocab,
            maybe,
        )

    def _sizer(self, time: datetime, extra: Window | None) -> Callable[[str], int]:
        """A development id -> its records filed within the dedup window of ``time``, in this
        window and ``extra`` (each development counted once per query)."""
        lo, hi = self._us(time - self.window), self._us(time + self.window)
        if extra is not None:
            e_lo, e_hi = extra._us(time - self.window), extra._us(time + self.window)
        sizes: dict[str, int] = {}

        def size(dev: str) -> int:
            found = sizes.get(dev)
            if found is None:
                found = self._count(dev, lo, hi)
                if extra is not None:
                    found += extra._count(dev, e_lo, e_hi)
                sizes[dev] = found
            return found

        return size

    def development_size(self, development_id: str, time: datetime) -> int:
        """How many records of a development this window holds filed within the dedup
        window either side of ``time``."""
        return self._count(
            development_id, self._us(time - self.window), self._us(time + self.window)
        )

    def _count(self, development_id: str, lo: int, hi: int) -> int:
        times = self._dev_times.get(development_id)
        if not times:
            return 0
        return bisect_right(times, hi) - bisect_left(times, lo)

    def _merge_extra(
        self, slots: Any, keyno: Any, extra: Window, e_slots: Any, e_keyno: Any, n: int
    ) -> tuple[Any, Any, list[tuple[int, str, int, int]]]:
        """Per key, the newest ``n`` of this window's and ``extra``'s hits together:
        (this window's slots and key numbers kept, ``extra``'s hits kept, one per key)."""
        mine_n = np.bincount(keyno, minlength=int(e_keyno.max()) + 1) if len(keyno) else None
        theirs: list[tuple[int, str, int, int]] = []
        drop = np.zeros(len(slots), np.bool_)
        for k in np.unique(e_keyno).tolist():
            e_hits = extra._hits(e_slots[e_keyno == k])
            if mine_n is None or k >= len(mine_n) or mine_n[k] + len(e_hits) <= n:
                theirs += [(t, rid, s, k) for t, rid, s in e_hits]
                continue
            at = np.flatnonzero(keyno == k)
            both = [(t, rid, 0, s) for t, rid, s in self._hits(slots[at])]
            both += [(t, rid, 1, s) for t, rid, s in e_hits]
            both.sort(reverse=True)
            kept = both[:n]
            kept_mine = {s for _, _, owner, s in kept if owner == 0}
            for i, s in zip(at.tolist(), slots[at].tolist(), strict=True):
                if s not in kept_mine:
                    drop[i] = True
            theirs += [(t, rid, s, k) for t, rid, owner, s in kept if owner == 1]
        return slots[~drop], keyno[~drop], theirs

    def _ranked(
        self,
        slots: Any,
        weights: Any,
        extra: Window | None = None,
        theirs: Sequence[tuple[int, str, int, int]] = (),
        weight: Any = None,
    ) -> list[_Pick]:
        """The hits (this window's ``slots`` with their keys' ``weights``, and ``extra``'s
        hits ``theirs`` with ``weight`` per key number) ranked: the most weight shared, then
        the newest, then by record id; at most ``candidates_per_development`` of one
        development, ``max_candidates`` in all."""
        off = self._n  # extra's slot s is s + off here
        if theirs:
            assert extra is not None
            e_slots = np.fromiter((s for _, _, s, _ in theirs), np.int64, len(theirs))
            e_keys = np.fromiter((k for _, _, _, k in theirs), np.int64, len(theirs))
            slots = np.concatenate((slots.astype(np.int64), e_slots + off))
            weights = np.concatenate((weights, weight[e_keys]))
        if not len(slots):
            return []
        uniq, inverse = np.unique(slots, return_inverse=True)
        shared = np.bincount(inverse, weights=weights).astype(np.int64)
        ts = np.empty(len(uniq), np.int64)
        mine = uniq < off
        ts[mine] = self._time[uniq[mine]]
        if extra is not None and not mine.all():
            ts[~mine] = extra._time[uniq[~mine] - off]
        order = np.lexsort((-ts, -shared))
        ranked = uniq[order]
        held = ranked < off
        local = np.where(held, ranked, ranked - off)
        # Each hit's development as a key: this window's number, or for a development only
        # ``extra`` holds, -1 - its number there (the cap counts a development once).
        devs = np.empty(len(ranked), np.int64)
        devs[held] = self._dev[local[held]]
        if extra is not None and not held.all():
            get = self._dev_no.get
            keys = np.array([get(d, -1 - j) for j, d in enumerate(extra._dev_ids)], np.int64)
            devs[~held] = keys[extra._dev[local[~held]]]
        u = local.tolist()
        mine = held.tolist()
        d = devs.tolist()
        c = shared[order].tolist()
        t = ts[order].tolist()
        out: list[_Pick] = []
        per_dev: dict[int, int] = {}
        cap, per = self.options.max_candidates, self.options.candidates_per_development
        owners = (self if extra is None else extra, self)  # by "held here"
        n = len(u)
        i = 0
        while i < n and len(out) < cap:
            j = i + 1
            while j < n and c[j] == c[i] and t[j] == t[i]:
                j += 1
            group: Iterable[int] = range(i, j)
            if j > i + 1:  # the same weight and time: by record id
                group = sorted(group, key=lambda x: owners[mine[x]]._rids[u[x]])
            for x in group:
                if len(out) >= cap:
                    break
                taken = per_dev.get(d[x], 0)
                if taken < per:
                    per_dev[d[x]] = taken + 1
                    owner = owners[mine[x]]
                    out.append((owner, owner._rids[u[x]], u[x], t[x]))
            i = j
        return out

    def packed(self, record_id: str) -> bytes | None:
        """A held record's packed fingerprint (None: not held)."""
        slot = self._slot.get(record_id)
        return None if slot is None else self._packed[slot]

    # --- loading ----------------------------------------------------------------------------

    def add(
        self,
        record_id: str,
        development_id: str,
        time: datetime,
        seq: int,
        fp: dedup.Fingerprint,
        *,
        packed: bytes | None = None,
    ) -> bytes:
        """Hold a record (again: replaced). Returns its packed fingerprint."""
        data = packed if packed is not None else pack(fp, self.vocab)
        keys = key_hashes(fp)
        self._add(record_id, development_id, self._us(time), seq, keys, data)
        return data

    def _add(
        self, record_id: str, development_id: str, us: int, seq: int, keys: list[int], data: bytes
    ) -> None:
        if record_id in self._slot:
            self._drop(record_id)
        slot = self._n
        if slot == len(self._time):
            size = 2 * slot
            self._dev = np.resize(self._dev, size)
            self._time = np.resize(self._time, size)
            self._seq = np.resize(self._seq, size)
            self._alive = np.resize(self._alive, size)
            self._alive[slot:] = False
        self._n += 1
        dev = self._dev_no.get(development_id)
        if dev is None:
            dev = self._dev_no[development_id] = len(self._dev_ids)
            self._dev_ids.append(development_id)
        self._dev[slot] = dev
        self._time[slot] = us
        insort(self._dev_times.setdefault(development_id, []), us)
        self._seq[slot] = seq
        self._alive[slot] = True
        self._rids.append(record_id)
        self._packed.append(data)
        self._slot[record_id] = slot
        self._key_data.extend(keys)
        self._key_off.append(len(self._key_data))
        if not self._bulk:
            delta = self._delta
            for key in keys:
                found = delta.get(key)
                if found is None:
                    delta[key] = [slot]
                else:
                    found.append(slot)
            self._n_delta += len(keys)
            if self._n_delta > self.options.window_merge_postings:
                self._merge_delta()
        if seq > self.last_seq:
            self.last_seq = seq

    def _merge_delta(self) -> None:
        """The postings of the dict into the sorted arrays."""
        keys = array("q")
        slots = array("i")
        for key, found in self._delta.items():
            keys.extend([key] * len(found))
            slots.extend(found)
        if keys:
            self._insert(np.frombuffer(keys, dtype=np.int64), np.frombuffer(slots, np.int32))
        self._delta = {}
        self._n_delta = 0

    def _drop(self, record_id: str) -> None:
        slot = self._slot.pop(record_id)
        dev = self._dev_ids[int(self._dev[slot])]
        times = self._dev_times[dev]
        times.remove(int(self._time[slot]))
        if not times:
            del self._dev_times[dev]
        self._alive[slot] = False
        self._packed[slot] = None
        self._rids[slot] = ""
        self._dead += 1
        self._drops += 1

    def _compact(self) -> None:
        """Slots of the records held only, numbered afresh; the index built again."""
        n = self._n
        live = np.flatnonzero(self._alive[:n])
        size = max(64, 2 * len(live))
        dev_ids: list[str] = []
        dev_no: dict[str, int] = {}
        old_dev = self._dev[live].tolist()
        new_dev = np.zeros(size, np.int32)
        for i, d in enumerate(old_dev):
            name = self._dev_ids[d]
            j = dev_no.get(name)
            if j is None:
                j = dev_no[name] = len(dev_ids)
                dev_ids.append(name)
            new_dev[i] = j
        key_data = array("q")
        key_off = array("q", [0])
        old_data, old_off = self._key_data, self._key_off
        for s in live.tolist():
            key_data.extend(old_data[old_off[s] : old_off[s + 1]])
            key_off.append(len(key_data))
        m = len(live)
        for name in ("_time", "_seq"):
            arr = np.zeros(size, np.int64)
            arr[:m] = getattr(self, name)[live]
            setattr(self, name, arr)
        self._alive = np.zeros(size, np.bool_)
        self._alive[:m] = True
        self._dev = new_dev
        self._dev_ids, self._dev_no = dev_ids, dev_no
        live_list = live.tolist()
        self._rids = [self._rids[s] for s in live_list]
        self._packed = [self._packed[s] for s in live_list]
        self._slot = {rid: i for i, rid in enumerate(self._rids)}
        self._key_data, self._key_off = key_data, key_off
        self._n, self._dead = m, 0
        self._reindex()

    def _index_from(self, first: int) -> None:
        """Index the slots from ``first`` on (added in bulk): merged into the sorted arrays,
        or all built again when they are most of the postings."""
        start = self._key_off[first]
        added = len(self._key_data) - start
        if not added:
            return
        if added > len(self._ik) // 2:
            self._merge_delta()
            self._reindex()
            return
        keys = np.frombuffer(self._key_data, dtype=np.int64)[start:]
        counts = np.diff(np.frombuffer(self._key_off, dtype=np.int64)[first:])
        slots = np.repeat(np.arange(first, self._n, dtype=np.int32), counts)
        self._insert(keys, slots)

    def _insert(self, keys: Any, slots: Any) -> None:
        order = np.argsort(keys, kind="stable")
        keys = keys[order]
        at = np.searchsorted(self._ik, keys, "right")
        self._ik = np.insert(self._ik, at, keys)
        self._is = np.insert(self._is, at, slots[order])

    def _reindex(self) -> None:
        """The sorted postings of every slot (dropped ones too: lookups skip them)."""
        keys = np.frombuffer(self._key_data, dtype=np.int64) if self._key_data else _EMPTY_I64
        counts: Any = np.diff(np.frombuffer(self._key_off, dtype=np.int64))
        slots = np.repeat(np.arange(self._n, dtype=np.int32), counts)
        order = np.argsort(keys, kind="stable")
        self._ik = keys[order]
        self._is = slots[order]
        self._delta = {}
        self._n_delta = 0

    def load(
        self,
        records: Iterable[StoredRecord],
        developments: Iterable[StoredDevelopment],
    ) -> None:
        """Hold stored records and the state of their developments (rows the store read)."""
        self.load_records(records)
        self.load_developments(developments)

    def load_records(self, records: Iterable[StoredRecord]) -> set[str]:
        """Hold stored records (rows the store reads, streamed): the ids of their
        developments, whose state ``load_developments`` takes next."""
        devs: set[str] = set()
        first = self._n
        self._bulk = True
        try:
            for row in records:
                devs.add(row.development_id)
                raw = row.fingerprint_json
                found = pack_json(raw, self.vocab) if raw else None
                if found is not None:
                    data, keys = found
                    us = self._us(row.time)
                    self._add(row.record_id, row.development_id, us, row.seq, keys, data)
                    continue
                fp = _parse(row.fingerprint_json)
                if fp is not None:
                    self.add(row.record_id, row.development_id, row.time, row.seq, fp)
                elif row.seq > self.last_seq:
                    self.last_seq = row.seq
        finally:
            self._bulk = False
            self._index_from(first)
        return devs

    def unheld(self, developments: Iterable[StoredDevelopment]) -> list[str]:
        """The members of ``developments`` (read without fingerprints) this window does not
        hold: those whose fingerprints ``load_developments`` needs."""
        return [m.record_id for d in developments for m in d.members if m.record_id not in self]

    def load_developments(
        self,
        developments: Iterable[StoredDevelopment],
        fingerprints: Mapping[str, str | None] | None = None,
    ) -> None:
        """Hold the state of developments (their latest members: the fingerprint of a member
        held comes from the window, of another from ``fingerprints`` or the row)."""
        for dev in developments:
            members = []
            for m in sorted(dev.members, key=lambda m: (m.time, m.seq)):
                slot = self._slot.get(m.record_id)
                if slot is not None:
                    data: bytes | None = self._packed[slot]
                else:
                    raw = m.fingerprint_json
                    if fingerprints is not None:
                        raw = fingerprints.get(m.record_id, raw)
                    data = pack_stored(raw, self.vocab)
                members.append(Member(m.time, m.seq, m.record_id, m.title, data))
            self.developments[dev.id] = DevState(
                dev.id,
                dev.representative_id,
                dev.title,
                frozenset(dev.topics) if dev.topics else _NO_TOPICS,
                members[-self.options.representative_members :],
            )

    def set_horizon(self, horizon: datetime) -> None:
        self.horizon = horizon if self.horizon is None else min(self.horizon, horizon)

    def evict(self, now: datetime) -> None:
        """Drop what the next records are not expected to reach (filed more than two windows
        before ``now``: the time the last batch's records were filed up to, at most the
        clock's) and, past the memory bound, the oldest. A record filed earlier all the same
        finds them again: the store reloads what lies before ``horizon``."""
        limit = now - 2 * self.window
        n = self._n
        drops_before = self._drops
        if n:
            alive = self._alive[:n]
            old = np.flatnonzero(alive & (self._time[:n] < self._us(limit)))
            for s in old.tolist():
                self._drop(self._rids[s])
        if self.horizon is not None and self.horizon < limit:
            self.horizon = limit
        over = len(self._slot) - self.options.window_max_records
        if over > 0:
            live = np.flatnonzero(self._alive[: self._n])
            ts = self._time[live]
            # The oldest ``over``: the newest len - over kept, ties of time by record id.
            keep = self._newest(live, ts, len(live) - over)
            doomed = np.ones(len(live), np.bool_)
            doomed[keep] = False
            for s in live[doomed].tolist():
                self._drop(self._rids[s])
            self.capped = True
        if self._dead > max(self.options.window_compact_after, len(self._slot)):
            self._compact()
        if self.developments and self._drops != drops_before:
            live = self._dev[: self._n][self._alive[: self._n]]
            held = {self._dev_ids[d] for d in np.unique(live).tolist()}
            for dev_id in [d for d in self.developments if d not in held]:
                del self.developments[dev_id]
        if len(self.vocab) > self.options.window_max_words:
            # Words of records long gone: load again (the next batch rebuilds from the store).
            self.reset(None)


_EMPTY_I32 = np.zeros(0, np.int32)
_EMPTY_I64 = np.zeros(0, np.int64)
# A candidate picked: (the window holding it, record id, slot, filing time in microseconds).
_Pick = tuple[Window, str, int, int]


def pack_stored(data: str | None, vocab: Vocabulary) -> bytes | None:
    """A stored fingerprint's JSON, packed (None: none, or not readable)."""
    found = pack_json(data, vocab) if data else None
    if found is not None:
        return found[0]
    fp = _parse(data)
    return None if fp is None else pack(fp, vocab)


def _parse(data: str | None) -> dedup.Fingerprint | None:
    if not data:
        return None
    try:
        return dedup.fingerprint_from_json(data)
    except ValueError:
        return None
