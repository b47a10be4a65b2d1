"""Alembic environment of the store.

``open_store`` and ``aggregator db upgrade`` pass their own connection (already inside a
transaction, and on PostgreSQL holding the migration advisory lock) in
``config.attributes["connection"]``. Run by hand, the URL comes from ``-x url=...`` or
``AGGREGATOR_DB``.
"""

from __future__ import annotations

import os

from alembic import context
from sqlalchemy import Connection

from aggregator.store.engine import create_engine
from aggregator.store.schema import include_name, metadata

config = context.config


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,  # SQLite alters tables by copy-and-move
        compare_type=True,
        include_name=include_name,  # the search index is made by hand (migration 0008)
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url") or os.environ.get("AGGREGATOR_DB")
    if not url:
        raise SystemExit("give the database URL: alembic -x url=... or AGGREGATOR_DB")
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            _run(conn)
            conn.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    raise SystemExit("offline (SQL script) mode is not supported; run against a database")
run_migrations_online()
