"""``python -m demo_app --scenario``: the complete example (完整示例) of the design this library ports, with real nodes.

Each step prints what happened and whether it matched what the ported design's rules say;
the exit status is 0 only if every step matched.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import requests

from resilience_mw import (
    AutoDegradationManager,
    DegradationConfig,
    DegradationLevel,
    FailoverManager,
    FailoverStrategy,
    Feature,
    GracefulDegradation,
    HealthChecker,
    ServiceBackup,
    ServiceNode,
)

from .cluster import Cluster


class Checks:
    def __init__(self) -> None:
        self.results: list[tuple[str, bool]] = []

    def check(self, label: str, ok: bool, detail: str) -> None:
        self.results.append((label, ok))
        print(f"  {'✓' if ok else '✗'} {detail}", flush=True)

    @property
    def all_ok(self) -> bool:
        return all(ok for _, ok in self.results)


def call_node(http: requests.Session) -> Callable[[ServiceNode], str]:
    """The ported design's ``simulate_service_call``, as a real HTTP call to the node."""

    def call(node: ServiceNode) -> str:
        resp = http.get(f"{node.endpoint}/api/items", timeout=(0.5, 1.0))
        resp.raise_for_status()
        return f"Success from {resp.json()['node']}"

    return call


def step_failover(cluster: Cluster, http: requests.Session, c: Checks) -> None:
    print("Test 1: failover", flush=True)
    manager = FailoverManager(cluster.service_nodes, FailoverStrategy.Priority)
    cluster["primary"].control("error")  # the primary now answers 500
    for _ in range(manager.config.failure_threshold):  # 5 (the design's 3: see docs/guide/origin.rst)
        manager.mark_failure("primary")
    node = manager.get_available_node()
    c.check(
        "select",
        node is not None and node.id == "secondary",
        f"selected node: {node.id if node else None} (priority {node.priority if node else '-'})",
    )
    result = manager.execute_with_failover(call_node(http))
    c.check("execute", result == "Success from secondary", result)


def step_degradation(cluster: Cluster, http: requests.Session, c: Checks) -> AutoDegradationManager:
    print("Test 2: automatic degradation", flush=True)
    degradation = AutoDegradationManager(DegradationConfig())
    degradation.start(check_interval=1.0)
    primary, secondary = cluster["primary"], cluster["secondary"]
    for i in range(20):  # every third request fails (the primary answers 500)
        target = primary if i % 3 == 0 else secondary
        resp = http.get(f"{target.url}/api/items", timeout=(0.5, 1.0))
        degradation.record_request(resp.status_code < 500)
    time.sleep(1.5)
    level = degradation.current_level()
    f = degradation.figures()
    # 7 of 20 failed = 35 %: at least 2 x the 10 % threshold, below the 4 x of Emergency.
    # CPU or memory can only push the level higher (a loaded machine may be at Emergency).
    by_errors = degradation.config.error_level(f["error_rate"], f["requests"])
    c.check(
        "error rule",
        by_errors == DegradationLevel.Level3,
        f"error rate {f['error_rate']:.0%} of {f['requests']} requests -> {by_errors.name} by the ported design's rules",
    )
    c.check(
        "level",
        level >= by_errors,
        f"current level: {level.name} (cpu {f['cpu']:.0f}%, memory {f['memory']:.0f}%)",
    )
    expected = {
        Feature.CoreFunction: True,
        Feature.Analytics: False,
        Feature.DetailedLogs: False,
        Feature.Caching: False,
        Feature.NonEssential: False,
    }
    print("  feature availability:", flush=True)
    for feat, want in expected.items():
        got = degradation.is_feature_available(feat)
        c.check(f"feature {feat.name}", got == want, f"  {feat.name}: {'✓' if got else '✗'}")
    return degradation


def step_graceful(degradation: AutoDegradationManager, c: Checks) -> None:
    print("Test 3: graceful degradation", flush=True)
    graceful = GracefulDegradation(degradation, fallback_on_error_at="Level2")  # the ported design's rule
    called: list[str] = []

    def primary() -> str:
        called.append("primary")
        raise RuntimeError("Primary operation failed")

    result = graceful.execute(primary, lambda: "Fallback result")
    c.check(
        "graceful",
        result == "Fallback result" and not called,
        f"{result} (primary {'called' if called else 'skipped at ' + degradation.current_level().name})",
    )
    degradation.stop()


def step_backup(cluster: Cluster, http: requests.Session, c: Checks) -> None:
    print("Test 4: three-tier service backup", flush=True)
    backup = ServiceBackup(*cluster.service_nodes)
    result = backup.execute(call_node(http))
    c.check("backup", result == "Success from secondary", result)
    cluster["primary"].control("ok")


def step_health(cluster: Cluster, c: Checks) -> None:
    print("Test 5: health checks", flush=True)
    interval, timeout, threshold = 0.5, 0.5, 2
    manager = FailoverManager(cluster.service_nodes)
    checker = HealthChecker(interval, timeout, unhealthy_threshold=threshold, healthy_threshold=threshold)
    checker.start(manager)
    print(
        f"  health checker started (every {interval}s, timeout {timeout}s, threshold {threshold})", flush=True
    )
    bound = interval * (1 + checker.config.jitter) * threshold + timeout
    try:
        time.sleep(interval * 2)
        healthy = [n.id for n in manager.healthy_nodes()]
        c.check("all healthy", len(healthy) == 3, f"healthy: {', '.join(healthy)}")
        t0 = time.monotonic()
        cluster["tertiary"].kill()
        while manager.is_healthy("tertiary") and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        took = time.monotonic() - t0
        c.check(
            "detect down",
            not manager.is_healthy("tertiary") and took <= bound + 0.2,
            f"killed tertiary: marked unhealthy after {took:.2f}s (bound {bound:.2f}s)",
        )
        t0 = time.monotonic()
        cluster["tertiary"].start()
        while not manager.is_healthy("tertiary") and time.monotonic() - t0 < 10:
            time.sleep(0.01)
        took = time.monotonic() - t0
        c.check(
            "detect up",
            manager.is_healthy("tertiary") and took <= bound + 0.2,
            f"revived tertiary: healthy again after {took:.2f}s (bound {bound:.2f}s)",
        )
    finally:
        checker.close()


def run_scenario() -> int:
    print("=== resilience_mw: failover and degradation demo (the ported design's complete example) ===\n", flush=True)
    checks = Checks()
    with Cluster() as cluster, requests.Session() as http:
        http.trust_env = False
        for node in cluster.nodes.values():
            print(f"node {node.node_id:<9} priority {node.priority:<3} {node.url}", flush=True)
        print(flush=True)
        step_failover(cluster, http, checks)
        degradation = step_degradation(cluster, http, checks)
        step_graceful(degradation, checks)
        step_backup(cluster, http, checks)
        step_health(cluster, checks)
    failed = [label for label, ok in checks.results if not ok]
    if failed:
        print(f"\n✗ {len(failed)} step(s) did not match: {', '.join(failed)}", flush=True)
        return 1
    print(f"\n✅ all {len(checks.results)} checks matched", flush=True)
    return 0
