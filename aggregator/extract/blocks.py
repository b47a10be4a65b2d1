"""HTML -> text segments -> ``model.Block``: the one DOM walk every extractor path shares.

The walk turns a selectolax (Lexbor) tree into a flat list of ``Segment``: one per run of inline
text inside a block-level element (a paragraph, a heading, a list item, a table, a ``<div>``'s
own text between its child blocks, ...). Each segment remembers the block element that holds
it (an index into ``Walk.parent``/``Walk.end``, pre-order), its length and how much of it is
link text, so that ``article.py`` can score containers without walking the tree again.

Inline markup kept for the record format: ``<b>``/``<strong>`` become ``**bold**``; ``<br>``
ends a line (a new block). Everything else inline is flattened to text.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field

from selectolax.lexbor import LexborHTMLParser, LexborNode

from aggregator.model import Block, BlockKind

# classify(node, tag) -> None to skip the subtree, else a hint (+1 content, 0, -1 doubtful).
ClassifyFn = Callable[[LexborNode, str], "int | None"]

__all__ = [
    "ClassifyFn",
    "Segment",
    "Walk",
    "html_to_blocks",
    "inline_text",
    "normalize_space",
    "walk",
]

# Never text: the walk skips them with their content (html_to_blocks strips them first, in C).
DROP_TAGS = [
    "script",
    "style",
    "noscript",
    "template",
    "svg",
    "math",
    "iframe",
    "object",
    "embed",
    "canvas",
    "video",
    "audio",
    "input",
    "select",
    "textarea",
    "button",
    "head",
    "map",
    "dialog",
]
_SKIP = frozenset((*DROP_TAGS, "-comment", "img", "picture", "source", "track", "wbr", "meta"))
_SKIP |= {"link", "title", "base", "option", "optgroup", "datalist", "param", "area", "hr"}

BLOCK_TAGS = frozenset(
    (
        "p",
        "div",
        "section",
        "article",
        "main",
        "li",
        "ul",
        "ol",
        "dl",
        "dt",
        "dd",
        "h1",
        "h2",
        "h3",
        "h4",
        "h5",
        "h6",
        "blockquote",
        "pre",
        "table",
        "thead",
        "tbody",
        "tfoot",
        "tr",
        "td",
        "th",
        "caption",
        "figure",
        "figcaption",
        "header",
        "footer",
        "nav",
        "aside",
        "form",
        "fieldset",
        "legend",
        "address",
        "center",
        "details",
        "summary",
        "body",
        "html",
        "menu",
        "hgroup",
    )
)
_HEADING_LEVEL = {"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6}
_BOLD_TAGS = frozenset(("b", "strong"))
# Inline tags whose only effect on the text is being there (links count as link text).
_PLAIN_INLINE_TAGS = frozenset(
    "a em i u s small sup sub abbr cite time font q code mark label span".split()  # noqa: SIM905
)
_LIST_ITEM_TAGS = frozenset(("li", "dd", "dt"))
# Beyond this depth the walk stops recursing and takes the subtree's text in one piece, so a
# deeply nested page cannot exhaust the Python stack.
MAX_DEPTH = 250
# A data table's cells are short; a "table" whose cells hold long text is page layout.
_MAX_DATA_CELL_CHARS = 300


def normalize_space(text: str) -> str:
    """Runs of whitespace (Unicode's, NBSP included) to one space, no space at the ends."""
    return " ".join(text.split())


@dataclass(slots=True)
class Segment:
    """A run of text that becomes one block, with what the scorer needs to know about it."""

    kind: BlockKind
    text: str
    elem: int  # index of the block element holding the text
    length: int
    link_length: int
    level: int = 0  # heading level (1..6); 0 otherwise
    doubtful: bool = False  # inside an element whose class/id hints at boilerplate
    content: bool = False  # the nearest class/id hint says content ("article-body")
    rows: tuple[tuple[str, ...], ...] = ()

    @property
    def link_density(self) -> float:
        return self.link_length / self.length if self.length else 0.0

    def to_block(self) -> Block:
        if self.kind is BlockKind.TABLE:
            return Block(BlockKind.TABLE, rows=self.rows)
        return Block(self.kind, text=self.text)


@dataclass(slots=True)
class Walk:
    """The result of a walk: segments in document order and the block-element tree.

    Elements are numbered in pre-order, so element ``e``'s subtree is ``e .. end[e] - 1``.
    """

    segments: list[Segment] = field(default_factory=list)
    parent: list[int] = field(default_factory=list)
    end: list[int] = field(default_factory=list)
    tags: list[str] = field(default_factory=list)


class _Walker:
    """Recursive walk with an inline text buffer per block element."""

    __slots__ = (
        "classify",
        "content",
        "doubt",
        "flushes",
        "li_depth",
        "link_chars",
        "link_depth",
        "out",
        "parts",
    )

    def __init__(self, classify: ClassifyFn | None) -> None:
        self.out = Walk()
        self.classify = classify
        self.parts: list[str] = []
        self.link_chars = 0
        self.link_depth = 0
        self.flushes = 0
        self.li_depth = 0
        # Nearest class/id hint wins: a "content" wrapper inside a "has-sidebar" page body is
        # content again, a "share" box inside the article body is not.
        self.doubt = False
        self.content = False

    # --- elements and segments ---------------------------------------------------------------

    def open_elem(self, tag: str, parent: int) -> int:
        out = self.out
        index = len(out.parent)
        out.parent.append(parent)
        out.end.append(index + 1)
        out.tags.append(tag)
        return index

    def flush(self, elem: int) -> None:
        """Turn the pending inline text into a segment held by ``elem``."""
        parts = self.parts
        if not parts:
            return
        raw = "".join(parts)
        links = self.link_chars
        parts.clear()  # the same list: the walk holds it in a local
        self.link_chars = 0
        self.flushes += 1
        text = normalize_space(raw)
        if not text or text == "**":
            return
        tag = self.out.tags[elem] if elem >= 0 else "body"
        level = _HEADING_LEVEL.get(tag, 0)
        if level:
            kind = BlockKind.HEADING
            text = _unbold(text)
            if not text:  # the heading was nothing but bold markers
                return
        elif tag in _LIST_ITEM_TAGS or self.li_depth:
            kind = BlockKind.LIST_ITEM
        else:
            kind = BlockKind.PARAGRAPH
        length = len(text)
        self.out.segments.append(
            Segment(kind, text, elem, length, min(links, length), level, self.doubt, self.content)
        )

    # --- the walk ------------------------------------------------------------------------

    def walk(self, node: LexborNode, elem: int, depth: int) -> None:
        # The hot loop of extraction: locals instead of attribute look-ups where it pays.
        # ``parts`` is the walker's one buffer (flush empties it in place).
        parts = self.parts
        if depth > MAX_DEPTH:
            parts.append(" " + (node.text(deep=True) or "") + " ")
            return
        classify = self.classify
        # Sibling links instead of node.iter(): no generator per element.
        following = node.first_child
        while following is not None:
            child = following
            following = child.next
            tag = child.tag
            if tag == "-text":
                text = child.text_content
                # Whitespace before any text of a block carries nothing.
                if text and (parts or not text.isspace()):
                    parts.append(text)
                    if self.link_depth:
                        self.link_chars += len(text.strip())
                continue
            if tag in _SKIP or tag is None:
                continue
            if tag == "br":
                if parts:
                    self.flush(elem)
                continue
            if tag in _PLAIN_INLINE_TAGS:
                # A link or an <em> around a single text node: no recursion needed.
                first = child.first_child
                if first is not None and first.next is None and first.tag == "-text":
                    # A class on an inline element cannot change its text's fate (that is
                    # decided per block), but hidden or role-skipped text still goes.
                    if tag == "span" and classify is not None and classify(child, tag) is None:
                        continue
                    text = first.text_content
                    if text and (parts or not text.isspace()):
                        parts.append(text)
                        if tag == "a" or self.link_depth:
                            self.link_chars += len(text.strip())
                    continue
            hint = classify(child, tag) if classify is not None else 0
            if hint is None:
                continue
            outer_doubt = self.doubt
            outer_content = self.content
            if tag in BLOCK_TAGS:
                if parts:
                    self.flush(elem)
                if hint:
                    self.doubt = hint < 0
                    self.content = hint > 0
                new = self.open_elem(tag, elem)
                if tag == "table" and self.table(child, new):
                    pass
                elif tag == "pre":
                    self.pre(child, new)
                elif tag == "li":
                    self.li_depth += 1
                    self.walk(child, new, depth + 1)
                    if parts:
                        self.flush(new)
                    self.li_depth -= 1
                else:
                    self.walk(child, new, depth + 1)
                    if parts:
                        self.flush(new)
                self.out.end[new] = len(self.out.parent)
            else:
                if hint:
                    self.doubt = hint < 0
                    self.content = hint > 0
                if tag in _BOLD_TAGS:
                    mark = len(parts)
                    flushes = self.flushes
                    self.walk(child, elem, depth + 1)
                    if flushes == self.flushes and len(parts) > mark:
                        _wrap_bold(parts, mark)
                elif tag == "a":
                    self.link_depth += 1
                    self.walk(child, elem, depth + 1)
                    self.link_depth -= 1
                else:
                    self.walk(child, elem, depth + 1)
            self.doubt = outer_doubt
            self.content = outer_content

    def pre(self, node: LexborNode, elem: int) -> None:
        text = node.text(deep=True) or ""
        for line in text.splitlines():
            if line.strip():
                self.parts.append(line)
                self.flush(elem)

    def table(self, node: LexborNode, elem: int) -> bool:
        """Emit a data table as one TABLE segment; False when it is a layout table."""
        rows = data_table_rows(node)
        if rows is None:
            return False
        length = sum(len(cell) for row in rows for cell in row)
        links = sum(len(normalize_space(a.text(deep=True) or "")) for a in node.css("a"))
        self.out.segments.append(
            Segment(
                BlockKind.TABLE,
                "",
                elem,
                length,
                min(links, length),
                doubtful=self.doubt,
                content=self.content,
                rows=rows,
            )
        )
        return True


def data_table_rows(node: LexborNode) -> tuple[tuple[str, ...], ...] | None:
    """The cells of a data table (header row first), or None for a layout table."""
    # selectolax's css() includes the node itself: more than one match means a nested table.
    if len(node.css("table")) > 1:
        return None
    rows: list[list[str]] = []
    for tr in node.css("tr"):
        cells = [inline_text(cell) for cell in tr.iter() if cell.tag in ("td", "th")]
        if any(len(c) > _MAX_DATA_CELL_CHARS for c in cells):
            return None
        if any(cells):
            rows.append(cells)
    if len(rows) < 2:
        return None
    width = max(len(r) for r in rows)
    if width < 2:
        return None
    # A grid whose cells are mostly empty is page layout (a column of text beside spacer
    # cells), not data.
    filled = sum(1 for r in rows for c in r if c)
    if 2 * filled < width * len(rows):
        return None
    return tuple(tuple(r + [""] * (width - len(r))) for r in rows)


def _unbold(text: str) -> str:
    return normalize_space(text.replace("**", "")) if "**" in text else text


def _wrap_bold(parts: list[str], mark: int) -> None:
    """Wrap ``parts[mark:]`` in ``**``, keeping the outer whitespace outside the markers."""
    inner = "".join(parts[mark:])
    del parts[mark:]
    stripped = inner.strip()
    if not stripped:
        parts.append(inner)
        return
    stripped = normalize_space(stripped.replace("**", ""))
    lead = " " if inner[:1].isspace() else ""
    trail = " " if inner[-1:].isspace() else ""
    parts.append(f"{lead}**{stripped}**{trail}")


def inline_text(node: LexborNode) -> str:
    """A node's text on one line, with ``**bold**`` kept; block boundaries become spaces."""
    first = node.first_child
    if first is None:
        return ""
    if first.next is None and first.tag == "-text":  # a cell of plain text: no walk needed
        return normalize_space(first.text_content or "")
    w = _Walker(None)
    w.open_elem("td", -1)
    w.walk(node, 0, 0)
    texts = [s.text for s in w.out.segments]
    if w.parts:
        texts.append(normalize_space("".join(w.parts)))
    return normalize_space(" ".join(t for t in texts if t))


def walk(root: LexborNode, classify: ClassifyFn | None = None) -> Walk:
    """Walk ``root`` (usually ``<body>``) into segments; ``classify`` may skip subtrees."""
    w = _Walker(classify)
    top = w.open_elem(root.tag or "body", -1)
    w.walk(root, top, 0)
    w.flush(top)
    w.out.end[top] = len(w.out.parent)
    return w.out


# What feed software appends to an entry's content: WordPress's "The post X appeared first on
# Y.", "Continue reading X", "Read more", a bare "[…]".
_FEED_FOOTER_RE = re.compile(
    r"^(?:the post .+ appeared first on .+|continue reading\b.*|read more\b.*|read the full "
    r"(?:story|article)\b.*|\[(?:…|\.\.\.)\]|(?:…|\.\.\.)? ?\[(?:read|more)[^\]]*\])$",
    re.IGNORECASE,
)


def html_to_blocks(fragment: str) -> tuple[Block, ...]:
    """Feed entry content/summary HTML -> blocks: paragraphs, headings, list items, tables.

    Nothing inside is judged boilerplate (a feed's content is the article), but scripts,
    styles, forms and media are dropped, and so are the footers feed software appends ("The
    post ... appeared first on ...", "Continue reading ..."). Plain text without tags becomes
    one paragraph per line.
    """
    if not fragment or not fragment.strip():
        return ()
    if "<" not in fragment:
        blocks = [
            Block(BlockKind.PARAGRAPH, text=line)
            for line in (normalize_space(x) for x in fragment.splitlines())
            if line
        ]
    else:
        tree = LexborHTMLParser(fragment)
        tree.strip_tags(DROP_TAGS)
        root = tree.body
        if root is None:
            return ()
        blocks = [seg.to_block() for seg in walk(root).segments]
    while blocks and blocks[-1].kind is not BlockKind.TABLE and _is_feed_footer(blocks[-1].text):
        blocks.pop()
    return tuple(blocks)


def _is_feed_footer(text: str) -> bool:
    return len(text) < 300 and _FEED_FOOTER_RE.match(_unbold(text)) is not None
