"""Decode fetched documents to text without mojibake.

Belarusian and Lithuanian outlets still serve windows-1251, windows-1257 and ISO-8859-13, and
their labels are often wrong (a server default of ISO-8859-1 in the header, a template's stale
``<meta charset>``). The order of evidence:

1. a byte-order mark (nothing else can produce one);
2. valid UTF-8 with non-ASCII text: legacy 8-bit text is practically never valid UTF-8, so this
   beats any label;
3. otherwise every candidate (the HTTP header, the XML declaration or ``<meta>``, the source's
   language, then windows-1251/-1257/-1252) is decoded strictly and scored for mojibake signs
   (C1 control characters, words that mix Latin and Cyrillic, Latin words made mostly of accented
   letters); the lowest score wins, ties going to the stronger evidence. A header of ISO-8859-1 or
   windows-1252 counts as weak evidence because it is the usual server default.

Pure functions: bytes and labels in, text out.
"""

from __future__ import annotations

import codecs
import re
from collections import Counter
from collections.abc import Mapping

_BOMS = (
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)

# WHATWG treats these labels as windows-1252, which is a superset that decodes 0x80-0x9F.
_WINDOWS_1252_LABELS = {"iso-8859-1", "latin-1", "latin1", "us-ascii", "ascii", "cp1252"}
_WEAK_LABELS = {"windows-1252", "cp1252"}

# Legacy encodings worth trying, by the source's language.
_LANGUAGE_ENCODINGS: Mapping[str, tuple[str, ...]] = {
    "be": ("windows-1251",),
    "ru": ("windows-1251", "koi8-r"),
    "uk": ("windows-1251", "koi8-u"),
    "bg": ("windows-1251",),
    "sr": ("windows-1251",),
    "mk": ("windows-1251",),
    "lt": ("windows-1257", "iso-8859-13"),
    "lv": ("windows-1257", "iso-8859-13"),
    "et": ("windows-1257", "iso-8859-13"),
    "pl": ("windows-1250", "iso-8859-2"),
    "cs": ("windows-1250", "iso-8859-2"),
}
_FALLBACKS = ("windows-1251", "windows-1257", "windows-1252")

_XML_DECL = re.compile(rb"""^\s*<\?xml[^>]{0,200}?encoding\s*=\s*["']([A-Za-z0-9._:-]{1,40})["']""")
_META_CHARSET = re.compile(
    rb"""<meta[^>]{0,200}?charset\s*=\s*["']?\s*([A-Za-z0-9._:-]{1,40})""", re.IGNORECASE
)
_HEADER_CHARSET = re.compile(r"""charset\s*=\s*["']?([A-Za-z0-9._:-]{1,40})""", re.IGNORECASE)
_WORD = re.compile(r"[^\W\d_]{3,}")


def normalize_label(label: str | None) -> str | None:
    """The Python codec name for a charset label, or None when unknown."""
    if not label:
        return None
    label = label.strip().strip("\"'").lower()
    if label in _WINDOWS_1252_LABELS:
        return "windows-1252"
    try:
        name = codecs.lookup(label).name
    except LookupError:
        return None
    return {"cp1251": "windows-1251", "cp1257": "windows-1257", "cp1250": "windows-1250"}.get(
        name, "windows-1252" if name == "cp1252" else name
    )


def header_charset(content_type: str | None) -> str | None:
    if not content_type:
        return None
    m = _HEADER_CHARSET.search(content_type)
    return m.group(1) if m else None


def declared_charset(body: bytes) -> str | None:
    """The encoding the document declares (XML declaration, else HTML ``<meta>``)."""
    m = _XML_DECL.match(body[:512])
    if m:
        return m.group(1).decode("ascii")
    m = _META_CHARSET.search(body[:8192])
    if m:
        return m.group(1).decode("ascii")
    return None


def bom_encoding(body: bytes) -> tuple[str, int] | None:
    """The encoding a byte-order mark announces and the mark's length."""
    for bom, name in _BOMS:
        if body.startswith(bom):
            return name, len(bom)
    return None


def _is_cyrillic(ch: str) -> bool:
    return "\u0400" <= ch <= "\u04ff"


# Accented Latin letters of the languages whose text we expect. Text decoded with the right
# table uses the letters of one language; a wrong table scatters letters from several.
_ALPHABETS = tuple(
    frozenset(letters + letters.upper())
    for letters in (
        "ąčęėįšųūž",  # Lithuanian
        "āčēģīķļņšūž",  # Latvian
        "äöüõšž",  # Estonian
        "ąćęłńóśźż",  # Polish
        "áčďéěíňóřšťúůýž",  # Czech, Slovak
        "äöüß",  # German
        "àâæçéèêëîïôœùûüÿ",  # French
        "áéíóúñüàèìòùç",  # Spanish, Catalan, Italian, Portuguese
        "ãõâêôáéíóúàç",  # Portuguese
        "åäöæøéü",  # Scandinavian
    )
)


_NON_ASCII = re.compile(r"[^\x00-\x7f]")
# A Cyrillic letter next to a non-Cyrillic one: only a text with such a pair can hold a word that
# mixes the two scripts.
_SCRIPT_SEAM = re.compile(
    r"[\u0400-\u04ff][^\W\d_\u0400-\u04ff]|[^\W\d_\u0400-\u04ff][\u0400-\u04ff]"
)


def mojibake_score(text: str) -> int:
    """How strongly ``text`` looks like bytes decoded with the wrong table (0 = clean).

    Runs on every candidate decoding of a non-UTF-8 feed, so the per-character work is done by
    the regex engine: only the distinct non-ASCII characters are looked at in Python.
    """
    score = 0
    accented: Counter[str] = Counter()
    for ch, n in Counter(_NON_ASCII.findall(text)).items():
        code = ord(ch)
        if code <= 0x9F:
            score += 5 * n  # C1 controls: never in real text
        elif ch == "\ufffd":
            score += n
        elif ch.isalpha() and not _is_cyrillic(ch):
            accented[ch] += n
    if accented:
        score += min(
            sum(n for ch, n in accented.items() if ch not in alphabet) for alphabet in _ALPHABETS
        )
    if _SCRIPT_SEAM.search(text):
        for word in _WORD.findall(text):
            if any(_is_cyrillic(c) for c in word) and not all(_is_cyrillic(c) for c in word):
                score += 3  # Latin and Cyrillic inside one word
    return score


def _candidates(body: bytes, header_label: str | None, language: str | None) -> list[str]:
    strong: list[str] = []
    weak: list[str] = []
    header = normalize_label(header_label)
    declared = normalize_label(declared_charset(body))
    for label in (declared, header):
        if label is None:
            continue
        (weak if label in _WEAK_LABELS else strong).append(label)
    guesses = list(_LANGUAGE_ENCODINGS.get((language or "").split("-")[0].lower(), ()))
    ordered = [*strong, *guesses, *weak, *_FALLBACKS]
    seen: list[str] = []
    for name in ordered:
        if name not in seen and not name.startswith("utf-"):
            seen.append(name)
    return seen


def decode(
    body: bytes, content_type: str | None = None, language: str | None = None
) -> tuple[str, str]:
    """``(text, encoding)`` for a fetched document; never raises on bad bytes."""
    bom = bom_encoding(body)
    if bom:
        return body[bom[1] :].decode(bom[0], "replace"), bom[0]
    try:
        return body.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        pass
    best: tuple[int, int, str, str] | None = None
    for rank, name in enumerate(_candidates(body, header_charset(content_type), language)):
        try:
            text = body.decode(name)
        except (UnicodeDecodeError, LookupError):
            continue
        score = mojibake_score(text)
        if best is None or (score, rank) < (best[0], best[1]):
            best = (score, rank, text, name)
        if score == 0:
            break  # candidates are in order of evidence: the first clean one wins
    if best is not None:
        return best[2], best[3]
    return body.decode("utf-8", "replace"), "utf-8"


def to_utf8_xml(text: str) -> bytes:
    """Re-encode decoded XML as UTF-8 with a matching declaration (for feedparser)."""
    body = text.encode("utf-8")
    m = _XML_DECL.match(body[:512])
    if m:
        body = body[: m.start(1)] + b"utf-8" + body[m.end(1) :]
    return body
