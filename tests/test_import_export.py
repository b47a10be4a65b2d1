"""aggregator import / export: idempotent import, index.jsonl metadata, byte-identical round
trip, and clear errors that store nothing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from aggregator.cli import main
from aggregator.store import open_store
from aggregator.store.transfer import INDEX_FIELDS

WATCHLIST = """\
version: 1
topics:
  - id: border
    title: Belarus-Lithuania border
    rules:
      any: ["Lithuania*", "Belarus*"]
  - id: balloons
    title: Balloons
    rules:
      any: ["balloon*"]
sources:
  - id: lrt
    title: LRT English
    url: https://www.lrt.lt/en/news-in-english?rss
    topics: [balloons]
"""


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "watchlist.yaml"
    path.write_text(WATCHLIST, encoding="utf-8")
    return path


def cli(db_url: str, config: Path, *args: str) -> int:
    return main(["--db", db_url, "--config", str(config), *args])


def files_of(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def seeds_with_index(tmp_path: Path, seeds_dir: Path) -> Path:
    """The seeds plus an index.jsonl giving metadata to some of them."""
    folder = tmp_path / "in"
    shutil.copytree(seeds_dir, folder)
    lines = [
        {
            "id": "07a80486fecd5005",
            "url": "https://Example.org/lt-belarus?utm_source=x#top",
            "title": "Lithuania says no to talks",
            "source": "lrt",
            "published": "2025-10-28T09:15:00+02:00",
            "language": "en",
            "author": "Desk",
            "guid": "lrt-123",
        },
        {"file": "002_82eb77dd3730aaf9.txt", "published": "2025-10-28T07:00:00Z"},
        {"id": "ffffffffffffffff", "title": "metadata of a file not imported"},
    ]
    (folder / "index.jsonl").write_text(
        "".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8"
    )
    return folder


def test_import_is_idempotent_and_reports(
    db_url: str, config: Path, seeds_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli(db_url, config, "import", str(seeds_dir)) == 0
    out = capsys.readouterr().out
    assert "imported 5 of 5 records (0 duplicates)" in out
    assert cli(db_url, config, "import", str(seeds_dir)) == 0
    assert "imported 0 of 5 records (5 duplicates)" in capsys.readouterr().out
    # Single files work too, and are duplicates as well.
    one = next(seeds_dir.glob("003_*.txt"))
    assert cli(db_url, config, "import", str(one)) == 0
    assert "imported 0 of 1 record (1 duplicate)" in capsys.readouterr().out
    with open_store(db_url) as store:
        assert store.count_records() == 5
        assert [r.id for r in store.iter_records()] == [
            p.name[4:20] for p in sorted(seeds_dir.glob("*.txt"))
        ]
        for path in seeds_dir.glob("*.txt"):
            rec = store.get_record(path.name[4:20])
            assert rec is not None and rec.text.encode("utf-8") == path.read_bytes()


def test_index_metadata_is_applied(
    db_url: str, config: Path, seeds_dir: Path, tmp_path: Path
) -> None:
    folder = seeds_with_index(tmp_path, seeds_dir)
    assert cli(db_url, config, "import", str(folder)) == 0
    with open_store(db_url) as store:
        rec = store.get_record("07a80486fecd5005")
        assert rec is not None
        assert rec.title == "Lithuania says no to talks"
        assert rec.url == "https://Example.org/lt-belarus?utm_source=x#top"
        assert rec.canonical_url == "https://example.org/lt-belarus"
        assert rec.source_id == "lrt" and rec.guid == "lrt-123"
        assert rec.language == "en" and rec.author == "Desk"
        assert (
            rec.published is not None and rec.published.isoformat() == "2025-10-28T07:15:00+00:00"
        )
        # The source's topics limit matching, as for a fetched record.
        assert "border" not in {m.topic_id for m in store.record_topics(rec.id)}
        other = store.get_record("82eb77dd3730aaf9")
        assert other is not None and other.published is not None
        assert other.published.isoformat() == "2025-10-28T07:00:00+00:00"
        assert {m.topic_id for m in store.record_topics(other.id)} == {"border", "balloons"}
        # No metadata: title from the text, fetched = import time.
        bare = store.get_record("2cb5b01ce5caf802")
        assert bare is not None and bare.url is None and bare.fetched is not None
        assert bare.title == "Lithuania Refuses Border Talks with Belarus Amid Ongoing Tensions"


def test_export_import_export_is_byte_identical(
    db_url: str, config: Path, seeds_dir: Path, tmp_path: Path
) -> None:
    folder = seeds_with_index(tmp_path, seeds_dir)
    assert cli(db_url, config, "import", str(folder)) == 0
    first, second = tmp_path / "export1", tmp_path / "export2"
    assert cli(db_url, config, "export", str(first)) == 0
    exported = files_of(first)
    assert len(exported) == 7 and {"index.jsonl", "developments.jsonl"} <= set(exported)
    for path in seeds_dir.glob("*.txt"):  # record texts are exact
        assert exported[path.name] == path.read_bytes()
    lines = [json.loads(x) for x in exported["index.jsonl"].decode().splitlines()]
    assert [tuple(line) for line in lines] == [INDEX_FIELDS] * 5
    # Into an empty store (SQLite, whatever the first store was), then out again.
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    assert cli(empty, config, "import", str(first)) == 0
    assert cli(empty, config, "export", str(second)) == 0
    assert files_of(second) == exported


def test_export_refuses_to_mix_with_an_earlier_export(
    db_url: str, config: Path, seeds_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert cli(db_url, config, "import", str(seeds_dir)) == 0
    assert cli(db_url, config, "export", str(out)) == 0
    (out / "999_0123456789abcdef.txt").write_text("stale\n", encoding="utf-8")
    assert cli(db_url, config, "export", str(out)) == 1
    assert "--replace" in capsys.readouterr().err
    assert cli(db_url, config, "export", str(out), "--replace") == 0
    assert not (out / "999_0123456789abcdef.txt").exists()
    assert len(list(out.glob("*.txt"))) == 5


def test_bad_input_is_reported_and_nothing_is_stored(
    db_url: str, config: Path, seeds_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "bad"
    shutil.copytree(seeds_dir, folder)
    (folder / "index.jsonl").write_text(
        '{"id": "07a80486fecd5005", "published": "yesterday"}\n'
        "not json\n"
        '{"id": "64a0d5eb396560f9", "title": 42}\n',
        encoding="utf-8",
    )
    (folder / "005_00000000000000ff.txt").write_bytes(b"caf\xe9 latin-1\n")
    bad_name = tmp_path / "notes.txt"
    bad_name.write_text("hello\n", encoding="utf-8")
    assert cli(db_url, config, "import", str(folder), str(bad_name), str(tmp_path / "nope")) == 1
    err = capsys.readouterr().err
    assert "index.jsonl:1: published: not an ISO 8601 time" in err
    assert "index.jsonl:2: not JSON" in err
    assert "index.jsonl:3: title must be a string" in err
    assert "005_00000000000000ff.txt: not UTF-8" in err
    assert "notes.txt: not a record file name" in err
    assert "nope: no such file or folder" in err
    with open_store(db_url) as store:
        assert store.count_records() == 0


def test_unknown_index_fields_are_ignored_with_a_warning(
    db_url: str, config: Path, seeds_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "in"
    shutil.copytree(seeds_dir, folder)
    (folder / "index.jsonl").write_text(
        '{"id": "07a80486fecd5005", "category": "politics"}\n', encoding="utf-8"
    )
    (folder / "README.txt").write_text("not a record\n", encoding="utf-8")
    assert cli(db_url, config, "import", str(folder)) == 0
    captured = capsys.readouterr()
    assert "ignored unknown field(s) category" in captured.err
    assert "README.txt" in captured.err
    assert "imported 5 of 5" in captured.out
