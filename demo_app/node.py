"""One demo upstream node: a separate process serving /health and a small API.

``python -m demo_app.node --id primary --port 9001``. Its behaviour can be switched at
runtime through ``POST /_control {"mode": "ok" | "slow" | "error" | "hang"}``
(127.0.0.1 only, like everything in the demo); ``GET /_stats`` counts what it served.
"""

from __future__ import annotations

import argparse
import json
import socket
import struct
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

MODES = ("ok", "slow", "error", "hang", "reset", "unavailable")


class NodeState:
    def __init__(self, node_id: str, orders_log: str | None = None) -> None:
        self.node_id = node_id
        self.orders_log = open(orders_log, "a", encoding="utf-8") if orders_log else None  # noqa: SIM115
        self.mode = "ok"
        self.served = 0
        self.orders: dict[str, int] = {}
        self.lock = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _send(self, status: int, payload: dict[str, Any]) -> None:
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> dict[str, Any]:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            data = json.loads(raw or b"{}")
        except ValueError:
            return {}
        return data if isinstance(data, dict) else {}

    def _misbehave(self) -> bool:
        """Apply the current mode; True when the request has been answered already."""
        mode = self.server.state.mode
        if mode == "reset":  # read the request, then drop the connection with a RST
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            return True
        if mode == "unavailable":
            self._send(503, {"error": "overloaded", "node": self.server.state.node_id})
            return True
        if mode == "hang":
            time.sleep(30)  # accepted, never answered in time
            self.close_connection = True
            return True
        if mode == "error":
            self._send(500, {"error": "node is failing", "node": self.server.state.node_id})
            return True
        if mode == "slow":
            time.sleep(0.3)
        return False

    def do_GET(self) -> None:
        st = self.server.state
        path = self.path.split("?", 1)[0]
        if path == "/_stats":
            with st.lock:
                dupes = sum(1 for n in st.orders.values() if n > 1)
                self._send(
                    200,
                    {
                        "node": st.node_id,
                        "mode": st.mode,
                        "served": st.served,
                        "orders": st.orders,
                        "duplicate_orders": dupes,
                    },
                )
            return
        if self._misbehave():
            return
        if path == "/health":
            self._send(200, {"status": "pass", "node": st.node_id})
            return
        with st.lock:
            st.served += 1
        if path == "/api/items":
            self._send(200, {"node": st.node_id, "items": ["apple", "pear", "plum"]})
        elif path == "/api/search":
            q = self.path.partition("q=")[2]
            self._send(200, {"node": st.node_id, "results": [f"{q}-1", f"{q}-2"]})
        elif path == "/api/recommendations":
            self._send(200, {"node": st.node_id, "recommended": ["fig", "kiwi"]})
        else:
            self._send(404, {"error": "not found"})

    def do_POST(self) -> None:
        st = self.server.state
        if self.path == "/_control":
            mode = self._body().get("mode")
            if mode not in MODES:
                self._send(400, {"error": f"mode must be one of {MODES}"})
                return
            st.mode = mode
            self._send(200, {"node": st.node_id, "mode": mode})
            return
        body = self._body()
        if self._misbehave():
            return
        if self.path == "/api/orders":
            order_id = str(body.get("order_id", ""))
            with st.lock:
                st.served += 1
                st.orders[order_id] = st.orders.get(order_id, 0) + 1
                if st.orders_log is not None:  # survives a kill: chaos tests count duplicates from it
                    st.orders_log.write(order_id + "\n")
                    st.orders_log.flush()
            self._send(201, {"node": st.node_id, "order_id": order_id})
        else:
            self._send(404, {"error": "not found"})


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    state: NodeState


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--id", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--orders-log", default=None, help="append every accepted order id to this file")
    args = ap.parse_args()
    server = Server(("127.0.0.1", args.port), Handler)
    server.state = NodeState(args.id, args.orders_log)
    print(f"node {args.id} listening on 127.0.0.1:{args.port}", flush=True)
    try:
        server.serve_forever(poll_interval=0.1)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
