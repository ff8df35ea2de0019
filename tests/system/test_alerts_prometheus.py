"""ResilienceNoHealthyNode in a real Prometheus (Debian's ``prometheus``, started here on
127.0.0.1 with a generated config): it scrapes a real gunicorn with 4 workers in
prometheus_client's multiprocess mode, loads contrib/prometheus/alerts.yml, and the
alert fires once both upstream nodes are killed.

``for:``: the shipped rule waits 1 minute. The test loads a copy of alerts.yml in which
that one ``for:`` is 3 s (the expression, labels, annotations and every other rule are
the file's own, checked line by line), with scrape and evaluation every second; it
then expects the alert firing within that ``for`` plus two scrape intervals of the
gauge saying every node is down (and 1 s for this test's own polling).

No shared store: each worker runs its own health checks and marks both nodes down by
itself (every worker agreeing through the store is the state sync's to test).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import stop_process, wait_for
from tests.nodes import NodeServer, free_port

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "contrib" / "prometheus" / "alerts.yml"
CONF = ROOT / "contrib" / "gunicorn" / "gunicorn.conf.py"
GUNICORN = Path(sys.executable).parent / "gunicorn"
WORKERS = 4
SCRAPE = 1.0  # scrape and rule evaluation interval, seconds
FOR = 3.0  # ResilienceNoHealthyNode's for: in the test copy, seconds
CHECK_INTERVAL, UNHEALTHY_THRESHOLD, CHECK_TIMEOUT = 0.5, 2, 0.5


def rules_with_a_short_for(alert: str, seconds: float) -> str:
    """alerts.yml with ``alert``'s ``for:`` set to ``seconds``; nothing else changed."""
    lines = ALERTS.read_text().splitlines(keepends=True)
    start = next(i for i, line in enumerate(lines) if line.strip() == f"- alert: {alert}")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip().startswith("- alert:")), len(lines))
    at = next(i for i in range(start, end) if lines[i].strip().startswith("for:"))
    indent = lines[at][: len(lines[at]) - len(lines[at].lstrip())]
    copy = [*lines[:at], f"{indent}for: {seconds:g}s\n", *lines[at + 1 :]]
    assert [line for i, line in enumerate(copy) if i != at] == [line for i, line in enumerate(lines) if i != at]
    return "".join(copy)


@contextlib.contextmanager
def prometheus(tmp_path: Path, target: str) -> Iterator[str]:
    """A Prometheus server on 127.0.0.1 scraping ``target`` (job ``shop``) every
    second with the test's rules; yields its base URL; stopped at the end."""
    binary = shutil.which("prometheus")
    assert binary is not None, "prometheus is missing (apt-get install prometheus; scripts/system-deps does)"
    (tmp_path / "rules.yml").write_text(rules_with_a_short_for("ResilienceNoHealthyNode", FOR))
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run([promtool, "check", "rules", str(tmp_path / "rules.yml")], capture_output=True,
                                 text=True, timeout=60, check=False)
        assert checked.returncode == 0, checked.stdout + checked.stderr
    config = {  # JSON is YAML
        "global": {"scrape_interval": f"{SCRAPE:g}s", "scrape_timeout": f"{SCRAPE:g}s",
                   "evaluation_interval": f"{SCRAPE:g}s"},
        "rule_files": [str(tmp_path / "rules.yml")],
        "scrape_configs": [{"job_name": "shop", "static_configs": [{"targets": [target]}]}],
    }
    (tmp_path / "prometheus.yml").write_text(json.dumps(config))
    port = free_port()
    log = (tmp_path / "prometheus.log").open("w")
    proc = subprocess.Popen(
        [binary, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _ok(url + "/-/ready"), 30), (tmp_path / "prometheus.log").read_text()[-2000:]
        yield url
    finally:
        stop_process(proc, timeout=10)
        log.close()


def _ok(url: str) -> bool:
    try:
        return requests.get(url, timeout=2).status_code == 200
    except requests.RequestException:
        return False


def alerts(prom: str, name: str) -> list[dict[str, Any]]:
    found = requests.get(prom + "/api/v1/alerts", timeout=5).json()["data"]["alerts"]
    return [a for a in found if a["labels"]["alertname"] == name]


def query(prom: str, promql: str) -> list[dict[str, Any]]:
    result: list[dict[str, Any]] = requests.get(prom + "/api/v1/query", params={"query": promql},
                                                timeout=5).json()["data"]["result"]
    return result


def node_states(app: str) -> dict[tuple[str, str], float]:
    text = requests.get(app + "/metrics", headers={"Connection": "close"}, timeout=5).text
    found = [s for f in text_string_to_metric_families(text) if f.name == "resilience_node_state" for s in f.samples]
    return {(s.labels["node"], s.labels["state"]): s.value for s in found}


def everything_down(states: dict[tuple[str, str], float]) -> bool:
    nodes = {node for node, _ in states}
    return bool(nodes) and all(states.get((n, "down")) == 1 and sum(
        v for (node, _), v in states.items() if node == n) == 1 for n in nodes)


def test_no_healthy_node_fires_in_a_real_prometheus_once_both_upstreams_die(tmp_path: Path) -> None:
    a, b = NodeServer("a").start(), NodeServer("b").start()
    prom_dir = tmp_path / "multiproc"
    prom_dir.mkdir()
    env = {
        **os.environ,
        "RESILIENCE_NODES": json.dumps([{"id": "n1", "endpoint": a.url}, {"id": "n2", "endpoint": b.url}]),
        "RESILIENCE_HEALTH_CHECK_INTERVAL": str(CHECK_INTERVAL),
        "RESILIENCE_HEALTH_CHECK_UNHEALTHY_THRESHOLD": str(UNHEALTHY_THRESHOLD),
        "RESILIENCE_HEALTH_CHECK_TIMEOUT": str(CHECK_TIMEOUT),
        "RESILIENCE_START": "eager",  # every worker checks from its start, scraped or not
        "RESILIENCE_METRICS_PATH": "/metrics",
        "RESILIENCE_ALERTS": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    port = free_port()
    app = f"http://127.0.0.1:{port}"
    gunicorn = subprocess.Popen(
        [str(GUNICORN), "-c", str(CONF), "-w", str(WORKERS), "-b", f"127.0.0.1:{port}",
         "tests.apps.env_app:application"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    try:
        assert wait_for(lambda: _ok(app + "/"), 30), "gunicorn did not answer"
        with prometheus(tmp_path, f"127.0.0.1:{port}") as prom:
            # scraped, both nodes healthy, nothing pending
            assert wait_for(lambda: len(query(prom, 'resilience_node_state{job="shop", state="healthy"} == 1')) == 2,
                            20), query(prom, "resilience_node_state")
            assert alerts(prom, "ResilienceNoHealthyNode") == []

            a.stop()
            b.stop()
            killed = time.monotonic()
            # every worker marks both nodes down by itself (its own health checks) ...
            pids: dict[int, dict[str, str]] = {}

            def all_down() -> bool:
                with contextlib.suppress(requests.RequestException):
                    seen = requests.get(app + "/whoami", headers={"Connection": "close"}, timeout=5).json()
                    pids[seen["pid"]] = seen["nodes"]
                return len(pids) == WORKERS and all(set(n.values()) == {"down"} for n in pids.values())

            detection = UNHEALTHY_THRESHOLD * CHECK_INTERVAL * 1.1 + CHECK_TIMEOUT + 2 * CHECK_INTERVAL
            assert wait_for(all_down, detection + 5), pids
            # ... and the scrape says so: one series per node and state, each node down
            assert wait_for(lambda: everything_down(node_states(app)), 5), node_states(app)
            down = time.monotonic()
            assert down - killed <= detection + 2, f"nodes down only {down - killed:.1f} s after the kill"

            def firing() -> bool:
                return any(x["state"] == "firing" for x in alerts(prom, "ResilienceNoHealthyNode"))

            assert wait_for(firing, FOR + 2 * SCRAPE + 1.0), (
                f"not firing {time.monotonic() - down:.1f} s after every node was down: "
                f"{alerts(prom, 'ResilienceNoHealthyNode')}"
            )
            fired = alerts(prom, "ResilienceNoHealthyNode")
            assert [x["labels"]["instance"] for x in fired] == [f"127.0.0.1:{port}"] and fired[0]["labels"]["job"] == "shop"
            assert fired[0]["labels"]["severity"] == "critical"
            # what Prometheus stored: one series per node and state (no pid), down for both
            counts = query(prom, 'count by (node, state) (resilience_node_state{job="shop"})')
            assert counts and all(float(r["value"][1]) == 1 for r in counts), counts
            assert sorted(r["metric"]["node"] for r in query(prom, 'resilience_node_state{state="down"} == 1')) == [
                "n1", "n2"]
    finally:
        stop_process(gunicorn, timeout=15)
        a.stop()
        b.stop()
