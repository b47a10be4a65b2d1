"""Process settings: where the data lives, which database, which watchlist, how to serve.

Read once at start from command-line flags, then ``AGGREGATOR_*`` environment variables, then
defaults. The watchlist (topics and sources) is a separate, hot-reloadable file: see watchlist.py.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TypeVar

_N = TypeVar("_N", int, float)

DEFAULT_CONFIG = Path("config/watchlist.yaml")
DEFAULT_PORT = 8080


def default_data_dir() -> Path:
    """``$AGGREGATOR_DATA_DIR``, else ``$STATE_DIRECTORY`` (systemd), else ``./data``."""
    for var in ("AGGREGATOR_DATA_DIR", "STATE_DIRECTORY"):
        value = os.environ.get(var)
        if value:
            return Path(value.split(":")[0])
    return Path("data")


def sqlite_url(data_dir: Path, name: str = "aggregator.db") -> str:
    return f"sqlite:///{(data_dir / name).resolve()}"


def database_url(value: str) -> str:
    """A database URL as given, or a SQLite URL for a plain file path (``--db data/x.db``):
    anything without ``://`` is a path, as people type it."""
    if "://" in value:
        return value
    return f"sqlite:///{Path(value).expanduser().resolve()}"


# The offline demo's own store in the data directory (``Settings.for_demo``).
DEMO_DB_NAME = "demo.db"


@dataclass(frozen=True, slots=True)
class Settings:
    data_dir: Path
    db_url: str
    config_path: Path
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    base_url: str | None = None  # public URL of the service, for feed self links
    retention_days: int = 365
    log_format: str = "auto"  # auto | json | text
    log_level: str = "INFO"
    db_chosen: bool = False  # True when --db or AGGREGATOR_DB named the database
    # The watchlist's reading limits (model.WatchlistLimits); None keeps its default.
    watchlist_max_bytes: int | None = None
    watchlist_max_nodes: int | None = None
    watchlist_load_timeout: float | None = None

    @property
    def public_url(self) -> str:
        return (self.base_url or f"http://{self.host}:{self.port}").rstrip("/")

    def for_demo(self) -> Settings:
        """The offline demo's settings: its own SQLite store (``data/demo.db``) unless a
        database was chosen. The demo's sources point at its replay server on 127.0.0.1, and
        its fetch states and records are the recordings': kept apart, the real store's
        backoffs cannot make the demo fetch nothing, nor the demo fill the real feeds."""
        if self.db_chosen:
            return self
        return replace(self, db_url=sqlite_url(self.data_dir, DEMO_DB_NAME))

    def with_overrides(self, **changes: object) -> Settings:
        return replace(self, **{k: v for k, v in changes.items() if v is not None})  # type: ignore[arg-type]


def _env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return int(value) if value else default


def _env_opt(kind: type[_N], name: str) -> _N | None:
    value = os.environ.get(name)
    return kind(value) if value else None


def load_settings(
    db_url: str | None = None, config_path: str | os.PathLike[str] | None = None
) -> Settings:
    """Settings from explicit values, then the environment, then defaults."""
    data_dir = default_data_dir()
    chosen = db_url or os.environ.get("AGGREGATOR_DB")
    return Settings(
        data_dir=data_dir,
        db_url=database_url(chosen) if chosen else sqlite_url(data_dir),
        db_chosen=bool(chosen),
        config_path=Path(config_path or os.environ.get("AGGREGATOR_CONFIG") or DEFAULT_CONFIG),
        host=os.environ.get("AGGREGATOR_HOST", "127.0.0.1"),
        port=_env_int("AGGREGATOR_PORT", DEFAULT_PORT),
        base_url=os.environ.get("AGGREGATOR_BASE_URL") or None,
        retention_days=_env_int("AGGREGATOR_RETENTION_DAYS", 365),
        log_format=os.environ.get("AGGREGATOR_LOG_FORMAT", "auto"),
        log_level=os.environ.get("AGGREGATOR_LOG_LEVEL", "INFO"),
        watchlist_max_bytes=_env_opt(int, "AGGREGATOR_WATCHLIST_MAX_BYTES"),
        watchlist_max_nodes=_env_opt(int, "AGGREGATOR_WATCHLIST_MAX_NODES"),
        watchlist_load_timeout=_env_opt(float, "AGGREGATOR_WATCHLIST_LOAD_TIMEOUT"),
    )
