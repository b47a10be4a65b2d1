"""The watchlist: topics with match rules, sources with schedules, and service options.

``config/watchlist.yaml`` is read with PyYAML (keeping every node's line) and validated with
pydantic (unknown keys refused) plus the checks a schema cannot express: URLs, schedules, rule
terms, CSS selectors, duplicate ids, references between sources and topics. Every problem is
reported as ``file:line: message``, all of them at once, so an admin fixes the file in one pass.
docs/watchlist.md documents every key.
"""

from __future__ import annotations

import copy
import difflib
import ipaddress
import logging
import os
import re
import socket
import typing
from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from pathlib import Path
from typing import Any, Literal
from urllib.parse import quote, quote_plus, urlsplit

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    create_model,
    field_validator,
    model_validator,
)

from aggregator.errors import ConfigError, ConfigProblem
from aggregator.match import FIELDS, TermError, parse_term
from aggregator.model import (
    DEFAULT_INTERVAL_SECONDS,
    AlertOptions,
    AlertRule,
    DedupOptions,
    FetchPolicy,
    PageSelectors,
    PublishOptions,
    Schedule,
    Source,
    SourceKind,
    Topic,
    TopicRules,
    WatchlistLimits,
)
from aggregator.settings import Settings

__all__ = [
    "DEFAULT_SCHEDULE",
    "Watchlist",
    "check_watchlist",
    "limits_of",
    "load_watchlist",
    "load_watchlist_text",
    "parse_duration",
    "validate_watchlist",
]

SUPPORTED_VERSION = 1
DEFAULT_SCHEDULE = Schedule(interval_seconds=DEFAULT_INTERVAL_SECONDS)
DEFAULT_RETENTION_DAYS = 365
MIN_INTERVAL_SECONDS = 30  # politeness: no source is polled more often than this
MAX_INTERVAL_SECONDS = 30 * 24 * 3600
QUERY_PLACEHOLDER = "{query}"

_ID_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
_DURATION_RE = re.compile(r"^(?:(\d+)\s*([smhd])\s*)+$")
_DURATION_PART_RE = re.compile(r"(\d+)\s*([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_LANGUAGE_RE = re.compile(r"^[A-Za-z]{2,3}(?:-[A-Za-z0-9]{2,8})*$")

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Watchlist:
    """A validated watchlist. Sources carry their final URL (query sources resolved), their
    schedule and defaults applied; ``path`` is the file it was read from."""

    topics: tuple[Topic, ...]
    sources: tuple[Source, ...]
    fetch: FetchPolicy
    publish: PublishOptions
    dedup: DedupOptions
    retention_days: int
    path: str
    alerts: AlertOptions = field(default_factory=AlertOptions)

    def topic(self, topic_id: str) -> Topic | None:
        return next((t for t in self.topics if t.id == topic_id), None)

    def source(self, source_id: str) -> Source | None:
        return next((s for s in self.sources if s.id == source_id), None)


# --- durations and schedules -----------------------------------------------------------------


def parse_duration(value: object) -> int:
    """Seconds in ``90s``, ``15m``, ``2h``, ``1d``, ``1h30m``, or a plain number of seconds."""
    if isinstance(value, bool):
        raise ValueError(f"expected a duration such as 90s, 15m, 2h or 1d, got {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise ValueError(f"a duration cannot be negative, got {value}")
        return value
    text = str(value).strip().lower() if isinstance(value, str) else ""
    if not _DURATION_RE.match(text):
        raise ValueError(f"bad duration {value!r}: write e.g. 90s, 15m, 2h, 1d or 1h30m")
    return sum(int(n) * _UNIT_SECONDS[u] for n, u in _DURATION_PART_RE.findall(text))


def _check_cron(expr: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(expr, timezone="UTC")
    except ValueError as exc:
        raise ValueError(
            f"bad cron expression {expr!r}: {exc} (five fields: minute hour day month weekday)"
        ) from None
    return expr


# --- schema (pydantic) -------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ScheduleModel(_Strict):
    every: int | None = None  # seconds, from a duration such as 15m
    cron: str | None = None
    jitter: int | None = None  # seconds; None: the default schedule's jitter

    @field_validator("every", mode="before")
    @classmethod
    def _every(cls, value: object) -> int | None:
        if value is None:
            return None
        seconds = parse_duration(value)
        if seconds < MIN_INTERVAL_SECONDS:
            raise ValueError(
                f"{value!r} is too often; the minimum is {MIN_INTERVAL_SECONDS}s "
                "(be polite to the sites you fetch)"
            )
        if seconds > MAX_INTERVAL_SECONDS:
            raise ValueError(f"{value!r} is longer than the maximum of 30d")
        return seconds

    @field_validator("jitter", mode="before")
    @classmethod
    def _jitter(cls, value: object) -> int | None:
        return None if value is None else parse_duration(value)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str | None) -> str | None:
        return None if value is None else _check_cron(value)

    @model_validator(mode="after")
    def _one_kind(self) -> ScheduleModel:
        if (self.every is None) == (self.cron is None):
            raise ValueError(
                "give exactly one of 'every' (e.g. every: 15m) or 'cron' "
                '(e.g. cron: "*/15 * * * *")'
            )
        return self

    def to_schedule(self, default_jitter: int = 0) -> Schedule:
        jitter = default_jitter if self.jitter is None else self.jitter
        return Schedule(interval_seconds=self.every, cron=self.cron, jitter_seconds=jitter)


class SelectorsModel(_Strict):
    item: str
    link: str = "a"
    title: str | None = None
    date: str | None = None
    body: str | None = None


FieldName = Literal["title", "lead", "body"]
_ALL_FIELDS: tuple[FieldName, ...] = ("title", "lead", "body")
assert _ALL_FIELDS == FIELDS  # match's field names; a new one must be added here too


class RulesModel(_Strict):
    any: list[str] = Field(default_factory=list)
    all: list[str] = Field(default_factory=list)
    none: list[str] = Field(default_factory=list)
    fields: list[FieldName] = Field(default_factory=lambda: list(_ALL_FIELDS))


class TopicModel(_Strict):
    id: str
    title: str
    description: str = ""
    rules: RulesModel


class SourceModel(_Strict):
    id: str
    kind: Literal["feed", "query", "page"] = "feed"
    title: str = ""
    url: str | None = None
    query: str | None = None
    url_template: str | None = None
    selectors: SelectorsModel | None = None
    schedule: ScheduleModel | None = None
    topics: list[str] = Field(default_factory=list)
    full_text: bool | None = None
    language: str | None = None
    enabled: bool = True
    offsite_links: bool = False


class AlertRuleModel(_Strict):
    id: str
    topics: list[str] = Field(default_factory=list)
    push: list[str] = Field(default_factory=list)
    digest: list[str] = Field(default_factory=list)
    digest_at: str = "08:00"


_ALERT_DEFAULTS = AlertOptions()


class AlertsModel(_Strict):
    rules: list[AlertRuleModel] = Field(default_factory=list)
    max_attempts: int = _ALERT_DEFAULTS.max_attempts
    retry_seconds: int = _ALERT_DEFAULTS.retry_seconds
    check_seconds: int = _ALERT_DEFAULTS.check_seconds
    lease_seconds: int = _ALERT_DEFAULTS.lease_seconds
    batch_size: int = _ALERT_DEFAULTS.batch_size
    catch_up_hours: int = _ALERT_DEFAULTS.catch_up_hours


class DefaultsModel(_Strict):
    schedule: ScheduleModel | None = None
    full_text: bool = False
    language: str | None = None
    url_template: str | None = None  # for query sources that give none


def _options_model(cls: type[Any]) -> type[BaseModel]:
    """A strict pydantic model with the fields and defaults of an options dataclass, so new
    model fields become configurable without touching this module."""
    hints = typing.get_type_hints(cls)
    spec: dict[str, Any] = {}
    for f in fields(cls):
        factory: Any = f.default_factory
        default = f.default if f.default is not MISSING else factory()
        spec[f.name] = (hints[f.name], default)
    model: type[BaseModel] = create_model(
        f"{cls.__name__}Model", __config__=ConfigDict(extra="forbid"), **spec
    )
    return model


_FETCH_MODEL = _options_model(FetchPolicy)
_PUBLISH_MODEL = _options_model(PublishOptions)
_DEDUP_MODEL = _options_model(DedupOptions)

_TOP_LEVEL_KEYS = (
    "version",
    "defaults",
    "fetch",
    "publish",
    "dedup",
    "retention_days",
    "topics",
    "sources",
    "alerts",
)
_REQUIRED_TOP_LEVEL = ("topics", "sources")


# --- YAML with line numbers ------------------------------------------------------------------

# libyaml composes a 10,000-source watchlist 8x faster than the pure-Python loader and in about
# half the memory (a peak the daemon keeps as resident memory). Its nodes carry the same marks.
# The pure-Python loader stays the fallback: when PyYAML was built without libyaml, and to word
# syntax errors, so a broken file is reported on the same line with the same message either way.
# (libyaml accepts a few forms the YAML spec allows and the pure-Python scanner refuses, such as a
# tab after a key's colon or before a comment.)
if typing.TYPE_CHECKING:
    _Loader = yaml.SafeLoader | yaml.CSafeLoader
_FAST_LOADER: type[yaml.CSafeLoader] | None = getattr(yaml, "CSafeLoader", None)


class _Lines:
    """Line numbers (1-based) of every value and mapping key in a YAML document, by path."""

    def __init__(self) -> None:
        self.value: dict[Path_, int] = {}
        self.key: dict[Path_, int] = {}

    def of(self, path: Sequence[str | int]) -> int:
        """The line of ``path``, or of its deepest ancestor present in the document."""
        p = tuple(path)
        while p:
            # A key's own line: a block mapping or list under it starts on the next line.
            line = self.key.get(p) or self.value.get(p)
            if line:
                return line
            p = p[:-1]
        return self.value.get((), 1)


def _walk(
    node: yaml.Node,
    loader: _Loader,
    path: Path_,
    lines: _Lines | None,
    problems: list[tuple[int, str]],
) -> None:
    if lines is not None:
        lines.value[path] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        seen: dict[object, int] = {}
        kept: list[tuple[yaml.Node, yaml.Node]] = []
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                kept.append((key_node, value_node))
                continue
            key = loader.construct_object(key_node, deep=True)
            line = key_node.start_mark.line + 1
            if not isinstance(key, str | int) or isinstance(key, bool):
                problems.append((line, f"{_dotted(path) or 'top level'}: keys must be names"))
                continue
            if key in seen:
                problems.append((line, f"duplicate key '{key}' (first at line {seen[key]})"))
                continue
            seen[key] = line
            kept.append((key_node, value_node))
            if lines is not None:
                lines.key[(*path, key)] = line
            _walk(value_node, loader, (*path, key), lines, problems)
        # PyYAML would let the last duplicate win silently; keep the first, reported above.
        node.value[:] = kept
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _walk(item, loader, (*path, i), lines, problems)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _expansion_problem(root: yaml.Node, limits: WatchlistLimits) -> tuple[int, str] | None:
    """Why the document is refused before it is walked: it expands (every alias replaced by
    what it names) to more than ``limits.max_nodes`` values, nests deeper than
    ``limits.max_depth``, or an alias names its own ancestor. Visits each node once."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        line = node.start_mark.line + 1
        if finished:
            open_.discard(key)
            children = _children(node)
            total = 1 + sum(size[id(c)] for c in children)
            deepest = 1 + max((depth[id(c)] for c in children), default=0)
            if total > limits.max_nodes:
                return line, (
                    f"the watchlist has more than {limits.max_nodes:,} values, counting "
                    "each YAML alias (*name) as a copy of what it names; refused (an alias "
                    "bomb? the limit is AGGREGATOR_WATCHLIST_MAX_NODES)"
                )
            if deepest > limits.max_depth:
                return line, f"lists or mappings nested too deeply (limit {limits.max_depth})"
            size[key], depth[key] = total, deepest
            continue
        if key in size:
            continue
        if key in open_:
            return line, "a YAML alias refers to a value that contains it (a cycle); refused"
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    return None


def _error_line(text: str, exc: yaml.MarkedYAMLError) -> int:
    """The line to blame: where the problem was found, unless that is the end of the file (an
    unclosed quote or bracket), where the construct that was left open began."""
    last_content = max((i + 1 for i, ln in enumerate(text.splitlines()) if ln.strip()), default=1)
    problem, context = exc.problem_mark, exc.context_mark
    opened_by = ("while parsing a flow", "while scanning a simple key")
    if context is not None and (exc.context or "").startswith(opened_by):
        # An unclosed [ or {, or a key without its colon, runs into the next lines: blame the
        # line where it began.
        return context.line + 1
    if problem is not None:
        # A quote left open swallows the following lines and the parser notices only later.
        opened = _last_multiline_quote(text, problem.line + 1)
        if opened is not None:
            return opened
    if problem is not None and problem.line + 1 <= last_content:
        return problem.line + 1
    if context is not None:
        return context.line + 1
    return last_content


def _last_multiline_quote(text: str, problem_line: int) -> int | None:
    """The line where a quoted scalar begins that runs over line breaks up to the problem line
    (a quote left open), or None."""
    quote: str | None = None
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if number > problem_line:
            break
        i = 0
        while i < len(line):
            ch = line[i]
            if quote is None:
                if ch == "#" and (i == 0 or line[i - 1].isspace()):
                    break
                prev = line[:i].rstrip()
                at_scalar_start = not prev or prev[-1] in ":-[{," or prev.endswith("? ")
                if ch in "\"'" and at_scalar_start:
                    quote, start = ch, number
            elif quote == '"' and ch == "\\":
                i += 1
            elif ch == quote:
                if quote == "'" and line[i + 1 : i + 2] == "'":
                    i += 1
                else:
                    quote = None
                    if start < number == problem_line:
                        return start  # it closed only on the problem line
            i += 1
    return start if quote is not None and start < problem_line else None


def _read_yaml(
    text: str,
    problems: list[tuple[int, str]],
    *,
    with_lines: bool = True,
    limits: WatchlistLimits = WatchlistLimits(),
) -> tuple[object, _Lines]:
    """The document's data and the lines of its values; without ``with_lines``, the lines are
    left out when libyaml reads the file (a caller that finds problems asks again with them)."""
    if _FAST_LOADER is not None:
        fast_problems: list[tuple[int, str]] = []
        try:
            data, lines = _compose(
                _FAST_LOADER(text), fast_problems, with_lines=with_lines, limits=limits
            )
        except yaml.MarkedYAMLError as exc:
            if "maximum nesting depth" in str(exc.problem):  # the pure-Python one would recurse
                mark = exc.problem_mark
                line = mark.line + 1 if mark is not None else 1
                problems.append((line, f"lists or mappings nested too deeply: {exc.problem}"))
                return None, _Lines()
            # otherwise the pure-Python loader below reports it as it always has
        except yaml.YAMLError:
            pass  # the pure-Python loader below reports it as it always has
        else:
            problems.extend(fast_problems)
            return data, lines
    try:
        return _compose(yaml.SafeLoader(text), problems, limits=limits)
    except RecursionError:
        # The pure-Python composer recurses once per level; libyaml stops at 1,000 levels.
        problems.append((1, f"lists or mappings nested too deeply (limit {limits.max_depth})"))
        return None, _Lines()
    except yaml.MarkedYAMLError as exc:
        line = _error_line(text, exc)
        message = " ".join(p for p in (exc.context, exc.problem) if p)
        problems.append((line, f"YAML syntax error: {message or exc}"))
        return None, _Lines()
    except yaml.YAMLError as exc:
        problems.append((1, f"YAML error: {exc}"))
        return None, _Lines()


def _compose(
    loader: _Loader,
    problems: list[tuple[int, str]],
    *,
    with_lines: bool = True,
    limits: WatchlistLimits = WatchlistLimits(),
) -> tuple[object, _Lines]:
    """The document's data and lines; YAML errors propagate."""
    lines = _Lines()
    try:
        node = loader.get_single_node()
        if node is None:
            problems.append((1, "the watchlist is empty"))
            return None, lines
        # Aliases make a graph of the nodes: measured on the graph (each node once), the
        # document's expanded size is known before anything walks or builds the expansion.
        if (too_big := _expansion_problem(node, limits)) is not None:
            problems.append(too_big)
            return None, lines
        # Walk before constructing: construction flattens merge keys (<<) into the mappings,
        # and only keys written in the file can be duplicates.
        _walk(node, loader, (), lines if with_lines else None, problems)
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    return data, lines


# --- problems ----------------------------------------------------------------------------------


def _dotted(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


class _Report:
    def __init__(self, file: str, lines: _Lines) -> None:
        self.file = file
        self.lines = lines
        self.problems: list[ConfigProblem] = []

    def add(self, path: Sequence[str | int], message: str) -> None:
        self.problems.append(ConfigProblem(self.file, self.lines.of(path), message))

    def add_line(self, line: int, message: str) -> None:
        self.problems.append(ConfigProblem(self.file, line, message))

    def pydantic(self, base: Path_, exc: ValidationError, model: type[BaseModel]) -> None:
        for err in exc.errors():
            loc = tuple(p for p in err["loc"] if isinstance(p, str | int))
            path = _data_path(base, loc, model)
            kind = err["type"]
            where = _dotted(base) or "top level"
            if kind == "extra_forbidden":
                key = str(loc[-1]) if loc else "?"
                allowed = _allowed_keys(model, loc[:-1])
                hint = difflib.get_close_matches(key, allowed, n=1)
                suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
                parent = _dotted(path[:-1]) or where
                self.add(
                    path,
                    f"unknown key '{key}' in {parent}{suggestion}; allowed: {', '.join(allowed)}",
                )
            elif kind == "missing":
                key = str(loc[-1]) if loc else "?"
                self.add(path[:-1], f"missing required key '{key}' in {_dotted(path[:-1])}")
            else:
                message = err["msg"].removeprefix("Value error, ")
                got = err.get("input")
                shown = ""
                if kind in {"literal_error", "bool_parsing", "int_parsing", "float_parsing"}:
                    shown = f" (got {got!r})"
                elif kind.endswith("_type"):
                    shown = f" (got {_yaml_type(got)})"
                self.add(path, f"{_dotted(path)}: {message}{shown}")


def _yaml_type(value: object) -> str:
    if isinstance(value, Mapping):
        return "a mapping: quote a value that contains ': '"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing"
    return f"{type(value).__name__} {value!r}"


def _data_path(base: Path_, loc: Sequence[str | int], model: type[BaseModel]) -> Path_:
    """``loc`` of a pydantic error as a path into the YAML data (union-member tags dropped)."""
    path: list[str | int] = list(base)
    current: Any = model
    for part in loc:
        if isinstance(part, int):
            path.append(part)
            continue
        if current is None:
            break  # a union member's tag, not a key of the document
        field = current.model_fields.get(part)
        path.append(part)
        current = _inner_model(field.annotation) if field is not None else None
    return tuple(path)


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    for arg in typing.get_args(annotation):
        found = _inner_model(arg)
        if found is not None:
            return found
    return None


def _allowed_keys(model: type[BaseModel], loc: Sequence[str | int]) -> list[str]:
    current: type[BaseModel] | None = model
    for part in loc:
        if isinstance(part, int) or current is None:
            continue
        field = current.model_fields.get(part)
        current = _inner_model(field.annotation) if field is not None else None
    return list(current.model_fields) if current is not None else []


# --- semantic checks ---------------------------------------------------------------------------


def url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable http(s) URL, or None."""
    if not url or url != url.strip() or any(c.isspace() for c in url):
        return f"bad URL {url!r}: it must not be empty or contain spaces"
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        return f"bad URL {url!r}: {exc}"
    if parts.scheme not in ("http", "https"):
        return f"bad URL {url!r}: only http:// and https:// URLs can be fetched"
    if not parts.hostname:
        return f"bad URL {url!r}: no host name"
    if port == 0:
        return f"bad URL {url!r}: port 0"
    return None


# Cloud instance metadata services: credentials live behind them. The fetch guard refuses them
# when dialled; the watchlist refuses to name them at all, so the mistake shows at load.
_METADATA_NETWORKS = tuple(
    ipaddress.ip_network(n)
    for n in ("169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32")
)
_METADATA_NAMES = frozenset(
    {
        "metadata",
        "metadata.google.internal",
        "metadata.goog",
        "instance-data",
        "instance-data.ec2.internal",
        "metadata.tencentyun.com",
    }
)


def metadata_problem(url: str, allow_networks: Sequence[str] = ()) -> str | None:
    """Why ``url`` is refused as naming a cloud metadata (link-local) address, or None.

    Numeric hosts in every form the C resolver accepts count (``0xa9fea9fe``, ``2852039166``,
    ``[::ffff:169.254.169.254]``); ``allow_networks`` (the fetch section's) can allow one."""
    try:
        host = (urlsplit(url).hostname or "").rstrip(".").lower()
    except ValueError:
        return None
    if host in _METADATA_NAMES:
        return f"its host {host!r} is a cloud metadata service; refused"
    ip = _numeric_ip(host)
    if ip is None:
        return None
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    if not any(ip.version == n.version and ip in n for n in _METADATA_NETWORKS):
        return None
    for cidr in allow_networks:
        try:
            net = ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            continue
        if ip.version == net.version and ip in net:
            return None
    return (
        f"its host {host} is a link-local / cloud metadata address ({ip}); refused "
        "(fetch.allow_networks can allow it)"
    )


def _numeric_ip(host: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def css_problem(selector: str) -> str | None:
    """Why ``selector`` is not a CSS selector selectolax can use, or None."""
    from selectolax.lexbor import LexborHTMLParser

    if not selector.strip():
        return "empty CSS selector"
    try:
        LexborHTMLParser("<p></p>").css(selector)
    except Exception as exc:  # selectolax raises its own error type for bad selectors
        return f"invalid CSS selector {selector!r}: {exc}"
    return None


def build_query_url(template: str, query: str) -> str:
    """The template with ``{query}`` replaced by the URL-encoded query (``+`` for spaces in a
    query string, ``%20`` in a path)."""
    before = template.split(QUERY_PLACEHOLDER, 1)[0]
    encoded = quote_plus(query) if "?" in before else quote(query, safe="")
    return template.replace(QUERY_PLACEHOLDER, encoded)


def _check_id(report: _Report, path: Path_, value: str, what: str) -> None:
    if not _ID_RE.match(value):
        report.add(
            path,
            f"{what} id {value!r} must be lowercase letters, digits, '-' or '_' (it appears in "
            "feed URLs), starting with a letter or digit, at most 64 characters",
        )


def _check_language(report: _Report, path: Path_, value: str | None) -> None:
    if value is not None and not _LANGUAGE_RE.match(value):
        report.add(path, f"{_dotted(path)}: {value!r} is not a language code such as en, lt, ru")


def _check_terms(report: _Report, base: Path_, rules: RulesModel) -> None:
    for key in ("any", "all", "none"):
        terms: list[str] = getattr(rules, key)
        seen: set[str] = set()
        for i, term in enumerate(terms):
            try:
                parse_term(term)
            except TermError as exc:
                report.add((*base, key, i), f"bad rule term in {key}: {exc}")
            if term in seen:
                report.add((*base, key, i), f"term {term!r} is listed twice in {key}")
            seen.add(term)
    excluded = set(rules.none)
    for key in ("any", "all"):
        for i, term in enumerate(getattr(rules, key)):
            if term in excluded:
                report.add(
                    (*base, key, i),
                    f"term {term!r} is in both {key} and none: a record it matches is excluded",
                )
    if not rules.any and not rules.all:
        report.add(base, "a topic's rules need at least one term in 'any' or 'all'")
    if not rules.fields:
        report.add((*base, "fields"), "rules.fields must name at least one of title, lead, body")


# --- building the watchlist --------------------------------------------------------------------


def _validate(
    report: _Report, path: Path_, model: type[BaseModel], data: object
) -> BaseModel | None:
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        report.add(path, f"{_dotted(path)} must be a mapping of keys to values")
        return None
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        report.pydantic(path, exc, model)
        errors = exc.errors()
    # Validate again without the keys in error, so the checks that need a valid item (rule
    # terms, selectors, duplicate ids) still run and the admin sees every problem at once.
    # Errors of this second pass (a required key now missing) were reported above.
    locs = [tuple(e["loc"]) for e in errors]
    for deepest in (True, False):
        try:
            return model.model_validate(_without(dict(data), locs, deepest=deepest))
        except ValidationError:
            continue
    return None


def _without(
    data: dict[str, Any], locs: Sequence[tuple[str | int, ...]], *, deepest: bool
) -> dict[str, Any]:
    """A copy of ``data`` without the deepest (or the outermost) key on each error location."""
    out = copy.deepcopy(data)
    for loc in locs:
        keys = [i for i, part in enumerate(loc) if isinstance(part, str)]
        if not keys:
            continue
        cut = keys[-1] if deepest else keys[0]
        parent: Any = out
        for part in loc[:cut]:
            try:
                parent = parent[part]
            except (KeyError, IndexError, TypeError):
                parent = None
                break
        if isinstance(parent, dict):
            parent.pop(loc[cut], None)
    return out


def _check_option_numbers(report: _Report, section: str, values: BaseModel) -> None:
    for name, value in values.model_dump().items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            continue
        # Counts of retries and waits may be zero; limits and timeouts must be positive.
        zero_ok = name in {
            "retries",
            "min_host_interval_seconds",
            "window_days",
            "news_cycle_days",
            "head_share",
            "names_share",
            "action_penalty",
            "headline_size_preference",
            "headline_words",
            "ingest_hold_seconds",
        }
        if value < 0 or (value == 0 and not zero_ok):
            report.add((section, name), f"{section}.{name}: must be {'>= 0' if zero_ok else '> 0'}")


def _fetch_policy(report: _Report, data: object) -> FetchPolicy:
    model = _validate(report, ("fetch",), _FETCH_MODEL, data)
    if model is None:
        return FetchPolicy()
    _check_option_numbers(report, "fetch", model)
    values = model.model_dump()
    for i, cidr in enumerate(values.get("allow_networks", ())):
        try:
            ipaddress.ip_network(cidr, strict=True)
        except ValueError as exc:
            report.add(("fetch", "allow_networks", i), f"bad network {cidr!r}: {exc}")
    if "user_agent" in values and not str(values["user_agent"]).strip():
        report.add(("fetch", "user_agent"), "fetch.user_agent must not be empty")
    return FetchPolicy(**values)


def _publish_options(report: _Report, data: object) -> PublishOptions:
    model = _validate(report, ("publish",), _PUBLISH_MODEL, data)
    if model is None:
        return PublishOptions()
    _check_option_numbers(report, "publish", model)
    values = model.model_dump()
    for key in ("base_url", "websub_hub"):
        if values.get(key) is not None and (problem := url_problem(values[key])):
            report.add(("publish", key), f"publish.{key}: {problem}")
    if (problem := timezone_problem(values.get("timezone", "UTC"))) is not None:
        report.add(("publish", "timezone"), f"publish.timezone: {problem}")
    return PublishOptions(**values)


def timezone_problem(name: object) -> str | None:
    """Why ``name`` is not an IANA time zone this system knows (None when it is)."""
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    if not isinstance(name, str) or not name.strip():
        return f"expected a time zone name such as Europe/Vilnius or UTC, got {name!r}"
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return f"unknown time zone {name!r} (write an IANA name such as Europe/Vilnius or UTC)"
    return None


_DIGEST_AT = re.compile(r"^([01]\d|2[0-3]):[0-5]\d$")


def apprise_problem(url: str) -> str | None:
    """Why Apprise cannot use ``url`` (None when it can). The URL is not repeated: it may hold
    a password or token."""
    import apprise

    if not url.strip():
        return "an empty URL"
    with apprise.LogCapture(level=logging.ERROR):
        if apprise.Apprise.instantiate(url) is None:
            return (
                "Apprise does not understand this URL (see https://github.com/caronc/apprise/wiki "
                "for the services and their URL forms)"
            )
    return None


def _alert_options(report: _Report, data: object, topic_names: set[str]) -> AlertOptions:
    """The ``alerts:`` section: options and rules, each problem with its line."""
    if data is None:
        return AlertOptions()
    model = _validate(report, ("alerts",), AlertsModel, data)
    if not isinstance(model, AlertsModel):
        return AlertOptions()
    for name, value in model.model_dump(exclude={"rules"}).items():
        if value < 1:
            report.add(("alerts", name), f"alerts.{name}: must be > 0")
    rules: list[AlertRule] = []
    first: dict[str, int] = {}
    for i, rule in enumerate(model.rules):
        where = f"alerts.rules[{i}]"
        path: Path_ = ("alerts", "rules", i)
        if not _ID_RE.match(rule.id):
            report.add(
                (*path, "id"),
                f"{where}.id: {rule.id!r} must be lower-case letters, digits, '-' or '_'",
            )
        elif rule.id in first:
            report.add(
                (*path, "id"), f"{where}.id: duplicate id {rule.id!r} (rules[{first[rule.id]}])"
            )
        first.setdefault(rule.id, i)
        for j, topic in enumerate(rule.topics):
            if topic not in topic_names:
                report.add((*path, "topics", j), f"{where}.topics[{j}]: unknown topic {topic!r}")
        for kind in ("push", "digest"):
            for j, url in enumerate(getattr(rule, kind)):
                if (problem := apprise_problem(url)) is not None:
                    report.add((*path, kind, j), f"{where}.{kind}[{j}]: {problem}")
        if not rule.push and not rule.digest:
            report.add(path, f"{where}: give 'push' or 'digest' URLs (or both)")
        if not _DIGEST_AT.match(rule.digest_at):
            report.add(
                (*path, "digest_at"),
                f"{where}.digest_at: {rule.digest_at!r} is not a time of day (write HH:MM)",
            )
        rules.append(
            AlertRule(
                id=rule.id,
                topics=tuple(dict.fromkeys(rule.topics)),
                push=tuple(dict.fromkeys(rule.push)),
                digest=tuple(dict.fromkeys(rule.digest)),
                digest_at=rule.digest_at,
            )
        )
    values = model.model_dump(exclude={"rules"})
    return AlertOptions(rules=tuple(rules), **values)


def _dedup_options(report: _Report, data: object) -> DedupOptions:
    if isinstance(data, Mapping) and "semantic" in data:
        # The semantic mode was removed (docs/dedup.md, "No semantic mode"): "semantic: false",
        # the old default line, still reads; asking for it is an error, not a silent change.
        if data["semantic"] is not False:
            report.add(
                ("dedup", "semantic"),
                "dedup.semantic: the semantic mode was removed (docs/dedup.md, "
                '"No semantic mode"); delete the line',
            )
        data = {k: v for k, v in data.items() if k != "semantic"}
    model = _validate(report, ("dedup",), _DEDUP_MODEL, data)
    if model is None:
        return DedupOptions()
    _check_option_numbers(report, "dedup", model)
    values = model.model_dump()
    for key in (
        "article_threshold",
        "headline_threshold",
        "headline_terms_threshold",
        "near_duplicate",
        "action_penalty",
    ):
        if values[key] > 1:
            report.add(("dedup", key), f"dedup.{key}: must be <= 1")
    if values["head_share"] + values["names_share"] > 1:
        report.add(("dedup", "head_share"), "dedup.head_share + names_share: must be <= 1")
    return DedupOptions(**values)


def _items(report: _Report, data: Mapping[str, object], key: str) -> list[tuple[int, object]]:
    value = data.get(key)
    if value is None:
        if key in data:
            report.add((key,), f"'{key}' is empty: give a list")
        return []
    if not isinstance(value, list):
        report.add((key,), f"'{key}' must be a list (items start with '- ')")
        return []
    return list(enumerate(value))


def _topics(report: _Report, data: Mapping[str, object]) -> tuple[list[Topic], set[str]]:
    """Valid topics, and every topic id the file names (even in an invalid topic), so that
    sources referring to a topic with a typo elsewhere are not reported twice."""
    topics: list[Topic] = []
    first_line: dict[str, int] = {}
    names: set[str] = set()
    items = _items(report, data, "topics")
    if "topics" in data and data["topics"] is not None and not items:
        report.add(("topics",), "'topics' is empty: define at least one topic")
    for i, raw in items:
        path: Path_ = ("topics", i)
        if isinstance(raw, Mapping) and isinstance(raw.get("id"), str):
            names.add(raw["id"])
        model = _validate(report, path, TopicModel, raw)
        if not isinstance(model, TopicModel):
            continue
        _check_id(report, (*path, "id"), model.id, "topic")
        if model.id in first_line:
            report.add(
                (*path, "id"),
                f"duplicate topic id '{model.id}' (first defined at line {first_line[model.id]})",
            )
            continue
        first_line[model.id] = report.lines.of((*path, "id"))
        if not model.title.strip():
            report.add((*path, "title"), f"topic '{model.id}' needs a title")
        _check_terms(report, (*path, "rules"), model.rules)
        rules = model.rules
        topics.append(
            Topic(
                id=model.id,
                title=model.title.strip(),
                description=model.description.strip(),
                rules=TopicRules(
                    any=tuple(rules.any),
                    all=tuple(rules.all),
                    none=tuple(rules.none),
                    fields=tuple(dict.fromkeys(rules.fields)),
                ),
            )
        )
    return topics, names


def _source_url(report: _Report, path: Path_, model: SourceModel, defaults: DefaultsModel) -> str:
    """The URL to fetch, after the kind-specific checks; "" when it cannot be built."""
    if model.kind == "query":
        if model.url is not None:
            report.add(
                (*path, "url"),
                f"source '{model.id}': kind: query builds its URL from 'query' and "
                "'url_template'; remove 'url' (or use kind: feed)",
            )
        template = model.url_template or defaults.url_template
        if model.query is None or not model.query.strip():
            report.add(path, f"source '{model.id}': kind: query needs a non-empty 'query'")
            return ""
        if template is None:
            report.add(
                path,
                f"source '{model.id}': kind: query needs a 'url_template' (or "
                "defaults.url_template) containing {query}",
            )
            return ""
        template_path = (*path, "url_template") if model.url_template else ("defaults",)
        if QUERY_PLACEHOLDER not in template:
            report.add(template_path, f"url_template {template!r} must contain {{query}}")
            return ""
        url = build_query_url(template, model.query.strip())
        if problem := url_problem(url):
            report.add(template_path, f"source '{model.id}': {problem}")
            return ""
        return url
    for key in ("query", "url_template"):
        if getattr(model, key) is not None:
            report.add(
                (*path, key), f"source '{model.id}': '{key}' is only for kind: query sources"
            )
    if model.url is None:
        report.add(path, f"source '{model.id}': missing required key 'url'")
        return ""
    if problem := url_problem(model.url):
        report.add((*path, "url"), f"source '{model.id}': {problem}")
        return ""
    return model.url


def _source_selectors(report: _Report, path: Path_, model: SourceModel) -> PageSelectors | None:
    if model.kind != "page":
        if model.offsite_links:
            report.add(
                (*path, "offsite_links"),
                f"source '{model.id}': 'offsite_links' is only for kind: page sources",
            )
        if model.selectors is not None:
            report.add(
                (*path, "selectors"),
                f"source '{model.id}': 'selectors' are only for kind: page sources",
            )
        return None
    if model.selectors is None:
        report.add(
            path,
            f"source '{model.id}': kind: page needs 'selectors' (at least 'item', the CSS "
            "selector of one article on the listing page)",
        )
        return None
    sel = model.selectors
    ok = True
    for key in ("item", "link", "title", "date", "body"):
        value = getattr(sel, key)
        if value is not None and (problem := css_problem(value)):
            report.add((*path, "selectors", key), f"selectors.{key}: {problem}")
            ok = False
    if not ok:
        return None
    return PageSelectors(
        item=sel.item, link=sel.link, title=sel.title, date=sel.date, body=sel.body
    )


def _sources(
    report: _Report,
    data: Mapping[str, object],
    defaults: DefaultsModel,
    topic_names: set[str],
    allow_networks: Sequence[str] = (),
) -> list[Source]:
    sources: list[Source] = []
    first_line: dict[str, int] = {}
    url_owner: dict[str, tuple[str, int]] = {}
    default_schedule = defaults.schedule.to_schedule() if defaults.schedule else DEFAULT_SCHEDULE
    for i, raw in _items(report, data, "sources"):
        path: Path_ = ("sources", i)
        model = _validate(report, path, SourceModel, raw)
        if not isinstance(model, SourceModel):
            continue
        _check_id(report, (*path, "id"), model.id, "source")
        duplicate = model.id in first_line
        if duplicate:
            report.add(
                (*path, "id"),
                f"duplicate source id '{model.id}' (first defined at line {first_line[model.id]})",
            )
        else:
            first_line[model.id] = report.lines.of((*path, "id"))
        url = _source_url(report, path, model, defaults)
        if url and (problem := metadata_problem(url, allow_networks)):
            where = (*path, "url") if model.kind != "query" else path
            report.add(where, f"source '{model.id}': {problem}")
            url = ""
        selectors = _source_selectors(report, path, model)
        for j, topic_id in enumerate(model.topics):
            if topic_id not in topic_names:
                known = ", ".join(sorted(topic_names)) or "none defined"
                report.add(
                    (*path, "topics", j),
                    f"source '{model.id}' names unknown topic '{topic_id}' (known: {known})",
                )
        _check_language(report, (*path, "language"), model.language)
        schedule = (
            model.schedule.to_schedule(default_schedule.jitter_seconds)
            if model.schedule
            else default_schedule
        )
        if url and model.enabled:
            line = report.lines.of(path)
            if url in url_owner and not duplicate:
                other, other_line = url_owner[url]
                report.add(
                    path,
                    f"source '{model.id}' fetches the same URL as source '{other}' (line "
                    f"{other_line}); give one source several topics instead",
                )
            url_owner.setdefault(url, (model.id, line))
        if duplicate or not url or (model.kind == "page" and selectors is None):
            continue
        sources.append(
            Source(
                id=model.id,
                kind=SourceKind(model.kind),
                url=url,
                schedule=schedule,
                title=model.title.strip() or model.id,
                topics=tuple(dict.fromkeys(model.topics)),
                full_text=defaults.full_text if model.full_text is None else model.full_text,
                selectors=selectors,
                language=model.language or defaults.language,
                enabled=model.enabled,
                offsite_links=model.offsite_links,
            )
        )
    return sources


def _check_schedule(report: _Report, path: Path_, schedule: ScheduleModel) -> None:
    if (schedule.every is None) == (schedule.cron is None):
        report.add(
            path,
            f"{_dotted(path)}: give exactly one of 'every' (e.g. every: 15m) or 'cron' "
            '(e.g. cron: "*/15 * * * *")',
        )


def _top_level(report: _Report, data: Mapping[Any, object]) -> None:
    for key in data:
        if key not in _TOP_LEVEL_KEYS:
            hint = difflib.get_close_matches(str(key), _TOP_LEVEL_KEYS, n=1)
            suggestion = f" (did you mean '{hint[0]}'?)" if hint else ""
            report.add(
                (key,),
                f"unknown top-level key '{key}'{suggestion}; allowed: {', '.join(_TOP_LEVEL_KEYS)}",
            )
    for key in _REQUIRED_TOP_LEVEL:
        if key not in data:
            report.add((), f"missing required top-level key '{key}'")
    version = data.get("version", SUPPORTED_VERSION)
    if version != SUPPORTED_VERSION or isinstance(version, bool):
        report.add(
            ("version",), f"version: {version!r} is not supported (this service reads version 1)"
        )


def _retention_days(report: _Report, data: Mapping[str, object]) -> int:
    value = data.get("retention_days", DEFAULT_RETENTION_DAYS)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        report.add(
            ("retention_days",), f"retention_days: must be a whole number >= 1, got {value!r}"
        )
        return DEFAULT_RETENTION_DAYS
    return value


def _build(
    text: str, file: str, limits: WatchlistLimits = WatchlistLimits()
) -> tuple[Watchlist | None, list[ConfigProblem]]:
    # The line of every value (a path tuple each) is as large as the data and needed only to
    # report problems: a valid file (the usual case) is read without them, and a file with
    # problems is read again with them.
    size = len(text)
    if size > limits.max_bytes // 4:  # may be over in UTF-8 bytes
        size = len(text.encode("utf-8", "surrogatepass"))
    if (too_big := _size_problem(size, file, limits)) is not None:
        return None, [too_big]
    watchlist, problems = _build_once(text, file, with_lines=False, limits=limits)
    if problems:
        watchlist, problems = _build_once(text, file, with_lines=True, limits=limits)
    return watchlist, problems


def _size_problem(size: int, file: str, limits: WatchlistLimits) -> ConfigProblem | None:
    if size <= limits.max_bytes:
        return None
    return ConfigProblem(
        file,
        1,
        f"the watchlist is {size:,} bytes, over the limit of {limits.max_bytes:,} "
        "(AGGREGATOR_WATCHLIST_MAX_BYTES); refused unread",
    )


def _build_once(
    text: str, file: str, *, with_lines: bool, limits: WatchlistLimits
) -> tuple[Watchlist | None, list[ConfigProblem]]:
    yaml_problems: list[tuple[int, str]] = []
    data, lines = _read_yaml(text, yaml_problems, with_lines=with_lines, limits=limits)
    report = _Report(file, lines)
    for line, message in yaml_problems:
        report.add_line(line, message)
    if data is None:
        return None, report.problems
    if not isinstance(data, Mapping):
        report.add((), "the watchlist must be a mapping with 'topics' and 'sources'")
        return None, report.problems
    _top_level(report, data)
    defaults_model = _validate(report, ("defaults",), DefaultsModel, data.get("defaults"))
    defaults = defaults_model if isinstance(defaults_model, DefaultsModel) else DefaultsModel()
    _check_language(report, ("defaults", "language"), defaults.language)
    if defaults.url_template is not None and QUERY_PLACEHOLDER not in defaults.url_template:
        report.add(("defaults", "url_template"), "defaults.url_template must contain {query}")
    fetch = _fetch_policy(report, data.get("fetch"))
    publish = _publish_options(report, data.get("publish"))
    dedup = _dedup_options(report, data.get("dedup"))
    retention = _retention_days(report, data)
    topics, topic_names = _topics(report, data)
    sources = _sources(report, data, defaults, topic_names, fetch.allow_networks)
    alerts = _alert_options(report, data.get("alerts"), topic_names)
    problems = sorted(report.problems, key=lambda p: p.line)
    if problems:
        return None, problems
    watchlist = Watchlist(
        topics=tuple(topics),
        sources=tuple(sources),
        fetch=fetch,
        publish=publish,
        dedup=dedup,
        retention_days=retention,
        path=file,
        alerts=alerts,
    )
    return watchlist, []


def limits_of(settings: Settings) -> WatchlistLimits:
    """The reading limits the process settings (``AGGREGATOR_WATCHLIST_*``) ask for."""
    given = {
        "max_bytes": settings.watchlist_max_bytes,
        "max_nodes": settings.watchlist_max_nodes,
        "load_timeout_seconds": settings.watchlist_load_timeout,
    }
    return WatchlistLimits(**{k: v for k, v in given.items() if v is not None})  # type: ignore[arg-type]


def _read(
    path: str | Path, limits: WatchlistLimits = WatchlistLimits()
) -> tuple[str | None, list[ConfigProblem]]:
    try:
        with open(path, "rb") as f:
            size = os.fstat(f.fileno()).st_size
            if (too_big := _size_problem(size, str(path), limits)) is not None:
                return None, [too_big]
            data = f.read(limits.max_bytes + 1)  # a file growing meanwhile is cut here
        if (too_big := _size_problem(len(data), str(path), limits)) is not None:
            return None, [too_big]
        return data.decode("utf-8"), []
    except IsADirectoryError:
        return None, [ConfigProblem(str(path), 0, "cannot read the watchlist: it is a directory")]
    except (OSError, UnicodeDecodeError) as exc:
        return None, [ConfigProblem(str(path), 1, f"cannot read the watchlist: {exc}")]


def load_watchlist_text(
    text: str, path: str = "<watchlist>", limits: WatchlistLimits = WatchlistLimits()
) -> Watchlist:
    """The watchlist in ``text``; raises ConfigError listing every problem."""
    watchlist, problems = _build(text, path, limits)
    if watchlist is None:
        raise ConfigError(problems)
    return watchlist


def load_watchlist(path: str | Path, limits: WatchlistLimits = WatchlistLimits()) -> Watchlist:
    """Read and validate the watchlist file; raises ConfigError listing every problem."""
    text, problems = _read(path, limits)
    if text is None:
        raise ConfigError(problems)
    return load_watchlist_text(text, str(path), limits)


def check_watchlist(
    path: str | Path, limits: WatchlistLimits = WatchlistLimits()
) -> list[ConfigProblem]:
    """Every problem in the watchlist file ([] when it is valid), sorted by line."""
    return validate_watchlist(path, limits)[1]


def validate_watchlist(
    path: str | Path, limits: WatchlistLimits = WatchlistLimits()
) -> tuple[Watchlist | None, list[ConfigProblem]]:
    """The watchlist and no problems, or None and every problem, reading the file once."""
    text, problems = _read(path, limits)
    if text is None:
        return None, problems
    return _build(text, str(path), limits)
