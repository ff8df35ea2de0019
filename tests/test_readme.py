"""Every Python block of the README runs as written, in order, in one namespace, with the
example addresses pointed at local node servers."""

from __future__ import annotations

import gc
import re
from pathlib import Path
from typing import Any

import pytest

from resilience_mw import testing

README = Path(__file__).resolve().parent.parent / "README.md"
BLOCK = re.compile(r"^```python\n(.*?)^```", re.S | re.M)


def python_blocks() -> list[str]:
    return BLOCK.findall(README.read_text())


def test_readme_has_the_blocks_we_run() -> None:
    blocks = python_blocks()
    assert len(blocks) >= 8
    assert not re.search(r"^```(?!python|bash|$)", README.read_text(), re.M), "a block in another language"


def test_readme_python_blocks_run_as_written(node_factory: Any, capsys: pytest.CaptureFixture[str]) -> None:
    a, b = node_factory("a"), node_factory("b")
    namespace: dict[str, Any] = {"__name__": "readme"}
    try:
        for i, block in enumerate(python_blocks()):
            code = block.replace("http://10.0.0.1:8080", a.url).replace("http://10.0.0.2:8080", b.url)
            assert "10.0.0." not in code, f"block {i} names an address the test does not serve"
            exec(compile(code, f"README.md block {i}", "exec"), namespace)
        out = capsys.readouterr().out
        # what the blocks say they print
        assert "failure_threshold='3': must be an integer, not a string" in out
        assert "{'cached': False, 'results': ['fresh']}" in out
        assert "Level3 10.0" in out
        assert "200 a" in out
        assert "[('node-marked-unhealthy', 'passive'), ('node-recovered', 'ejection-expired')]" in out
        assert namespace["body"] and namespace["result"]
        # the documented error handler answers a JSON 502 once no node answers
        b.stop()
        r = namespace["api"].test_client().get("/orders")
        assert r.status_code == 502 and r.json["tried"] == [{"node": "a", "error": "ConnectionError"}]
        # AlertRules as documented fires: the reference is kept, and so is the receiver
        gc.collect()
        namespace["degradation"].force_level("Level3")
        assert "ALERT degradation" in capsys.readouterr().out
    finally:
        testing.stop_all_workers()
        degradation = namespace.get("degradation")
        if degradation is not None:
            degradation.stop()
        alerts = namespace.get("alerts")
        if alerts is not None:
            alerts.close()
