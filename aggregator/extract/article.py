"""Article extraction: find the main text of a news page and compose the record text.

The method, in general terms (no per-site rules):

1. Parse with selectolax (Lexbor); read metadata (metadata.py) before anything else.
2. Walk the body into text segments (blocks.py) that know their link density, skipping
   scripts, styles, media and form controls, furniture tags (``nav``, ``footer``, ``aside``,
   ``figcaption``), hidden elements and ARIA roles of furniture. Class/id words decide what is
   *doubtful*: furniture words (share, social, related, comments, cookie, newsletter, ads,
   breadcrumbs, ...) against content words (article, body, story, ...); the nearest element
   with a decided balance wins.
3. Score every block element by the text below it: long, link-poor text counts for it,
   link-heavy or doubtful text against it, and each level up keeps 0.9 of a child's score.
   The element with the highest score is the article container: the nearest common ancestor
   of the bulk of the text, leaving out link lists and other page furniture around it.
4. Inside the container, drop link lists (a "related headlines" block), small forms, short
   furniture lines (share prompts, "Advertisement", bylines, date lines), legal lines, the
   title repeated as ``<h1>``, the preamble before the first paragraph (kicker, byline, date),
   the heading of a dropped block and headings left with nothing under them.
5. JSON-LD ``articleBody`` stands in only when the page gives far less text.
6. The first paragraph is the lead; compose lead, title and body into the record text.
"""

from __future__ import annotations

import gc
import itertools
import re
from collections.abc import Callable

import numpy as np
from selectolax.lexbor import LexborHTMLParser, LexborNode, SelectolaxError

from aggregator.errors import ExtractionError
from aggregator.extract.blocks import Segment, Walk, html_to_blocks, normalize_space, walk
from aggregator.extract.classifier import (
    FEATURES,
    BlockContext,
    BlockModel,
    block_features,
    ld_shingles_of,
    load_default_model,
)
from aggregator.extract.metadata import PageMeta, clean_title, read_metadata
from aggregator.model import Article, Block, BlockKind
from aggregator.records import compose, first_sentence

__all__ = [
    "candidate_blocks",
    "container_segments",
    "extract_article",
    "extract_text",
    "finish_segments",
    "reset_caches",
    "select_segments",
]

# --- boilerplate hints ---------------------------------------------------------------------

_SKIP_TAGS = frozenset(("nav", "footer", "aside", "menu", "figcaption"))
_NAV_TAGS = frozenset(("nav", "menu"))
_NEVER_SKIP_TAGS = frozenset(("html", "body", "main", "article"))
# Word lists read best as text; ruff's SIM905 would explode them one word per line.
_SKIP_ROLES = frozenset(
    """navigation banner contentinfo complementary search menu menubar dialog alertdialog
    toolbar tablist""".split()  # noqa: SIM905
)
# Class/id words of page furniture. An element carrying one is "doubtful": its text counts
# against a container and is left out, unless a nearer element says "content" again.
_NEGATIVE_WORDS = frozenset(
    """nav navbar navigation menu footer sidebar share shares sharing sharebar social related
    recommended recommendations recirc recirculation comment comments disqus cookie cookies
    consent gdpr newsletter subscribe subscription signup promo advert advertisement
    advertising ad ads adslot adunit dfp breadcrumb breadcrumbs pagination pager popup modal
    outbrain taboola sponsored trending popular toolbar skip tags masthead login byline
    caption credit dateline timestamp author bio donate donation donations paywall
    membership""".split()  # noqa: SIM905
)
# Furniture words naming a line, not a box: a byline, a caption, a date line. An
# element named so that holds a long text is not that line (a caption or byline element left
# open by broken markup around the whole article): its name then says nothing.
_LINE_WORDS = frozenset(("byline", "caption", "dateline", "timestamp"))
# Words that go with a line word in one name ("byline-author", "caption-credit"), though alone
# they name a box as often (an author's bio, a credit-card offer).
_LINE_COMPANION_WORDS = frozenset(("author", "credit"))
_LINE_MAX_CHARS = 400
_LINE_HINT = -2  # cached for a class/id of line words only; doubtful when its text is short
# Furniture words that also appear glued to others ("sharedaddy", "footernav", "adsbygoogle"
# does not: "ad"/"ads" stay whole words).
_NEGATIVE_STEMS = (
    "share",
    "social",
    "related",
    "cookie",
    "newsletter",
    "sidebar",
    "advert",
    "subscri",
    "breadcrumb",
    "footer",
    "outbrain",
    "taboola",
    "sponsor",
    "recommend",
    "comment",
)
_POSITIVE_WORDS = frozenset(
    """article body content entry main story text post prose blog articlebody richtext
    news embed""".split()  # noqa: SIM905
)
_TOKEN_SPLIT_RE = re.compile(r"[^A-Za-z0-9]+")
_SLUG_RE = re.compile(r"^[a-z]+(?:-[a-z]+)+$")
# An id of this many hyphen-joined lower-case words is a heading's slug.
_SLUG_WORDS = 4
_CAMEL_WORD_RE = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z0-9]+")
_WORD_RE = re.compile(r"[a-z0-9]+")
_HIDDEN_STYLE_RE = re.compile(r"display\s*:\s*none|visibility\s*:\s*hidden", re.IGNORECASE)

# Short lines that are page furniture wherever they appear.
_BOILERPLATE_LINE_RE = re.compile(
    "^(?:"
    + "|".join(
        (
            r"advert|advertisement|advertising|sponsored( content)?|\(?ad\)?",
            r"read later|save( for later)?|back to top|print|email|tweet",
            r"facebook|twitter|linkedin|whatsapp|comments?( \(\d+\))?",
            r"share( this)?( article| story| post| on \w+)?:?",
            r"(read|see|view|show) (more|also|all|full)\b.*",
            r"related( articles| stories| posts| content| coverage| news)?:?",
            r"more (from|on|stories|news)\b.*|recommended( for you)?|you may also like.*",
            r"also read\b.*|follow us\b.*|sign up\b.*|subscribe\b.*|click here\b.*",
            r"(photo|image|video|credit|source)s?:.*",
            r"copyright\b.*|©.*|all rights reserved.*",
            r"(\d+ )?min(ute)?s? read|listen( to)?( this)?( article| story)?.*",
            r"\d+ (of|/|-) \d+( of \d+)?",  # gallery counters
            r".{0,40}requires javascript\.?|(please )?enable javascript.*",
            r"(updated|published|posted|last (updated|modified))( at| on|:)? .{0,60}",
            # The "advertisement" label in a few more languages.
            r"anzeige|werbung|publicidad|publicit[ée]|pubblicit[àa]|reklama|реклама|iklan",
            r"advertentie|annons|mainos|hirdetés|διαφήμιση",
        )
    )
    + ")$",
    re.IGNORECASE,
)
# A byline line wherever it stands: "By Jane Roe", "By: TA | AP Insight", "Von Anna Muster".
_BYLINE_RE = re.compile(r"^(?:By|BY|Von|VON|Par|Por|Door|Autor|Author|Text):?\s+\S[^.!?]*$")
# A picture's caption outside <figcaption>: "... (Image: GETTY)".
_CAPTION_END_RE = re.compile(
    r"\((?:image|photo|picture|pic|foto|credit|source|video)s?:[^()]{1,80}\)$", re.IGNORECASE
)
# Legal lines are furniture whatever their length.
_LEGAL_LINE_RE = re.compile(
    r"^(?:©|\(c\)\s*\d{4}|copyright\b)|\bsubject to copyright\b|\ball rights reserved\b",
    re.IGNORECASE,
)
# Markup that leaked into text (an escaped tag in the page source).
_MARKUP_LINE_RE = re.compile(r"^(?:<[a-zA-Z!/][^>]*>|\[/?[a-z_]+(?:\s[^\]]*)?\])$")
# Sentence ends of several scripts: Latin/Cyrillic ". ! ? …", CJK full-width "。！？", the
# Devanagari danda, the Arabic question mark; also a closing quote or bracket after them.
_SENTENCE_END_RE = re.compile(r"[.!?…:;\"”’)»。！？।؟」』]$")

# A paragraph this long and link-poor is article text; shorter ones are neutral.
_GOOD_CHARS = 80
_SHORT_CHARS = 20
_SHORT_WEIGHT = 0.2
_MAX_LINK_DENSITY = 0.5
# How much link-heavy or doubtful text counts against a container, relative to good text. It
# only has to keep the container from growing over page furniture: the furniture inside the
# chosen container is filtered out afterwards anyway.
_PENALTY = 0.25
_DECAY = 0.9
# The first this many characters of positive text after the title count (1 + _TITLE_BOOST)
# times in the container score.
_TITLE_BOOST_CHARS = 1500
_TITLE_BOOST = 1.0
# How many element levels above the title block hold the text that counts more.
_TITLE_SCOPE = 3


# Links and text-level formatting are not judged by their attributes: reading the many
# attributes of every link is the walk's largest cost, and a link's text is short and counted
# as link text anyway.
_UNJUDGED_TAGS = frozenset(
    "a b strong em i u s small sup sub abbr cite time font q code mark label".split()  # noqa: SIM905
)
# class/id string -> hint, shared across pages (a site repeats its class names); cleared when
# it grows past _HINT_CACHE_MAX so a long-running service does not grow without bound.
_HINT_CACHE: dict[str, int] = {}
_HINT_CACHE_MAX = 50_000
# (text, length) of a line -> whether it is a furniture line (_is_boilerplate_line).
_LINE_CACHE: dict[tuple[str, int], bool] = {}


def reset_caches() -> None:
    """Forget the class/id hints and furniture lines learnt so far (benchmarks measure cold
    runs with it)."""
    _HINT_CACHE.clear()
    _LINE_CACHE.clear()


_CLASS_ID = frozenset(("class", "id"))


def _classify(node: LexborNode, tag: str) -> int | None:
    """None to skip the subtree, -1 doubtful, +1 content hint, 0 neutral."""
    if tag in _SKIP_TAGS:
        return None
    if tag in _UNJUDGED_TAGS:
        return 0
    attrs = node.attributes
    if not attrs:
        return 0
    # Most elements carry a class and/or an id only: no hidden/style/role/itemprop test.
    if not attrs.keys() <= _CLASS_ID:
        if "hidden" in attrs or attrs.get("aria-hidden") == "true":
            return None
        style = attrs.get("style")
        if style and ("none" in style or "hidden" in style) and _HIDDEN_STYLE_RE.search(style):
            return None
        role = attrs.get("role")
        if role and role.lower() in _SKIP_ROLES and tag not in _NEVER_SKIP_TAGS:
            return None
        itemprop = attrs.get("itemprop")
        if itemprop and itemprop.lower() == "articlebody":
            return 1
    key = (attrs.get("class") or "") + " " + (attrs.get("id") or "")
    if key == " ":
        return 0
    hint = _HINT_CACHE.get(key)
    if hint is None:
        hint = _hint_of_words(key)
        if len(_HINT_CACHE) >= _HINT_CACHE_MAX:
            _HINT_CACHE.clear()
        _HINT_CACHE[key] = hint
    if tag in ("html", "body"):
        return 0
    if hint == _LINE_HINT:
        # Only a short text is the line its name says (read once per such element: few).
        return -1 if len(node.text(deep=True)) <= _LINE_MAX_CHARS else 0
    return hint


def _classify_lenient(node: LexborNode, tag: str) -> int | None:
    """Skip navigation only (the last try on a page where nothing was found): hidden text,
    class words and the other furniture tags are read, since a page can hold its article in
    an ``<aside>`` or ``<footer>``, and the container score still decides."""
    return None if tag in _NAV_TAGS else 0


def _hint_of_words(key: str) -> int:
    classes, _, ident = key.rpartition(" ")
    if ident.count("-") + 1 >= _SLUG_WORDS and _SLUG_RE.match(ident):
        # An id of many words is a slug of the element's own heading ("evolve-shared-mutable-
        # history", "how-we-share-data"), not a word of the page's design: it says nothing.
        key = classes
    words = _class_words(key)
    # "article-body pagination-first" is content, "article-comments" undecided (0: the
    # nearest decided ancestor holds).
    negative = 0
    positive = 0
    for word in words:
        if word in _POSITIVE_WORDS:
            positive += 1
        elif word in _NEGATIVE_WORDS or (
            word.startswith(_NEGATIVE_STEMS) and not word.startswith("commentar")
        ):
            negative += 1
    balance = positive - negative
    if (
        balance < 0
        and not positive
        and words & _LINE_WORDS
        and not any(
            w in _NEGATIVE_WORDS or w.startswith(_NEGATIVE_STEMS)
            for w in words - _LINE_WORDS - _LINE_COMPANION_WORDS
        )
    ):
        return _LINE_HINT
    return (balance > 0) - (balance < 0)


def _class_words(key: str) -> set[str]:
    """Lower-case words of a class/id string, camelCase split: "shareBar x_y" -> share bar x y."""
    if key.lower() == key:  # no capitals: no camelCase to split, nothing to lower
        words = set(_TOKEN_SPLIT_RE.split(key))
        words.discard("")
        return words
    words = set()
    for token in _TOKEN_SPLIT_RE.split(key):
        if not token:
            continue
        rest = token[1:]
        if rest == rest.lower():  # no capital after the first letter: one word
            words.add(token.lower())
        else:
            words.update(w.lower() for w in _CAMEL_WORD_RE.findall(token))
    return words


# --- container selection -------------------------------------------------------------------


def _weight(seg: Segment) -> float:
    if seg.doubtful:
        return -_PENALTY * seg.length
    ld = seg.link_density
    if ld > _MAX_LINK_DENSITY:
        return -_PENALTY * seg.length
    if seg.kind is BlockKind.HEADING:
        return 0.0
    if seg.kind is BlockKind.TABLE:
        return 0.5 * seg.length * (1.0 - ld)
    if seg.length >= _GOOD_CHARS or (seg.length >= 40 and _SENTENCE_END_RE.search(seg.text)):
        return seg.length * (1.0 - 2.0 * ld)
    if seg.length >= _SHORT_CHARS and ld < 0.2:
        # Short lines count a little: a page of short lines (verse, Q&A) still has a container.
        return _SHORT_WEIGHT * seg.length
    return 0.0


def _best_container(w: Walk) -> int:
    return _container_scores(w)[0]


def _container_scores(w: Walk, after: int = -1) -> tuple[int, list[float]]:
    """The best-scoring element and every element's score. ``after`` is the index of the
    segment holding the page's title (-1 when it was not found): the text right after the
    headline is the article's, so the first good text after it counts more."""
    n = len(w.parent)
    score = [0.0] * n
    boost = _TITLE_BOOST_CHARS
    # Only text near the title in the tree counts more (not a sidebar's bio after a short post).
    lo, hi = 0, n
    if after >= 0:
        lo = w.segments[after].elem
        for _ in range(_TITLE_SCOPE):
            if w.parent[lo] >= 0:
                lo = w.parent[lo]
        hi = w.end[lo]
    for i, seg in enumerate(w.segments):
        weight = _weight(seg)
        if boost > 0 and i > after and weight > 0 and lo <= seg.elem < hi:
            # Only the part of the block within the first characters counts more.
            weight *= 1.0 + _TITLE_BOOST * min(1.0, boost / seg.length)
            boost -= seg.length
        score[seg.elem] += weight
    # Children come after their parent in pre-order: accumulate bottom-up in one pass. Each
    # level up keeps only _DECAY of a child's score, so the winner is the nearest common
    # ancestor of the bulk of the text, not a page wrapper that also collects a stray
    # paragraph (a cookie notice, teasers of other stories) far away in the tree.
    for e in range(n - 1, 0, -1):
        p = w.parent[e]
        if p >= 0:
            score[p] += _DECAY * score[e]
    # The last element with the highest score: of a chain of wrappers with the same score,
    # the innermost one.
    top = max(score)
    best = n - 1 - score[::-1].index(top)
    return best, score


def select_segments(w: Walk, title: str) -> list[Segment]:
    """The article's segments, in order, from a walk of the page body."""
    segs = container_segments(w)
    if _chars(segs) < _NOTHING_FOUND_CHARS:
        # Class words can condemn a whole article (a "layout-with-sidebar" wrapper and no
        # content word below it): when they leave next to nothing, judge the page without them.
        for seg in w.segments:
            seg.doubtful = False
        retry = container_segments(w)
        if _chars(retry) > _chars(segs):
            segs = retry
    return finish_segments(segs, title)


# Less text than this kept from a page means the extraction found nothing.
_NOTHING_FOUND_CHARS = 100


def _chars(segs: list[Segment]) -> int:
    return sum(s.length for s in segs)


def container_segments(w: Walk, container: int | None = None) -> list[Segment]:
    """The segments kept inside ``container`` (the best-scoring element when None)."""
    if not w.segments:
        return []
    for seg in w.segments:
        if not seg.doubtful and _is_boilerplate_line(seg):
            seg.doubtful = True
    _doubt_small_forms(w)
    if container is None:
        container = _best_container(w)
    end = w.end[container]
    inside = [s for s in w.segments if container <= s.elem < end]
    keep = [_keep(s) for s in inside]
    # A heading right above a block that is dropped ("Related", "Don't miss", "Topics") is
    # that block's title: it goes too.
    for i, seg in enumerate(inside):
        if keep[i] and seg.kind is BlockKind.HEADING and i + 1 < len(inside) and not keep[i + 1]:
            keep[i] = False
    return [s for s, k in zip(inside, keep, strict=True) if k]


# A form holding less text than this is a sign-up, log-in or comment form; a larger one is a
# page wrapped in <form> (ASP.NET) and says nothing.
_SMALL_FORM_CHARS = 1500
_FORM_PARAGRAPH_CHARS = 300


def _doubt_small_forms(w: Walk) -> None:
    if "form" not in w.tags:
        return
    # Forms never nest (the parser closes one before opening another), so their element
    # ranges are disjoint, and each one's segments are a contiguous run in document order:
    # one merge pass, linear whatever the number of forms.
    runs: dict[int, list[Segment]] = {}
    forms = [(e, w.end[e]) for e, tag in enumerate(w.tags) if tag == "form"]
    i = 0
    for seg in w.segments:
        while i < len(forms) and seg.elem >= forms[i][1]:
            i += 1
        if i < len(forms) and forms[i][0] <= seg.elem:
            runs.setdefault(i, []).append(seg)
    for segs in runs.values():
        # A form around the article's own paragraphs (a page wrapped in <form>) says
        # nothing: a sign-up or comment form holds labels and one-line notices, not a
        # paragraph under a content class word or a long paragraph.
        if sum(s.length for s in segs) < _SMALL_FORM_CHARS and not any(
            s.content or s.length >= _FORM_PARAGRAPH_CHARS for s in segs
        ):
            for seg in segs:
                seg.doubtful = True


def finish_segments(segs: list[Segment], title: str) -> list[Segment]:
    """Drop the repeated title, the preamble and headings left with nothing under them."""
    return _drop_empty_sections(_drop_title_and_preamble(segs, title))


def _is_boilerplate_line(seg: Segment) -> bool:
    """A furniture line: short, legal, markup, a caption, a byline (``_boilerplate_line_of``).
    Cached by text and length: lines like "Reply" or "Share" repeat within a page and across
    a site's pages (40 % of the calls on the dev pages)."""
    if seg.kind is BlockKind.TABLE or seg.length > 400:
        return False
    key = (seg.text, seg.length)
    known = _LINE_CACHE.get(key)
    if known is None:
        known = _boilerplate_line_of(seg)
        if len(_LINE_CACHE) >= _HINT_CACHE_MAX:
            _LINE_CACHE.clear()
        _LINE_CACHE[key] = known
    return known


def _boilerplate_line_of(seg: Segment) -> bool:
    if seg.kind is BlockKind.TABLE or seg.length > 400:
        return False
    text = seg.text.replace("**", "") if "**" in seg.text else seg.text
    if not text:  # only bold markers: "<b>**" on a page
        return False
    low = text.lower()
    # Cheap substring tests first: the regular expressions run on few segments.
    if ("©" in text or "copyright" in low or "rights reserved" in low or "(c)" in low) and (
        _LEGAL_LINE_RE.search(text)
    ):
        return True
    if text[0] in "<[" and _MARKUP_LINE_RE.match(text):
        return True
    if text[-1] == ")" and _CAPTION_END_RE.search(text):
        return True
    if seg.length < 80 and _BYLINE_RE.match(text):
        return True
    return seg.length < 120 and _BOILERPLATE_LINE_RE.match(text) is not None


def _keep(seg: Segment) -> bool:
    if seg.doubtful:
        return False
    if seg.link_density > _MAX_LINK_DENSITY:
        return False
    return not (seg.kind is BlockKind.LIST_ITEM and seg.link_density > 0.3 and seg.length < 200)


def _is_good(seg: Segment) -> bool:
    """A real paragraph (or table) of article text: where the preamble ends."""
    if seg.kind is BlockKind.HEADING or seg.doubtful or seg.link_density > _MAX_LINK_DENSITY:
        return False
    if seg.kind is BlockKind.TABLE:
        return True
    return seg.length >= _GOOD_CHARS or (
        seg.length >= 40 and _SENTENCE_END_RE.search(seg.text) is not None
    )


def _fold(text: str) -> str:
    """Lower-case words, apostrophes dropped ("Chad’s" and "Chads" fold alike)."""
    text = text.replace("**", "").lower()
    if "'" in text or "’" in text:
        text = text.replace("'", "").replace("’", "")
    return " ".join(_WORD_RE.findall(text))


def _drop_title_and_preamble(segs: list[Segment], title: str) -> list[Segment]:
    """Drop what precedes the first real paragraph except a standfirst-like paragraph, and
    the title when it is repeated in the body."""
    folded_title = _fold(title)
    size = len(title)

    def is_title(seg: Segment) -> bool:
        return seg.kind is not BlockKind.TABLE and _repeats_title(seg, folded_title, size)

    first_good = next((i for i, s in enumerate(segs) if _is_good(s)), None)
    if first_good is None:
        return [s for s in segs if not is_title(s)]
    out: list[Segment] = []
    for i, seg in enumerate(segs):
        if is_title(seg):
            continue
        if i < first_good and seg.kind in (BlockKind.HEADING, BlockKind.PARAGRAPH):
            continue
        out.append(seg)
    return out


def _drop_empty_sections(segs: list[Segment]) -> list[Segment]:
    """Headings followed by another heading of the same or higher rank, or by nothing."""
    out: list[Segment] = []
    for i, seg in enumerate(segs):
        if seg.kind is BlockKind.HEADING:
            nxt = segs[i + 1] if i + 1 < len(segs) else None
            if nxt is None:
                continue
            if nxt.kind is BlockKind.HEADING and (nxt.level or 9) <= (seg.level or 9):
                continue
        out.append(seg)
    return out


# --- the block classifier ----------------------------------------------------------------------


def _mark_furniture(w: Walk) -> None:
    for seg in w.segments:
        if not seg.doubtful and _is_boilerplate_line(seg):
            seg.doubtful = True
    _doubt_small_forms(w)


def _candidates(
    w: Walk, title: str, ld_body: str | None, lift: int, author: str | None = None
) -> tuple[list[Segment], np.ndarray, list[bool]]:
    """The blocks of the best container, lifted ``lift`` levels, their features, and whether
    the classifier may keep each one: furniture lines (bylines, "Advertisement", legal lines,
    captions), blocks under a furniture class word (comments, related, share, promo, a small
    form), link-heavy blocks (a "related" list, a teaser river) and the byline (a short line
    naming the page's author) never become body text whatever it thinks of them."""
    if not w.segments:
        return [], np.zeros((0, len(FEATURES))), []
    _mark_furniture(w)
    folded_title = _fold(title)
    size = len(title)
    # Where the title stands: the first block repeating it, in the whole page.
    title_seg = _title_block(w.segments, folded_title, size)
    title_at = w.segments[title_seg].elem if title_seg >= 0 else -1
    container, score = _container_scores(w, title_seg)
    region = container
    for _ in range(lift):
        if w.parent[region] >= 0:
            region = w.parent[region]
    c_end = w.end[container]
    r_end = w.end[region]
    # Per element: inside an <article>, and the largest share of the container's score held
    # by one element between the container and it (the article body div holds most of it, a
    # comment or a teaser little).
    total = score[container] if score[container] > 0 else 1.0
    n = len(w.parent)
    in_article = [False] * n
    share = [0.0] * n
    depth = [0] * n
    parent = w.parent
    tags = w.tags
    for e in range(region, r_end):
        p = parent[e]
        in_article[e] = tags[e] == "article" or (p >= 0 and in_article[p])
        depth[e] = depth[p] + 1 if e != region and p >= 0 else 0
        if container < e < c_end:
            own = score[e] / total
            share[e] = own if p == container else max(own, share[p])
    base_depth = depth[container]
    segs = [s for s in w.segments if region <= s.elem < r_end]
    keep = [_keep(s) and container <= s.elem < c_end for s in segs]
    for i, seg in enumerate(segs):
        if keep[i] and seg.kind is BlockKind.HEADING and i + 1 < len(segs) and not keep[i + 1]:
            keep[i] = False
    good = [_is_good(s) and container <= s.elem < c_end for s in segs]
    # Per parent element: how much of the text under it is in good blocks (the paragraphs of
    # an article body stand together; a comment or a teaser stands among short lines).
    under: dict[int, list[int]] = {}
    for seg, g in zip(segs, good, strict=True):
        sums = under.setdefault(parent[seg.elem], [0, 0])
        sums[0] += seg.length
        if g:
            sums[1] += seg.length
    contexts = [
        BlockContext(
            text=seg.text if seg.kind is not BlockKind.TABLE else "",
            length=seg.length,
            link_density=seg.link_density,
            kind=seg.kind.value,
            doubtful=seg.doubtful,
            rule_keep=keep[i],
            boilerplate_line=seg.doubtful and _is_boilerplate_line(seg),
            good=good[i],
            in_article_tag=in_article[seg.elem],
            after_title=title_at >= 0 and seg.elem > title_at,
            title_seen=title_at >= 0,
            subtree_share=share[seg.elem],
            depth_below=abs(depth[seg.elem] - base_depth),
            in_container=container <= seg.elem < c_end,
            content_hint=seg.content,
            tag=tags[seg.elem],
            sibling_good_share=_share(under[parent[seg.elem]]),
        )
        for i, seg in enumerate(segs)
    ]
    byline = _byline_test(author)
    # A list of links between the container's paragraphs (a round-up, a product list, a
    # "sources" list) is left to the classifier; one after the last paragraph (a "related"
    # list, a teaser river) never becomes text.
    last_good = max((i for i, g in enumerate(good) if g), default=-1)
    allowed = [
        not s.doubtful
        and not byline(s)
        and (
            not _link_block(s, c.in_container)
            or (c.in_container and i < last_good and s.kind is BlockKind.LIST_ITEM)
        )
        for i, (s, c) in enumerate(zip(segs, contexts, strict=True))
    ]
    return segs, block_features(contexts, ld_shingles_of(ld_body), allowed), allowed


def _title_block(segs: list[Segment], folded_title: str, size: int) -> int:
    """The index of the first block repeating the title, -1 when none does."""
    if not folded_title:
        return -1
    for i, seg in enumerate(segs):
        if seg.kind is not BlockKind.TABLE and _repeats_title(seg, folded_title, size):
            return i
    return -1


def _repeats_title(seg: Segment, folded_title: str, size: int) -> bool:
    """Whether the block's text is the title (``folded_title``, ``size`` characters long)."""
    return abs(seg.length - size) <= size // 4 + 4 and _fold(seg.text) == folded_title


def _link_block(seg: Segment, in_container: bool) -> bool:
    """A block of links that is never article text: a list item or short line of links (a
    "related" list, a teaser's headline) anywhere, any link-heavy block outside the container.
    A long link-heavy paragraph inside the container (a round-up of links, a product line) is
    left to the classifier."""
    ld = seg.link_density
    if ld <= 0.3:
        return False
    if seg.kind is BlockKind.LIST_ITEM or seg.kind is BlockKind.HEADING:
        return seg.length < 200 or ld > _MAX_LINK_DENSITY
    return ld > _MAX_LINK_DENSITY and (not in_container or seg.length < 120)


def _byline_test(author: str | None) -> Callable[[Segment], bool]:
    """A test for a byline line: short, and naming the author of the page's metadata."""
    folded = _fold(author or "")
    if len(folded) < 4:
        return lambda seg: False
    limit = 2 * len(folded) + 40

    def is_byline(seg: Segment) -> bool:
        return seg.kind is not BlockKind.TABLE and seg.length <= limit and folded in _fold(seg.text)

    return is_byline


def _share(sums: list[int]) -> float:
    return sums[1] / sums[0] if sums[0] else 0.0


_BEFORE_FIRST_GOOD = FEATURES.index("before_first_good")
_IN_CONTAINER = FEATURES.index("in_container")


def _classified(w: Walk, title: str, meta: PageMeta, model: BlockModel) -> list[Segment]:
    segs, features, allowed = _candidates(w, title, meta.article_body, model.lift, meta.author)
    if not segs:
        return []
    if features[:, _BEFORE_FIRST_GOOD].all():
        # Not one real paragraph (a calendar, a poem, a list of short lines): a kind of page
        # the classifier has hardly seen; the general rules keep the container's lines.
        return finish_segments(container_segments(w), title)
    keep = [a and k for a, k in zip(allowed, model.keep(features), strict=True)]
    _fill_gaps(segs, features, allowed, keep)
    folded_title = _fold(title)
    size = len(title)
    for i, seg in enumerate(segs):
        if not keep[i] or seg.kind is BlockKind.TABLE:
            continue
        if seg.kind is BlockKind.HEADING and (i + 1 == len(segs) or not keep[i + 1]):
            # The heading of a dropped block ("Related", "Don't miss") goes with it.
            keep[i] = False
        elif _repeats_title(seg, folded_title, size):
            keep[i] = False  # the title, repeated in the body
    return _drop_empty_sections([s for s, k in zip(segs, keep, strict=True) if k])


def _fill_gaps(
    segs: list[Segment], features: np.ndarray, allowed: list[bool], keep: list[bool]
) -> None:
    """A real paragraph of the container close between two kept real paragraphs is kept: the
    article's text is one run, and a paragraph inside it the classifier doubted is still part
    of it. Only near neighbours count, so a stray kept line far away (a date in a sidebar)
    does not pull the page furniture between it and the article into the text."""
    good = [
        allowed[i] and bool(features[i, _IN_CONTAINER]) and _is_good(seg)
        for i, seg in enumerate(segs)
    ]
    anchors = [i for i, k in enumerate(keep) if k and good[i]]
    for a, b in itertools.pairwise(anchors):
        if 1 < b - a <= _GAP_BLOCKS + 1:
            for i in range(a + 1, b):
                if good[i]:
                    keep[i] = True


# How many blocks between two kept paragraphs a gap may span to be filled.
_GAP_BLOCKS = 3


def candidate_blocks(
    html: str, url: str | None = None, *, lift: int = 1
) -> tuple[list[Segment], np.ndarray]:
    """The blocks the classifier judges on a page and their features (for the training
    script, ``benchmarks/train_extract.py``)."""
    tree = LexborHTMLParser(html)
    meta = read_metadata(tree, url)
    body = tree.body
    if body is None:
        return [], np.zeros((0, len(FEATURES)))
    w = walk(body, _classify)
    title = _choose_title(meta)
    segs, features, allowed = _candidates(w, title, meta.article_body, lift, meta.author)
    return [s for s, a in zip(segs, allowed, strict=True) if a], features[allowed]


# --- title -----------------------------------------------------------------------------------


# A heading that is part of a metadata title is the headline when it has this many characters
# and this share of that title.
_HEADLINE_MIN_CHARS = 8
_HEADLINE_SHARE = 1 / 3


def _choose_title(meta: PageMeta) -> str:
    known = [t for t in (meta.title, meta.html_title) if t]
    h1s = meta.h1s
    folded = [_fold(t) for t in known]
    for h1 in h1s:
        f = _fold(h1)
        # The <h1> is the headline when it agrees with a metadata title; a site name in
        # <h1> that is only part of "Site: Headline" in <title> is not.
        if len(f) >= 8 and any((f in k and 2 * len(f) >= len(k)) or (k and k in f) for k in folded):
            return h1
    # A blog's <h1> is often its name, and its post's headline an <h2>/<h3> that <title>
    # holds beside the name ("Blog: Headline", "Headline « Blog"): the longest heading making
    # at least a third of a metadata title is the headline (not the site's own name).
    site = _fold(meta.site_name or "")
    best = chosen = ""
    for head in (*h1s, *meta.subheads):
        f = _fold(head)
        if (
            len(f) > len(best)
            and len(f) >= _HEADLINE_MIN_CHARS
            and f != site
            and any(f in k and _HEADLINE_SHARE * len(k) <= len(f) for k in folded)
        ):
            best, chosen = f, head
    if best:
        return chosen
    if meta.title:
        return meta.title
    if meta.html_title:
        return clean_title(meta.html_title, meta.site_name)
    return h1s[0] if h1s else ""


# --- public API ----------------------------------------------------------------------------


def extract_article(
    html: str,
    url: str | None = None,
    *,
    body_selector: str | None = None,
    model: BlockModel | None = None,
) -> Article:
    """Extract an article page into an ``Article`` (title, lead, body blocks, metadata, text).

    ``body_selector`` (a page source's ``selectors.body``) names the element(s) holding the
    article text; when it matches nothing the extractor finds the text on its own. Raises
    ExtractionError for a document without a body or an invalid selector. A page without
    article text still gives an Article (possibly with an empty body): callers decide whether
    that is enough. ``model`` is the block classifier (the shipped one when None).
    """
    # The cyclic garbage collector pauses for the call: extraction makes many short-lived
    # objects and no reference cycles (none on the 1,162 dev pages nor on a 5 MB page), so
    # the collector's passes over them were pure cost (about 3 % of the time).
    paused = gc.isenabled()
    if paused:
        gc.disable()
    try:
        return _extract_article(html, url, body_selector=body_selector, model=model)
    finally:
        if paused:
            gc.enable()


def _extract_article(
    html: str,
    url: str | None = None,
    *,
    body_selector: str | None = None,
    model: BlockModel | None = None,
) -> Article:
    """``extract_article`` without the collector pause."""
    if not isinstance(html, str):
        raise ExtractionError(f"expected HTML text, got {type(html).__name__}")
    tree = LexborHTMLParser(html)
    meta = read_metadata(tree, url)
    title = _choose_title(meta)
    # No strip_tags pass: the walk skips scripts, styles and furniture tags without entering
    # them, which costs less than removing them first.
    body = tree.body
    if body is None:
        raise ExtractionError("the document has no <body>")
    roots = _selected_roots(tree, body_selector) if body_selector else []
    if roots:
        segs = [seg for root in roots for seg in container_segments(walk(root, _classify), 0)]
        segs = finish_segments(segs, title)
    else:
        model = model or load_default_model()
        w = walk(body, _classify)
        segs = _classified(w, title, meta, model)
        if _chars(segs) < _NOTHING_FOUND_CHARS:
            # Class words can condemn a whole article (a "layout-with-sidebar" wrapper and no
            # content word below it): when they leave next to nothing, judge without them.
            for seg in w.segments:
                seg.doubtful = False
            retry = _classified(w, title, meta, model)
            if _chars(retry) > _chars(segs):
                segs = retry
        if _chars(segs) < _NOTHING_FOUND_CHARS:
            # The classifier can be unsure of every block of an odd page: the rules decide.
            retry = finish_segments(container_segments(w), title)
            if _chars(retry) > _chars(segs):
                segs = retry
        if _chars(segs) < _NOTHING_FOUND_CHARS:
            # Hidden or ARIA-hidden wrappers (a page greyed out behind a consent dialog) can
            # hide the whole article: when nothing was found, walk again reading them.
            retry = _classified(walk(body, _classify_lenient), title, meta, model)
            if _chars(retry) > _chars(segs):
                segs = retry
    blocks = _json_ld_fallback([s.to_block() for s in segs], meta)
    return _assemble(title, blocks, meta, url)


# JSON-LD articleBody is often cut short (500 characters is common) or a summary, so it only
# stands in for the page when the page itself gives much less: a page rendered by JavaScript.
_LD_MIN_CHARS = 500
_LD_SHARE = 0.3


def _json_ld_fallback(blocks: list[Block], meta: PageMeta) -> list[Block]:
    ld_body = meta.article_body
    if not ld_body or len(ld_body) < _LD_MIN_CHARS:
        return blocks
    have = sum(_block_chars(b) for b in blocks)
    if have >= _LD_SHARE * len(ld_body):
        return blocks
    ld_blocks = list(html_to_blocks(ld_body))
    return ld_blocks if sum(_block_chars(b) for b in ld_blocks) > have else blocks


def _block_chars(block: Block) -> int:
    return len(block.text) + sum(len(cell) for row in block.rows for cell in row)


def _selected_roots(tree: LexborHTMLParser, selector: str) -> list[LexborNode]:
    """The outermost elements matching ``selector``, in document order."""
    try:
        matches = tree.css(selector)
    except SelectolaxError as exc:
        raise ExtractionError(f"invalid body selector {selector!r}: {exc}") from exc
    if len(matches) <= 1:
        return matches
    ids = {m.mem_id for m in matches}
    outermost = []
    for node in matches:
        parent = node.parent
        while parent is not None and parent.mem_id not in ids:
            parent = parent.parent
        if parent is None:
            outermost.append(node)
    return outermost


def _assemble(title: str, blocks: list[Block], meta: PageMeta, url: str | None) -> Article:
    lead = ""
    lead_at = next(
        (i for i, b in enumerate(blocks) if b.kind is BlockKind.PARAGRAPH and b.text), None
    )
    if lead_at is not None and lead_at <= 1:
        lead = blocks.pop(lead_at).text
    if not title:
        title = first_sentence(lead) if lead else (meta.description or "")
    if not normalize_space(title) and not lead and not blocks:
        raise ExtractionError("no article found: the page has neither a title nor text")
    body: tuple[Block, ...] = tuple(blocks)
    text = compose(title, lead, body)
    return Article(
        title=normalize_space(title),
        lead=normalize_space(lead),
        blocks=body,
        text=text,
        author=meta.author,
        published=meta.published,
        canonical_url=meta.canonical_url,
        language=meta.language,
        url=url,
    )


def extract_text(html: str, url: str | None = None, *, body_selector: str | None = None) -> str:
    """The record text of an article page: lead line, title line, then the body blocks."""
    return extract_article(html, url, body_selector=body_selector).text
