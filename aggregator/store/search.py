"""Full-text search over the stored records: SQLite FTS5 or PostgreSQL text search.

The index is kept by the database itself, so whatever writes ``records`` fills it (migration
0008): on SQLite an FTS5 table (``records_search``, external content over ``records``, rowid =
``records.seq``) maintained by insert/update/delete triggers; on PostgreSQL a GIN index on
``to_tsvector('simple', title || ' ' || text)`` (the first ``SEARCH_TEXT_CHARS`` characters),
which needs no trigger at all.

A query is a list of words; a record matches when it holds every word. Words are matched as
topic rules match them (``match.stem``): a word of five or more letters matches its inflected
forms ("Lietuva" finds "Lietuvos", "balloons" finds "balloon"), a word ending in ``*`` is a
prefix, and SQLite also ignores accents ("Kondratovic" finds "Kondratovič"); PostgreSQL's
``simple`` configuration folds case but keeps accents. No other syntax: quotes, operators
and punctuation in the query are just word separators, so no input is a syntax error.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

from aggregator.errors import AggregatorError
from aggregator.match import normalize, stem

SEARCH_TABLE = "records_search"  # SQLite: the FTS5 table and its shadow tables' prefix
SEARCH_TEXT_CHARS = 200_000  # PostgreSQL indexes this much of a record (tsvector < 1 MB)
MAX_QUERY_WORDS = 12
_WORD = re.compile(r"\w+\*?")
PG_VECTOR = (
    f"to_tsvector('simple'::regconfig, left(records.title || ' ' || records.text, "
    f"{SEARCH_TEXT_CHARS}))"
)


class SearchError(AggregatorError):
    """A query that cannot be searched (no words); the message says why."""


@dataclass(frozen=True, slots=True)
class QueryWord:
    text: str  # lower-cased, as typed (PostgreSQL keeps accents)
    folded: str  # accents removed, case folded (SQLite's FTS5 folds the same way)
    prefix: bool  # match words starting with it


def query_words(query: str) -> list[QueryWord]:
    """The words of ``query`` as the search uses them; raises SearchError when there are none."""
    words: list[QueryWord] = []
    for raw in _WORD.findall(query or ""):
        star = raw.endswith("*")
        word = raw.rstrip("*")
        if not word:
            continue
        folded = normalize(word)
        root = stem(folded)
        lower = word.casefold()
        if star:
            words.append(QueryWord(lower, folded, True))
        elif root != folded:
            # The stem as a prefix; the typed form's first letters when folding kept the length.
            typed = lower[: len(root)] if len(lower) == len(folded) else root
            words.append(QueryWord(typed, root, True))
        else:
            words.append(QueryWord(lower, folded, False))
    unique = list({(w.text, w.prefix): w for w in words}.values())
    if not unique:
        raise SearchError("the search needs at least one word (letters or digits)")
    return unique[:MAX_QUERY_WORDS]


def fts5_query(words: list[QueryWord]) -> str:
    """An FTS5 MATCH expression: every word, each quoted (never parsed as syntax)."""
    # The word as typed (lower-cased): FTS5 folds it with the same tokenizer as the text.
    return " AND ".join(f'"{w.text}"' + ("*" if w.prefix else "") for w in words)


def tsquery(words: list[QueryWord]) -> str:
    """A ``to_tsquery('simple', ...)`` text: every word quoted as a lexeme, ``:*`` for
    prefixes."""
    parts = []
    for w in words:
        lexeme = w.text.replace("\\", "\\\\").replace("'", "''")
        parts.append(f"'{lexeme}'" + (":*" if w.prefix else ""))
    return " & ".join(parts)


def search_statement(dialect: str, words: list[QueryWord], limit: int, offset: int) -> Any:
    """(SQL text, parameters) selecting matching record ids, best match first, newest first
    among equals."""
    if dialect == "postgresql":
        sql = sa.text(
            "SELECT records.id FROM records, to_tsquery('simple'::regconfig, :q) AS query "
            f"WHERE {PG_VECTOR} @@ query "
            f"ORDER BY ts_rank({PG_VECTOR}, query) DESC, records.time DESC, records.seq DESC "
            "LIMIT :limit OFFSET :offset"
        )
        return sql, {"q": tsquery(words), "limit": limit, "offset": offset}
    sql = sa.text(
        f"SELECT records.id FROM {SEARCH_TABLE} JOIN records ON records.seq = {SEARCH_TABLE}.rowid "
        f"WHERE {SEARCH_TABLE} MATCH :q "
        f"ORDER BY bm25({SEARCH_TABLE}), records.time DESC, records.seq DESC "
        "LIMIT :limit OFFSET :offset"
    )
    return sql, {"q": fts5_query(words), "limit": limit, "offset": offset}
