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
    with engine.begin() as conn:
        conn.execute(sa.insert(t.records), [_record_row("a" * 16, 1), _record_row("b" * 16, 2)])
        core = [{"band": "k1", "record_id": "a" * 16, "time": WHEN.astimezone(ELSEWHERE)}]
        fast = [{"band": "k2", "record_id": "b" * 16, "time": WHEN.astimezone(ELSEWHERE)}]
        conn.execute(sa.insert(t.lsh_bands), core)
        driver.insert_many(conn, sa.insert(t.lsh_bands), fast)
        raw = conn.exec_driver_sql("SELECT band, time FROM lsh_bands ORDER BY band").all()
        typed = conn.execute(sa.select(t.lsh_bands.c.time).order_by(t.lsh_bands.c.band)).all()
    assert raw[0][1] == raw[1][1]  # byte-identical storage, text on SQLite
    assert [row.time for row in typed] == [WHEN, WHEN]
    engine.dispose()


def test_execute_binds_repeated_and_fixed_parameters(db_url: str) -> None:
    engine = _engine(db_url)
    b = t.lsh_bands
    lo, hi = sa.bindparam("lo", type_=t.UTCDateTime()), sa.bindparam("hi", type_=t.UTCDateTime())
    # "lo"/"hi" appear twice, and the LIMIT/OFFSET are the statement's own literals.
    stmt = (
        sa.select(b.c.record_id)
        .where(b.c.time.between(lo, hi), sa.or_(b.c.band == sa.bindparam("key"), b.c.time < lo))
        .order_by(b.c.record_id)
        .limit(5)
        .offset(0)
    )
    with engine.begin() as conn:
        conn.execute(sa.insert(t.records), [_record_row("a" * 16, 1), _record_row("b" * 16, 2)])
        driver.insert_many(
            conn,
            sa.insert(t.lsh_bands),
            [
                {"band": "x", "record_id": "a" * 16, "time": WHEN},
                {"band": "y", "record_id": "b" * 16, "time": WHEN + timedelta(days=9)},
            ],
        )
        window = {"lo": WHEN - timedelta(hours=1), "hi": WHEN + timedelta(hours=1), "key": "x"}
        rows = driver.execute(conn, stmt, window)
        assert [r[0] for r in rows] == ["a" * 16]
        assert driver.execute(conn, stmt, window | {"key": "y"}) == []
    engine.dispose()


def test_statements_are_compiled_once_per_dialect_and_columns() -> None:
    from sqlalchemy.dialects import sqlite

    stmt = sa.insert(t.topic_matches)
    dialect = sqlite.dialect()
    first = driver.driver_statement(stmt, dialect, ["record_id", "topic_id", "terms"])
    assert driver.driver_statement(stmt, dialect, ["record_id", "topic_id", "terms"]) is first
    other = driver.driver_statement(stmt, dialect, ["record_id", "topic_id"])
    assert other is not first and other.sql.count("?") == 2
