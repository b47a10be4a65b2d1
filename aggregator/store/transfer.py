"""Record files in and out: the seed format folders ``aggregator import`` reads and
``aggregator export`` writes.

A folder holds one ``NNN_<id>.txt`` file per record (the record text, byte for byte) and
optionally ``index.jsonl``: one JSON object per line with the metadata of one record, keyed by
``id`` (or ``file``). Export writes every field; import accepts any subset, so a folder of bare
text files imports too. Export, import into an empty store and export again gives identical
files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from aggregator import dedup, records
from aggregator.errors import RecordFormatError
from aggregator.model import Record
from aggregator.store.core import Store

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
    canonical = strings["canonical_url"] or (dedup.canonical_url(url) if url else None)
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
        headline_key=dedup.headline_key(outlet_url or canonical, title) if canonical else None,
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
        if child.name == INDEX_NAME:
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
    """Write every record as ``NNN_<id>.txt`` (insertion order) and ``index.jsonl``; returns
    the number of records written (``on_record(n)`` is told after each).

    A folder that holds an earlier export is refused unless ``replace`` (its record files and
    index are then removed first, so no stale record is left behind). ``index.jsonl`` appears
    last: a folder without one is an export that did not finish (a full disk, say).
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
        tmp_index.replace(out / INDEX_NAME)
    finally:
        tmp_index.unlink(missing_ok=True)
    return count
