"""The README is a front door: at most 8 KB, its links lead somewhere, and each Python
block runs alone, as written, in a fresh namespace (with the example addresses pointed at
local node servers and the example state directory at a temporary one)."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from werkzeug.test import Client

from resilience_mw import testing

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)
LINK = re.compile(r"\]\(([^)#]+)(?:#[^)]*)?\)")


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text())


def test_readme_is_a_front_door() -> None:
    text = README.read_text()
    assert len(text.encode()) <= 8 * 1024
    assert len(python_blocks()) == 3  # Flask, requests, any WSGI app
    assert not re.search(r"^```(?!python|bash|$)", text, re.M), "a block in another language"
    assert "./scripts/test" in text and "./scripts/demo" in text  # (.ci greps for the first)
    for extra in ("[redis]", "[prometheus]", "[otel]"):
        assert f"resilience_mw{extra}" in text
    assert "seed" not in text.lower()


def test_readme_links_lead_to_files() -> None:
    targets = [t for t in LINK.findall(README.read_text()) if "://" not in t]
    assert targets
    missing = [t for t in targets if not (ROOT / t).exists()]
    assert not missing


@pytest.fixture
def run_block(node_factory: Any, tmp_path: Path) -> Iterator[Callable[[int], dict[str, Any]]]:
    """Runs README block ``i`` in a fresh namespace; stops what it started afterwards."""
    a, b = node_factory("a"), node_factory("b")
    namespaces: list[dict[str, Any]] = []

    def run(i: int) -> dict[str, Any]:
        code = python_blocks()[i]
        code = code.replace("http://10.0.0.1:8080", a.url).replace("http://10.0.0.2:8080", b.url)
        code = code.replace("/var/run/shop", str(tmp_path))
        assert "10.0.0." not in code, f"block {i} names an address the test does not serve"
        namespace: dict[str, Any] = {"__name__": f"readme_block_{i}", "nodes_": (a, b)}
        namespaces.append(namespace)
        exec(compile(code, f"README.md block {i}", "exec"), namespace)
        return namespace

    yield run
    testing.stop_all_workers()
    for namespace in namespaces:
        runtime = namespace.get("runtime")
        if runtime is not None:
            runtime.stop()


def test_flask_block(run_block: Callable[[int], dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_block(0)
    assert capsys.readouterr().out == "a\n"
    client = ns["app"].test_client()
    assert client.get("/readyz").status_code == 200
    assert client.get("/livez").status_code == 200
    assert client.get("/recommendations").json == {"items": ["a", "b"]}
    # "a, else b": with a down, the adapter answers from b
    a, b = ns["nodes_"]
    a.stop()
    assert client.get("/orders").json["node"] == "b"
    # and with both down, the fallback is served
    b.stop()
    assert client.get("/orders").json == {"orders": [], "stale": True}


def test_requests_block(run_block: Callable[[int], dict[str, Any]], capsys: pytest.CaptureFixture[str]) -> None:
    ns = run_block(1)
    assert capsys.readouterr().out == "200 a\n"
    a, _ = ns["nodes_"]
    assert a.hits("/api/x") == 1


def test_wsgi_block(run_block: Callable[[int], dict[str, Any]], tmp_path: Path) -> None:
    ns = run_block(2)
    client = Client(ns["application"])
    assert client.get("/").get_data() == b"hello"
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert b"resilience_degradation_level" in client.get("/metrics").get_data()
    forced = client.put(
        "/resilience/level", data=json.dumps({"level": "Level3"}), headers={"Authorization": "Bearer s3cret"}
    )
    assert forced.status_code == 200 and forced.json["scope"] == "host"
    assert (tmp_path / "state.db").exists()
    assert ns["runtime"].adapter is not None
