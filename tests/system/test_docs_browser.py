"""The documentation, built with Sphinx as CI builds it (-W: no warnings), read in real
headless Chromium at 1280x800: the configuration page fits the screen (no table or
definition list wider than the viewport, nothing to scroll sideways), and so does every
other page."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
WIDTH, HEIGHT = 1280, 800

needs_chromium = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"), reason="no Chromium installed (apt-get install chromium)"
)

#: the widest element of a page, and anything that overflows its box or the viewport
MEASURE = """(width) => {
    const boxes = [...document.querySelectorAll('table, dl')];
    const wider = boxes
        .filter(e => e.getBoundingClientRect().right > width || e.scrollWidth > e.clientWidth + 1)
        .map(e => `${e.tagName.toLowerCase()}.${e.className}: right ${e.getBoundingClientRect().right}, `
                  + `scroll ${e.scrollWidth} > client ${e.clientWidth}`);
    return {scrollWidth: document.documentElement.scrollWidth, boxes: boxes.length, wider: wider};
}"""


@pytest.fixture(scope="module")
def html(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("html")
    build = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html", str(ROOT / "docs"), str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert build.returncode == 0, build.stderr
    return out


@pytest.fixture(scope="module")
def page() -> Iterator[Any]:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--disable-gpu"])
        try:
            yield browser.new_page(viewport={"width": WIDTH, "height": HEIGHT})
        finally:
            browser.close()


def test_the_footer_names_the_copyright(html: Path) -> None:
    assert "&#169;2026, the resilience_mw developers." in (html / "index.html").read_text()


@pytest.mark.browser
@needs_chromium
def test_the_configuration_page_fits_a_1280_px_screen(html: Path, page: Any) -> None:
    page.goto((html / "configuration.html").as_uri())
    found = page.evaluate(MEASURE, WIDTH)
    assert found["boxes"] >= 8  # one option list per config class, and the settings'
    assert found["scrollWidth"] <= WIDTH
    assert not found["wider"]
    # every option has its entry and its anchor
    assert page.locator("#resilience-state-url").count() == 1
    assert page.locator("#poolconfig-failure-threshold").count() == 1


@pytest.mark.browser
@needs_chromium
def test_no_page_scrolls_sideways_at_1280_px(html: Path, page: Any) -> None:
    too_wide = {}
    for file in sorted(html.rglob("*.html")):
        page.goto(file.as_uri())
        found = page.evaluate(MEASURE, WIDTH)
        if found["scrollWidth"] > WIDTH or found["wider"]:
            too_wide[str(file.relative_to(html))] = found
    assert not too_wide
