"""Real HTTP nodes on 127.0.0.1 for tests, with behaviour switchable at runtime.

Modes: ``ok`` (200), ``error`` (500), ``unavailable`` (503 + Retry-After), ``slow``
(answers after ``delay``), ``hang`` (reads the request, never answers), ``endless``
(200 with a body that never ends), ``redirect`` (302 to /elsewhere), ``reset`` (reads
the request, then resets the connection), ``garbage`` (non-HTTP bytes). ``stop()``
closes the port (connection refused); ``start()`` reopens the same port.

Every request is counted per ``X-Request-Id`` header so tests can see duplicates.

Sick, not dead (mode ``ok``): ``service_time`` seconds per answer; ``fail_every`` (every
n-th request answers 500: never two in a row) or ``fail_rate`` (a
share of 500s, drawn from ``rng``); ``capacity`` (answers per second; beyond it a fast
503 without ``Retry-After``, as an overloaded server sheds).
"""

from __future__ import annotations

import collections
import contextlib
import random
import socket
import struct
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    node: NodeServer

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.open_sockets: set[socket.socket] = set()
        self.sockets_lock = threading.Lock()

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.sockets_lock:
            self.open_sockets.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        # A client that gave up (its timeout, its deadline) before the answer was written
        # is what many tests do on purpose. Its traceback is noise, and printing it races
        # with the main thread on Python 3.11 (traceback's caret anchors parse source with
        # ast, whose recursion counter is not per thread: "AST constructor recursion depth
        # mismatch" in whatever the main thread was compiling).
        if isinstance(sys.exc_info()[1], (BrokenPipeError, ConnectionResetError)):
            return
        super().handle_error(request, client_address)

    def drop_connections(self) -> None:
        """Close every accepted connection, as a killed process would."""
        with self.sockets_lock:
            socks, self.open_sockets = list(self.open_sockets), set()
        for sock in socks:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # else every keep-alive request costs ~40 ms
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _read_body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _handle(self) -> None:
        node = self.server.node
        body = self._read_body()
        node._count(self.command, self.path, self.headers.get("X-Request-Id"), body)
        node.authorization.append(self.headers.get("Authorization"))
        node.headers_seen.append(dict(self.headers.items()))
        mode = node.mode if not self.path.startswith("/health") else node.health_mode or node.mode
        if mode == "hang":
            node._release.wait(60)
            self.close_connection = True
            return
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            self.close_connection = True
            self.connection.close()
            return
        if mode == "garbage":
            self.wfile.write(b"\x00\x01 this is not HTTP \xff\r\n\r\n")
            self.close_connection = True
            return
        if mode == "slow":
            time.sleep(node.delay)
        if mode == "trickle":  # headers, then one byte every 0.1 s: each read is "on time"
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            try:
                for _ in range(300):
                    if node._release.wait(0.1):
                        break
                    self.wfile.write(b"x")
                    self.wfile.flush()
            except OSError:
                pass
            self.close_connection = True
            return
        if mode == "endless":
            self.send_response(200)
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            chunk = b"x" * 65536
            deadline = time.monotonic() + 30
            try:
                while time.monotonic() < deadline and not node._release.is_set():
                    self.wfile.write(chunk)
            except OSError:
                pass
            self.close_connection = True
            return
        status, extra = 200, {}
        if mode == "ok":
            status = node._sick_status()
            if node.service_time and status != 503:
                time.sleep(node.service_time)
        if mode == "error":
            status = 500
        elif mode == "unavailable":
            status, extra = 503, {"Retry-After": str(node.retry_after)}
        elif mode == "redirect" and self.path != "/elsewhere":
            status, extra = 302, {"Location": "/elsewhere"}
        payload = f'{{"node": "{node.name}", "path": "{self.path}", "method": "{self.command}"}}'.encode()
        self.send_response(status)
        for k, v in extra.items():
            self.send_header(k, v)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = do_PATCH = do_OPTIONS = _handle


class NodeServer:
    """One controllable node; ``url`` is its base URL."""

    def __init__(self, name: str = "node", port: int = 0) -> None:
        self.name = name
        self.mode = "ok"
        self.health_mode: str | None = None  # overrides mode for /health* only
        self.delay = 0.5
        self.retry_after = 1
        self.port = port
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self.request_ids: collections.Counter[str] = collections.Counter()
        self.bodies: list[bytes] = []
        self.authorization: list[str | None] = []
        #: every request's headers, in order
        self.headers_seen: list[dict[str, str]] = []
        self.service_time = 0.0
        self.fail_every = 0
        self.fail_rate = 0.0
        self.rng = random.Random(0)
        self.capacity: float | None = None
        self._tokens = 0.0
        self._refilled = time.monotonic()
        self._served = 0
        #: when each request arrived (monotonic), for offered-load measurements
        self.arrivals: list[float] = []

    def _sick_status(self) -> int:
        """The status a request gets from the sick-node settings (200 if none applies)."""
        with self._lock:
            self.arrivals.append(time.monotonic())
            self._served += 1
            if self.capacity is not None:
                now = time.monotonic()
                self._tokens = min(self.capacity, self._tokens + (now - self._refilled) * self.capacity)
                self._refilled = now
                if self._tokens < 1.0:
                    return 503
                self._tokens -= 1.0
            if self.fail_every and self._served % self.fail_every == 0:
                return 500
            if self.fail_rate and self.rng.random() < self.fail_rate:
                return 500
        return 200

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _count(self, method: str, path: str, request_id: str | None, body: bytes) -> None:
        with self._lock:
            self.requests[(method, path.split("?", maxsplit=1)[0])] += 1
            if request_id:
                self.request_ids[request_id] += 1
            if body:
                self.bodies.append(body)

    def hits(self, path: str | None = None, *, exclude_health: bool = True) -> int:
        with self._lock:
            return sum(
                n
                for (m, p), n in self.requests.items()
                if (path is None or p == path) and not (exclude_health and p.startswith("/health"))
            )

    def start(self) -> NodeServer:
        self._release = threading.Event()
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.node = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Close the port: new connections are refused; hung handlers are released."""
        self._release.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server.drop_connections()
            self._server = None

    def __enter__(self) -> NodeServer:
        return self.start() if self._server is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def free_port() -> int:
    """A port with nothing listening (connection refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
