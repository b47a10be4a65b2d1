"""One exception tree for the whole service.

Callers catch ``AggregatorError`` at the edges (CLI, scheduler jobs, HTTP handlers); the
subclasses say which stage failed so the edge can decide to log and go on, or exit.
"""

from __future__ import annotations

from dataclasses import dataclass


class AggregatorError(Exception):
    """Base of every error this package raises on purpose."""


@dataclass(frozen=True, slots=True)
class ConfigProblem:
    """One problem in a configuration file, located for the admin."""

    file: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.message}"


class ConfigError(AggregatorError):
    """The watchlist or settings are invalid; ``problems`` lists every one with file:line."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


class RecordFormatError(AggregatorError):
    """A text is not a valid record, or a record file name is malformed."""


class StoreError(AggregatorError):
    """The database refused an operation or is unreachable."""


class FetchError(AggregatorError):
    """A fetch failed; ``failure_class`` is a model.FailureClass value."""

    def __init__(self, failure_class: str, message: str) -> None:
        self.failure_class = failure_class
        super().__init__(message)


class ExtractionError(AggregatorError):
    """A page could not be turned into a record (too large, timed out, no article found)."""


class PublishError(AggregatorError):
    """Published files could not be written (``publish DIR``); the cause is the OSError."""


class FeedParseError(AggregatorError):
    """A fetched document is not a feed we can read."""
