"""The demo Flask app: resilience_mw in front of three real upstream nodes.

Everything a user meets is here: the :class:`Resilience` extension (degradation,
health checks, readiness, shedding), ``@feature`` and ``@with_fallback`` on views, a
:class:`FailoverAdapter` session to the nodes sharing the extension's node health, and
a dashboard at ``/`` fed by the library's signals.
"""

from __future__ import annotations

import collections
import contextlib
import hmac
import secrets
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import requests
from flask import Flask, Response, abort, jsonify, render_template, request

from resilience_mw import DegradationLevel, Feature, signals
from resilience_mw._worker import BackgroundWorker
from resilience_mw.adapter import FailoverAdapter
from resilience_mw.decorators import feature, with_fallback
from resilience_mw.flask_ext import Resilience
from resilience_mw.runtime import Runtime

from . import favicon
from .cluster import Cluster

UPSTREAM = "http://upstream"
#: the demo's own traffic stops by itself after this many requests or seconds
TRAFFIC_MAX_REQUESTS = 50_000
TRAFFIC_MAX_SECONDS = 3600.0


class Demo:
    """What the dashboard shows: events, history, traffic, per-node served counts."""

    def __init__(self, state: Runtime, cluster: Cluster, token: str) -> None:
        assert state.failover is not None
        self.state = state
        self.cluster = cluster
        self.token = token
        self.base_url = ""  # set when the server is bound
        self.lock = threading.Lock()
        self.events: collections.deque[dict[str, Any]] = collections.deque(maxlen=200)
        self.history: collections.deque[dict[str, Any]] = collections.deque(maxlen=120)
        self.served: collections.Counter[str] = collections.Counter()
        #: the demo's own requests: answered (``ok``), refused by the library with 503 and
        #: Retry-After (``shed``: it keeps the service up), or failed (an error or no answer)
        self.traffic = {"sent": 0, "ok": 0, "shed": 0, "failed": 0}
        self.session = requests.Session()
        self.session.mount(f"{UPSTREAM}/", FailoverAdapter(state.failover, default_timeout=(0.5, 1.0)))
        self._started = time.monotonic()
        self._http = requests.Session()  # the demo's own client traffic, to its own URL
        self.history_worker = BackgroundWorker("demo-history", self._sample, 1.0)
        self.traffic_worker = BackgroundWorker("demo-traffic", self._traffic_tick, 0.2)
        self._receivers: list[Callable[..., None]] = []
        self._burners: list[subprocess.Popen[bytes]] = []
        self._subscribe()

    # ------------------------------------------------------------- signals

    def _event(self, kind: str, text: str) -> None:
        with self.lock:
            self.events.appendleft({"t": time.time(), "kind": kind, "text": text})

    def _subscribe(self) -> None:
        failover = self.state.failover
        deg = self.state.degradation

        def on_failover(sender: Any, from_node: Any, to_node: Any, error: Any, **kw: Any) -> None:
            to = to_node.id if to_node else "nothing left"
            self._event("failover", f"{from_node.id} failed ({type(error).__name__}); trying {to}")

        def on_down(sender: Any, node: Any, reason: str, **kw: Any) -> None:
            self._event("node-down", f"{node.id} marked unhealthy ({reason})")

        def on_up(sender: Any, node: Any, reason: str, **kw: Any) -> None:
            self._event("node-up", f"{node.id} recovered ({reason})")

        def on_level(sender: Any, old: DegradationLevel, new: DegradationLevel, **kw: Any) -> None:
            if kw.get("forced"):
                self._event("level", f"{old.name} -> {new.name} (forced)")
                return
            cpu, mem, rate = kw.get("cpu") or 0.0, kw.get("memory") or 0.0, kw.get("error_rate") or 0.0
            self._event(
                "level", f"{old.name} -> {new.name} (cpu {cpu:.0f}%, memory {mem:.0f}%, errors {rate:.0%})"
            )

        def on_alert(sender: Any, kind: str, message: str, **kw: Any) -> None:
            self._event("alert", message)

        # blinker holds receivers weakly: keep these closures alive as long as the demo
        self._receivers = [on_failover, on_down, on_up, on_level, on_alert]
        signals.failover.connect(on_failover, sender=failover)
        signals.node_marked_unhealthy.connect(on_down, sender=failover)
        signals.node_recovered.connect(on_up, sender=failover)
        signals.level_changed.connect(on_level, sender=deg)
        signals.alert.connect(on_alert, sender=self.state.alerts)

    # ------------------------------------------------------------- workers

    def _sample(self) -> None:
        # Reap the CPU burners that finished (poll() collects the exit status: no zombies).
        self._burners = [p for p in self._burners if p.poll() is None]
        f = self.state.degradation.figures()
        with self.lock:
            self.history.append(
                {
                    "t": time.time(),
                    "cpu": f["cpu"],
                    "memory": f["memory"],
                    "error_rate": f["error_rate"],
                    "level": f["level_value"],
                }
            )

    def _traffic_tick(self) -> None:
        if not self.base_url:
            return
        if (
            self.traffic["sent"] >= TRAFFIC_MAX_REQUESTS
            or time.monotonic() - self._started > TRAFFIC_MAX_SECONDS
        ):
            self.traffic_worker.stop(0)
            return
        n = self.traffic["sent"]
        path = "/api/items" if n % 4 else f"/api/search?q=item{n}"
        try:
            outcome = traffic_outcome(self._http.get(self.base_url + path, timeout=2))
        except requests.RequestException:
            outcome = "failed"
        with self.lock:
            self.traffic["sent"] += 1
            self.traffic[outcome] += 1

    def start(self, base_url: str, traffic: bool = True) -> None:
        self.base_url = base_url
        self.history_worker.start()
        if traffic:
            self.traffic_worker.start()

    def stop(self) -> None:
        for proc in self._burners:  # they end by themselves, but not later than the demo
            if proc.poll() is None:
                proc.kill()
                proc.wait(5)
        self.traffic_worker.stop(2)
        self.history_worker.stop(2)
        self.state.stop()

    # -------------------------------------------------------------- upstream

    def upstream(self, method: str, path: str, **kw: Any) -> dict[str, Any]:
        resp = self.session.request(method, UPSTREAM + path, **kw)
        node = getattr(resp, "resilience_node", "?")
        resp.raise_for_status()
        with self.lock:
            self.served[node] += 1
        data: dict[str, Any] = resp.json()
        return data

    # ------------------------------------------------------------- status

    def status(self) -> dict[str, Any]:
        assert self.state.failover is not None
        deg = self.state.degradation
        level = deg.current_level()
        nodes = []
        for snap in self.state.failover.snapshot():
            proc = self.cluster[snap["id"]]
            nodes.append(
                {
                    **snap,
                    # a dead node has no latency, whatever it last measured
                    "latency_ms": None
                    if snap["latency"] is None or not proc.alive
                    else round(snap["latency"] * 1000, 2),
                    "alive": proc.alive,
                    "mode": proc.mode if proc.alive else "killed",
                    "served": self.served[snap["id"]],
                }
            )
        features = {f.name: deg.features.is_available(f, level) for f in Feature}
        figures = deg.figures()  # its own lock; not taken while holding ours
        with self.lock:
            return {
                "level": level.name,
                "figures": figures,
                "nodes": nodes,
                "features": features,
                "history": list(self.history),
                "events": list(self.events)[:60],
                "traffic": dict(self.traffic),
                "alerts": list(self.state.alerts.fired)[-10:] if self.state.alerts else [],
            }

    # ------------------------------------------------------------- controls

    def control(self, body: dict[str, Any]) -> dict[str, Any]:
        action = body.get("action")
        node_id = body.get("node")
        if action in ("kill", "revive", "slow", "error", "hang", "heal"):
            if node_id not in self.cluster.nodes:
                abort(400, f"unknown node {node_id!r}")
            proc = self.cluster[str(node_id)]
            # revive undoes kill, heal undoes slow/error/hang; the other way round is a no-op
            noop = _noop(action, proc.alive, proc.mode)
            if noop:
                self._event("control", f"{action} {node_id}: {noop}")
                return {"ok": True, "noop": noop}
            if action == "kill":
                proc.kill()
            elif action == "revive":
                proc.start()
            else:
                proc.control("ok" if action == "heal" else action)
            self._event("control", f"{action} {node_id}")
        elif action == "errors":
            threading.Thread(target=self._push_errors, name="demo-errors", daemon=True).start()
            self._event("control", "pushing 20 failing requests")
        elif action == "cpu":
            self._burners = self._burners + _burn_cpu(seconds=12)
            self._event("control", "burning CPU on every core for 12 s")
        elif action == "force":
            self.state.degradation.force_level(str(body.get("level")))
        elif action == "clear":
            self.state.degradation.clear_override()
            self._event("control", "override cleared")
        else:
            abort(400, f"unknown action {action!r}")
        return {"ok": True}

    def _push_errors(self) -> None:
        with requests.Session() as s:
            for _ in range(20):  # bounded
                with contextlib.suppress(requests.RequestException):
                    s.get(self.base_url + "/api/flaky", timeout=2)


def _noop(action: str, alive: bool, mode: str) -> str | None:
    """Why a node action would do nothing, or ``None``: revive undoes kill, heal undoes
    slow, error and hang; neither undoes the other."""
    if not alive:
        if action == "kill":
            return "already killed"
        if action != "revive":
            return "the process is killed: revive it first (revive undoes kill)"
    elif action == "revive":
        return "nothing to undo, the process is running (revive undoes kill)"
    elif action == "heal" and mode == "ok":
        return "nothing to undo, the node answers normally (heal undoes slow, error, hang)"
    return None


def traffic_outcome(resp: requests.Response) -> str:
    """``ok``, ``shed`` or ``failed``: a 503 with ``Retry-After`` is the library refusing
    the request on purpose (shedding, or a feature switched off at this level), not a
    failure; any other 5xx is."""
    if resp.status_code == 503 and "Retry-After" in resp.headers:
        return "shed"
    return "ok" if resp.status_code < 500 else "failed"


def _burn_cpu(seconds: float) -> list[subprocess.Popen[bytes]]:
    """Load every core for ``seconds`` with child processes that exit by themselves."""
    import os

    code = f"import time\nend = time.time() + {seconds}\nwhile time.time() < end: pass\n"
    return [subprocess.Popen([sys.executable, "-c", code]) for _ in range(os.cpu_count() or 1)]


def create_app(cluster: Cluster, *, check_interval: float = 0.5, token: str | None = None) -> Flask:
    """Build the demo app over a started :class:`Cluster`."""
    token = token or secrets.token_urlsafe(16)
    app = Flask(__name__, template_folder=str(Path(__file__).parent / "templates"))
    app.config.update(
        RESILIENCE_NODES=cluster.service_nodes,
        RESILIENCE_SAMPLE_INTERVAL=check_interval,
        RESILIENCE_DEGRADATION={
            "cooldown_seconds": 5,
            "error_window_seconds": 20,
            "error_window_buckets": 10,
        },
        RESILIENCE_HEALTH_CHECK_INTERVAL=0.5,
        RESILIENCE_HEALTH_CHECK_TIMEOUT=0.4,
        RESILIENCE_CORE_PATHS=["/api/items", "/api/orders"],
        RESILIENCE_EXEMPT_PATHS=["/", "/api/status", "/demo/control", "/favicon.ico"],
        RESILIENCE_ADMIN_TOKEN=token,
        RESILIENCE_FAILOVER_OPTIONS={"base_ejection_time": 5.0, "max_ejection_time": 30.0},
        RESILIENCE_START="eager",
        RESILIENCE_METRICS_PATH="/metrics",  # the dashboard's counter charts read it
        RESILIENCE_HEALTH_CHECK_UNHEALTHY_THRESHOLD=2,
    )
    state = Resilience().init_app(app)
    demo = Demo(state, cluster, token)
    app.extensions["demo"] = demo

    def cached_search() -> Any:
        return jsonify(node=None, results=["(cached) apple", "(cached) pear"], source="fallback")

    @app.route("/")
    def dashboard() -> str:
        return render_template("dashboard.html", token=token, features=[f.name for f in Feature])

    @app.route("/favicon.ico")
    def favicon_ico() -> Response:
        resp = Response(favicon.ico(), mimetype="image/x-icon")
        resp.cache_control.max_age = 86400
        return resp

    @app.route("/api/status")
    def status() -> Any:
        return jsonify(demo.status())

    @app.post("/demo/control")
    def control() -> Any:
        given = request.headers.get("Authorization", "")
        if not hmac.compare_digest(given.encode(), f"Bearer {token}".encode()):
            abort(401)
        return jsonify(demo.control(request.get_json(silent=True) or {}))

    @app.route("/api/items")
    def items() -> Any:
        try:
            return jsonify(demo.upstream("GET", "/api/items", timeout=(0.5, 1.0)))
        except requests.RequestException as exc:
            return jsonify(error=f"upstream unavailable: {type(exc).__name__}"), 502

    @app.post("/api/orders")
    def orders() -> Any:
        body = request.get_json(silent=True) or {}
        try:
            return jsonify(demo.upstream("POST", "/api/orders", json=body, timeout=(0.5, 1.0))), 201
        except requests.RequestException as exc:
            return jsonify(error=f"order not placed: {type(exc).__name__}"), 502

    @app.route("/api/search")
    @with_fallback(cached_search)
    def search() -> Any:
        q = request.args.get("q", "")
        return jsonify(**demo.upstream("GET", f"/api/search?q={q}", timeout=(0.5, 1.0)), source="primary")

    @app.route("/api/recommendations")
    @feature(Feature.NonEssential)
    def recommendations() -> Any:
        return jsonify(demo.upstream("GET", "/api/recommendations", timeout=(0.5, 1.0)))

    @app.route("/api/analytics")
    @feature(Feature.Analytics, fallback=lambda: jsonify(tracked=False, reason="analytics switched off"))
    def analytics() -> Any:
        return jsonify(tracked=True)

    @app.route("/api/flaky")
    def flaky() -> Any:
        return jsonify(error="this endpoint always fails"), 500

    return app
