"""What the command line shows besides its results: progress, log lines, errors, counted nouns.

Progress is drawn with rich on standard error, and only when standard error is a terminal: piped,
redirected, under cron or systemd a command prints its result and nothing else, so scripts read
stdout (or ``--json``) undisturbed. Log lines of the library (warnings and errors) print as
``aggregator: warning: ...`` above the progress bar instead of through it.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import os
import sys
from collections.abc import Callable, Iterator, Sequence
from types import TracebackType
from typing import IO, TYPE_CHECKING, Any

from aggregator.errors import AggregatorError

if TYPE_CHECKING:  # rich is imported only when a progress display is drawn (a terminal)
    from rich.console import Console
    from rich.progress import Progress, TaskID

PROG = "aggregator"


class UsageError(AggregatorError):
    """The command was given something it cannot use (an unknown id or topic, a bad value):
    exit status 2, as for argparse's own usage errors."""


def plural(count: int, noun: str, many: str | None = None) -> str:
    """``1 source``, ``2 sources``; ``many`` for irregular plurals (``1 entry``, ``2 entries``)."""
    return f"{count} {noun if count == 1 else (many or noun + 's')}"


def is_terminal(stream: IO[str]) -> bool:
    isatty = getattr(stream, "isatty", None)
    try:
        return bool(isatty is not None and isatty())
    except ValueError:  # a closed stream
        return False


def error(message: str) -> None:
    """``aggregator: error: message`` on standard error (the format argparse uses too)."""
    print(f"{PROG}: error: {message}", file=sys.stderr)


# --------------------------------------------------------------------------------------------
# progress
# --------------------------------------------------------------------------------------------

_live: Console | None = None  # the console of the progress display on screen, if any


class Task:
    """One line of a progress display; does nothing when the display is off."""

    def __init__(self, progress: Progress | None, task_id: TaskID | None) -> None:
        self._progress = progress
        self._id = task_id

    def update(
        self, done: int | None = None, total: int | None = None, label: str | None = None
    ) -> None:
        if self._progress is None or self._id is None:
            return
        self._progress.update(self._id, completed=done, total=total, description=label)

    def advance(self, steps: int = 1) -> None:
        if self._progress is not None and self._id is not None:
            self._progress.advance(self._id, steps)

    def hook(self, labels: dict[str, str] | None = None) -> Callable[[str, int, int], None]:
        """A ``progress(stage, done, total)`` callback (``ingest_driver.ProgressHook``) drawing on
        this line, the stage shown by its label in ``labels``."""
        names = labels or {}

        shown: list[str] = []

        def tell(stage: str, done: int, total: int) -> None:
            self.update(done=done, total=total, label=names.get(stage, stage))
            if self._progress is not None and shown[-1:] != [stage]:
                shown.append(stage)
                self._progress.refresh()  # each stage on screen, however fast it goes

        return tell


def _count_column() -> Any:
    """``120/369``; nothing while the total is unknown (a spinner and the time say enough)."""
    from rich.progress import ProgressColumn
    from rich.progress import Task as RichTask
    from rich.text import Text

    class _Count(ProgressColumn):
        def render(self, task: RichTask) -> Text:
            if task.total is None:
                return Text("")
            return Text(f"{int(task.completed)}/{int(task.total)}")

    return _Count()


class Display:
    """The progress display of one command: ``with Display() as shown: task = shown.task(...)``.

    On when ``stream`` (standard error) is a terminal, unless ``enabled`` says otherwise; the bars
    disappear when the command ends, leaving only its result on the screen.
    """

    def __init__(self, stream: IO[str] | None = None, *, enabled: bool | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self.enabled = is_terminal(self._stream) if enabled is None else enabled
        self._progress: Progress | None = None

    def __enter__(self) -> Display:
        global _live
        if self.enabled:
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                Progress,
                SpinnerColumn,
                TextColumn,
                TimeElapsedColumn,
            )

            console = Console(file=self._stream, stderr=self._stream is sys.stderr)
            self._progress = Progress(
                SpinnerColumn(),
                TextColumn("{task.description}"),
                BarColumn(),
                _count_column(),
                TimeElapsedColumn(),
                console=console,
                transient=True,
            )
            self._progress.start()
            _live = console
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        global _live
        if self._progress is not None:
            self._progress.stop()
            self._progress = None
            _live = None

    def task(self, label: str, total: int | None = None) -> Task:
        if self._progress is None:
            return Task(None, None)
        return Task(self._progress, self._progress.add_task(label, total=total))


# --------------------------------------------------------------------------------------------
# log lines
# --------------------------------------------------------------------------------------------


class _CliHandler(logging.Handler):
    """``aggregator: warning: message`` on standard error, above a live progress bar."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = f"{PROG}: {record.levelname.lower()}: {record.getMessage()}"
            if record.exc_info and record.levelno >= logging.ERROR:
                line += f" ({record.exc_info[1]!r})"
            if _live is not None:
                _live.print(line, markup=False, highlight=False, soft_wrap=True)
            else:
                print(line, file=sys.stderr)
        except Exception:
            self.handleError(record)


@contextlib.contextmanager
def cli_logging(level: int = logging.WARNING) -> Iterator[None]:
    """Log lines of a one-shot command, for its duration: warnings and errors, one line each,
    no tracebacks (the command's own error message says what to do)."""
    root = logging.getLogger()
    handler = _CliHandler(level)
    old_level = root.level
    root.addHandler(handler)
    root.setLevel(min(level, old_level) if old_level else level)
    try:
        yield
    finally:
        root.removeHandler(handler)
        root.setLevel(old_level)


@contextlib.contextmanager
def quiet_loggers(names: Sequence[str], level: int = logging.ERROR) -> Iterator[None]:
    """Raise the level of ``names`` for the block (their lines are shown another way)."""
    loggers = [logging.getLogger(name) for name in names]
    before = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(level)
    try:
        yield
    finally:
        for logger, old in zip(loggers, before, strict=True):
            logger.setLevel(old)


# --------------------------------------------------------------------------------------------
# operating-system errors
# --------------------------------------------------------------------------------------------

_ADVICE = {
    errno.ENOSPC: "the disk is full: free some space on it (df -h shows which) and run again",
    errno.EDQUOT: "the disk quota is used up: free some space or raise the quota, then run again",
    errno.EROFS: "the file system is read-only: choose a writable place",
    errno.EACCES: "permission denied: run as the user that owns it, or change its permissions",
    errno.EPERM: "operation not permitted: run as the user that owns it",
    errno.ENOTDIR: "a path on the way is a file, not a folder: give a folder",
    errno.EISDIR: "it is a folder: give a file",
    errno.ENOENT: "no such file or folder: check the path",
    errno.EEXIST: "it exists already",
    errno.EIO: "the disk reported an input/output error: check the device (dmesg)",
}


def advice(exc: OSError) -> str:
    """What to do about an operating-system error, in a few words."""
    return _ADVICE.get(exc.errno or 0, "check the path and the device, then run again")


def describe_os_error(exc: OSError, doing: str | None = None) -> str:
    """One line naming what failed, on which path, why, and what to do."""
    where = exc.filename
    reason = exc.strerror or str(exc)
    what_to_do = advice(exc)
    parts = [doing] if doing else []
    if where is not None and not (doing and os.fsdecode(where) in doing):
        parts.append(os.fsdecode(where))
    head = ": ".join(parts) if parts else "input/output error"
    return f"{head}: {reason} ({what_to_do})"
