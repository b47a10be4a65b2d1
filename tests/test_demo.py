"""The README's commands on one machine, in any order: the offline demo keeps its own store
(data/demo.db) unless a database is chosen, so the real store's backoffs cannot make it fetch
nothing and it cannot fill the real feeds; the seeds group with their recorded retellings."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from aggregator.model import FailureClass, FetchState
from aggregator.settings import load_settings, sqlite_url
from aggregator.store import open_store

ROOT = Path(__file__).resolve().parent.parent


def test_the_demo_uses_its_own_store_unless_one_is_chosen(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AGGREGATOR_DATA_DIR", str(tmp_path))
    monkeypatch.delenv("AGGREGATOR_DB", raising=False)
    plain = load_settings()
    assert plain.db_url == sqlite_url(tmp_path)
    assert plain.for_demo().db_url == sqlite_url(tmp_path, "demo.db")
    chosen = load_settings(db_url="sqlite:///elsewhere.db")
    assert chosen.for_demo().db_url == "sqlite:///elsewhere.db"
    monkeypatch.setenv("AGGREGATOR_DB", "postgresql+psycopg://db/x")
    assert load_settings().for_demo().db_url == "postgresql+psycopg://db/x"


def _cli(data: Path, *args: str, timeout: float = 240) -> str:
    env = {k: v for k, v in os.environ.items() if k != "AGGREGATOR_DB"}
    env["AGGREGATOR_DATA_DIR"] = str(data)
    proc = subprocess.run(
        [sys.executable, "-m", "aggregator", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


@pytest.mark.slow
def test_demo_after_a_failed_first_run_fetches_and_groups_the_seeds(tmp_path: Path) -> None:
    # What `aggregator run` without internet leaves: every source failing, in backoff.
    now = datetime.now(UTC)
    with open_store(sqlite_url(tmp_path)) as real:
        for sid in ("lrt-english", "belsat-en", "gnews-balloons-en", "lt-interior-ministry"):
            real.save_fetch_state(
                FetchState(
                    sid,
                    next_fetch=now + timedelta(hours=6),
                    consecutive_failures=3,
                    failure_class=FailureClass.DNS,
                    last_error="cannot resolve",
                )
            )
    _cli(tmp_path, "run", "--replay", "fixtures/", "--once", "--log-format", "text")
    assert (tmp_path / "demo.db").exists()
    with open_store(sqlite_url(tmp_path)) as real:
        assert real.count_records() == 0  # the demo's records stay in its own store
    demo_db = ["--db", sqlite_url(tmp_path, "demo.db")]
    devs = json.loads(_cli(tmp_path, *demo_db, "developments", "--json"))
    sources_of = {
        record_id: {s["source_id"] for s in dev["sources"]}
        for dev in devs
        for record_id in dev["records"]
    }
    recorded = {"lrt-english", "belsat-en", "gnews-balloons-en", "lt-interior-ministry"}
    assert set().union(*sources_of.values()) >= recorded  # every recording was fetched
    # Three seed stories (border talks refused, the national emergency, Lukashenko's pledge)
    # each join the development of their retellings in the recordings.
    for seed in ("64a0d5eb396560f9", "82eb77dd3730aaf9", "47a219e0a27cbb9e"):
        assert sources_of[seed] & recorded, (seed, sources_of[seed])
