"""Start, kill, revive and steer the demo's upstream node processes (127.0.0.1 only)."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field

import requests

from resilience_mw import ServiceNode


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(port: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return True
        except OSError:
            time.sleep(0.02)
    return False


@dataclass
class NodeProcess:
    """One node: a ``python -m demo_app.node`` child process on a fixed port."""

    node_id: str
    priority: int
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    mode: str = "ok"
    orders_log: str | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def service_node(self) -> ServiceNode:
        return ServiceNode(self.node_id, self.url, priority=self.priority)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> None:
        if self.alive:
            return
        extra = ["--orders-log", self.orders_log] if self.orders_log else []
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "demo_app.node", "--id", self.node_id, "--port", str(self.port), *extra],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.mode = "ok"
        if not wait_listening(self.port):
            raise RuntimeError(f"node {self.node_id} did not start on port {self.port}")

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)

    def control(self, mode: str) -> None:
        requests.post(f"{self.url}/_control", json={"mode": mode}, timeout=2).raise_for_status()
        self.mode = mode


class Cluster:
    """The ported design's three nodes: primary, secondary, tertiary at priorities 100/80/60."""

    def __init__(
        self,
        spec: tuple[tuple[str, int], ...] = (("primary", 100), ("secondary", 80), ("tertiary", 60)),
        orders_dir: str | None = None,
    ):
        self.nodes = {
            node_id: NodeProcess(
                node_id, prio, orders_log=f"{orders_dir}/{node_id}.orders" if orders_dir else None
            )
            for node_id, prio in spec
        }

    def __getitem__(self, node_id: str) -> NodeProcess:
        return self.nodes[node_id]

    @property
    def service_nodes(self) -> list[ServiceNode]:
        return [n.service_node for n in self.nodes.values()]

    def start(self) -> Cluster:
        for n in self.nodes.values():
            n.start()
        return self

    def stop(self) -> None:
        for n in self.nodes.values():
            n.kill()

    def __enter__(self) -> Cluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
