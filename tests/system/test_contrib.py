"""What ships in contrib/: the Prometheus alert rules pass promtool (Debian's
``prometheus`` package; scripts/system-deps installs it) and their unit tests
(contrib/prometheus/alerts_test.yml: every alert, firing and quiet), and every query of
the rules and of the Grafana dashboard names a metric the library exports."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import requests

from resilience_mw.telemetry.metrics import METRICS
from tests.helpers import stop_process, wait_for
from tests.nodes import NodeServer, free_port

CONTRIB = Path(__file__).resolve().parents[2] / "contrib"
NAME = re.compile(r"\bresilience_(?!mw\b)[a-z_]+")  # metric names; not the group or package name


def exported(name: str) -> bool:
    kind = {n: spec[0] for n, spec in METRICS.items()}
    if name in kind:
        return True
    base = re.sub(r"_(bucket|sum|count)$", "", name)
    return kind.get(base) == "histogram"


def test_promtool_accepts_the_alert_rules() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing (apt-get install prometheus; scripts/system-deps does)"
    done = subprocess.run([promtool, "check", "rules", str(CONTRIB / "prometheus" / "alerts.yml")],
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 8 rules found" in done.stdout


def alert_names() -> list[str]:
    """The alerts alerts.yml defines."""
    return re.findall(r"^\s*- alert: (\w+)\s*$", (CONTRIB / "prometheus" / "alerts.yml").read_text(), re.M)


def test_promtool_unit_tests_pass_and_cover_every_alert_firing_and_quiet() -> None:
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing (apt-get install prometheus; scripts/system-deps does)"
    tests = CONTRIB / "prometheus" / "alerts_test.yml"
    done = subprocess.run([promtool, "test", "rules", str(tests)], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0 and "SUCCESS" in done.stdout, done.stdout + done.stderr
    # each alertname of an alert_rule_test, and whether it expects alerts (firing) or none (quiet)
    firing, quiet, current = set(), set(), None
    for line in tests.read_text().splitlines():
        if m := re.match(r"\s*alertname: (\w+)\s*$", line):
            current = m[1]
        elif re.match(r"\s*exp_alerts: \[\]\s*$", line):
            quiet.add(current)
        elif re.match(r"\s*- exp_labels:", line):
            firing.add(current)
    names = alert_names()
    assert len(names) == 8, names
    assert set(names) <= firing, f"no test where these fire: {sorted(set(names) - firing)}"
    assert set(names) <= quiet, f"no test where these stay quiet: {sorted(set(names) - quiet)}"


def test_every_rule_names_an_exported_metric() -> None:
    names = set(NAME.findall((CONTRIB / "prometheus" / "alerts.yml").read_text()))
    assert names and all(exported(n) for n in names), sorted(n for n in names if not exported(n))


def test_every_dashboard_query_names_an_exported_metric_and_every_metric_is_shown() -> None:
    dash = json.loads((CONTRIB / "grafana" / "resilience_mw.json").read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    names = {n for e in exprs for n in NAME.findall(e)}
    assert all(NAME.search(e) for e in exprs)
    assert all(exported(n) for n in names), sorted(n for n in names if not exported(n))
    shown = {re.sub(r"_(bucket|sum|count)$", "", n) for n in names}
    assert shown == set(METRICS)


#: what every metric of every dashboard query is filtered on
DASHBOARD_FILTER = '{job=~"$job", instance=~"$instance"}'


def test_the_dashboard_has_job_and_instance_variables_and_every_query_filters_on_both(tmp_path: Path) -> None:
    dash = json.loads((CONTRIB / "grafana" / "resilience_mw.json").read_text())
    variables = {v["name"]: v for v in dash["templating"]["list"]}
    for name in ("job", "instance"):
        var = variables[name]
        assert var["type"] == "query" and var["datasource"]["uid"] == "${datasource}", var
        assert var["includeAll"] and var["multi"] and var["allValue"] == ".*", var
        assert re.fullmatch(rf"label_values\(resilience_\w+(\{{.*\}})?, {name}\)", var["query"]), var["query"]
    assert '$job' in variables["instance"]["query"]  # the instances of the chosen jobs
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    for expr in exprs:
        # every metric name is followed by the filter (services on one Prometheus apart)
        for m in NAME.finditer(expr):
            assert expr[m.end():].startswith(DASHBOARD_FILTER), f"{m[0]} unfiltered in {expr}"
    # and each query is valid PromQL with the variables at "All": promtool checks them as rules
    promtool = shutil.which("promtool")
    assert promtool is not None, "promtool is missing (apt-get install prometheus; scripts/system-deps does)"
    rules = {"groups": [{"name": "dashboard", "rules": [
        {"record": f"dashboard:query{i}", "expr": e.replace("$job", ".*").replace("$instance", ".*")}
        for i, e in enumerate(exprs)]}]}
    (tmp_path / "dashboard.yml").write_text(json.dumps(rules))  # JSON is YAML
    done = subprocess.run([promtool, "check", "rules", str(tmp_path / "dashboard.yml")], capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 0 and f"SUCCESS: {len(exprs)} rules found" in done.stdout, done.stdout + done.stderr


LOG_LINE = re.compile(
    r"(?P<time>\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d[+-]\d{4}) (?P<level>[A-Z]+) (?P<logger>[\w.]+) \[(?P<pid>\d+)\] "
    r"(?P<message>.+)"
)


@pytest.mark.slow
def test_under_the_shipped_gunicorn_config_a_library_warning_has_time_level_logger_and_pid(tmp_path: Path) -> None:
    live = NodeServer("live").start()
    dead = f"http://127.0.0.1:{free_port()}"  # nothing listens: every call to it fails over
    env = {
        **os.environ,
        "RESILIENCE_NODES": json.dumps([{"id": "n1", "endpoint": dead, "priority": 10},
                                        {"id": "n2", "endpoint": live.url, "priority": 1}]),
        "RESILIENCE_HEALTH_CHECK": "false",
        "RESILIENCE_ALERTS": "false",
        "PROMETHEUS_MULTIPROC_DIR": str(tmp_path),
        "PYTHONWARNINGS": "ignore::DeprecationWarning",
    }
    port = free_port()
    stderr = (tmp_path / "stderr.log").open("w")
    proc = subprocess.Popen(
        [str(Path(sys.executable).parent / "gunicorn"), "-c", str(CONTRIB / "gunicorn" / "gunicorn.conf.py"),
         "-w", "2", "-b", f"127.0.0.1:{port}", "tests.apps.env_app:application"],
        cwd=CONTRIB.parent, stdout=subprocess.DEVNULL, stderr=stderr, env=env,
    )
    try:
        def call() -> dict[str, Any] | None:
            try:
                doc: dict[str, Any] = requests.get(f"http://127.0.0.1:{port}/call", timeout=5,
                                                   headers={"Connection": "close"}).json()
            except requests.RequestException:
                return None
            return doc

        assert wait_for(lambda: call() is not None, 30), "gunicorn did not answer"
        answered = call()
        assert answered is not None and answered["status"] == 200
        started = time.time()

        def logged() -> list[re.Match[str]]:
            lines = (tmp_path / "stderr.log").read_text().splitlines()
            return [m for line in lines if (m := LOG_LINE.fullmatch(line)) and m["logger"].startswith("resilience_mw")]

        assert wait_for(lambda: any(m["pid"] == str(answered["pid"]) for m in logged()), 5), (
            (tmp_path / "stderr.log").read_text()[-3000:])
    finally:
        stop_process(proc, timeout=15)
        stderr.close()
        live.stop()
    line = next(m for m in logged() if m["pid"] == str(answered["pid"]))
    assert line["level"] == "WARNING" and line["logger"] == "resilience_mw.failover.loop"
    assert abs(datetime.strptime(line["time"], "%Y-%m-%dT%H:%M:%S%z").timestamp() - started) < 60
    assert re.fullmatch(r"GET /call \(upstream GET /work\): failover from n1 to n2: \w+ \(\d+\.\d\d s\)",
                        line["message"]), line["message"]
    # gunicorn's own lines keep their format (--log-level, --error-logfile still apply)
    assert "[INFO] Booting worker with pid" in (tmp_path / "stderr.log").read_text()
