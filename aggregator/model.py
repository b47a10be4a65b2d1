"""The frozen types that pass between pipeline stages.

Plain data only: no I/O, no clock, no ORM. Every stage takes and returns these, so a stage can be
tested with literals and replaced without touching its neighbours. Times are timezone-aware UTC
``datetime`` values; ids are short strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum


class BlockKind(StrEnum):
    """The kinds of block in the record text format (see docs/record-format.md)."""

    PARAGRAPH = "paragraph"
    HEADING = "heading"
    LIST_ITEM = "list_item"
    TABLE = "table"


@dataclass(frozen=True, slots=True)
class Block:
    """One block of a record's body.

    ``text`` holds the inline text of a paragraph, heading or list item (without the ``- ``
    marker; ``**bold**`` stays inline). ``rows`` holds a table's cells, header row first.
    ``gap`` is the number of blank lines before the block in the text it was parsed from, kept
    so that parsing and rendering a record gives back the same bytes.
    """

    kind: BlockKind
    text: str = ""
    rows: tuple[tuple[str, ...], ...] = ()
    gap: int = 0


@dataclass(frozen=True, slots=True)
class Document:
    """A record's text as blocks, in order. The first block is the lead, the second the title,
    when the text was produced by this service; imported texts may differ (see records.py)."""

    blocks: tuple[Block, ...]
    trailing_blank_lines: int = 0
    final_newline: bool = True  # False when the source text's last line has no "\n"


@dataclass(frozen=True, slots=True)
class Record:
    """One article, normalized to the record text format, with its metadata."""

    id: str  # 16 lowercase hex digits, stable (see records.record_id)
    text: str  # the record text, exactly as a record file holds it
    title: str
    content_hash: str  # hex SHA-256 of the normalized text (records.content_hash)
    url: str | None = None
    canonical_url: str | None = None
    guid: str | None = None
    source_id: str | None = None
    published: datetime | None = None
    fetched: datetime | None = None
    language: str | None = None
    author: str | None = None
    # The publisher, when the source only relays its items (a news search feed): its name and
    # site. ``headline_key`` is identity.headline_key of that site (else the URL's) and the title.
    outlet: str | None = None
    outlet_url: str | None = None
    headline_key: str | None = None


@dataclass(frozen=True, slots=True)
class Article:
    """An article page as the extractor read it (extract/); normalize turns it into a Record.

    ``text`` is the record text composed from lead, title and ``blocks`` (records.compose);
    ``blocks`` is the body after the lead.
    """

    title: str
    lead: str
    blocks: tuple[Block, ...]
    text: str
    author: str | None = None
    published: datetime | None = None
    canonical_url: str | None = None
    language: str | None = None
    url: str | None = None  # the page's URL as fetched


@dataclass(frozen=True, slots=True)
class ListingItem:
    """One article link found on a page source's listing page (extract.scrape_listing)."""

    url: str  # absolute
    title: str
    published: datetime | None = None


class SourceKind(StrEnum):
    FEED = "feed"  # RSS, Atom or JSON Feed
    QUERY = "query"  # a news-search feed built from a query
    PAGE = "page"  # an HTML listing page scraped with CSS selectors


@dataclass(frozen=True, slots=True)
class PageSelectors:
    """CSS selectors for a page source: items on the listing page, then the article page."""

    item: str
    link: str = "a"
    title: str | None = None
    date: str | None = None
    body: str | None = None


# How often a source is fetched when neither it nor the watchlist's defaults give a schedule:
# the one default (``fetch.schedule`` and ``watchlist`` use it).
DEFAULT_INTERVAL_SECONDS = 30 * 60


@dataclass(frozen=True, slots=True)
class Schedule:
    """When a source is fetched: every ``interval_seconds``, or by a crontab expression."""

    interval_seconds: int | None = None
    cron: str | None = None
    jitter_seconds: int = 0


@dataclass(frozen=True, slots=True)
class Source:
    id: str
    kind: SourceKind
    url: str
    schedule: Schedule
    title: str = ""
    topics: tuple[str, ...] = ()  # topic ids; empty means "match against every topic"
    full_text: bool = False  # fetch and extract the linked page when the entry is short
    selectors: PageSelectors | None = None
    language: str | None = None
    enabled: bool = True
    offsite_links: bool = False  # page sources: follow listing links to other sites too


@dataclass(frozen=True, slots=True)
class TopicRules:
    """Match rules of a topic; see match.py for the term syntax (phrases, ``prefix*``, ``/re/``)."""

    any: tuple[str, ...] = ()
    all: tuple[str, ...] = ()
    none: tuple[str, ...] = ()
    fields: tuple[str, ...] = ("title", "lead", "body")


@dataclass(frozen=True, slots=True)
class Topic:
    id: str
    title: str
    rules: TopicRules
    description: str = ""


@dataclass(frozen=True, slots=True)
class TopicMatch:
    topic_id: str
    record_id: str
    terms: tuple[str, ...]  # the rule terms that matched, as written in the watchlist


class DedupReason(StrEnum):
    """Why a record joined a development (or started one)."""

    NEW = "new"  # started a new development
    SAME_URL = "same-url"  # canonical URL already stored
    SAME_GUID = "same-guid"
    SAME_CONTENT = "same-content"  # normalized content hash already stored
    # The outlet's headline already stored from its site (a news search feed's wrapped link)
    SAME_HEADLINE = "same-headline"
    NEAR_DUPLICATE = "near-duplicate"  # rewrite or syndicated copy (MinHash/LSH)
    SAME_EVENT = "same-event"  # a different article about the same development
    MANUAL = "manual"  # an admin moved it (split/merge)
    # Stored in no development: it matches no topic, so no feed could ever show it (ingest
    # skips its fingerprint and dedup; see docs/store.md).
    NO_TOPIC = "no-topic"


@dataclass(frozen=True, slots=True)
class Membership:
    """A record's place in a development, with the decision that put it there."""

    record_id: str
    development_id: str
    reason: DedupReason
    score: float  # similarity behind the decision, 1.0 for exact matches and NEW
    matched_record_id: str | None = None  # the record it was found similar to


@dataclass(frozen=True, slots=True)
class SourceRef:
    """A report of a development: who published it and where."""

    record_id: str
    source_id: str | None
    source_title: str
    url: str | None
    title: str
    published: datetime | None
    # The record's canonical URL (from the page's rel=canonical when it named one): linked
    # instead of ``url`` when that one cannot be published (a loopback replay address).
    canonical_url: str | None = None


@dataclass(frozen=True, slots=True)
class Development:
    """One distinct development: what subscribers see as one feed entry."""

    id: str  # stable: never changes as records join
    title: str
    summary: str
    topics: tuple[str, ...]
    first_seen: datetime
    updated: datetime
    record_ids: tuple[str, ...]  # first report first
    sources: tuple[SourceRef, ...] = ()
    terms: tuple[str, ...] = ()  # matched topic terms, for display


class FailureClass(StrEnum):
    """Why a fetch failed; stored per source."""

    DNS = "dns"
    CONNECT = "connect"
    TIMEOUT = "timeout"
    TLS = "tls"
    HTTP_4XX = "http-4xx"
    HTTP_5XX = "http-5xx"
    RATE_LIMITED = "rate-limited"
    TOO_LARGE = "too-large"
    TOO_MANY_REDIRECTS = "too-many-redirects"
    NOT_A_FEED = "not-a-feed"
    PARSE_ERROR = "parse-error"
    BLOCKED_BY_POLICY = "blocked-by-policy"  # SSRF guard or robots.txt
    PROTOCOL = "protocol"  # malformed HTTP, wrong Content-Length
    INTERNAL = "internal"


@dataclass(frozen=True, slots=True)
class FetchState:
    """What the service remembers about fetching one source."""

    source_id: str
    etag: str | None = None
    last_modified: str | None = None
    next_fetch: datetime | None = None
    last_attempt: datetime | None = None
    last_success: datetime | None = None
    consecutive_failures: int = 0
    failure_class: FailureClass | None = None
    last_error: str | None = None
    failure_counts: dict[str, int] = field(default_factory=dict)
    fetch_count: int = 0
    # The source's URL answered with permanent redirects (301/308) to ``moved_to``: it is
    # fetched there while the watchlist still says ``moved_from``.
    moved_from: str | None = None
    moved_to: str | None = None
    # The feed's RSS <skipHours> (0-23, GMT) and <skipDays> (0 = Monday): when not to fetch it.
    skip_hours: frozenset[int] = frozenset()
    skip_days: frozenset[int] = frozenset()

    def fetch_url(self, source_url: str) -> str:
        """Where a source configured at ``source_url`` is fetched."""
        if self.moved_to and self.moved_from == source_url:
            return self.moved_to
        return source_url


@dataclass(frozen=True, slots=True)
class FetchPolicy:
    """How politely and defensively to fetch; the watchlist's ``fetch:`` section."""

    user_agent: str = "aggregator/0.1 (+https://github.com/aggregator/aggregator)"
    timeout_seconds: float = 30.0  # total deadline for one request, redirects included
    connect_timeout_seconds: float = 10.0
    max_body_bytes: int = 10 * 1024 * 1024  # decoded bytes, checked while streaming
    max_redirects: int = 5
    max_in_flight: int = 16  # requests in flight per process
    per_host_concurrency: int = 2
    min_host_interval_seconds: float = 1.0
    retries: int = 2  # extra attempts for transient faults within one fetch
    max_backoff_seconds: int = 24 * 3600  # cap of the per-source failure backoff
    allow_networks: tuple[str, ...] = ()  # CIDRs exempt from the SSRF guard
    respect_robots: bool = True  # rules for pages and full text; Crawl-delay for every request
    max_crawl_delay_seconds: float = 30.0  # a longer robots.txt Crawl-delay is honoured as this
    # Fairness and order of the cycle (docs/fetching.md, "The cycle"): new entries one fetch
    # takes at most (oldest first; the rest come with a fetch ``backlog_seconds`` later), and
    # how long (and for how many records) new records wait for the other fetches in flight, so
    # they are ingested in publication-time order whatever order the fetches end in.
    max_items_per_fetch: int = 500
    backlog_seconds: float = 60.0
    ingest_hold_seconds: float = 5.0
    ingest_hold_records: int = 5000
    # Page sources: new listing links followed in one fetch, in all and per origin (scheme,
    # host, port); the rest wait for the next fetch. A listing of 10,000 links is 10,000
    # requests otherwise.
    max_links_per_fetch: int = 30
    max_links_per_origin: int = 30
    # An article of a page source that could not be fetched or read waits this long before it
    # is tried again, doubling per failure up to max_backoff_seconds.
    article_retry_seconds: int = 3600
    # Feed documents and entries with more tags than this (or an entry with 50 times as many
    # characters of HTML) are parsed in an extraction worker within worker_parse_timeout, not
    # on the ingest thread: feedparser's sanitizer and lexbor slow down on deep nesting.
    max_inline_parse_tags: int = 20_000
    worker_parse_timeout_seconds: float = 30.0


@dataclass(frozen=True, slots=True)
class WatchlistLimits:
    """How much reading one watchlist file may cost (process settings ``AGGREGATOR_WATCHLIST_*``;
    docs/operations.md). A 10,000-source watchlist is about 1 MB and 110,000 values."""

    max_bytes: int = 8 * 1024 * 1024  # the file's size (~80,000 sources); larger is refused unread
    # Values (scalars, lists, mappings) once every YAML alias is expanded: an alias bomb (a
    # few KB of anchors referring to anchors) is refused before anything walks it.
    max_nodes: int = 1_000_000
    max_depth: int = 64  # lists and mappings nested in each other
    load_timeout_seconds: float = 60.0  # the service gives up on a reload taking longer


@dataclass(frozen=True, slots=True)
class PublishOptions:
    """The watchlist's ``publish:`` section."""

    title: str = "aggregator: new developments"
    feed_size: int = 50  # latest N developments per feed
    base_url: str | None = None  # public URL; overrides settings when given
    websub_hub: str | None = None
    # "example.org,2026": the authority of entry ids (tag:example.org,2026:development/<id>).
    # Set it once and never change it; None derives it from base_url's host.
    tag_authority: str | None = None
    # IANA time zone of the dates on the HTML pages ("21 Nov 2026, 12:02 EET"); feeds stay UTC.
    timezone: str = "UTC"
    page_size: int = 20  # developments per topic page and search page


@dataclass(frozen=True, slots=True)
class DedupOptions:
    """The watchlist's ``dedup:`` section."""

    window_days: float = 7.0  # how far back a record may join a development
    # How far apart in time one outlet's headline is taken for one article (headline_key).
    headline_days: float = 2.0
    # After this many days (a news cycle), a report must be closer to a development the further
    # it is in time from the development's reports, down to nothing at window_days.
    news_cycle_days: float = 1.0
    # The score a development must reach to be joined, by kind of comparison: a full article
    # against a development with full articles (text and headline-and-lead), or headline against
    # headlines and leads (a headline-only record, or a development of headline-only records).
    # Chosen with benchmarks/dedup_bench.py (docs/dedup.md, "Cross-validated dev figures").
    article_threshold: float = 0.34
    headline_threshold: float = 0.30
    # A headline-only record against a development of headline-only records is compared by
    # their terms (headline words and word pairs: names, every pair of a Title Case headline),
    # against this threshold (the development's members that are not candidates count in its
    # centroid as far ones: docs/dedup.md); headline_threshold is for headline and lead against
    # full articles.
    headline_terms_threshold: float = 0.17
    # Shares of the headline-and-lead cosine and of the names-and-numbers cosine in a full
    # article's score; the rest is the whole text's cosine.
    head_share: float = 0.3
    names_share: float = 0.0
    # A full article whose headline and lead name an action (the lexicon's "!" groups: rejects,
    # pledges, is killed, is arrested, buys, resigns, declares an emergency) loses this share of
    # its score against a development whose headlines and leads name only other actions.
    action_penalty: float = 0.5
    # A development is represented by the centroid of its members closest to the record, at most
    # this many: 1 is single link, a large number the whole development's centroid.
    neighbours: int = 5
    # Among the developments of headline-only records that a headline clears, prefer the one
    # with more candidate members: each ranks by its margin + this x ln(its candidate members).
    # A headline is a handful of words; how many of a development's reports share its keys is
    # evidence that one close-worded member is not. 0: the largest margin only. Chosen by
    # cross-validation (docs/dedup.md, "Cross-validated dev figures").
    headline_size_preference: float = 0.2
    # A record whose text has fewer words than this is compared as a headline (a feed entry with
    # a title and a teaser at most).
    headline_words: int = 25
    # Estimated Jaccard similarity of word 3-shingles from which a record is a near-duplicate.
    near_duplicate: float = 0.5


@dataclass(frozen=True, slots=True)
class AlertRule:
    """One ``alerts.rules`` item: which topics' news goes to which Apprise URLs."""

    id: str  # stable: the store remembers what was sent under it
    topics: tuple[str, ...] = ()  # empty: every topic
    push: tuple[str, ...] = ()  # Apprise URLs told about each new development
    digest: tuple[str, ...] = ()  # Apprise URLs sent the day's new developments once a day
    digest_at: str = "08:00"  # HH:MM in publish.timezone: when the day's digest goes out


@dataclass(frozen=True, slots=True)
class AlertOptions:
    """The watchlist's ``alerts:`` section."""

    rules: tuple[AlertRule, ...] = ()
    max_attempts: int = 6  # tries per message before it is kept as failed
    retry_seconds: int = 60  # wait before the first retry, doubled for each further one
    check_seconds: int = 30  # how often the service looks for messages to send
    lease_seconds: int = 300  # how long a replica owns the messages it claimed
    batch_size: int = 20  # messages claimed per round
    # A push is owed for developments that appeared at most this long ago: after an outage
    # longer than this, older ones are not pushed (they are in the digests).
    catch_up_hours: int = 48


@dataclass(frozen=True, slots=True)
class AlertDelivery:
    """One message owed to one target: a push (``item`` = development id) or a digest
    (``item`` = the local date it covers)."""

    id: int
    rule_id: str
    target: str  # the URL's scheme and a short hash; never the URL (it holds secrets)
    kind: str  # "push" or "digest"
    item: str
    created: datetime
    status: str  # "pending", "sent" or "failed" (given up)
    attempts: int = 0
    next_attempt: datetime | None = None
    last_error: str | None = None
    sent: datetime | None = None


@dataclass(frozen=True, slots=True)
class AlertStatus:
    """The alert queue at a glance (/healthz)."""

    pending: int = 0  # waiting to be sent, retries included
    retrying: int = 0  # waiting after at least one failed attempt
    failed: int = 0  # given up after max_attempts
    recently_failed: int = 0  # given up within the last day
    sent: int = 0
    last_error: str | None = None
    last_error_at: datetime | None = None
    last_sent: datetime | None = None


@dataclass(frozen=True, slots=True)
class SearchMatch:
    """A stored record that matched a search, with its development and source's name."""

    record: Record
    development_id: str | None
    source_title: str


@dataclass(frozen=True, slots=True)
class IngestOptions:
    """Tuning of the ingest path (``aggregator.ingest``): the one place for its bounds.

    The candidate bounds keep the values the store's candidate query had (docs/dedup.md,
    "Candidate retrieval"); the window bounds are measured in docs/performance.md.
    """

    # Candidates scored per record, those sharing the most keys (LSH bands, key terms) first,
    # at most ``candidates_per_development`` of one development.
    max_candidates: int = 50
    candidates_per_development: int = 16
    # Per key, only its newest hits within the dedup window count: a key shared by more
    # records than this is a stop word of the moment.
    candidate_hits_per_key: int = 64
    # Candidates rank by their shared keys weighted by rarity in the window: a key held by df
    # records around the new one counts log(1 + candidate_hits_per_key / df), so the records
    # sharing this event's rare names come before those sharing only a stop word of the
    # moment (False: by the number of keys shared, as the store's query did). Cross-validated
    # in docs/dedup.md ("Candidate retrieval"): UCI headlines B-cubed F1 0.684 -> 0.692 before
    # the headline scoring of 53185ef, 0.763 -> 0.764 (noise) on top of 21f1a7d: off.
    rank_by_rarity: bool = False
    # The latest members a development's representative (title, summary) is chosen among.
    representative_members: int = 30
    # Records one transaction takes at most (a feed's new entries usually fit in one).
    max_batch: int = 100
    # Attempts of one ingest transaction that lost a race (unique key, deadlock, SQLite busy).
    attempts: int = 5
    # The memory bound of the in-memory window: records held at most. A record costs its packed
    # fingerprint (2.1 KB for a full article, 0.8 KB for a headline) and about 0.3 KB of arrays,
    # ids and development state: 3.4 KB of RSS per held record at 20,000 ECB+ articles
    # (benchmarks/ingest_bench.py --sizes; docs/store.md), so 50,000 is about 170 MB. Beyond it
    # the oldest are dropped, and candidates come from the newest this many records of the
    # dedup window; a rebuild from the store reads only those.
    window_max_records: int = 50_000
    # The window's vocabulary (term ids of the compact fingerprints) only grows; past this many
    # words (≈ 100 bytes each) the window is rebuilt from the store, without the words of
    # records it no longer holds.
    window_max_words: int = 2_000_000
    # The window's postings of its newest records wait in a dict; past this many they are
    # merged into its sorted arrays (a copy of those: amortised over the records added).
    window_merge_postings: int = 16_384
    # Slots of dropped records are reclaimed (the window renumbered) once there are this many
    # and more than records held.
    window_compact_after: int = 4_096
