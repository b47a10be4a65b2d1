"""The database: SQLAlchemy tables, alembic migrations and the ``Store`` (see docs/store.md).

``open_store(url)`` connects to SQLite (the embedded default) or PostgreSQL and migrates the
schema to head; every ``Store`` method returns ``aggregator.model`` types, never ORM rows.
"""

from aggregator.store.core import (
    Store,
    StoreConflict,
    StoredCandidate,
    WriteTx,
    development_id_for,
    open_store,
    record_time,
    upgrade_database,
)
from aggregator.store.migrate import UpgradeResult, upgrade

__all__ = [
    "Store",
    "StoreConflict",
    "StoredCandidate",
    "UpgradeResult",
    "WriteTx",
    "development_id_for",
    "open_store",
    "record_time",
    "upgrade",
    "upgrade_database",
]
