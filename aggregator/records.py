"""The record text format: parse and render records, ids, content hashes, file names.

A record is plain UTF-8 text, one block per line (see docs/record-format.md):

* ``- item`` is a list item; ``| a | b |`` lines with a ``|---|---|`` separator row after the
  first one are a table; any other non-blank line is a paragraph, or a heading when it reads
  like one (short, no sentence punctuation at its end).
* ``**bold**`` stays inline in a block's text.
* Blank lines between blocks carry no meaning but are kept (``Block.gap``) so that
  ``render(parse(text)) == text`` byte for byte, whatever the text. Where a table's re-rendering
  would differ from its source lines (odd spacing, a custom separator row), its lines stay
  paragraphs: parsing never alters a text.

Pure: no I/O, no clock.
"""

from __future__ import annotations

import functools
import hashlib
import re
import unicodedata
from collections.abc import Sequence

from aggregator.errors import RecordFormatError
from aggregator.model import Block, BlockKind, Document

__all__ = [
    "body_text",
    "compose",
    "content_hash",
    "is_headline_like",
    "lead_of",
    "link_list_start",
    "parse",
    "parse_filename",
    "plain_text",
    "record_filename",
    "record_id",
    "render",
    "sections",
    "title_of",
]

LIST_MARKER = "- "
MAX_TITLE_CHARS = 160
MIN_LINK_LIST = 4  # headline lines in a row that end a text and count as a "more news" list
# A headline is shorter than this; longer lines are paragraphs whatever their punctuation.
_MAX_HEADLINE_CHARS = 200
_MAX_HEADLINE_WORDS = 30

_SEPARATOR_RE = re.compile(r"^\|(?:\s*:?-{3,}:?\s*\|)+$")
_UNESCAPED_PIPE_RE = re.compile(r"(?<!\\)\|")
_BOLD_RE = re.compile(r"\*\*(.+?)\*\*")
_WS_RE = re.compile(r"\s+")
_FILENAME_RE = re.compile(r"^(\d{3,})_([0-9a-f]{16})\.txt$")
_BYLINE_RE = re.compile(r"^(?:by|von|par|autorius|autorė|автор|аўтар)\b\s*:?\s*\S", re.IGNORECASE)
_DATE_LINE_RE = re.compile(r"^[\d\s.:/,\-–]+(?:[ap]\.?m\.?)?$", re.IGNORECASE)
_SENTENCE_END_RE = re.compile(r"[.!?…]+[\"'”’»)\]]*(?=\s+\S)")
# Words after which a full stop does not end a sentence.
_ABBREVIATIONS = frozenset(
    {
        *("mr", "mrs", "ms", "dr", "prof", "st", "gen", "col", "lt", "sgt", "capt", "gov"),
        *("sen", "rep", "jr", "sr", "inc", "ltd", "co", "corp", "no", "vs", "etc", "approx"),
        *("jan", "feb", "mar", "apr", "jun", "jul", "aug", "sep", "sept", "oct", "nov", "dec"),
    }
)
_CLAUSE_BREAKS = (", ", "; ", " — ", " – ", " - ", ": ")


# --- parsing and rendering -------------------------------------------------------------------


# A record's text is parsed by several stages in a row (hashing, matching, fingerprinting, the
# store's summary); documents are immutable, so the last few are shared.
@functools.lru_cache(maxsize=16)
def parse(text: str) -> Document:
    """Split a record text into blocks; ``render`` of the result gives ``text`` back exactly."""
    final_newline = text.endswith("\n")
    content = text[:-1] if final_newline else text
    lines = content.split("\n") if (content or final_newline) else []
    blocks: list[Block] = []
    gap = 0
    i = 0
    while i < len(lines):
        line = lines[i]
        if line == "":
            gap += 1
            i += 1
            continue
        # Only a line that starts with "|" can start a table.
        table, consumed = _take_table(lines, i, gap) if line[0] == "|" else (None, 0)
        if table is not None:
            blocks.append(table)
            i += consumed
        else:
            blocks.append(_line_block(line, gap))
            i += 1
        gap = 0
    return Document(blocks=tuple(blocks), trailing_blank_lines=gap, final_newline=final_newline)


def render(doc: Document) -> str:
    """The record text of a document: one line per block, ``gap`` blank lines before each."""
    parts: list[str] = []
    for block in doc.blocks:
        parts.append("\n" * block.gap)
        parts.append(_render_block(block))
        parts.append("\n")
    parts.append("\n" * doc.trailing_blank_lines)
    out = "".join(parts)
    if not doc.final_newline and out.endswith("\n"):
        out = out[:-1]
    return out


def _render_block(block: Block) -> str:
    if block.kind is BlockKind.TABLE:
        return _render_table(block.rows)
    if block.kind is BlockKind.LIST_ITEM:
        return LIST_MARKER + block.text
    return block.text


def _line_block(line: str, gap: int) -> Block:
    if line.startswith(LIST_MARKER):
        return Block(BlockKind.LIST_ITEM, text=line[len(LIST_MARKER) :], gap=gap)
    kind = BlockKind.HEADING if is_headline_like(line) else BlockKind.PARAGRAPH
    return Block(kind, text=line, gap=gap)


def _is_row_line(line: str) -> bool:
    return len(line) >= 2 and line.startswith("|") and line.endswith("|")


def _take_table(lines: Sequence[str], start: int, gap: int) -> tuple[Block | None, int]:
    """A table starting at ``lines[start]`` and the number of lines it spans, if there is one
    whose rendering is exactly its source lines."""
    if start + 1 >= len(lines):
        return None, 0
    header, separator = lines[start], lines[start + 1]
    if not (_is_row_line(header) and _SEPARATOR_RE.match(separator)):
        return None, 0
    end = start + 2
    while end < len(lines) and _is_row_line(lines[end]) and not _SEPARATOR_RE.match(lines[end]):
        # A row followed by a separator starts the next table.
        if end + 1 < len(lines) and _SEPARATOR_RE.match(lines[end + 1]):
            break
        end += 1
    rows = tuple(_split_row(lines[j]) for j in [start, *range(start + 2, end)])
    if any(row is None for row in rows):
        return None, 0
    table_rows = tuple(row for row in rows if row is not None)
    source = "\n".join(lines[start:end])
    if _render_table(table_rows) != source:
        return None, 0
    return Block(BlockKind.TABLE, rows=table_rows, gap=gap), end - start


def _split_row(line: str) -> tuple[str, ...] | None:
    inner = line[1:-1]
    cells: list[str] = []
    for raw in _UNESCAPED_PIPE_RE.split(inner):
        if not (len(raw) >= 2 and raw.startswith(" ") and raw.endswith(" ")):
            return None
        cells.append(raw[1:-1].replace("\\|", "|"))
    return tuple(cells)


def _render_table(rows: Sequence[Sequence[str]]) -> str:
    if not rows or not rows[0]:
        raise ValueError("a table needs a header row with at least one cell")
    lines = [_render_row(rows[0]), "|" + "---|" * len(rows[0])]
    lines.extend(_render_row(row) for row in rows[1:])
    return "\n".join(lines)


def _render_row(cells: Sequence[str]) -> str:
    return "|" + "|".join(f" {cell.replace('|', chr(92) + '|')} " for cell in cells) + "|"


# --- composing ---------------------------------------------------------------------------------


def _one_line(text: str) -> str:
    # Printable text has no whitespace but the ASCII space (every other whitespace character
    # is a control or separator): without doubled or outer spaces it is one line already.
    if text.isprintable() and "  " not in text and text[:1] != " " and text[-1:] != " ":
        return text
    return _WS_RE.sub(" ", text).strip()


def compose(title: str, lead: str, body: Sequence[Block]) -> str:
    """The text of a record this service makes: lead line, title line, body blocks.

    Line breaks inside the title and lead become spaces (each is one block); an empty lead or
    title is left out. The result ends with a newline.
    """
    blocks: list[Block] = []
    lead_line = _one_line(lead)
    if lead_line:
        blocks.append(Block(BlockKind.PARAGRAPH, text=lead_line))
    title_line = _one_line(title)
    if title_line:
        blocks.append(Block(BlockKind.HEADING, text=title_line))
    for block in body:
        if block.kind is BlockKind.TABLE:
            rows = tuple(tuple(_one_line(c) for c in row) for row in block.rows)
            if rows and rows[0]:
                blocks.append(Block(BlockKind.TABLE, rows=rows, gap=block.gap))
            continue
        text = _one_line(block.text)
        if text:
            blocks.append(Block(block.kind, text=text, gap=block.gap))
    return render(Document(blocks=tuple(blocks), trailing_blank_lines=0, final_newline=True))


# --- ids, hashes, file names ---------------------------------------------------------------


def record_id(canonical_url: str | None, text: str) -> str:
    """16 lowercase hex digits: the first 64 bits of SHA-256 of the canonical URL, else the text."""
    basis = canonical_url if canonical_url else text
    return hashlib.sha256(basis.encode("utf-8")).hexdigest()[:16]


def content_hash(text: str) -> str:
    """SHA-256 hex of the text with markup and whitespace removed and case folded, so the same
    article re-fetched with other spacing or line breaks hashes the same."""
    plain = plain_text(parse(text))
    normalized = unicodedata.normalize("NFKC", plain).casefold()
    normalized = _WS_RE.sub("", normalized.replace("|", ""))
    return hashlib.sha256(normalized.encode("utf-8")).hexdigest()


def record_filename(index: int, rid: str) -> str:
    """``007_0123456789abcdef.txt``: the index zero-padded to at least three digits."""
    if index < 0:
        raise RecordFormatError(f"record index must be >= 0, got {index}")
    if not re.fullmatch(r"[0-9a-f]{16}", rid):
        raise RecordFormatError(f"record id must be 16 lowercase hex digits, got {rid!r}")
    return f"{index:03d}_{rid}.txt"


def parse_filename(name: str) -> tuple[int, str]:
    """``(index, record id)`` from a record file name; raises RecordFormatError otherwise."""
    match = _FILENAME_RE.match(name)
    if match is None:
        raise RecordFormatError(
            f"not a record file name (expected NNN_<16 lowercase hex>.txt): {name!r}"
        )
    return int(match.group(1)), match.group(2)


# --- plain text, title and lead ------------------------------------------------------------


def strip_inline(text: str) -> str:
    """A block's inline text without ``**bold**`` markers."""
    return _BOLD_RE.sub(r"\1", text) if "**" in text else text


def block_plain_text(block: Block) -> str:
    if block.kind is BlockKind.TABLE:
        return "\n".join(" ".join(strip_inline(c) for c in row) for row in block.rows)
    return strip_inline(block.text)


def plain_text(doc: Document) -> str:
    """The whole text without markup (``**``, table pipes, ``- `` markers), one block per line."""
    return "\n".join(t for t in (block_plain_text(b) for b in doc.blocks) if t.strip())


def body_text(doc: Document) -> str:
    """Plain text of the blocks after the title other than the lead (the body, for matching);
    a byline or section label above the title is not body."""
    return _body(doc, _layout(doc))


def _body(doc: Document, layout: tuple[int | None, int | None]) -> str:
    title_i, lead_i = layout
    anchors = [i for i in (title_i, lead_i) if i is not None]
    start = min(anchors) if anchors else 0
    end = link_list_start(doc, after=max(anchors, default=-1))
    skip = {title_i, lead_i}
    return "\n".join(
        t
        for i, b in enumerate(doc.blocks[:end])
        if i >= start and i not in skip and (t := block_plain_text(b)).strip()
    )


def link_list_start(doc: Document, after: int = -1) -> int:
    """Where a trailing list of other stories' headlines begins (``len(doc.blocks)`` when there
    is none): at least ``MIN_LINK_LIST`` headline-like lines in a row that end the text, set off
    by a blank line, after block ``after``. Pages often end with such "more news" lists; they are
    kept in the text but are not the article's body."""
    blocks = doc.blocks
    i = len(blocks)
    while i > after + 1 and blocks[i - 1].kind is BlockKind.HEADING and blocks[i - 1].gap == 0:
        i -= 1
    # blocks[i - 1] may be the run's first line, the one preceded by the blank line.
    if i > after + 1 and blocks[i - 1].kind is BlockKind.HEADING and blocks[i - 1].gap > 0:
        i -= 1
        if len(blocks) - i >= MIN_LINK_LIST:
            return i
    return len(blocks)


def sections(doc: Document) -> tuple[str, str, str]:
    """``(title_of(doc), lead_of(doc), body_text(doc))``, finding the layout once."""
    layout = _layout(doc)
    return _title(doc, layout), _lead(doc, layout), _body(doc, layout)


def title_of(doc: Document) -> str:
    """The headline of a record.

    Records this service composes are lead line, title line. Imported pages may open with a
    byline (``By: ...``), a one-word section label (``News``) or a date, then the headline, then
    the lead; those are skipped. When no line reads like a headline, the title is the lead's
    first sentence, shortened at a clause or word boundary.
    """
    return _title(doc, _layout(doc))


def _title(doc: Document, layout: tuple[int | None, int | None]) -> str:
    title_i, lead_i = layout
    if title_i is not None:
        return _one_line(strip_inline(doc.blocks[title_i].text))
    if lead_i is not None:
        return _shorten(first_sentence(_one_line(strip_inline(doc.blocks[lead_i].text))))
    return ""


def lead_of(doc: Document) -> str:
    """The lead paragraph of a record, as plain text ("" when there is none)."""
    return _lead(doc, _layout(doc))


def _lead(doc: Document, layout: tuple[int | None, int | None]) -> str:
    lead_i = layout[1]
    return "" if lead_i is None else _one_line(strip_inline(doc.blocks[lead_i].text))


def is_headline_like(text: str) -> bool:
    """Reads like a headline: short, no full stop/colon at its end, one sentence at most."""
    line = strip_inline(text).strip()
    # The word count first, splitting no further than one word too many: a paragraph is
    # rejected without collapsing its whole text.
    if len(line.split(maxsplit=_MAX_HEADLINE_WORDS)) > _MAX_HEADLINE_WORDS:
        return False
    if len(line) > _MAX_HEADLINE_CHARS:
        line = _one_line(line)  # runs of spaces do not make a line long
    if not line or len(line) > _MAX_HEADLINE_CHARS:
        return False
    if line[-1] in ".:;,…":  # a truncated summary ends with "…"
        return False
    return _first_sentence_end(line) is None


def _is_paragraph_like(block: Block) -> bool:
    return block.kind is not BlockKind.TABLE and not is_headline_like(block.text)


def _is_preamble(block: Block) -> bool:
    """A byline, one-word section label or date line printed above a headline."""
    if block.kind is not BlockKind.PARAGRAPH and block.kind is not BlockKind.HEADING:
        return False
    line = _one_line(strip_inline(block.text))
    # "By: TA | AP Insight", "By Jane Doe": short, and not a sentence ("By Monday, ... .").
    if _BYLINE_RE.match(line) and len(line.split()) <= 8 and is_headline_like(line):
        return True
    if _DATE_LINE_RE.match(line):
        return True
    return len(line.split()) == 1 and len(line) <= 24


def _layout(doc: Document) -> tuple[int | None, int | None]:
    """Indexes of the title block and the lead block (either may be None)."""
    candidates = [
        i
        for i, b in enumerate(doc.blocks)
        if b.kind in (BlockKind.PARAGRAPH, BlockKind.HEADING) and b.text.strip()
    ]
    # Skip the preamble only while a real block follows, so a one-word record keeps its text.
    while len(candidates) > 1 and _is_preamble(doc.blocks[candidates[0]]):
        candidates.pop(0)
    if not candidates:
        return None, None
    first = candidates[0]
    second = candidates[1] if len(candidates) > 1 else None
    first_headline = not _is_paragraph_like(doc.blocks[first])
    second_headline = second is not None and not _is_paragraph_like(doc.blocks[second])
    if second is not None and second_headline and (second == first + 1 or not first_headline):
        # lead line, title line: the layout compose() writes.
        return second, first
    if first_headline:
        lead = next((i for i in candidates[1:] if _is_paragraph_like(doc.blocks[i])), None)
        return first, lead
    return None, first


def _first_sentence_end(text: str) -> int | None:
    """Index just past the first sentence of ``text`` when another sentence follows."""
    for match in _SENTENCE_END_RE.finditer(text):
        end = match.end()
        before = text[: match.start()]
        word = before.rsplit(None, 1)[-1] if before.strip() else ""
        if match.group().startswith(".") and _is_abbreviation(word):
            continue
        nxt = text[end:].lstrip()[:1]
        if nxt and (nxt.isupper() or nxt.isdigit() or nxt in "\"'“«‘("):
            return end
    return None


def _is_abbreviation(word: str) -> bool:
    bare = word.strip("\"'“”«»()[]")
    if not bare:
        return False
    # U.S., E.U., a single initial (J. Smith) or a known short form (Gen., Dec.).
    if re.fullmatch(r"(?:\w\.)*\w", bare) and (len(bare) == 1 or "." in bare):
        return True
    return bare.casefold() in _ABBREVIATIONS


def first_sentence(text: str) -> str:
    end = _first_sentence_end(text)
    return text if end is None else text[:end].strip()


def _shorten(sentence: str, limit: int = MAX_TITLE_CHARS) -> str:
    """Cut a sentence to ``limit`` characters: at the last clause break that keeps a useful
    part, else at the last word boundary with an ellipsis."""
    sentence = sentence.strip()
    if len(sentence) <= limit:
        return sentence.rstrip(".")
    head = sentence[:limit]
    best = max(head.rfind(brk) for brk in _CLAUSE_BREAKS)
    if best >= limit // 3:
        return head[:best].rstrip(" ,;:—–-")
    cut = head.rfind(" ")
    if cut <= 0:
        cut = limit - 1
    return head[:cut].rstrip(" ,;:—–-") + "…"


SUMMARY_MAX_CHARS = 1000


def summary_of(text: str) -> str:
    """A development's summary from its representative's record text: the lead, cut short."""
    try:
        lead = lead_of(parse(text))
    except RecordFormatError:
        lead = ""
    if not lead:
        lead = " ".join(text.split())
    if len(lead) > SUMMARY_MAX_CHARS:
        lead = lead[: SUMMARY_MAX_CHARS - 1].rsplit(" ", 1)[0] + "…"
    return lead
