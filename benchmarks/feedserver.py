"""A loopback server of synthetic news feeds, for benchmarks and multi-replica tests.

Run it as its own process (so it takes as little CPU as possible from the process being measured):

    python benchmarks/feedserver.py --feeds 2000 --seed 1 --hosts 64

It prints one JSON line when it is ready (``{"port": ..., "hosts": [...], "feeds": N, ...}``)
and serves until killed. Everything it serves is a pure function of ``--seed``, ``--epoch`` and
the generation counter, so two runs with the same options serve the same bytes.

What it serves (see benchmarks/README.md for the figures it is built to match):

- ``GET /feed/<i>.xml`` (``0 <= i < N``): RSS 2.0 or Atom, 20-50 items, sizes log-normal around a
  54 KB median, in UTF-8, windows-1251 (Cyrillic), windows-1257 or ISO-8859-13 (Lithuanian),
  declared in the XML declaration and, for most feeds, in ``Content-Type``. Some items are
  "wire stories" that several feeds of one language carry, with the same link (sometimes with
  tracking parameters), as news syndication does.
- ``ETag`` and ``Last-Modified`` on every feed; ``If-None-Match`` / ``If-Modified-Since`` get
  ``304 Not Modified``; ``Accept-Encoding: gzip`` gets a gzip body (ETag suffixed ``-gz``; either
  form of the tag is accepted back).
- New items over time: ``POST /_control/advance`` moves the generation counter on by one; each
  step adds 1..``--max-new`` items to a ``--change-fraction`` of the feeds (the oldest items drop
  off, as on a real feed). ``GET /feed/<i>.xml?gen=G`` serves feed ``i`` as of generation ``G``
  without touching the counter.
- ``GET /_control/counts``: feed requests served per path and per status since the last
  ``POST /_control/reset``; ``POST /_control/rewind``: back to generation 0;
  ``GET /_control/feeds``: the feed URLs; ``GET /feeds.opml``.

Feeds are spread over ``--hosts`` loopback addresses (127.0.1.1, 127.0.1.2, ...), all on one
port, so per-host politeness limits in a client behave as they would across many sites.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import format_datetime, parsedate_to_datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from xml.sax.saxutils import escape

ENCODINGS = ("utf-8", "windows-1251", "windows-1257", "iso-8859-13")
MEDIAN_FEED_BYTES = 54_000
DEFAULT_EPOCH = datetime(2026, 11, 1, tzinfo=UTC)


def _words(text: str) -> tuple[str, ...]:
    return tuple(text.split())


# --- vocabularies: enough words that titles and texts look like news in each language ------------

_LT = _words(
    "Vyriausybė Seimas ministras prezidentas savivaldybė Vilniaus Kauno Klaipėdos Lietuvos "
    "Baltarusijos Latvijos Lenkijos pasienio kontrabanda balionai oro uostas energetika "
    "elektros kaina šildymo sezonas mokesčių reforma biudžetas švietimo ligoninė sveikatos "
    "apsaugos kariuomenė gynybos NATO pratybos sankcijos Europos Sąjungos Komisija teismas "
    "prokuratūra policija pareigūnai gyventojai savivaldybės taryba rinkimai partija koalicija "
    "opozicija premjerė ministerija pranešė teigė paskelbė patvirtino atmetė svarsto sprendimą "
    "susitikimą derybas projektą įstatymą pataisas investicijas infrastruktūrą geležinkelio "
    "Rail Baltica uostą tiltą kelią statybas darbuotojai atlyginimai infliacija bankas "
    "palūkanos būstas nekilnojamasis turtas ūkininkai grūdai derlius pieno supirkimo kainos "
    "orai lietus sniegas šaltis vėjas audra perspėjimas gaisras avarija eismo nelaimė "
    "krepšinio rinktinė Žalgiris čempionatas rungtynės pergalė pralaimėjimas treneris "
    "koncertas festivalis paroda teatras kinas knyga rašytojas muziejus paveldas universitetas "
    "studentai mokslininkai tyrimas duomenys statistika gyventojų skaičius emigracija "
    "šiandien vakar rytoj savaitę mėnesį metus daugiau mažiau naujas svarbus didelis"
)
_RU = _words(
    "правительство парламент министр президент Минск Вильнюс Гродно Брест Беларусь Литва "
    "Польша граница контрабанда аэростаты аэропорт энергетика электроэнергия цены отопление "
    "налоговая реформа бюджет образование больница здравоохранение армия оборона учения "
    "санкции Евросоюз комиссия суд прокуратура милиция задержали сотрудники жители город "
    "власти выборы партия оппозиция политзаключенные приговор колония освобождение заявил "
    "сообщил объявил утвердил отклонил рассматривает решение встречу переговоры проект закон "
    "поправки инвестиции инфраструктура железная дорога порт мост дорога строительство "
    "зарплаты инфляция банк ставка жилье недвижимость фермеры зерно урожай молоко закупочные "
    "погода дождь снег мороз ветер шторм предупреждение пожар авария ДТП происшествие "
    "хоккей сборная чемпионат матч победа поражение тренер концерт фестиваль выставка театр "
    "кино книга писатель музей наследие университет студенты ученые исследование данные "
    "статистика население эмиграция сегодня вчера завтра неделю месяц год больше меньше "
    "новый важный крупный независимые журналисты редакция источник эксперты аналитики"
)
_EN = _words(
    "government parliament minister president Vilnius Minsk Lithuania Belarus Poland border "
    "smuggling balloons airport energy electricity prices heating season tax reform budget "
    "education hospital health army defence exercises sanctions European Union Commission "
    "court prosecutors police officers residents city council elections party coalition "
    "opposition announced said confirmed rejected considers decision meeting talks project "
    "law amendments investment infrastructure railway port bridge road construction workers "
    "wages inflation bank rates housing farmers grain harvest milk weather rain snow frost "
    "storm warning fire accident basketball team championship match victory coach concert "
    "festival exhibition theatre film book museum heritage university students researchers "
    "study data statistics population emigration today yesterday tomorrow week month year"
)
_AUTHORS = {
    "lt": ("Rūta Žemaitytė", "Jonas Petrauskas", "Eglė Šimkutė", "Tomas Kazlauskas", "BNS"),
    "ru": ("Ирина Ковалёва", "Андрей Соколов", "Наталья Жук", "Павел Левин", "Белсат"),
    "en": ("Anna Smith", "Mark Jones", "LRT English", "Reuters staff", "Editors"),
}
_SECTIONS = ("naujienos", "politika", "ekonomika", "sportas", "kultura", "regionai", "world")
_WORDS = {"lt": _LT, "ru": _RU, "en": _EN}
# Quotes that every one of the four encodings can hold (checked: ISO-8859-13 lacks the dashes).
_QUOTES = {"lt": ("„", "“"), "ru": ("«", "»"), "en": ("“", "”")}


@dataclass(frozen=True, slots=True)
class FeedSpec:
    """What feed ``index`` looks like; fixed by the seed."""

    index: int
    fmt: str  # rss | atom
    encoding: str
    language: str  # lt | ru | en
    items: int  # items shown at a time
    target_bytes: int
    spacing_minutes: int  # time between two items of the initial window
    charset_in_header: bool
    site: str
    content_encoded: bool  # RSS: full text in content:encoded as well as description


@dataclass(frozen=True, slots=True)
class FeedDoc:
    """One rendered version of a feed, as the server sends it."""

    body: bytes
    gz: bytes
    etag: str  # without quotes
    last_modified: str  # HTTP date
    last_modified_ts: float
    content_type: str


def _rng(*parts: object) -> random.Random:
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return random.Random(int.from_bytes(digest, "big"))


def feed_spec(seed: int, index: int) -> FeedSpec:
    rng = _rng(seed, "feed", index)
    encoding = rng.choices(ENCODINGS, weights=(55, 20, 15, 10))[0]
    if encoding == "windows-1251":
        language = "ru"
    elif encoding == "utf-8":
        language = rng.choices(("lt", "ru", "en"), weights=(45, 35, 20))[0]
    else:
        language = "lt"
    # Log-normal sizes: median 54 KB, most feeds between 25 and 120 KB.
    size = int(MEDIAN_FEED_BYTES * math.exp(rng.gauss(0.0, 0.45)))
    return FeedSpec(
        index=index,
        fmt="atom" if rng.random() < 0.3 else "rss",
        encoding=encoding,
        language=language,
        items=rng.randint(20, 50),
        target_bytes=max(8_000, min(size, 400_000)),
        spacing_minutes=rng.choice((7, 15, 30, 45, 60, 120, 240)),
        charset_in_header=rng.random() < 0.8,
        site=f"n{index:05d}.example.{'lt' if language != 'ru' else 'by'}",
        content_encoded=rng.random() < 0.25,
    )


def advance_of(seed: int, index: int, gen: int, fraction: float, max_new: int) -> int:
    """How many items feed ``index`` has gained by generation ``gen``."""
    total = 0
    for g in range(1, gen + 1):
        rng = _rng(seed, "gen", g, index)
        if rng.random() < fraction:
            total += rng.randint(1, max_new)
    return total


# --- text -------------------------------------------------------------------------------------


_STOP = {
    "lt": _words("ir kad į su iš už per apie bet tai kaip kuris jau dar po be ne yra buvo bus"),
    "ru": _words("и в на что с по не как это из за для к о от но уже был будет его их также"),
    "en": _words("the of and to in a that for on is was with by as it from at be has have"),
}
_SYLLABLES = {
    "lt": (
        _words("b d g j k l m n p r s š t v ž č"),
        _words("a e ė i y o u ū ą į"),
        _words("as is ys ė a ai ų ams oje ius ienė aitis"),
    ),
    "ru": (
        _words("б в г д ж з к л м н п р с т ф х ч ш"),
        _words("а е и о у ы я ю"),
        _words("ов ский ая ой ение ость ать ый ам ах ин ева"),
    ),
    "en": (
        _words("b c d f g h k l m n p r s t v w"),
        _words("a e i o u"),
        _words("ing er tion s ed ly ment ness al"),
    ),
}
VOCABULARY = 20_000  # distinct words per language, Zipf-distributed like real text


def _pseudo_word(rng: random.Random, language: str) -> str:
    consonants, vowels, endings = _SYLLABLES[language]
    stem = "".join(rng.choice(consonants) + rng.choice(vowels) for _ in range(rng.randint(1, 3)))
    return stem + rng.choice(endings)


class _Lexicon:
    """Words of one language with Zipf weights: stopwords first, then the hand-written news
    words, then invented words for the long tail (what makes two stories' vocabularies differ)."""

    def __init__(self, seed: int, language: str) -> None:
        rng = _rng(seed, "lexicon", language)
        words = list(dict.fromkeys([*_STOP[language], *_WORDS[language]]))
        seen = set(words)
        while len(words) < VOCABULARY:
            word = _pseudo_word(rng, language)
            if word not in seen:
                seen.add(word)
                words.append(word)
        self.words = words
        total = 0.0
        self.cum: list[float] = []
        for rank in range(1, len(words) + 1):
            total += 1.0 / rank
            self.cum.append(total)

    def sample(self, rng: random.Random, n: int) -> list[str]:
        return rng.choices(self.words, cum_weights=self.cum, k=n)


_LEXICONS: dict[tuple[int, str], _Lexicon] = {}


def _lexicon(seed: int, language: str) -> _Lexicon:
    key = (seed, language)
    if key not in _LEXICONS:
        _LEXICONS[key] = _Lexicon(seed, language)
    return _LEXICONS[key]


@dataclass(frozen=True, slots=True)
class _Story:
    """What one article is about: its language and the names it keeps repeating."""

    lexicon: _Lexicon
    language: str
    names: tuple[str, ...]


def _story(rng: random.Random, seed: int, language: str) -> _Story:
    names = tuple(_pseudo_word(rng, language).capitalize() for _ in range(rng.randint(3, 6)))
    return _Story(_lexicon(seed, language), language, names)


def _sentence(rng: random.Random, story: _Story, lo: int = 8, hi: int = 22) -> str:
    n = rng.randint(lo, hi)
    chosen = story.lexicon.sample(rng, n)
    for at in range(n):
        if rng.random() < 0.12:
            chosen[at] = rng.choice(story.names)
    if rng.random() < 0.25:
        q0, q1 = _QUOTES[story.language]
        at = rng.randrange(n)
        chosen[at] = f"{q0}{chosen[at]}{q1}"
    if rng.random() < 0.3:
        chosen.insert(rng.randrange(n), str(rng.randint(2, 2026)))
    text = " ".join(chosen)
    return text[0].upper() + text[1:] + rng.choice((".", ".", ".", "?", "!"))


def _title(rng: random.Random, story: _Story) -> str:
    text = _sentence(rng, story, 5, 11)
    return text.rstrip(".?!")


def _html_body(rng: random.Random, story: _Story, budget_chars: int, link: str) -> str:
    parts: list[str] = []
    used = 0
    while used < budget_chars:
        sentences = " ".join(_sentence(rng, story) for _ in range(rng.randint(2, 5)))
        roll = rng.random()
        if roll < 0.12:
            para = f"<p><strong>{escape(sentences)}</strong></p>"
        elif roll < 0.22:
            para = f'<p>{escape(sentences)} <a href="{escape(link)}#more">&#8594;</a></p>'
        elif roll < 0.27:
            para = f'<p><img src="{escape(link)}/photo{rng.randint(1, 9)}.jpg" alt=""/></p>'
        else:
            para = f"<p>{escape(sentences)}</p>"
        parts.append(para)
        used += len(para)
    return "".join(parts)


_BYTES_PER_CHAR = {("ru", "utf-8"): 1.8, ("lt", "utf-8"): 1.06}


@dataclass(frozen=True, slots=True)
class Item:
    key: int
    guid: str
    link: str
    title: str
    html: str
    published: datetime
    author: str
    category: str


class Corpus:
    """Real news reports grouped by the event they report, for items that duplicate each other
    as real news does: ``clustering-dev``'s ECB+ articles (several articles per event) and UCI
    headlines (many outlets' headlines per story). ``fraction`` of all items come from here:
    a verbatim copy of a report under the outlet's own link (a wire copy), a rewrite of one (its
    sentences reordered, one dropped, the title reworded), or another outlet's report of the
    same event, so a cycle meets exact duplicates, near-duplicates and same-event joins."""

    def __init__(self, directory: Path, fraction: float) -> None:
        self.fraction = fraction
        stories: dict[str, list[tuple[str, str]]] = {}
        for name in ("ecbplus-dev.jsonl", "uci-headlines-dev.jsonl"):
            path = directory / name
            if not path.exists():
                raise SystemExit(f"feedserver: {path} is missing (--corpus names the folder)")
            with path.open(encoding="utf-8") as f:
                for line in f:
                    row = json.loads(line)
                    title = " ".join(str(row["title"]).split())
                    text = str(row.get("text") or title)
                    stories.setdefault(str(row["story_id"]), []).append((title, text))
        # Sorted: the same corpus gives the same items whatever order the file lists them in.
        self.stories = [stories[k] for k in sorted(stories)]

    def item(self, rng: random.Random, link: str) -> tuple[str, str]:
        """A (title, html) for one item."""
        reports = self.stories[rng.randrange(len(self.stories))]
        title, text = reports[rng.randrange(len(reports))]
        sentences = [s.strip() for s in text.split("\n") if s.strip()]
        if sentences and sentences[0] == title:
            sentences = sentences[1:]
        roll = rng.random()
        if roll < 0.35 and len(sentences) > 2:  # a rewrite
            sentences = sentences[:]
            sentences.pop(rng.randrange(1, len(sentences)))
            sentences[0], sentences[1] = sentences[1], sentences[0]
            words = title.split()
            if len(words) > 4:
                at = rng.randrange(len(words) - 1)
                words[at], words[at + 1] = words[at + 1], words[at]
            title = " ".join(words)
        body = "".join(f"<p>{escape(s)}</p>" for s in sentences) or f"<p>{escape(title)}</p>"
        return title, body


_CORPUS: Corpus | None = None


def make_item(seed: int, spec: FeedSpec, key: int, epoch: datetime) -> Item:
    """Item number ``key`` of a feed (0 = oldest); its content never changes."""
    rng = _rng(seed, "item", spec.index, key)
    if key < spec.items:
        ts = epoch.timestamp() - (spec.items - key) * spec.spacing_minutes * 60
    else:  # items added by later generations: after the epoch, a few minutes apart
        ts = epoch.timestamp() + (key - spec.items + 1) * 120
    per_char = _BYTES_PER_CHAR.get((spec.language, spec.encoding), 1.0)
    # 0.8: paragraphs overshoot their budget and markup escapes grow; calibrated to the median.
    budget = int(0.755 * spec.target_bytes / spec.items / per_char * rng.uniform(0.6, 1.4)) - 450
    section = rng.choice(_SECTIONS)
    wire = rng.random() < 0.08
    if _CORPUS is not None and rng.random() < _CORPUS.fraction:
        wire = False
        link = f"https://{spec.site}/{section}/{key:06d}-{rng.randrange(10**6):06d}"
        title, html = _CORPUS.item(_rng(seed, "corpus", spec.index, key), link)
    elif wire:  # a syndicated story: same link, text cut at each feed's own length
        wire_id = rng.randrange(400)
        wrng = _rng(seed, "wire", spec.language, wire_id)
        link = f"https://wire.example.com/{spec.language}/{wire_id:04d}"
        if rng.random() < 0.5:
            link += f"?utm_source=n{spec.index:05d}&utm_medium=rss"
        story = _story(wrng, seed, spec.language)
        title = _title(wrng, story)
        html = _html_body(wrng, story, max(budget, 300), link)
    else:
        link = f"https://{spec.site}/{section}/{key:06d}-{rng.randrange(10**6):06d}"
        story = _story(rng, seed, spec.language)
        title = _title(rng, story)
        html = _html_body(rng, story, max(budget, 300), link)
    return Item(
        key=key,
        guid=link if not wire and rng.random() < 0.5 else f"{spec.site}:{key}",
        link=link,
        title=title,
        html=html,
        published=datetime.fromtimestamp(ts, UTC),
        author=rng.choice(_AUTHORS[spec.language]),
        category=section,
    )


def _cdata(text: str) -> str:
    return "<![CDATA[" + text.replace("]]>", "]]]]><![CDATA[>") + "]]>"


def _rss(spec: FeedSpec, items: Sequence[Item], updated: datetime) -> str:
    out = [
        f'<?xml version="1.0" encoding="{spec.encoding}"?>\n',
        '<rss version="2.0" xmlns:dc="http://purl.org/dc/elements/1.1/"'
        ' xmlns:content="http://purl.org/rss/1.0/modules/content/"'
        ' xmlns:atom="http://www.w3.org/2005/Atom">\n<channel>\n',
        f"<title>{escape(spec.site)}</title>\n<link>https://{spec.site}/</link>\n",
        f'<atom:link href="https://{spec.site}/rss" rel="self" type="application/rss+xml"/>\n',
        f"<description>Synthetic feed {spec.index}</description>\n",
        f"<language>{spec.language}</language>\n",
        f"<lastBuildDate>{format_datetime(updated, usegmt=True)}</lastBuildDate>\n",
        "<ttl>15</ttl>\n",
    ]
    for it in items:
        permalink = "true" if it.guid == it.link else "false"
        out.append(
            f"<item>\n<title>{escape(it.title)}</title>\n<link>{escape(it.link)}</link>\n"
            f'<guid isPermaLink="{permalink}">{escape(it.guid)}</guid>\n'
            f"<pubDate>{format_datetime(it.published, usegmt=True)}</pubDate>\n"
            f"<dc:creator>{escape(it.author)}</dc:creator>\n"
            f"<category>{it.category}</category>\n"
        )
        if spec.content_encoded:
            lead = it.html[: it.html.find("</p>") + 4]
            out.append(f"<description>{_cdata(lead)}</description>\n")
            out.append(f"<content:encoded>{_cdata(it.html)}</content:encoded>\n</item>\n")
        else:
            out.append(f"<description>{_cdata(it.html)}</description>\n</item>\n")
    out.append("</channel>\n</rss>\n")
    return "".join(out)


def _atom(spec: FeedSpec, items: Sequence[Item], updated: datetime) -> str:
    out = [
        f'<?xml version="1.0" encoding="{spec.encoding}"?>\n',
        f'<feed xmlns="http://www.w3.org/2005/Atom" xml:lang="{spec.language}">\n',
        f"<title>{escape(spec.site)}</title>\n<id>https://{spec.site}/</id>\n",
        f'<link href="https://{spec.site}/" rel="alternate"/>\n',
        f'<link href="https://{spec.site}/atom" rel="self"/>\n',
        f"<updated>{updated.isoformat().replace('+00:00', 'Z')}</updated>\n",
    ]
    for it in items:
        when = it.published.isoformat().replace("+00:00", "Z")
        guid = it.guid if it.guid.startswith("http") else f"tag:{it.guid}"
        out.append(
            f"<entry>\n<title>{escape(it.title)}</title>\n"
            f'<link rel="alternate" type="text/html" href="{escape(it.link)}"/>\n'
            f"<id>{escape(guid)}</id>\n<published>{when}</published>\n<updated>{when}</updated>\n"
            f"<author><name>{escape(it.author)}</name></author>\n"
            f'<category term="{it.category}"/>\n'
            f'<summary type="html">{escape(it.html)}</summary>\n</entry>\n'
        )
    out.append("</feed>\n")
    return "".join(out)


def render_feed(seed: int, spec: FeedSpec, advance: int, epoch: datetime) -> FeedDoc:
    """Feed ``spec`` after gaining ``advance`` items: its newest ``spec.items``, newest first."""
    keys = range(advance + spec.items - 1, advance - 1, -1)
    items = [make_item(seed, spec, k, epoch) for k in keys]
    updated = items[0].published
    text = (_rss if spec.fmt == "rss" else _atom)(spec, items, updated)
    body = text.encode(spec.encoding, errors="xmlcharrefreplace")
    mime = "application/rss+xml" if spec.fmt == "rss" else "application/atom+xml"
    if spec.charset_in_header:
        mime += f"; charset={spec.encoding}"
    else:
        mime = "application/xml"  # the XML declaration alone names the encoding
    etag = hashlib.blake2b(body, digest_size=10).hexdigest()
    return FeedDoc(
        body=body,
        gz=gzip.compress(body, compresslevel=6, mtime=0),
        etag=etag,
        last_modified=format_datetime(updated, usegmt=True),
        last_modified_ts=updated.timestamp(),
        content_type=mime,
    )


# --- server -----------------------------------------------------------------------------------


def host_address(j: int) -> str:
    """The j-th loopback address the server listens on (127.0.1.1, 127.0.1.2, ...)."""
    return f"127.0.{1 + j // 250}.{1 + j % 250}"


class FeedCatalog:
    """The feeds and their current versions; all state of the server lives here."""

    def __init__(
        self,
        feeds: int,
        seed: int,
        epoch: datetime,
        fraction: float,
        max_new: int,
        hosts: int,
        port: int = 0,
    ) -> None:
        self.feeds, self.seed, self.epoch = feeds, seed, epoch
        self.fraction, self.max_new, self.hosts, self.port = fraction, max_new, hosts, port
        self.specs = [feed_spec(seed, i) for i in range(feeds)]
        self.advance = [0] * feeds
        self.docs: list[FeedDoc | None] = [None] * feeds
        self.gen = 0
        self._old: dict[tuple[int, int], FeedDoc] = {}
        self.counts: dict[str, int] = {}
        self.status_counts: dict[str, int] = {}

    def url(self, i: int) -> str:
        return f"http://{host_address(i % self.hosts)}:{self.port}/feed/{i}.xml"

    def doc(self, i: int, gen: int | None = None) -> FeedDoc:
        if gen is None or gen == self.gen:
            doc = self.docs[i]
            if doc is None:
                doc = self.docs[i] = render_feed(
                    self.seed, self.specs[i], self.advance[i], self.epoch
                )
            return doc
        adv = advance_of(self.seed, i, gen, self.fraction, self.max_new)
        key = (i, adv)
        if key not in self._old:
            if len(self._old) > 4096:
                self._old.clear()
            self._old[key] = render_feed(self.seed, self.specs[i], adv, self.epoch)
        return self._old[key]

    def rewind(self) -> None:
        """Back to generation 0, as at start (a second system under test sees the same feeds)."""
        for i in range(self.feeds):
            if self.advance[i]:
                self.advance[i] = 0
                self.docs[i] = None
                self.doc(i)
        self.gen = 0

    def step(self) -> dict[str, Any]:
        """One generation on: some feeds gain items; their new versions are rendered now so
        that the requests that follow cost the server no more than before."""
        self.gen += 1
        changed: list[int] = []
        added = 0
        for i in range(self.feeds):
            rng = _rng(self.seed, "gen", self.gen, i)
            if rng.random() < self.fraction:
                n = rng.randint(1, self.max_new)
                self.advance[i] += n
                added += n
                self.docs[i] = None
                self.doc(i)
                changed.append(i)
        return {"gen": self.gen, "changed": changed, "new_items": added}


_REASONS = {200: "OK", 304: "Not Modified", 404: "Not Found", 400: "Bad Request", 405: "Bad"}


def _not_modified(doc: FeedDoc, headers: dict[str, str]) -> bool:
    inm = headers.get("if-none-match")
    if inm is not None:
        tags = {t.strip().removeprefix("W/").strip('"') for t in inm.split(",")}
        return "*" in tags or doc.etag in tags or f"{doc.etag}-gz" in tags
    ims = headers.get("if-modified-since")
    if ims:
        try:
            return parsedate_to_datetime(ims).timestamp() >= doc.last_modified_ts
        except (TypeError, ValueError):
            return False
    return False


class _Conn(asyncio.Protocol):
    def __init__(self, catalog: FeedCatalog, delay: float) -> None:
        self.catalog = catalog
        self.delay = delay
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while self.transport is not None:
            end = self.buf.find(b"\r\n\r\n")
            if end < 0:
                if len(self.buf) > 65536:
                    self.transport.close()
                return
            lines = self.buf[:end].decode("latin-1").split("\r\n")
            headers: dict[str, str] = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
            length = int(headers.get("content-length") or 0)
            if len(self.buf) < end + 4 + length:
                return
            self.buf = self.buf[end + 4 + length :]
            self._answer(lines[0], headers)

    def _answer(self, request_line: str, headers: dict[str, str]) -> None:
        try:
            method, target, version = request_line.split(" ", 2)
        except ValueError:
            self._send(400, b"bad request line\n", {}, False, False)
            return
        keep = headers.get("connection", "").lower() != "close" and version == "HTTP/1.1"
        parts = urlsplit(target)
        path, query = parts.path, parse_qs(parts.query)
        cat = self.catalog
        if path.startswith("/feed/") and path.endswith(".xml"):
            status = self._feed(path, query, headers, method, keep)
        elif path.startswith("/_control/") or path == "/feeds.opml":
            status = self._control(method, path, query, keep)
        else:
            status = 404
            self._send(404, b"not found\n", {}, keep, method == "HEAD")
        if not path.startswith("/_control/"):  # count what clients fetch, not the harness
            cat.counts[path] = cat.counts.get(path, 0) + 1
            cat.status_counts[str(status)] = cat.status_counts.get(str(status), 0) + 1

    def _feed(
        self,
        path: str,
        query: dict[str, list[str]],
        headers: dict[str, str],
        method: str,
        keep: bool,
    ) -> int:
        try:
            i = int(path[6:-4])
            gen = int(query["gen"][0]) if "gen" in query else None
        except ValueError:
            i, gen = -1, None
        if not 0 <= i < self.catalog.feeds or (gen is not None and gen < 0):
            self._send(404, b"no such feed\n", {}, keep, method == "HEAD")
            return 404
        doc = self.catalog.doc(i, gen)
        gz = "gzip" in headers.get("accept-encoding", "")
        extra = {
            "ETag": f'"{doc.etag}-gz"' if gz else f'"{doc.etag}"',
            "Last-Modified": doc.last_modified,
            "Vary": "Accept-Encoding",
        }
        if _not_modified(doc, headers):
            self._send(304, b"", extra, keep, True)
            return 304
        extra["Content-Type"] = doc.content_type
        if gz:
            extra["Content-Encoding"] = "gzip"
        self._send(200, doc.gz if gz else doc.body, extra, keep, method == "HEAD")
        return 200

    def _control(self, method: str, path: str, query: dict[str, list[str]], keep: bool) -> int:
        cat = self.catalog
        payload: Any
        if path == "/_control/advance" and method == "POST":
            steps = int(query.get("steps", ["1"])[0])
            results = [cat.step() for _ in range(steps)]
            changed = sorted({i for r in results for i in r["changed"]})
            new_items = sum(r["new_items"] for r in results)
            payload = {"gen": cat.gen, "changed": changed, "new_items": new_items}
        elif path == "/_control/rewind" and method == "POST":
            cat.rewind()
            payload = {"gen": cat.gen}
        elif path == "/_control/counts":
            payload = {
                "total": sum(cat.counts.values()),
                "by_status": cat.status_counts,
                "paths": cat.counts,
            }
        elif path == "/_control/reset" and method == "POST":
            cat.counts.clear()
            cat.status_counts.clear()
            payload = {"ok": True}
        elif path == "/_control/feeds":
            payload = {"gen": cat.gen, "urls": [cat.url(i) for i in range(cat.feeds)]}
        elif path == "/feeds.opml":
            outlines = "".join(
                f'<outline type="rss" text="feed {i}" xmlUrl="{cat.url(i)}"/>\n'
                for i in range(cat.feeds)
            )
            opml = f'<?xml version="1.0"?>\n<opml version="2.0"><body>\n{outlines}</body></opml>\n'
            self._send(200, opml.encode(), {"Content-Type": "text/x-opml"}, keep, False)
            return 200
        else:
            self._send(404, b"unknown control\n", {}, keep, False)
            return 404
        body = json.dumps(payload).encode()
        self._send(200, body, {"Content-Type": "application/json"}, keep, False)
        return 200

    def _send(
        self, status: int, body: bytes, headers: dict[str, str], keep: bool, head_only: bool
    ) -> None:
        lines = [f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}"]
        lines += [f"{k}: {v}" for k, v in headers.items()]
        if status != 304:
            lines.append(f"Content-Length: {len(body)}")
        lines.append("Connection: keep-alive" if keep else "Connection: close")
        data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
        if not head_only:
            data += body
        if self.delay > 0:
            asyncio.get_running_loop().call_later(self.delay, self._write, data, keep)
        else:
            self._write(data, keep)

    def _write(self, data: bytes, keep: bool) -> None:
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(data)
        if not keep:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None


async def serve(catalog: FeedCatalog, port: int, delay: float, ready: bool = True) -> None:
    loop = asyncio.get_running_loop()
    servers = []
    for j in range(catalog.hosts):
        server = await loop.create_server(
            lambda: _Conn(catalog, delay), host_address(j), port, backlog=1024, reuse_address=True
        )
        if port == 0:
            port = server.sockets[0].getsockname()[1]
        servers.append(server)
    catalog.port = port
    if ready:
        info = {
            "port": port,
            "hosts": [host_address(j) for j in range(catalog.hosts)],
            "feeds": catalog.feeds,
            "pid": os.getpid(),
        }
        sys.stdout.write(json.dumps(info) + "\n")
        sys.stdout.flush()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    for server in servers:
        server.close()


# --- the client side: start the server as a subprocess and drive it ---------------------------


class FeedServerProcess:
    """Runs the feed server in a subprocess; ``with FeedServerProcess(feeds=200) as fs: ...``."""

    def __init__(
        self,
        feeds: int,
        *,
        seed: int = 1,
        hosts: int = 1,
        epoch: datetime | None = None,
        change_fraction: float = 0.2,
        max_new: int = 5,
        delay_ms: float = 0.0,
        timeout: float = 600.0,
        corpus: Path | None = None,
        corpus_fraction: float = 0.3,
    ) -> None:
        self.args = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--feeds",
            str(feeds),
            "--seed",
            str(seed),
            "--hosts",
            str(hosts),
            "--change-fraction",
            str(change_fraction),
            "--max-new",
            str(max_new),
            "--delay-ms",
            str(delay_ms),
        ]
        if epoch is not None:
            self.args += ["--epoch", epoch.isoformat()]
        if corpus is not None:
            self.args += ["--corpus", str(corpus), "--corpus-fraction", str(corpus_fraction)]
        self.timeout = timeout
        self.feeds = feeds
        self.proc: subprocess.Popen[str] | None = None
        self.port = 0
        self.hosts: list[str] = []

    def __enter__(self) -> FeedServerProcess:
        self.proc = subprocess.Popen(self.args, stdout=subprocess.PIPE, text=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=10)
            raise RuntimeError(f"feed server exited with {self.proc.returncode} before ready")
        info = json.loads(line)
        self.port, self.hosts = int(info["port"]), list(info["hosts"])
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    @property
    def base(self) -> str:
        return f"http://{self.hosts[0]}:{self.port}"

    def url(self, i: int) -> str:
        return f"http://{self.hosts[i % len(self.hosts)]}:{self.port}/feed/{i}.xml"

    def urls(self) -> list[str]:
        return [self.url(i) for i in range(self.feeds)]

    def _call(self, method: str, path: str) -> Any:
        req = urllib.request.Request(
            self.base + path, method=method, data=b"" if method == "POST" else None
        )
        with urllib.request.urlopen(req, timeout=self.timeout) as resp:
            return json.loads(resp.read())

    def counts(self) -> dict[str, Any]:
        """``{"total": n, "by_status": {"200": n, "304": n}, "paths": {"/feed/0.xml": n, ...}}``."""
        result: dict[str, Any] = self._call("GET", "/_control/counts")
        return result

    def reset_counts(self) -> None:
        self._call("POST", "/_control/reset")

    def advance(self, steps: int = 1) -> dict[str, Any]:
        """Moves the generation on; returns ``{"gen", "changed": [feed indexes], "new_items"}``."""
        result: dict[str, Any] = self._call("POST", f"/_control/advance?steps={steps}")
        return result

    def rewind(self) -> None:
        """Back to generation 0: every feed as it was when the server started."""
        self._call("POST", "/_control/rewind")

    def cpu_seconds(self) -> float:
        """CPU time the server process has used so far (Linux)."""
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _parse_epoch(value: str) -> datetime:
    if value == "now":
        return datetime.fromtimestamp(int(time.time()) // 60 * 60 - 3600, UTC)
    parsed = datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    ap.add_argument("--feeds", type=int, default=2000)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--hosts", type=int, default=1, help="loopback addresses to spread feeds over")
    ap.add_argument(
        "--epoch",
        default=DEFAULT_EPOCH.isoformat(),
        help="time of the initial newest items (ISO, or 'now' = an hour ago)",
    )
    ap.add_argument("--change-fraction", type=float, default=0.2)
    ap.add_argument("--max-new", type=int, default=5)
    ap.add_argument("--delay-ms", type=float, default=0.0, help="added latency per response")
    ap.add_argument("--lazy", action="store_true", help="render feeds on first request")
    ap.add_argument(
        "--corpus",
        type=Path,
        help="a clustering-dev folder: draw --corpus-fraction of the items from its real reports",
    )
    ap.add_argument("--corpus-fraction", type=float, default=0.3)
    args = ap.parse_args(argv)
    global _CORPUS
    if args.corpus is not None:
        _CORPUS = Corpus(args.corpus, args.corpus_fraction)
    if not 1 <= args.hosts <= 250 * 254:
        ap.error("--hosts must be between 1 and 63500")
    catalog = FeedCatalog(
        args.feeds,
        args.seed,
        _parse_epoch(args.epoch),
        args.change_fraction,
        args.max_new,
        args.hosts,
    )
    if not args.lazy:  # render up front so that timed passes only pay for sending bytes
        for i in range(args.feeds):
            catalog.doc(i)
    asyncio.run(serve(catalog, args.port, args.delay_ms / 1000.0))
    return 0


if __name__ == "__main__":
    sys.exit(main())
