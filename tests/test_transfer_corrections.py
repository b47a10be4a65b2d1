"""Issue 23: an admin's splits and merges, the other places a record was published and each
development's times survive ``export`` -> ``import``, so a move from SQLite to PostgreSQL (or
back) loses nothing a feed shows. The source store is SQLite; the target is ``db_url`` (SQLite,
and PostgreSQL when it answers)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

from aggregator.cli import main
from aggregator.store import open_store
from aggregator.store.transfer import DEVELOPMENTS_NAME
from tests.conftest import ROOT, SEEDS

WATCHLIST = ROOT / "config" / "watchlist.yaml"


def cli(db_url: str, *args: str) -> int:
    return main(["--db", db_url, "--config", str(WATCHLIST), *args])


def developments(db_url: str, capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    capsys.readouterr()
    assert cli(db_url, "developments", "--json") == 0
    return json.loads(capsys.readouterr().out)  # type: ignore[no-any-return]


def _seeds_with_a_copy(tmp_path: Path) -> Path:
    """The seeds plus one exact copy of seed 000 published by another source at another URL:
    stored as another place of publication of that record (an alias), not as a record."""
    folder = tmp_path / "seeds"
    shutil.copytree(SEEDS, folder)
    original = next(folder.glob("000_*.txt"))
    copy = folder / "005_00000000000000aa.txt"
    copy.write_bytes(original.read_bytes())
    (folder / "index.jsonl").write_text(
        json.dumps(
            {
                "id": "00000000000000aa",
                "source": "belsat-en",
                "url": "https://example.org/a-copy",
                "guid": "copy-1",
                "published": "2026-11-17T12:00:00+00:00",
            }
        )
        + "\n"
    )
    return folder


@pytest.fixture
def corrected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[str, str, str, str]:
    """A SQLite store with the seeds, a split and a merge: (url, split record, kept id,
    merged id)."""
    url = f"sqlite:///{tmp_path / 'old.db'}"
    assert cli(url, "import", str(_seeds_with_a_copy(tmp_path))) == 0
    devs = developments(url, capsys)
    big = next(d for d in devs if len(d["records"]) >= 2)
    leaving = big["records"][-1]
    assert cli(url, "split", leaving) == 0
    devs = developments(url, capsys)
    keep, other = [d["id"] for d in devs if leaving not in d["records"]][:2]
    assert cli(url, "merge", keep, other) == 0
    return url, leaving, keep, other


def test_a_move_keeps_corrections_aliases_and_times(
    corrected: tuple[str, str, str, str],
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old, leaving, keep, other = corrected
    before = developments(old, capsys)
    assert any(len(d["sources"]) > len(d["records"]) for d in before), "the copy is an alias"
    out = tmp_path / "export"
    assert cli(old, "export", str(out)) == 0
    assert (out / DEVELOPMENTS_NAME).is_file()

    assert cli(db_url, "import", str(out)) == 0
    report = capsys.readouterr().out
    assert "put back in" in report and "1 merged id resolving again" in report
    after = developments(db_url, capsys)
    assert after == before  # ids, members and their decisions, sources, titles, times
    split = next(d for d in after if d["records"] == [leaving])
    assert split["members"][0]["reason"] == "manual"
    with open_store(db_url) as store:
        merged = store.get_development(other)
        assert merged is not None and merged.id == keep  # the merged id still resolves

    # The import is exact: exporting the new store gives the same files.
    again = tmp_path / "again"
    assert cli(db_url, "export", str(again)) == 0
    for path in sorted(out.iterdir()):
        assert (again / path.name).read_bytes() == path.read_bytes(), path.name

    # Importing the same folder again changes nothing.
    assert cli(db_url, "import", str(out)) == 0
    assert developments(db_url, capsys) == before


def test_corrections_of_the_target_store_stand(
    corrected: tuple[str, str, str, str],
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Records an admin of the importing store placed by hand stay where they were placed."""
    old, _leaving, _keep, _other = corrected
    assert cli(db_url, "import", str(SEEDS)) == 0
    devs = developments(db_url, capsys)
    big = next(d for d in devs if len(d["records"]) >= 2)
    mine = big["records"][0]
    assert cli(db_url, "split", mine) == 0
    placed = next(d["id"] for d in developments(db_url, capsys) if d["records"] == [mine])
    out = tmp_path / "export"
    assert cli(old, "export", str(out)) == 0
    assert cli(db_url, "import", str(out)) == 0
    now = {d["id"]: d["records"] for d in developments(db_url, capsys)}
    assert mine in now[placed]


def test_a_bad_developments_file_stores_nothing(
    corrected: tuple[str, str, str, str],
    db_url: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    old = corrected[0]
    out = tmp_path / "export"
    assert cli(old, "export", str(out)) == 0
    lines = (out / DEVELOPMENTS_NAME).read_text().splitlines()
    lines[1] = '{"id": "x", "first_seen": "yesterday"}'
    (out / DEVELOPMENTS_NAME).write_text("\n".join(lines) + "\n")
    capsys.readouterr()
    assert cli(db_url, "import", str(out)) == 1
    err = capsys.readouterr().err
    assert f"{DEVELOPMENTS_NAME}:2: first_seen: not an ISO 8601 time" in err
    with open_store(db_url) as store:
        assert store.count_records() == 0
