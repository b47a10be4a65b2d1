"""What makes two records the same article: canonical URLs, sites, wrapped links, headline keys.

The first level of "the same" (docs/dedup.md): an article's URL variants (tracking parameters,
fragments, AMP and mobile forms) share one ``canonical_url``; a news search feed's wrapped link
(``wrapped_link``) and the outlet's own copy of the same headline share a ``headline_key``. The
content hash is ``records.content_hash``. Normalizing uses these to build a record, the decider
to find exact copies, the store to import records and to show an outlet's own link.

Pure: plain strings in and out; no I/O, no clock.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

__all__ = ["canonical_url", "headline_key", "site_host", "wrapped_link"]

# --------------------------------------------------------------------------------------------

# Query parameters that identify a campaign, a click or a referrer, never the article.
_TRACKING_PARAMS = frozenset(
    {
        "fbclid",
        "gclid",
        "dclid",
        "gbraid",
        "wbraid",
        "msclkid",
        "yclid",
        "igshid",
        "twclid",
        "ttclid",
        "li_fat_id",
        "mkt_tok",
        "_ga",
        "_gl",
        "_hsenc",
        "_hsmi",
        "ref",
        "ref_src",
        "ref_url",
        "referer",
        "referrer",
        "refsrc",
        "cmpid",
        "cmp",
        "ncid",
        "ocid",
        "ito",
        "icid",
        "s_cid",
        "smid",
        "spm",
        "share",
        "sharesource",
        "src",
        "at_medium",
        "at_campaign",
        "at_custom1",
        "at_custom2",
        "at_custom3",
        "at_custom4",
        "wt.mc_id",
        "wt_mc_id",
        "soc_src",
        "soc_trk",
        "__twitter_impression",
        "amp",
        "outputtype",
        "output",
        "feature",
        "via",
    }
)
_TRACKING_PREFIXES = ("utm_", "mc_", "pk_", "hsa_", "oly_", "vero_", "trk_")
# ``output=amp`` / ``outputType=amp`` select the AMP rendering; other values may matter.
_AMP_VALUED = frozenset({"output", "outputtype"})
_VARIANT_HOST_PREFIXES = ("www.", "m.", "mobile.", "amp.", "www-m.")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def canonical_url(url: str) -> str:
    """The URL that every variant of one article shares.

    Lowercases scheme and host, treats http and https alike, drops ``www.``/``m.``/``mobile.``/
    ``amp.`` host prefixes, default ports, fragments, tracking parameters (``utm_*``, ``fbclid``,
    ``gclid``, ``mc_*``, ``ref``...), AMP path forms (``/amp``, ``/amp/``, ``.amp``, ``?amp=1``)
    and trailing slashes, and sorts the remaining query parameters.

    Raises ``ValueError`` for anything that is not an absolute http(s) URL.
    """
    raw = url.strip()
    try:
        parts = urlsplit(raw)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"not a valid URL: {url!r} ({exc})") from exc
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"not an absolute http(s) URL: {url!r}")
    host = _canonical_host(parts.hostname)
    if port is not None and port not in _DEFAULT_PORTS.values():
        host = f"{host}:{port}"
    path = _canonical_path(parts.path)
    query = _canonical_query(parts.query)
    return urlunsplit(("https", host, path, query, ""))


def site_host(url: str) -> str | None:
    """The canonical host of a URL (``www.`` and the like dropped), None when it has none."""
    try:
        hostname = urlsplit(url.strip()).hostname
    except ValueError:
        return None
    return _canonical_host(hostname) if hostname else None


def wrapped_link(url: str | None, outlet_url: str | None) -> bool:
    """True when ``url`` is not on the site of its outlet (``outlet_url``): a news search
    feed's link that names no target (Google News' ``/rss/articles/…``), reached only by
    following it."""
    if not url or not outlet_url:
        return False
    return site_host(url) != site_host(outlet_url)


_HEADLINE_NOISE = re.compile(r"[\W_]+")


def headline_key(site_url: str | None, title: str) -> str | None:
    """What one outlet's copy of an article shares with the same article relayed by a news
    search feed whose link stays wrapped: the outlet's site and the headline (case, punctuation
    and spacing ignored). None without a site or a headline.

    ``pipeline`` treats two records with the same key, published within a few days of each
    other, as one article (``DedupReason.SAME_HEADLINE``).
    """
    host = site_host(site_url) if site_url else None
    words = _HEADLINE_NOISE.sub(" ", unicodedata.normalize("NFKC", title).casefold()).split()
    if not host or not words:
        return None
    return hashlib.sha256(f"{host}\n{' '.join(words)}".encode()).hexdigest()[:32]


def _canonical_host(hostname: str) -> str:
    host = hostname.lower().rstrip(".")
    # Strip variant prefixes while a registrable-looking name (two labels) remains.
    changed = True
    while changed:
        changed = False
        for prefix in _VARIANT_HOST_PREFIXES:
            rest = host[len(prefix) :]
            if host.startswith(prefix) and rest.count(".") >= 1:
                host = rest
                changed = True
    return host


def _canonical_path(path: str) -> str:
    segments = [s for s in path.split("/") if s]
    # AMP renderings: a whole "amp" segment anywhere (/amp/story, /story/amp) or "name.amp.html".
    # Repeated until nothing changes, so the result is canonical itself (".amp" alone leaves an
    # empty segment, "amp.amp" an "amp" one).
    while True:
        before = list(segments)
        segments = [s for s in segments if s.lower() != "amp"]
        if segments:
            segments[-1] = _strip_amp_suffix(segments[-1])
            if not segments[-1]:
                segments.pop()
        if segments == before:
            break
    return "/" + "/".join(segments) if segments else "/"


def _strip_amp_suffix(last: str) -> str:
    low = last.lower()
    for suffix, keep in ((".amp.html", ".html"), (".amp.htm", ".htm"), (".amp", "")):
        if low.endswith(suffix):
            return last[: -len(suffix)] + keep
    return last


def _canonical_query(query: str) -> str:
    kept: list[tuple[str, str]] = []
    for key, value in parse_qsl(query, keep_blank_values=True):
        low = key.lower()
        if low.startswith(_TRACKING_PREFIXES):
            continue
        if low in _TRACKING_PARAMS:
            if low in _AMP_VALUED and value.lower() != "amp":
                kept.append((key, value))
            continue
        kept.append((key, value))
    kept.sort()
    return urlencode(kept)
