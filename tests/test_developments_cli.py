"""aggregator developments / split / merge / db upgrade, and the seeds acceptance test."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from aggregator.cli import main
from aggregator.store import open_store
from tests.conftest import ROOT

DEFAULT_WATCHLIST = ROOT / "config" / "watchlist.yaml"
SEED_IDS = {
    "000": "07a80486fecd5005",
    "001": "64a0d5eb396560f9",
    "002": "82eb77dd3730aaf9",
    "003": "2cb5b01ce5caf802",
    "004": "47a219e0a27cbb9e",
}


def cli(db_url: str, *args: str, config: Path = DEFAULT_WATCHLIST) -> int:
    return main(["--db", db_url, "--config", str(config), *args])


def developments_json(db_url: str, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    capsys.readouterr()
    assert cli(db_url, "developments", "--json", *args) == 0
    return json.loads(capsys.readouterr().out)


@pytest.fixture
def seeded(db_url: str, seeds_dir: Path, capsys: pytest.CaptureFixture[str]) -> str:
    assert cli(db_url, "import", str(seeds_dir)) == 0
    capsys.readouterr()
    return db_url


def test_seeds_form_three_developments(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    """Issue 5: 000, 001 and 003 report Lithuania's refusal of talks; 002 the national
    emergency over the balloons; 004 Lukashenko's pledge to stop them."""
    devs = developments_json(seeded, capsys)
    groups = {frozenset(d["records"]) for d in devs}
    assert groups == {
        frozenset({SEED_IDS["000"], SEED_IDS["001"], SEED_IDS["003"]}),
        frozenset({SEED_IDS["002"]}),
        frozenset({SEED_IDS["004"]}),
    }


def test_developments_json_shape(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    devs = developments_json(seeded, capsys)
    assert devs, "the seeds make developments"
    for dev in devs:
        for key in ("id", "title", "topics", "first_seen", "updated", "records", "sources"):
            assert key in dev
        assert dev["title"]
        assert len(dev["members"]) == len(dev["records"]) <= len(dev["sources"])
        for member in dev["members"]:
            assert member["reason"] in {
                "new",
                "same-url",
                "same-guid",
                "same-content",
                "same-headline",
                "near-duplicate",
                "same-event",
                "manual",
            }
            assert 0.0 <= member["score"] <= 1.0
        assert dev["members"][0]["reason"] == "new"
    updated = [d["updated"] for d in devs]
    assert updated == sorted(updated, reverse=True)  # newest first
    all_ids = [rid for d in devs for rid in d["records"]]
    assert sorted(all_ids) == sorted(SEED_IDS.values())


def test_topic_filter_and_text_output(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    everything = developments_json(seeded, capsys)
    topics = sorted({t for d in everything for t in d["topics"]})
    assert topics, "the default watchlist's topics match the seeds"
    for topic in topics:
        some = developments_json(seeded, capsys, "--topic", topic)
        assert some and all(topic in d["topics"] for d in some)
    # A topic the watchlist does not have is named as such (exit 2), not "no developments".
    assert cli(seeded, "developments", "--topic", "no-such-topic") == 2
    assert "unknown topic 'no-such-topic'" in capsys.readouterr().err
    assert cli(seeded, "developments") == 0
    text = capsys.readouterr().out
    for dev in everything:
        assert dev["id"] in text and dev["title"] in text


def test_merge_and_split_from_the_cli(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    devs = developments_json(seeded, capsys)
    if len(devs) < 2:  # whatever dedup decided, make two developments to merge
        assert cli(seeded, "split", devs[0]["records"][-1]) == 0
        devs = developments_json(seeded, capsys)
    keep, other = devs[0], devs[1]
    # Merge: the kept id survives (feed readers know it), the other disappears.
    assert cli(seeded, "merge", keep["id"], other["id"]) == 0
    assert f"merged development {other['id']} into {keep['id']}" in capsys.readouterr().out
    merged = {d["id"]: d for d in developments_json(seeded, capsys)}
    assert other["id"] not in merged
    assert set(merged[keep["id"]]["records"]) == set(keep["records"]) | set(other["records"])
    moved = {m["record_id"]: m["reason"] for m in merged[keep["id"]]["members"]}
    assert all(moved[r] == "manual" for r in other["records"])
    # Split one record out again: it gets a development of its own.
    leaving = other["records"][0]
    assert cli(seeded, "split", leaving) == 0
    assert f"record {leaving} moved from development {keep['id']}" in capsys.readouterr().out
    after = {d["id"]: d for d in developments_json(seeded, capsys)}
    assert leaving not in after[keep["id"]]["records"]
    (alone,) = [d for d in after.values() if d["records"] == [leaving]]
    assert alone["members"][0]["reason"] == "manual"
    # Re-importing the seeds changes nothing: manual decisions stand.
    assert cli(seeded, "import", str(ROOT / "seeds")) == 0
    again = {d["id"]: d["records"] for d in developments_json(seeded, capsys)}
    assert again == {k: v["records"] for k, v in after.items()}
    # Errors are clear: an unknown id exits 2, a refused correction 1.
    assert cli(seeded, "split", "0123456789abcdef") == 2
    assert "no record 0123456789abcdef" in capsys.readouterr().err
    assert cli(seeded, "split", leaving) == 1
    assert "only member" in capsys.readouterr().err
    assert cli(seeded, "merge", keep["id"], keep["id"]) == 1
    assert "same development" in capsys.readouterr().err
    assert cli(seeded, "merge", keep["id"], "nope") == 2
    assert "no development nope" in capsys.readouterr().err
    # A record id given to merge points to that record's development.
    assert cli(seeded, "merge", keep["id"], leaving) == 2
    err = capsys.readouterr().err
    assert f"{leaving} is a record, not a development" in err and alone["id"] in err
    # A development id given to split names its records.
    assert cli(seeded, "split", keep["id"]) == 2
    assert "is a development, not a record" in capsys.readouterr().err


def test_db_upgrade_and_current(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], db_url: str
) -> None:
    fresh = f"sqlite:///{tmp_path / 'new' / 'aggregator.db'}"
    assert cli(fresh, "db", "current") == 0
    assert capsys.readouterr().out.startswith("empty")
    assert cli(fresh, "db", "upgrade") == 0
    assert "database upgraded from empty to" in capsys.readouterr().out
    assert cli(fresh, "db", "upgrade") == 0
    assert "already at" in capsys.readouterr().out
    assert cli(fresh, "db", "current") == 0
    assert "(newest)" in capsys.readouterr().out
    # The db_url store (SQLite or PostgreSQL) upgrades the same way.
    assert cli(db_url, "db", "upgrade") == 0
    with open_store(db_url) as store:
        assert store.count_records() == 0


def test_db_prune(seeded: str, capsys: pytest.CaptureFixture[str]) -> None:
    assert cli(seeded, "db", "prune", "--days", "30") == 0
    assert "pruned 0 records" in capsys.readouterr().out  # imported just now
    assert cli(seeded, "db", "prune") == 0  # the default watchlist's retention
    assert "5 records remain" in capsys.readouterr().out
    assert cli(seeded, "db", "prune", "--days", "0") == 2
    assert "at least 1" in capsys.readouterr().err
