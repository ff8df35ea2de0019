"""Hostile HTTP servers on 127.0.0.1 for adapter tests: each connection is handed to a
function that speaks (or mangles) HTTP on the raw socket, optionally over TLS."""

from __future__ import annotations

import contextlib
import socket
import ssl
import struct
import threading
from collections.abc import Callable
from typing import Any

Handler = Callable[[socket.socket, "RawServer"], None]


class RawServer:
    """Accepts connections in a thread; each one runs ``handler(sock, server)`` in its own
    thread. ``tls`` is a server-side ``ssl.SSLContext`` (the handshake runs in the
    connection's thread). ``requests`` counts complete requests read by :func:`read_request`."""

    def __init__(self, handler: Handler, tls: ssl.SSLContext | None = None) -> None:
        self.handler = handler
        self.tls = tls
        self.requests: list[tuple[str, str, bytes]] = []
        self.lock = threading.Lock()
        self._sock = socket.socket()
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self._sock.listen(64)
        self.port = self._sock.getsockname()[1]
        self._open: list[socket.socket] = []
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def count(self, method: str | None = None) -> int:
        with self.lock:
            return sum(1 for m, _, _ in self.requests if method is None or m == method)

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._open.append(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
                self._open.append(conn)
            self.handler(conn, self)
        except (OSError, ssl.SSLError, ValueError):
            pass
        finally:
            with contextlib.suppress(OSError):
                conn.close()

    def stop(self) -> None:
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._sock.close()
        for c in self._open:
            with contextlib.suppress(OSError):
                c.close()


def read_request(sock: socket.socket, server: RawServer) -> tuple[str, str, bytes] | None:
    """Read one request (head and Content-Length body); ``None`` at EOF."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            return None
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    with server.lock:
        server.requests.append((method, path, body))
    return method, path, body


def reset(sock: socket.socket) -> None:
    """Close with RST, as a crashed process would."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


def respond(sock: socket.socket, status: str = "200 OK", body: bytes = b"ok", headers: dict[str, str] | None = None) -> None:
    extra = "".join(f"{k}: {v}\r\n" for k, v in (headers or {}).items())
    sock.sendall(f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body)


def tls_contexts(tmp_path: Any) -> tuple[ssl.SSLContext, str, ssl.SSLContext]:
    """A server context trusted by the CA file returned, and one signed by another CA."""
    import trustme

    ca, other = trustme.CA(), trustme.CA()
    trusted = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(trusted)
    untrusted = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    other.issue_cert("127.0.0.1").configure_cert(untrusted)
    ca_file = str(tmp_path / "ca.pem")
    ca.cert_pem.write_to_path(ca_file)
    return trusted, ca_file, untrusted
