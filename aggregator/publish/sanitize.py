"""What may reach a published feed: XML-legal text, safe URLs, HTML built only from safe tags.

Pure: strings in, strings out. Every string the renderer writes passes through ``xml_text`` (one
filter at write time), so one bad stored title cannot break a feed for every subscriber. Entry
HTML is never copied from a source: it is built here from record blocks, with every character of
the text escaped, so only the tags this module emits can appear.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from urllib.parse import quote, urljoin, urlsplit, urlunsplit

from aggregator.model import Block, BlockKind

# XML 1.0 Char production: #x9 | #xA | #xD | [#x20-#xD7FF] | [#xE000-#xFFFD] | [#x10000-#x10FFFF].
# Everything else (C0 controls, lone surrogates, U+FFFE, U+FFFF) is dropped. C1 controls and
# other discouraged characters are legal XML 1.0 but break readers and validators, so they go
# too, except NEL (U+0085), which is ordinary text in some encodings' round trips.
_XML_ILLEGAL = re.compile(
    "[\x00-\x08\x0b\x0c\x0e-\x1f\x7f\x80-\x84\x86-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]"
)

SAFE_SCHEMES = frozenset({"http", "https"})

# Characters left as they are when percent-encoding a URL: the RFC 3986 reserved and unreserved
# sets plus "%", so an already-encoded URL is not encoded twice.
_URL_SAFE_CHARS = "%/:=&?~#+!$,;'@()*[]-._"

# The stated caps of every title and summary the service shows (feeds, the HTML page, the
# command line): a source may send a 260,000-character title; a reader shows a line.
MAX_TITLE_CHARS = 300
MAX_SUMMARY_CHARS = 1000

_BOLD = re.compile(r"\*\*(.+?)\*\*", re.DOTALL)
_TAB_NEWLINE = re.compile("[\t\n\r]")


def xml_text(value: str) -> str:
    """``value`` without the characters XML 1.0 forbids (and C1 controls / noncharacters)."""
    if value.isascii() and value.isprintable():
        return value  # the common case, without a regex pass
    return _XML_ILLEGAL.sub("", value)


def capped(value: str, limit: int) -> str:
    """``value`` cut to at most ``limit`` characters, at a word boundary when one is in the
    second half, ending with "…" when cut."""
    if len(value) <= limit:
        return value
    cut = value[: max(1, limit - 1)]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip() + "…"


def cap_title(value: str) -> str:
    return capped(value, MAX_TITLE_CHARS)


def cap_summary(value: str) -> str:
    return capped(value, MAX_SUMMARY_CHARS)


def one_line(value: str) -> str:
    """XML-legal text on one line, whitespace runs collapsed: for titles, names, labels."""
    return " ".join(xml_text(value).split())


def escape_text(value: str) -> str:
    """Filtered and escaped for XML/HTML element content."""
    return xml_text(value).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def escape_attr(value: str) -> str:
    """Filtered and escaped for a double-quoted XML/HTML attribute value."""
    return escape_text(value).replace('"', "&quot;").replace("\n", "&#10;").replace("\t", "&#9;")


def safe_url(url: str | None, base: str | None = None) -> str | None:
    """An absolute http(s) URL, percent-encoded where needed, or None when ``url`` is unsafe.

    Relative URLs are resolved against ``base``. Tabs, newlines and surrounding spaces are
    removed before the scheme is read, so ``java\\tscript:`` and `` javascript:`` are seen for
    what they are; any scheme other than http/https (``javascript:``, ``data:``, ``vbscript:``,
    ``file:``...) is refused.
    """
    if not url:
        return None
    # As browsers do (WHATWG URL): strip leading/trailing controls and spaces, drop every tab
    # and newline; inner spaces are percent-encoded below.
    cleaned = _TAB_NEWLINE.sub("", xml_text(url)).strip()
    if not cleaned:
        return None
    if base:
        cleaned = urljoin(base, cleaned)
    try:
        parts = urlsplit(cleaned)
    except ValueError:
        return None
    if parts.scheme.lower() not in SAFE_SCHEMES or not parts.hostname:
        return None
    try:
        netloc = _ascii_netloc(parts.netloc)
    except (UnicodeError, ValueError):
        return None
    return urlunsplit(
        (
            parts.scheme.lower(),
            netloc,
            quote(parts.path, safe=_URL_SAFE_CHARS) or "/",
            quote(parts.query, safe=_URL_SAFE_CHARS),
            quote(parts.fragment, safe=_URL_SAFE_CHARS),
        )
    )


def public_url(url: str | None) -> str | None:
    """``safe_url(url)`` when its host can be on the public internet; None for ``localhost``
    (and ``*.localhost``) and for literal loopback, private, link-local and other non-global
    addresses: such a link (the offline demo's replay server, a test server) means nothing to
    a subscriber."""
    safe = safe_url(url)
    if safe is None:
        return None
    host = (urlsplit(safe).hostname or "").rstrip(".")
    if host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return safe  # a name: where it leads is not known here
    return safe if address.is_global else None


def _ascii_netloc(netloc: str) -> str:
    """The netloc with an internationalized host name in IDNA (punycode) form."""
    if netloc.isascii():
        return netloc.lower() if "@" not in netloc else netloc
    userinfo, at, hostport = netloc.rpartition("@")
    host, colon, port = hostport.partition(":")
    host = host.encode("idna").decode("ascii")
    return f"{userinfo}{at}{host}{colon}{port}"


def plain_inline(text: str) -> str:
    """Inline record text without its ``**bold**`` markers: for plain-text fields."""
    return _BOLD.sub(r"\1", text)


def inline_html(text: str) -> str:
    """Inline record text as HTML: escaped, with ``**bold**`` as ``<strong>``."""
    escaped = escape_text(one_line(text))
    return _BOLD.sub(r"<strong>\1</strong>", escaped)


def blocks_html(blocks: Sequence[Block], heading_level: int = 3) -> str:
    """Record blocks as safe HTML: paragraphs, headings, lists and tables, nothing else.

    Consecutive list items form one ``<ul>``. A table's first row is its header.
    """
    level = min(max(heading_level, 1), 6)
    out: list[str] = []
    in_list = False
    for block in blocks:
        if block.kind is BlockKind.LIST_ITEM:
            if not in_list:
                out.append("<ul>")
                in_list = True
            out.append(f"<li>{inline_html(block.text)}</li>")
            continue
        if in_list:
            out.append("</ul>")
            in_list = False
        if block.kind is BlockKind.HEADING:
            if block.text.strip():
                out.append(f"<h{level}>{inline_html(block.text)}</h{level}>")
        elif block.kind is BlockKind.TABLE:
            out.append(_table_html(block.rows))
        elif block.text.strip():
            out.append(f"<p>{inline_html(block.text)}</p>")
    if in_list:
        out.append("</ul>")
    return "\n".join(part for part in out if part)


def _table_html(rows: Sequence[Sequence[str]]) -> str:
    if not rows:
        return ""
    head, body = rows[0], rows[1:]
    parts = ["<table>", "<thead>", _row_html(head, "th"), "</thead>"]
    if body:
        parts += ["<tbody>", *(_row_html(row, "td") for row in body), "</tbody>"]
    parts.append("</table>")
    return "".join(parts)


def _row_html(cells: Iterable[str], tag: str) -> str:
    return "<tr>" + "".join(f"<{tag}>{inline_html(c)}</{tag}>" for c in cells) + "</tr>"
