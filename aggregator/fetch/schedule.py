"""The next-fetch policy: when a source is fetched next. The one place that decides it.

Pure: no clock (``now`` is passed in), no randomness (``jitter`` is too), no I/O. Every caller
(``fetch-once``, ``aggregator run``, a crashed fetch, ``aggregator sources``) asks here, with the
one default interval (``model.DEFAULT_INTERVAL_SECONDS``), as Miniflux's
``Feed.ScheduleNextCheck`` is the one place its refreshes are scheduled.

- Success (200 or 304): the schedule's interval (for a cron schedule, the gap to its next
  time), stretched, never shortened, by what the server asked for (``Cache-Control: max-age``,
  ``Expires``, RSS ``<ttl>``, a ``Retry-After``), capped at ``cap_seconds`` so a far-future
  ``Expires`` cannot silence a source for a year. A fetch that left entries for later (the cap
  on items per fetch) comes back after ``backlog_seconds`` instead, never more often than the
  server allows.
- Failure: the interval doubled per consecutive failure up to the cap, and never less than a
  ``Retry-After``. It never gives up: the next fetch is always a finite time away, and the
  first success resets the count.
- Then, whatever the outcome: jitter (up to 10 % of the delay, from the caller's RNG) spreads
  sources that fail together; the delays count from ``now``, the moment the answer arrived
  (a ``Retry-After: 150`` is never honoured after 144 s because the fetch started 6 s earlier);
  a floor (``not_before``) the caller may need, e.g. the service's next job run; and last the
  feed's RSS ``<skipHours>``/``<skipDays>`` (in GMT, as RSS 2.0 says): a time that falls in a
  skipped hour or day moves to the first hour that is not skipped. Nothing moves a next fetch
  earlier than what the server asked for.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aggregator.fetch.backoff import CacheHints
from aggregator.model import DEFAULT_INTERVAL_SECONDS, Schedule

# The shortest gap a cron schedule is taken to mean (a cron time a few seconds away would
# otherwise make the next fetch "now" again).
MIN_CRON_GAP_SECONDS = 60.0
JITTER_FRACTION = 0.1
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")

__all__ = [
    "DEFAULT_INTERVAL_SECONDS",
    "failure_delay",
    "interval_seconds",
    "next_fetch",
    "skip_to_allowed",
    "success_delay",
]


def interval_seconds(schedule: Schedule, now: datetime) -> float:
    """Seconds between fetches: the schedule's interval, or the gap to its next cron time, or
    the one default."""
    if schedule.interval_seconds:
        return float(schedule.interval_seconds)
    if schedule.cron:
        from apscheduler.triggers.cron import CronTrigger  # pure date arithmetic

        try:
            trigger = CronTrigger.from_crontab(schedule.cron, timezone=UTC)
            # Strictly after now: fetched at a cron time, the next is the one after it.
            fire = trigger.get_next_fire_time(None, now + timedelta(seconds=1))
        except ValueError:
            fire = None
        if fire is not None:
            return max(MIN_CRON_GAP_SECONDS, (fire - now).total_seconds())
    return float(DEFAULT_INTERVAL_SECONDS)


def success_delay(
    interval: float, hints: CacheHints, cap_seconds: float, *, backlog_seconds: float | None = None
) -> float:
    """Seconds until the next fetch after a successful (200 or 304) fetch. ``backlog_seconds``:
    entries were left for the next fetch, which comes this soon unless the server said later."""
    delay = interval if backlog_seconds is None else min(interval, backlog_seconds)
    for hint in (hints.max_age, hints.ttl, hints.retry_after):
        if hint is not None and hint > delay:
            delay = hint
    return min(delay, max(interval, cap_seconds))


def failure_delay(
    interval: float, consecutive_failures: int, hints: CacheHints, cap_seconds: float
) -> float:
    """Seconds until the next attempt after ``consecutive_failures`` failures in a row (>= 1)."""
    exponent = max(0, consecutive_failures - 1)
    # Bound the exponent before computing: 2**10000 would overflow a float.
    delay = interval * (2 ** min(exponent, 40))
    delay = min(delay, cap_seconds)
    if hints.retry_after is not None:
        delay = max(delay, min(hints.retry_after, cap_seconds))
    return max(delay, 1.0)


def skip_to_allowed(
    when: datetime, skip_hours: frozenset[int], skip_days: frozenset[int]
) -> datetime:
    """``when``, or the start of the first hour after it that is neither a skipped hour (0-23,
    GMT) nor on a skipped day (0 = Monday). A feed that skips every hour of the week is taken
    to mean nothing (it would never be fetched again)."""
    hours = frozenset(h for h in skip_hours if 0 <= h <= 23)
    days = frozenset(d for d in skip_days if 0 <= d <= 6)
    if not hours and not days:
        return when
    if len(hours) == 24 or len(days) == 7:
        return when
    t = when.astimezone(UTC)
    for _ in range(7 * 24 + 1):
        if t.hour not in hours and t.weekday() not in days:
            return t
        t = (t + timedelta(hours=1)).replace(minute=0, second=0, microsecond=0)
    return when  # pragma: no cover - unreachable: some hour of the week is allowed


def next_fetch(
    now: datetime,
    *,
    interval: float,
    ok: bool,
    consecutive_failures: int = 0,
    hints: CacheHints | None = None,
    cap_seconds: float = 24 * 3600,
    jitter: float = 0.0,
    backlog_seconds: float | None = None,
    not_before: datetime | None = None,
) -> datetime:
    """The time of the next fetch, ``now`` being when the answer (or the failure) came.

    ``jitter`` (0..1, from the caller's RNG) adds up to 10 % of the delay, so sources that fail
    together do not retry together; ``not_before`` is a floor; the feed's skip hours and days
    (in ``hints``) apply last."""
    hints = hints or CacheHints()
    if ok:
        delay = success_delay(interval, hints, cap_seconds, backlog_seconds=backlog_seconds)
    else:
        delay = failure_delay(interval, consecutive_failures, hints, cap_seconds)
    delay += delay * JITTER_FRACTION * min(max(jitter, 0.0), 1.0)
    when = now + timedelta(seconds=delay)
    if not_before is not None and when < not_before:
        when = not_before
    return skip_to_allowed(when, hints.skip_hours, hints.skip_days)
