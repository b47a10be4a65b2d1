"""Full-text search: SQLite FTS5 / PostgreSQL text search through the store, filled by the
database whatever writes records, from ``aggregator search`` and the ``/search`` page."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from aggregator import records
from aggregator.cli import main
from aggregator.errors import AggregatorError
from aggregator.match import TopicMatcher
from aggregator.model import Block, BlockKind, Record
from aggregator.pipeline import ingest
from aggregator.settings import Settings
from aggregator.store import Store, open_store
from aggregator.store.search import fts5_query, query_words, tsquery
from aggregator.watchlist import Watchlist, load_watchlist
from aggregator.web import create_app
from tests.test_publish_static import SEEDS, WATCHLIST_YAML


def _seeded(db_url: str, tmp_path: Path) -> tuple[Path, Watchlist]:
    config = tmp_path / "watchlist.yaml"
    config.write_text(WATCHLIST_YAML, encoding="utf-8")
    assert main(["--db", db_url, "--config", str(config), "import", str(SEEDS)]) == 0
    return config, load_watchlist(config)


def _add(store: Store, watchlist: Watchlist, title: str, body: str, url: str) -> Record:
    text = records.compose(title, body, (Block(BlockKind.PARAGRAPH, body),))
    record = Record(
        id=records.record_id(url, text),
        text=text,
        title=title,
        content_hash=records.content_hash(text),
        url=url,
        canonical_url=url,
        source_id="lrt",
        published=datetime.now(UTC),
        language="lt",
    )
    result = ingest(
        store,
        record,
        matcher=TopicMatcher(watchlist.topics),
        options=watchlist.dedup,
        now=datetime.now(UTC),
    )
    assert result.stored
    return record


def test_query_words_are_quoted_stemmed_and_never_syntax() -> None:
    words = query_words('Lietuva "balloons" AND (war*) OR - NEAR/3 x"')
    assert [(w.text, w.prefix) for w in words] == [
        ("lietuv", True),  # a word of 5+ letters matches its inflections
        ("balloon", True),
        ("and", False),
        ("war", True),  # typed as a prefix
        ("or", False),
        ("near", False),
        ("3", False),
        ("x", False),
    ]
    assert fts5_query(words[:2]) == '"lietuv"* AND "balloon"*'
    assert tsquery(words[:2]) == "'lietuv':* & 'balloon':*"
    with pytest.raises(AggregatorError, match="at least one word"):
        query_words(" ?! * ")


def test_store_search_finds_records_and_their_developments(db_url: str, tmp_path: Path) -> None:
    _, watchlist = _seeded(db_url, tmp_path)
    with open_store(db_url) as store:
        devs = {d.id: d for d in store.list_developments(None, 0)}
        found = store.search("balloons Lukashenko")
        assert found, "the seeds mention both"
        for match in found:
            text = match.record.text.lower()
            assert "balloon" in text and "lukashenko" in text
            assert match.development_id in devs
            assert match.record.id in devs[match.development_id].record_ids
        # Inflections and prefixes, as topic rules match them.
        assert {m.record.id for m in store.search("Lithuania")} >= {
            m.record.id for m in store.search("Lithuanian")
        }
        assert store.search("Lukash*") and not store.search("Lukashenkoville")
        assert len(store.search("Lithuania", limit=2)) == 2
        first_two = [m.record.id for m in store.search("Lithuania", limit=2)]
        next_two = [m.record.id for m in store.search("Lithuania", limit=2, offset=2)]
        assert not set(first_two) & set(next_two)

        # What any code stores is searchable at once (the database keeps the index).
        added = _add(
            store,
            watchlist,
            "Klaipėda port opens a new LNG terminal for Lithuania",
            "Ministrė Rugienė: the terminal in Klaipėda doubles import capacity.",
            "https://www.lrt.lt/en/news-in-english/19/lng-terminal",
        )
        assert [m.record.id for m in store.search("klaipėda terminal")] == [added.id]
        if store.dialect == "sqlite":  # FTS5 folds accents; PostgreSQL's simple config does not
            assert [m.record.id for m in store.search("klaipeda RUGIENE")] == [added.id]
        # ...and gone with the record (retention).
        store.prune(datetime.now(UTC) + timedelta(days=1))
        assert store.search("klaipėda terminal") == []


def test_upgrade_indexes_records_stored_before_the_search_migration(
    db_url: str, tmp_path: Path
) -> None:
    from alembic import command

    from aggregator.store.migrate import alembic_config

    _seeded(db_url, tmp_path)
    with open_store(db_url) as store:
        before = [m.record.id for m in store.search("balloons")]
        assert before
        cfg = alembic_config()
        with store.engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0007")
    with open_store(db_url) as store:  # migrates to head again: the index is rebuilt
        assert [m.record.id for m in store.search("balloons")] == before


def test_cli_search_text_and_json(
    db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config, _ = _seeded(db_url, tmp_path)
    capsys.readouterr()
    base = ["--db", db_url, "--config", str(config), "search"]
    assert main([*base, "weather", "balloons"]) == 0
    out = capsys.readouterr().out
    assert "development " in out and "weather balloons" in out.lower()
    assert main([*base, "balloons", "--json", "--limit", "1"]) == 0
    (row,) = json.loads(capsys.readouterr().out)
    assert set(row) >= {"record_id", "development_id", "title", "url", "published"}
    assert main([*base, "zzzunfindable"]) == 0
    assert "no stored record holds every word" in capsys.readouterr().out
    assert main([*base, "?!"]) == 2
    assert "at least one word" in capsys.readouterr().err


def test_search_page(db_url: str, tmp_path: Path) -> None:
    config, watchlist = _seeded(db_url, tmp_path)
    settings = Settings(data_dir=tmp_path, db_url=db_url, config_path=config)
    with open_store(db_url) as store:
        client = TestClient(create_app(store, lambda: watchlist, settings))
        index = client.get("/").text
        assert 'role="search"' in index and 'action="https://news.example.org/search"' in index
        page = client.get("/search", params={"q": "balloons"})
        assert page.status_code == 200
        assert page.headers["content-type"] == "text/html; charset=utf-8"
        html = page.text
        assert "https://news.example.org/developments/" in html
        assert "<mark>balloons</mark>" in html
        assert 'value="balloons"' in html  # the box keeps the query
        again = client.get(
            "/search", params={"q": "balloons"}, headers={"If-None-Match": page.headers["etag"]}
        )
        assert again.status_code == 304
        bad = client.get("/search", params={"q": '"<script>'})
        assert bad.status_code == 200 and "<script>" not in bad.text
        assert "&lt;script&gt;" in bad.text or "No stored report" in bad.text
        empty = client.get("/search", params={"q": "?!"})
        assert 'role="alert"' in empty.text and "at least one word" in empty.text
        none = client.get("/search", params={"q": "zzzunfindable"})
        assert "No stored report matches" in none.text
