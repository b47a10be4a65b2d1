"""The plain types the ingest stages hand each other (see ``aggregator.ingest``)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING

from aggregator.model import DedupReason, Record, TopicMatch

if TYPE_CHECKING:  # the store imports these types, and never dedup
    from aggregator.dedup import Fingerprint


def development_id_for(record_id: str, salt: str = "") -> str:
    """Stable id of the development a record starts: derived from that record's id, so the same
    import into an empty store gives the same development ids."""
    basis = f"development\0{record_id}\0{salt}"
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Prepared:
    """A record with the pure work done on it before any transaction opens."""

    record: Record
    matches: tuple[TopicMatch, ...]
    time: datetime  # the time it is filed under (``record_time``)
    # None (and "") when the record matches no topic: no feed can show it, so it is stored
    # without a fingerprint and in no development (docs/store.md).
    fingerprint: Fingerprint | None
    fingerprint_json: str  # what the store keeps

    @property
    def topics(self) -> tuple[str, ...]:
        return tuple(sorted({m.topic_id for m in self.matches}))


@dataclass(frozen=True, slots=True)
class StoredRow:
    """A stored record that shares an exact key (id, content hash, canonical URL, source and
    GUID) with a record of the batch, with what the decider needs to alias a copy to it."""

    id: str
    seq: int
    content_hash: str
    canonical_url: str | None
    source_id: str | None
    url: str | None
    guid: str | None
    development_id: str | None
    time: datetime
    outlet_url: str | None
    headline_key: str | None
    topics: tuple[str, ...]
    # (source_id, url, guid) of the places it is already known to be published at.
    aliases: tuple[tuple[str | None, str | None, str | None], ...] = ()


@dataclass(frozen=True, slots=True)
class StoredExact:
    """What the store holds that a batch's records may be exact duplicates of."""

    rows: tuple[StoredRow, ...] = ()
    # (source_id, guid, record_id): an alias with that source and GUID, of that record
    alias_guids: tuple[tuple[str, str, str], ...] = ()
    taken_development_ids: frozenset[str] = frozenset()


@dataclass(frozen=True, slots=True)
class IngestResult:
    """What ingest did with one record."""

    record_id: str  # for an exact duplicate: the id of the record already stored
    stored: bool  # False: an exact duplicate of a stored record, nothing written
    development_id: str | None
    reason: DedupReason
    score: float
    topics: tuple[str, ...]
    matched_record_id: str | None = None


@dataclass(frozen=True, slots=True)
class NewRecord:
    """A record to store, with its membership."""

    prepared: Prepared
    seq_hint: int  # its order among the batch's records (ties of time: insertion order)
    development_id: str | None  # None: it matches no topic and joins no development
    reason: DedupReason
    score: float
    matched_record_id: str | None


@dataclass(frozen=True, slots=True)
class NewAlias:
    """Another place an exact duplicate of a stored record was published at."""

    record_id: str
    source_id: str | None
    url: str | None
    guid: str | None
    published: datetime | None
    outlet: str | None = None  # the outlet a news search feed credited
    headline_key: str | None = None


@dataclass(frozen=True, slots=True)
class DevelopmentWrite:
    """A development as the plan leaves it. ``created``: new in this plan (written whole);
    otherwise an update: ``updated`` moves forward to this, the topics in ``add_topics`` are
    added, and when ``representative_id`` is set the title and summary are replaced."""

    id: str
    created: bool
    updated: datetime
    first_seen: datetime | None = None
    representative_id: str | None = None
    title: str | None = None
    # None with a representative set: the summary of the representative's stored text (the
    # pipeline fills it before apply, ``Plan.missing_summaries``).
    summary: str | None = None
    topics: tuple[str, ...] = ()  # all topics when created, else those to add


@dataclass(slots=True)
class Plan:
    """Everything one batch writes, decided in memory; ``WriteTx.apply`` writes it as is."""

    records: list[NewRecord] = field(default_factory=list)
    aliases: list[NewAlias] = field(default_factory=list)
    developments: list[DevelopmentWrite] = field(default_factory=list)
    results: list[IngestResult] = field(default_factory=list)
    feed_changed: bool = False
    # Each new record's packed fingerprint (ingest.window.pack), made while deciding, in the
    # term ids of ``packed_for`` (the window's vocabulary then): the window takes them as they
    # are once the plan is written, unless its vocabulary changed.
    packed: dict[str, bytes] = field(default_factory=dict)
    packed_for: object = None

    def missing_summaries(self) -> list[str]:
        """Representatives whose summary is made from their stored text."""
        return [
            d.representative_id
            for d in self.developments
            if d.representative_id is not None and d.summary is None
        ]


@dataclass(frozen=True, slots=True)
class StoredRecord:
    """A stored record as the window loads it."""

    record_id: str
    development_id: str
    time: datetime
    seq: int
    title: str
    fingerprint_json: str | None


@dataclass(frozen=True, slots=True)
class StoredDevelopment:
    """A stored development as the window loads it, with its latest members."""

    id: str
    representative_id: str
    title: str
    topics: tuple[str, ...]
    members: tuple[StoredRecord, ...]  # the latest, any order
