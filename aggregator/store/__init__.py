"""The database: SQLAlchemy tables, alembic migrations and the ``Store`` (see docs/store.md).

``open_store(url)`` connects to SQLite (the embedded default) or PostgreSQL and migrates the
schema to head; every ``Store`` method returns ``aggregator.model`` types, never ORM rows.

Modules: ``engine`` (engine setup per database), ``schema`` (tables), ``migrate`` (alembic),
``core`` (``Store``), ``tx`` (``WriteTx``, one write transaction), ``queries`` (queries both
share, row conversions), ``common`` (errors, keys, ids), ``transfer`` (import/export files).
"""

from aggregator.store.common import StoreConflict
from aggregator.store.core import (
    DatabaseCheck,
    Store,
    check_database,
    corrupt_store_advice,
    open_store,
    upgrade_database,
)
from aggregator.store.migrate import UpgradeResult, upgrade
from aggregator.store.tx import WriteTx

__all__ = [
    "DatabaseCheck",
    "Store",
    "StoreConflict",
    "UpgradeResult",
    "WriteTx",
    "check_database",
    "corrupt_store_advice",
    "open_store",
    "upgrade",
    "upgrade_database",
]
