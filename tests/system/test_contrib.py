"""What ships in contrib/: the Prometheus alert rules pass promtool (Debian's
``prometheus`` package; scripts/system-deps installs it) and their unit tests
(contrib/prometheus/alerts_test.yml: every alert, firing and quiet), and every query of
the rules and of the Grafana dashboard names a metric the library exports."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

from resilience_mw.telemetry.metrics import METRICS

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
    assert "SUCCESS: 6 rules found" in done.stdout


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
    assert len(names) == 6, names
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
