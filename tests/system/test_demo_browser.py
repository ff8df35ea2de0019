"""End to end in real headless Chromium: kill the primary from the page, force Level3."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# In CI (CI=true, where .ci/run installs Chromium) a missing browser fails the test;
# on a developer's machine without it, the test is skipped with the install command.
pytestmark = [
    pytest.mark.browser,
    pytest.mark.skipif(
        CHROMIUM is None and not os.environ.get("CI"), reason="no Chromium installed (apt-get install chromium)"
    ),
]


@pytest.fixture
def demo_url() -> object:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "demo_app", "--port", str(port), "--duration", "120"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    assert proc.stdout is not None
    for _ in range(10):
        if "demo running at" in proc.stdout.readline():
            break
    yield f"http://127.0.0.1:{port}/"
    proc.terminate()
    proc.wait(20)


ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


@pytest.fixture
def browser() -> Any:
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield launched
        finally:
            launched.close()


def test_dashboard_shows_failover_and_gated_features(demo_url: str, browser: Any) -> None:
    page = browser.new_page()
    page.goto(demo_url)
    page.wait_for_selector('tr[data-node="primary"] td.health[data-healthy="true"]', timeout=15_000)
    served_before = int(page.inner_text('tr[data-node="secondary"] td.served'))

    page.click('button[data-node="primary"][data-node-action="kill"]')
    page.wait_for_selector('tr[data-node="primary"] td.health[data-healthy="false"]', timeout=15_000)
    page.wait_for_function(
        f"() => Number(document.querySelector('tr[data-node=\"secondary\"] td.served').textContent) > {served_before + 3}",
        timeout=15_000,
    )
    assert "failover" in page.inner_text("#events")
    # the counter charts read /metrics: the failovers just seen are counted there
    page.wait_for_function("() => Number(document.querySelector('#fo-v').dataset.total) > 0", timeout=10_000)
    # the badge shows the first cause, as the event log did, however many checks fail since
    badge = 'tr[data-node="primary"] td.health .badge'
    page.wait_for_function("() => /primary marked unhealthy \\((\\w+)\\)/.test(document.querySelector('#events').textContent)")
    cause = re.search(r"primary marked unhealthy \((\S+)\)", page.inner_text("#events"))
    assert cause is not None
    page.wait_for_timeout(1500)  # three health-check intervals
    assert page.inner_text(badge) == f"unhealthy ({cause[1]})"

    page.select_option("#force-level", "Level3")
    page.click("#force")
    page.wait_for_selector('#level[data-level="Level3"]', timeout=10_000)
    page.wait_for_selector('.feature[data-feature="Caching"][data-available="false"]', timeout=10_000)
    for feat, available in [
        ("CoreFunction", "true"),
        ("Analytics", "false"),
        ("DetailedLogs", "false"),
        ("NonEssential", "false"),
    ]:
        assert page.get_attribute(f'.feature[data-feature="{feat}"]', "data-available") == available



def test_every_click_at_human_speed_takes_effect(demo_url: str, browser: Any) -> None:
    """The table updates in place while a person clicks: 20 kills of the primary (each
    followed by a revive), at a person's pace, each one lands."""
    page = browser.new_page()
    page.goto(demo_url)
    proc = 'tr[data-node="primary"] td.proc'
    page.wait_for_selector(f'{proc}[data-state="running"]', timeout=15_000)
    landed = 0
    for _ in range(20):
        # a person: move to the button, pause, press, release
        page.hover('button[data-node="primary"][data-node-action="kill"]')
        page.wait_for_timeout(120)
        page.click('button[data-node="primary"][data-node-action="kill"]', delay=80)
        page.wait_for_selector(f'{proc}[data-state="killed"]', timeout=5_000)
        landed += 1
        page.wait_for_timeout(150)
        page.click('button[data-node="primary"][data-node-action="revive"]', delay=80)
        page.wait_for_selector(f'{proc}[data-state="running"]', timeout=5_000)
    assert landed == 20
    latency = page.inner_text('tr[data-node="primary"] td.latency')
    assert latency  # the row was never rebuilt under the pointer: the same cells



@pytest.mark.parametrize(("width", "height"), [(800, 900), (390, 844)])
def test_dashboard_fits_small_screens(
    demo_url: str, browser: Any, width: int, height: int, tmp_path: Path
) -> None:
    page = browser.new_page(viewport={"width": width, "height": height})
    page.goto(demo_url)
    page.wait_for_selector('tr[data-node="primary"] td.proc[data-state="running"]', timeout=15_000)
    # nothing wider than the screen (the node table turns into cards in a narrow panel)
    overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
    assert overflow <= 0
    for selector in ("#level", "#why", "#force", 'button[data-node="primary"][data-node-action="kill"]'):
        box = page.locator(selector).bounding_box()
        assert box is not None and box["width"] > 0
    page.screenshot(path=str(tmp_path / f"dashboard-{width}.png"), full_page=True)


NODES = ("primary", "secondary", "tertiary")
NODE_ACTIONS = ("kill", "slow", "error", "hang", "revive", "heal")

# Where an element can be clicked or read: on screen horizontally and not hidden behind a
# scroll box or another element (what is at its middle, and at its two ends, is itself).
SHOWN = """el => {
  const r = el.getBoundingClientRect();
  const y = r.top + r.height / 2;
  const at = x => { const hit = document.elementFromPoint(x, y); return hit !== null && el.contains(hit); };
  return {left: r.left, right: r.right, width: r.width,
          hit: at(r.left + 1) && at(r.left + r.width / 2) && at(r.right - 1)};
}"""


#: how many requests the traffic line says were shed
SHED = "() => Number(document.querySelector('#traffic').dataset.shed)"


def _shed_count(page: Any) -> int:
    match = re.search(r"(\d+) shed", page.inner_text("#traffic"))
    assert match is not None, page.inner_text("#traffic")
    return int(match[1])


def test_node_controls_names_traffic_and_favicon_fit_every_width(
    demo_url: str, browser: Any, tmp_path: Path
) -> None:
    """Issue 22: at 1366, 1280 and 390 px every node control is on screen without
    horizontal scrolling, node names are whole, sheds read "shed", no "in 0 s", a favicon."""
    page = browser.new_page(viewport={"width": 1366, "height": 768})
    page.goto(demo_url)
    page.wait_for_selector('tr[data-node="primary"] td.proc[data-state="running"]', timeout=15_000)
    page.wait_for_function(f"{SHED} === 0", timeout=10_000)
    failed_before = int(page.get_attribute("#traffic", "data-failed") or "0")
    # Emergency through the page's own control: the library sheds the demo's searches
    # (not a core path) with 503 + Retry-After, and the page calls them shed
    page.select_option("#force-level", "Emergency")
    page.click("#force")
    page.wait_for_selector('#level[data-level="Emergency"]', timeout=10_000)
    page.wait_for_function(f"{SHED} >= 2", timeout=15_000)
    # what was shed is not also counted as failed
    assert int(page.get_attribute("#traffic", "data-failed") or "0") == failed_before
    page.close()

    for width, height in [(1366, 768), (1280, 800), (390, 844)]:
        page = browser.new_page(viewport={"width": width, "height": height})
        page.goto(demo_url)
        # every text the level's explanation shows while this page is open
        page.evaluate(
            """() => { window.whyTexts = [];
                 new MutationObserver(() => whyTexts.push(document.getElementById('why').textContent))
                   .observe(document.getElementById('why'), {childList: true, characterData: true, subtree: true}); }"""
        )
        page.wait_for_selector('tr[data-node="tertiary"] td.proc[data-state]', timeout=15_000)
        page.wait_for_function(f"{SHED} > 0", timeout=10_000)

        assert page.evaluate("() => document.documentElement.scrollWidth") <= width
        table = page.locator("#nodes").bounding_box()
        panel = page.locator("section", has=page.locator("#nodes")).bounding_box()
        assert table is not None and panel is not None
        assert table["x"] >= panel["x"] and table["x"] + table["width"] <= panel["x"] + panel["width"]

        for node in NODES:
            name = page.locator(f'tr[data-node="{node}"] .node-name')
            assert name.inner_text() == node
            whole = name.evaluate("el => el.scrollWidth <= el.clientWidth && el.clientWidth > 0")
            assert whole, (width, node)
            name.scroll_into_view_if_needed()
            shown = name.evaluate(SHOWN)
            assert shown["left"] >= 0 and shown["right"] <= width and shown["hit"], (width, node, shown)
            for action in NODE_ACTIONS:
                button = page.locator(f'button[data-node="{node}"][data-node-action="{action}"]')
                button.scroll_into_view_if_needed()
                shown = button.evaluate(SHOWN)
                assert shown["width"] > 0, (width, node, action)
                assert shown["left"] >= 0 and shown["right"] <= width, (width, node, action, shown)
                assert shown["hit"], (width, node, action, shown)  # not behind a scroll box
        assert page.evaluate("() => window.scrollX") == 0

        assert _shed_count(page) > 0
        assert page.inner_text("#why") == "forced to Emergency by an operator"
        # the countdown itself, at the values around zero it rounds
        for seconds in (0, 0.001, 0.2, 0.49, 0.5, 0.51, 0.99, 1.4, 4.6):
            figures = {"level": "Level2", "cause": {"sheds": "x"}, "cooldown_remaining": seconds}
            text = page.evaluate("f => why(f)", figures)
            assert "in 0 s" not in text, (seconds, text)
        quiet = page.evaluate("f => why(f)", {"cause": {}, "cooldown_remaining": 0.3})
        assert quiet == "no signal calls for a level"
        assert not [t for t in page.evaluate("() => whyTexts") if "in 0 s" in t]

        icon = page.request.get(demo_url + "favicon.ico")
        assert icon.status == 200 and icon.headers["content-type"].startswith("image/")
        assert icon.body()[:4] == b"\x00\x00\x01\x00"  # an ICO
        page.screenshot(path=str(tmp_path / f"dashboard-{width}.png"), full_page=True)
        page.close()


def test_undo_buttons_say_what_they_undo_and_only_theirs_is_enabled(demo_url: str, browser: Any) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(demo_url)
    row = 'tr[data-node="primary"]'
    page.wait_for_selector(f'{row} td.proc[data-state="running"]', timeout=15_000)

    def button(action: str) -> Any:
        return page.locator(f'button[data-node="primary"][data-node-action="{action}"]')

    assert "undoes kill" in button("revive").inner_text()
    assert "undoes slow · error · hang" in button("heal").inner_text()
    assert "undo" in (button("kill").get_attribute("title") or "")
    # running normally: nothing to undo
    assert button("revive").is_disabled() and button("heal").is_disabled()

    button("slow").click()
    page.wait_for_selector(f'{row} td.proc[data-state="slow"]', timeout=5_000)
    assert button("heal").is_enabled() and button("revive").is_disabled()
    assert button("slow").get_attribute("aria-pressed") == "true"
    button("heal").click()
    page.wait_for_selector(f'{row} td.proc[data-state="running"]', timeout=5_000)
    assert button("heal").is_disabled()

    button("kill").click()
    page.wait_for_selector(f'{row} td.proc[data-state="killed"]', timeout=5_000)
    assert button("revive").is_enabled() and button("heal").is_disabled()
    assert all(button(a).is_disabled() for a in ("kill", "slow", "error", "hang"))
    button("revive").click()
    page.wait_for_selector(f'{row} td.proc[data-state="running"]', timeout=5_000)
    assert button("revive").is_disabled() and button("kill").is_enabled()
