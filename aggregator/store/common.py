"""Small pieces the store modules share: errors, keys, ids, chunking."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa

from aggregator.errors import StoreError
from aggregator.store.engine import is_postgres

CHUNK = 500  # bound on IN (...) lists


class StoreConflict(StoreError):
    """A write lost a race (unique key, deadlock, serialization failure, SQLite busy): retry it."""


def lock_key(text: str) -> int:
    """A signed 64-bit advisory lock key for a string."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big", signed=True)


@contextmanager
def translate_errors() -> Iterator[None]:
    """Database errors become StoreError (StoreConflict when retrying may succeed)."""
    try:
        yield
    except sa.exc.IntegrityError as exc:
        raise StoreConflict(f"conflicting write: {exc.orig}") from exc
    except sa.exc.OperationalError as exc:
        if _is_transient(exc):
            raise StoreConflict(f"transient database error: {exc.orig}") from exc
        raise StoreError(f"database error: {exc.orig}") from exc
    except sa.exc.DBAPIError as exc:
        if exc.connection_invalidated:
            raise StoreConflict(f"database connection lost: {exc.orig}") from exc
        raise StoreError(f"database error: {exc.orig}") from exc


def _is_transient(exc: sa.exc.DBAPIError) -> bool:
    if exc.connection_invalidated:
        return True
    code = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if code in ("40001", "40P01", "55P03"):  # serialization failure, deadlock, lock timeout
        return True
    message = str(exc.orig).lower()
    return "database is locked" in message or "database is busy" in message


def chunks(items: Sequence[str], size: int = CHUNK) -> Iterator[Sequence[str]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def dialect_insert(conn: sa.Connection, table: sa.Table) -> Any:
    """The dialect's INSERT, which has ON CONFLICT support on both SQLite and PostgreSQL."""
    return upsert_insert(table, postgres=is_postgres(conn))


def upsert_insert(table: sa.Table, *, postgres: bool) -> Any:
    """``dialect_insert`` without a connection: for statements built once per dialect."""
    # Imported here: loading the PostgreSQL dialect costs a SQLite command's start-up ~50 ms.
    if postgres:
        from sqlalchemy.dialects import postgresql

        return postgresql.insert(table)
    from sqlalchemy.dialects import sqlite

    return sqlite.insert(table)
