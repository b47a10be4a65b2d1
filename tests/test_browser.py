"""The pages in a real browser: headless Chromium (Debian package ``chromium``; .ci/run installs
it) loads the index, a topic page and a development page from the running web app over
loopback, at a phone's width and a desktop's, and checks what a person sees: the text, one
``h1`` and the landmarks, no horizontal scrolling at 390 px, readable contrast, no scripts.

Set ``AGGREGATOR_SCREENSHOTS=DIR`` to have the test write PNG screenshots into DIR (outside the
repository) for a look by eye.
"""

from __future__ import annotations

import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import httpx
import pytest
import uvicorn

from aggregator.cli import main
from aggregator.publish.render import entry_title
from aggregator.settings import Settings
from aggregator.store import open_store
from aggregator.watchlist import load_watchlist
from aggregator.web import create_app
from tests.browser import Browser, BrowserError, find_chromium
from tests.test_publish_static import SEEDS, WATCHLIST_YAML

pytestmark = pytest.mark.slow


class Shown(NamedTuple):
    id: str
    title: str
    reports: int


# Relative luminance contrast of an element's text against the first opaque background up its
# ancestors (WCAG 2 formula); the page's computed colours are rgb()/rgba() strings.
CONTRAST_JS = """
(() => {
  const parse = c => (c.match(/[\\d.]+/g) || []).map(Number);
  const lum = ([r, g, b]) => {
    const f = v => {
      v /= 255;
      return v <= 0.03928 ? v / 12.92 : Math.pow((v + 0.055) / 1.055, 2.4);
    };
    return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
  };
  const background = el => {
    for (; el; el = el.parentElement) {
      const c = parse(getComputedStyle(el).backgroundColor);
      if (c.length === 3 || (c.length === 4 && c[3] > 0.9)) return c.slice(0, 3);
    }
    return [255, 255, 255];
  };
  let worst = 21, what = '';
  for (const el of document.querySelectorAll('h1, h2, h3, p, li, a, time, label, mark, button')) {
    if (!el.textContent.trim() || !el.getClientRects().length) continue;
    const fg = lum(parse(getComputedStyle(el).color)), bg = lum(background(el));
    const ratio = (Math.max(fg, bg) + 0.05) / (Math.min(fg, bg) + 0.05);
    if (ratio < worst) {
      worst = ratio;
      what = el.tagName + ': ' + el.textContent.trim().slice(0, 40);
    }
  }
  return [worst, what];
})()
"""

PAGE_FACTS_JS = """
({
  text: document.body.innerText,
  h1: document.querySelectorAll('h1').length,
  headings: Array.from(document.querySelectorAll('h2, h3'), h => h.innerText),
  main: document.querySelectorAll('main').length,
  header: document.querySelectorAll('header').length,
  footer: document.querySelectorAll('footer').length,
  nav: document.querySelectorAll('nav').length,
  scripts: document.querySelectorAll('script').length,
  scrollWidth: document.documentElement.scrollWidth,
  innerWidth: window.innerWidth,
  lang: document.documentElement.lang,
})
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def chromium() -> Iterator[Browser]:
    executable = find_chromium()
    if executable is None:
        pytest.skip(
            "no Chromium found (Debian package chromium; .ci/run installs it; or set "
            "AGGREGATOR_CHROMIUM to a Chromium/Chrome binary)"
        )
    try:
        browser = Browser(executable)
    except (BrowserError, OSError) as exc:
        pytest.skip(f"Chromium at {executable} did not start headless: {exc}")
    yield browser
    browser.close()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, list[Shown]]]:
    """The service's web app over a store holding the seeds, on a loopback port; yields its
    base URL and the published developments."""
    tmp = tmp_path_factory.mktemp("browser")
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    config = tmp / "watchlist.yaml"
    config.write_text(
        WATCHLIST_YAML.replace("https://news.example.org/", base + "/").replace(
            "  feed_size: 20\n", "  feed_size: 20\n  page_size: 2\n  timezone: Europe/Vilnius\n"
        ),
        encoding="utf-8",
    )
    db = f"sqlite:///{tmp / 'aggregator.db'}"
    assert main(["--db", db, "--config", str(config), "import", str(SEEDS)]) == 0
    watchlist = load_watchlist(config)
    store = open_store(db)
    shown = [
        Shown(d.id, entry_title(d), len(d.sources))
        for d in store.list_developments(None, 0)
        if d.topics
    ]
    assert len(shown) >= 2
    settings = Settings(data_dir=tmp, db_url=db, config_path=config)
    app = create_app(store, lambda: watchlist, settings)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            if httpx.get(base + "/", timeout=1).status_code == 200:
                break
        except httpx.HTTPError:
            time.sleep(0.05)
    else:
        pytest.fail("the web app did not start")
    yield base, shown
    server.should_exit = True
    thread.join(timeout=10)
    store.close()


def _look(browser: Browser, url: str, width: int, height: int, name: str) -> dict[str, object]:
    browser.viewport(width, height, mobile=width < 600)
    browser.open(url)
    facts: dict[str, object] = browser.evaluate(PAGE_FACTS_JS)
    facts["contrast"] = browser.evaluate(CONTRAST_JS)
    shots = os.environ.get("AGGREGATOR_SCREENSHOTS")
    if shots:
        Path(shots).mkdir(parents=True, exist_ok=True)
        (Path(shots) / f"{name}-{width}.png").write_bytes(browser.screenshot())
    return facts


def _check_frame(facts: dict[str, object], width: int) -> None:
    assert facts["h1"] == 1
    assert facts["main"] == 1 and facts["header"] and facts["footer"] and facts["nav"]
    assert facts["scripts"] == 0  # no JavaScript
    assert facts["lang"] == "en"
    # Nothing wider than the screen: no sideways scrolling on a phone.
    assert facts["scrollWidth"] == facts["innerWidth"] == width, facts
    ratio, what = facts["contrast"]  # type: ignore[misc]
    assert ratio >= 4.5, f"contrast {ratio:.2f} below WCAG AA for {what}"


@pytest.mark.parametrize("width,height", [(390, 844), (1280, 900)])
def test_index_in_chromium(
    chromium: Browser, site: tuple[str, list[Shown]], width: int, height: int
) -> None:
    base, shown = site
    facts = _look(chromium, base + "/", width, height, "index")
    _check_frame(facts, width)
    text = str(facts["text"])
    assert "Baltic watch" in text and "Latest developments" in text
    assert "Search reports" in text  # the search box, labelled
    for dev in shown:  # each development once
        assert facts["headings"].count(dev.title) == 1, dev.title  # type: ignore[attr-defined]
    assert "EET" in text  # local times in the watchlist's zone


@pytest.mark.parametrize("width,height", [(390, 844), (1280, 900)])
def test_topic_page_in_chromium(
    chromium: Browser, site: tuple[str, list[Shown]], width: int, height: int
) -> None:
    base, _ = site
    facts = _look(chromium, base + "/topics/lithuania/", width, height, "topic")
    _check_frame(facts, width)
    text = str(facts["text"])
    assert "Lithuania" in text and "Latest developments" in text


@pytest.mark.parametrize("width,height", [(390, 844), (1280, 900)])
def test_development_page_in_chromium(
    chromium: Browser, site: tuple[str, list[Shown]], width: int, height: int
) -> None:
    base, shown = site
    dev = max(shown, key=lambda d: d.reports)
    facts = _look(chromium, f"{base}/developments/{dev.id}.html", width, height, "development")
    _check_frame(facts, width)
    text = str(facts["text"])
    assert dev.title in text
    assert "Reports, in time order" in text
    assert text.count("Joined as:") == dev.reports > 1
    assert "EET" in text


def test_search_page_in_chromium(chromium: Browser, site: tuple[str, list[Shown]]) -> None:
    base, _ = site
    facts = _look(chromium, base + "/search?q=balloons", 390, 844, "search")
    _check_frame(facts, 390)
    text = str(facts["text"])
    assert "Search: balloons" in text and "Joined as" not in text
    assert chromium.evaluate("document.querySelectorAll('main mark').length") >= 1


def test_dark_mode_keeps_the_contrast(chromium: Browser, site: tuple[str, list[Shown]]) -> None:
    base, shown = site
    chromium.call(
        "Emulation.setEmulatedMedia",
        {"features": [{"name": "prefers-color-scheme", "value": "dark"}]},
    )
    try:
        for path in ("/", f"/developments/{shown[0].id}.html"):
            facts = _look(chromium, base + path, 390, 844, "dark" + path.replace("/", "-"))
            _check_frame(facts, 390)
            assert chromium.evaluate("getComputedStyle(document.body).backgroundColor") != (
                "rgb(255, 255, 255)"
            )
    finally:
        chromium.call("Emulation.setEmulatedMedia", {"features": []})
