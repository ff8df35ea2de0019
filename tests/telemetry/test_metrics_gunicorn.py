"""Prometheus metrics under a real gunicorn in multiprocess mode: one scrape gives what a
scripted sequence caused, summed over the workers, and counters never go back when
workers are recycled."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.fleet.test_state_gunicorn import Gunicorn
from tests.helpers import stop_process, wait_for
from tests.nodes import NodeServer, free_port

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
CONF = str(ROOT / "contrib" / "gunicorn" / "gunicorn.conf.py")
GUNICORN = Path(sys.executable).parent / "gunicorn"


def scrape(g: Gunicorn) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = requests.get(g.url + "/metrics", headers={"Connection": "close"}, timeout=5).text
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def test_one_scrape_counts_what_the_script_did_over_both_workers(tmp_path: Path) -> None:
    a, b = NodeServer("a").start(), NodeServer("b").start()
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    env = {
        "STATE_URL": f"sqlite://{tmp_path}/state.db",
        "NODES": f"a={a.url},b={b.url}",
        "METRICS_PATH": "/metrics",
        "SHED_LEVEL": "Level3",
        "SYNC_INTERVAL": "0.2",
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
    }
    g = Gunicorn(env, workers=2, args=("-c", CONF))
    try:
        a.stop()  # kill a node
        assert g.get("/call").json()["status"] == 200  # one worker fails over a -> b
        g.admin("PUT", {"level": "Level3"})  # force a level (every worker, through the store)
        g.wait_for(lambda seen: len(seen) == 2 and all(s["level"] == "Level3" for s in seen.values()), 3)
        shed = [g.get("/").status_code for _ in range(10)]  # shed 10 requests
        assert shed == [503] * 10
        time.sleep(0.5)  # the other worker has heard of node a (a shared hint)
        m = scrape(g)
    finally:
        g.stop()
        b.stop()
    assert value(m, "resilience_requests_shed_total", reason="level", enforced="true") == 10
    assert value(m, "resilience_failovers_total", from_node="a", to_node="b") == 1
    assert value(m, "resilience_adapter_attempts_total", node="a", outcome="failure") == 1
    assert value(m, "resilience_adapter_attempts_total", node="b", outcome="success") == 1
    assert value(m, "resilience_node_ejections_total", node="a", reason="passive") == 1
    assert value(m, "resilience_node_ejections_total", node="a", reason="shared") == 1
    assert value(m, "resilience_degradation_transitions_total", **{"from": "Normal", "to": "Level3", "cause": "forced"}) == 2
    assert value(m, "resilience_degradation_level") == 3
    assert value(m, "resilience_feature_enabled", feature="CoreFunction") == 1
    assert value(m, "resilience_feature_enabled", feature="Analytics") == 0
    assert value(m, "resilience_node_state", node="b", state="healthy") == 1


def test_counters_stay_monotonic_while_workers_are_recycled(tmp_path: Path) -> None:
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    env = {
        "STATE_URL": f"sqlite://{tmp_path}/state.db",
        "METRICS_PATH": "/metrics",
        "SHED_LEVEL": "Level1",
        "SYNC_INTERVAL": "0.2",
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
    }
    g = Gunicorn(env, workers=2, args=("-c", CONF, "--max-requests", "15"))
    try:
        g.admin("PUT", {"level": "Level1"})
        time.sleep(0.6)
        seen, sent, pids = [], 0, set()
        for _ in range(6):
            for _ in range(10):
                r = g.get("/")
                sent += r.status_code == 503
            for _ in range(4):
                pids.add(g.get("/whoami").json()["pid"])
            seen.append(value(scrape(g), "resilience_requests_shed_total", reason="level", enforced="true"))
    finally:
        g.stop()
    assert len(pids) > 2, "no worker was recycled"
    assert seen == sorted(seen) and seen[-1] == sent, (seen, sent)


def test_node_state_is_one_answer_per_node_the_latest_verdict_of_any_worker(tmp_path: Path) -> None:
    # Four workers disagree about a node (one marked it down, three still have it healthy
    # from startup): the scrape gives one series per node and state, with the latest
    # verdict, not healthy=1 and down=1 side by side (the worst of each, which hid an
    # outage from ResilienceNoHealthyNode).
    prom_dir = tmp_path / "prom"
    prom_dir.mkdir()
    nodes = [{"id": "n1", "endpoint": "http://127.0.0.1:9"}, {"id": "n2", "endpoint": "http://127.0.0.1:9"}]
    env = {
        **os.environ,
        "RESILIENCE_NODES": json.dumps(nodes),
        "RESILIENCE_HEALTH_CHECK": "false",
        "RESILIENCE_METRICS_PATH": "/metrics",
        "RESILIENCE_ALERTS": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(prom_dir),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    port = free_port()
    proc = subprocess.Popen(
        [str(GUNICORN), "-c", CONF, "-w", "4", "-b", f"127.0.0.1:{port}", "tests.apps.env_app:application"],
        cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    url = f"http://127.0.0.1:{port}"

    def get(path: str) -> dict[str, Any]:
        doc: dict[str, Any] = requests.get(url + path, headers={"Connection": "close"}, timeout=5).json()
        return doc

    def node_series(text: str) -> dict[tuple[str, str], float]:
        found = [s for f in text_string_to_metric_families(text) if f.name == "resilience_node_state" for s in f.samples]
        assert all(set(s.labels) == {"node", "state"} for s in found), found  # no pid label
        series = {(s.labels["node"], s.labels["state"]): s.value for s in found}
        assert len(series) == len(found), "more than one series for a node and state"
        return series

    try:
        pids: set[int] = set()
        assert wait_for(lambda: _seen_all(get, pids, 4), 30), f"not every worker answered: {pids}"
        marked = get("/mark?node=n1&healthy=0")  # down in one worker only
        assert marked["state"] == "down"
        others = [get("/whoami") for _ in range(20)]
        assert any(w["nodes"]["n1"] == "healthy" for w in others), "no worker still has n1 healthy"
        series = node_series(requests.get(url + "/metrics", timeout=5).text)
        assert series[("n1", "down")] == 1 and series[("n1", "healthy")] == 0, series
        assert sum(v for (node, _), v in series.items() if node == "n1") == 1  # one state per node
        assert series[("n2", "healthy")] == 1 and series[("n2", "down")] == 0
        # back up in the worker that had it down (a worker that had it healthy all along
        # changes nothing, so writes nothing): the latest change again
        assert wait_for(lambda: get("/mark?node=n1&healthy=1")["pid"] == marked["pid"], 10)
        series = node_series(requests.get(url + "/metrics", timeout=5).text)
        assert series[("n1", "down")] == 0 and sum(v for (node, _), v in series.items() if node == "n1") == 1, series
    finally:
        stop_process(proc, timeout=15)


def _seen_all(get: Any, pids: set[int], workers: int) -> bool:
    try:
        pids.add(get("/whoami")["pid"])
    except requests.RequestException:
        return False
    return len(pids) == workers
