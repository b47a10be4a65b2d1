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
from collections import Counter, OrderedDict
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
_HEADER = struct.Struct("<8HIB")  # 8 counts, length, flags
_EXACT_WEIGHTS = 1  # flag: weights as uint32 of w * 1e5 (else float64)
_BAND_TAG = 0x2545F4914F6CDD1D  # band keys hash apart from key terms of the same spelling


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


def pack(fp: dedup.Fingerprint, vocab: Vocabulary) -> bytes:
    """A fingerprint in a few arrays: about 8 bytes a term, the MinHash 4 bytes a value."""
    weights = _exact_ints(fp.weights)
    head = _exact_ints(fp.head_weights)
    exact = weights is not None and head is not None
    lists = (fp.bands, fp.key_terms, fp.terms, fp.entities, fp.numbers, fp.title_terms)
    header = _HEADER.pack(
        len(fp.minhash),
        *(len(x) for x in lists),
        len(fp.head_terms),
        fp.length,
        _EXACT_WEIGHTS if exact else 0,
    )
    # The bands inline, not in the vocabulary: a band key is nearly unique to its record, and
    # the vocabulary never forgets a word.
    bands = "\n".join(fp.bands).encode("utf-8")
    parts = [header, array("I", fp.minhash).tobytes(), struct.pack("<I", len(bands)), bands]
    for words in (*lists[1:], fp.head_terms):
        parts.append(vocab.many(words).tobytes())
    lang = _NONE if fp.language is None else vocab.id(fp.language)
    parts.append(array("I", [lang, fp.version]).tobytes())
    if exact:
        assert weights is not None and head is not None
        parts += [weights.tobytes(), head.tobytes()]
    else:
        parts += [array("d", fp.weights).tobytes(), array("d", fp.head_weights).tobytes()]
    return b"".join(parts)


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
        lists = (key_terms, terms, obj["entities"], obj["numbers"], obj["title_terms"], head)
        if (
            len(minhash) % 4
            or len(weights) != 8 * len(terms)
            or len(head_w) != 8 * len(head)
            or not set(map(type, chain(*lists[2:5]))) <= {str}
        ):
            return None
        length, version, lang = int(obj["length"]), int(obj["v"]), obj.get("language")
    except (KeyError, TypeError, ValueError, binascii.Error):
        return None
    both = _exact_ints_raw(weights + head_w)
    exact = both is not None
    header = _HEADER.pack(
        len(minhash) // 4,
        len(bands),
        *(len(x) for x in lists[:5]),
        len(head),
        length,
        _EXACT_WEIGHTS if exact else 0,
    )
    band_text = "\n".join(bands).encode("utf-8")
    parts = [header, minhash, struct.pack("<I", len(band_text)), band_text]
    for words in lists:
        parts.append(vocab.many(words).tobytes())
    lang_id = _NONE if lang is None else vocab.id(str(lang))
    parts.append(array("I", [lang_id, version]).tobytes())
    parts += [both] if both is not None else [weights, head_w]
    return b"".join(parts), _keys(bands, key_terms)


# Every weight a packed fingerprint can hold exactly, as the float ``k / 100_000`` (about 3 MB):
# decoded fingerprints share these objects instead of holding 24 bytes per weight each.
_WEIGHTS: list[float] = []


def _weights() -> list[float]:
    if not _WEIGHTS:
        _WEIGHTS.extend(i / 100_000 for i in range(100_001))
    return _WEIGHTS


def unpack(data: bytes, vocab: Vocabulary) -> dedup.Fingerprint:
    """The fingerprint ``pack`` packed, equal to it."""
    counts = _HEADER.unpack_from(data)
    n_min, n_bands, n_key, n_terms, n_ent, n_num, n_title, n_head = counts[:8]
    length, flags = counts[8], counts[9]
    pos = _HEADER.size
    minhash = array("I")
    minhash.frombytes(data[pos : pos + 4 * n_min])
    pos += 4 * n_min
    (n_band_bytes,) = struct.unpack_from("<I", data, pos)
    pos += 4
    band_text = data[pos : pos + n_band_bytes].decode("utf-8")
    pos += n_band_bytes
    bands_: tuple[str, ...] = tuple(band_text.split("\n")) if n_bands else ()
    words = vocab.words
    lists: list[tuple[str, ...]] = [bands_]
    for n in (n_key, n_terms, n_ent, n_num, n_title, n_head):
        ids = array("I")
        ids.frombytes(data[pos : pos + 4 * n])
        pos += 4 * n
        lists.append(tuple([words[i] for i in ids]))
    tail = array("I")
    tail.frombytes(data[pos : pos + 8])
    pos += 8
    lang = None if tail[0] == _NONE else words[tail[0]]
    if flags & _EXACT_WEIGHTS:
        w, h = array("I"), array("I")
        w.frombytes(data[pos : pos + 4 * n_terms])
        pos += 4 * n_terms
        h.frombytes(data[pos : pos + 4 * n_head])
        pos += 4 * n_head
        # One float object per value, shared by every decoded fingerprint (and its vectors).
        weight = (_WEIGHTS or _weights()).__getitem__
        weights = tuple(map(weight, w))
        head_weights = tuple(map(weight, h))
    else:
        wd, hd = array("d"), array("d")
        wd.frombytes(data[pos : pos + 8 * n_terms])
        pos += 8 * n_terms
        hd.frombytes(data[pos : pos + 8 * n_head])
        pos += 8 * n_head
        weights, head_weights = tuple(wd), tuple(hd)
    bands, key_terms, terms, entities, numbers, title_terms, head_terms = lists
    return dedup.Fingerprint(
        minhash=tuple(minhash),
        bands=bands,
        key_terms=key_terms,
        terms=terms,
        weights=weights,
        entities=entities,
        numbers=numbers,
        title_terms=title_terms,
        length=length,
        language=lang,
        head_terms=head_terms,
        head_weights=head_weights,
        version=tail[1],
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

    def __init__(self, instance: str, options: IngestOptions, window_days: float) -> None:
        self.instance = instance  # the store it mirrors (Store.instance)
        self.options = options
        self.window = timedelta(days=window_days)
        self.reset(None)

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
        self._decoded: OrderedDict[str, dedup.Fingerprint] = OrderedDict()
        # Fingerprints held decoded, never evicted (a batch's own window: at most a batch).
        self.pinned: dict[str, dedup.Fingerprint] = {}

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
    ) -> list[dedup.Candidate]:
        """The ranked candidates of a record filed at ``time`` (``extra``: a second window of
        records decided but not stored yet, ranked together with these): per key its newest
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
        size = self._sizer(time, extra)
        if not theirs:
            return self._ranked_own(slots, weight[keyno], size)
        return self._ranked_mixed(slots, weight[keyno], extra, theirs, weight, size)

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

    def _ranked_own(
        self, slots: Any, weights: Any, size: Callable[[str], int]
    ) -> list[dedup.Candidate]:
        if not len(slots):
            return []
        uniq, inverse = np.unique(slots, return_inverse=True)
        shared = np.bincount(inverse, weights=weights).astype(np.int64)
        ts = self._time[uniq]
        order = np.lexsort((-ts, -shared))
        u = uniq[order].tolist()
        c = shared[order].tolist()
        t = ts[order].tolist()
        rids = self._rids
        out: list[dedup.Candidate] = []
        per_dev: Counter[int] = Counter()
        cap, per = self.options.max_candidates, self.options.candidates_per_development
        i = 0
        while i < len(u) and len(out) < cap:
            j = i + 1
            while j < len(u) and c[j] == c[i] and t[j] == t[i]:
                j += 1
            group = [(rids[s], s, t[i]) for s in u[i:j]]
            group.sort()  # the same keys and time: by record id
            for rid, s, when in group:
                if len(out) >= cap:
                    break
                dev = int(self._dev[s])
                if per_dev[dev] < per:
                    per_dev[dev] += 1
                    out.append(self._candidate(rid, s, when, size))
            i = j
        return out

    def _ranked_mixed(
        self,
        slots: Any,
        weights: Any,
        extra: Window | None,
        theirs: list[tuple[int, str, int, int]],
        weight: Any,
        size: Callable[[str], int],
    ) -> list[dedup.Candidate]:
        assert extra is not None
        shared: Counter[tuple[int, int]] = Counter()  # (owner, slot) -> keys shared
        for s, w in zip(slots.tolist(), weights.tolist(), strict=True):
            shared[0, s] += w
        for _, _, s, k in theirs:
            shared[1, s] += int(weight[k])
        owners = (self, extra)
        ranked = sorted(
            (-count, -int(owners[o]._time[s]), owners[o]._rids[s], o, s)
            for (o, s), count in shared.items()
        )
        out: list[dedup.Candidate] = []
        per_dev: Counter[str] = Counter()
        cap, per = self.options.max_candidates, self.options.candidates_per_development
        for _, neg_t, rid, o, s in ranked:
            if len(out) >= cap:
                break
            owner = owners[o]
            dev = owner._dev_ids[int(owner._dev[s])]
            if per_dev[dev] < per:
                per_dev[dev] += 1
                out.append(owner._candidate(rid, s, -neg_t, size))
        return out

    def _candidate(
        self, record_id: str, slot: int, us: int, size: Callable[[str], int]
    ) -> dedup.Candidate:
        dev = self._dev_ids[int(self._dev[slot])]
        return dedup.Candidate(
            record_id, dev, self.fingerprint(record_id), self._datetime(us), size(dev)
        )

    def fingerprint(self, record_id: str) -> dedup.Fingerprint:
        """The decoded fingerprint of a held record (kept in a small LRU)."""
        fp = self.pinned.get(record_id)
        if fp is not None:
            return fp
        fp = self._decoded.get(record_id)
        if fp is not None:
            self._decoded.move_to_end(record_id)
            return fp
        data = self._packed[self._slot[record_id]]
        assert data is not None
        fp = unpack(data, self.vocab)
        self.remember(record_id, fp)
        return fp

    def member_fingerprint(self, member: Member) -> dedup.Fingerprint | None:
        if member.packed is None:
            return None
        fp = self._decoded.get(member.record_id)
        if fp is None:
            fp = unpack(member.packed, self.vocab)
            self.remember(member.record_id, fp)
        return fp

    def remember(self, record_id: str, fp: dedup.Fingerprint) -> None:
        """Keep ``fp`` decoded for a while (an LRU of ``decoded_cache`` entries)."""
        self._decoded[record_id] = fp
        if len(self._decoded) > self.options.decoded_cache:
            self._decoded.popitem(last=False)

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
        self._decoded.pop(record_id, None)

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
                    found = pack_json(raw, self.vocab) if raw else None
                    if found is not None:
                        data = found[0]
                    else:
                        fp = _parse(raw)
                        data = None if fp is None else pack(fp, self.vocab)
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


def _parse(data: str | None) -> dedup.Fingerprint | None:
    if not data:
        return None
    try:
        return dedup.fingerprint_from_json(data)
    except ValueError:
        return None
