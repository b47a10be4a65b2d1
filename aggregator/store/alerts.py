"""The alert queue: which message is owed to which target, claimed transactionally.

One row per (rule, target, kind, item): ``item`` is a development id for a push, the digest's
local date for a digest. The unique key makes queueing idempotent, so every replica may queue
the same message and it exists once; a replica sends a message only after claiming its row in
a write transaction (a lease: owner + expiry), so two replicas never send the same message at
the same time. A send that fails is retried later with a growing delay, up to a number of
attempts, then kept as failed for /healthz and ``aggregator alerts``.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

import sqlalchemy as sa

from aggregator.model import AlertDelivery, AlertStatus, Development
from aggregator.store import schema as t
from aggregator.store.common import chunks
from aggregator.store.queries import developments_of

PENDING = "pending"
SENT = "sent"
FAILED = "failed"


def _insert(conn: sa.Connection, table: sa.Table) -> Any:
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert(table)
    from sqlalchemy.dialects.sqlite import insert as sqlite_insert

    return sqlite_insert(table)


def rule_since(conn: sa.Connection, rule_id: str, now: datetime) -> datetime:
    """When the rule was first seen (set now on first sight): nothing older is alerted."""
    table = t.alert_rules
    conn.execute(
        _insert(conn, table)
        .values(rule_id=rule_id, since=now)
        .on_conflict_do_nothing(index_elements=["rule_id"])
    )
    since: datetime = conn.execute(
        sa.select(table.c.since).where(table.c.rule_id == rule_id)
    ).scalar_one()
    return since


def new_developments(
    conn: sa.Connection,
    topics: Sequence[str],
    since: datetime,
    until: datetime | None = None,
    limit: int = 100,
) -> list[Development]:
    """Developments that appeared in this store at or after ``since`` (and before ``until``)
    and match any of ``topics``, in the order they appeared; merged ones are left out.

    A development appeared when its first record was stored (the earliest ``ingested`` of its
    records), not at ``first_seen`` (its first report's publication time): a story published
    yesterday but found today is today's news here. ``updated`` is never earlier than that, so
    its index narrows the scan to developments changed since ``since``."""
    d, dt, m, r = t.developments, t.development_topics, t.memberships, t.records
    appeared = (
        sa.select(sa.func.min(r.c.ingested))
        .select_from(m.join(r, r.c.id == m.c.record_id))
        .where(m.c.development_id == d.c.id)
        .scalar_subquery()
    )
    query = sa.select(d).where(
        d.c.merged_into.is_(None),
        d.c.updated >= since,
        appeared >= since,
        sa.exists().where(dt.c.development_id == d.c.id, dt.c.topic_id.in_(list(topics))),
    )
    if until is not None:
        query = query.where(appeared < until)
    query = query.order_by(appeared, d.c.id).limit(limit)
    return developments_of(conn, conn.execute(query).all())


def queue(conn: sa.Connection, items: Sequence[tuple[str, str, str, str]], now: datetime) -> int:
    """Queue (rule_id, target, kind, item) messages; ones queued before are left alone.
    Returns how many are new."""
    table = t.alert_deliveries
    added = 0
    for rule_id, target, kind, item in items:
        result = conn.execute(
            _insert(conn, table)
            .values(
                rule_id=rule_id,
                target=target,
                kind=kind,
                item=item,
                created=now,
                status=PENDING,
                attempts=0,
                next_attempt=now,
            )
            .on_conflict_do_nothing(index_elements=["rule_id", "target", "kind", "item"])
        )
        added += max(result.rowcount or 0, 0)
    return added


def _delivery(row: Any) -> AlertDelivery:
    return AlertDelivery(
        id=int(row.id),
        rule_id=row.rule_id,
        target=row.target,
        kind=row.kind,
        item=row.item,
        created=row.created,
        status=row.status,
        attempts=int(row.attempts),
        next_attempt=row.next_attempt,
        last_error=row.last_error,
        sent=row.sent,
    )


def claim(
    conn: sa.Connection, owner: str, now: datetime, lease_seconds: float, limit: int
) -> list[AlertDelivery]:
    """Claim up to ``limit`` due messages for ``owner`` (one write transaction)."""
    a = t.alert_deliveries
    free = sa.or_(a.c.lease_expires.is_(None), a.c.lease_expires < now)
    due = sa.and_(a.c.status == PENDING, a.c.next_attempt <= now, free)
    query = sa.select(a.c.id).where(due).order_by(a.c.next_attempt, a.c.id).limit(limit)
    if conn.dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True)
    ids = list(conn.execute(query).scalars())
    if not ids:
        return []
    expires = now + timedelta(seconds=lease_seconds)
    conn.execute(
        sa.update(a).where(a.c.id.in_(ids), due).values(lease_owner=owner, lease_expires=expires)
    )
    rows = conn.execute(
        sa.select(a).where(a.c.id.in_(ids), a.c.lease_owner == owner).order_by(a.c.id)
    ).all()
    return [_delivery(row) for row in rows]


def finish(
    conn: sa.Connection,
    delivery_id: int,
    owner: str,
    now: datetime,
    *,
    error: str | None,
    retry_at: datetime | None,
) -> bool:
    """Record a send: sent (``error`` None), to retry at ``retry_at``, or failed for good
    (``retry_at`` None). False when the lease was lost (another replica owns it now)."""
    a = t.alert_deliveries
    values: dict[str, Any] = {"lease_owner": None, "lease_expires": None}
    if error is None:
        values |= {"status": SENT, "sent": now, "attempts": a.c.attempts + 1, "last_error": None}
    else:
        values |= {
            "status": PENDING if retry_at is not None else FAILED,
            "attempts": a.c.attempts + 1,
            "last_error": error[:2000],
            "last_attempt": now,
            "next_attempt": retry_at or now,
        }
    result = conn.execute(
        sa.update(a).where(a.c.id == delivery_id, a.c.lease_owner == owner).values(**values)
    )
    return bool(result.rowcount)


def status(conn: sa.Connection, now: datetime, recent: timedelta) -> AlertStatus:
    """Counts for /healthz: waiting, retrying (failed at least once), failed for good (and
    how many of them in the ``recent`` window), the latest error and the latest send."""
    a = t.alert_deliveries
    counts: dict[str, int] = dict(
        conn.execute(sa.select(a.c.status, sa.func.count()).group_by(a.c.status)).all()
    )
    retrying = conn.execute(
        sa.select(sa.func.count()).where(a.c.status == PENDING, a.c.attempts > 0)
    ).scalar_one()
    recent_failed = conn.execute(
        sa.select(sa.func.count()).where(a.c.status == FAILED, a.c.last_attempt >= now - recent)
    ).scalar_one()
    last = conn.execute(
        sa.select(a.c.rule_id, a.c.kind, a.c.last_error, a.c.last_attempt)
        .where(a.c.last_error.is_not(None))
        .order_by(a.c.last_attempt.desc(), a.c.id.desc())
        .limit(1)
    ).first()
    last_sent = conn.execute(sa.select(sa.func.max(a.c.sent))).scalar_one()
    return AlertStatus(
        pending=int(counts.get(PENDING, 0)),
        retrying=int(retrying),
        failed=int(counts.get(FAILED, 0)),
        recently_failed=int(recent_failed),
        sent=int(counts.get(SENT, 0)),
        last_error=(
            f"{last.rule_id} ({last.kind}): {last.last_error}" if last is not None else None
        ),
        last_error_at=last.last_attempt if last is not None else None,
        last_sent=last_sent,
    )


def deliveries(conn: sa.Connection, limit: int = 50) -> list[AlertDelivery]:
    """The latest messages, newest first (``aggregator alerts``)."""
    a = t.alert_deliveries
    rows = conn.execute(sa.select(a).order_by(a.c.id.desc()).limit(limit)).all()
    return [_delivery(row) for row in rows]


__all__ = ["chunks", "claim", "deliveries", "finish", "new_developments", "queue", "rule_since"]
