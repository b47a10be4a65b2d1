"""Logging setup: JSON lines for machines, readable text for people, plus a tiny progress bar.

The service runs for months under systemd or Docker, where stderr goes to a journal or a log
collector: one JSON object per line there. On a terminal an admin wants to read the lines, so the
same records print as text. Every line logged while a source is being fetched carries that
source's id (a context variable set by the service, so code of the fetch layer need not pass it
around) and a ``failure_class`` field (``null`` when the line is not about a failure).
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import IO, Any, TypeVar

T = TypeVar("T")

# The source being fetched in the current task; asyncio copies context into each task.
current_source: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "aggregator_current_source", default=None
)

# Attributes every LogRecord has; anything else was passed through ``extra=`` and is printed.
_STANDARD_ATTRS = frozenset(
    vars(logging.LogRecord("x", logging.INFO, "x", 0, "", None, None)).keys()
    | {"message", "asctime", "taskName", "color_message"}
)
_FETCH_LOGGERS = ("aggregator.fetch", "aggregator.pipeline")


class _ContextFilter(logging.Filter):
    """Adds ``source_id`` (from the context) and ``failure_class`` to fetch-related records."""

    def filter(self, record: logging.LogRecord) -> bool:
        source = current_source.get()
        if not hasattr(record, "source_id") and (
            source is not None or record.name.startswith(_FETCH_LOGGERS)
        ):
            record.source_id = source
        if hasattr(record, "source_id") and not hasattr(record, "failure_class"):
            record.failure_class = None
        return True


def _extras(record: logging.LogRecord) -> dict[str, Any]:
    return {k: v for k, v in vars(record).items() if k not in _STANDARD_ATTRS}


def _jsonable(value: Any) -> Any:
    if isinstance(value, str | int | float | bool) or value is None:
        return value
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, list | tuple):
        return [_jsonable(v) for v in value]
    return str(value)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, then every extra field."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in _extras(record).items():
            data[key] = _jsonable(value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``12:00:01 WARNING aggregator.service: message  source_id=x failure_class=timeout``."""

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%H:%M:%S", time.localtime(record.created))
        line = f"{stamp} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = " ".join(
            f"{k}={_jsonable(v)}" for k, v in _extras(record).items() if v is not None
        )
        if fields:
            line = f"{line}  {fields}"
        if record.exc_info:
            line = f"{line}\n{self.formatException(record.exc_info)}"
        return line


def use_json(fmt: str, stream: IO[str]) -> bool:
    """``json``/``text`` force a format; ``auto`` picks text on a terminal, JSON elsewhere."""
    if fmt == "json":
        return True
    if fmt == "text":
        return False
    if fmt != "auto":
        raise ValueError(f"log format must be auto, json or text, not {fmt!r}")
    isatty = getattr(stream, "isatty", None)
    return not (isatty is not None and isatty())


def setup_logging(level: str = "INFO", fmt: str = "auto", stream: IO[str] | None = None) -> None:
    """Configure the root logger once per process (calling again replaces the handler)."""
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(JsonFormatter() if use_json(fmt, out) else TextFormatter())
    handler.addFilter(_ContextFilter())
    root = logging.getLogger()
    for old in [h for h in root.handlers if getattr(h, "_aggregator", False)]:
        root.removeHandler(old)
    handler._aggregator = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())
    # Access logs of every feed poll would drown the fetch lines; errors still show.
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    logging.getLogger("apscheduler").setLevel(logging.WARNING)
    logging.getLogger("httpx").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)


@contextlib.contextmanager
def source_context(source_id: str) -> Iterator[None]:
    """Tag every log line emitted inside the block (and tasks it starts) with ``source_id``."""
    token = current_source.set(source_id)
    try:
        yield
    finally:
        current_source.reset(token)


def progress(
    items: Iterable[T],
    total: int | None = None,
    label: str = "",
    stream: IO[str] | None = None,
) -> Iterator[T]:
    """Yield ``items``, drawing a one-line progress bar on a terminal; silent otherwise.

    For one-shot CLI commands (``import``, ``fetch-once``): ``for x in progress(xs, len(xs))``.
    """
    out = stream if stream is not None else sys.stderr
    isatty = getattr(out, "isatty", None)
    if isatty is None or not isatty():
        yield from items
        return
    done = 0
    last_draw = 0.0
    start = time.monotonic()
    for item in items:
        yield item
        done += 1
        now = time.monotonic()
        if now - last_draw >= 0.1 or done == total:
            last_draw = now
            out.write("\r" + _bar(done, total, label, now - start))
            out.flush()
    out.write("\r" + _bar(done, total, label, time.monotonic() - start) + "\n")
    out.flush()


def _bar(done: int, total: int | None, label: str, elapsed: float) -> str:
    prefix = f"{label} " if label else ""
    if not total:
        return f"{prefix}{done} done ({elapsed:.1f}s)"
    width = 30
    filled = min(width, width * done // total)
    return f"{prefix}[{'#' * filled}{'.' * (width - filled)}] {done}/{total} ({elapsed:.1f}s)"
