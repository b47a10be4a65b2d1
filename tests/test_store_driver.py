"""store.driver: statements run through the driver store and read exactly what Core would."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import sqlalchemy as sa

from aggregator.store import driver
from aggregator.store import schema as t
from aggregator.store.engine import create_engine
from aggregator.store.migrate import upgrade

WHEN = datetime(2026, 11, 23, 10, 30, 15, 123456, tzinfo=UTC)
ELSEWHERE = timezone(timedelta(hours=2))


def _engine(db_url: str) -> sa.Engine:
    engine = create_engine(db_url)
    upgrade(engine)
    return engine


def _record_row(rid: str, seq: int) -> dict[str, object]:
    return {
        "id": rid,
        "text": "text",
        "title": "title",
        "url": None,
        "canonical_url": None,
        "guid": None,
        "source_id": None,
        "published": None,
        "fetched": None,
        "ingested": WHEN,
        "time": WHEN,
        "language": None,
        "author": None,
        "content_hash": f"hash-{rid}",
        "seq": seq,
    }


def test_insert_many_stores_what_core_stores(db_url: str) -> None:
    engine = _engine(db_url)
    a = t.record_aliases
    with engine.begin() as conn:
        conn.execute(sa.insert(t.records), [_record_row("a" * 16, 1), _record_row("b" * 16, 2)])
        core = [{"guid": "k1", "record_id": "a" * 16, "seen": WHEN.astimezone(ELSEWHERE)}]
        fast = [{"guid": "k2", "record_id": "b" * 16, "seen": WHEN.astimezone(ELSEWHERE)}]
        conn.execute(sa.insert(a), core)
        driver.insert_many(conn, sa.insert(a), fast)
        raw = conn.exec_driver_sql("SELECT guid, seen FROM record_aliases ORDER BY guid").all()
        typed = conn.execute(sa.select(a.c.seen).order_by(a.c.guid)).all()
    assert raw[0][1] == raw[1][1]  # byte-identical storage, text on SQLite
    assert [row.seen for row in typed] == [WHEN, WHEN]
    engine.dispose()


def test_statements_are_compiled_once_per_dialect_and_columns() -> None:
    from sqlalchemy.dialects import sqlite

    stmt = sa.insert(t.topic_matches)
    dialect = sqlite.dialect()
    first = driver.driver_statement(stmt, dialect, ["record_id", "topic_id", "terms"])
    assert driver.driver_statement(stmt, dialect, ["record_id", "topic_id", "terms"]) is first
    other = driver.driver_statement(stmt, dialect, ["record_id", "topic_id"])
    assert other is not first and other.sql.count("?") == 2
