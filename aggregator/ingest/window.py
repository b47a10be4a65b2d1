"""The dedup window in memory (pure: no I/O; the pipeline loads it from the store).

It holds the records filed within reach of a new one (``horizon`` onwards) with compact
fingerprints (``Compact``: term ids and weights in arrays, the MinHash as bytes), postings of
their index keys (LSH bands, key terms) sorted by time, and the state of their developments
that a refresh needs (the latest members, representative, title, topics). Candidates for a new
record are ranked here exactly as the store's candidate query ranked them: per key the newest
``candidate_hits_per_key`` hits within the dedup window, the records sharing the most keys
first, then the most recent, at most ``candidates_per_development`` of one development, at
most ``max_candidates``.

One window per process and store: ``pipeline`` keeps it, catches it up from the store (records
after ``last_seq``) under the ingest lock before each batch, and adds a batch's plan once its
transaction committed.
"""

from __future__ import annotations

import bisect
import struct
from array import array
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from sys import intern

from aggregator import dedup
from aggregator.ingest.types import StoredDevelopment, StoredRecord
from aggregator.model import IngestOptions

MAX_KEY_CHARS = 100  # keys are cut to this width, as the store's index columns did

_NONE = 0xFFFFFFFF
_HEADER = struct.Struct("<8HIB")  # 8 counts, length, flags
_EXACT_WEIGHTS = 1  # flag: weights as uint32 of w * 1e5 (else float64)


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

    def many(self, words: Iterable[str]) -> array[int]:
        get = self.id
        return array("I", [get(w) for w in words])


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
        weights = tuple([k / 100_000 for k in w])
        head_weights = tuple([k / 100_000 for k in h])
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
class Entry:
    """One record of the window."""

    record_id: str
    development_id: str
    time: datetime
    seq: int
    keys: tuple[str, ...]
    packed: bytes


@dataclass(slots=True)
class Member:
    """One of a development's latest members (what its representative is chosen among)."""

    time: datetime
    seq: int
    record_id: str
    title: str
    packed: bytes | None  # None: no readable fingerprint (left out of the choice)


@dataclass(slots=True)
class DevState:
    """What a refresh of a development needs: its latest members, representative and title,
    and its topics."""

    id: str
    representative_id: str
    title: str
    topics: set[str] = field(default_factory=set)
    members: list[Member] = field(default_factory=list)  # oldest first, the latest only


@dataclass(frozen=True, slots=True)
class Hit:
    """A candidate as the ranking sees it."""

    record_id: str
    development_id: str
    time: datetime
    shared: int


class Postings:
    """Index key -> (time, record id) of the records holding it, sorted."""

    def __init__(self) -> None:
        self.by_key: dict[str, list[tuple[datetime, str]]] = {}

    def add(self, keys: Iterable[str], time: datetime, record_id: str) -> None:
        item = (time, record_id)
        for key in keys:
            hits = self.by_key.get(key)
            if hits is None:
                self.by_key[key] = [item]
            elif hits[-1] <= item:
                hits.append(item)
            else:
                bisect.insort(hits, item)

    def remove(self, keys: Iterable[str], time: datetime, record_id: str) -> None:
        item = (time, record_id)
        for key in keys:
            hits = self.by_key.get(key)
            if hits is None:
                continue
            i = bisect.bisect_left(hits, item)
            if i < len(hits) and hits[i] == item:
                del hits[i]
            if not hits:
                del self.by_key[key]

    def newest(
        self, key: str, lo: datetime, hi: datetime, n: int
    ) -> Iterator[tuple[datetime, str]]:
        """The newest ``n`` hits of ``key`` filed within [lo, hi], newest first (ties: the
        greater record id first, as ``ORDER BY time DESC, record_id DESC``)."""
        hits = self.by_key.get(key)
        if not hits:
            return
        # Past every (hi, id): compare on a tuple whose second part sorts after any id.
        i = bisect.bisect_right(hits, (hi, "\uffff"))
        while i > 0 and n > 0:
            i -= 1
            item = hits[i]
            if item[0] < lo:
                return
            n -= 1
            yield item


def rank(
    hits_per_key: Iterable[Iterable[tuple[datetime, str]]],
    development_of: dict[str, str],
    options: IngestOptions,
) -> list[Hit]:
    """The candidate query's ranking over the per-key hits: count shared keys, order by shared
    keys, time (newest first), record id; at most so many per development, at most so many."""
    shared: Counter[str] = Counter()
    times: dict[str, datetime] = {}
    for hits in hits_per_key:
        for when, rid in hits:
            shared[rid] += 1
            times[rid] = when
    ranked = sorted(shared)
    ranked.sort(key=times.__getitem__, reverse=True)
    ranked.sort(key=shared.__getitem__, reverse=True)
    out: list[Hit] = []
    per_dev: Counter[str] = Counter()
    for rid in ranked:
        if len(out) >= options.max_candidates:
            break
        dev = development_of.get(rid)
        if dev is None:
            continue
        if per_dev[dev] < options.candidates_per_development:
            per_dev[dev] += 1
            out.append(Hit(rid, dev, times[rid], shared[rid]))
    return out


class Window:
    """The records and developments within reach of new records, in memory."""

    def __init__(self, instance: str, options: IngestOptions, window_days: float) -> None:
        self.instance = instance  # the store it mirrors (Store.instance)
        self.options = options
        self.window = timedelta(days=window_days)
        self.reset(None)

    def reset(self, layout_version: int | None) -> None:
        """Forget everything (the store's records moved outside ingest: load again)."""
        self.layout_version = layout_version
        self.vocab = Vocabulary()
        self.entries: dict[str, Entry] = {}
        self.development_of: dict[str, str] = {}
        self.postings = Postings()
        self.order: list[tuple[datetime, str]] = []  # every entry, oldest first
        self.developments: dict[str, DevState] = {}
        self.last_seq = 0  # every stored record up to this seq is reflected
        self.horizon: datetime | None = None  # complete from this time on (None: empty store)
        self.capped = False  # records were dropped for the memory bound
        self._decoded: OrderedDict[str, dedup.Fingerprint] = OrderedDict()
        # Fingerprints held decoded, never evicted (a batch's own window: at most a batch).
        self.pinned: dict[str, dedup.Fingerprint] = {}

    # --- reading ----------------------------------------------------------------------------

    def covers(self, time: datetime) -> bool:
        """Whether every stored record filed from ``time - window`` on is held (or was
        dropped for the memory bound, which loading cannot undo)."""
        return self.capped or (self.horizon is not None and self.horizon <= time - self.window)

    def candidates(
        self, fp: dedup.Fingerprint, time: datetime, extra: Window | None = None
    ) -> list[dedup.Candidate]:
        """The ranked candidates of a record filed at ``time`` (``extra``: a second window of
        records decided but not stored yet, ranked together with these)."""
        lo, hi = time - self.window, time + self.window
        n = self.options.candidate_hits_per_key
        keys = index_keys(fp)
        per_key: list[Iterable[tuple[datetime, str]]] = []
        dev_of = self.development_of
        for key in keys:
            mine = list(self.postings.newest(key, lo, hi, n))
            if extra is not None:
                theirs = list(extra.postings.newest(key, lo, hi, n))
                if theirs:
                    mine = sorted(mine + theirs, reverse=True)[:n]
            per_key.append(mine)
        if extra is not None and extra.development_of:
            dev_of = {**dev_of, **extra.development_of}
        out = []
        for hit in rank(per_key, dev_of, self.options):
            owner = self if hit.record_id in self.entries else extra
            assert owner is not None
            out.append(
                dedup.Candidate(
                    hit.record_id, hit.development_id, owner.fingerprint(hit.record_id), hit.time
                )
            )
        return out

    def fingerprint(self, record_id: str) -> dedup.Fingerprint:
        """The decoded fingerprint of a held record (kept in a small LRU)."""
        fp = self.pinned.get(record_id)
        if fp is not None:
            return fp
        fp = self._decoded.get(record_id)
        if fp is not None:
            self._decoded.move_to_end(record_id)
            return fp
        fp = unpack(self.entries[record_id].packed, self.vocab)
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
        if record_id in self.entries:
            self._drop(record_id)
        data = packed if packed is not None else pack(fp, self.vocab)
        keys = tuple(index_keys(fp))
        self.entries[record_id] = Entry(record_id, development_id, time, seq, keys, data)
        self.development_of[record_id] = development_id
        self.postings.add(keys, time, record_id)
        item = (time, record_id)
        if not self.order or self.order[-1] <= item:
            self.order.append(item)
        else:
            bisect.insort(self.order, item)
        self.last_seq = max(self.last_seq, seq)
        return data

    def _drop(self, record_id: str) -> None:
        entry = self.entries.pop(record_id)
        self.development_of.pop(record_id, None)
        self.postings.remove(entry.keys, entry.time, record_id)
        item = (entry.time, record_id)
        i = bisect.bisect_left(self.order, item)
        if i < len(self.order) and self.order[i] == item:
            del self.order[i]
        self._decoded.pop(record_id, None)

    def load(
        self,
        records: Iterable[StoredRecord],
        developments: Iterable[StoredDevelopment],
    ) -> None:
        """Hold stored records and the state of their developments (rows the store read)."""
        for row in records:
            fp = _parse(row.fingerprint_json)
            if fp is not None:
                self.add(row.record_id, row.development_id, row.time, row.seq, fp)
            else:
                self.last_seq = max(self.last_seq, row.seq)
        for dev in developments:
            members = []
            for m in sorted(dev.members, key=lambda m: (m.time, m.seq)):
                held = self.entries.get(m.record_id)
                if held is not None:
                    data: bytes | None = held.packed
                else:
                    fp = _parse(m.fingerprint_json)
                    data = None if fp is None else pack(fp, self.vocab)
                members.append(Member(m.time, m.seq, m.record_id, m.title, data))
            self.developments[dev.id] = DevState(
                dev.id,
                dev.representative_id,
                dev.title,
                set(dev.topics),
                members[-self.options.representative_members :],
            )

    def set_horizon(self, horizon: datetime) -> None:
        self.horizon = horizon if self.horizon is None else min(self.horizon, horizon)

    def evict(self, now: datetime) -> None:
        """Drop what no new record can reach (filed more than two windows before ``now``:
        a record is filed at most at ``now``) and, past the memory bound, the oldest."""
        limit = now - 2 * self.window
        while self.order and self.order[0][0] < limit:
            self._drop(self.order[0][1])
        if self.horizon is not None and self.horizon < limit:
            self.horizon = limit
        while len(self.entries) > self.options.window_max_records:
            self._drop(self.order[0][1])
            self.capped = True
        held = set(self.development_of.values())
        for dev_id in [d for d in self.developments if d not in held]:
            del self.developments[dev_id]
        if len(self.vocab) > self.options.window_max_words:
            # Words of records long gone: load again (the next batch rebuilds from the store).
            self.reset(None)


def _parse(data: str | None) -> dedup.Fingerprint | None:
    if not data:
        return None
    try:
        return dedup.fingerprint_from_json(data)
    except ValueError:
        return None
