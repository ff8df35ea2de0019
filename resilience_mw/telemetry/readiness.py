"""The readiness document: the IETF health-check draft (``application/health+json``).

Pure: built from the degradation manager's figures and the node pool's snapshot, so a
plain WSGI app can serve it as well as the Flask extension does. Node endpoints appear
with credentials redacted.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

from ..degradation.manager import AutoDegradationManager
from ..failover.loop import FailoverManager
from ..model import DegradationLevel, parse_level

__all__ = ["readiness_document"]


def readiness_document(
    degradation: AutoDegradationManager,
    failover: FailoverManager | None,
    shed_level: DegradationLevel | str | None,
    *,
    state: Mapping[str, Any] | None = None,
) -> tuple[dict[str, Any], int]:
    """The readiness document and its HTTP status (200 for pass/warn, 503 for fail).

    ``pass`` at Normal with every node healthy; ``warn`` when degraded or a node is down
    (still ready: taking the instance out would not help its dependencies); ``fail`` when
    the load level (the queueing delay, a forced level; CPU and memory only with
    ``resources_shed``, the error rate only with ``errors_shed``) is at ``shed_level`` or
    above, so a load balancer routes away. The document carries the cause of the level,
    why it sheds or does not (``figures.cause.sheds``, and in ``output``), whose CPU the
    CPU check shows, and the cooldown. ``state`` is the shared
    store's status (:meth:`~resilience_mw.fleet.sync.StateSync.status`): a store that does not
    answer, a value in it that does not decode, or another service in its namespace makes
    it ``warn`` with the reason, never ``fail`` (the worker serves on local state).
    """
    level = degradation.current_level()
    figures = degradation.figures()
    nodes = failover.snapshot() if failover is not None else []
    # Only the process's own overload (or a forced level) fails readiness: a dependency
    # outage raises the error rate on every replica, and pulling them all helps no one.
    if shed_level is not None and degradation.load_level >= parse_level(shed_level, "shed_level"):
        status = "fail"
    elif (
        level > DegradationLevel.Normal
        or any(not n["healthy"] for n in nodes)
        or (state is not None and state["status"] != "pass")
    ):
        status = "warn"
    else:
        status = "pass"
    now = datetime.now(timezone.utc).isoformat()

    def measure(value: Any, unit: str, component_type: str = "system") -> list[dict[str, Any]]:
        return [
            {
                "componentType": component_type,
                "observedValue": value,
                "observedUnit": unit,
                "status": status,
                "time": now,
            }
        ]

    checks: dict[str, Any] = {
        "degradation:level": [
            {"componentType": "system", "observedValue": level.name, "status": status, "time": now}
        ],
        "cpu:utilization": [
            {**measure(figures["cpu"], "percent")[0], "output": f"CPU of {figures.get('cpu_source', 'this process')}"}
        ],
        "memory:utilization": measure(figures["memory"], "percent"),
        "requests:errorRate": measure(figures["error_rate"], "ratio"),
    }
    if nodes:
        checks["upstream:responseTime"] = [
            {
                "componentId": n["id"],
                "componentType": "component",
                "observedValue": None if n["latency"] is None else round(n["latency"] * 1000, 3),
                "observedUnit": "ms",
                "status": "pass" if n["healthy"] else "fail",
                # why it is out: passive, active, retry-after, manual, shared, success-rate,
                # failure-percentage, latency
                **({} if n["healthy"] else {"output": f"{n['state']} ({n['down_reason']})"}),
                "links": {"self": n["endpoint"]},
                "priority": n["priority"],
                "time": now,
            }
            for n in nodes
        ]
    if state is not None:
        checks["state:store"] = [
            {
                "componentType": "datastore",
                "componentId": state["scope"],
                "observedValue": state["outage_seconds"],
                "observedUnit": "s",
                "status": state["status"],
                "output": state.get("reason") or state["last_error"],
                "time": now,
            }
        ]
    doc: dict[str, Any] = {
        "status": status,
        "level": level.name,
        "figures": figures,
        "checks": checks,
    }
    if status != "pass":
        down = [f"{n['id']} ({n['down_reason']})" for n in nodes if not n["healthy"]]
        sheds = figures["cause"].get("sheds")
        doc["output"] = (
            f"degradation level {level.name}"
            + (f" ({sheds})" if sheds else "")
            + (f"; nodes down: {', '.join(down)}" if down else "")
            + (
                f"; state store: {state.get('reason') or 'not answering: local state only'}"
                if state is not None and state["status"] != "pass"
                else ""
            )
        )
    return doc, 503 if status == "fail" else 200
