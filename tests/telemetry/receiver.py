"""A real OTLP/HTTP receiver on 127.0.0.1 for the export tests: records every body it
is posted, and answers as told (``ok``, a status with ``Retry-After``, a partial success)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def setup(self) -> None:
        super().setup()
        with self.server.owner.lock:
            self.server.owner.connections.add(self.connection)

    def finish(self) -> None:
        with self.server.owner.lock:
            self.server.owner.connections.discard(self.connection)
        super().finish()

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        owner = self.server.owner
        status, headers, answer = owner.answer(self.path, body, dict(self.headers.items()))
        self.send_response(status)
        for key, value in headers.items():
            self.send_header(key, value)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", str(len(answer)))
        self.end_headers()
        self.wfile.write(answer)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    owner: Receiver


class Receiver:
    """``mode``: ``"ok"``; ``"status"`` (answer ``status`` with ``retry_after`` for the
    next ``times`` posts, then ok); ``"partial"`` (ok, rejecting ``rejected`` spans)."""

    def __init__(self, port: int = 0) -> None:
        self.port = port
        self.mode = "ok"
        self.status = 503
        self.retry_after: str | None = None
        self.times = 1 << 30
        self.rejected = 0
        self.lock = threading.Lock()
        #: (path, body, monotonic time) of every post received
        self.posts: list[tuple[str, bytes, float]] = []
        #: the request headers of each post, in the same order
        self.headers: list[dict[str, str]] = []
        self._server: _Server | None = None
        #: open client connections (a stopped receiver closes them: it is down)
        self.connections: set[socket.socket] = set()

    def answer(self, path: str, body: bytes, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        with self.lock:
            self.posts.append((path, body, time.monotonic()))
            self.headers.append(headers or {})
            if self.mode == "status" and self.times > 0:
                self.times -= 1
                return self.status, ({"Retry-After": self.retry_after} if self.retry_after else {}), b""
            if self.mode == "partial":
                resp = trace_service_pb2.ExportTraceServiceResponse()
                resp.partial_success.rejected_spans = self.rejected
                resp.partial_success.error_message = "spans too old"
                return 200, {}, resp.SerializeToString()
        return 200, {}, b""

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        server = _Server(("127.0.0.1", self.port), _Handler)
        server.owner = self
        self.port = server.server_address[1]
        self._server = server
        threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        with self.lock:  # (kept-alive connections would go on being served)
            for conn in self.connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self.connections.clear()

    def span_names(self) -> list[str]:
        names = []
        for path, body, _ in list(self.posts):
            if path != "/v1/traces":
                continue
            req = trace_service_pb2.ExportTraceServiceRequest()
            req.ParseFromString(body)
            names.extend(s.name for rs in req.resource_spans for ss in rs.scope_spans for s in ss.spans)
        return names

    def spans(self) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
        """(span id in hex, its resource's attributes, the headers of the post that
        carried it) of every span received, in order."""
        out = []
        for (path, body, _), headers in zip(list(self.posts), list(self.headers), strict=False):
            if path != "/v1/traces":
                continue
            req = trace_service_pb2.ExportTraceServiceRequest()
            req.ParseFromString(body)
            for rs in req.resource_spans:
                resource = {a.key: getattr(a.value, a.value.WhichOneof("value") or "string_value")
                            for a in rs.resource.attributes}
                out.extend((s.span_id.hex(), resource, headers) for ss in rs.scope_spans for s in ss.spans)
        return out

    def log_bodies(self) -> list[str]:
        out = []
        for path, body, _ in list(self.posts):
            if path == "/v1/logs":
                req = logs_service_pb2.ExportLogsServiceRequest()
                req.ParseFromString(body)
                out.extend(r.body.string_value for rl in req.resource_logs for sl in rl.scope_logs for r in sl.log_records)
        return out

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
