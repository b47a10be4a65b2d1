"""Record files in and out: the seed format folders ``aggregator import`` reads and
``aggregator export`` writes.

A folder holds one ``NNN_<id>.txt`` file per record (the record text, byte for byte) and
optionally ``index.jsonl``: one JSON object per line with the metadata of one record, keyed by
``id`` (or ``file``). Export writes every field; import accepts any subset, so a folder of bare
text files imports too. Export also writes ``developments.jsonl``: which development each record
belongs to and why (dedup's decision or an admin's split or merge), the ids merged into others,
each development's times and the other places each record was published; import puts that back
after the records went through ingest. Export, import into an empty store and export again gives
identical files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from aggregator import identity, records
from aggregator.errors import RecordFormatError
from aggregator.model import Record
from aggregator.store import schema as t
from aggregator.store.core import Store
from aggregator.store.tx import WriteTx

INDEX_NAME = "index.jsonl"
# The fields of an index line, in the order export writes them.
INDEX_FIELDS = (
    "id",
    "file",
    "title",
    "url",
    "canonical_url",
    "guid",
    "source",
    "published",
    "fetched",
    "language",
    "author",
    "content_hash",
    "outlet",
    "outlet_url",
)
_ACCEPTED = frozenset(INDEX_FIELDS) | {"source_id"}


class ImportProblems(RecordFormatError):
    """Import input is invalid; ``problems`` lists every one as ``path[:line]: message``."""

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = list(problems)
        super().__init__("cannot import:\n" + "\n".join(f"  {p}" for p in self.problems))


@dataclass(frozen=True, slots=True)
class ImportItem:
    """One record read from a file, with where it came from."""

    path: Path
    record: Record


@dataclass(slots=True)
class ImportBatch:
    items: list[ImportItem] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)  # files in folders that are not records
    warnings: list[str] = field(default_factory=list)  # e.g. index fields this version ignores


# --------------------------------------------------------------------------------------------
# import
# --------------------------------------------------------------------------------------------


def read_import(paths: Sequence[Path], *, now: datetime) -> ImportBatch:
    """Read every record file under ``paths`` (files or folders) with its index metadata.

    All input is checked before anything is returned: any problem (unreadable file, bad file
    name, invalid UTF-8, bad index line) raises ``ImportProblems`` listing every problem, so a
    bad import stores nothing. Records with neither ``published`` nor ``fetched`` get
    ``fetched = now``.
    """
    batch = ImportBatch()
    problems: list[str] = []
    files: list[tuple[Path, int, str]] = []
    for path in paths:
        if path.is_dir():
            for child in sorted(path.iterdir()):
                if child.suffix != ".txt" or not child.is_file():
                    continue
                try:
                    index, rid = records.parse_filename(child.name)
                except RecordFormatError:
                    batch.skipped.append(str(child))
                    continue
                files.append((child, index, rid))
        elif path.is_file():
            try:
                index, rid = records.parse_filename(path.name)
            except RecordFormatError as exc:
                problems.append(f"{path}: {exc}")
                continue
            files.append((path, index, rid))
        else:
            problems.append(f"{path}: no such file or folder")
    indexes: dict[Path, dict[str, tuple[int, dict[str, Any]]]] = {}
    for parent in dict.fromkeys(p.parent for p, _, _ in files):
        indexes[parent] = _read_index(parent / INDEX_NAME, problems, batch.warnings)
    # Folder order as given, then file number: the order the records were stored in.
    order = {parent: i for i, parent in enumerate(indexes)}
    files.sort(key=lambda f: (order[f[0].parent], f[1], f[0].name))
    for path, _, rid in files:
        line, meta = indexes[path.parent].get(rid, (0, {}))
        where = f"{path.parent / INDEX_NAME}:{line}" if line else str(path)
        record = _record_from_file(path, rid, meta, where, now, problems)
        if record is not None:
            batch.items.append(ImportItem(path=path, record=record))
    if problems:
        raise ImportProblems(problems)
    return batch


def _read_index(
    path: Path, problems: list[str], warnings: list[str]
) -> dict[str, tuple[int, dict[str, Any]]]:
    """``index.jsonl`` as {record id: (line number, fields)}; {} when there is none."""
    if not path.is_file():
        return {}
    out: dict[str, tuple[int, dict[str, Any]]] = {}
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        problems.append(f"{path}: cannot read: {exc}")
        return {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            entry = json.loads(line)
        except json.JSONDecodeError as exc:
            problems.append(f"{path}:{number}: not JSON: {exc.msg}")
            continue
        if not isinstance(entry, dict):
            problems.append(f"{path}:{number}: expected a JSON object")
            continue
        rid = entry.get("id")
        if rid is None and isinstance(entry.get("file"), str):
            try:
                rid = records.parse_filename(entry["file"])[1]
            except RecordFormatError as exc:
                problems.append(f"{path}:{number}: {exc}")
                continue
        if not isinstance(rid, str):
            problems.append(f'{path}:{number}: needs an "id" (or "file")')
            continue
        unknown = sorted(set(entry) - _ACCEPTED)
        if unknown:
            warnings.append(f"{path}:{number}: ignored unknown field(s) {', '.join(unknown)}")
        if rid in out:
            problems.append(f"{path}:{number}: id {rid} already described on line {out[rid][0]}")
            continue
        out[rid] = (number, entry)
    return out


def _record_from_file(
    path: Path,
    rid: str,
    meta: dict[str, Any],
    where: str,
    now: datetime,
    problems: list[str],
) -> Record | None:
    try:
        text = path.read_bytes().decode("utf-8")
    except OSError as exc:
        problems.append(f"{path}: cannot read: {exc}")
        return None
    except UnicodeDecodeError as exc:
        problems.append(f"{path}: not UTF-8 text: {exc}")
        return None
    if "\x00" in text:
        problems.append(f"{path}: contains NUL characters; not a record text")
        return None
    if not text.strip():
        problems.append(f"{path}: empty record")
        return None
    before = len(problems)
    strings = {k: _string(meta, k, where, problems) for k in _ACCEPTED - {"published", "fetched"}}
    published = _time(meta, "published", where, problems)
    fetched = _time(meta, "fetched", where, problems)
    if strings["id"] is not None and strings["id"] != rid:
        problems.append(f"{where}: id {strings['id']} does not match the file name {path.name}")
    if len(problems) > before:
        return None
    try:
        doc = records.parse(text)
    except RecordFormatError as exc:
        problems.append(f"{path}: {exc}")
        return None
    url = strings["url"]
    canonical = strings["canonical_url"] or (identity.canonical_url(url) if url else None)
    if published is None and fetched is None:
        fetched = now
    title = strings["title"] or records.title_of(doc)
    outlet_url = strings["outlet_url"]
    return Record(
        id=rid,
        text=text,
        title=title,
        content_hash=records.content_hash(text),
        url=url,
        canonical_url=canonical,
        guid=strings["guid"],
        source_id=strings["source"] or strings["source_id"],
        published=published,
        fetched=fetched,
        language=strings["language"],
        author=strings["author"],
        outlet=strings["outlet"],
        outlet_url=outlet_url,
        headline_key=identity.headline_key(outlet_url or canonical, title) if canonical else None,
    )


def _string(meta: dict[str, Any], key: str, where: str, problems: list[str]) -> str | None:
    value = meta.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        problems.append(f"{where}: {key} must be a string, got {json.dumps(value)}")
        return None
    return value or None


def _time(meta: dict[str, Any], key: str, where: str, problems: list[str]) -> datetime | None:
    value = meta.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        problems.append(f"{where}: {key} must be an ISO 8601 time string")
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        problems.append(f"{where}: {key}: not an ISO 8601 time: {value!r}")
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


# --------------------------------------------------------------------------------------------
# export
# --------------------------------------------------------------------------------------------


def index_entry(record: Record, filename: str) -> dict[str, Any]:
    """The index line of a record: every metadata field, in INDEX_FIELDS order."""
    return {
        "id": record.id,
        "file": filename,
        "title": record.title,
        "url": record.url,
        "canonical_url": record.canonical_url,
        "guid": record.guid,
        "source": record.source_id,
        "published": _iso(record.published),
        "fetched": _iso(record.fetched),
        "language": record.language,
        "author": record.author,
        "content_hash": record.content_hash,
        "outlet": record.outlet,
        "outlet_url": record.outlet_url,
    }


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def _existing_export_files(out: Path) -> Iterator[Path]:
    for child in out.iterdir():
        if child.name in (INDEX_NAME, DEVELOPMENTS_NAME):
            yield child
        elif child.suffix == ".txt":
            try:
                records.parse_filename(child.name)
            except RecordFormatError:
                continue
            yield child


def export_dir(
    store: Store,
    out: Path,
    *,
    replace: bool = False,
    on_record: Callable[[int], None] | None = None,
) -> int:
    """Write every record as ``NNN_<id>.txt`` (insertion order), ``developments.jsonl`` (the
    grouping, the admin's corrections, the other places each record was published: see
    ``export_developments``) and ``index.jsonl``; returns the number of records written
    (``on_record(n)`` is told after each).

    A folder that holds an earlier export is refused unless ``replace`` (its files are then
    removed first, so no stale record is left behind). ``index.jsonl`` appears last: a folder
    without one is an export that did not finish (a full disk, say).
    """
    if out.exists() and not out.is_dir():
        raise RecordFormatError(f"{out} is a file, not a folder: give a folder to export into")
    out.mkdir(parents=True, exist_ok=True)
    old = list(_existing_export_files(out))
    if old and not replace:
        raise RecordFormatError(
            f"{out} already holds record files or {INDEX_NAME}; use --replace to overwrite"
        )
    for path in old:
        path.unlink()
    count = 0
    tmp_index = out / f".{INDEX_NAME}.tmp"
    try:
        with tmp_index.open("w", encoding="utf-8", newline="\n") as index:
            for count, record in enumerate(store.iter_records(), start=1):
                name = records.record_filename(count - 1, record.id)
                (out / name).write_bytes(record.text.encode("utf-8"))
                index.write(json.dumps(index_entry(record, name), ensure_ascii=False) + "\n")
                if on_record is not None:
                    on_record(count)
            index.flush()
            os.fsync(index.fileno())
        export_developments(store, out / DEVELOPMENTS_NAME)
        tmp_index.replace(out / INDEX_NAME)
    finally:
        tmp_index.unlink(missing_ok=True)
    return count


# --------------------------------------------------------------------------------------------
# developments: the grouping, the admin's corrections, the other places a record was published
# --------------------------------------------------------------------------------------------

DEVELOPMENTS_NAME = "developments.jsonl"


@dataclass(frozen=True, slots=True)
class MemberEntry:
    """One record's place in a development, as the export carries it."""

    record_id: str
    reason: str
    score: float
    matched_record_id: str | None
    manual: bool
    joined: datetime
    aliases: tuple[dict[str, Any], ...] = ()  # other sources' copies: source, url, guid, ...


@dataclass(frozen=True, slots=True)
class DevelopmentEntry:
    """One line of ``developments.jsonl``: a development with its members, or (``merged_into``
    set, no members) an id an admin merged into another."""

    id: str
    first_seen: datetime
    updated: datetime
    members: tuple[MemberEntry, ...] = ()
    merged_into: str | None = None


@dataclass(slots=True)
class RestoreSummary:
    """What ``restore_developments`` changed."""

    moved: int = 0  # records put back into the development the export had them in
    kept_manual: int = 0  # records left where an admin of this store placed them
    merged: int = 0  # merged ids that resolve again
    aliases: int = 0  # other places of publication added
    times: int = 0  # developments whose first-seen and updated times were restored


def _alias_json(row: Any) -> dict[str, Any]:
    return {
        "source": row.source_id,
        "url": row.url,
        "guid": row.guid,
        "published": _iso(row.published),
        "seen": _iso(row.seen),
    }


def export_developments(store: Store, path: Path) -> int:
    """Write ``developments.jsonl``: every development (oldest first) with each member's
    decision (reason, score, matched record, manual, joined) and the member's other places of
    publication, then every merged id with the id it resolves to. Returns the lines written."""
    d, m, a = t.developments, t.memberships, t.record_aliases
    with store.engine.connect() as conn:
        devs = conn.execute(
            sa.select(d.c.id, d.c.first_seen, d.c.updated, d.c.merged_into).order_by(
                d.c.merged_into.is_not(None), d.c.first_seen, d.c.id
            )
        ).all()
        members: dict[str, list[Any]] = {}
        query = sa.select(m).join(t.records, t.records.c.id == m.c.record_id)
        for row in conn.execute(query.order_by(t.records.c.seq)):
            members.setdefault(row.development_id, []).append(row)
        aliases: dict[str, list[dict[str, Any]]] = {}
        for row in conn.execute(sa.select(a).order_by(a.c.id)):
            aliases.setdefault(row.record_id, []).append(_alias_json(row))
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with tmp.open("w", encoding="utf-8", newline="\n") as out:
            for dev in devs:
                entry: dict[str, Any] = {
                    "id": dev.id,
                    "first_seen": _iso(dev.first_seen),
                    "updated": _iso(dev.updated),
                }
                if dev.merged_into is not None:
                    entry["merged_into"] = dev.merged_into
                else:
                    entry["members"] = [
                        {
                            "record": row.record_id,
                            "reason": row.reason,
                            "score": row.score,
                            "matched": row.matched_record_id,
                            "manual": bool(row.manual),
                            "joined": _iso(row.joined),
                            "aliases": aliases.get(row.record_id, []),
                        }
                        for row in members.get(dev.id, [])
                    ]
                out.write(json.dumps(entry, ensure_ascii=False) + "\n")
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    finally:
        tmp.unlink(missing_ok=True)
    return len(devs)


def read_developments(paths: Sequence[Path]) -> list[DevelopmentEntry]:
    """The ``developments.jsonl`` of every folder in ``paths`` (none: []), all checked first:
    any problem raises ``ImportProblems`` listing each as ``path:line: message``."""
    entries: list[DevelopmentEntry] = []
    problems: list[str] = []
    for folder in paths:
        path = folder / DEVELOPMENTS_NAME
        if not folder.is_dir() or not path.is_file():
            continue
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            problems.append(f"{path}: cannot read: {exc}")
            continue
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            where = f"{path}:{number}"
            try:
                entry = _development_entry(json.loads(line), where, problems)
            except json.JSONDecodeError as exc:
                problems.append(f"{where}: not JSON: {exc.msg}")
                continue
            if entry is not None:
                entries.append(entry)
    if problems:
        raise ImportProblems(problems)
    return entries


def _development_entry(data: Any, where: str, problems: list[str]) -> DevelopmentEntry | None:
    if not isinstance(data, dict):
        problems.append(f"{where}: expected a JSON object")
        return None
    before = len(problems)
    dev_id = data.get("id")
    if not isinstance(dev_id, str) or not dev_id:
        problems.append(f'{where}: needs an "id"')
    first_seen = _time(data, "first_seen", where, problems)
    updated = _time(data, "updated", where, problems)
    if first_seen is None or updated is None:
        problems.append(f"{where}: needs first_seen and updated times")
    merged_into = data.get("merged_into")
    if merged_into is not None and not isinstance(merged_into, str):
        problems.append(f"{where}: merged_into must be a development id")
    members: list[MemberEntry] = []
    raw_members = data.get("members", [])
    if not isinstance(raw_members, list):
        problems.append(f"{where}: members must be a list")
        raw_members = []
    for raw in raw_members:
        member = _member_entry(raw, where, problems)
        if member is not None:
            members.append(member)
    if len(problems) > before or first_seen is None or updated is None:
        return None
    return DevelopmentEntry(
        id=str(dev_id),
        first_seen=first_seen,
        updated=updated,
        members=tuple(members),
        merged_into=merged_into,
    )


def _member_entry(raw: Any, where: str, problems: list[str]) -> MemberEntry | None:
    if not isinstance(raw, dict) or not isinstance(raw.get("record"), str):
        problems.append(f'{where}: each member needs a "record" id')
        return None
    joined = _time(raw, "joined", where, problems)
    score = raw.get("score", 1.0)
    if not isinstance(score, int | float) or isinstance(score, bool):
        problems.append(f"{where}: score of {raw['record']} must be a number")
        return None
    aliases = raw.get("aliases", [])
    if not isinstance(aliases, list) or not all(isinstance(x, dict) for x in aliases):
        problems.append(f"{where}: aliases of {raw['record']} must be a list of objects")
        return None
    for alias in aliases:
        for key in ("published", "seen"):
            _time(alias, key, where, problems)
    matched = raw.get("matched")
    return MemberEntry(
        record_id=raw["record"],
        reason=str(raw.get("reason") or "manual"),
        score=float(score),
        matched_record_id=matched if isinstance(matched, str) else None,
        manual=bool(raw.get("manual", False)),
        joined=joined or datetime.fromtimestamp(0, UTC),
        aliases=tuple(aliases),
    )


# Refreshes developments records moved in or out of, in the caller's transaction (their
# representative, title, summary and topics: ``ingest_driver.refresh_developments``).
Refresh = Callable[[WriteTx, Sequence[str], datetime], None]


def restore_developments(
    store: Store, entries: Sequence[DevelopmentEntry], now: datetime, refresh: Refresh
) -> RestoreSummary:
    """Put the imported records back into the developments the export had them in, with the
    decision behind each (so an admin's splits and merges survive), make merged ids resolve
    again, add the other places each record was published, and give back each development's
    first-seen and updated times when it holds exactly the records it held at export.

    Records already placed by an admin of this store (manual) stay where they are. Runs after
    the records were imported (each went through ingest: topics, fingerprints, dedup), in one
    transaction.
    """
    summary = RestoreSummary()
    if not entries:
        return summary
    d, m = t.developments, t.memberships
    with store.write() as tx:
        conn = tx.conn
        exists = {
            row.id: row.merged_into for row in conn.execute(sa.select(d.c.id, d.c.merged_into))
        }
        current = {
            row.record_id: (row.development_id, bool(row.manual))
            for row in conn.execute(sa.select(m.c.record_id, m.c.development_id, m.c.manual))
        }
        touched: set[str] = set()
        live = [e for e in entries if e.merged_into is None]
        for entry in live:
            here = [mem for mem in entry.members if mem.record_id in current]
            if not here:
                continue  # none of its records is in this store
            if entry.id not in exists:
                conn.execute(
                    sa.insert(d).values(
                        id=entry.id,
                        title="",
                        summary="",
                        first_seen=entry.first_seen,
                        updated=entry.updated,
                        representative_id=here[0].record_id,
                    )
                )
                exists[entry.id] = None
                touched.add(entry.id)
            elif exists[entry.id] is not None:
                continue  # merged into another by an admin of this store: that stands
            for mem in here:
                dev_now, manual_now = current[mem.record_id]
                if manual_now and dev_now != entry.id and not mem.manual:
                    summary.kept_manual += 1
                    continue
                conn.execute(
                    sa.update(m)
                    .where(m.c.record_id == mem.record_id)
                    .values(
                        development_id=entry.id,
                        reason=mem.reason,
                        score=mem.score,
                        matched_record_id=mem.matched_record_id,
                        manual=mem.manual,
                        joined=mem.joined,
                    )
                )
                if dev_now != entry.id:
                    summary.moved += 1
                    touched.update((dev_now, entry.id))
                current[mem.record_id] = (entry.id, mem.manual)
                summary.aliases += _restore_aliases(conn, mem)
        for entry in entries:
            if entry.merged_into is None or exists.get(entry.merged_into, "?") is not None:
                continue  # not a merged id, or its development is not (live) in this store
            if exists.get(entry.id, "?") == entry.merged_into:
                continue  # resolves there already
            keep = entry.merged_into
            if entry.id in exists:
                # Records this store had grouped under the merged id follow it, as in a merge.
                representative = conn.execute(
                    sa.select(d.c.representative_id).where(d.c.id == keep)
                ).scalar_one_or_none()
                conn.execute(
                    sa.update(m)
                    .where(m.c.development_id == entry.id)
                    .values(
                        development_id=keep,
                        reason="manual",
                        score=1.0,
                        matched_record_id=representative,
                        manual=True,
                        joined=now,
                    )
                )
                conn.execute(
                    sa.update(d)
                    .where(sa.or_(d.c.id == entry.id, d.c.merged_into == entry.id))
                    .values(merged_into=keep)
                )
                conn.execute(
                    sa.update(d)
                    .where(d.c.id == entry.id)
                    .values(first_seen=entry.first_seen, updated=entry.updated)
                )
                conn.execute(
                    sa.delete(t.development_topics).where(
                        t.development_topics.c.development_id == entry.id
                    )
                )
                touched.discard(entry.id)
            else:
                conn.execute(
                    sa.insert(d).values(
                        id=entry.id,
                        title="",
                        summary="",
                        first_seen=entry.first_seen,
                        updated=entry.updated,
                        merged_into=keep,
                    )
                )
            exists[entry.id] = keep
            touched.add(keep)
            summary.merged += 1
        # Deletes one left without members; the store does not choose representatives.
        refresh(tx, sorted(d for d in touched if exists.get(d) is None), now)
        members_now: dict[str, set[str]] = {}
        for record_id, (dev_id, _) in current.items():
            members_now.setdefault(dev_id, set()).add(record_id)
        for entry in live:
            wanted = {mem.record_id for mem in entry.members}
            if wanted and members_now.get(entry.id) == wanted:
                result = conn.execute(
                    sa.update(d)
                    .where(
                        d.c.id == entry.id,
                        sa.or_(d.c.first_seen != entry.first_seen, d.c.updated != entry.updated),
                    )
                    .values(first_seen=entry.first_seen, updated=entry.updated)
                )
                summary.times += result.rowcount
        if touched or summary.aliases or summary.times:
            tx.bump_feed_version()
        if touched:
            tx.bump_layout_version()  # records moved outside ingest: windows rebuild
    return summary


def _restore_aliases(conn: Any, mem: MemberEntry) -> int:
    """Add the member's other places of publication this store does not know yet."""
    if not mem.aliases:
        return 0
    a = t.record_aliases
    known = {
        (row.source_id, row.url, row.guid)
        for row in conn.execute(
            sa.select(a.c.source_id, a.c.url, a.c.guid).where(a.c.record_id == mem.record_id)
        )
    }
    added = 0
    for alias in mem.aliases:
        key = (alias.get("source"), alias.get("url"), alias.get("guid"))
        if key in known:
            continue
        problems: list[str] = []
        conn.execute(
            sa.insert(a).values(
                record_id=mem.record_id,
                source_id=key[0],
                url=key[1],
                guid=key[2],
                published=_time(alias, "published", "", problems),
                seen=_time(alias, "seen", "", problems) or mem.joined,
            )
        )
        known.add(key)
        added += 1
    return added
