"""One APScheduler job per source, kept in step with the watchlist.

Jobs carry only the source id: the job function looks the source up in the watchlist in force
when it runs, so a reload never leaves a job holding a stale copy. Each job is coalesced (a burst
of missed runs becomes one), limited to one instance, and given a misfire grace time so a busy
or suspended process catches up once instead of never.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from apscheduler.job import Job
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.interval import IntervalTrigger

from aggregator.model import DEFAULT_INTERVAL_SECONDS, Schedule, Source

log = logging.getLogger("aggregator.service.scheduler")

JOB_PREFIX = "source:"
MISFIRE_GRACE_SECONDS = 300

JobFunc = Callable[[str], Awaitable[None]]


def job_id(source_id: str) -> str:
    return f"{JOB_PREFIX}{source_id}"


def trigger_for(schedule: Schedule, start: datetime | None = None) -> BaseTrigger:
    """The APScheduler trigger of a watchlist schedule (cron when given, else the interval)."""
    jitter = schedule.jitter_seconds or None
    if schedule.cron:
        trigger = CronTrigger.from_crontab(schedule.cron, timezone=UTC)
        trigger.jitter = jitter
        return trigger
    seconds = schedule.interval_seconds or DEFAULT_INTERVAL_SECONDS
    return IntervalTrigger(seconds=seconds, start_date=start, timezone=UTC, jitter=jitter)


def schedule_key(source: Source) -> tuple[object, ...]:
    """What, when changed, needs the job rebuilt (a changed URL or rules need no new job)."""
    s = source.schedule
    return (s.interval_seconds, s.cron, s.jitter_seconds)


@dataclass(frozen=True, slots=True)
class SyncResult:
    added: tuple[str, ...]
    removed: tuple[str, ...]
    rescheduled: tuple[str, ...]


class SourceScheduler:
    """Keeps one job per enabled source in an ``AsyncIOScheduler``.

    ``first_run_within`` spreads the first runs of new jobs over that many seconds (by a hash of
    the id, so it is stable), so a start with a thousand sources does not fire them at once.
    """

    def __init__(
        self,
        scheduler: AsyncIOScheduler,
        func: JobFunc,
        *,
        misfire_grace_seconds: int = MISFIRE_GRACE_SECONDS,
        first_run_within: float = 0.0,
    ) -> None:
        self.scheduler = scheduler
        self._func = func
        self._misfire = misfire_grace_seconds
        self._first_run_within = first_run_within
        self._keys: dict[str, tuple[object, ...]] = {}

    @property
    def source_ids(self) -> set[str]:
        return set(self._keys)

    def sync(self, sources: Iterable[Source], now: datetime | None = None) -> SyncResult:
        """Add jobs for new sources, remove jobs of removed or disabled ones, rebuild changed."""
        now = now or datetime.now(UTC)
        wanted = {s.id: s for s in sources if s.enabled}
        removed = sorted(set(self._keys) - set(wanted))
        for sid in removed:
            self._remove(sid)
        added: list[str] = []
        rescheduled: list[str] = []
        for sid, source in wanted.items():
            key = schedule_key(source)
            if sid not in self._keys:
                self._add(source, self._first_run(sid, now))
                added.append(sid)
            elif self._keys[sid] != key:
                job = self.scheduler.get_job(job_id(sid))
                keep = job.next_run_time if job is not None else None
                self._remove(sid)
                # A new schedule starts now, unless a backoff already pushed the run later.
                first = max(now, keep) if keep is not None else now
                self._add(source, first)
                rescheduled.append(sid)
        return SyncResult(tuple(sorted(added)), tuple(removed), tuple(sorted(rescheduled)))

    def _first_run(self, source_id: str, now: datetime) -> datetime:
        if self._first_run_within <= 0:
            return now
        spread = (hash_fraction(source_id)) * self._first_run_within
        return now + timedelta(seconds=spread)

    def _add(self, source: Source, first_run: datetime) -> None:
        trigger = trigger_for(source.schedule, start=first_run)
        self.scheduler.add_job(
            self._func,
            trigger=trigger,
            args=[source.id],
            id=job_id(source.id),
            name=f"fetch {source.id}",
            coalesce=True,
            max_instances=1,
            misfire_grace_time=self._misfire,
            next_run_time=first_run,
            replace_existing=True,
        )
        self._keys[source.id] = schedule_key(source)

    def _remove(self, source_id: str) -> None:
        self._keys.pop(source_id, None)
        if self.scheduler.get_job(job_id(source_id)) is not None:
            self.scheduler.remove_job(job_id(source_id))

    def next_run(self, source_id: str) -> datetime | None:
        job: Job | None = self.scheduler.get_job(job_id(source_id))
        return job.next_run_time if job is not None else None

    def defer(self, source_id: str, when: datetime) -> bool:
        """Move the source's next run to ``when`` if that is later (backoff, Retry-After).

        Interval jobs continue their series from there; cron jobs take the next match after it.
        """
        job: Job | None = self.scheduler.get_job(job_id(source_id))
        if job is None or job.next_run_time is None or when <= job.next_run_time:
            return False
        job.modify(next_run_time=when)
        log.debug("next run of %s moved to %s", source_id, when.isoformat())
        return True

    def run_now(self, source_id: str) -> bool:
        job: Job | None = self.scheduler.get_job(job_id(source_id))
        if job is None:
            return False
        job.modify(next_run_time=datetime.now(UTC))
        return True


def hash_fraction(text: str) -> float:
    """A stable number in [0, 1) from a string (Python's ``hash`` is salted per process)."""
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 0x1_0000_0000
