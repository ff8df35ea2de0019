"""One upstream node for bench/bench_balance.py: a threaded HTTP server on 127.0.0.1.

``python -m bench.balance_upstream`` binds a free port, prints it on a line of its own and
serves until stdin closes (so it never outlives the bench) or it gets SIGTERM.

Every path but ``/_config`` and ``/_stats`` is work. How work is served is set, and the
counters and the scenario clock are reset, by ``POST /_config`` with a JSON body (every key
optional, the defaults below):

- ``service_ms`` (5): time one request holds a slot (a sleep, no CPU);
- ``slots`` (1): requests served at once; the rest queue for a slot (a semaphore);
- ``ramp_to_ms`` (None) and ``ramp_s``: the service time climbs linearly from
  ``service_ms`` to ``ramp_to_ms`` over ``ramp_s`` seconds from the reset, then stays;
- ``fail_every`` (0: never): every n-th request is answered ``500`` at once, without a slot
  (so ``5`` is 20 % fast 500s, never two in a row);
- ``reset_every`` (0: never): every n-th request is read, then its connection is reset
  without an answer;
- ``stall_s`` (0) every ``stall_every_s`` (5), starting ``stall_at_s`` (2) into each period:
  a request that arrives during a stall waits for its end, then is served as usual.

``GET /_stats`` answers ``{"served": n, "ok": n, "failed": n, "reset": n}`` since the last reset
(``served`` counts every work request that arrived, hedges included).
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

DEFAULTS: dict[str, Any] = {
    "service_ms": 5.0,
    "slots": 1,
    "ramp_to_ms": None,
    "ramp_s": 10.0,
    "fail_every": 0,
    "reset_every": 0,
    "stall_s": 0.0,
    "stall_every_s": 5.0,
    "stall_at_s": 2.0,
}


class State:
    """The node's settings and counters; replaced whole by each ``/_config``."""

    def __init__(self, config: dict[str, Any]) -> None:
        self.cfg = {**DEFAULTS, **config}
        self.origin = time.monotonic()
        self.slots = threading.Semaphore(int(self.cfg["slots"]))
        self.arrivals = itertools.count(1)  # next() is atomic under the GIL
        self.lock = threading.Lock()
        self.counts = {"served": 0, "ok": 0, "failed": 0, "reset": 0}

    def service_s(self, now: float) -> float:
        cfg = self.cfg
        base = float(cfg["service_ms"])
        if cfg["ramp_to_ms"] is not None:
            frac = min(1.0, max(0.0, (now - self.origin) / max(float(cfg["ramp_s"]), 1e-9)))
            base += (float(cfg["ramp_to_ms"]) - base) * frac
        return base / 1000

    def stall_left(self, now: float) -> float:
        """Seconds until the current stall ends (0: not stalling)."""
        stall = float(self.cfg["stall_s"])
        if stall <= 0:
            return 0.0
        phase = (now - self.origin) % float(self.cfg["stall_every_s"])
        start = float(self.cfg["stall_at_s"])
        return start + stall - phase if start <= phase < start + stall else 0.0


class Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # 16-64 clients connecting at once must not overflow the backlog
    state: State


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every keep-alive answer waits ~40 ms
    server: Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _answer(self, status: int, body: bytes, content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path == "/_config":
            self.server.state = State(json.loads(body or b"{}"))
            self._answer(200, b"{}", "application/json")
        else:
            self._work()

    def do_GET(self) -> None:
        if self.path == "/_stats":
            state = self.server.state
            with state.lock:
                counts = dict(state.counts)
            self._answer(200, json.dumps(counts).encode(), "application/json")
        else:
            self._work()

    def _work(self) -> None:
        state = self.server.state  # the state in force when the request arrived
        arrived = time.monotonic()
        n = next(state.arrivals)
        cfg = state.cfg
        with state.lock:
            state.counts["served"] += 1
        if cfg["reset_every"] and n % int(cfg["reset_every"]) == 0:
            with state.lock:
                state.counts["reset"] += 1
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if cfg["fail_every"] and n % int(cfg["fail_every"]) == 0:
            with state.lock:
                state.counts["failed"] += 1
            self._answer(500, b"fast failure")
            return
        stall = state.stall_left(arrived)
        if stall > 0:
            time.sleep(stall)
        with state.slots:
            time.sleep(state.service_s(time.monotonic()))
        with state.lock:
            state.counts["ok"] += 1
        self._answer(200, b"ok")

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError):  # a client that gave up (hedge loser, timeout)
            self.close_connection = True


def main() -> None:
    server = Server(("127.0.0.1", 0), Handler)
    server.state = State({})
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    print(server.server_address[1], flush=True)
    sys.stdin.read()  # the bench holds our stdin: when it goes away, so do we
    os._exit(0)


if __name__ == "__main__":
    main()
