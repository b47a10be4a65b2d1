"""Stage 2 of ingest (pure): the window, the store's exact keys, a batch of prepared records in
order, the options and ``now`` -> a ``Plan``.

A batch decides exactly as its records would one after another: each record sees the records
decided before it (an exact duplicate of an earlier one is an alias of it; an earlier one is a
candidate, ranked with the stored ones) through a second, batch-local window. Nothing here
mutates the window: the pipeline adds the plan to it once the plan is written.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timedelta

from aggregator import dedup, identity, profile
from aggregator.ingest.types import (
    DevelopmentWrite,
    IngestResult,
    NewAlias,
    NewRecord,
    Plan,
    Prepared,
    StoredDevelopment,
    StoredExact,
    StoredRow,
    development_id_for,
)
from aggregator.ingest.window import (
    DevState,
    Member,
    Vocabulary,
    Window,
    pack_stored,
    packed_representative,
)
from aggregator.model import DedupOptions, DedupReason, IngestOptions, Record
from aggregator.records import summary_of


def first_choices(batch: Sequence[Prepared], attempts: int = 3) -> list[str]:
    """The development ids the batch's records may take, to look up in the store first."""
    return [
        development_id_for(p.record.id, "" if i == 0 else str(i))
        for p in batch
        for i in range(attempts)
    ]


def _batch_row(p: Prepared, seq: int, development_id: str | None) -> StoredRow:
    """A record of the batch as the exact-duplicate check of the later ones sees it."""
    r = p.record
    return StoredRow(
        r.id,
        seq,
        r.content_hash,
        r.canonical_url,
        r.source_id,
        r.url,
        r.guid,
        development_id,
        p.time,
        r.outlet_url,
        r.headline_key,
        p.topics if development_id is not None else (),
    )


class _Planner:
    def __init__(
        self,
        window: Window,
        stored: StoredExact,
        options: DedupOptions,
        ingest: IngestOptions,
        now: datetime,
    ) -> None:
        self.window = window
        self.options = options
        self.ingest = ingest
        self.now = now
        self.plan = Plan(packed_for=window.vocab)
        # The batch's own records, with the window's term ids (their candidates score as one).
        self.local = Window(window.instance, ingest, options.window_days, window.vocab)
        self.rows: list[StoredRow] = sorted(stored.rows, key=lambda r: r.seq)
        # record id -> (source_id, url, guid) of the places it is known to be published at
        self.places: dict[str, list[tuple[str | None, str | None, str | None]]] = {
            r.id: list(r.aliases) for r in self.rows
        }
        self.alias_guids: dict[tuple[str, str], str] = {}
        for source_id, guid, rid in stored.alias_guids:
            self.alias_guids.setdefault((source_id, guid), rid)
        self.by_id = {r.id: r for r in self.rows}
        self.taken = set(stored.taken_development_ids)
        self.next_seq = max([window.last_seq, *(r.seq for r in self.rows)]) + 1
        self.new_devs: dict[str, list[NewRecord]] = {}
        self.joined: dict[str, list[NewRecord]] = {}  # stored developments joined
        self.touched: set[str] = set()  # stored developments an alias touched

    # --- exact duplicates -------------------------------------------------------------------

    def _duplicate_of(self, r: Record, time: datetime) -> tuple[StoredRow, DedupReason] | None:
        """An exact copy among the stored rows and the batch's earlier ones, and why: the
        same id or canonical URL, source and GUID (also an alias's), content hash, or the same
        ``headline_key`` within ``headline_days`` when one of the two links is wrapped."""

        def strong(row: StoredRow) -> bool:
            return bool(
                row.id == r.id
                or row.content_hash == r.content_hash
                or (r.canonical_url and row.canonical_url == r.canonical_url)
                or (r.guid and r.source_id and row.source_id == r.source_id and row.guid == r.guid)
            )

        within = timedelta(days=self.options.headline_days)
        hits = [
            row
            for row in self.rows
            if strong(row)
            or (
                r.headline_key
                and row.headline_key == r.headline_key
                and time - within <= row.time <= time + within
            )
        ][:10]
        if r.guid and r.source_id and not any(strong(row) for row in hits):
            alias_of = self.alias_guids.get((r.source_id, r.guid))
            if alias_of is not None and alias_of in self.by_id:
                return self.by_id[alias_of], DedupReason.SAME_GUID
        if not hits:
            return None
        for row in hits:  # the most specific reason wins
            if row.id == r.id or (r.canonical_url and row.canonical_url == r.canonical_url):
                reason = DedupReason.SAME_URL if r.canonical_url else DedupReason.SAME_CONTENT
                return row, reason
        for row in hits:
            if r.guid and row.source_id == r.source_id and row.guid == r.guid:
                return row, DedupReason.SAME_GUID
        for row in hits:
            if row.content_hash == r.content_hash:
                return row, DedupReason.SAME_CONTENT
        wrapped = identity.wrapped_link(r.url, r.outlet_url)
        for row in hits:  # the rest share the headline key
            if wrapped or identity.wrapped_link(row.url, row.outlet_url):
                return row, DedupReason.SAME_HEADLINE
        return None

    def _alias(self, row: StoredRow, r: Record) -> bool:
        """Remember where ``r``, an exact duplicate of ``row``, was published, unless that
        place is known: True when it is another place that reports the development. The
        stored record's own page linked from another feed, or the same outlet's same headline
        relayed by a news search feed, is remembered for its GUID (the feed's entry is then
        known) but is the same place, unless it replaces a stored wrapped link with the
        outlet's own (then the feeds change)."""
        place = (r.source_id, r.url or r.canonical_url, r.guid)
        same_page = place[1] is not None and place[1] in (row.url, row.canonical_url)
        if r.headline_key and r.headline_key == row.headline_key and not same_page:
            same_page = not (
                identity.wrapped_link(row.url, row.outlet_url)
                and not identity.wrapped_link(r.url, r.outlet_url)
            )
        if row.source_id == place[0] and (place[1] is None or place[2] == row.guid):
            return False  # the same entry of the same source
        if place[0] is None and (place[1] is None or same_page):
            return False  # nothing to show or know: an anonymous re-import of the same text
        if same_page and not place[2]:
            return False  # the same page, and no GUID to know the feed's entry by
        known = self.places.setdefault(row.id, [])
        for source_id, url, guid in known:
            if source_id == place[0] and (url == place[1] or (place[2] and guid == place[2])):
                return False
        known.append(place)
        if place[0] is not None and place[2]:
            self.alias_guids.setdefault((place[0], place[2]), row.id)
        self.plan.aliases.append(
            NewAlias(row.id, place[0], place[1], place[2], r.published, r.outlet, r.headline_key)
        )
        return not same_page

    def _exact(self, p: Prepared) -> IngestResult | None:
        found = self._duplicate_of(p.record, p.time)
        if found is None:
            return None
        row, reason = found
        if self._alias(row, p.record):
            if row.development_id is not None:
                self.touched.add(row.development_id)
            self.plan.feed_changed = True
        return IngestResult(
            record_id=row.id,
            stored=False,
            development_id=row.development_id,
            reason=reason,
            score=1.0,
            topics=row.topics,
            matched_record_id=row.id,
        )

    # --- new records ------------------------------------------------------------------------

    def add(self, p: Prepared) -> IngestResult:
        exact = self._exact(p)
        if exact is not None:
            return exact
        r, fp = p.record, p.fingerprint
        if fp is None:
            return self._unmatched(p)
        with profile.stage("dedup"):  # the window's candidates (ranked, as arrays) and scores
            candidates = self.window.candidates(fp, p.time, self.local)
            decision = dedup.decide(fp, p.time, candidates, self.options)
        dev_id = decision.development_id
        seq = self.next_seq
        self.next_seq += 1
        if dev_id is None:
            dev_id = self._new_development_id(r.id)
        new = NewRecord(
            prepared=p,
            seq_hint=seq,
            development_id=dev_id,
            reason=decision.reason,
            score=decision.score,
            matched_record_id=decision.matched_record_id,
        )
        self.plan.records.append(new)
        if dev_id in self.new_devs:
            self.new_devs[dev_id].append(new)
        elif decision.development_id is None:
            self.new_devs[dev_id] = [new]
        else:
            self.joined.setdefault(dev_id, []).append(new)
        self.plan.packed[r.id] = self.local.add(r.id, dev_id, p.time, seq, fp)
        row = _batch_row(p, seq, dev_id)
        self.rows.append(row)
        self.by_id[r.id] = row
        self.plan.feed_changed = True
        return IngestResult(
            record_id=r.id,
            stored=True,
            development_id=dev_id,
            reason=decision.reason,
            score=decision.score,
            topics=p.topics,
            matched_record_id=decision.matched_record_id,
        )

    def _unmatched(self, p: Prepared) -> IngestResult:
        """A record that matches no topic: stored (its entry is known, ``check-config
        --dry-run`` sees it) in no development, since no feed could show one."""
        r = p.record
        seq = self.next_seq
        self.next_seq += 1
        self.plan.records.append(NewRecord(p, seq, None, DedupReason.NO_TOPIC, 0.0, None))
        row = _batch_row(p, seq, None)
        self.rows.append(row)
        self.by_id[r.id] = row
        return IngestResult(r.id, True, None, DedupReason.NO_TOPIC, 0.0, ())

    def _new_development_id(self, record_id: str) -> str:
        for attempt in range(100):
            dev_id = development_id_for(record_id, "" if attempt == 0 else str(attempt))
            if dev_id not in self.taken and dev_id not in self.new_devs:
                self.taken.add(dev_id)
                return dev_id
        raise ValueError(f"cannot derive a free development id for record {record_id}")

    # --- developments -----------------------------------------------------------------------

    def _choose(self, members: Sequence[Member]) -> Member:
        return choose_representative(members, self.ingest.representative_members, self.window.vocab)

    def _member(self, new: NewRecord) -> Member:
        p = new.prepared
        packed = self.local.packed(p.record.id)
        return Member(p.time, new.seq_hint, p.record.id, p.record.title, packed)

    def _refresh(self, dev_id: str, texts: Mapping[str, str]) -> DevelopmentWrite:
        """A stored development after the batch: ``updated`` moved forward; representative,
        title and summary when its latest members choose another; topics it did not have."""
        joined = self.joined.get(dev_id, [])
        write = DevelopmentWrite(id=dev_id, created=False, updated=self.now)
        state = self.window.developments.get(dev_id)
        if state is None:
            if joined:  # joined through a candidate of the window, which holds its state
                raise AssertionError(f"development {dev_id} joined but not in the window")
            return write  # an alias of an older development: its members did not change
        chosen = self._choose(state.members + [self._member(n) for n in joined])
        if chosen.record_id != state.representative_id or not state.title:
            write = replace(
                write,
                representative_id=chosen.record_id,
                title=chosen.title,
                summary=summary_of(texts[chosen.record_id]) if chosen.record_id in texts else None,
            )
        added = {t for n in joined for t in n.prepared.topics} - state.topics
        return replace(write, topics=tuple(sorted(added)))

    def finish(self) -> Plan:
        texts = {n.prepared.record.id: n.prepared.record.text for n in self.plan.records}
        for dev_id, members in self.new_devs.items():
            chosen = self._choose([self._member(n) for n in members])
            first_seen = members[0].prepared.time
            self.plan.developments.append(
                DevelopmentWrite(
                    id=dev_id,
                    created=True,
                    updated=max(first_seen, self.now),
                    first_seen=first_seen,
                    representative_id=chosen.record_id,
                    title=chosen.title,
                    summary=summary_of(texts[chosen.record_id]),
                    topics=tuple(sorted({t for n in members for t in n.prepared.topics})),
                )
            )
        for dev_id in sorted(self.touched | set(self.joined)):
            self.plan.developments.append(self._refresh(dev_id, texts))
        return self.plan


def choose_representative(members: Sequence[Member], latest: int, vocab: Vocabulary) -> Member:
    """A development's representative (its title and summary) among its ``latest`` members
    (oldest first: ties go to the first report), by their packed fingerprints (term ids of
    ``vocab``); members without one are left out."""
    last = sorted(members, key=lambda m: (m.time, m.seq))[-latest:]
    held = [m for m in last if m.packed is not None]
    if not held:
        return last[0]
    return held[packed_representative([m.packed for m in held if m.packed is not None], vocab)]


def refresh_stored(
    dev: StoredDevelopment, now: datetime, ingest: IngestOptions
) -> DevelopmentWrite:
    """A stored development after an admin moved records in or out (split, merge): ``updated``
    moves forward to ``now``; representative, title and summary (left to the representative's
    stored text) when its latest members choose another or it has no title yet."""
    vocab = Vocabulary()
    members = [
        Member(m.time, m.seq, m.record_id, m.title, pack_stored(m.fingerprint_json, vocab))
        for m in dev.members
    ]
    write = DevelopmentWrite(id=dev.id, created=False, updated=now)
    if not members:
        return write
    chosen = choose_representative(members, ingest.representative_members, vocab)
    if chosen.record_id != dev.representative_id or not dev.title:
        write = replace(write, representative_id=chosen.record_id, title=chosen.title)
    return write


def decide(
    window: Window,
    batch: Sequence[Prepared],
    stored: StoredExact,
    options: DedupOptions,
    ingest: IngestOptions,
    now: datetime,
) -> Plan:
    """The plan for ``batch`` (in order), as sequential ingests of its records would decide."""
    planner = _Planner(window, stored, options, ingest, now)
    for p in batch:
        planner.plan.results.append(planner.add(p))
    return planner.finish()


def apply_to_window(window: Window, plan: Plan, seqs: Mapping[str, int]) -> None:
    """Hold what a written ``plan`` stored (``seqs``: each new record's insertion number)."""
    by_dev: dict[str, list[NewRecord]] = {}
    for new in plan.records:
        p = new.prepared
        if new.development_id is None or p.fingerprint is None:
            continue  # in no development: never a candidate
        seq = seqs.get(p.record.id, new.seq_hint)
        made = plan.packed.get(p.record.id) if plan.packed_for is window.vocab else None
        packed = window.add(
            p.record.id, new.development_id, p.time, seq, p.fingerprint, packed=made
        )
        by_dev.setdefault(new.development_id, []).append(new)
        state = window.developments.get(new.development_id)
        if state is None:
            state = window.developments[new.development_id] = DevState(
                new.development_id, p.record.id, p.record.title
            )
        state.members.append(Member(p.time, seq, p.record.id, p.record.title, packed))
        state.members.sort(key=lambda m: (m.time, m.seq))
        del state.members[: -window.options.representative_members]
    for write in plan.developments:
        state = window.developments.get(write.id)
        if state is None:
            continue
        if write.representative_id is not None:
            state.representative_id = write.representative_id
            state.title = write.title or ""
        if write.topics:
            state.topics = state.topics | frozenset(write.topics)


def with_summaries(plan: Plan, texts: Mapping[str, str]) -> Plan:
    """``plan`` with the summaries it leaves to the representatives' stored ``texts``."""
    plan.developments = [
        replace(w, summary=summary_of(texts.get(w.representative_id, "")))
        if w.representative_id is not None and w.summary is None
        else w
        for w in plan.developments
    ]
    return plan
