"""Shared fixtures.

``db_url`` runs a test against SQLite (always) and PostgreSQL (when the server at 127.0.0.1:5432
answers). Each PostgreSQL test run gets a fresh database of its own, dropped at the end, so
parallel or repeated runs never see each other's rows.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SEEDS = ROOT / "seeds"
FIXTURES = ROOT / "fixtures"
PG_ADMIN_URL = os.environ.get("AGGREGATOR_TEST_PG", "postgresql://127.0.0.1:5432/test")


def _pg_reachable() -> bool:
    try:
        import psycopg
    except ImportError:
        return False
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=2):
            return True
    except Exception:
        return False


@pytest.fixture(scope="session")
def pg_database() -> Iterator[str]:
    """A fresh PostgreSQL database for this test run; its SQLAlchemy URL."""
    if not _pg_reachable():
        pytest.skip("PostgreSQL at 127.0.0.1:5432 is not reachable")
    import psycopg

    name = f"aggregator_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield f"postgresql+psycopg://127.0.0.1:5432/{name}"
    finally:
        with psycopg.connect(PG_ADMIN_URL, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _reset_pg(url: str) -> None:
    """Empty every table so each test starts clean, without re-creating the database."""
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    sa.text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
                if row[0] != "alembic_version"
            ]
            if tables:
                conn.execute(
                    sa.text("TRUNCATE " + ", ".join(f'"{t}"' for t in tables) + " CASCADE")
                )
    finally:
        engine.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A database URL with an empty store: a new SQLite file, or the run's PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'aggregator.db'}"
    url: str = request.getfixturevalue("pg_database")
    _reset_pg(url)
    return url


@pytest.fixture
def seeds_dir() -> Path:
    return SEEDS
