"""Every Python block of the guide (docs/guide/*.rst) runs as written: the blocks of one
page in order, in one namespace per page, with the example addresses (10.0.0.1-3:8080)
pointed at local node servers and the example state directory (/var/run/shop) at a
temporary one. Blocks in other languages (bash, nginx, ini) are not run; a literal
block without a language (``::``) is refused, so no Python escapes the test."""

from __future__ import annotations

import gc
import logging
import os
import re
from pathlib import Path
from typing import Any

import pytest

from resilience_mw import testing

GUIDE = Path(__file__).resolve().parents[2] / "docs" / "guide"
PAGES = sorted(p.stem for p in GUIDE.glob("*.rst"))
DIRECTIVE = re.compile(r"^(\s*)\.\. (?:code-block|code|sourcecode)::\s*(\S+)\s*$")

#: what a page's blocks print, in part (the comments next to the prints say it too)
PRINTS: dict[str, list[str]] = {
    "failover": [
        "primary healthy",
        "True\n",
        "[('primary', True), ('secondary', True)]",
        "failure_threshold='3': must be an integer, not a string (hint: write 3 without quotes)",
    ],
    "degradation": ["analytics on at Normal", "cached results", "Level3 False"],
    "flask": ["{'cached': False, 'results': ['fresh']}", "Level3 10.0", "503 "],
    "wsgi": ["200 hello", "Normal", "pass 200"],
    "adapter": ["200 a", "200 from a", "502 [{'error': 'ConnectionError', 'node': 'a'}]"],
    "overload": ["shed / for queue", "503 queued too long", "200 served", "shed /prefetch for criticality"],
    "fleet": ["host 1.0", "Level3 host", "refused: "],
    "telemetry": ["resilience_degradation_level 1.0", "ALERT degradation"],
    "testing": ["[('node-marked-unhealthy', 'passive'), ('node-recovered', 'ejection-expired')]"],
    "cli": ["forced: Level3", "forced: none"],
    "production": ["200 hello"],
    "origin": [
        "selected: secondary (priority 80)",
        "Success from secondary",
        "level: Level3",
        "Fallback result",
        "Success from secondary",
    ],
}


def run_documented_tests(namespace: dict[str, Any]) -> None:
    """The testing page defines tests for the plugin's fixtures: run them as pytest would."""
    with testing.workers_off():
        namespace["test_readyz_warns_while_a_node_is_down"](lambda factory, *a, **kw: factory(*a, **kw))
    with testing.workers_off():
        namespace["test_views_gated_at_emergency"](None)


#: what to check after a page's blocks ran, beyond what they print
AFTER = {"testing": run_documented_tests}


def code_blocks(text: str) -> list[tuple[int, str, str]]:
    """``(line, language, code)`` of every code-block directive of an .rst text (``line``:
    where the code starts, from 1)."""
    lines = text.splitlines()
    blocks = []
    i = 0
    while i < len(lines):
        m = DIRECTIVE.match(lines[i])
        if not m:
            i += 1
            continue
        indent, language = len(m.group(1)), m.group(2)
        i += 1
        while i < len(lines) and (not lines[i].strip() or lines[i].lstrip().startswith(":")):
            if lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) <= indent:
                break
            i += 1
        start, body = i, []
        while i < len(lines) and (not lines[i].strip() or len(lines[i]) - len(lines[i].lstrip()) > indent):
            body.append(lines[i])
            i += 1
        first = next((n for n, line in enumerate(body) if line.strip()), 0)
        content = [line for line in body if line.strip()]
        cut = min(len(line) - len(line.lstrip()) for line in content) if content else 0
        code = "\n".join(line[cut:] for line in body[first:]).rstrip("\n") + "\n"
        blocks.append((start + first + 1, language, code))
    return blocks


def test_the_guide_has_its_pages() -> None:
    assert set(PRINTS) <= set(PAGES), "a page the test expects is missing"
    assert set(PAGES) - {"index"} <= set(PRINTS), "a new page: say what its blocks print"


@pytest.mark.parametrize("page", [p for p in PAGES if p != "index"])
def test_no_untested_literal_blocks(page: str) -> None:
    """Code is in ``.. code-block:: <language>``; ``::`` blocks would be highlighted as
    Python without being run."""
    for n, line in enumerate((GUIDE / f"{page}.rst").read_text().splitlines(), 1):
        if line.rstrip().endswith("::") and not line.lstrip().startswith(".."):
            pytest.fail(f"{page}.rst:{n}: a literal block; write .. code-block:: <language>")


@pytest.fixture
def clean_process() -> Any:
    """What the examples may change in the process is put back afterwards."""
    environ = dict(os.environ)
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    testing.stop_all_workers()
    os.environ.clear()
    os.environ.update(environ)
    root.handlers[:] = handlers
    root.setLevel(level)


def stop_everything(namespace: dict[str, Any]) -> None:
    """Stop the threads the page's objects started (apps keep their runtime in
    ``extensions``)."""
    from flask import Flask

    from resilience_mw import AlertRules, AutoDegradationManager, HealthChecker
    from resilience_mw.runtime import Runtime

    for found in list(namespace.values()):
        value = found.extensions.get("resilience") if isinstance(found, Flask) else found
        if isinstance(value, (Runtime, AutoDegradationManager, HealthChecker)):
            value.stop()
        elif isinstance(value, AlertRules):
            value.close()
    testing.stop_all_workers()


@pytest.mark.parametrize("page", [p for p in PAGES if p != "index"])
def test_guide_page_python_blocks_run_as_written(
    page: str, node_factory: Any, tmp_path: Path, capsys: pytest.CaptureFixture[str], clean_process: None
) -> None:
    nodes = [node_factory(name) for name in ("a", "b", "c")]
    blocks = [(line, code) for line, language, code in code_blocks((GUIDE / f"{page}.rst").read_text())
              if language == "python"]
    assert blocks or page not in PRINTS or not PRINTS[page], f"{page}.rst has no Python block"
    namespace: dict[str, Any] = {"__name__": f"guide_{page}"}
    try:
        for line, written in blocks:
            code = written.replace("/var/run/shop", str(tmp_path))
            for i, node in enumerate(nodes, 1):
                code = code.replace(f"http://10.0.0.{i}:8080", node.url)
            assert "10.0.0." not in code, f"{page}.rst:{line} names an address the test does not serve"
            exec(compile("\n" * (line - 1) + code, str(GUIDE / f"{page}.rst"), "exec"), namespace)
        if page in AFTER:
            AFTER[page](namespace)
        gc.collect()
        out = capsys.readouterr().out
        for expected in PRINTS[page]:
            assert expected in out, f"{page}.rst does not print {expected!r}"
    finally:
        stop_everything(namespace)


def test_the_telemetry_page_lists_every_metric_and_every_signal_with_its_arguments() -> None:
    from resilience_mw import signals
    from resilience_mw.telemetry.metrics import METRICS

    text = (GUIDE / "telemetry.rst").read_text()
    assert not [name for name in METRICS if f"``{name}``" not in text]
    for signal, arguments in signals.ARGUMENTS.items():
        entry = re.search(rf"^``{signal.replace('-', '_')}``, from .*\n((?:    .*\n)+)", text, re.M)
        assert entry, f"telemetry.rst does not list {signal}"
        assert arguments <= set(re.findall(r"``([a-z_]+)``", entry.group(1))), signal


def test_the_docs_name_the_design_they_port_not_a_seed() -> None:
    """"The design this library ports" (see guide/origin.rst), not "the seed"."""
    docs = GUIDE.parent
    assert not [p.name for p in docs.rglob("*.rst") if re.search(r"\bseeds?\b", p.read_text(), re.I)]
