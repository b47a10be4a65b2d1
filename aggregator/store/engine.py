"""Engine setup for SQLite (the embedded default) and PostgreSQL (several replicas).

SQLite: WAL journal (readers never block the writer), a busy timeout, foreign keys on, and
``BEGIN IMMEDIATE`` for write transactions so that a read-then-write transaction takes the write
lock up front instead of failing with "database is locked" half way. This is the SQLAlchemy
pysqlite recipe: switch off pysqlite's own transaction handling and emit BEGIN ourselves.

PostgreSQL: ``pool_pre_ping`` so a connection that died with a server restart is replaced
before use; psycopg 3 is the driver (``postgresql://`` URLs are mapped to it).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import URL, make_url

from aggregator.errors import StoreError

SQLITE_BUSY_TIMEOUT_MS = 30_000
# Execution option that marks a connection as read-only: SQLite then begins with a deferred
# BEGIN (a plain snapshot), which never waits for the write lock.
READ_ONLY = "aggregator_read_only"


def normalize_url(url: str) -> URL:
    """Parse a database URL; ``postgres://`` and ``postgresql://`` get the psycopg 3 driver."""
    try:
        parsed = make_url(url)
    except sa.exc.ArgumentError as exc:
        raise StoreError(f"invalid database URL {url!r}: {exc}") from exc
    if parsed.drivername in ("postgres", "postgresql"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.get_backend_name() not in ("sqlite", "postgresql"):
        raise StoreError(
            f"unsupported database {parsed.get_backend_name()!r}: use sqlite:/// or postgresql://"
        )
    return parsed


def create_engine(url: str) -> sa.Engine:
    """An engine configured for the store (see the module docstring)."""
    parsed = normalize_url(url)
    if parsed.get_backend_name() == "sqlite":
        return _sqlite_engine(parsed)
    from aggregator.store.schema import postgresql_options

    postgresql_options()
    return sa.create_engine(
        parsed,
        pool_pre_ping=True,
        pool_size=5,
        max_overflow=10,
        pool_recycle=1800,
    )


def _sqlite_engine(url: URL) -> sa.Engine:
    database = url.database
    if database and database != ":memory:" and not database.startswith("file:"):
        folder = Path(database).expanduser().parent
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"cannot create the data directory {folder}: {exc}") from exc
    in_memory = not database or database == ":memory:"
    engine = sa.create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        # An in-memory database lives as long as its connection: share one (tests, trials).
        **({"poolclass": sa.pool.StaticPool} if in_memory else {}),
    )

    @sa.event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Stop pysqlite from issuing its own BEGIN (and COMMIT before DDL); we emit BEGIN below.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        try:
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA synchronous=NORMAL")
        finally:
            cursor.close()

    @sa.event.listens_for(engine, "begin")
    def _on_begin(conn: sa.Connection) -> None:
        if conn.get_execution_options().get(READ_ONLY):
            conn.exec_driver_sql("BEGIN")
        else:
            conn.exec_driver_sql("BEGIN IMMEDIATE")

    return engine


def is_postgres(engine: sa.Engine | sa.Connection) -> bool:
    return engine.dialect.name == "postgresql"
