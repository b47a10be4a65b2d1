"""The database tables, as SQLAlchemy Core metadata (the alembic migrations create the same).

Times are stored in UTC (``UTCDateTime``) and always come back timezone-aware, whatever the
engine: SQLite has no time zone type, PostgreSQL uses ``timestamptz``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


class UTCDateTime(sa.types.TypeDecorator[datetime]):
    """A timestamp stored as UTC and returned timezone-aware.

    Naive values are taken to be UTC already (the model promises aware values; this is a guard).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite keeps the text as given: store naive UTC so values sort and compare as text.
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        assert isinstance(value, datetime)
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


RECORD_ID = sa.String(16)
DEV_ID = sa.String(32)
SOURCE_ID = sa.String(200)

store_meta = sa.Table(
    "store_meta",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),  # always 1: one row
    # Random per database: feed_version tokens of two databases never collide.
    sa.Column("instance", sa.String(32), nullable=False),
    # Bumped by every transaction that changes what feeds show (developments, memberships,
    # source titles); Store.feed_version() returns it for caches across replicas.
    sa.Column("feed_version", sa.BigInteger, nullable=False),
    # Bumped by every change that moves or removes stored records outside ingest (split, merge,
    # prune): an ingesting process whose window saw another value rebuilds it (0010).
    sa.Column("layout_version", sa.BigInteger, nullable=False, server_default="0"),
)

sources = sa.Table(
    "sources",
    metadata,
    sa.Column("id", SOURCE_ID, primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False, server_default=""),
    sa.Column("topics", sa.JSON, nullable=False),
    sa.Column("enabled", sa.Boolean, nullable=False, server_default=sa.true()),
    # False when the source left the watchlist: its records and fetch state stay.
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column("updated", UTCDateTime, nullable=True),
)

fetch_state = sa.Table(
    "fetch_state",
    metadata,
    # No foreign key: the state outlives a source's removal, so re-adding it keeps its ETag
    # and backoff.
    sa.Column("source_id", SOURCE_ID, primary_key=True),
    sa.Column("etag", sa.Text),
    sa.Column("last_modified", sa.Text),
    sa.Column("next_fetch", UTCDateTime),
    sa.Column("last_attempt", UTCDateTime),
    sa.Column("last_success", UTCDateTime),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("failure_class", sa.String(32)),
    sa.Column("last_error", sa.Text),
    sa.Column("failure_counts", sa.JSON, nullable=False),
    sa.Column("fetch_count", sa.Integer, nullable=False, server_default="0"),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_expires", UTCDateTime),
    # A permanent redirect: the watchlist URL it was seen on, and where it led.
    sa.Column("moved_from", sa.Text),
    sa.Column("moved_to", sa.Text),
    # The feed's RSS <skipHours>/<skipDays> as bit sets (bit h: hour h GMT; bit d: weekday d).
    sa.Column("skip_hours", sa.Integer),
    sa.Column("skip_days", sa.Integer),
    # In the claim's order (store.claim_due_states): a claim walks it and stops at its limit.
    sa.Index("ix_fetch_state_due", "next_fetch", "source_id"),
)

# Articles of page sources that could not be fetched or read: not tried again before next_try
# (pipeline doubles the wait per failure), so a broken link is not fetched on every run.
article_failures = sa.Table(
    "article_failures",
    metadata,
    sa.Column("source_id", SOURCE_ID, primary_key=True),
    sa.Column("url", sa.Text, primary_key=True),
    sa.Column("failures", sa.Integer, nullable=False),
    sa.Column("next_try", UTCDateTime, nullable=False),
    sa.Column("last_error", sa.Text),
)

records = sa.Table(
    "records",
    metadata,
    sa.Column("id", RECORD_ID, primary_key=True),
    # Insertion order (export numbering, iter_records). PostgreSQL fills it from an identity
    # column; SQLite gets max+1 inside the (serialized) write transaction.
    sa.Column("seq", sa.BigInteger, sa.Identity(), nullable=False, unique=True),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("url", sa.Text),
    sa.Column("canonical_url", sa.Text),
    sa.Column("guid", sa.Text),
    sa.Column("source_id", SOURCE_ID),
    sa.Column("published", UTCDateTime),
    sa.Column("fetched", UTCDateTime),
    sa.Column("ingested", UTCDateTime, nullable=False),
    # published, else fetched, else ingested: the time dedup windows and retention use.
    sa.Column("time", UTCDateTime, nullable=False),
    sa.Column("language", sa.String(35)),
    sa.Column("author", sa.Text),
    sa.Column("content_hash", sa.String(64), nullable=False),
    # The publisher a news search feed credits (name, site), and identity.headline_key.
    sa.Column("outlet", sa.Text),
    sa.Column("outlet_url", sa.Text),
    sa.Column("headline_key", sa.String(32)),
    # Hash indexes on PostgreSQL (``postgresql_options``): URLs and GUIDs can be longer than a
    # btree entry may be (about 2.7 KB), and these are only ever compared for equality.
    sa.Index("ix_records_canonical_url", "canonical_url"),
    sa.Index("ix_records_guid", "guid"),
    sa.Index("ix_records_content_hash", "content_hash"),
    sa.Index("ix_records_time", "time"),
    sa.Index("ix_records_headline_key", "headline_key"),
)


def _record_fk() -> sa.ForeignKey:
    """A reference to a record that goes away with it."""
    return sa.ForeignKey("records.id", ondelete="CASCADE")


topic_matches = sa.Table(
    "topic_matches",
    metadata,
    sa.Column("record_id", RECORD_ID, _record_fk(), primary_key=True),
    sa.Column("topic_id", sa.String(200), primary_key=True),
    sa.Column("terms", sa.JSON, nullable=False),
    sa.Index("ix_topic_matches_topic_id", "topic_id"),
)

fingerprints = sa.Table(
    "fingerprints",
    metadata,
    sa.Column("record_id", RECORD_ID, _record_fk(), primary_key=True),
    sa.Column("data", sa.Text, nullable=False),  # dedup.fingerprint_to_json
)

# Other places the same article was seen (another outlet's URL, another feed's GUID): an exact
# duplicate is not stored again, but its source still counts as reporting the development.
record_aliases = sa.Table(
    "record_aliases",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("record_id", RECORD_ID, _record_fk(), nullable=False),
    sa.Column("source_id", SOURCE_ID),
    sa.Column("url", sa.Text),
    sa.Column("guid", sa.Text),
    sa.Column("published", UTCDateTime),
    sa.Column("seen", UTCDateTime, nullable=False),
    # The outlet a news search feed credited, and the alias's identity.headline_key.
    sa.Column("outlet", sa.Text),
    sa.Column("headline_key", sa.String(32)),
    sa.Index("ix_record_aliases_record_id", "record_id"),
    sa.Index("ix_record_aliases_guid", "guid"),  # hash on PostgreSQL (postgresql_options)
)

developments = sa.Table(
    "developments",
    metadata,
    sa.Column("id", DEV_ID, primary_key=True),
    sa.Column("title", sa.Text, nullable=False),
    sa.Column("summary", sa.Text, nullable=False),
    sa.Column("first_seen", UTCDateTime, nullable=False),
    sa.Column("updated", UTCDateTime, nullable=False),
    sa.Column(
        "representative_id",
        RECORD_ID,
        sa.ForeignKey("records.id", ondelete="SET NULL"),
        nullable=True,
    ),
    # Set when an admin merged this development into another; lookups follow it.
    sa.Column(
        "merged_into", DEV_ID, sa.ForeignKey("developments.id", ondelete="SET NULL"), nullable=True
    ),
    sa.Index("ix_developments_updated", "updated"),
    sa.Index("ix_developments_merged_into", "merged_into"),
)

development_topics = sa.Table(
    "development_topics",
    metadata,
    sa.Column(
        "development_id",
        DEV_ID,
        sa.ForeignKey("developments.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("topic_id", sa.String(200), primary_key=True),
    sa.Index("ix_development_topics_topic_id", "topic_id"),
)

memberships = sa.Table(
    "memberships",
    metadata,
    sa.Column("record_id", RECORD_ID, _record_fk(), primary_key=True),
    sa.Column(
        "development_id",
        DEV_ID,
        sa.ForeignKey("developments.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("reason", sa.String(32), nullable=False),
    sa.Column("score", sa.Float, nullable=False),
    sa.Column("matched_record_id", RECORD_ID, nullable=True),
    # True once an admin placed the record (split/merge): later ingests never move it.
    sa.Column("manual", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("joined", UTCDateTime, nullable=False),
    sa.Index("ix_memberships_development_id", "development_id"),
)

# Alerts (service/alerts.py): when each rule was first seen (nothing older is alerted), and the
# messages owed, one per (rule, target, kind, item), claimed with a lease before sending.
alert_rules = sa.Table(
    "alert_rules",
    metadata,
    sa.Column("rule_id", sa.String(64), primary_key=True),
    sa.Column("since", UTCDateTime, nullable=False),
)

alert_deliveries = sa.Table(
    "alert_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("rule_id", sa.String(64), nullable=False),
    sa.Column("target", sa.String(32), nullable=False),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("item", sa.String(64), nullable=False),
    sa.Column("created", UTCDateTime, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt", UTCDateTime, nullable=False),
    sa.Column("last_attempt", UTCDateTime),
    sa.Column("last_error", sa.Text),
    sa.Column("lease_owner", sa.String(200)),
    sa.Column("lease_expires", UTCDateTime),
    sa.Column("sent", UTCDateTime),
    sa.UniqueConstraint("rule_id", "target", "kind", "item"),
    sa.Index("ix_alert_deliveries_due", "status", "next_attempt"),
)

# What migrations manage by hand and the models above do not describe: the full-text search
# index (migration 0008; SQLite's FTS5 table and its shadow tables, PostgreSQL's expression
# index). Schema comparisons (alembic autogenerate) leave these names out.
SEARCH_NAMES = ("records_search", "ix_records_search")

# Indexes that are hash indexes on PostgreSQL (as the migrations create them): set on the
# metadata by ``postgresql_options`` when a PostgreSQL engine is made, not here, because a
# ``postgresql_using`` argument loads SQLAlchemy's PostgreSQL dialect on import, ~50 ms of
# every SQLite command's start-up.
_HASH_INDEXES = (
    ("records", "ix_records_canonical_url"),
    ("records", "ix_records_guid"),
    ("record_aliases", "ix_record_aliases_guid"),
)


def postgresql_options() -> None:
    """Add the PostgreSQL-only index options to the metadata (idempotent)."""
    for table, name in _HASH_INDEXES:
        (index,) = [ix for ix in metadata.tables[table].indexes if ix.name == name]
        index.dialect_kwargs["postgresql_using"] = "hash"


def include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    """alembic's ``include_name`` hook: everything but the search index's own objects."""
    return not (name and type_ in ("table", "index") and name.startswith(SEARCH_NAMES))
